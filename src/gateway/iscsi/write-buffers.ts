// Reusable buffers for write data that arrives in several PDUs (R2T sequences):
// a 1 MiB write would otherwise allocate a fresh 1 MiB buffer, and the garbage
// collector spent a third of the CPU of 1 MiB sequential writes on them. Buffers
// come in power-of-two classes from 64 KiB; returned ones are kept on a free list
// bounded by `keepBytesMax`. Pure bookkeeping, no IO.
//
// Invariant: a buffer is given back only by the task that took it, and only
// after the volume's write with it resolved (no layer keeps a reference then);
// an aborted task's buffer is never given back (the write may still run).
import { assert } from '../../stdx/assert.js';

const MIN_CLASS_BYTES = 64 * 1024;

export class WriteBuffers {
  private readonly free = new Map<number, Buffer[]>();
  private keptBytes = 0;

  constructor(private readonly keepBytesMax = 64 * 1024 * 1024) {}

  static classBytes(n: number): number {
    let c = MIN_CLASS_BYTES;
    while (c < n) c *= 2;
    return c;
  }

  /** A buffer of at least n bytes (its length is the class size; use a prefix). */
  take(n: number): Buffer {
    const c = WriteBuffers.classBytes(n);
    const list = this.free.get(c);
    const b = list?.pop();
    if (b !== undefined) {
      this.keptBytes -= c;
      return b;
    }
    return Buffer.allocUnsafeSlow(c);
  }

  give(b: Buffer): void {
    const c = b.length;
    assert(c >= MIN_CLASS_BYTES && (c & (c - 1)) === 0 && b.byteOffset === 0, 'not a WriteBuffers buffer');
    if (this.keptBytes + c > this.keepBytesMax) return; // dropped: the GC takes it
    let list = this.free.get(c);
    if (list === undefined) this.free.set(c, (list = []));
    list.push(b);
    this.keptBytes += c;
  }

  get bytesKept(): number {
    return this.keptBytes;
  }
}
