// Tests of the GF(2^8) tables and the TypeScript RAID5/6 codec (SPEC ENG6),
// against a slow reference: bit-by-bit multiplication and a generic decoder
// that inverts the surviving rows of the code's generator matrix by Gaussian
// elimination. Every erasure pattern of up to M blocks is decoded for every
// K = 2..10 and M = 1..2 (issue 4, part 8). Random data prints its seed
// (TESSERA_SEED replays it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EXP, LOG, gfDiv, gfInv, gfMul, gfMulSlow, gfPow2 } from './gf256.js';
import { encodeParity, reconstruct } from './parity.js';
import { Prng, seedFromEnv } from '../stdx/prng.js';
import { TesseraError } from '../stdx/errors.js';

const SEED = seedFromEnv();
console.log(`parity.test seed: TESSERA_SEED=${SEED}`);

// ------------------------------------------------------------ reference

function slowPow2(n: number): number {
  let r = 1;
  for (let i = 0; i < n; i++) r = gfMulSlow(r, 2);
  return r;
}

function slowInv(a: number): number {
  for (let b = 1; b < 256; b++) if (gfMulSlow(a, b) === 1) return b;
  throw new Error(`no inverse of ${a}`);
}

/** Row r of the generator matrix of a k+m stripe: identity, then all ones (P), then g^j (Q). */
function generatorRow(r: number, k: number): number[] {
  if (r < k) return Array.from({ length: k }, (_, j) => (j === r ? 1 : 0));
  if (r === k) return new Array<number>(k).fill(1);
  return Array.from({ length: k }, (_, j) => slowPow2(j));
}

function slowEncodeRow(r: number, data: Uint8Array[]): Uint8Array {
  const row = generatorRow(r, data.length);
  const out = new Uint8Array(data[0].length);
  for (let j = 0; j < data.length; j++) for (let i = 0; i < out.length; i++) out[i] ^= gfMulSlow(row[j], data[j][i]);
  return out;
}

/** Inverts a k x k matrix over GF(2^8) by Gauss-Jordan elimination with slow arithmetic. */
function slowInvert(a: number[][]): number[][] {
  const k = a.length;
  const m = a.map((row, i) => [...row, ...Array.from({ length: k }, (_, j) => (i === j ? 1 : 0))]);
  for (let col = 0; col < k; col++) {
    const pivot = m.findIndex((row, i) => i >= col && row[col] !== 0);
    assert.ok(pivot >= 0, 'singular matrix: the code cannot decode this pattern');
    [m[col], m[pivot]] = [m[pivot], m[col]];
    const inv = slowInv(m[col][col]);
    m[col] = m[col].map((v) => gfMulSlow(v, inv));
    for (let i = 0; i < k; i++) {
      if (i === col || m[i][col] === 0) continue;
      const f = m[i][col];
      m[i] = m[i].map((v, j) => v ^ gfMulSlow(f, m[col][j]));
    }
  }
  return m.map((row) => row.slice(k));
}

/** Decodes a stripe from any k surviving blocks; returns all k + m blocks. */
function slowDecode(blocks: (Uint8Array | null)[], k: number, m: number): Uint8Array[] {
  const alive = blocks.map((b, i) => (b ? i : -1)).filter((i) => i >= 0).slice(0, k);
  assert.equal(alive.length, k);
  const inv = slowInvert(alive.map((r) => generatorRow(r, k)));
  const len = blocks[alive[0]]!.length;
  const data = Array.from({ length: k }, (_, j) => {
    const out = new Uint8Array(len);
    for (let t = 0; t < k; t++) for (let i = 0; i < len; i++) out[i] ^= gfMulSlow(inv[j][t], blocks[alive[t]]![i]);
    return out;
  });
  return [...data, ...Array.from({ length: m }, (_, p) => slowEncodeRow(k + p, data))];
}

function patterns(n: number, maxSize: number): number[][] {
  const out: number[][] = [];
  const rec = (start: number, cur: number[]) => {
    if (cur.length > 0) out.push([...cur]);
    if (cur.length === maxSize) return;
    for (let i = start; i < n; i++) rec(i + 1, [...cur, i]);
  };
  rec(0, []);
  return out;
}

// ------------------------------------------------------------ tests

test('GF(2^8) tables agree with bit-by-bit multiplication for all 65536 pairs', () => {
  for (let a = 0; a < 256; a++) for (let b = 0; b < 256; b++) assert.equal(gfMul(a, b), gfMulSlow(a, b), `${a} * ${b}`);
  for (let a = 1; a < 256; a++) {
    assert.equal(gfMulSlow(a, gfInv(a)), 1, `inverse of ${a}`);
    assert.equal(EXP[LOG[a]], a);
    for (const b of [1, 2, 3, 0x8e, 255]) assert.equal(gfMul(gfDiv(a, b), b), a);
  }
  for (let n = 0; n < 300; n++) assert.equal(gfPow2(n), slowPow2(n % 255), `g^${n}`);
  assert.equal(gfMul(gfPow2(-7), gfPow2(7)), 1);
  // g = 2 generates the whole group: 255 distinct powers.
  assert.equal(new Set(Array.from({ length: 255 }, (_, i) => gfPow2(i))).size, 255);
});

test('P and Q match the generator-matrix definition (Q = sum g^i D_i)', () => {
  const rng = new Prng(SEED);
  for (let k = 1; k <= 12; k++) {
    const data = Array.from({ length: k }, () => {
      const b = new Uint8Array(256);
      rng.fill(b);
      return b;
    });
    const p = new Uint8Array(256);
    const q = new Uint8Array(256);
    encodeParity(data, p, q);
    assert.deepEqual(p, slowEncodeRow(k, data), `P, k=${k}`);
    assert.deepEqual(q, slowEncodeRow(k + 1, data), `Q, k=${k}`);
    const p5 = new Uint8Array(256);
    encodeParity(data, p5);
    assert.deepEqual(p5, p, `RAID5 P, k=${k}`);
  }
});

test('every erasure pattern of up to M blocks decodes exactly, K = 2..10, M = 1..2, matching the reference decoder', () => {
  const rng = new Prng(SEED ^ 0x5a5a);
  let decoded = 0;
  for (let m = 1; m <= 2; m++) {
    for (let k = 2; k <= 10; k++) {
      const len = 64;
      const data = Array.from({ length: k }, () => {
        const b = new Uint8Array(len);
        rng.fill(b);
        return b;
      });
      const parity = Array.from({ length: m }, () => new Uint8Array(len));
      encodeParity(data, parity[0], m === 2 ? parity[1] : null);
      const original = [...data, ...parity];
      for (const lost of patterns(k + m, m)) {
        const blocks = original.map((b, i) => (lost.includes(i) ? new Uint8Array(len).fill(0xee) : Uint8Array.from(b)));
        reconstruct(blocks, k, m, lost);
        assert.deepEqual(blocks, original, `k=${k} m=${m} lost=${lost.join(',')}`);
        const ref = slowDecode(original.map((b, i) => (lost.includes(i) ? null : b)), k, m);
        assert.deepEqual(ref, original, `reference decoder k=${k} m=${m} lost=${lost.join(',')}`);
        decoded++;
      }
    }
  }
  // sum over k of C(k+1,1) for m=1 plus (C(k+2,1) + C(k+2,2)) for m=2.
  let expected = 0;
  for (let k = 2; k <= 10; k++) expected += k + 1 + (k + 2) + ((k + 2) * (k + 1)) / 2;
  assert.equal(decoded, expected);
});

test('full-size blocks: two lost data blocks of a 4+2 stripe of 4 KiB', () => {
  const rng = new Prng(SEED ^ 0x1234);
  const data = Array.from({ length: 4 }, () => {
    const b = new Uint8Array(4096);
    rng.fill(b);
    return b;
  });
  const p = new Uint8Array(4096);
  const q = new Uint8Array(4096);
  encodeParity(data, p, q);
  const blocks = [...data.map((d) => Uint8Array.from(d)), p, q];
  blocks[0].fill(0);
  blocks[3].fill(0);
  reconstruct(blocks, 4, 2, [3, 0]);
  assert.deepEqual(blocks.slice(0, 4), data);
});

test('losing more blocks than the parity covers is ERR_DEVICE_IO, and the survivors are left untouched', () => {
  const data = [new Uint8Array(16).fill(1), new Uint8Array(16).fill(2), new Uint8Array(16).fill(3)];
  const p = new Uint8Array(16);
  const q = new Uint8Array(16);
  encodeParity(data, p, q);
  const blocks = [...data, p, q].map((b) => Uint8Array.from(b));
  assert.throws(
    () => reconstruct(blocks, 3, 2, [0, 1, 4]),
    (err: unknown) => err instanceof TesseraError && err.code === 'ERR_DEVICE_IO' && /lost 3 of 5/.test(err.message),
  );
  assert.deepEqual(blocks[2], data[2]);
  assert.throws(() => reconstruct([...data, p].map((b) => Uint8Array.from(b)), 3, 1, [0, 3]), (err: unknown) => err instanceof TesseraError && err.code === 'ERR_DEVICE_IO');
});

test('null data blocks count as zeros (partial syndromes)', () => {
  const d = new Uint8Array(8).fill(9);
  const withNull = [new Uint8Array(8), new Uint8Array(8)];
  const withZero = [new Uint8Array(8), new Uint8Array(8)];
  encodeParity([null, d, null], withNull[0], withNull[1]);
  encodeParity([new Uint8Array(8), d, new Uint8Array(8)], withZero[0], withZero[1]);
  assert.deepEqual(withNull, withZero);
});
