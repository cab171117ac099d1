// Arithmetic in GF(2^8) with the RAID-6 polynomial x^8 + x^4 + x^3 + x^2 + 1
// (0x11d) and generator g = 2, as in H. P. Anvin, "The mathematics of RAID-6".
// Addition is XOR. Pure and table-driven; gfMulSlow is the bit-by-bit definition
// that the tests (and the reference decoder) use to check the tables.
//
// Invariants: EXP[i] = g^i for 0 <= i < 510 (doubled so that LOG[a] + LOG[b]
// needs no modulo); LOG[EXP[i]] = i for 0 <= i < 255; LOG[0] is unused (0 has
// no logarithm), so every function handles 0 before looking it up.
import { assert } from '../stdx/assert.js';

export const GF_POLY = 0x11d;

export const EXP = new Uint8Array(510);
export const LOG = new Uint8Array(256);
{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = x;
    LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= GF_POLY;
  }
  for (let i = 255; i < 510; i++) EXP[i] = EXP[i - 255];
}

/** a * b by shift-and-add with reduction: the definition, no tables. */
export function gfMulSlow(a: number, b: number): number {
  let r = 0;
  for (let i = 0; i < 8; i++) {
    if (b & (1 << i)) r ^= a;
    a <<= 1;
    if (a & 0x100) a ^= GF_POLY;
  }
  return r;
}

export function gfMul(a: number, b: number): number {
  return a === 0 || b === 0 ? 0 : EXP[LOG[a] + LOG[b]];
}

export function gfInv(a: number): number {
  assert(a !== 0, 'GF(2^8): 0 has no inverse');
  return EXP[255 - LOG[a]];
}

export function gfDiv(a: number, b: number): number {
  assert(b !== 0, 'GF(2^8): division by 0');
  return a === 0 ? 0 : EXP[LOG[a] + 255 - LOG[b]];
}

/** g^n for any integer n (negative exponents are inverses). */
export function gfPow2(n: number): number {
  return EXP[((n % 255) + 255) % 255];
}

/** The 256-entry table of x -> c * x, for multiplying a buffer by the constant c. */
export function mulTable(c: number): Uint8Array {
  const t = new Uint8Array(256);
  if (c === 0) return t;
  const lc = LOG[c];
  for (let x = 1; x < 256; x++) t[x] = EXP[lc + LOG[x]];
  return t;
}

const cachedTables = new Map<number, Uint8Array>();

/** mulTable(c), built once per constant (there are at most 256). */
export function cachedMulTable(c: number): Uint8Array {
  let t = cachedTables.get(c);
  if (!t) {
    t = mulTable(c);
    cachedTables.set(c, t);
  }
  return t;
}
