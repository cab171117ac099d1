// On-disk record format of the OSD's write-ahead log (src/osd/wal.ts): a pure
// codec (encode is the byte-exact inverse of decode) and a scanner that walks a
// segment and classifies its bytes into valid records and bad spans. No policy
// here: what a bad span means (torn tail or corruption) is decided by
// wal-replay.ts, which sees the whole log.
//
// Record = 40-byte header + body + zero padding to a multiple of 8 bytes.
// Segments start at offset 0 and records are back to back, so every record
// starts at a multiple of 8 (the scanner looks for the magic only there).
// All integers are little-endian.
//
//   off size field
//    0   4   magic      0x4c415754 (the bytes "TWAL")
//    4   1   version    1
//    5   1   type       RecordType
//    6   2   flags      bit 0 MORE: an ENTRIES piece continued by the next record
//    8   4   bodyBytes  <= RECORD_BODY_BYTES_MAX (checked, with the header CRC,
//                       before anything is allocated or read for the body)
//   12   4   group      the caller's raft group key (u32), 0 for log-wide records;
//                       CKPT_BEGIN: the tag of the segment it was written to
//                       (checkpointSegmentTag), or 0 in logs written before the tag
//   16   8   seq        global sequence number: +1 per record, never reused for
//                       a record that was ever acknowledged
//   24   8   syncedSeq  every record with seq <= syncedSeq had been made durable
//                       (fdatasync completed) before this record was appended
//   32   4   bodyCrc    crc32c of the body (without padding)
//   36   4   headerCrc  crc32c of bytes 0..35 (so it covers bodyCrc too: the two
//                       CRCs together cover header and body; a split lets a bad
//                       body be attributed to a trusted header: group and seq)
//
// Bodies (u64 fields are validated as safe integers on decode):
//   ENTRIES      u32 count, u32 0, then per entry: u64 term, u64 index,
//                u8 kind (0 normal, 1 conf), u8[3] 0, u32 dataBytes, data.
//                Indexes are consecutive, terms non-decreasing, count >= 1.
//   HARD_STATE   u64 term, u64 vote, u64 commit
//   SNAPSHOT     conf snapshot meta: u64 index, u64 term, u32 voters,
//                u32 learners, u64 node ids (voters then learners)
//   DROP_GROUP   empty
//   AWAIT_SNAP   empty: the group's state-machine data is being replaced by a
//                snapshot (written durably before the old data is dropped); the
//                group awaits a snapshot until a later SNAPSHOT record
//   SYNC_MARK    empty; written (unsynced) when the log goes idle after a sync, so
//                that the last synced batch is followed by a record proving it
//                was synced (see wal-replay.ts)
//   CKPT_BEGIN   u32 groupCount, u32 recordCount (records between BEGIN and END)
//   GROUP_STATE  u8 flags (bit 0 snapshot present, bit 1 damaged, bit 2 damage
//                extent unknown: only with bit 1, bit 3 awaiting a snapshot), u8[7] 0,
//                HARD_STATE body, then the SNAPSHOT body if present, then
//                u64 maxIndexSeen, u64 maxTermSeen if damaged
//   CKPT_END     u32 groupCount, u32 recordCount (must equal BEGIN's)
//
// A checkpoint is the span BEGIN, (GROUP_STATE, ENTRIES*)*, END with
// consecutive sequence numbers, written at the start of a fresh segment. BEGIN
// names that segment, so that a copy of the checkpoint found at the start of
// another segment (stale bytes of a recycled block in a segment's unsynced start)
// is recognised as not belonging there.
import { crc32c, crc32cRange } from '../stdx/crc32c.js';
import { assert, fail } from '../stdx/assert.js';
import { Slab } from '../stdx/slab.js';
import type { Entry, HardState, SnapshotMeta } from '../raft/types.js';
import type { Segment } from '../io/segments.js';

export const WAL_MAGIC = 0x4c415754;
const MAGIC_BYTES = Buffer.from([0x54, 0x57, 0x41, 0x4c]);
export const WAL_VERSION = 1;
export const RECORD_HEADER_BYTES = 40;
export const RECORD_ALIGN_BYTES = 8;
/** Largest entry payload: an object-sized write (4 MiB) plus room for its command header. */
export const ENTRY_DATA_BYTES_MAX = 4 * 1024 * 1024 + 64 * 1024;
export const ENTRY_HEADER_BYTES = 24;
/** Largest record body accepted on decode; a single maximal entry fits with room to spare. */
export const RECORD_BODY_BYTES_MAX = 8 * 1024 * 1024;
/** ENTRIES records are split into pieces of about this size (a larger single entry gets its own record). */
export const RECORD_BODY_TARGET_BYTES = 1024 * 1024;
/** Voters plus learners in one ConfState. */
export const CONF_NODES_MAX = 1024;
/** Entries at or above this size are referenced, not copied, when encoding (zero-copy writev). */
const ENTRY_DATA_COPY_BYTES_MAX = 4096;
/** The scanner reads a segment through a window this large (larger for a larger record). */
export const SCAN_WINDOW_BYTES = 16 * 1024 * 1024;
const SAFE_HI_MAX = 0x1fffff; // 2^53 - 1 = hi * 2^32 + lo with hi <= 0x1fffff

export const RecordType = {
  Entries: 1,
  HardState: 2,
  Snapshot: 3,
  DropGroup: 4,
  SyncMark: 5,
  AwaitSnapshot: 6,
  CkptBegin: 16,
  GroupState: 17,
  CkptEnd: 18,
} as const;
export type RecordType = (typeof RecordType)[keyof typeof RecordType];
const KNOWN_TYPES = new Set<number>(Object.values(RecordType));

export const FLAG_MORE = 1;

export interface RecordHeader {
  readonly type: RecordType;
  readonly flags: number;
  readonly bodyBytes: number;
  readonly group: number;
  readonly seq: number;
  readonly syncedSeq: number;
  readonly bodyCrc: number;
}

/** A decoded body. */
export type WalBody =
  | { readonly type: 'entries'; readonly entries: Entry[] }
  | { readonly type: 'hardState'; readonly hardState: HardState }
  | { readonly type: 'snapshot'; readonly snapshot: SnapshotMeta }
  | { readonly type: 'dropGroup' }
  | { readonly type: 'awaitSnapshot' }
  | { readonly type: 'syncMark' }
  | { readonly type: 'checkpointBegin'; readonly groupCount: number; readonly recordCount: number }
  | { readonly type: 'groupState'; readonly state: CheckpointGroupState }
  | { readonly type: 'checkpointEnd'; readonly groupCount: number; readonly recordCount: number };

export interface GroupDamageMark {
  readonly maxIndexSeen: number;
  readonly maxTermSeen: number;
  /** No readable record bounded the damage: raft RaftConfig.repairExtentUnknown. */
  readonly extentUnknown?: boolean;
}

export interface CheckpointGroupState {
  readonly hardState: HardState;
  readonly snapshot?: SnapshotMeta;
  readonly damaged?: GroupDamageMark;
  /** Its data was being replaced by a snapshot (AWAIT_SNAP): it awaits one. */
  readonly awaitingSnapshot?: boolean;
}

/**
 * A record ready to be written: the header (syncedSeq and headerCrc are filled in
 * by sealRecord() when its batch is appended) and the body parts, padding included.
 */
export interface PendingRecord {
  readonly seq: number;
  readonly header: Buffer;
  readonly parts: Uint8Array[];
  readonly totalBytes: number;
}

const ZERO_PAD = Buffer.alloc(RECORD_ALIGN_BYTES);

export function recordBytes(bodyBytes: number): number {
  return RECORD_HEADER_BYTES + alignUp(bodyBytes);
}

function alignUp(n: number): number {
  return Math.ceil(n / RECORD_ALIGN_BYTES) * RECORD_ALIGN_BYTES;
}

// ---------------------------------------------------------------- encoding

/**
 * Record headers and small ENTRIES scratch buffers are regions of shared slabs: one
 * Buffer.alloc each gave every record two ArrayBuffers (malloc, free, and V8's
 * tracking and sweeping of each). ArrayBuffer churn as a whole was ~5 % of an OSD's
 * CPU at 4 KiB QD32 (session 13 profile); records were part of it, entry data the
 * rest. A region lives as long as its record's buffers are referenced, at most
 * until the record is written.
 */
const recordSlab = new Slab(64 * 1024, 4 * 1024);

/** A zero-filled buffer of `bytes`: a slab region when small. */
function zeroed(bytes: number): Buffer {
  return bytes <= recordSlab.pieceBytesMax ? recordSlab.take(bytes).fill(0) : Buffer.alloc(bytes);
}

function writeU64(buf: Buffer, at: number, v: number): void {
  if (!(Number.isSafeInteger(v) && v >= 0)) fail(`u64 field out of range: ${v}`);
  buf.writeUInt32LE(v % 0x100000000, at);
  buf.writeUInt32LE(Math.floor(v / 0x100000000), at + 4);
}

/** Builds a record from body parts (already complete); syncedSeq is sealed later. */
export function makeRecord(type: RecordType, flags: number, group: number, seq: number, body: Uint8Array[]): PendingRecord {
  if (!(Number.isInteger(group) && group >= 0 && group <= 0xffffffff)) fail(`group key ${group} is not a u32`);
  let bodyBytes = 0;
  let crc = 0;
  for (const p of body) {
    bodyBytes += p.length;
    crc = crc32c(p, crc);
  }
  if (!(bodyBytes <= RECORD_BODY_BYTES_MAX)) fail(`record body of ${bodyBytes} bytes exceeds ${RECORD_BODY_BYTES_MAX}`);
  const header = zeroed(RECORD_HEADER_BYTES);
  header.writeUInt32LE(WAL_MAGIC, 0);
  header.writeUInt8(WAL_VERSION, 4);
  header.writeUInt8(type, 5);
  header.writeUInt16LE(flags, 6);
  header.writeUInt32LE(bodyBytes, 8);
  header.writeUInt32LE(group, 12);
  writeU64(header, 16, seq);
  header.writeUInt32LE(crc, 32);
  const pad = alignUp(bodyBytes) - bodyBytes;
  const parts = pad > 0 ? [...body, ZERO_PAD.subarray(0, pad)] : body;
  return { seq, header, parts, totalBytes: RECORD_HEADER_BYTES + bodyBytes + pad };
}

/** Segment files of the log: wal-<number, 16 hex digits>.seg, numbered from 1 and never reused by a running log. */
export const WAL_SEGMENT_NAME = /^wal-([0-9a-f]{16})\.seg$/;

/** The number in a segment's name (the name must match WAL_SEGMENT_NAME). */
export function walSegmentNumber(name: string): number {
  const m = WAL_SEGMENT_NAME.exec(name);
  if (m === null) fail(`${name} is not a WAL segment name`);
  return parseInt(m[1], 16);
}

/**
 * The u32 a CKPT_BEGIN carries in its group field for the segment numbered
 * segmentNumber (>= 1): never 0, which marks a checkpoint written before tags.
 */
export function checkpointSegmentTag(segmentNumber: number): number {
  if (!(Number.isSafeInteger(segmentNumber) && segmentNumber >= 1)) fail(`segment number ${segmentNumber}`);
  return ((segmentNumber - 1) % 0xffffffff) + 1;
}

/** Writes the segment's tag into an unsealed CKPT_BEGIN (the segment is chosen when the checkpoint is written). */
export function stampCheckpointSegment(rec: PendingRecord, segmentNumber: number): void {
  if (!(rec.header.readUInt8(5) === RecordType.CkptBegin)) fail('only a CKPT_BEGIN names its segment');
  rec.header.writeUInt32LE(checkpointSegmentTag(segmentNumber), 12);
}

/** True when a CKPT_BEGIN with this group field may start the segment numbered segmentNumber. */
export function checkpointBelongsTo(group: number, segmentNumber: number): boolean {
  return group === 0 || group === checkpointSegmentTag(segmentNumber);
}

/** Fills in syncedSeq and the header CRC; returns the buffers to append. */
export function sealRecord(rec: PendingRecord, syncedSeq: number, out: Uint8Array[]): void {
  if (!(syncedSeq < rec.seq)) fail(`syncedSeq ${syncedSeq} must be below the record's seq ${rec.seq}`);
  writeU64(rec.header, 24, syncedSeq);
  rec.header.writeUInt32LE(crc32cRange(rec.header, 0, 36), 36);
  out.push(rec.header);
  for (const p of rec.parts) out.push(p);
}

/** Bytes one entry adds to an ENTRIES body. */
export function entryEncodedBytes(e: Entry): number {
  return ENTRY_HEADER_BYTES + e.data.length;
}

/** ENTRIES body for entries[from, to): small payloads are copied into the header buffer, large ones referenced. */
export function entriesBody(entries: readonly Entry[], from: number, to: number): Uint8Array[] {
  const parts: Uint8Array[] = [];
  let scratchBytes = 8;
  for (let i = from; i < to; i++) {
    scratchBytes += ENTRY_HEADER_BYTES + (entries[i].data.length < ENTRY_DATA_COPY_BYTES_MAX ? entries[i].data.length : 0);
  }
  const scratch = zeroed(scratchBytes);
  scratch.writeUInt32LE(to - from, 0);
  let at = 8;
  let partStart = 0;
  for (let i = from; i < to; i++) {
    const e = entries[i];
    writeU64(scratch, at, e.term);
    writeU64(scratch, at + 8, e.index);
    scratch.writeUInt8(e.type === 'conf' ? 1 : 0, at + 16);
    scratch.writeUInt32LE(e.data.length, at + 20);
    at += ENTRY_HEADER_BYTES;
    if (e.data.length < ENTRY_DATA_COPY_BYTES_MAX) {
      scratch.set(e.data, at);
      at += e.data.length;
    } else {
      parts.push(scratch.subarray(partStart, at), e.data);
      partStart = at;
    }
  }
  if (at > partStart) parts.push(scratch.subarray(partStart, at));
  return parts;
}

export function hardStateBody(hs: HardState): Buffer {
  const b = Buffer.alloc(24);
  writeU64(b, 0, hs.term);
  writeU64(b, 8, hs.vote);
  writeU64(b, 16, hs.commit);
  return b;
}

export function snapshotBody(meta: SnapshotMeta): Buffer {
  const nodes = [...meta.conf.voters, ...meta.conf.learners];
  if (!(nodes.length <= CONF_NODES_MAX)) fail(`conf of ${nodes.length} nodes exceeds ${CONF_NODES_MAX}`);
  const b = Buffer.alloc(24 + 8 * nodes.length);
  writeU64(b, 0, meta.index);
  writeU64(b, 8, meta.term);
  b.writeUInt32LE(meta.conf.voters.length, 16);
  b.writeUInt32LE(meta.conf.learners.length, 20);
  nodes.forEach((n, i) => writeU64(b, 24 + 8 * i, n));
  return b;
}

export function countsBody(groupCount: number, recordCount: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(groupCount, 0);
  b.writeUInt32LE(recordCount, 4);
  return b;
}

export function groupStateBody(s: CheckpointGroupState): Buffer[] {
  const head = Buffer.alloc(8);
  head.writeUInt8((s.snapshot ? 1 : 0) | (s.damaged ? 2 : 0) | (s.damaged?.extentUnknown ? 4 : 0) | (s.awaitingSnapshot ? 8 : 0), 0);
  const parts = [head, hardStateBody(s.hardState)];
  if (s.snapshot) parts.push(snapshotBody(s.snapshot));
  if (s.damaged) {
    const d = Buffer.alloc(16);
    writeU64(d, 0, s.damaged.maxIndexSeen);
    writeU64(d, 8, s.damaged.maxTermSeen);
    parts.push(d);
  }
  return parts;
}

// ---------------------------------------------------------------- decoding

/** A u64 as a number, or -1 if it is not a safe integer. */
function readU64(buf: Buffer, at: number): number {
  const lo = buf.readUInt32LE(at);
  const hi = buf.readUInt32LE(at + 4);
  if (hi > SAFE_HI_MAX) return -1;
  return hi * 0x100000000 + lo;
}

/**
 * Parses and checks the header at buf[at]: magic, version, header CRC, known
 * type, body length within the limit, safe sequence numbers. Null if any fails.
 */
export function parseHeader(buf: Buffer, at: number): RecordHeader | null {
  if (at + RECORD_HEADER_BYTES > buf.length) return null;
  if (buf.readUInt32LE(at) !== WAL_MAGIC || buf[at + 4] !== WAL_VERSION) return null;
  if (crc32cRange(buf, at, at + 36) !== buf.readUInt32LE(at + 36)) return null;
  const type = buf[at + 5];
  const bodyBytes = buf.readUInt32LE(at + 8);
  const seq = readU64(buf, at + 16);
  const syncedSeq = readU64(buf, at + 24);
  if (!KNOWN_TYPES.has(type) || bodyBytes > RECORD_BODY_BYTES_MAX || seq < 1 || syncedSeq < 0 || syncedSeq >= seq) return null;
  return {
    type: type as RecordType,
    flags: buf.readUInt16LE(at + 6),
    bodyBytes,
    group: buf.readUInt32LE(at + 12),
    seq,
    syncedSeq,
    bodyCrc: buf.readUInt32LE(at + 32),
  };
}

/** Decodes a body whose CRC matched; null if it breaks the format (never reads past body.length). */
export function decodeBody(h: RecordHeader, body: Buffer): WalBody | null {
  try {
    switch (h.type) {
      case RecordType.Entries:
        return decodeEntries(body);
      case RecordType.HardState: {
        const hardState = decodeHardState(body, 0);
        return body.length === 24 && hardState ? { type: 'hardState', hardState } : null;
      }
      case RecordType.Snapshot: {
        const r = decodeSnapshot(body, 0);
        return r && r.end === body.length ? { type: 'snapshot', snapshot: r.meta } : null;
      }
      case RecordType.DropGroup:
        return body.length === 0 ? { type: 'dropGroup' } : null;
      case RecordType.AwaitSnapshot:
        return body.length === 0 ? { type: 'awaitSnapshot' } : null;
      case RecordType.SyncMark:
        return body.length === 0 ? { type: 'syncMark' } : null;
      case RecordType.CkptBegin:
      case RecordType.CkptEnd: {
        if (body.length !== 8) return null;
        const groupCount = body.readUInt32LE(0);
        const recordCount = body.readUInt32LE(4);
        return h.type === RecordType.CkptBegin ? { type: 'checkpointBegin', groupCount, recordCount } : { type: 'checkpointEnd', groupCount, recordCount };
      }
      case RecordType.GroupState:
        return decodeGroupState(body);
    }
  } catch {
    return null; // a read past the end of the body (RangeError): malformed
  }
  return null;
}

function decodeEntries(body: Buffer): WalBody | null {
  if (body.length < 8) return null;
  const count = body.readUInt32LE(0);
  if (count === 0 || count > (body.length - 8) / ENTRY_HEADER_BYTES) return null; // bound before allocating
  const entries: Entry[] = [];
  let at = 8;
  for (let i = 0; i < count; i++) {
    if (at + ENTRY_HEADER_BYTES > body.length) return null;
    const term = readU64(body, at);
    const index = readU64(body, at + 8);
    const kind = body[at + 16];
    const dataBytes = body.readUInt32LE(at + 20);
    at += ENTRY_HEADER_BYTES;
    if (term < 0 || index < 1 || kind > 1 || dataBytes > ENTRY_DATA_BYTES_MAX || at + dataBytes > body.length) return null;
    if (i > 0 && (index !== entries[i - 1].index + 1 || term < entries[i - 1].term)) return null;
    const data = Buffer.from(body.subarray(at, at + dataBytes)); // copy: the scan window is not kept
    at += dataBytes;
    entries.push(kind === 1 ? { term, index, data, type: 'conf' } : { term, index, data });
  }
  return at === body.length ? { type: 'entries', entries } : null;
}

function decodeHardState(b: Buffer, at: number): HardState | null {
  const term = readU64(b, at);
  const vote = readU64(b, at + 8);
  const commit = readU64(b, at + 16);
  return term < 0 || vote < 0 || commit < 0 ? null : { term, vote, commit };
}

function decodeSnapshot(b: Buffer, at: number): { meta: SnapshotMeta; end: number } | null {
  const index = readU64(b, at);
  const term = readU64(b, at + 8);
  const voterCount = b.readUInt32LE(at + 16);
  const learnerCount = b.readUInt32LE(at + 20);
  if (index < 0 || term < 0 || voterCount + learnerCount > CONF_NODES_MAX) return null;
  const end = at + 24 + 8 * (voterCount + learnerCount);
  if (end > b.length) return null;
  const ids: number[] = [];
  for (let i = 0; i < voterCount + learnerCount; i++) {
    const id = readU64(b, at + 24 + 8 * i);
    if (id < 0) return null;
    ids.push(id);
  }
  return { meta: { index, term, conf: { voters: ids.slice(0, voterCount), learners: ids.slice(voterCount) } }, end };
}

function decodeGroupState(body: Buffer): WalBody | null {
  if (body.length < 32) return null;
  const flags = body[0];
  if (flags > 15 || (flags & 6) === 4) return null; // bit 2 (extent unknown) only with bit 1 (damaged)
  const hardState = decodeHardState(body, 8);
  if (!hardState) return null;
  let at = 32;
  let snapshot: SnapshotMeta | undefined;
  if (flags & 1) {
    const r = decodeSnapshot(body, at);
    if (!r) return null;
    snapshot = r.meta;
    at = r.end;
  }
  let damaged: GroupDamageMark | undefined;
  if (flags & 2) {
    if (at + 16 > body.length) return null;
    const maxIndexSeen = readU64(body, at);
    const maxTermSeen = readU64(body, at + 8);
    if (maxIndexSeen < 0 || maxTermSeen < 0) return null;
    damaged = flags & 4 ? { maxIndexSeen, maxTermSeen, extentUnknown: true } : { maxIndexSeen, maxTermSeen };
    at += 16;
  }
  if (at !== body.length) return null;
  const state: CheckpointGroupState = { hardState, ...(snapshot ? { snapshot } : {}), ...(damaged ? { damaged } : {}), ...(flags & 8 ? { awaitingSnapshot: true } : {}) };
  return { type: 'groupState', state };
}

// ---------------------------------------------------------------- scanning

export type ScanItem =
  /** A record whose header and body CRCs match and whose body decodes. */
  | { readonly kind: 'record'; readonly offsetBytes: number; readonly header: RecordHeader; readonly body: WalBody }
  /**
   * Bytes that are not a valid record. `header` is set when they are exactly one
   * record whose header is intact but whose body fails its CRC or does not decode
   * (or is cut short by the end of the segment); null for unrecognisable bytes.
   */
  | { readonly kind: 'bad'; readonly offsetBytes: number; readonly lengthBytes: number; readonly header: RecordHeader | null };

/**
 * Walks a segment from offset 0 to its end, calling `visit` for each item in
 * order (see ScanItem) until it returns false. Reads through a bounded window.
 * A callback rather than an async generator: recovery visits millions of records
 * and should not pay several promises for each.
 */
export async function scanSegment(seg: Segment, visit: (item: ScanItem) => boolean | void, windowBytes = SCAN_WINDOW_BYTES): Promise<void> {
  assert(windowBytes >= RECORD_HEADER_BYTES, 'scan window smaller than a record header');
  const sizeBytes = seg.sizeBytes;
  let winStart = 0;
  let win: Buffer = Buffer.alloc(0);
  const resident = (at: number, needBytes: number): boolean => at >= winStart && at + needBytes <= winStart + win.length;
  /** Makes [at, at + needBytes) resident (needBytes <= sizeBytes - at). */
  const load = async (at: number, needBytes: number): Promise<void> => {
    winStart = at;
    win = await seg.read(at, Math.min(Math.max(windowBytes, needBytes), sizeBytes - at));
  };
  /** First 8-aligned offset >= from holding a header that parses; sizeBytes if none. */
  const nextHeader = async (from: number): Promise<number> => {
    let p = alignUp(from);
    while (p + RECORD_HEADER_BYTES <= sizeBytes) {
      const need = Math.min(windowBytes, sizeBytes - p);
      if (!resident(p, need)) await load(p, need);
      const winEnd = winStart + win.length;
      let idx = win.indexOf(MAGIC_BYTES, p - winStart);
      while (idx >= 0 && winStart + idx + RECORD_HEADER_BYTES <= winEnd) {
        if ((winStart + idx) % RECORD_ALIGN_BYTES === 0 && parseHeader(win, idx)) return winStart + idx;
        idx = win.indexOf(MAGIC_BYTES, idx + 1);
      }
      if (winEnd >= sizeBytes) return sizeBytes;
      // Next window: from the first aligned offset whose header did not fit in this one.
      p = Math.max(p + RECORD_ALIGN_BYTES, alignUp(winEnd - RECORD_HEADER_BYTES + 1));
    }
    return sizeBytes;
  };

  let pos = 0;
  while (pos < sizeBytes) {
    if (sizeBytes - pos < RECORD_HEADER_BYTES) {
      visit({ kind: 'bad', offsetBytes: pos, lengthBytes: sizeBytes - pos, header: null });
      return;
    }
    if (!resident(pos, RECORD_HEADER_BYTES)) await load(pos, RECORD_HEADER_BYTES);
    const h = parseHeader(win, pos - winStart);
    if (h) {
      const total = recordBytes(h.bodyBytes);
      if (pos + total > sizeBytes) {
        // An intact header whose body runs past the end: the segment was cut inside this record.
        visit({ kind: 'bad', offsetBytes: pos, lengthBytes: sizeBytes - pos, header: h });
        return;
      }
      if (!resident(pos, total)) await load(pos, total);
      const bodyAt = pos - winStart + RECORD_HEADER_BYTES;
      const body = win.subarray(bodyAt, bodyAt + h.bodyBytes);
      const decoded = crc32c(body) === h.bodyCrc ? decodeBody(h, body) : null;
      const more = decoded ? visit({ kind: 'record', offsetBytes: pos, header: h, body: decoded }) : visit({ kind: 'bad', offsetBytes: pos, lengthBytes: total, header: h });
      if (more === false) return;
      pos += total;
      continue;
    }
    const next = await nextHeader(pos + RECORD_ALIGN_BYTES);
    if (visit({ kind: 'bad', offsetBytes: pos, lengthBytes: next - pos, header: null }) === false) return;
    pos = next;
  }
}
