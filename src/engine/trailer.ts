// Block trailer: the 512 bytes stored after each 4096-byte data block. It carries
// the data's crc32c and the block's identity (volume, object, block index, chunk
// generation), so one write stores data and checksum together and a read can
// tell valid data from a stale block of an earlier allocation (different
// generation: reads as zeros) or corruption (bad checksum: an error, never data).
// A trailer is one sector, so it is never torn. Pure codec.
import { crc32cRange } from '../stdx/crc32c.js';
import { BLOCK_DATA_BYTES } from './layout.js';
import { readU64, writeU64 } from './superblock.js';

export const TRAILER_MAGIC = 0x4b4c4254; // "TBLK"
const TRAILER_CRC_OFFSET = 60;

export interface BlockIdentity {
  volumeId: number;
  objectIndex: number;
  blockIndex: number;
  generation: number;
}

/** Write the trailer of the block whose data starts at `blockOffset` in `buf` (trailer follows the data). */
export function sealBlock(buf: Buffer, blockOffset: number, id: BlockIdentity): void {
  const t = blockOffset + BLOCK_DATA_BYTES;
  buf.fill(0, t, t + 64);
  buf.writeUInt32LE(TRAILER_MAGIC, t);
  buf.writeUInt32LE(crc32cRange(buf, blockOffset, t), t + 8);
  buf.writeUInt32LE(id.volumeId, t + 12);
  writeU64(buf, t + 16, id.objectIndex);
  buf.writeUInt32LE(id.blockIndex, t + 24);
  writeU64(buf, t + 32, id.generation);
  buf.writeUInt32LE(crc32cRange(buf, t, t + TRAILER_CRC_OFFSET), t + TRAILER_CRC_OFFSET);
}

export const enum BlockCheck {
  /** Trailer and data match this identity and generation. */
  Valid = 0,
  /** Never written in this generation (empty trailer, or one from an earlier allocation): reads as zeros. */
  Unwritten = 1,
  /** Trailer or data fail their checksum, or the identity is wrong for this generation. */
  Corrupt = 2,
}

export function checkBlock(buf: Buffer, blockOffset: number, id: BlockIdentity): BlockCheck {
  const t = blockOffset + BLOCK_DATA_BYTES;
  const magic = buf.readUInt32LE(t);
  if (magic !== TRAILER_MAGIC) {
    // An all-zero trailer is a block never written since the chunk was zeroed.
    for (let i = t; i < t + 64; i += 4) if (buf.readUInt32LE(i) !== 0) return BlockCheck.Corrupt;
    return BlockCheck.Unwritten;
  }
  if (buf.readUInt32LE(t + TRAILER_CRC_OFFSET) !== crc32cRange(buf, t, t + TRAILER_CRC_OFFSET)) return BlockCheck.Corrupt;
  const generation = readU64(buf, t + 32);
  if (generation !== id.generation) return BlockCheck.Unwritten;
  if (buf.readUInt32LE(t + 12) !== id.volumeId || readU64(buf, t + 16) !== id.objectIndex || buf.readUInt32LE(t + 24) !== id.blockIndex) {
    return BlockCheck.Corrupt;
  }
  if (buf.readUInt32LE(t + 8) !== crc32cRange(buf, blockOffset, t)) return BlockCheck.Corrupt;
  return BlockCheck.Valid;
}
