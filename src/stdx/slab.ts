// Slab: a bump allocator of small uninitialized buffers carved from large slabs,
// so that a small IO buffer costs no ArrayBuffer of its own (each one counts as
// external memory in V8, and their churn drives full GCs).
//
// Invariants: a region is handed out once (a full slab is replaced, never reused);
// a slab is freed by the GC once no region of it is referenced, so a region may be
// kept as long as its holder likes (a long-lived region keeps its whole slab);
// regions start 8-byte aligned.
import { assert } from './assert.js';

export class Slab {
  private slab: Buffer = Buffer.allocUnsafeSlow(0);
  private usedBytes = 0;

  constructor(
    private readonly slabBytes: number,
    /** Largest region; callers take larger buffers elsewhere. */
    readonly pieceBytesMax: number,
  ) {
    assert(pieceBytesMax > 0 && pieceBytesMax <= slabBytes, 'Slab: pieceBytesMax must be in (0, slabBytes]');
  }

  /** An uninitialized region of exactly `bytes` (at most pieceBytesMax). */
  take(bytes: number): Buffer {
    assert(bytes >= 0 && bytes <= this.pieceBytesMax, `Slab.take(${bytes}) over ${this.pieceBytesMax}`);
    if (this.usedBytes + bytes > this.slab.length) {
      this.slab = Buffer.allocUnsafeSlow(this.slabBytes);
      this.usedBytes = 0;
    }
    const region = this.slab.subarray(this.usedBytes, this.usedBytes + bytes);
    this.usedBytes = (this.usedBytes + bytes + 7) & ~7;
    return region;
  }
}
