// ENG1 superblock: identifies a Tessera device and its layout; kept in two
// checksummed copies at offsets 0 and 4 KiB, both rewritten (in order, each
// flushed) on every update, so losing either copy loses nothing. Pure codec.
//
// genReserved is the high-water mark of chunk allocation generations: the engine
// only hands out generations below it, and raises it (writing the superblock)
// before using more, so a generation is never reused across crashes.
import { crc32c } from '../stdx/crc32c.js';
import { TesseraError } from '../stdx/errors.js';
import { SUPERBLOCK_BYTES } from './layout.js';

export const SUPERBLOCK_MAGIC = 'TESSERA1';
export const FORMAT_VERSION = 1;

export interface Superblock {
  sequence: number;
  deviceUuid: string; // 32 hex chars
  deviceSizeBytes: number;
  objectSizeBytes: number;
  chunkCount: number;
  chunkTableOffset: number;
  chunkTableBytes: number;
  dataOffset: number;
  genReserved: number;
  /** Set when the data area was zero at format time (a fresh sparse file): never-used chunks need no zeroing. */
  dataZeroed: boolean;
}

const CRC_OFFSET = SUPERBLOCK_BYTES - 4;

export function encodeSuperblock(sb: Superblock, out: Buffer): void {
  out.fill(0, 0, SUPERBLOCK_BYTES);
  out.write(SUPERBLOCK_MAGIC, 0, 'latin1');
  out.writeUInt32LE(FORMAT_VERSION, 8);
  out.writeUInt32LE(sb.dataZeroed ? 1 : 0, 12);
  writeU64(out, 16, sb.sequence);
  Buffer.from(sb.deviceUuid, 'hex').copy(out, 24);
  writeU64(out, 40, sb.deviceSizeBytes);
  out.writeUInt32LE(sb.objectSizeBytes, 48);
  out.writeUInt32LE(sb.chunkCount, 52);
  writeU64(out, 56, sb.chunkTableOffset);
  writeU64(out, 64, sb.chunkTableBytes);
  writeU64(out, 72, sb.dataOffset);
  writeU64(out, 80, sb.genReserved);
  out.writeUInt32LE(crc32c(out.subarray(0, CRC_OFFSET)), CRC_OFFSET);
}

/** Decode one copy; returns an error string instead of throwing (callers compare copies). */
export function decodeSuperblock(buf: Buffer): Superblock | string {
  if (buf.length < SUPERBLOCK_BYTES) return 'short superblock';
  if (buf.toString('latin1', 0, 8) !== SUPERBLOCK_MAGIC) return 'bad magic';
  if (buf.readUInt32LE(CRC_OFFSET) !== crc32c(buf.subarray(0, CRC_OFFSET))) return 'bad checksum';
  const version = buf.readUInt32LE(8);
  if (version !== FORMAT_VERSION) return `unsupported format version ${version}`;
  return {
    dataZeroed: (buf.readUInt32LE(12) & 1) === 1,
    sequence: readU64(buf, 16),
    deviceUuid: buf.toString('hex', 24, 40),
    deviceSizeBytes: readU64(buf, 40),
    objectSizeBytes: buf.readUInt32LE(48),
    chunkCount: buf.readUInt32LE(52),
    chunkTableOffset: readU64(buf, 56),
    chunkTableBytes: readU64(buf, 64),
    dataOffset: readU64(buf, 72),
    genReserved: readU64(buf, 80),
  };
}

/** Pick the newest valid copy; throws ERR_FORMAT when none is valid. */
export function chooseSuperblock(copies: Buffer[]): { sb: Superblock; staleCopies: number[] } {
  const decoded = copies.map(decodeSuperblock);
  let best: Superblock | undefined;
  for (const d of decoded) if (typeof d !== 'string' && (!best || d.sequence > best.sequence)) best = d;
  if (!best) {
    throw new TesseraError('ERR_FORMAT', `no valid Tessera superblock (${decoded.map((d, i) => `copy ${i}: ${typeof d === 'string' ? d : 'ok'}`).join(', ')})`);
  }
  const staleCopies = decoded.flatMap((d, i) => (typeof d === 'string' || d.sequence !== best!.sequence ? [i] : []));
  return { sb: best, staleCopies };
}

export function writeU64(buf: Buffer, offset: number, v: number): void {
  buf.writeUInt32LE(v % 0x100000000, offset);
  buf.writeUInt32LE(Math.floor(v / 0x100000000), offset + 4);
}

export function readU64(buf: Buffer, offset: number): number {
  const hi = buf.readUInt32LE(offset + 4);
  if (hi >= 0x200000) throw new TesseraError('ERR_FORMAT', `64-bit field at ${offset} exceeds 2^53`);
  return hi * 0x100000000 + buf.readUInt32LE(offset);
}
