// What the media commands (sbc.ts, provisioning.ts, capacity.ts) share: the volume,
// the LU's limits in logical blocks, the CAW range lock and the write-cache setting.
//
// Invariants:
// - Limits are whole logical blocks, fixed at construction; the capacity is read
//   from the volume on every command (volumes are resized live).
// - Offsets passed to the volume are lba * blockSizeBytes, exact while < 2^53 bytes
//   (volumes are <= 2^50 bytes and every range is checked against the capacity first).
import type { Volume } from '../../volume/types.js';
import type { ModePages } from './modes.js';
import type { RangeLock } from './range-lock.js';
import type { ScsiResult } from './types.js';
import { good, invalidFieldInCdb, lbaOutOfRange } from './sense.js';

export interface MediaLimits {
  blockSizeBytes: number;
  /** log2(physical block / logical block), READ CAPACITY (16). */
  physicalExponent: number;
  maxTransferBlocks: number;
  maxWriteSameBlocks: number;
  maxUnmapBlocks: number;
  maxUnmapDescriptors: number;
  maxCompareAndWriteBlocks: number;
  /** VERIFY with BYTCHK = 0 reads the range; longer ones are refused so a command stays bounded. */
  maxVerifyBlocks: number;
}

export interface MediaContext {
  readonly volume: Volume;
  readonly limits: MediaLimits;
  readonly lock: RangeLock;
  readonly modes: ModePages;
}

export function capacityBlocks(ctx: MediaContext): number {
  return Math.floor(ctx.volume.sizeBytes() / ctx.limits.blockSizeBytes);
}

/**
 * The range check every data-transfer command starts with: more than maxBlocks →
 * INVALID FIELD IN CDB at lengthOffset; past the capacity → LBA OUT OF RANGE; zero
 * blocks → GOOD (nothing to move). null: go on. Allocates nothing on the null path.
 */
export function checkRange(ctx: MediaContext, lba: number, blocks: number, maxBlocks: number, lengthOffset: number): ScsiResult | null {
  if (blocks > maxBlocks) return invalidFieldInCdb(lengthOffset);
  if (lba + blocks > capacityBlocks(ctx)) return lbaOutOfRange();
  return blocks === 0 ? good() : null;
}

/** Bytes moved per volume call by commands that loop (WRITE SAME patterns, VERIFY). */
export const CHUNK_BYTES = 1024 * 1024;

/** First index where a and b differ over [0, length), or -1. */
export function firstDifference(a: Buffer, aOffset: number, b: Buffer, bOffset: number, length: number): number {
  if (a.compare(b, bOffset, bOffset + length, aOffset, aOffset + length) === 0) return -1;
  for (let i = 0; i < length; i++) if (a[aOffset + i] !== b[bOffset + i]) return i;
  return -1;
}

export function isAllZero(b: Buffer): boolean {
  // Compare 8 bytes at a time where aligned; the tail byte by byte.
  let i = 0;
  const words = b.length >>> 3;
  if (words > 0 && b.byteOffset % 8 === 0) {
    const v = new BigUint64Array(b.buffer, b.byteOffset, words);
    for (let w = 0; w < words; w++) if (v[w] !== 0n) return false;
    i = words << 3;
  }
  for (; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}
