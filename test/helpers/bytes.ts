// Byte-level helpers for the conformance tests: seeded random files and a
// comparison that names the first differing offset (a bare "not equal" on two
// 64 MiB buffers tells nobody anything).
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { Prng } from '../../src/stdx/prng.js';

const WRITE_CHUNK_BYTES = 1024 * 1024;

/** Writes `sizeBytes` of seeded random bytes to `filePath`; returns their sha256. */
export async function writeRandomFile(filePath: string, sizeBytes: number, prng: Prng): Promise<string> {
  const fh = await open(filePath, 'w');
  const hash = createHash('sha256');
  try {
    const buf = Buffer.alloc(WRITE_CHUNK_BYTES);
    for (let pos = 0; pos < sizeBytes; pos += WRITE_CHUNK_BYTES) {
      const n = Math.min(WRITE_CHUNK_BYTES, sizeBytes - pos);
      const part = buf.subarray(0, n);
      prng.fill(part);
      hash.update(part);
      await fh.write(part, 0, n, pos);
    }
  } finally {
    await fh.close();
  }
  return hash.digest('hex');
}

/** null when equal; otherwise where and how they first differ. */
export function firstMismatch(expected: Uint8Array, actual: Uint8Array): string | null {
  if (expected.length !== actual.length) {
    return `length differs: expected ${expected.length} bytes, got ${actual.length}`;
  }
  const a = Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength);
  const b = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  if (a.equals(b)) return null;
  // Find the first differing 4 KiB block, then the byte.
  const step = 4096;
  let off = 0;
  while (off < a.length && a.subarray(off, off + step).equals(b.subarray(off, off + step))) off += step;
  while (off < a.length && a[off] === b[off]) off++;
  let diffBytes = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) diffBytes++;
  const window = (x: Buffer): string => x.subarray(off, Math.min(off + 16, x.length)).toString('hex');
  return `first difference at byte ${off} (block ${Math.floor(off / 4096)} of 4 KiB); ${diffBytes} bytes differ in all; expected ${window(a)}..., got ${window(b)}...`;
}

export async function sha256File(filePath: string): Promise<string> {
  const fh = await open(filePath, 'r');
  const hash = createHash('sha256');
  try {
    for await (const chunk of fh.createReadStream()) hash.update(chunk as Buffer);
  } finally {
    await fh.close().catch(() => {});
  }
  return hash.digest('hex');
}
