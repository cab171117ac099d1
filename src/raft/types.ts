// Raft message, entry and persistent-state types shared by the pure raft core
// (log.ts, progress.ts, node.ts) and its drivers.
//
// Invariants:
// - Node ids are positive integers; NONE (0) means "no node" (no vote, no leader).
// - Terms and indexes are JS numbers (safe integers). Index 0 / term 0 is the
//   empty-log sentinel: term(0) = 0 and the first real entry has index 1.
//   The wire codec (later, src/rpc/) must validate them as safe integers.
// - Every message carries from, to and the sender's term; a receiver first
//   compares terms (Raft paper §5.1) and only then looks at the payload.
// - Entries are immutable once created: the core shares them between its log,
//   messages and Ready without copying.

export const NONE = 0;

/** Bytes counted per entry on top of its data when bounding a message by size. */
export const ENTRY_OVERHEAD_BYTES = 24;

/** 'normal' (the default when absent) carries state-machine data; 'conf' carries an encoded ConfChange (confchange.ts). */
export type EntryType = 'normal' | 'conf';

export interface Entry {
  readonly term: number;
  readonly index: number;
  readonly data: Uint8Array;
  /** Absent means 'normal'. */
  readonly type?: EntryType;
}

/**
 * Single-step membership change (one node at a time, Raft thesis §4.1 / etcd
 * "simple" changes). Takes effect when the entry is applied (advance()).
 * addLearner: node receives the log but neither votes nor counts for commit.
 * promote: a learner becomes a voter. remove: a voter or learner leaves.
 */
export interface ConfChange {
  readonly type: 'addLearner' | 'promote' | 'remove';
  readonly node: number;
}

/** Group membership. */
export interface ConfState {
  readonly voters: readonly number[];
  readonly learners: readonly number[];
}

/**
 * A point of the replicated state machine: everything up to `index` (of `term`)
 * is in the state, and `conf` is the membership as of that index. The state data
 * itself never passes through the raft core: the driver ships and installs it.
 */
export interface SnapshotMeta {
  readonly index: number;
  readonly term: number;
  readonly conf: ConfState;
}

/** What must survive a crash besides the log (§5.1, Figure 2 "persistent state"). */
export interface HardState {
  readonly term: number;
  readonly vote: number;
  readonly commit: number;
}

interface MsgBase {
  readonly from: number;
  readonly to: number;
  readonly term: number;
}

/** Local only: start an election now (etcd's MsgHup). Never sent on the wire. */
export interface MsgHup extends MsgBase {
  readonly type: 'hup';
}

/** RequestVote RPC (§5.2): the candidate's last log position for the §5.4.1 check. */
export interface MsgVote extends MsgBase {
  readonly type: 'vote';
  readonly lastLogIndex: number;
  readonly lastLogTerm: number;
  /**
   * Pre-vote (thesis §9.6): "would you vote for me at `term`?" The receiver
   * changes neither its term nor its vote; the sender's term stays too until a
   * quorum said yes.
   */
  readonly pre?: boolean;
}

export interface MsgVoteResp extends MsgBase {
  readonly type: 'voteResp';
  readonly reject: boolean;
  /**
   * With reject: the candidate is neither voter nor learner of the sender's
   * applied membership, so its removal is committed (a "removed" notice; the
   * candidate never learned it, having been away). Taken at any term.
   */
  readonly removed?: boolean;
  /** The answer to a pre-vote (MsgVote.pre); a granted one carries the asked term. */
  readonly pre?: boolean;
}

/** AppendEntries RPC (§5.3). */
export interface MsgApp extends MsgBase {
  readonly type: 'app';
  readonly prevLogIndex: number;
  readonly prevLogTerm: number;
  readonly entries: readonly Entry[];
  /** Leader's commit index; the follower commits up to min(commit, last new entry). */
  readonly commit: number;
}

export interface MsgAppResp extends MsgBase {
  readonly type: 'appResp';
  readonly reject: boolean;
  /** On success: the follower's last index known to match the leader. On reject: the rejected prevLogIndex. */
  readonly index: number;
  /** On reject: the follower's guess of the highest index that may match (fast backoff). */
  readonly rejectHint: number;
  /** On reject: the follower's term at rejectHint (0 if none). */
  readonly hintTerm: number;
}

/** Leader liveness and commit propagation; carries no entries. */
export interface MsgHeartbeat extends MsgBase {
  readonly type: 'heartbeat';
  /** min(follower's match, leader's commit): never beyond what the follower holds. */
  readonly commit: number;
  /** ReadIndex round (Raft thesis §6.4) this heartbeat confirms leadership for; 0 = none. */
  readonly ctx: number;
  /**
   * The leader's lowest peer match (RaftNode.minPeerMatch): entries after it may
   * still have to be sent to a peer, so a follower that may lead next keeps them
   * in memory (OSD log compaction). Absent or 0: unknown, keep what the caps allow.
   */
  readonly retain?: number;
}

export interface MsgHeartbeatResp extends MsgBase {
  readonly type: 'heartbeatResp';
  /** Echo of the heartbeat's ctx. */
  readonly ctx: number;
}

/**
 * InstallSnapshot (§7): the leader no longer holds the entries a follower needs.
 * The driver ships the state data out of band, installs it on the follower, and
 * only then steps this message into the follower's node.
 */
export interface MsgSnap extends MsgBase {
  readonly type: 'snap';
  readonly snapshot: SnapshotMeta;
}

export type Message = MsgHup | MsgVote | MsgVoteResp | MsgApp | MsgAppResp | MsgHeartbeat | MsgHeartbeatResp | MsgSnap;
export type MessageType = Message['type'];

/**
 * Work handed to the driver by RaftNode.ready(). The driver must, in order:
 * 1. persist `snapshot` if present (replacing the whole stored log), then
 *    `entries` (drop stored entries with index >= entries[0].index, then append
 *    them) and then `hardState` (its commit may point into those entries) — in one
 *    atomic batch if it can: entries re-sent after a snapshot were acknowledged;
 * 2. send `messages` (only after step 1 is durable: votes and acks promise it;
 *    a leader's app/heartbeat may leave earlier, thesis §10.2.1);
 * 3. apply `committedEntries` in order (conf entries need nothing from the driver:
 *    advance() applies them to the membership);
 * 4. call advance(ready) before any other input to the node;
 * 5. serve each read of `readStates` once its state machine applied `index`.
 */
export interface Ready {
  /** Installed snapshot (follower): persist it, replacing the whole stored log, before entries and hardState. */
  readonly snapshot?: SnapshotMeta;
  readonly hardState?: HardState;
  readonly entries: readonly Entry[];
  readonly messages: readonly Message[];
  readonly committedEntries: readonly Entry[];
  /** ReadIndex results: a read registered with ctx may be served once the state machine has applied `index`. */
  readonly readStates: readonly ReadState[];
}

export interface ReadState {
  readonly ctx: number;
  readonly index: number;
}

export type RaftRole = 'follower' | 'candidate' | 'leader';

export function entryBytes(e: Entry): number {
  return e.data.length + ENTRY_OVERHEAD_BYTES;
}
