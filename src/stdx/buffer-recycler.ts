// BufferRecycler: large buffers (64 KiB and more) given back once nothing uses them,
// instead of one fresh ArrayBuffer per IO: the iSCSI gateway's multi-PDU write data
// (given back once the volume's write resolved) and large read results (once the
// socket sent them). Each fresh large ArrayBuffer counts as external memory in V8:
// the GC spent a third of the CPU of 1 MiB sequential writes on them, and at 500
// MB/s of 1 MiB reads V8 ran a full mark-compact every ~35 ms (docs/benchmarks.md).
//
// Invariants:
// - a buffer is handed out by take() at most once until it is given back; give()
//   of a buffer that is not out is a bug (asserted), so a double give can never hand
//   one buffer to two owners;
// - the free lists hold at most cacheBytesMax bytes; beyond, a given-back buffer is
//   dropped to the GC. A buffer never given back is simply collected: nothing else
//   refers to it (the bookkeeping is weak).
// - sizes are classes (powers of two from minClassBytes); take(n) returns a view of
//   exactly n bytes of a whole class buffer, uninitialized.
// - with shared, every buffer is a SharedArrayBuffer, so the engine's block worker
//   can copy a large IO's data in or out of it (engine/block-codec.ts).
import { assert } from './assert.js';

export class BufferRecycler {
  private readonly free = new Map<number, Buffer[]>();
  /** Class of every backing store this recycler allocated that is out (handed out, not given back). */
  private readonly out = new WeakMap<ArrayBufferLike, number>();
  private cachedBytes = 0;
  /** take() calls served from a free list, and those that had to allocate. */
  reused = 0;
  allocated = 0;

  constructor(
    private readonly cacheBytesMax = 64 * 1024 * 1024,
    private readonly minClassBytes = 64 * 1024,
    private readonly shared = false,
  ) {}

  classBytes(lengthBytes: number): number {
    let c = this.minClassBytes;
    while (c < lengthBytes) c *= 2;
    return c;
  }

  /** A buffer of exactly lengthBytes (uninitialized): give() it back once nothing reads it any more. */
  take(lengthBytes: number): Buffer {
    const cls = this.classBytes(lengthBytes);
    const list = this.free.get(cls);
    let whole = list?.pop();
    if (whole !== undefined) {
      this.cachedBytes -= cls;
      this.reused++;
    } else {
      whole = this.shared ? Buffer.from(new SharedArrayBuffer(cls)) : Buffer.allocUnsafeSlow(cls);
      this.allocated++;
    }
    this.out.set(whole.buffer, cls);
    return whole.subarray(0, lengthBytes);
  }

  /** True when buf is a view of a buffer take() handed out and nobody gave back yet. */
  owns(buf: Buffer): boolean {
    return this.out.has(buf.buffer);
  }

  /** Gives back the buffer buf is a view of (any view of it). */
  give(buf: Buffer): void {
    const cls = this.out.get(buf.buffer);
    assert(cls !== undefined, 'BufferRecycler.give of a buffer that is not out (given twice, or not from take())');
    this.out.delete(buf.buffer);
    if (this.cachedBytes + cls > this.cacheBytesMax) return;
    let list = this.free.get(cls);
    if (list === undefined) {
      list = [];
      this.free.set(cls, list);
    }
    list.push(Buffer.from(buf.buffer, 0, cls));
    this.cachedBytes += cls;
  }
}
