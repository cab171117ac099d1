// crc32c (Castagnoli) of byte ranges. Three paths, identical results (tested):
// - ranges under SMALL_BYTES: JavaScript from a table (for a 60-byte trailer any
//   native call costs more than the arithmetic);
// - larger ranges: our native kernel (src/native/crc32c.c, the SSE4.2 crc32
//   instruction in three lanes: ~19 GB/s on 4.6 KiB, ~29 GB/s from 64 KiB, 2-2.9x
//   the single stream it replaced in session 18), which also checksums a run of
//   blocks in one call;
// - without that kernel (not built, not x86-64): @node-rs/crc32, whose prebuilt
//   binary computes crc32c in software (~4.5 GB/s) and takes one view per range.
import { createRequire } from 'node:module';
import { crc32c as nodeRsCrc32c } from '@node-rs/crc32';
import { fail } from './assert.js';

const SMALL_BYTES = 256;
const TABLE = new Uint32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
  TABLE[n] = c >>> 0;
}

interface NativeCrc32c {
  crc32c(data: Uint8Array, start: number, end: number, initial: number): number;
  crc32cBlocks(data: Uint8Array, start: number, blockBytes: number, strideBytes: number, count: number, out: Uint32Array): void;
}

function loadNative(): NativeCrc32c | null {
  if (process.env.TESSERA_NATIVE_CRC === '0') return null;
  try {
    // dist/src/stdx/crc32c.js -> dist/native/crc32c.node (scripts/build-native.mjs)
    const m = createRequire(import.meta.url)('../../native/crc32c.node') as Partial<NativeCrc32c>;
    return typeof m.crc32c === 'function' && typeof m.crc32cBlocks === 'function' ? (m as NativeCrc32c) : null;
  } catch {
    return null;
  }
}

const native = loadNative();

/** Which implementation serves ranges of SMALL_BYTES and more. */
export const crc32cImplementation: 'native' | '@node-rs/crc32' = native !== null ? 'native' : '@node-rs/crc32';

export function crc32c(data: Uint8Array, initial = 0): number {
  return crc32cRange(data, 0, data.length, initial);
}

/** crc32c of data[start, end) without creating a view. */
export function crc32cRange(data: Uint8Array, start: number, end: number, initial = 0): number {
  if (end - start >= SMALL_BYTES) {
    if (native !== null) return native.crc32c(data, start, end, initial);
    if (!(start >= 0 && end <= data.length)) fail(`crc32c range ${start}..${end} of ${data.length} bytes`);
    return nodeRsCrc32c(Buffer.from(data.buffer, data.byteOffset + start, end - start), initial) >>> 0;
  }
  let c = ~initial >>> 0;
  for (let i = start; i < end; i++) c = TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** out[i] = crc32c of data[start + i * strideBytes, + blockBytes) for i < count: a run of blocks in one call. */
export function crc32cBlocks(data: Uint8Array, start: number, blockBytes: number, strideBytes: number, count: number, out: Uint32Array): void {
  if (!(count <= out.length)) fail(`crc32cBlocks: ${count} blocks, room for ${out.length}`);
  if (native !== null && blockBytes >= SMALL_BYTES) {
    native.crc32cBlocks(data, start, blockBytes, strideBytes, count, out);
    return;
  }
  for (let i = 0; i < count; i++) out[i] = crc32cRange(data, start + i * strideBytes, start + i * strideBytes + blockBytes);
}
