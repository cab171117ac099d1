// The WebAssembly SIMD codec against the TypeScript oracle (parity.ts, itself
// checked against a bit-by-bit reference in parity.test.ts): same P and Q for
// K = 1..16, and every erasure pattern of up to M blocks for K = 2..10,
// M = 1..2, decoded in place and through the copying API. The module must
// exist: `npm test` builds it (a missing build fails here, it is never skipped).
// Random data prints its seed (TESSERA_SEED replays it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadSimdParity } from '../io/node/raid-wasm.js';
import { encodeParity, reconstruct } from './parity.js';
import { Prng, seedFromEnv } from '../stdx/prng.js';
import { TesseraError } from '../stdx/errors.js';

const SEED = seedFromEnv();
console.log(`simd.test seed: TESSERA_SEED=${SEED}`);
const simd = loadSimdParity();

function randomBlocks(rng: Prng, n: number, len: number): Uint8Array[] {
  return Array.from({ length: n }, () => {
    const b = new Uint8Array(len);
    rng.fill(b);
    return b;
  });
}

test('SIMD P and Q equal the TypeScript codec for K = 1..16 and several block sizes', () => {
  const rng = new Prng(SEED);
  for (const len of [64, 512, 4096, 65536]) {
    for (let k = 1; k <= 16; k++) {
      const data = randomBlocks(rng, k, len);
      const [p, q, p2, q2] = [0, 0, 0, 0].map(() => new Uint8Array(len));
      encodeParity(data, p, q);
      simd.encodeParity(data, p2, q2);
      assert.deepEqual(p2, p, `P k=${k} len=${len}`);
      assert.deepEqual(q2, q, `Q k=${k} len=${len}`);
      const p5 = new Uint8Array(len);
      simd.encodeParity(data, p5);
      assert.deepEqual(p5, p, `RAID5 P k=${k} len=${len}`);
    }
  }
});

test('SIMD decodes every erasure pattern of up to M blocks, K = 2..10, M = 1..2, like the oracle', () => {
  const rng = new Prng(SEED ^ 0x77);
  let patterns = 0;
  for (let m = 1; m <= 2; m++) {
    for (let k = 2; k <= 10; k++) {
      const len = 256;
      const data = randomBlocks(rng, k, len);
      const parity = [new Uint8Array(len), new Uint8Array(len)].slice(0, m);
      encodeParity(data, parity[0], m === 2 ? parity[1] : null);
      const original = [...data, ...parity];
      const lostSets: number[][] = [];
      for (let a = 0; a < k + m; a++) {
        lostSets.push([a]);
        if (m === 2) for (let b = a + 1; b < k + m; b++) lostSets.push([b, a]); // unsorted on purpose
      }
      for (const lost of lostSets) {
        // Copying API.
        const blocks = original.map((b, i) => (lost.includes(i) ? new Uint8Array(len).fill(0xa5) : Uint8Array.from(b)));
        simd.reconstruct(blocks, k, m, lost);
        assert.deepEqual(blocks, original, `copying k=${k} m=${m} lost=${lost}`);
        // Resident API: garbage in the lost blocks must not matter.
        const s = simd.stripe(k, m, len);
        original.forEach((b, i) => (lost.includes(i) ? s.blocks[i].fill(0x5a) : s.blocks[i].set(b)));
        simd.reconstructResident(s, lost);
        assert.deepEqual(s.blocks.map((b) => Uint8Array.from(b)), original, `resident k=${k} m=${m} lost=${lost}`);
        // And the oracle agrees on the same input.
        const oracle = original.map((b, i) => (lost.includes(i) ? new Uint8Array(len) : Uint8Array.from(b)));
        reconstruct(oracle, k, m, lost);
        assert.deepEqual(oracle, original);
        patterns++;
      }
    }
  }
  let expected = 0; // every single loss for m = 1; every single and double loss for m = 2
  for (let k = 2; k <= 10; k++) expected += k + 1 + (k + 2) + ((k + 2) * (k + 1)) / 2;
  assert.equal(patterns, expected);
});

test('SIMD: too many losses is ERR_DEVICE_IO; lengths that are not multiples of 64 use the TypeScript codec', () => {
  const s = simd.stripe(4, 2, 128);
  assert.throws(() => simd.reconstructResident(s, [0, 1, 2]), (e: unknown) => e instanceof TesseraError && e.code === 'ERR_DEVICE_IO');
  const rng = new Prng(SEED ^ 0x99);
  const data = randomBlocks(rng, 3, 100);
  const [p, q, p2, q2] = [0, 0, 0, 0].map(() => new Uint8Array(100));
  encodeParity(data, p, q);
  simd.encodeParity(data, p2, q2);
  assert.deepEqual([p2, q2], [p, q]);
});

test('a resident stripe is invalid after the next stripe() (memory may have moved)', () => {
  const a = simd.stripe(2, 2, 64);
  simd.stripe(8, 2, 1 << 20); // grows memory: a's views are detached
  assert.throws(() => simd.encodeResident(a), /stale/);
});

test('loadSimdParity names the missing file and how to build it', () => {
  assert.throws(
    () => loadSimdParity('/nonexistent/raid6.wasm'),
    (e: unknown) => e instanceof TesseraError && e.code === 'ERR_NOT_FOUND' && /npm run build/.test(e.message),
  );
});
