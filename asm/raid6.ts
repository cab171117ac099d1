// RAID5/RAID6 parity kernels in AssemblyScript, compiled to WebAssembly with
// 128-bit SIMD (scripts/build-wasm.mjs -> dist/asm/raid6.wasm). Loaded and
// checked against the TypeScript codec by src/raid/simd.ts; the math is
// described in src/raid/parity.ts (Anvin, "The mathematics of RAID-6").
//
// Memory: the host owns all of linear memory from HEAP_BASE_BYTES on; a stripe
// is k data blocks of len bytes back to back at `data`, and P and Q elsewhere.
// len is a multiple of 64 (blocks are multiples of 512 bytes). Multiplication
// by a constant c uses nibble tables: 16 bytes c*n and 16 bytes c*(n<<4), as
// i8x16.swizzle lookups (the pshufb method). No allocation, no runtime.

// Four independent 16-byte lanes per step keep the adds/compares pipelined.
const STEP: usize = 64;

// @ts-ignore: decorator
@inline function mul2(v: v128, zero: v128, poly: v128): v128 {
  // Per byte: (v << 1) ^ (0x1d if the top bit was set). The constants come in
  // as arguments so that they stay in registers across the loops.
  const carry = i8x16.lt_s(v, zero);
  return v128.xor(i8x16.add(v, v), v128.and(carry, poly));
}

// @ts-ignore: decorator
@inline function mulTab(v: v128, lo: v128, hi: v128): v128 {
  const l = v128.and(v, i8x16.splat(0x0f));
  const h = i8x16.shr_u(v, 4);
  return v128.xor(i8x16.swizzle(lo, l), i8x16.swizzle(hi, h));
}

/** P (and Q unless q is 0) of k blocks; blocks `skip1`/`skip2` (or -1) count as zeros. */
export function syndromes(data: usize, k: i32, len: i32, p: usize, q: usize, skip1: i32, skip2: i32): void {
  const Z = i8x16.splat(0), POLY = i8x16.splat(0x1d);
  const n = <usize>len;
  for (let off: usize = 0; off < n; off += STEP) {
    let p0 = i8x16.splat(0), p1 = p0, p2 = p0, p3 = p0;
    let q0 = p0, q1 = p0, q2 = p0, q3 = p0;
    for (let i = k - 1; i >= 0; i--) {
      if (q != 0) {
        q0 = mul2(q0, Z, POLY); q1 = mul2(q1, Z, POLY); q2 = mul2(q2, Z, POLY); q3 = mul2(q3, Z, POLY);
      }
      if (i == skip1 || i == skip2) continue;
      const a = data + <usize>i * n + off;
      const d0 = v128.load(a), d1 = v128.load(a, 16), d2 = v128.load(a, 32), d3 = v128.load(a, 48);
      p0 = v128.xor(p0, d0); p1 = v128.xor(p1, d1); p2 = v128.xor(p2, d2); p3 = v128.xor(p3, d3);
      if (q != 0) {
        q0 = v128.xor(q0, d0); q1 = v128.xor(q1, d1); q2 = v128.xor(q2, d2); q3 = v128.xor(q3, d3);
      }
    }
    v128.store(p + off, p0); v128.store(p + off, p1, 16); v128.store(p + off, p2, 32); v128.store(p + off, p3, 48);
    if (q != 0) {
      v128.store(q + off, q0); v128.store(q + off, q1, 16); v128.store(q + off, q2, 32); v128.store(q + off, q3, 48);
    }
  }
}

/** P and Q of k blocks (q = 0: P only). Specialised loop without skips: the hot encode path. */
export function encode(data: usize, k: i32, len: i32, p: usize, q: usize): void {
  const Z = i8x16.splat(0), POLY = i8x16.splat(0x1d);
  if (q == 0) {
    syndromes(data, k, len, p, 0, -1, -1);
    return;
  }
  const n = <usize>len;
  for (let off: usize = 0; off < n; off += STEP) {
    let a = data + <usize>(k - 1) * n + off;
    let q0 = v128.load(a), q1 = v128.load(a, 16), q2 = v128.load(a, 32), q3 = v128.load(a, 48);
    let p0 = q0, p1 = q1, p2 = q2, p3 = q3;
    for (let i = k - 2; i >= 0; i--) {
      a -= n;
      const d0 = v128.load(a), d1 = v128.load(a, 16), d2 = v128.load(a, 32), d3 = v128.load(a, 48);
      p0 = v128.xor(p0, d0); p1 = v128.xor(p1, d1); p2 = v128.xor(p2, d2); p3 = v128.xor(p3, d3);
      q0 = v128.xor(mul2(q0, Z, POLY), d0); q1 = v128.xor(mul2(q1, Z, POLY), d1); q2 = v128.xor(mul2(q2, Z, POLY), d2); q3 = v128.xor(mul2(q3, Z, POLY), d3);
    }
    v128.store(p + off, p0); v128.store(p + off, p1, 16); v128.store(p + off, p2, 32); v128.store(p + off, p3, 48);
    v128.store(q + off, q0); v128.store(q + off, q1, 16); v128.store(q + off, q2, 32); v128.store(q + off, q3, 48);
  }
}

/**
 * Two lost data blocks x and y from P and Q: with pd = P + P_xy and qd = Q + Q_xy
 * (syndromes without x and y), D_x = A*pd + B*qd and D_y = pd + D_x. `tables`
 * holds A_lo, A_hi, B_lo, B_hi (16 bytes each). Writes D_x and D_y in place.
 */
export function recover2(data: usize, k: i32, len: i32, p: usize, q: usize, x: i32, y: i32, tables: usize): void {
  const Z = i8x16.splat(0), POLY = i8x16.splat(0x1d);
  const n = <usize>len;
  const alo = v128.load(tables), ahi = v128.load(tables, 16), blo = v128.load(tables, 32), bhi = v128.load(tables, 48);
  const dx = data + <usize>x * n;
  const dy = data + <usize>y * n;
  for (let off: usize = 0; off < n; off += STEP) {
    let p0 = i8x16.splat(0), p1 = p0, p2 = p0, p3 = p0;
    let q0 = p0, q1 = p0, q2 = p0, q3 = p0;
    for (let i = k - 1; i >= 0; i--) {
      q0 = mul2(q0, Z, POLY); q1 = mul2(q1, Z, POLY); q2 = mul2(q2, Z, POLY); q3 = mul2(q3, Z, POLY);
      if (i == x || i == y) continue;
      const a = data + <usize>i * n + off;
      const d0 = v128.load(a), d1 = v128.load(a, 16), d2 = v128.load(a, 32), d3 = v128.load(a, 48);
      p0 = v128.xor(p0, d0); p1 = v128.xor(p1, d1); p2 = v128.xor(p2, d2); p3 = v128.xor(p3, d3);
      q0 = v128.xor(q0, d0); q1 = v128.xor(q1, d1); q2 = v128.xor(q2, d2); q3 = v128.xor(q3, d3);
    }
    // pd = P + P_xy, qd = Q + Q_xy; D_x = A*pd + B*qd; D_y = pd + D_x.
    const pa = p + off, qa = q + off;
    p0 = v128.xor(p0, v128.load(pa)); p1 = v128.xor(p1, v128.load(pa, 16)); p2 = v128.xor(p2, v128.load(pa, 32)); p3 = v128.xor(p3, v128.load(pa, 48));
    q0 = v128.xor(q0, v128.load(qa)); q1 = v128.xor(q1, v128.load(qa, 16)); q2 = v128.xor(q2, v128.load(qa, 32)); q3 = v128.xor(q3, v128.load(qa, 48));
    const x0 = v128.xor(mulTab(p0, alo, ahi), mulTab(q0, blo, bhi));
    const x1 = v128.xor(mulTab(p1, alo, ahi), mulTab(q1, blo, bhi));
    const x2 = v128.xor(mulTab(p2, alo, ahi), mulTab(q2, blo, bhi));
    const x3 = v128.xor(mulTab(p3, alo, ahi), mulTab(q3, blo, bhi));
    v128.store(dx + off, x0); v128.store(dx + off, x1, 16); v128.store(dx + off, x2, 32); v128.store(dx + off, x3, 48);
    v128.store(dy + off, v128.xor(p0, x0)); v128.store(dy + off, v128.xor(p1, x1), 16);
    v128.store(dy + off, v128.xor(p2, x2), 32); v128.store(dy + off, v128.xor(p3, x3), 48);
  }
}

/** dst = table(src + dst): multiplies the XOR of two buffers by the constant whose nibble tables are at `tables`. */
export function mulXor(dst: usize, src: usize, len: i32, tables: usize): void {
  const lo = v128.load(tables), hi = v128.load(tables, 16);
  for (let off: usize = 0; off < <usize>len; off += 16) {
    v128.store(dst + off, mulTab(v128.xor(v128.load(dst + off), v128.load(src + off)), lo, hi));
  }
}

/** dst ^= src. */
export function xorInto(dst: usize, src: usize, len: i32): void {
  for (let off: usize = 0; off < <usize>len; off += 16) {
    v128.store(dst + off, v128.xor(v128.load(dst + off), v128.load(src + off)));
  }
}
