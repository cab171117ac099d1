// On-disk layout of a Tessera device (docs/on-disk-format.md). Pure arithmetic.
//
//   [0, 4K)            superblock copy 0
//   [4K, 8K)           superblock copy 1
//   [8K, +2*VT)        volume table copies 0 and 1 (VT = VOLTABLE_SLOT_BYTES each)
//   chunkTableOffset   chunk table copy 0, then copy 1 (64-byte entries, 8 per sector)
//   dataOffset         chunks: chunkCount x chunkStrideBytes, 1 MiB aligned
//
// A chunk holds one object: blocksPerObject blocks, each stored as 4096 data
// bytes followed by a 512-byte trailer (checksum + identity), so a block and its
// checksum are written by one IO and an overwrite needs no metadata write.
import { assert, fail } from '../stdx/assert.js';
import { TesseraError } from '../stdx/errors.js';

export const SUPERBLOCK_BYTES = 4096;
export const SUPERBLOCK_COPIES = 2;
export const VOLTABLE_OFFSET = SUPERBLOCK_BYTES * SUPERBLOCK_COPIES;
export const VOLTABLE_SLOT_BYTES = 256 * 1024;
export const VOLTABLE_COPIES = 2;
export const CHUNK_ENTRY_BYTES = 64;
export const CHUNK_TABLE_COPIES = 2;
export const BLOCK_DATA_BYTES = 4096;
export const BLOCK_TRAILER_BYTES = 512;
export const BLOCK_STRIDE_BYTES = BLOCK_DATA_BYTES + BLOCK_TRAILER_BYTES;
export const DATA_ALIGN_BYTES = 1024 * 1024;
export const DEFAULT_OBJECT_BYTES = 4 * 1024 * 1024;
export const MIN_OBJECT_BYTES = 16 * 1024;
export const MAX_OBJECT_BYTES = 64 * 1024 * 1024;

export interface Layout {
  deviceSizeBytes: number;
  objectSizeBytes: number;
  blocksPerObject: number;
  chunkStrideBytes: number;
  chunkCount: number;
  chunkTableOffset: number;
  chunkTableBytes: number; // one copy, sector aligned
  dataOffset: number;
}

export function computeLayout(deviceSizeBytes: number, objectSizeBytes: number): Layout {
  if (!(objectSizeBytes >= MIN_OBJECT_BYTES && objectSizeBytes <= MAX_OBJECT_BYTES && isPow2(objectSizeBytes))) {
    throw new TesseraError('ERR_INVALID', `object size ${objectSizeBytes} must be a power of two between ${MIN_OBJECT_BYTES} and ${MAX_OBJECT_BYTES}`);
  }
  const blocksPerObject = objectSizeBytes / BLOCK_DATA_BYTES;
  const chunkStrideBytes = blocksPerObject * BLOCK_STRIDE_BYTES;
  const chunkTableOffset = VOLTABLE_OFFSET + VOLTABLE_SLOT_BYTES * VOLTABLE_COPIES;
  // Largest chunk count whose table and chunks fit.
  let chunkCount = Math.floor((deviceSizeBytes - chunkTableOffset) / chunkStrideBytes);
  for (; chunkCount > 0; chunkCount--) {
    const tableBytes = tableBytesFor(chunkCount);
    const dataOffset = alignUp(chunkTableOffset + tableBytes * CHUNK_TABLE_COPIES, DATA_ALIGN_BYTES);
    if (dataOffset + chunkCount * chunkStrideBytes <= deviceSizeBytes) {
      return { deviceSizeBytes, objectSizeBytes, blocksPerObject, chunkStrideBytes, chunkCount, chunkTableOffset, chunkTableBytes: tableBytes, dataOffset };
    }
  }
  throw new TesseraError('ERR_INVALID', `device of ${deviceSizeBytes} bytes is too small for one ${objectSizeBytes}-byte object`);
}

function tableBytesFor(chunkCount: number): number {
  return alignUp(chunkCount * CHUNK_ENTRY_BYTES, 4096);
}

export function chunkOffset(layout: Layout, chunk: number): number {
  if (!(chunk >= 0 && chunk < layout.chunkCount)) fail(`chunk ${chunk} out of range`);
  return layout.dataOffset + chunk * layout.chunkStrideBytes;
}

export function alignUp(v: number, a: number): number {
  return Math.ceil(v / a) * a;
}

function isPow2(v: number): boolean {
  return Number.isInteger(v) && v > 0 && (v & (v - 1)) === 0;
}
