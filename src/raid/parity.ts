// RAID5/RAID6 parity of one stripe, in TypeScript (SPEC ENG6): P = XOR of the
// data blocks, Q = sum of g^i * D_i over GF(2^8) (gf256.ts), computed by
// Horner's rule with Anvin's trick of multiplying four bytes by g at once in a
// 32-bit word. This is the portable codec and the test oracle for the
// WebAssembly SIMD one (simd.ts); it is pure (no IO, no allocation per call
// beyond small tables cached per constant).
//
// A stripe of k data blocks and m parity blocks (m = 1: P; m = 2: P and Q) is
// addressed by position: 0..k-1 data, k = P, k+1 = Q. reconstruct() fills the
// blocks at the missing positions from the others:
//   one data block            P (XOR of the rest)
//   data + P                  Q: D_x = (Q + Q_x) * g^-x, Q_x = Q with D_x = 0
//   data + Q                  P, then Q again
//   two data blocks x < y     Anvin section 4: D_x = A(P + P_xy) + B(Q + Q_xy),
//                             D_y = (P + P_xy) + D_x, with
//                             A = g^(y-x) / (g^(y-x) + 1), B = g^-x / (g^(y-x) + 1)
//   P and/or Q                recomputed from the data
//
// Invariants: every block of a stripe has the same length, a multiple of 4
// (block sizes are multiples of 512); k >= 1; 1 <= m <= 2; k + m <= 255
// (distinct g^i). Losing more than m blocks is data loss: an operating
// condition, reported as ERR_DEVICE_IO (a caller gets here only after device
// reads failed); bad shapes and lengths are programmer errors (assertions).
import { assert, fail } from '../stdx/assert.js';
import { TesseraError } from '../stdx/errors.js';
import { cachedMulTable, gfDiv, gfPow2 } from './gf256.js';

export const MAX_STRIPE_BLOCKS = 255;

/** Four bytes, each multiplied by g = 2 in GF(2^8) (Anvin, section 2); int32 arithmetic only. */
function mul2x4(v: number): number {
  return ((v & 0x7f7f7f7f) << 1) ^ (((v >>> 7) & 0x01010101) * 0x1d);
}

function words(b: Uint8Array): Uint32Array {
  assert(b.byteOffset % 4 === 0 && b.length % 4 === 0, 'parity blocks must be 4-byte aligned multiples of 4 bytes');
  return new Uint32Array(b.buffer, b.byteOffset, b.length >>> 2);
}

function checkStripe(blocks: readonly (Uint8Array | null)[], lengthBytes: number): void {
  if (!(blocks.length >= 1 && blocks.length <= MAX_STRIPE_BLOCKS)) fail(`stripe of ${blocks.length} blocks`);
  for (const b of blocks) assert(b === null || b.length === lengthBytes, 'stripe blocks differ in length');
}

/**
 * P (and Q when given) of the data blocks. A data entry may be null: it counts
 * as zeros (used to compute partial syndromes during reconstruction).
 */
export function encodeParity(data: readonly (Uint8Array | null)[], p: Uint8Array, q: Uint8Array | null = null): void {
  checkStripe([...data, p, q], p.length);
  const pw = words(p);
  const qw = q ? words(q) : null;
  const dw = data.map((d) => (d ? words(d) : null));
  const n = pw.length;
  const k = dw.length;
  // Word by word, every block at once, so P and Q stay in registers.
  // Horner from the highest data index down: Q = (...(D_{k-1} g + D_{k-2}) g + ...) g + D_0.
  for (let j = 0; j < n; j++) {
    let pv = 0;
    let qv = 0;
    for (let i = k - 1; i >= 0; i--) {
      const d = dw[i];
      qv = mul2x4(qv);
      if (d !== null) {
        const v = d[j];
        pv ^= v;
        qv ^= v;
      }
    }
    pw[j] = pv;
    if (qw) qw[j] = qv;
  }
}

const tableFor = cachedMulTable;

/** dst = c * src (bytewise, GF(2^8)). */
function mulInto(dst: Uint8Array, src: Uint8Array, c: number): void {
  const t = tableFor(c);
  for (let i = 0; i < src.length; i++) dst[i] = t[src[i]];
}

function xorInto(dst: Uint8Array, src: Uint8Array): void {
  const d = words(dst);
  const s = words(src);
  for (let i = 0; i < d.length; i++) d[i] ^= s[i];
}

/**
 * Rebuilds the blocks at `missing` positions in place. `blocks` has k + m
 * entries (data, P, Q); entries at missing positions are the output buffers,
 * the others hold the surviving contents.
 */
export function reconstruct(blocks: readonly Uint8Array[], dataCount: number, parityCount: number, missing: readonly number[]): void {
  const k = dataCount;
  const m = parityCount;
  if (!(k >= 1 && (m === 1 || m === 2) && blocks.length === k + m)) fail(`bad stripe shape k=${k} m=${m} blocks=${blocks.length}`);
  const len = blocks[0].length;
  checkStripe(blocks, len);
  const lost = [...new Set(missing)].sort((a, b) => a - b);
  for (const x of lost) assert(x >= 0 && x < k + m, `missing position ${x} outside the stripe`);
  if (lost.length > m) {
    throw new TesseraError('ERR_DEVICE_IO', `stripe lost ${lost.length} of ${k + m} blocks; it survives at most ${m}`);
  }
  if (lost.length === 0) return;
  const P = blocks[k];
  const Q = m === 2 ? blocks[k + 1] : null;
  const data = blocks.slice(0, k);
  const lostData = lost.filter((x) => x < k);
  if (lostData.length === 0) {
    // Only parity is gone: recompute it (both, harmlessly, when m = 2).
    encodeParity(data, lost.includes(k) ? P : new Uint8Array(len), lost.includes(k + 1) ? Q : null);
    return;
  }
  if (lostData.length === 1) {
    const x = lostData[0];
    const partial: (Uint8Array | null)[] = data.map((d, i) => (i === x ? null : d));
    if (!lost.includes(k)) {
      // P survives: D_x = P + sum of the other data.
      const dx = blocks[x];
      encodeParity(partial, dx);
      xorInto(dx, P);
      if (Q && lost.includes(k + 1)) encodeParity(data, new Uint8Array(len), Q);
      return;
    }
    // P is gone too, Q survives: D_x = (Q + Q_x) * g^-x.
    assert(Q !== null, 'unreachable: P lost with m = 1 and a data block');
    const qx = new Uint8Array(len);
    encodeParity(partial, new Uint8Array(len), qx);
    xorInto(qx, Q);
    mulInto(blocks[x], qx, gfPow2(-x));
    encodeParity(data, P);
    return;
  }
  // Two data blocks, P and Q survive.
  assert(Q !== null, 'unreachable: two data blocks lost with m = 1');
  const [x, y] = lostData;
  const partial: (Uint8Array | null)[] = data.map((d, i) => (i === x || i === y ? null : d));
  const pxy = new Uint8Array(len);
  const qxy = new Uint8Array(len);
  encodeParity(partial, pxy, qxy);
  xorInto(pxy, P); // P + P_xy = D_x + D_y
  xorInto(qxy, Q); // Q + Q_xy = g^x D_x + g^y D_y
  const gyx = gfPow2(y - x);
  const denom = gyx ^ 1;
  const a = gfDiv(gyx, denom);
  const b = gfDiv(gfPow2(-x), denom);
  const dx = blocks[x];
  const dy = blocks[y];
  const ta = tableFor(a);
  const tb = tableFor(b);
  for (let i = 0; i < len; i++) {
    const v = ta[pxy[i]] ^ tb[qxy[i]];
    dx[i] = v;
    dy[i] = pxy[i] ^ v;
  }
}
