// The RAID5/RAID6 codec on WebAssembly SIMD (kernels: asm/raid6.ts), with the
// same contract as the TypeScript codec in parity.ts, which stays the oracle:
// the tests run both on the same stripes.
//
// Two ways to use it:
// - encodeParity()/reconstruct(): like parity.ts, on any buffers; the blocks
//   are copied into the module's memory and the results copied out.
// - stripe(k, m, len): views of k + m blocks that live in the module's memory,
//   for callers that fill data in place and want no copies (the engine's
//   stripe buffers, the benchmark). A later stripe() call may grow the memory,
//   which detaches earlier views: a stripe is valid until the next stripe().
//
// Invariants: blocks are multiples of SIMD_BLOCK_ALIGN_BYTES (64) long; other
// lengths go to the TypeScript codec. Memory below HEAP_BASE_BYTES belongs to
// the module (the AssemblyScript build has no static data and no allocator).
// Pure: the module bytes are loaded by io/node/raid-wasm.ts.
import { assert, fail } from '../stdx/assert.js';
import { TesseraError } from '../stdx/errors.js';
import { gfDiv, gfMul, gfPow2 } from './gf256.js';
import * as ts from './parity.js';

export const SIMD_BLOCK_ALIGN_BYTES = 64;
const HEAP_BASE_BYTES = 65536;
const TABLES_BYTES = 64;
const PAGE_BYTES = 65536;

interface Kernels {
  memory: WebAssembly.Memory;
  syndromes(data: number, k: number, len: number, p: number, q: number, skip1: number, skip2: number): void;
  encode(data: number, k: number, len: number, p: number, q: number): void;
  recover2(data: number, k: number, len: number, p: number, q: number, x: number, y: number, tables: number): void;
  mulXor(dst: number, src: number, len: number, tables: number): void;
  xorInto(dst: number, src: number, len: number): void;
}

/** k data blocks, then P (and Q), as views into the module's memory. */
export interface ResidentStripe {
  readonly dataCount: number;
  readonly parityCount: number;
  readonly lengthBytes: number;
  /** dataCount + parityCount views, valid until the next stripe() call. */
  readonly blocks: Uint8Array[];
}

/** Nibble tables of x -> c*x: c*n and c*(n << 4) for n = 0..15. */
function nibbleTables(c: number, out: Uint8Array, at: number): void {
  for (let n = 0; n < 16; n++) {
    out[at + n] = gfMul(c, n);
    out[at + 16 + n] = gfMul(c, n << 4);
  }
}

export class SimdParity {
  private readonly k: Kernels;
  private current: { k: number; m: number; len: number; data: number; scratchP: number; scratchQ: number } | null = null;

  constructor(module: WebAssembly.Module) {
    const instance = new WebAssembly.Instance(module, {});
    this.k = instance.exports as unknown as Kernels;
    assert(this.k.memory instanceof WebAssembly.Memory && typeof this.k.encode === 'function', 'raid6.wasm lacks its exports');
  }

  private get bytes(): Uint8Array {
    return new Uint8Array(this.k.memory.buffer);
  }

  /** Lays out a stripe (plus two scratch blocks) after the tables, growing memory as needed. */
  private layout(k: number, m: number, len: number): { data: number; scratchP: number; scratchQ: number } {
    if (!(k >= 1 && (m === 1 || m === 2) && k + m <= ts.MAX_STRIPE_BLOCKS)) fail(`bad stripe shape k=${k} m=${m}`);
    if (!(len > 0 && len % SIMD_BLOCK_ALIGN_BYTES === 0)) fail(`SIMD blocks must be multiples of ${SIMD_BLOCK_ALIGN_BYTES} bytes, not ${len}`);
    const data = HEAP_BASE_BYTES + TABLES_BYTES;
    const scratchP = data + (k + m) * len;
    const scratchQ = scratchP + len;
    const need = scratchQ + len;
    const have = this.k.memory.buffer.byteLength;
    if (need > have) this.k.memory.grow(Math.ceil((need - have) / PAGE_BYTES));
    this.current = { k, m, len, data, scratchP, scratchQ };
    return this.current;
  }

  stripe(dataCount: number, parityCount: number, lengthBytes: number): ResidentStripe {
    const { data } = this.layout(dataCount, parityCount, lengthBytes);
    const buf = this.k.memory.buffer;
    const blocks = Array.from({ length: dataCount + parityCount }, (_, i) => new Uint8Array(buf, data + i * lengthBytes, lengthBytes));
    return { dataCount, parityCount, lengthBytes, blocks };
  }

  /** P (and Q) of a resident stripe, written into its parity blocks. */
  encodeResident(s: ResidentStripe): void {
    const c = this.checkResident(s);
    const p = c.data + s.dataCount * s.lengthBytes;
    this.k.encode(c.data, s.dataCount, s.lengthBytes, p, s.parityCount === 2 ? p + s.lengthBytes : 0);
  }

  /** Rebuilds the blocks at `missing` positions of a resident stripe in place (contract: parity.ts reconstruct). */
  reconstructResident(s: ResidentStripe, missing: readonly number[]): void {
    const c = this.checkResident(s);
    const k = s.dataCount;
    const m = s.parityCount;
    const len = s.lengthBytes;
    const lost = [...new Set(missing)].sort((a, b) => a - b);
    for (const x of lost) assert(x >= 0 && x < k + m, `missing position ${x} outside the stripe`);
    if (lost.length > m) throw new TesseraError('ERR_DEVICE_IO', `stripe lost ${lost.length} of ${k + m} blocks; it survives at most ${m}`);
    if (lost.length === 0) return;
    const at = (i: number) => c.data + i * len;
    const P = at(k);
    const Q = m === 2 ? at(k + 1) : 0;
    const lostData = lost.filter((x) => x < k);
    const mem = this.bytes;
    if (lostData.length === 0) {
      this.k.encode(c.data, k, len, lost.includes(k) ? P : c.scratchP, lost.includes(k + 1) ? Q : 0);
      return;
    }
    if (lostData.length === 1) {
      const x = lostData[0];
      if (!lost.includes(k)) {
        this.k.syndromes(c.data, k, len, at(x), 0, x, -1);
        this.k.xorInto(at(x), P, len);
        if (Q !== 0 && lost.includes(k + 1)) this.k.encode(c.data, k, len, c.scratchP, Q);
        return;
      }
      assert(Q !== 0, 'unreachable: P lost with m = 1 and a data block');
      this.k.syndromes(c.data, k, len, c.scratchP, at(x), x, -1);
      nibbleTables(gfPow2(-x), mem, HEAP_BASE_BYTES);
      this.k.mulXor(at(x), Q, len, HEAP_BASE_BYTES);
      this.k.encode(c.data, k, len, P, 0);
      return;
    }
    assert(Q !== 0, 'unreachable: two data blocks lost with m = 1');
    const [x, y] = lostData;
    const gyx = gfPow2(y - x);
    nibbleTables(gfDiv(gyx, gyx ^ 1), mem, HEAP_BASE_BYTES);
    nibbleTables(gfDiv(gfPow2(-x), gyx ^ 1), mem, HEAP_BASE_BYTES + 32);
    this.k.recover2(c.data, k, len, P, Q, x, y, HEAP_BASE_BYTES);
  }

  /** Same contract as parity.ts encodeParity (copies through the module's memory). */
  encodeParity(data: readonly (Uint8Array | null)[], p: Uint8Array, q: Uint8Array | null = null): void {
    const len = p.length;
    if (len % SIMD_BLOCK_ALIGN_BYTES !== 0) return ts.encodeParity(data, p, q);
    const s = this.stripe(data.length, q ? 2 : 1, len);
    data.forEach((d, i) => {
      assert(d === null || d.length === len, 'stripe blocks differ in length');
      if (d) s.blocks[i].set(d);
      else s.blocks[i].fill(0);
    });
    this.encodeResident(s);
    p.set(s.blocks[data.length]);
    if (q) q.set(s.blocks[data.length + 1]);
  }

  /** Same contract as parity.ts reconstruct (copies through the module's memory). */
  reconstruct(blocks: readonly Uint8Array[], dataCount: number, parityCount: number, missing: readonly number[]): void {
    const len = blocks[0].length;
    if (len % SIMD_BLOCK_ALIGN_BYTES !== 0) return ts.reconstruct(blocks, dataCount, parityCount, missing);
    if (!(blocks.length === dataCount + parityCount)) fail(`bad stripe shape k=${dataCount} m=${parityCount} blocks=${blocks.length}`);
    const s = this.stripe(dataCount, parityCount, len);
    blocks.forEach((b, i) => {
      assert(b.length === len, 'stripe blocks differ in length');
      if (!missing.includes(i)) s.blocks[i].set(b);
    });
    this.reconstructResident(s, missing);
    for (const i of new Set(missing)) blocks[i].set(s.blocks[i]);
  }

  private checkResident(s: ResidentStripe): { data: number; scratchP: number; scratchQ: number } {
    const c = this.current;
    assert(
      c !== null && c.k === s.dataCount && c.m === s.parityCount && c.len === s.lengthBytes && s.blocks[0].buffer === this.k.memory.buffer,
      'resident stripe is stale: stripe() was called again or memory grew',
    );
    return c;
  }
}
