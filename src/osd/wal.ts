// The write-ahead log every OSD shares among all its raft groups (one per PG,
// SPEC CLU4): raft entries, hard states, snapshot points and group removals of
// every group go into one log, so one fdatasync makes a whole batch durable for
// all PGs of the OSD (group commit).
//
// Design (record format: wal-format.ts; recovery rules: wal-replay.ts):
// - Storage is a SegmentStore (io/segments.ts): append-only segment files named
//   wal-<16 hex digits>.seg, numbered upwards. A segment's bytes are records back
//   to back, each with a global sequence number (+1 per record) and crc32c.
// - entries()/hardState()/snapshot()/dropGroup() only encode a record into an
//   in-memory queue (sequence numbers are assigned at the call, so log order is
//   call order) and return its sequence number. commit() makes everything queued
//   so far durable: the queue goes out in ONE append (writev) and ONE sync, for
//   every group at once. commit() calls made while a batch is in flight are all
//   served by the next batch (one more append + sync), and calls made in the same
//   event-loop turn share a batch (the writer starts on a microtask).
// - Backpressure: `needsCommit` turns true once commitThresholdBytes are queued;
//   a call that would queue more than bufferedBytesMax throws ERR_LIMIT.
// - Each record carries syncedSeq, the highest sequence number already fsync'ed
//   when its batch was appended; after a sync, if nothing else is queued, an
//   unsynced 40-byte SYNC_MARK is appended so that even the last batch is followed
//   by proof that it was synced. This is what lets recovery tell a torn tail
//   (dropped) from corruption in the middle of the log (reported): wal-replay.ts.
// - A segment rolls over once it holds segmentBytesMax; the new segment's name is
//   fsync'ed (syncDir) before anything is written into it (see recycling below).
//   Before a roll (and before a checkpoint starts its segment) the old segment is
//   sealed: cut at its last record and synced, unsynced SYNC_MARK included
//   (otherwise its tear would look like a hole between two synced segments).
// - Segment files may be recycled (io/segments.ts): a new segment can be an old
//   one's file, still holding that file's earlier records beyond what this life
//   wrote. Overwriting them makes each fdatasync cheaper than appending at a
//   file's end (docs/ARCHITECTURE.md "Replication"). Recovery stays sound because
//   only the newest segment can hold such bytes (every older one was sealed, and
//   close() seals the last), and there they read as what follows the log's end:
//   stale records have lower sequence numbers, and their syncedSeq is below any
//   record of this life they follow, so they can never make a region read as
//   DAMAGE (wal-replay.ts); a stale checkpoint names another segment (CKPT_BEGIN's
//   tag). That lower-seq rule holds only because a segment's name is made durable
//   BEFORE the first byte is written into it: otherwise a crash could keep the
//   written (even fdatasynced) records and undo the rename, leaving them in a
//   spare that the next life takes again, under the same name, for the same
//   sequence numbers at the same offsets. A record of the dead life lying exactly
//   where the new life's log ends would then be replayed as its continuation
//   (found by a review in session 12; reproducer in wal.test.ts).
// - checkpoint(state): the caller, having made its object store durable, passes
//   every live group's hardState, applied point (snapshot) and entries after it.
//   Whatever was queued before the call is committed to the current segment; then
//   a new segment starts with the checkpoint span (CKPT_BEGIN, GROUP_STATE and
//   ENTRIES records per group, CKPT_END), which is synced with its directory
//   entry; then every older segment is removed. bytesSinceCheckpoint() tells the
//   caller when to checkpoint again.
// - open(store): replays from the segment that begins with the complete checkpoint
//   of the highest sequence number that names that segment (older segments are
//   removed; a newer segment's garbage start may hold a stale copy of another
//   segment's checkpoint), fdatasyncs the replayed segments (a
//   process crash can leave unsynced data in the page cache, and the caller will
//   act on what open returns), then appends to a new segment: the writer never
//   appends after bytes it did not write in this life.
//
// Damaged groups and `selfId`: when recovery finds corruption in the middle of
// the log, the affected groups come back with `damaged: true`, their entries up
// to the damage (contiguous), maxIndexSeen/maxTermSeen from every record of theirs
// (including those after the damage), and a hardState whose term is the highest
// seen for the group and whose vote is `options.selfId` unless the vote in that
// term is certain. Recording a vote for itself in a term in which this replica
// will not campaign can never make it vote for two candidates in one term. The
// OSD must keep damaged groups out of elections (no campaign, no vote) until a
// leader has repaired their log. Records of a damaged group written after open
// are appended normally, but a replay still stops applying them at the old
// damage until a checkpoint supersedes it: the caller should checkpoint soon
// after opening a damaged log (passing `damaged` for groups not yet repaired, so
// the mark survives the checkpoint).
//
// Invariants:
// - commit() resolves only after an fdatasync that covers every record queued
//   before the call (and the directory entry of any new segment they are in).
// - Any append, sync, create, remove or directory-sync error makes the Wal
//   permanently failed: every pending and later call rejects (or throws) with
//   that error. What reached the disk is unknown; the OSD exits and recovers
//   from open() and its peers (GUIDE habit 9).
// - Sequence numbers increase by exactly 1 per record; a number that was ever
//   part of a synced batch is never reused.
// - One writer per store: the OSD holds its data directory exclusively, and a
//   new open() happens only once the previous process (and its IO) is gone.
// - Entry data is referenced, not copied, until written (raft entries are
//   immutable): callers must not modify an entry's data after handing it over.
import { TesseraError } from '../stdx/errors.js';
import { assert, fail } from '../stdx/assert.js';
import type { Entry, HardState, SnapshotMeta } from '../raft/types.js';
import type { Segment, SegmentStore } from '../io/segments.js';
import {
  CONF_NODES_MAX,
  ENTRY_DATA_BYTES_MAX,
  FLAG_MORE,
  RECORD_BODY_TARGET_BYTES,
  RecordType,
  checkpointBelongsTo,
  countsBody,
  entriesBody,
  entryEncodedBytes,
  groupStateBody,
  hardStateBody,
  makeRecord,
  scanSegment,
  sealRecord,
  snapshotBody,
  stampCheckpointSegment,
  walSegmentNumber,
  WAL_SEGMENT_NAME,
  type GroupDamageMark,
  type PendingRecord,
} from './wal-format.js';
import { Replayer, type RecoveredGroup, type WalDamage, type WalTornTail } from './wal-replay.js';

export type { RecoveredGroup, WalDamage, WalTornTail } from './wal-replay.js';
export type { GroupDamageMark } from './wal-format.js';

export const WAL_SEGMENT_BYTES_DEFAULT = 64 * 1024 * 1024;
export const WAL_COMMIT_THRESHOLD_BYTES_DEFAULT = 8 * 1024 * 1024;
export const WAL_BUFFERED_BYTES_MAX_DEFAULT = 64 * 1024 * 1024;
/** The first checkpoint of a fresh log is CKPT_BEGIN (seq 1) and CKPT_END (seq 2). */
const FRESH_LOG_LAST_SEQ = 2;
/** Looking for a checkpoint at the start of a segment reads this much at a time (most segments have none). */
const CHECKPOINT_PROBE_WINDOW_BYTES = 64 * 1024;

export interface WalOptions {
  /** This OSD's raft node id: the vote recorded for damaged groups (see the header). */
  readonly selfId: number;
  /** Roll over to a new segment once the current one holds this many bytes. */
  readonly segmentBytesMax?: number;
  /** `needsCommit` turns true once this many bytes are queued. */
  readonly commitThresholdBytes?: number;
  /** Queuing beyond this throws ERR_LIMIT (checkpoints are not counted). */
  readonly bufferedBytesMax?: number;
  /** Append an unsynced SYNC_MARK when idle after a sync (default true; see the header). */
  readonly syncMarks?: boolean;
  /**
   * How the writer is started after commit() (default queueMicrotask: every call
   * of the current turn joins the batch). With a blocking SegmentStore the OSD
   * passes setImmediate, so replies and messages already written in this turn
   * leave (their sockets uncork in the same check phase, queued earlier) before
   * the writer blocks in fdatasync.
   */
  readonly schedule?: (run: () => void) => void;
  /**
   * Busy log: when records arrived while the previous batch was being written
   * and synced, the writer lets the event loop turn once through this before
   * taking the next batch, so that the messages already received (peers'
   * appends, client writes, acknowledgements) join it instead of the batch
   * after. Fewer, larger fdatasyncs: each costs ~58 us of kernel CPU here
   * (page writeback, virtio notify, cache flush; docs/benchmarks.md, session
   * 17), and at QD32 the 3-OSD cluster was CPU-bound (~15 % more writes/s
   * with the turn). The OSD-level simulation runs with it. An idle log (the first
   * batch after a pause: every QD1 write) is written at once. The OSD passes
   * two turns of setImmediate (afterTurns); default none (no turn).
   */
  readonly gatherTurn?: (resume: () => void) => void;
}

/** Turns of the event loop a busy OSD WAL gathers for (the daemon and the OSD simulation; see afterTurns). */
export const WAL_GATHER_TURNS = 2;

/**
 * A gatherTurn that resumes after `count` turns of `defer` (setImmediate in the
 * OSD). A second turn also gathers what the first one's sends brought back: a
 * follower's append or a client write answered to a reply sent in the first
 * turn. At 4 KiB QD32 on 3 OSDs, two turns against one (7 interleaved pairs,
 * session 19): 8,079 against 7,333 writes/s, 165 against 184 us of OSD CPU per
 * write (ahead in 6 of 7 pairs); three turns were no better than two.
 */
export function afterTurns(count: number, defer: (run: () => void) => void): (resume: () => void) => void {
  if (!(Number.isInteger(count) && count >= 1)) fail(`afterTurns: count ${count} must be a positive integer`);
  return (resume) => {
    let left = count;
    const step = (): void => {
      if (--left === 0) resume();
      else defer(step);
    };
    defer(step);
  };
}

/** One live group's state handed to checkpoint(). */
export interface CheckpointGroup {
  readonly hardState: HardState;
  /** The applied point: the object store holds everything up to snapshot.index. */
  readonly snapshot?: SnapshotMeta;
  /** Every entry after the snapshot, contiguous from snapshot.index + 1 (or 1). */
  readonly entries: readonly Entry[];
  /** Keep a damaged group's mark across the checkpoint until it has been repaired. */
  readonly damaged?: GroupDamageMark;
  /** Its data was dropped for a snapshot not installed yet (awaitSnapshot). */
  readonly awaitingSnapshot?: boolean;
}

export interface WalOpenResult {
  readonly wal: Wal;
  /** Every group in the log, by key, in ascending key order. */
  readonly groups: Map<number, RecoveredGroup>;
  /** Corruption found in the middle of the log (empty when healthy). */
  readonly damage: WalDamage[];
  /** The unacknowledged tail dropped on open, if any (informational). */
  readonly tornTail: WalTornTail | null;
  /** Sequence number of the last record recovered. */
  readonly lastSeq: number;
  /** Torn tails of earlier lives skipped because a later open had already cut the log before them (informational). */
  readonly abandonedRegions: number;
}

export interface WalStats {
  appends: number;
  syncs: number;
  syncMarks: number;
  bytesAppended: number;
  segmentsCreated: number;
  segmentsRemoved: number;
  checkpoints: number;
  /** Event-loop turns taken before a batch that followed directly on the previous one (WalOptions.gatherTurn). */
  gatherTurns: number;
}

type QueueItem = { readonly kind: 'record'; readonly rec: PendingRecord } | { readonly kind: 'checkpoint'; readonly records: PendingRecord[] };

interface Waiter {
  readonly targetSeq: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

interface GroupIndex {
  lastIndex: number;
  snapIndex: number;
}

interface WriterStart {
  nextSeq: number;
  nextSegmentNumber: number;
  liveSegments: string[];
}

export class Wal {
  readonly stats: WalStats = { appends: 0, syncs: 0, syncMarks: 0, bytesAppended: 0, segmentsCreated: 0, segmentsRemoved: 0, checkpoints: 0, gatherTurns: 0 };
  private readonly segmentBytesMax: number;
  private readonly commitThresholdBytes: number;
  private readonly bufferedBytesMax: number;
  private readonly syncMarks: boolean;
  private nextSeq: number;
  /** Highest seq covered by a completed sync. */
  private durableSeq: number;
  /** Highest seq of a record queued by a caller (sync marks excluded). */
  private queuedSeq: number;
  private queue: QueueItem[] = [];
  private queuedBytes = 0;
  private waiters: Waiter[] = [];
  private current: Segment | null = null;
  /** The current segment ends with an unsynced SYNC_MARK... */
  private markPending = false;
  /** ...whose seq is this. */
  private markSeq = 0;
  private nextSegmentNumber: number;
  /** Segments since the last checkpoint, oldest first (the last one is `current` once opened). */
  private liveSegments: string[];
  private readonly index = new Map<number, GroupIndex>();
  private running = false;
  private scheduled = false;
  private readonly scheduleRun: (run: () => void) => void;
  private readonly gatherTurn: ((resume: () => void) => void) | undefined;
  private failure: Error | null = null;
  private closed = false;
  private idleWaiters: Array<() => void> = [];
  private bytesSinceCheckpointCount = 0;

  private constructor(
    private readonly store: SegmentStore,
    options: WalOptions,
    start: WriterStart,
  ) {
    assert(Number.isSafeInteger(options.selfId) && options.selfId > 0, 'WAL selfId must be a positive node id');
    this.segmentBytesMax = options.segmentBytesMax ?? WAL_SEGMENT_BYTES_DEFAULT;
    this.commitThresholdBytes = options.commitThresholdBytes ?? WAL_COMMIT_THRESHOLD_BYTES_DEFAULT;
    this.bufferedBytesMax = options.bufferedBytesMax ?? WAL_BUFFERED_BYTES_MAX_DEFAULT;
    this.syncMarks = options.syncMarks ?? true;
    this.scheduleRun = options.schedule ?? queueMicrotask;
    this.gatherTurn = options.gatherTurn;
    assert(this.segmentBytesMax > 0 && this.commitThresholdBytes > 0 && this.bufferedBytesMax >= this.commitThresholdBytes, 'bad WAL size limits');
    this.nextSeq = start.nextSeq;
    this.durableSeq = start.nextSeq - 1;
    this.queuedSeq = start.nextSeq - 1;
    this.nextSegmentNumber = start.nextSegmentNumber;
    this.liveSegments = start.liveSegments;
  }

  /** Recovers the log in `store` (creating a fresh one if it is empty); see the header. */
  static async open(store: SegmentStore, options: WalOptions): Promise<WalOpenResult> {
    const names = (await store.list()).filter((n) => WAL_SEGMENT_NAME.test(n)).sort();
    const nextSegmentNumber = names.length === 0 ? 1 : walSegmentNumber(names[names.length - 1]) + 1;
    // Replay starts at the complete checkpoint with the highest sequence number (the
    // older segment on a tie), not at the newest segment that starts with one: a
    // segment whose unsynced start is garbage can hold a stale copy of an older
    // checkpoint (a recycled block), which must not hide the real one before it.
    // Taking it deleted the real log, acknowledged commits included (seeded crash
    // test, seed 146069065, session 9).
    let startAt = -1;
    let startSeq = -1;
    for (let i = names.length - 1; i >= 0; i--) {
      const seq = await checkpointSeqAtStart(store, names[i]);
      if (seq !== null && seq >= startSeq) {
        startAt = i;
        startSeq = seq;
      }
    }
    if (startAt < 0) {
      // No complete checkpoint: a log whose creation never completed (only pieces of the
      // first checkpoint can exist), or one that lost its only checkpoint (fatal).
      if (await holdsRecordAfter(store, names, FRESH_LOG_LAST_SEQ)) {
        throw new TesseraError('ERR_FORMAT', `WAL: no segment of ${names.length} begins with a valid checkpoint; the log cannot be recovered locally`);
      }
      const wal = new Wal(store, options, { nextSeq: 1, nextSegmentNumber, liveSegments: names });
      await wal.checkpoint(new Map());
      return { wal, groups: new Map(), damage: [], tornTail: null, lastSeq: FRESH_LOG_LAST_SEQ, abandonedRegions: 0 };
    }
    const replayer = new Replayer(options.selfId);
    const replayed = names.slice(startAt);
    let replayedBytes = 0;
    for (let i = 0; i < replayed.length; i++) {
      const seg = await store.open(replayed[i]);
      replayedBytes += seg.sizeBytes;
      try {
        await scanSegment(seg, (item) => replayer.feed(item, i, replayed[i]));
        await seg.sync(); // what open returns must be durable, not just in the page cache
      } finally {
        await seg.close();
      }
    }
    const result = replayer.finish();
    await store.syncDir();
    const wal = new Wal(store, options, { nextSeq: result.lastSeq + 1, nextSegmentNumber, liveSegments: replayed });
    wal.bytesSinceCheckpointCount = replayedBytes; // the log since the checkpoint is still there to replay
    for (const name of names.slice(0, startAt)) {
      await store.remove(name); // left over from before the checkpoint (a remove that was not yet durable)
      wal.stats.segmentsRemoved++;
    }
    for (const [key, g] of result.groups) {
      const lastIndex = g.entries.length > 0 ? g.entries[g.entries.length - 1].index : (g.snapshot?.index ?? 0);
      wal.index.set(key, { lastIndex, snapIndex: g.snapshot?.index ?? 0 });
    }
    return { wal, groups: result.groups, damage: result.damage, tornTail: result.tornTail, lastSeq: result.lastSeq, abandonedRegions: result.abandonedRegions };
  }

  // ------------------------------------------------------------ records

  /** Queues "drop the group's entries with index >= entries[0].index, then append these". Returns the last record's seq. */
  entries(group: number, entries: readonly Entry[]): number {
    this.checkUsable();
    if (entries.length === 0) return this.queuedSeq;
    const t = this.index.get(group) ?? { lastIndex: 0, snapIndex: 0 };
    checkEntries(entries);
    const first = entries[0].index;
    // Messages are built only on failure: this runs for every entry batch (hot path).
    if (!(first > t.snapIndex && first <= t.lastIndex + 1)) assert(false, `group ${group}: entries from ${first} do not follow its log (last ${t.lastIndex}, snapshot ${t.snapIndex})`);
    const pieces = splitEntries(entries, false);
    const records = pieces.map((r, k) => makeRecord(RecordType.Entries, k < pieces.length - 1 ? FLAG_MORE : 0, group, this.nextSeq + k, entriesBody(entries, r.from, r.to)));
    this.enqueue(records);
    t.lastIndex = entries[entries.length - 1].index;
    this.index.set(group, t);
    return this.queuedSeq;
  }

  hardState(group: number, hs: HardState): number {
    this.checkUsable();
    if (!(isCount(hs.term) && isCount(hs.vote) && isCount(hs.commit))) assert(false, `group ${group}: bad hard state ${JSON.stringify(hs)}`);
    this.enqueue([makeRecord(RecordType.HardState, 0, group, this.nextSeq, [hardStateBody(hs)])]);
    return this.queuedSeq;
  }

  /** Queues "the group's state now includes everything up to meta.index": see wal-replay.ts applySnapshot. */
  snapshot(group: number, meta: SnapshotMeta): number {
    this.checkUsable();
    checkSnapshot(meta);
    const t = this.index.get(group) ?? { lastIndex: 0, snapIndex: 0 };
    if (!(meta.index >= t.snapIndex)) fail(`group ${group}: snapshot ${meta.index} is older than ${t.snapIndex}`);
    this.enqueue([makeRecord(RecordType.Snapshot, 0, group, this.nextSeq, [snapshotBody(meta)])]);
    // Whether entries after meta.index survive depends on their terms; either way none lie at or below it.
    t.lastIndex = Math.max(t.lastIndex, meta.index);
    t.snapIndex = meta.index;
    this.index.set(group, t);
    return this.queuedSeq;
  }

  /**
   * Queues "the group's data is being replaced by a snapshot": until a later
   * snapshot() record, replay reports the group as awaiting one (its store may
   * hold a partial copy). Commit it before dropping the data.
   */
  awaitSnapshot(group: number): number {
    this.checkUsable();
    this.enqueue([makeRecord(RecordType.AwaitSnapshot, 0, group, this.nextSeq, [])]);
    return this.queuedSeq;
  }

  dropGroup(group: number): number {
    this.checkUsable();
    this.enqueue([makeRecord(RecordType.DropGroup, 0, group, this.nextSeq, [])]);
    this.index.delete(group);
    return this.queuedSeq;
  }

  /** Resolves once every record queued before this call is durable (see the header). */
  commit(): Promise<void> {
    const err = this.unusable();
    if (err) return Promise.reject(err);
    return this.waitFor(this.queuedSeq);
  }

  /** Replaces the log by `groups` (every live group) and removes older segments; see the header. */
  checkpoint(groups: ReadonlyMap<number, CheckpointGroup>): Promise<void> {
    const err = this.unusable();
    if (err) return Promise.reject(err);
    const keys = [...groups.keys()].sort((a, b) => a - b);
    const inner: PendingRecord[] = [];
    let seq = this.nextSeq + 1;
    for (const key of keys) {
      const g = groups.get(key)!;
      if (g.snapshot) checkSnapshot(g.snapshot);
      const base = g.snapshot?.index ?? 0;
      checkEntries(g.entries);
      if (!(g.entries.length === 0 || g.entries[0].index === base + 1)) fail(`checkpoint of group ${key}: entries start at ${g.entries[0]?.index}, not right after the snapshot ${base}`);
      inner.push(makeRecord(RecordType.GroupState, 0, key, seq++, groupStateBody(g)));
      for (const r of splitEntries(g.entries, true)) inner.push(makeRecord(RecordType.Entries, 0, key, seq++, entriesBody(g.entries, r.from, r.to)));
    }
    const begin = makeRecord(RecordType.CkptBegin, 0, 0, this.nextSeq, [countsBody(keys.length, inner.length)]);
    const end = makeRecord(RecordType.CkptEnd, 0, 0, seq, [countsBody(keys.length, inner.length)]);
    this.nextSeq = seq + 1;
    this.queuedSeq = seq;
    this.queue.push({ kind: 'checkpoint', records: [begin, ...inner, end] });
    this.index.clear();
    for (const key of keys) {
      const g = groups.get(key)!;
      const base = g.snapshot?.index ?? 0;
      this.index.set(key, { lastIndex: g.entries.length > 0 ? g.entries[g.entries.length - 1].index : base, snapIndex: base });
    }
    return this.waitFor(seq);
  }

  /** True once enough is queued that the caller should await commit() before queuing more. */
  get needsCommit(): boolean {
    return this.queuedBytes >= this.commitThresholdBytes;
  }

  /** Sequence number of the last record queued (what a commit() called now would cover). */
  get lastQueuedSeq(): number {
    return this.queuedSeq;
  }

  get bufferedBytes(): number {
    return this.queuedBytes;
  }

  /** Bytes appended since the last checkpoint (the caller checkpoints when this grows large). */
  bytesSinceCheckpoint(): number {
    return this.bytesSinceCheckpointCount;
  }

  /** The error that failed this Wal, or null. */
  get failed(): Error | null {
    return this.failure;
  }

  /** Commits what is queued, seals the current segment, then closes. Later calls fail with ERR_CLOSED. */
  async close(): Promise<void> {
    if (this.closed) return;
    const flushed = this.failure ? Promise.resolve() : this.waitFor(this.queuedSeq);
    this.closed = true;
    await flushed.catch(() => undefined);
    if (this.running || this.scheduled) await new Promise<void>((r) => this.idleWaiters.push(r));
    // Sealed, a recycled last segment does not leave stale bytes for the next open to
    // read as a torn tail. Best effort: everything acknowledged is already durable.
    if (this.current && this.failure === null) await this.seal(this.current).catch(() => undefined);
    await this.current?.close().catch(() => undefined);
    this.current = null;
  }

  // ------------------------------------------------------------ the writer

  private enqueue(records: PendingRecord[]): void {
    let bytes = 0;
    for (const r of records) bytes += r.totalBytes;
    if (this.queuedBytes + bytes > this.bufferedBytesMax) {
      throw new TesseraError('ERR_LIMIT', `WAL: ${this.queuedBytes} bytes queued, ${bytes} more would exceed ${this.bufferedBytesMax}; await commit() first`);
    }
    for (const rec of records) this.queue.push({ kind: 'record', rec });
    this.queuedBytes += bytes;
    this.nextSeq += records.length;
    this.queuedSeq = this.nextSeq - 1;
  }

  private waitFor(targetSeq: number): Promise<void> {
    if (targetSeq <= this.durableSeq) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.waiters.push({ targetSeq, resolve, reject });
      this.schedule();
    });
  }

  /** Starts the writer on a microtask, so that every call of the current turn joins its batch. */
  private schedule(): void {
    if (this.running || this.scheduled) return;
    this.scheduled = true;
    this.scheduleRun(() => {
      this.scheduled = false;
      void this.run();
    });
  }

  private async run(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      let busy = false;
      while (this.failure === null && this.waiters.length > 0 && this.queue.length > 0) {
        if (busy && this.gatherTurn !== undefined) {
          const turn = this.gatherTurn;
          await new Promise<void>((resume) => turn(resume));
          this.stats.gatherTurns++;
          if (this.failure !== null) break;
        }
        busy = true;
        const items = this.queue;
        this.queue = [];
        this.queuedBytes = 0;
        let batch: PendingRecord[] = [];
        for (const item of items) {
          if (item.kind === 'record') {
            batch.push(item.rec);
            continue;
          }
          if (batch.length > 0) await this.writeBatch(batch);
          batch = [];
          await this.writeCheckpoint(item.records);
        }
        if (batch.length > 0) await this.writeBatch(batch);
        this.settle();
        if (this.syncMarks && this.queue.length === 0) await this.writeSyncMark();
      }
    } catch (err) {
      this.fail(err);
    } finally {
      this.running = false;
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private async writeBatch(records: PendingRecord[]): Promise<void> {
    if (this.current === null || this.current.sizeBytes >= this.segmentBytesMax) await this.roll();
    const seg = this.current!;
    const bytes = await this.appendSealed(seg, records);
    await seg.sync();
    this.stats.syncs++;
    this.markPending = false;
    this.durableSeq = records[records.length - 1].seq;
    this.bytesSinceCheckpointCount += bytes;
  }

  private async roll(): Promise<void> {
    const old = this.current;
    if (old) await this.seal(old);
    const name = this.newSegmentName();
    this.current = await this.store.create(name);
    this.stats.segmentsCreated++;
    this.liveSegments.push(name);
    await this.store.syncDir(); // before the first write into it: see the header (recycling)
    await old?.close();
  }

  /**
   * Ends `seg` at its last record before a newer segment starts (see the header):
   * an unsynced mark must not end a segment that is followed by others, and stale
   * bytes of a recycled file must not lie between two segments' records.
   */
  private async seal(seg: Segment): Promise<void> {
    await seg.seal();
    this.stats.syncs++;
    if (this.markPending) {
      this.durableSeq = this.markSeq;
      this.markPending = false;
    }
  }

  private async writeSyncMark(): Promise<void> {
    const seg = this.current;
    if (seg === null) return;
    const seq = this.nextSeq++;
    this.markSeq = seq;
    const bytes = await this.appendSealed(seg, [makeRecord(RecordType.SyncMark, 0, 0, seq, [])]);
    this.stats.syncMarks++;
    this.markPending = true;
    this.bytesSinceCheckpointCount += bytes;
  }

  private async writeCheckpoint(records: PendingRecord[]): Promise<void> {
    if (this.current) await this.seal(this.current);
    const name = this.newSegmentName();
    stampCheckpointSegment(records[0], walSegmentNumber(name));
    const seg = await this.store.create(name);
    this.stats.segmentsCreated++;
    try {
      await this.store.syncDir(); // before the first write into it: see the header (recycling)
      await this.appendSealed(seg, records);
      await seg.sync();
      this.stats.syncs++;
    } catch (err) {
      await seg.close().catch(() => undefined);
      throw err;
    }
    const older = this.liveSegments;
    const oldCurrent = this.current;
    this.current = seg;
    this.liveSegments = [name];
    this.markPending = false;
    this.durableSeq = records[records.length - 1].seq;
    this.bytesSinceCheckpointCount = 0;
    this.stats.checkpoints++;
    await oldCurrent?.close();
    for (const old of older) {
      await this.store.remove(old);
      this.stats.segmentsRemoved++;
    }
  }

  private async appendSealed(seg: Segment, records: PendingRecord[]): Promise<number> {
    const buffers: Uint8Array[] = [];
    let bytes = 0;
    for (const r of records) {
      sealRecord(r, this.durableSeq, buffers);
      bytes += r.totalBytes;
    }
    await seg.append(buffers);
    this.stats.appends++;
    this.stats.bytesAppended += bytes;
    return bytes;
  }

  private settle(): void {
    while (this.waiters.length > 0 && this.waiters[0].targetSeq <= this.durableSeq) this.waiters.shift()!.resolve();
  }

  private fail(err: unknown): void {
    if (this.failure) return;
    this.failure = err instanceof Error ? err : new TesseraError('ERR_DEVICE_IO', `WAL: ${String(err)}`);
    for (const w of this.waiters.splice(0)) w.reject(this.failure);
    this.queue = [];
    this.queuedBytes = 0;
  }

  private newSegmentName(): string {
    return `wal-${(this.nextSegmentNumber++).toString(16).padStart(16, '0')}.seg`;
  }

  private unusable(): Error | null {
    if (this.failure) return this.failure;
    if (this.closed) return new TesseraError('ERR_CLOSED', 'WAL is closed');
    return null;
  }

  private checkUsable(): void {
    const err = this.unusable();
    if (err) throw err;
  }
}

/** The CKPT_BEGIN seq when the segment starts (offset 0) with a complete, valid checkpoint span, else null. */
async function checkpointSeqAtStart(store: SegmentStore, name: string): Promise<number | null> {
  const seg = await store.open(name);
  let begin: { seq: number; groupCount: number; recordCount: number } | null = null;
  let records = 0;
  let complete = false;
  try {
    await scanSegment(seg, (item) => {
      if (item.kind !== 'record') return false;
      const { header: h, body: b } = item;
      if (begin === null) {
        if (item.offsetBytes !== 0 || b.type !== 'checkpointBegin') return false;
        if (!checkpointBelongsTo(h.group, walSegmentNumber(name))) return false; // a copy from another segment
        begin = { seq: h.seq, groupCount: b.groupCount, recordCount: b.recordCount };
        return true;
      }
      if (h.seq !== begin.seq + records + 1) return false;
      if (b.type === 'checkpointEnd') {
        complete = b.groupCount === begin.groupCount && b.recordCount === begin.recordCount && records === begin.recordCount;
        return false;
      }
      if (b.type !== 'groupState' && b.type !== 'entries') return false;
      records++;
      return true;
    }, CHECKPOINT_PROBE_WINDOW_BYTES);
  } finally {
    await seg.close();
  }
  const found = begin as { seq: number } | null;
  return complete && found !== null ? found.seq : null;
}

async function holdsRecordAfter(store: SegmentStore, names: string[], seq: number): Promise<boolean> {
  let found = false;
  for (const name of names) {
    const seg = await store.open(name);
    try {
      await scanSegment(seg, (item) => {
        if (item.kind === 'record' && item.header.seq > seq) found = true;
        return !found;
      });
    } finally {
      await seg.close();
    }
    if (found) return true;
  }
  return false;
}

function checkEntries(entries: readonly Entry[]): void {
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    if (!(isCount(e.index) && e.index >= 1 && isCount(e.term))) assert(false, `bad entry term ${e.term} index ${e.index}`);
    if (!(i === 0 || (e.index === entries[i - 1].index + 1 && e.term >= entries[i - 1].term))) assert(false, `entries must be consecutive with non-decreasing terms (at index ${e.index})`);
    if (e.data.length > ENTRY_DATA_BYTES_MAX) {
      throw new TesseraError('ERR_LIMIT', `entry ${e.index} holds ${e.data.length} bytes, more than ${ENTRY_DATA_BYTES_MAX}`);
    }
  }
}

function checkSnapshot(meta: SnapshotMeta): void {
  if (!(Number.isSafeInteger(meta.index) && meta.index >= 0 && Number.isSafeInteger(meta.term) && meta.term >= 0)) fail(`bad snapshot ${meta.index}/${meta.term}`);
  if (meta.conf.voters.length + meta.conf.learners.length > CONF_NODES_MAX) {
    throw new TesseraError('ERR_LIMIT', `snapshot conf holds more than ${CONF_NODES_MAX} nodes`);
  }
  for (const n of [...meta.conf.voters, ...meta.conf.learners]) assert(Number.isSafeInteger(n) && n >= 0, `bad node id ${n}`);
}

/** Ranges of entries, each encoding to about RECORD_BODY_TARGET_BYTES (one entry at least). */
function splitEntries(entries: readonly Entry[], allowEmpty: boolean): Array<{ from: number; to: number }> {
  const out: Array<{ from: number; to: number }> = [];
  let from = 0;
  let bodyBytes = 8;
  for (let i = 0; i < entries.length; i++) {
    const n = entryEncodedBytes(entries[i]);
    if (i > from && bodyBytes + n > RECORD_BODY_TARGET_BYTES) {
      out.push({ from, to: i });
      from = i;
      bodyBytes = 8;
    }
    bodyBytes += n;
  }
  if (entries.length > from) out.push({ from, to: entries.length });
  assert(allowEmpty || out.length > 0, 'no entries to split');
  return out;
}

/** A non-negative safe integer. */
function isCount(v: number): boolean {
  return Number.isSafeInteger(v) && v >= 0;
}
