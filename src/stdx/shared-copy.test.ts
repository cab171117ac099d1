// copyBytes against Buffer.copy for every alignment of source and destination,
// private and shared, short and longer than the bounce buffer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyBytes } from './shared-copy.js';

function filled(n: number, shared: boolean, seed: number): Buffer {
  const b = shared ? Buffer.from(new SharedArrayBuffer(n)) : Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

test('copyBytes lands the same bytes as Buffer.copy for every alignment and sharing', () => {
  for (const srcShared of [false, true]) {
    for (const dstShared of [false, true]) {
      for (const n of [0, 5, 300, 4096, 200 * 1024 + 3]) {
        for (let so = 0; so < 8; so++) {
          for (const dOff of [0, 1, 4, 7]) {
            const src = filled(n + 16, srcShared, 1);
            const want = filled(n + 16, false, 2);
            const got = filled(n + 16, dstShared, 2);
            src.copy(want, dOff, so, so + n);
            copyBytes(src, so, so + n, got, dOff);
            assert.ok(want.equals(got), `src shared=${srcShared} dst shared=${dstShared} n=${n} srcOff=${so} dstOff=${dOff}`);
          }
        }
      }
    }
  }
});

test('copyBytes refuses out-of-bounds ranges', () => {
  assert.throws(() => copyBytes(Buffer.alloc(4), 0, 8, Buffer.alloc(16), 0));
  assert.throws(() => copyBytes(Buffer.alloc(16), 0, 8, Buffer.alloc(4), 0));
});
