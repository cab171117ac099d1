// On-disk records of a pool (docs/raid.md): the member label (two copies at
// the start of each member device) and the container header (at the start of
// every chunk; every chunk of a container holds the whole container record,
// so any one surviving chunk tells what the container was). Pure codecs.
//
// Invariants: each record is one 4 KiB block ending in the crc32c of the rest;
// a decoder never trusts a count or a length before checking it against the
// record size; decode returns an error string instead of throwing, because
// callers compare copies and scan chunks that may hold garbage.
import { crc32c } from '../stdx/crc32c.js';
import { readU64, writeU64 } from '../engine/superblock.js';

export const RECORD_BYTES = 4096;
const CRC_OFFSET = RECORD_BYTES - 4;
export const LABEL_MAGIC = 'TSRPOOL1';
export const CONTAINER_MAGIC = 'TSRCONT1';
export const POOL_FORMAT_VERSION = 1;
/** Widest container: k + m chunks. Wider stripes buy nothing and cost rebuild reads. */
export const MAX_CONTAINER_WIDTH = 32;
const UUID_BYTES = 16;

export type Protection = 'mirror2' | 'mirror3' | 'raid5' | 'raid6';
const PROTECTIONS: readonly Protection[] = ['mirror2', 'mirror3', 'raid5', 'raid6'];

/** Parity chunks of each protection; mirrors have one data chunk. */
export function parityCountOf(p: Protection): number {
  return p === 'mirror2' || p === 'raid5' ? 1 : 2;
}

/** What every member's label repeats about the pool it belongs to. */
export interface PoolParams {
  protection: Protection;
  /** Data chunks of a full-width container (1 for mirrors). */
  dataCount: number;
  stripBytes: number;
  /** Size of the pool's address space (thin: containers are allocated when first written). */
  logicalSizeBytes: number;
  memberCount: number;
  /** Bytes of each member's stripe journal area (superblocks + ring), at JOURNAL_AREA_OFFSET. */
  journalBytes: number;
  /** Members were all zeros at format time (fresh sparse files): new chunks need no zeroing. */
  dataZeroed: boolean;
}

export interface MemberLabel {
  sequence: number;
  pool: PoolParams;
  poolUuid: string; // 32 hex chars
  memberUuid: string;
  memberIndex: number;
  sizeBytes: number;
  chunkDataBytes: number;
  chunkCount: number;
  /** Byte offset of chunk 0 (its header); chunk i is at firstChunkOffset + i * (RECORD_BYTES + chunkDataBytes). */
  firstChunkOffset: number;
  /** Rated bytes written over the device's life (wear = bytesWritten / enduranceBytes). */
  enduranceBytes: number;
  bytesWritten: number;
  /** Members taken out of service (failed or pulled), as the pool knew at this label's sequence. */
  failedMembers: number[];
}

/** The failed-member bitmap holds this many members. */
export const MAX_POOL_MEMBERS = 256;
const FAILED_BITMAP_OFFSET = 144;

export interface ContainerMember {
  /** UNPLACED_UUID for a position that has no chunk yet (a container allocated degraded). */
  memberUuid: string;
  chunkIndex: number;
}

export const UNPLACED_UUID = '0'.repeat(32);

export interface ContainerRecord {
  containerId: number;
  /** Raised when a chunk is replaced (rebuild): headers with an older generation are stale. */
  generation: number;
  /** First pool extent of this container's range (extents are chunkDataBytes each, dataCount of them). */
  firstExtent: number;
  /**
   * Bit i set: extent firstExtent + i belongs to this container. An extent of the
   * range already owned by another container at creation is left to it.
   */
  ownedMask: number;
  protection: Protection;
  dataCount: number;
  parityCount: number;
  stripBytes: number;
  /** The chunk at each position: dataCount + parityCount entries. */
  members: ContainerMember[];
}

function checkUuid(hex: string): boolean {
  return /^[0-9a-f]{32}$/.test(hex);
}

function seal(out: Buffer): void {
  out.writeUInt32LE(crc32c(out.subarray(0, CRC_OFFSET)), CRC_OFFSET);
}

function opened(buf: Buffer, magic: string): string | null {
  if (buf.length < RECORD_BYTES) return 'short record';
  if (buf.toString('latin1', 0, 8) !== magic) return 'bad magic';
  if (buf.readUInt32LE(CRC_OFFSET) !== crc32c(buf.subarray(0, CRC_OFFSET))) return 'bad checksum';
  const version = buf.readUInt32LE(8);
  if (version !== POOL_FORMAT_VERSION) return `unsupported pool format version ${version}`;
  return null;
}

export function encodeLabel(l: MemberLabel, out: Buffer): void {
  if (!checkUuid(l.poolUuid) || !checkUuid(l.memberUuid)) throw new RangeError('label uuids must be 32 hex digits');
  out.fill(0, 0, RECORD_BYTES);
  out.write(LABEL_MAGIC, 0, 'latin1');
  out.writeUInt32LE(POOL_FORMAT_VERSION, 8);
  writeU64(out, 16, l.sequence);
  Buffer.from(l.poolUuid, 'hex').copy(out, 24);
  Buffer.from(l.memberUuid, 'hex').copy(out, 40);
  out.writeUInt32LE(l.memberIndex, 56);
  writeU64(out, 64, l.sizeBytes);
  writeU64(out, 72, l.chunkDataBytes);
  out.writeUInt32LE(l.chunkCount, 80);
  writeU64(out, 88, l.firstChunkOffset);
  writeU64(out, 96, l.enduranceBytes);
  writeU64(out, 104, l.bytesWritten);
  out.writeUInt8(PROTECTIONS.indexOf(l.pool.protection), 112);
  out.writeUInt8(l.pool.dataCount, 113);
  out.writeUInt16LE(l.pool.memberCount, 114);
  out.writeUInt32LE(l.pool.stripBytes, 116);
  writeU64(out, 120, l.pool.logicalSizeBytes);
  writeU64(out, 128, l.pool.journalBytes);
  out.writeUInt8(l.pool.dataZeroed ? 1 : 0, 136);
  for (const f of l.failedMembers) {
    if (!(f >= 0 && f < MAX_POOL_MEMBERS)) throw new RangeError(`failed member ${f} outside the bitmap`);
    out[FAILED_BITMAP_OFFSET + (f >> 3)] |= 1 << (f & 7);
  }
  seal(out);
}

export function decodeLabel(buf: Buffer): MemberLabel | string {
  const bad = opened(buf, LABEL_MAGIC);
  if (bad) return bad;
  try {
    const protection = PROTECTIONS[buf.readUInt8(112)];
    if (!protection) return 'unknown protection';
    const pool: PoolParams = {
      protection,
      dataCount: buf.readUInt8(113),
      memberCount: buf.readUInt16LE(114),
      stripBytes: buf.readUInt32LE(116),
      logicalSizeBytes: readU64(buf, 120),
      journalBytes: readU64(buf, 128),
      dataZeroed: buf.readUInt8(136) === 1,
    };
    if (pool.dataCount < 1 || pool.dataCount + parityCountOf(protection) > MAX_CONTAINER_WIDTH) return `bad pool shape ${pool.dataCount}+${parityCountOf(protection)}`;
    if (pool.stripBytes === 0 || pool.stripBytes % 512 !== 0) return `bad strip size ${pool.stripBytes}`;
    const l: MemberLabel = {
      sequence: readU64(buf, 16),
      pool,
      poolUuid: buf.toString('hex', 24, 40),
      memberUuid: buf.toString('hex', 40, 56),
      memberIndex: buf.readUInt32LE(56),
      sizeBytes: readU64(buf, 64),
      chunkDataBytes: readU64(buf, 72),
      chunkCount: buf.readUInt32LE(80),
      firstChunkOffset: readU64(buf, 88),
      enduranceBytes: readU64(buf, 96),
      bytesWritten: readU64(buf, 104),
      failedMembers: [],
    };
    for (let i = 0; i < MAX_POOL_MEMBERS; i++) if (buf[FAILED_BITMAP_OFFSET + (i >> 3)] & (1 << (i & 7))) l.failedMembers.push(i);
    const end = l.firstChunkOffset + l.chunkCount * (RECORD_BYTES + l.chunkDataBytes);
    if (l.chunkDataBytes === 0 || l.chunkDataBytes % RECORD_BYTES !== 0 || end > l.sizeBytes) return 'chunk geometry does not fit the device';
    if (l.chunkDataBytes % pool.stripBytes !== 0) return 'strips do not divide the chunk';
    if (l.firstChunkOffset < 64 * 1024 + pool.journalBytes) return 'chunks overlap the journal area';
    if (l.memberIndex >= pool.memberCount || pool.memberCount > MAX_POOL_MEMBERS) return `member index ${l.memberIndex} outside a pool of ${pool.memberCount}`;
    return l;
  } catch (err) {
    return (err as Error).message;
  }
}

/** The newest valid label of a member's copies, or why none is valid. */
export function chooseLabel(copies: Buffer[]): MemberLabel | string {
  let best: MemberLabel | null = null;
  const why: string[] = [];
  for (const c of copies) {
    const d = decodeLabel(c);
    if (typeof d === 'string') why.push(d);
    else if (!best || d.sequence > best.sequence) best = d;
  }
  return best ?? `no valid member label (${why.join(', ')})`;
}

const MEMBERS_OFFSET = 64;
const MEMBER_ENTRY_BYTES = UUID_BYTES + 4;

export function encodeContainer(c: ContainerRecord, out: Buffer): void {
  const width = c.dataCount + c.parityCount;
  if (width !== c.members.length || width < 2 || width > MAX_CONTAINER_WIDTH) throw new RangeError(`container width ${width} with ${c.members.length} members`);
  if (c.parityCount !== parityCountOf(c.protection)) throw new RangeError(`${c.protection} has ${parityCountOf(c.protection)} parity chunks, not ${c.parityCount}`);
  out.fill(0, 0, RECORD_BYTES);
  out.write(CONTAINER_MAGIC, 0, 'latin1');
  out.writeUInt32LE(POOL_FORMAT_VERSION, 8);
  writeU64(out, 16, c.containerId);
  writeU64(out, 24, c.generation);
  writeU64(out, 32, c.firstExtent);
  out.writeUInt8(PROTECTIONS.indexOf(c.protection), 40);
  out.writeUInt8(c.dataCount, 41);
  out.writeUInt8(c.parityCount, 42);
  out.writeUInt32LE(c.stripBytes, 44);
  // 0: a widen's new container that owns no extent yet (open frees it).
  if (c.dataCount < 32 && c.ownedMask >>> c.dataCount !== 0) throw new RangeError(`owned mask ${c.ownedMask} outside ${c.dataCount} extents`);
  out.writeUInt32LE(c.ownedMask >>> 0, 48);
  c.members.forEach((m, i) => {
    if (!checkUuid(m.memberUuid)) throw new RangeError('member uuids must be 32 hex digits');
    const at = MEMBERS_OFFSET + i * MEMBER_ENTRY_BYTES;
    Buffer.from(m.memberUuid, 'hex').copy(out, at);
    out.writeUInt32LE(m.chunkIndex, at + UUID_BYTES);
  });
  seal(out);
}

export function decodeContainer(buf: Buffer): ContainerRecord | string {
  const bad = opened(buf, CONTAINER_MAGIC);
  if (bad) return bad;
  try {
    const protection = PROTECTIONS[buf.readUInt8(40)];
    const dataCount = buf.readUInt8(41);
    const parityCount = buf.readUInt8(42);
    const width = dataCount + parityCount;
    if (!protection) return 'unknown protection';
    if (parityCount !== parityCountOf(protection) || dataCount < 1 || width > MAX_CONTAINER_WIDTH) return `bad container shape ${dataCount}+${parityCount}`;
    if ((protection === 'mirror2' || protection === 'mirror3') && dataCount !== 1) return 'a mirror has one data chunk';
    const members: ContainerMember[] = [];
    for (let i = 0; i < width; i++) {
      const at = MEMBERS_OFFSET + i * MEMBER_ENTRY_BYTES;
      members.push({ memberUuid: buf.toString('hex', at, at + UUID_BYTES), chunkIndex: buf.readUInt32LE(at + UUID_BYTES) });
    }
    const stripBytes = buf.readUInt32LE(44);
    if (stripBytes === 0 || stripBytes % 512 !== 0) return `bad strip size ${stripBytes}`;
    const ownedMask = buf.readUInt32LE(48);
    if (dataCount < 32 && ownedMask >>> dataCount !== 0) return `owned mask ${ownedMask} outside ${dataCount} extents`;
    return { containerId: readU64(buf, 16), generation: readU64(buf, 24), firstExtent: readU64(buf, 32), ownedMask, protection, dataCount, parityCount, stripBytes, members };
  } catch (err) {
    return (err as Error).message;
  }
}
