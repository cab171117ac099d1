// Block trailer: the 512 bytes stored after each 4096-byte data block. It carries
// the data's crc32c and the block's identity (volume, object, block index, chunk
// generation), so one write stores data and checksum together and a read can
// tell valid data from a stale block of an earlier allocation (different
// generation: reads as zeros) or corruption (bad checksum: an error, never data).
// A trailer is one sector, so it is never torn. Pure codec.
import { crc32cRange } from '../stdx/crc32c.js';
import { BLOCK_DATA_BYTES, BLOCK_TRAILER_BYTES } from './layout.js';
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
  writeTrailer(buf, blockOffset + BLOCK_DATA_BYTES, id, crc32cRange(buf, blockOffset, blockOffset + BLOCK_DATA_BYTES));
}

/** Write at trailers[t] the trailer of a block whose data has crc32c dataCrc (runs compute them in one call). */
export function writeTrailer(trailers: Buffer, t: number, id: BlockIdentity, dataCrc: number): void {
  // The whole sector: staging buffers are reused, and no stale bytes go to disk.
  trailers.fill(0, t, t + BLOCK_TRAILER_BYTES);
  trailers.writeUInt32LE(TRAILER_MAGIC, t);
  trailers.writeUInt32LE(dataCrc, t + 8);
  trailers.writeUInt32LE(id.volumeId, t + 12);
  writeU64(trailers, t + 16, id.objectIndex);
  trailers.writeUInt32LE(id.blockIndex, t + 24);
  writeU64(trailers, t + 32, id.generation);
  trailers.writeUInt32LE(crc32cRange(trailers, t, t + TRAILER_CRC_OFFSET), t + TRAILER_CRC_OFFSET);
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
  const check = checkTrailerOnly(buf, t, id);
  if (check !== BlockCheck.Valid) return check;
  return buf.readUInt32LE(t + 8) === crc32cRange(buf, blockOffset, t) ? BlockCheck.Valid : BlockCheck.Corrupt;
}

/** The check of a trailer at trailers[t] given its data's crc32c (runs compute them in one call; the data may lie elsewhere). */
export function checkTrailerCrc(trailers: Buffer, t: number, id: BlockIdentity, dataCrc: number): BlockCheck {
  const check = checkTrailerOnly(trailers, t, id);
  if (check !== BlockCheck.Valid) return check;
  return trailers.readUInt32LE(t + 8) === dataCrc ? BlockCheck.Valid : BlockCheck.Corrupt;
}

/** The trailer's own verdict: Unwritten, Corrupt, or Valid if the data's crc32c matches (not checked here). */
function checkTrailerOnly(trailers: Buffer, t: number, id: BlockIdentity): BlockCheck {
  const magic = trailers.readUInt32LE(t);
  if (magic !== TRAILER_MAGIC) {
    // An all-zero trailer is a block never written since the chunk was zeroed.
    for (let i = t; i < t + 64; i += 4) if (trailers.readUInt32LE(i) !== 0) return BlockCheck.Corrupt;
    return BlockCheck.Unwritten;
  }
  if (trailers.readUInt32LE(t + TRAILER_CRC_OFFSET) !== crc32cRange(trailers, t, t + TRAILER_CRC_OFFSET)) return BlockCheck.Corrupt;
  const generation = readU64(trailers, t + 32);
  if (generation !== id.generation) return BlockCheck.Unwritten;
  if (trailers.readUInt32LE(t + 12) !== id.volumeId || readU64(trailers, t + 16) !== id.objectIndex || trailers.readUInt32LE(t + 24) !== id.blockIndex) {
    return BlockCheck.Corrupt;
  }
  return BlockCheck.Valid;
}
