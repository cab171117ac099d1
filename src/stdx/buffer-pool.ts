// Page-aligned buffer pool. Node Buffers are only 16-byte aligned, which O_DIRECT
// rejects (EINVAL); views of a WebAssembly.Memory are page-aligned, so slabs are
// carved from WebAssembly memories that are never grown (growing would detach
// the views). Buffers are handed out by size class (powers of two, >= 4 KiB) and
// returned with release(); each class keeps a bounded free list, and the pool
// bounds the total bytes it will hand out: acquire() waits (backpressure) when the
// budget is used up. This is the only place that hands out uninitialised memory;
// callers must overwrite or zero what they read back to a client.
import { assert, fail } from './assert.js';
import { TesseraError } from './errors.js';

const MIN_CLASS_BYTES = 4096;
const SLAB_BYTES = 16 * 1024 * 1024;
const WASM_PAGE_BYTES = 65536;

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private slab: Buffer | null = null;
  private slabUsedBytes = 0;
  private outstandingBytes = 0;
  private readonly waiters: Array<() => void> = [];

  /**
   * With shared, slabs are shared WebAssembly memories (SharedArrayBuffer): a worker
   * thread can then work on the buffers in place (io/node/block-worker.ts).
   */
  constructor(
    private readonly budgetBytes = 256 * 1024 * 1024,
    private readonly maxBufferBytes = 8 * 1024 * 1024,
    private readonly shared = false,
  ) {}

  static classBytes(sizeBytes: number): number {
    let c = MIN_CLASS_BYTES;
    while (c < sizeBytes) c *= 2;
    return c;
  }

  /** A page-aligned buffer of exactly `sizeBytes` (a view of a larger class buffer), or waits for budget. */
  async acquire(sizeBytes: number): Promise<Buffer> {
    const b = this.tryAcquire(sizeBytes);
    if (b) return b;
    if (this.waiters.length >= 4096) throw new TesseraError('ERR_LIMIT', 'buffer pool wait queue is full');
    for (;;) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
      const again = this.tryAcquire(sizeBytes);
      if (again) return again;
    }
  }

  tryAcquire(sizeBytes: number): Buffer | null {
    if (!(sizeBytes > 0 && sizeBytes <= this.maxBufferBytes)) fail(`buffer size ${sizeBytes} out of range`);
    const cls = BufferPool.classBytes(sizeBytes);
    if (this.outstandingBytes + cls > this.budgetBytes) return null;
    const list = this.free.get(cls);
    const whole = list && list.length > 0 ? list.pop()! : this.carve(cls);
    this.outstandingBytes += cls;
    return whole.subarray(0, sizeBytes);
  }

  release(buf: Buffer): void {
    const cls = BufferPool.classBytes(buf.length);
    const whole = Buffer.from(buf.buffer, buf.byteOffset, cls);
    this.outstandingBytes -= cls;
    assert(this.outstandingBytes >= 0, 'buffer pool released more than it handed out');
    let list = this.free.get(cls);
    if (!list) {
      list = [];
      this.free.set(cls, list);
    }
    if (list.length < 256) list.push(whole);
    const w = this.waiters.shift();
    if (w) w();
  }

  get outstanding(): number {
    return this.outstandingBytes;
  }

  private carve(cls: number): Buffer {
    if (cls >= SLAB_BYTES) return alignedBuffer(cls, this.shared);
    if (!this.slab || this.slabUsedBytes + cls > this.slab.length) {
      this.slab = alignedBuffer(SLAB_BYTES, this.shared);
      this.slabUsedBytes = 0;
    }
    const b = this.slab.subarray(this.slabUsedBytes, this.slabUsedBytes + cls);
    this.slabUsedBytes += cls;
    return b;
  }
}

/** A fresh page-aligned buffer backed by its own WebAssembly.Memory (zero-filled), shared between threads if asked. */
export function alignedBuffer(sizeBytes: number, shared = false): Buffer {
  const pages = Math.ceil(sizeBytes / WASM_PAGE_BYTES);
  const mem = new WebAssembly.Memory({ initial: pages, maximum: pages, shared });
  return Buffer.from(mem.buffer, 0, sizeBytes);
}
