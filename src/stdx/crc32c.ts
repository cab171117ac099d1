// crc32c (Castagnoli) of byte ranges. Large ranges use @node-rs/crc32 (SSE4.2,
// prebuilt); ranges under SMALL_BYTES are computed in JavaScript from a table,
// because for a 60-byte trailer the native call and the Buffer view it needs cost
// more than the arithmetic. Both give identical results (tested).
import { crc32c as nativeCrc32c } from '@node-rs/crc32';

const SMALL_BYTES = 256;
const TABLE = new Uint32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
  TABLE[n] = c >>> 0;
}

export function crc32c(data: Uint8Array, initial = 0): number {
  if (data.length < SMALL_BYTES) return crc32cRange(data, 0, data.length, initial);
  return nativeCrc32c(data as Buffer, initial) >>> 0;
}

/** crc32c of data[start, end) without creating a view for small ranges. */
export function crc32cRange(data: Uint8Array, start: number, end: number, initial = 0): number {
  if (end - start >= SMALL_BYTES) return nativeCrc32c((data as Buffer).subarray(start, end), initial) >>> 0;
  let c = ~initial >>> 0;
  for (let i = start; i < end; i++) c = TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}
