// Construction-time inputs of a RaftNode: what the driver loaded from storage and
// the tuning of the group. Re-exported by node.ts.
import type { Prng } from '../stdx/prng.js';
import type { Entry, HardState, SnapshotMeta } from './types.js';

/** Messages queued between two ready() calls; beyond this the driver is not draining. */
export const MSGS_PENDING_MAX = 1 << 16;
export const MAX_UNCOMMITTED_ENTRIES_DEFAULT = 1024;

export interface RaftStorage {
  readonly hardState: HardState;
  /** The point the stored log starts after, with the membership as of that point. */
  readonly snapshot?: SnapshotMeta;
  /** Persisted log, contiguous from snapshot.index + 1 (from 1 without a snapshot). */
  readonly entries: readonly Entry[];
}

export interface RaftConfig {
  readonly id: number;
  /**
   * Bootstrap voters (including id) when storage has no snapshot; ignored when it
   * has one (storage.snapshot.conf is the membership then). Empty or absent with
   * no snapshot: the node joins an existing group and waits for a snapshot.
   */
  readonly peers?: readonly number[];
  readonly electionTicks: number;
  readonly heartbeatTicks: number;
  readonly prng: Prng;
  readonly storage: RaftStorage;
  /** AppendEntries messages in flight per follower in replicate state. */
  readonly maxInflightMsgs: number;
  /** Bound on the entry bytes of one AppendEntries (at least one entry is always sent). */
  readonly maxMsgBytes: number;
  /** Proposals appended but not yet committed; propose() fails with ERR_LIMIT beyond. */
  readonly maxUncommittedEntries?: number;
  /** Default true. */
  readonly checkQuorum?: boolean;
  /**
   * Pre-vote (thesis §9.6, default false): a node whose election timer fires
   * first asks whether a quorum would vote for it, without raising any term; only
   * then does it campaign. A node that cannot win (a stale log, or cut off) no
   * longer raises the terms of the others, deposing leaders and resetting the
   * timers of candidates that could win.
   */
  readonly preVote?: boolean;
  /**
   * After construction (a start or restart), refuse higher-term votes for this
   * many ticks (default 0). A restarted node forgot which leader it heard from
   * last; without this quiet period it could help elect a new leader while the
   * old one still relies on this node's earlier acknowledgement for its read
   * lease (osd/pg.ts lease reads). Set it to electionTicks when leases are used.
   */
  readonly voteQuietTicksAfterStart?: number;
  /**
   * When the commit index advances, tell every follower at once with an
   * (empty) append (default true, as etcd/raft). false: followers learn it
   * from the next append or heartbeat. Client acknowledgements only need the
   * leader's commit, so an OSD saves two messages and a pass per follower per
   * write; followers then apply up to one heartbeat interval later.
   */
  readonly broadcastCommit?: boolean;
  /** Index the state machine durably holds already (default storage.snapshot.index): committed entries after it are handed out again. */
  readonly applied?: number;
  /**
   * Set by the driver when the stored log was damaged in the middle: the highest
   * index the log held before. This node may have acknowledged entries up to it
   * that it no longer holds, so its vote or candidacy could elect a leader that
   * lacks committed entries (§5.4.1 assumes acknowledged entries are durable).
   * Until a leader's append matched its log up to this index (or a snapshot
   * covered it) it does not campaign, and votes only as repairUntilTerm allows
   * (not at all without it). The driver keeps its marker
   * until status().repairing is false. Stored commit beyond the held log is
   * lowered to it. A single-voter group cannot be repaired this way.
   */
  readonly repairUntilIndex?: number;
  /**
   * At least the term of the last entry the damaged log held (with
   * repairUntilIndex; a higher term is safe, only stricter). A repairing node may
   * then vote for a candidate whose log is at least as up-to-date as (this term,
   * repairUntilIndex) (§5.4.1 against what it may have acknowledged): such a
   * candidate holds every entry this node ever acknowledged. Without it a
   * repairing node grants no vote, which can leave a group without a quorum for
   * good (raft sim seed 300316 of 20,000).
   */
  readonly repairUntilTerm?: number;
  /**
   * With repairUntilIndex: the damage may have hidden entries beyond it (the WAL
   * holds no readable record of the group after the unreadable region, so
   * nothing bounds what the region held). The node then grants no vote while
   * repairing, and is repaired only once its log matches a leader's up to a
   * commit index of that leader's term (every entry committed before, those it
   * acknowledged included, lies below such a commit: Leader Completeness, §5.4),
   * or a snapshot of an entry of the leader's term covers it.
   */
  readonly repairExtentUnknown?: boolean;
}
