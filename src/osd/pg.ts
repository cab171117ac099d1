// One PG replica on an OSD: its raft node, the requests waiting on it, and the
// application of its committed entries to the object store. The OSD's driver
// (osd.ts) owns the event loop: it is the only caller of the node's step/tick/
// propose/ready/advance, always at the start of a pass (never between ready()
// and advance()), so requests arriving meanwhile wait in this replica's bounded
// queues.
//
// Invariants:
// - A client write is answered OK only after its entry committed (persisted by a
//   majority) and was applied here; if the entry at its index turns out to have
//   another term (leadership changed and the log was overwritten), or this node
//   stops being leader before that, it is answered NotLeader and the client
//   retries (block writes are idempotent; the client never lets a later
//   overlapping write pass a retried one).
// - A read is served only after a ReadIndex round confirmed leadership and the
//   state machine applied everything up to the read index (linearizable), or,
//   within the leader's lease, at the current commit index without a round.
//   The lease: a quorum acknowledged a heartbeat the leader sent after time T
//   (a completed ReadIndex round requested at T), and a follower that heard from
//   its leader ignores votes for electionTicks of its own ticks (raft/node.ts
//   check-quorum), which take at least (electionTicks - 1) x tickMs of real
//   time; so no other leader can exist before T + that, less a margin
//   (leaseMs). The lease is measured on the monotonic clock, so a leader that
//   was paused (SIGSTOP) finds it expired on waking, and it is bound to the
//   term it was earned in (Raft thesis §6.4.1).
// - Queues are bounded: INBOX_MAX raft messages (beyond: dropped, raft retries),
//   PROPOSALS_MAX waiting writes and READS_MAX waiting reads (beyond: Busy).
import { mustApplyConfEntry } from '../raft/confchange.js';
import { RaftNode } from '../raft/node.js';
import { assert, fail } from '../stdx/assert.js';
import type { ConfState, Entry, HardState, Message, ReadState, SnapshotMeta } from '../raft/types.js';
import type { Prng } from '../stdx/prng.js';
import { ApplyQueue } from './apply.js';
import type { ObjectStore } from './objects.js';
import { Status, type ClientResponse } from './proto.js';
import type { GroupDamageMark } from './wal-format.js';

export const INBOX_MAX = 4096;
/**
 * Entry bytes queued in the inbox and in proposals (each): what one PG can add
 * to one pass's WAL batch stays well under the WAL's bufferedBytesMax (64 MiB;
 * the driver also stops driving PGs once the WAL wants a commit).
 */
export const INBOX_ENTRY_BYTES_MAX = 16 * 1024 * 1024;
export const PROPOSAL_BYTES_MAX = 16 * 1024 * 1024;
export const PROPOSALS_MAX = 1024;
export const READS_MAX = 1024;

export type Reply = (resp: ClientResponse) => void;

export interface PendingRead {
  volumeId: number;
  offsetBytes: number;
  lengthBytes: number;
  reply: Reply;
}

/** A damaged group's raft repair (RaftConfig.repairUntilIndex / repairUntilTerm / repairExtentUnknown). */
export interface PgRepair {
  readonly untilIndex: number;
  readonly untilTerm: number | undefined;
  readonly extentUnknown: boolean;
}

export interface PgIdentity {
  poolId: number;
  pg: number;
  pgCount: number;
  /** WAL group key. */
  key: number;
}

export interface RaftTuning {
  electionTicks: number;
  heartbeatTicks: number;
  maxInflightMsgs: number;
  maxMsgBytes: number;
}

export function pgKey(poolId: number, pg: number): number {
  return poolId * 65536 + pg;
}

export class PgReplica {
  readonly node: RaftNode;
  readonly apply: ApplyQueue;
  readonly inbox: Message[] = [];
  readonly proposals: { data: Buffer; reply: Reply }[] = [];
  readonly reads: PendingRead[] = [];
  /** Node mutations other than messages, run at the start of a pass (reportSnapshot, conf changes). */
  readonly actions: (() => void)[] = [];
  ticksPending = 0;
  /** Proposed entries awaiting apply: index -> (term, reply). */
  private readonly inflight = new Map<number, { term: number; reply: Reply }>();
  /** ReadIndex rounds awaiting their ReadState: ctx -> reads, when and in which term the round was asked. */
  private readonly readRounds = new Map<number, { reads: PendingRead[]; askedAtMs: number; term: number }>();
  /** Reads may be served locally until this time (ms, monotonic) while leader in leaseTerm; see the header. */
  private leaseUntilMs = -Infinity;
  private leaseTerm = -1;
  /** ctx of the lease renewal round (a round without reads), 0 if none. */
  private renewCtx = 0;
  private leaseMs = 0;
  private nextReadCtx = 1;
  /** Membership as of each applied conf change, for snapshot points below the raft applied index. */
  private confHistory: { index: number; conf: ConfState }[];
  /** Index of the last conf entry applied (or of the snapshot whose membership is current). */
  get lastConfIndex(): number {
    return this.confHistory[this.confHistory.length - 1].index;
  }
  /** Snapshot transfer being received (transferId), or 0. */
  installingTransfer = 0;
  /** The next chunk seq of installingTransfer to write (snapshot-receiver.ts). */
  installNextSeq = 0;
  /** The receiver's per-PG chain: chunks are processed one at a time, in arrival order. */
  installChain: Promise<void> = Promise.resolve();
  /** The chunk last queued on installChain, until processed (a retry of it gets its answer). */
  installChunk: { transferId: number; seq: number; answer: Promise<ClientResponse> } | null = null;
  /** awaitSnapshot() was called (here or, per the WAL, before a restart) and no snapshot installed since. */
  awaitingSnapshot = false;
  /** Peers with a snapshot transfer in progress from this (leader) replica. */
  readonly sendingSnapshotTo = new Set<number>();
  /** When this replica noticed it is no longer in the map's acting set, or last after that a voter asked for its vote (ms); -1 while in the map. */
  orphanSinceMs = -1;
  lastRole: string;
  removed = false;
  /** Applied point at the last compaction check (osd.ts compactPoint). */
  compactCheckedAt = -1;
  /** The peers' need (compactIndex `wanted`) at the last compaction check. */
  compactWantedAt = 0;
  /** The log is not compacted past this while a checkpoint is being taken (osd.ts checkpoint). */
  compactCap = Infinity;
  /** Between ready() and advance(): the pass holding this PG's Ready waits for its WAL commit. */
  awaitingWal = false;
  /** Term and vote last written to the WAL (a change must be synced before messages go out). */
  walTermVote: { term: number; vote: number };
  /** Set when the WAL found this group's log damaged; kept across checkpoints until raft has repaired it. */
  damage: GroupDamageMark | null = null;

  get damageMark(): GroupDamageMark | undefined {
    if (this.damage && !this.node.repairing) this.damage = null;
    return this.damage ?? undefined;
  }

  constructor(
    readonly id: PgIdentity,
    selfId: number,
    storage: { hardState: HardState; snapshot: SnapshotMeta; entries: readonly Entry[] },
    tuning: RaftTuning,
    prng: Prng,
    store: ObjectStore,
    onFatal: (err: Error) => void,
    repair?: PgRepair,
  ) {
    this.node = new RaftNode({
      id: selfId,
      peers: storage.snapshot.conf.voters,
      electionTicks: tuning.electionTicks,
      heartbeatTicks: tuning.heartbeatTicks,
      prng,
      storage: { hardState: storage.hardState, snapshot: storage.snapshot, entries: storage.entries },
      maxInflightMsgs: tuning.maxInflightMsgs,
      maxMsgBytes: tuning.maxMsgBytes,
      repairUntilIndex: repair?.untilIndex,
      repairUntilTerm: repair?.untilTerm,
      repairExtentUnknown: repair?.extentUnknown,
      // Lease reads (see the header) need a restarted replica to stay out of elections for a while.
      voteQuietTicksAfterStart: tuning.electionTicks,
      // Followers learn the commit index from the next append or heartbeat (raft/config.ts).
      broadcastCommit: false,
      // A replica that cannot win (cut off, stale) raises no term: leaders are not
      // deposed and electable candidates not held back by its candidacies.
      preVote: true,
    });
    this.confHistory = [{ index: storage.snapshot.index, conf: storage.snapshot.conf }];
    this.walTermVote = { term: storage.hardState.term, vote: storage.hardState.vote };
    this.apply = new ApplyQueue(store, storage.snapshot.index, (e) => this.onApplied(e), onFatal);
    this.lastRole = this.node.role;
  }

  get isLeader(): boolean {
    return this.node.role === 'leader';
  }

  /** Bounded enqueue of an incoming raft message; false when dropped. */
  enqueue(m: Message): boolean {
    const bytes = m.type === 'app' ? appEntryBytes(m.entries) : 0;
    if (this.inbox.length >= INBOX_MAX || (bytes > 0 && this.inboxEntryBytes + bytes > INBOX_ENTRY_BYTES_MAX && this.inbox.length > 0)) return false;
    this.inbox.push(m);
    this.inboxEntryBytes += bytes;
    return true;
  }

  /** Queues a client write or zero for the next pass; false when the queue is full (answer Busy). */
  propose(data: Buffer, reply: Reply): boolean {
    if (this.proposals.length >= PROPOSALS_MAX || (this.proposalBytes + data.length > PROPOSAL_BYTES_MAX && this.proposals.length > 0)) return false;
    this.proposals.push({ data, reply });
    this.proposalBytes += data.length;
    return true;
  }
  private inboxEntryBytes = 0;
  private proposalBytes = 0;

  /** At the start of a pass: feed queued input into the node. leaseMs 0 disables lease reads. */
  drive(nowMs: number, leaseMs: number, serveRead: (r: PendingRead) => void): void {
    this.leaseMs = leaseMs;
    for (const a of this.actions.splice(0)) a();
    while (this.ticksPending > 0) {
      this.ticksPending--;
      this.node.tick();
    }
    if (this.inbox.length > 0) {
      for (const m of this.inbox.splice(0)) {
        // A replica dropped from the map that a voter still asks for its vote may be
        // needed to elect a leader (raft node.ts, "removed nodes"): its grace restarts.
        if (m.type === 'vote' && this.orphanSinceMs >= 0) this.orphanSinceMs = nowMs;
        this.node.step(m);
      }
      this.inboxEntryBytes = 0;
    }
    if (this.proposals.length > 0) {
      this.proposalBytes = 0;
      for (const p of this.proposals.splice(0)) {
        const r = this.node.propose(p.data);
        if (typeof r === 'number') this.inflight.set(r, { term: this.node.term, reply: p.reply });
        else if (r.code === 'ERR_RAFT_NOT_LEADER') p.reply({ status: Status.NotLeader, leaderHint: r.leaderId, message: r.message });
        else p.reply({ status: Status.Busy, message: r.message });
      }
    }
    if (this.reads.length > 0) {
      if (!this.isLeader) {
        for (const r of this.reads.splice(0)) r.reply({ status: Status.NotLeader, leaderHint: this.node.leaderId, message: 'not the leader' });
      } else if (leaseMs > 0 && nowMs < this.leaseUntilMs && this.leaseTerm === this.node.term) {
        const batch = this.reads.splice(0);
        this.apply.whenDone(this.node.commit, () => {
          for (const r of batch) serveRead(r);
        });
        // Renew ahead of expiry so a steady read load never waits for a round.
        if (this.leaseUntilMs - nowMs < leaseMs / 2 && !this.readRounds.has(this.renewCtx)) this.renewCtx = this.startReadRound([], nowMs);
      } else {
        this.startReadRound(this.reads.splice(0), nowMs);
      }
    }
  }

  /** Starts a ReadIndex round for batch (empty: a lease renewal); returns its ctx, 0 if refused. */
  private startReadRound(batch: PendingRead[], nowMs: number): number {
    const ctx = this.nextReadCtx++;
    try {
      this.node.readIndex(ctx);
      this.readRounds.set(ctx, { reads: batch, askedAtMs: nowMs, term: this.node.term });
      return ctx;
    } catch (err) {
      // ERR_LIMIT (too many pending rounds) or not leader: answer, never throw out of the pass.
      const e = err as { code?: string; leaderId?: number; message: string };
      for (const r of batch) r.reply(e.code === 'ERR_RAFT_NOT_LEADER' ? { status: Status.NotLeader, leaderHint: e.leaderId ?? 0, message: e.message } : { status: Status.Busy, message: e.message });
      return 0;
    }
  }

  /**
   * Committed entries go to the apply queue. Ready.committedEntries only holds
   * entries already durable in this replica's WAL (raft/log.ts
   * nextCommittedEntries), so the driver calls this before it awaits the pass's
   * own WAL commit: a client's write is answered without waiting for a second
   * fsync that only records the new commit index.
   */
  applyCommitted(committed: readonly Entry[]): void {
    if (committed.length > 0) this.apply.push(committed);
  }

  /** After advance(): membership history of applied conf entries; read states release reads. */
  afterAdvance(committed: readonly Entry[], readStates: readonly ReadState[], serveRead: (r: PendingRead) => void): void {
    // Each conf entry's own membership (several may commit in one Ready; node.conf
    // is only the last one, and a checkpoint below it must not claim it).
    let conf: ConfState | null = null;
    for (const e of committed) {
      if (e.type !== 'conf') continue;
      conf = mustApplyConfEntry(conf ?? this.confHistory[this.confHistory.length - 1].conf, e);
      this.confHistory.push({ index: e.index, conf });
    }
    if (!(conf === null || sameConf(conf, this.node.conf))) fail(`membership history diverged from the raft node: ${JSON.stringify(conf)} vs ${JSON.stringify(this.node.conf)}`);
    if (this.confHistory.length > 64) this.confHistory = this.confHistory.slice(-64);
    for (const rs of readStates) {
      const round = this.readRounds.get(rs.ctx);
      if (!round) continue;
      this.readRounds.delete(rs.ctx);
      // A quorum acknowledged leadership after round.askedAtMs: the lease runs from then.
      if (this.leaseMs > 0 && this.isLeader && round.term === this.node.term) {
        this.leaseTerm = round.term;
        this.leaseUntilMs = Math.max(this.leaseUntilMs, round.askedAtMs + this.leaseMs);
      }
      if (round.reads.length === 0) continue;
      this.apply.whenDone(rs.index, () => {
        for (const r of round.reads) serveRead(r);
      });
    }
    const role = this.node.role;
    if (role !== this.lastRole) {
      if (this.lastRole === 'leader') this.failWaiting('leadership lost');
      this.lastRole = role;
    }
  }

  /**
   * Its data is being (or was, before a restart) replaced by a snapshot's: until
   * one is installed nothing is applied (queued entries are dropped) and the
   * node answers appends with a reset and does not campaign (raft awaitSnapshot).
   */
  awaitSnapshot(): void {
    this.awaitingSnapshot = true;
    this.node.awaitSnapshot();
    void this.apply.pause();
  }

  /** The node took a snapshot from the leader: the state now stands at meta.index. */
  onSnapshotInstalled(meta: SnapshotMeta): void {
    this.apply.reset(meta.index);
    this.confHistory = [{ index: meta.index, conf: meta.conf }];
    this.installingTransfer = 0;
    this.installNextSeq = 0;
    this.awaitingSnapshot = false;
  }

  /** Fails every waiting request (not leader any more, PG removed, OSD stopping). */
  failWaiting(why: string): void {
    const hint = this.node.leaderId === this.node.id ? 0 : this.node.leaderId;
    const resp: ClientResponse = { status: Status.NotLeader, leaderHint: hint, message: why };
    for (const w of this.inflight.values()) w.reply(resp);
    this.inflight.clear();
    for (const round of this.readRounds.values()) for (const r of round.reads) r.reply(resp);
    this.readRounds.clear();
    this.leaseUntilMs = -Infinity;
    for (const p of this.proposals.splice(0)) p.reply(resp);
    this.proposalBytes = 0;
    for (const r of this.reads.splice(0)) r.reply(resp);
  }

  /** Snapshot point usable for a checkpoint: the applied-and-done index with its term and membership. */
  checkpointPoint(): SnapshotMeta {
    const index = Math.max(this.apply.doneIndex, this.node.snapshotMeta.index);
    const term = this.node.log.term(index) ?? this.node.snapshotMeta.term;
    let conf = this.confHistory[0].conf;
    for (const c of this.confHistory) if (c.index <= index) conf = c.conf;
    return { index, term, conf };
  }

  private onApplied(e: Entry): void {
    const w = this.inflight.get(e.index);
    if (!w) return;
    this.inflight.delete(e.index);
    if (w.term === e.term) w.reply({ status: Status.Ok });
    else w.reply({ status: Status.NotLeader, leaderHint: this.node.leaderId, message: 'entry replaced by a newer leader' });
  }
}

function appEntryBytes(entries: readonly Entry[]): number {
  let n = 0;
  for (const e of entries) n += e.data.length;
  return n;
}

/** Same members (order aside: the bootstrap peer list keeps the map's order). */
function sameConf(a: ConfState, b: ConfState): boolean {
  const key = (ids: readonly number[]) => [...ids].sort((x, y) => x - y).join();
  return key(a.voters) === key(b.voters) && key(a.learners) === key(b.learners);
}
