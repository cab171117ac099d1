// A point-in-time summary of one raft node (RaftNode.status()), for the OSD's
// PG state reports and for debugging. Plain data: copying it never aliases the
// node's internal state.
import type { ProgressState } from './progress.js';
import type { ConfState, RaftRole } from './types.js';

export interface RaftPeerStatus {
  readonly id: number;
  /** Highest index known to be replicated on the peer. */
  readonly match: number;
  /** Next index the leader will send. */
  readonly next: number;
  readonly state: ProgressState;
  readonly learner: boolean;
  /** Heard from since the last check-quorum round. */
  readonly recentActive: boolean;
}

export interface RaftStatus {
  readonly id: number;
  readonly role: RaftRole;
  readonly term: number;
  readonly vote: number;
  /** The leader known in this term, NONE (0) if unknown. */
  readonly leader: number;
  readonly commit: number;
  readonly applied: number;
  readonly lastIndex: number;
  /** Index of the snapshot the log starts after (0 without one). */
  readonly snapshotIndex: number;
  /** Membership as of the applied index. */
  readonly conf: ConfState;
  /** In conf as voter or learner. */
  readonly isMember: boolean;
  /** Waiting for a leader to repair a damaged log: neither campaigns nor votes. */
  readonly repairing: boolean;
  /** ReadIndex requests registered and not yet released. */
  readonly pendingReads: number;
  /** Leader only (empty otherwise): every member's replication progress, the leader included. */
  readonly peers: readonly RaftPeerStatus[];
}
