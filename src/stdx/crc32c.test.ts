// crc32c: the JavaScript table path and the native path agree, on the standard
// check value and on random ranges of every small length.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32c as nativeCrc32c } from '@node-rs/crc32';
import { crc32c, crc32cRange } from './crc32c.js';
import { Prng, seedFromEnv } from './prng.js';

test('crc32c of "123456789" is the Castagnoli check value 0xe3069283', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
});

test('JavaScript and native crc32c agree on every length up to 600 bytes and on offsets', () => {
  const seed = seedFromEnv();
  const prng = new Prng(seed);
  const buf = Buffer.alloc(5000);
  prng.fill(buf);
  for (let len = 0; len <= 600; len++) {
    const start = prng.int(4000);
    const want = nativeCrc32c(buf.subarray(start, start + len)) >>> 0;
    assert.equal(crc32cRange(buf, start, start + len), want, `seed ${seed} len ${len}`);
    assert.equal(crc32c(buf.subarray(start, start + len)), want, `seed ${seed} len ${len}`);
  }
});
