// crc32c: the JavaScript table path and the native path agree, on the standard
// check value and on random ranges of every small length.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32c as referenceCrc32c } from '@node-rs/crc32'; // software crc32c: the independent reference
import { crc32c, crc32cBlocks, crc32cImplementation, crc32cRange } from './crc32c.js';
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
    const want = referenceCrc32c(buf.subarray(start, start + len)) >>> 0;
    assert.equal(crc32cRange(buf, start, start + len), want, `seed ${seed} len ${len}`);
    assert.equal(crc32c(buf.subarray(start, start + len)), want, `seed ${seed} len ${len}`);
  }
});

test('long ranges (the three-lane path of the native kernel and its joins) agree with @node-rs/crc32 around every lane boundary, at any alignment, continuing any initial value', () => {
  const seed = seedFromEnv();
  const prng = new Prng(seed);
  const buf = Buffer.alloc(3 * 3 * 4096 + 3 * 3 * 256 + 64);
  prng.fill(buf);
  const lengths = [767, 768, 769, 775, 776, 1535, 1536, 1537, 4096, 4608, 12287, 12288, 12289, 12288 + 768, 12288 + 767, 2 * 12288 + 3 * 768 + 7];
  for (let i = 0; i < 40; i++) lengths.push(prng.int(buf.length - 8));
  for (const len of lengths) {
    const start = prng.int(8);
    const view = buf.subarray(start, start + len);
    const initial = prng.int(0x100000000) >>> 0;
    assert.equal(crc32cRange(buf, start, start + len, initial), referenceCrc32c(view, initial) >>> 0, `seed ${seed} len ${len} start ${start}`);
    const cut = prng.int(len + 1);
    const chained = crc32cRange(buf, start + cut, start + len, crc32cRange(buf, start, start + cut));
    assert.equal(chained, crc32c(view), `seed ${seed} len ${len} cut at ${cut}`);
  }
  // One flipped bit anywhere in a long range changes the checksum (each lane counts).
  const base = crc32c(buf);
  for (const at of [0, 4095, 4096, 8192 + 17, 12288 + 300, buf.length - 1]) {
    buf[at] ^= 0x10;
    assert.notEqual(crc32c(buf), base, `flip at ${at}`);
    buf[at] ^= 0x10;
  }
});

test('the native kernel is built and serves large ranges on x86-64 (scripts/build-native.mjs)', () => {
  if (process.arch !== 'x64' || process.env.TESSERA_NATIVE_CRC === '0') return;
  assert.equal(crc32cImplementation, 'native', 'dist/native/crc32c.node missing or not loadable: run node scripts/build-native.mjs');
});

test('crc32cBlocks equals crc32cRange per block, at strides, for block sizes on both sides of the native threshold', () => {
  const seed = seedFromEnv();
  const prng = new Prng(seed);
  const buf = Buffer.from(new SharedArrayBuffer(64 * 4608 + 100)).subarray(7); // a shared view at an odd offset
  prng.fill(buf);
  for (const [block, stride, count, start] of [[4096, 4608, 64, 0], [4096, 4096, 70, 13], [100, 128, 50, 3], [512, 512, 1, 0], [4096, 4608, 0, 0]]) {
    const out = new Uint32Array(count + 1).fill(0xdeadbeef);
    crc32cBlocks(buf, start, block, stride, count, out);
    for (let i = 0; i < count; i++) assert.equal(out[i], crc32cRange(buf, start + i * stride, start + i * stride + block), `seed ${seed} block ${block} #${i}`);
    assert.equal(out[count], 0xdeadbeef, 'nothing written past count');
  }
});

test('native ranges are checked before any byte is read', () => {
  const buf = Buffer.alloc(1024);
  assert.throws(() => crc32cRange(buf, 0, 2048));
  assert.throws(() => crc32cBlocks(buf, 0, 512, 512, 3, new Uint32Array(3)));
  assert.throws(() => crc32cBlocks(buf, 0, 512, 512, 2, new Uint32Array(1)));
});
