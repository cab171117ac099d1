// Recovery of the OSD's write-ahead log (wal.ts): replays the records found by
// scanning the segments (wal-format.ts), from the newest complete checkpoint
// forward, into per-group raft state, and decides what every bad span means.
// Pure: no IO, fed one ScanItem at a time.
//
// The chain: records must carry consecutive sequence numbers. A bad span (bytes
// that are not a valid record, a sequence gap, or a valid but stale record) opens
// a "region", judged by what follows it (L = last good seq before the region,
// B = the last operation boundary at or before L):
//   ABANDONED  a later segment begins (offset 0) with seq B+1: a restarted writer
//              declared the log ended at B (it had judged this region a torn
//              tail). Everything after B in between is skipped.
//   DAMAGE     a valid record after the region has syncedSeq >= L+1: the record
//              at L+1 had been fsync'ed (and possibly acknowledged) before that
//              record was written, so the region is corruption in the middle of
//              the log. It is reported, never silently truncated (see below).
//   TORN       neither, up to the end of the log: the region and everything after
//              it belong to the last batch, whose fsync never completed (or whose
//              completion was never followed by a record saying so), so nothing
//              in it was acknowledged. Dropped; reported only as `tornTail`.
// Because every batch is fsync'ed before the next is appended and records carry
// the syncedSeq of their batch, sectors torn in any order within the last batch
// never look like DAMAGE, and a flip in a synced record is caught by the next
// batch. The Wal also appends an unsynced SYNC_MARK when it goes idle after a
// sync, so a flip in the last synced batch is caught too once the mark reached
// the disk; the one case left ambiguous is corruption of the last synced batch
// when the mark itself never reached the disk (power lost within the page-cache
// writeback delay after the sync): it reads as a torn tail.
//
// DAMAGE handling: the region's groups are those of the intact headers of its
// records when it is exactly a run of such records ending right before the next
// valid one (a body bit flip); otherwise 'all' (the bytes cannot be attributed,
// so every group, including ones first seen later, is suspect). A damaged group
// keeps its state as of the damage (its entries stay contiguous) and later
// records of it only raise maxIndexSeen/maxTermSeen; its hardState is rebuilt:
// term = the highest term seen for it anywhere, vote = the latest vote seen if it
// is certain for that term, else `selfId` (recording a vote for itself in a term
// in which it will not campaign can never make it vote twice). A later
// DROP_GROUP or complete checkpoint heals a group (its state is fully known again).
// maxIndexSeen bounds what the damage hid only when an entries or snapshot
// record of the group follows it (a committed entry is never truncated, so later
// appends lie beyond it); without one the group's newest records may be the
// unreadable ones, and it is recovered with damageExtentUnknown (raft then
// repairs it up to a leader's own-term commit and it grants no vote meanwhile).
//
// Operations spanning several records (ENTRIES pieces with FLAG_MORE, and
// checkpoints) apply atomically: a partial one at a tear or restart is dropped.
// A CKPT_BEGIN counts only at offset 0 of the segment it names (see wal-format.ts);
// anywhere else it is a stale copy and reads as a bad span. Records from another
// life of the log with higher seqs than this one's (a lost segment's blocks) can
// still read as DAMAGE: safe (the groups are repaired from peers) but spurious;
// only a log identity in every record would tell them apart.
import { NONE, type Entry, type HardState, type SnapshotMeta } from '../raft/types.js';
import { TesseraError } from '../stdx/errors.js';
import { FLAG_MORE, RecordType, checkpointBelongsTo, walSegmentNumber, type CheckpointGroupState, type RecordHeader, type ScanItem, type WalBody } from './wal-format.js';

/** Records held while a region is judged; beyond this the log is not one this writer produced. */
export const REPLAY_PENDING_BYTES_MAX = 256 * 1024 * 1024;

export interface WalDamage {
  readonly segment: string;
  readonly offsetBytes: number;
  /** Last valid record before the damaged bytes. */
  readonly lastGoodSeq: number;
  /** First valid record after them: replay resumes there. */
  readonly firstSeqAfter: number;
  /** Groups whose records the damaged bytes held, or 'all' when they cannot be attributed. */
  readonly groups: readonly number[] | 'all';
  readonly reason: string;
}

export interface WalTornTail {
  readonly segment: string;
  readonly offsetBytes: number;
  readonly lastGoodSeq: number;
  /** Valid records found after the tear and dropped with it (sectors persisted out of order). */
  readonly droppedRecords: number;
}

export interface RecoveredGroup {
  readonly hardState: HardState;
  readonly snapshot?: SnapshotMeta;
  /** Contiguous, starting right after `snapshot` (or at 1). For a damaged group: up to the damage. */
  readonly entries: Entry[];
  /** The log may have held more than `entries` for this group: keep it out of elections until repaired. */
  readonly damaged: boolean;
  /** Highest entry or snapshot index in any record of this group (after the damage too). */
  readonly maxIndexSeen: number;
  /** Highest entry or snapshot term in any record of this group (after the damage too). */
  readonly maxTermSeen: number;
  /**
   * Damaged, and no readable entries or snapshot record of the group follows the
   * damage: the unreadable region may have held entries beyond maxIndexSeen
   * (raft RaftConfig.repairExtentUnknown). Also carried by checkpoints.
   */
  readonly damageExtentUnknown: boolean;
  /**
   * An AWAIT_SNAP record (or a checkpoint's flag) with no snapshot record after
   * it: the group's data was being replaced by a snapshot and may be partial.
   */
  readonly awaitingSnapshot: boolean;
}

export interface ReplayResult {
  readonly groups: Map<number, RecoveredGroup>;
  readonly damage: WalDamage[];
  readonly tornTail: WalTornTail | null;
  /** Last record of the last complete operation: the writer continues at lastSeq + 1. */
  readonly lastSeq: number;
  /** Regions skipped because a restarted writer had already cut the log before them. */
  readonly abandonedRegions: number;
}

export type ReplayItem = ScanItem & { readonly segmentIndex: number; readonly segment: string };
type RecordItem = Extract<ReplayItem, { kind: 'record' }>;
type BadItem = Extract<ReplayItem, { kind: 'bad' }>;

interface GroupReplay {
  hardState: HardState | null;
  snapshot: SnapshotMeta | undefined;
  entries: Entry[];
  maxIndexSeen: number;
  maxTermSeen: number;
  maxHsTermSeen: number;
  /** Seq of the first damaged record; later records only raise the maxima. */
  damagedAtSeq: number | null;
  /** Damaged mark carried over by a checkpoint. */
  carriedMark: boolean;
  /** The carried mark's extent is unknown (GroupDamageMark.extentUnknown). */
  carriedExtentUnknown: boolean;
  /** An entries or snapshot record of the group came after its damage: maxIndexSeen bounds what the damage hid. */
  boundAfterDamage: boolean;
  lastHs: HardState | null;
  lastHsAfterDamage: boolean;
  /** See RecoveredGroup.awaitingSnapshot. */
  awaitingSnapshot: boolean;
}

type PartialOp =
  | { kind: 'pieces'; group: number; entries: Entry[]; segment: string; offsetBytes: number }
  | { kind: 'checkpoint'; groupCount: number; recordCount: number; records: number; groups: Map<number, GroupReplay>; segment: string; offsetBytes: number };

interface Region {
  segmentIndex: number;
  segment: string;
  offsetBytes: number;
  lastGoodSeq: number;
  opBoundarySeq: number;
  /** What the region's bad spans (those before any held record) say about their groups: see attribute(). */
  attribution: SpotAttribution;
  buffered: ReplayItem[];
  bufferedBytes: number;
}

export class Replayer {
  private groups = new Map<number, GroupReplay>();
  private expectedSeq = 0;
  private lastCompleteSeq = 0;
  private partial: PartialOp | null = null;
  private pending: Region | null = null;
  /** Set by damage that cannot be attributed: every group is suspect from this seq. */
  private allDamagedFromSeq: number | null = null;
  /** Groups dropped (so fully known again) since allDamagedFromSeq was set. */
  private healed = new Set<number>();
  private readonly damage: WalDamage[] = [];
  private tornTail: WalTornTail | null = null;
  private abandonedRegions = 0;
  private queue: ReplayItem[] = [];
  private queueAt = 0;

  constructor(private readonly selfId: number) {}

  /** Feeds the next item of segment `segment` (the segmentIndex-th replayed); the first must be the starting checkpoint's CKPT_BEGIN. */
  feed(scanned: ScanItem, segmentIndex: number, segment: string): void {
    // Fixed-shape objects (no spread): recovery feeds millions of these.
    const item: ReplayItem =
      scanned.kind === 'record'
        ? { kind: 'record', offsetBytes: scanned.offsetBytes, header: scanned.header, body: scanned.body, segmentIndex, segment }
        : { kind: 'bad', offsetBytes: scanned.offsetBytes, lengthBytes: scanned.lengthBytes, header: scanned.header, segmentIndex, segment };
    if (this.expectedSeq === 0) {
      if (item.kind !== 'record' || item.header.type !== RecordType.CkptBegin) throw new TesseraError('ERR_FORMAT', 'replay must start at a checkpoint');
      this.expectedSeq = item.header.seq;
      this.lastCompleteSeq = item.header.seq - 1;
    }
    this.queue.push(item);
    while (this.queueAt < this.queue.length) this.step(this.queue[this.queueAt++]);
    this.queue = [];
    this.queueAt = 0;
  }

  finish(): ReplayResult {
    const p = this.pending;
    if (p) {
      this.pending = null;
      const droppedRecords = p.buffered.filter((i) => i.kind === 'record').length;
      this.tornTail = { segment: p.segment, offsetBytes: p.offsetBytes, lastGoodSeq: p.lastGoodSeq, droppedRecords };
      this.lastCompleteSeq = p.opBoundarySeq;
    } else if (this.partial) {
      this.tornTail = { segment: this.partial.segment, offsetBytes: this.partial.offsetBytes, lastGoodSeq: this.expectedSeq - 1, droppedRecords: 0 };
    }
    this.partial = null;
    const groups = new Map<number, RecoveredGroup>();
    for (const [key, g] of [...this.groups].sort((a, b) => a[0] - b[0])) groups.set(key, this.recovered(g));
    return { groups, damage: this.damage, tornTail: this.tornTail, lastSeq: this.lastCompleteSeq, abandonedRegions: this.abandonedRegions };
  }

  // ------------------------------------------------------------ the chain

  private step(item: ReplayItem): void {
    if (item.kind === 'record' && item.header.type === RecordType.CkptBegin && !(item.offsetBytes === 0 && checkpointBelongsTo(item.header.group, walSegmentNumber(item.segment)))) {
      // A checkpoint starts its own segment: one anywhere else is a stale copy (a recycled
      // block), however high its seq, and must never replace the groups replayed so far.
      item = asJunk(item);
    }
    if (this.pending) return this.stepPending(item);
    if (item.kind === 'bad') return this.openRegion(item);
    const seq = item.header.seq;
    if (seq === this.expectedSeq) {
      if (this.fits(item)) this.accept(item);
      else this.openRegion(asJunk(item)); // a valid record that breaks the log's structure: not ours to apply
      return;
    }
    if (item.offsetBytes === 0 && seq === this.lastCompleteSeq + 1 && seq < this.expectedSeq) {
      // A restarted writer cut the log at the last operation boundary: drop the partial operation.
      this.partial = null;
      this.expectedSeq = seq;
      return this.step(item);
    }
    if (seq > this.expectedSeq) {
      // Records are missing with no bytes in their place: an empty region, judged by this record.
      this.openRegion({ kind: 'bad', offsetBytes: item.offsetBytes, lengthBytes: 0, header: null, segmentIndex: item.segmentIndex, segment: item.segment });
      return this.stepPending(item);
    }
    this.openRegion(asJunk(item)); // stale: an older record (recycled block, or a tail a restart abandoned)
  }

  private openRegion(spot: BadItem): void {
    const p: Region = {
      segmentIndex: spot.segmentIndex,
      segment: spot.segment,
      offsetBytes: spot.offsetBytes,
      lastGoodSeq: this.expectedSeq - 1,
      opBoundarySeq: this.lastCompleteSeq,
      attribution: newAttribution(this.expectedSeq),
      buffered: [],
      bufferedBytes: 0,
    };
    noteSpot(p.attribution, spot);
    this.pending = p;
  }

  private stepPending(item: ReplayItem): void {
    const p = this.pending!;
    if (item.kind === 'record' && item.offsetBytes === 0 && item.segmentIndex > p.segmentIndex && item.header.seq === p.opBoundarySeq + 1) {
      // ABANDONED (see the header). Checked before staleness: when the region cut a partial
      // operation, the restarted writer's first seq is at or below the region's lastGoodSeq.
      this.pending = null;
      this.partial = null;
      this.abandonedRegions++;
      this.expectedSeq = p.opBoundarySeq + 1;
      this.lastCompleteSeq = p.opBoundarySeq;
      return this.step(item);
    }
    if (item.kind === 'bad' || item.header.seq <= p.lastGoodSeq) {
      const junk = item.kind === 'bad' ? item : asJunk(item);
      if (p.buffered.length === 0) noteSpot(p.attribution, junk);
      else this.hold(p, junk);
      return;
    }
    if (item.header.syncedSeq >= p.lastGoodSeq + 1) return this.resolveDamage(p, item);
    this.hold(p, item);
  }

  private hold(p: Region, item: ReplayItem): void {
    if (item.kind === 'record' && item.body.type === 'entries') {
      for (const e of item.body.entries) p.bufferedBytes += e.data.length + 64;
    } else p.bufferedBytes += 64;
    if (p.bufferedBytes > REPLAY_PENDING_BYTES_MAX) {
      throw new TesseraError('ERR_LIMIT', `WAL replay: more than ${REPLAY_PENDING_BYTES_MAX} bytes of records follow an unresolved bad region in ${p.segment} at ${p.offsetBytes}`);
    }
    p.buffered.push(item);
  }

  private resolveDamage(p: Region, trigger: RecordItem): void {
    this.pending = null;
    const firstAfter = (p.buffered.find((i) => i.kind === 'record') as RecordItem | undefined) ?? trigger;
    const firstSeqAfter = firstAfter.header.seq;
    let groups = attribute(p, firstSeqAfter);
    const part = this.partial;
    this.partial = null;
    if (part?.kind === 'checkpoint') groups = 'all';
    else if (part?.kind === 'pieces' && groups !== 'all' && !groups.includes(part.group)) groups = [...groups, part.group].sort((a, b) => a - b);
    const atSeq = p.lastGoodSeq + 1;
    this.damage.push({
      segment: p.segment,
      offsetBytes: p.offsetBytes,
      lastGoodSeq: p.lastGoodSeq,
      firstSeqAfter,
      groups,
      reason: `records after it prove seq ${atSeq} had been synced (record ${trigger.header.seq} has syncedSeq ${trigger.header.syncedSeq})`,
    });
    if (groups === 'all') {
      this.allDamagedFromSeq ??= atSeq;
      this.healed.clear();
      for (const g of this.groups.values()) markDamaged(g, atSeq);
    } else {
      for (const key of groups) markDamaged(this.groupFor(key), atSeq);
    }
    this.expectedSeq = firstSeqAfter;
    this.lastCompleteSeq = firstSeqAfter - 1;
    this.queue.splice(this.queueAt, 0, ...p.buffered, trigger);
  }

  // ------------------------------------------------------------ applying records

  /** Whether a record with the expected seq fits the structure (checkpoint spans, pieces). */
  private fits(item: RecordItem): boolean {
    const { header: h, body: b } = item;
    const part = this.partial;
    if (part?.kind === 'checkpoint') {
      if (b.type === 'groupState') return !part.groups.has(h.group) && part.records < part.recordCount;
      if (b.type === 'entries') {
        const g = part.groups.get(h.group);
        return g !== undefined && part.records < part.recordCount && entriesFit(g, b.entries);
      }
      if (b.type === 'checkpointEnd') return b.groupCount === part.groupCount && b.recordCount === part.recordCount && part.records === part.recordCount && part.groups.size === part.groupCount;
      return false;
    }
    if (part?.kind === 'pieces') return b.type === 'entries' && h.group === part.group && b.entries[0].index === part.entries[part.entries.length - 1].index + 1;
    if (b.type === 'groupState' || b.type === 'checkpointEnd') return this.allDamagedFromSeq !== null; // leftovers of a damaged checkpoint
    return true;
  }

  private accept(item: RecordItem): void {
    const { header: h, body: b } = item;
    this.expectedSeq = h.seq + 1;
    const part = this.partial;
    if (part?.kind === 'checkpoint') {
      if (b.type === 'groupState') {
        part.records++;
        part.groups.set(h.group, fromCheckpoint(b.state));
      } else if (b.type === 'entries') {
        part.records++;
        const g = part.groups.get(h.group)!;
        raiseMaxima(g, b.entries);
        truncateAppend(g, b.entries);
      } else {
        // CKPT_END: the checkpoint replaces everything; it also heals every damage before it.
        this.groups = part.groups;
        this.allDamagedFromSeq = null;
        this.healed.clear();
        this.partial = null;
        this.lastCompleteSeq = h.seq;
      }
      return;
    }
    if (part?.kind === 'pieces') {
      part.entries.push(...(b as Extract<WalBody, { type: 'entries' }>).entries);
      if (h.flags & FLAG_MORE) return;
      this.partial = null;
      this.applyEntries(item, part.entries);
      this.lastCompleteSeq = h.seq;
      return;
    }
    switch (b.type) {
      case 'entries':
        if (h.flags & FLAG_MORE) {
          this.partial = { kind: 'pieces', group: h.group, entries: [...b.entries], segment: item.segment, offsetBytes: item.offsetBytes };
          return;
        }
        this.applyEntries(item, b.entries);
        break;
      case 'hardState': {
        const g = this.groupFor(h.group);
        g.maxHsTermSeen = Math.max(g.maxHsTermSeen, b.hardState.term);
        g.lastHs = b.hardState;
        g.lastHsAfterDamage = g.damagedAtSeq !== null;
        if (g.damagedAtSeq === null) g.hardState = b.hardState;
        break;
      }
      case 'snapshot': {
        const g = this.groupFor(h.group);
        raiseSnapshotMaxima(g, b.snapshot);
        if (g.damagedAtSeq === null) {
          applySnapshot(g, b.snapshot);
          g.awaitingSnapshot = false;
        }
        break;
      }
      case 'awaitSnapshot':
        // Even after damage: its data may be partial whatever the log says.
        this.groupFor(h.group).awaitingSnapshot = true;
        break;
      case 'dropGroup':
        this.groups.delete(h.group);
        if (this.allDamagedFromSeq !== null) this.healed.add(h.group);
        break;
      case 'syncMark':
        break;
      case 'checkpointBegin':
        this.partial = { kind: 'checkpoint', groupCount: b.groupCount, recordCount: b.recordCount, records: 0, groups: new Map(), segment: item.segment, offsetBytes: item.offsetBytes };
        return;
      case 'groupState': {
        // Only after damage that could not be attributed (see fits()): the maxima still count.
        const g = this.groupFor(h.group);
        if (b.state.snapshot) raiseSnapshotMaxima(g, b.state.snapshot);
        g.maxHsTermSeen = Math.max(g.maxHsTermSeen, b.state.hardState.term);
        if (b.state.awaitingSnapshot) g.awaitingSnapshot = true;
        break;
      }
      case 'checkpointEnd':
        break;
    }
    this.lastCompleteSeq = h.seq;
  }

  private applyEntries(item: RecordItem, entries: Entry[]): void {
    const g = this.groupFor(item.header.group);
    raiseMaxima(g, entries);
    if (g.damagedAtSeq !== null) return;
    if (!entriesFit(g, entries)) {
      markDamaged(g, item.header.seq);
      g.boundAfterDamage = true; // the missing entries precede these
      this.damage.push({
        segment: item.segment,
        offsetBytes: item.offsetBytes,
        lastGoodSeq: item.header.seq - 1,
        firstSeqAfter: item.header.seq + 1,
        groups: [item.header.group],
        reason: `entries from index ${entries[0].index} leave a gap in group ${item.header.group}'s log`,
      });
      return;
    }
    truncateAppend(g, entries);
  }

  private groupFor(key: number): GroupReplay {
    let g = this.groups.get(key);
    if (!g) {
      g = newGroup();
      if (this.allDamagedFromSeq !== null && !this.healed.has(key)) g.damagedAtSeq = this.allDamagedFromSeq;
      this.groups.set(key, g);
    }
    return g;
  }

  private recovered(g: GroupReplay): RecoveredGroup {
    const lastIndex = lastIndexOf(g);
    const maxIndexSeen = Math.max(g.maxIndexSeen, lastIndex);
    const base = { ...(g.snapshot ? { snapshot: g.snapshot } : {}), entries: g.entries, maxIndexSeen, maxTermSeen: g.maxTermSeen, awaitingSnapshot: g.awaitingSnapshot };
    if (g.damagedAtSeq === null) {
      return { hardState: g.hardState ?? { term: 0, vote: NONE, commit: 0 }, ...base, damaged: g.carriedMark, damageExtentUnknown: g.carriedMark && g.carriedExtentUnknown };
    }
    const damageExtentUnknown = g.carriedExtentUnknown || !g.boundAfterDamage;
    const term = Math.max(g.maxTermSeen, g.maxHsTermSeen);
    const hs = g.lastHs;
    const voteKnown = hs !== null && hs.term === term && (g.lastHsAfterDamage || hs.vote !== NONE);
    const snapIndex = g.snapshot?.index ?? 0;
    const commit = Math.max(snapIndex, Math.min(hs?.commit ?? 0, lastIndex));
    return { hardState: { term, vote: voteKnown ? hs.vote : this.selfId, commit }, ...base, damaged: true, damageExtentUnknown };
  }
}

function newGroup(): GroupReplay {
  return {
    hardState: null,
    snapshot: undefined,
    entries: [],
    maxIndexSeen: 0,
    maxTermSeen: 0,
    maxHsTermSeen: 0,
    damagedAtSeq: null,
    carriedMark: false,
    carriedExtentUnknown: false,
    boundAfterDamage: false,
    lastHs: null,
    lastHsAfterDamage: false,
    awaitingSnapshot: false,
  };
}

function fromCheckpoint(s: CheckpointGroupState): GroupReplay {
  const g = newGroup();
  g.hardState = s.hardState;
  g.lastHs = s.hardState;
  g.maxHsTermSeen = s.hardState.term;
  if (s.snapshot) {
    g.snapshot = s.snapshot;
    raiseSnapshotMaxima(g, s.snapshot);
  }
  if (s.damaged) {
    g.carriedMark = true;
    g.carriedExtentUnknown = s.damaged.extentUnknown === true;
    g.maxIndexSeen = Math.max(g.maxIndexSeen, s.damaged.maxIndexSeen);
    g.maxTermSeen = Math.max(g.maxTermSeen, s.damaged.maxTermSeen);
  }
  g.awaitingSnapshot = s.awaitingSnapshot === true;
  return g;
}

function markDamaged(g: GroupReplay, atSeq: number): void {
  g.damagedAtSeq ??= atSeq;
}

function raiseMaxima(g: GroupReplay, entries: readonly Entry[]): void {
  if (g.damagedAtSeq !== null) g.boundAfterDamage = true;
  const last = entries[entries.length - 1]; // terms never decrease within a record
  g.maxIndexSeen = Math.max(g.maxIndexSeen, last.index);
  g.maxTermSeen = Math.max(g.maxTermSeen, last.term);
}

function raiseSnapshotMaxima(g: GroupReplay, s: SnapshotMeta): void {
  if (g.damagedAtSeq !== null) g.boundAfterDamage = true;
  g.maxIndexSeen = Math.max(g.maxIndexSeen, s.index);
  g.maxTermSeen = Math.max(g.maxTermSeen, s.term);
}

function lastIndexOf(g: GroupReplay): number {
  return g.entries.length > 0 ? g.entries[g.entries.length - 1].index : (g.snapshot?.index ?? 0);
}

/** An append may overwrite a suffix, never leave a gap or touch the snapshot. */
function entriesFit(g: GroupReplay, entries: readonly Entry[]): boolean {
  const first = entries[0].index;
  return first <= lastIndexOf(g) + 1 && first > (g.snapshot?.index ?? 0);
}

/** "Drop stored entries with index >= entries[0].index, then append these." */
function truncateAppend(g: GroupReplay, entries: readonly Entry[]): void {
  const first = entries[0].index;
  if (g.entries.length > 0) {
    const keep = Math.max(0, first - g.entries[0].index);
    if (keep < g.entries.length) g.entries.length = keep;
  }
  for (const e of entries) g.entries.push(e);
}

/** The state now includes everything up to meta.index: keep the entries after it only if the log matches there. */
function applySnapshot(g: GroupReplay, meta: SnapshotMeta): void {
  const i = meta.index;
  let termAt: number | undefined;
  if (i === 0) termAt = 0;
  else if (g.snapshot && g.snapshot.index === i) termAt = g.snapshot.term;
  else if (g.entries.length > 0 && i >= g.entries[0].index && i <= g.entries[g.entries.length - 1].index) termAt = g.entries[i - g.entries[0].index].term;
  g.entries = termAt === meta.term ? g.entries.filter((e) => e.index > i) : [];
  g.snapshot = meta;
}

function asJunk(item: ReplayItem): BadItem {
  const lengthBytes = item.kind === 'bad' ? item.lengthBytes : 0;
  return { kind: 'bad', offsetBytes: item.offsetBytes, lengthBytes, header: null, segmentIndex: item.segmentIndex, segment: item.segment };
}

/**
 * The attribution of a region's bad spans, folded in as they come (a recycled
 * segment's stale tail can hold millions of them: nothing per span is kept).
 * `groups` stays meaningful while every span so far was one intact-header record
 * of a group with the next seq; once one is not, the region is 'all' for good.
 */
interface SpotAttribution {
  /** The seq the next span must carry to keep the region attributable. */
  expect: number;
  groups: Set<number> | 'all';
}

/** Attribution of a region whose first bad span should be the record at seq firstSeq. */
function newAttribution(firstSeq: number): SpotAttribution {
  return { expect: firstSeq, groups: new Set() };
}

function noteSpot(a: SpotAttribution, spot: BadItem): void {
  if (a.groups === 'all') return;
  const h: RecordHeader | null = spot.header;
  if (!h || h.seq !== a.expect || h.type === RecordType.CkptBegin || h.type === RecordType.GroupState || h.type === RecordType.CkptEnd) {
    a.groups = 'all';
    return;
  }
  if (h.type !== RecordType.SyncMark) a.groups.add(h.group);
  a.expect++;
}

/** The groups a region's bytes belonged to: see the header. */
function attribute(p: Region, firstSeqAfter: number): number[] | 'all' {
  const a = p.attribution;
  if (a.groups === 'all' || a.expect !== firstSeqAfter) return 'all';
  return [...a.groups].sort((x, y) => x - y);
}
