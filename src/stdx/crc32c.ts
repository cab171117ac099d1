// crc32c (Castagnoli) of byte ranges, backed by @node-rs/crc32 (SSE4.2, prebuilt).
// Used for every stored block, every metadata record and every superblock copy.
import { crc32c as nativeCrc32c } from '@node-rs/crc32';

export function crc32c(data: Uint8Array, initial = 0): number {
  return nativeCrc32c(data as Buffer, initial) >>> 0;
}
