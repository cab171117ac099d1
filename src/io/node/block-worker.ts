// WorkerBlockCodec: a BlockCodec (engine/block-codec.ts) that seals and checks runs
// of at least minBlocks blocks in one worker thread, so that the crc32c of large
// IOs (and the copy of their data in or out) runs on another core than the event
// loop. Buffers, and the run's data if any, must live in shared memory (BufferPool
// with shared: true, BufferRecycler with shared: true); other buffers, small runs,
// and runs beyond inFlightMax are left to the engine's thread (offloads() says false).
//
// Invariants:
// - the worker is referenced (keeps the process alive) only while a run is pending;
// - if the worker fails or exits, every pending run and every later one is done in
//   this thread: sealing is idempotent, and checking writes only what follows from
//   the verdict and unchanged bytes (copied-out or zeroed data), so redoing a run the
//   worker had half done is safe once the worker no longer runs (close() waits for
//   terminate() first). The failure is logged once.
// - a reply for an unknown id is a bug: asserted.
import { Worker } from 'node:worker_threads';
import { assert } from '../../stdx/assert.js';
import type { LogFn } from '../../stdx/log.js';
import { checkRun, checkTrailerRun, sealRun, sealTrailerRun, type BlockCodec, type BlockRun } from '../../engine/block-codec.js';
import type { BlockWorkerOp, BlockWorkerReply, BlockWorkerRequest } from './block-worker-main.js';

/** Runs shorter than this stay in the engine's thread: a round trip costs ~20 us of CPU. */
export const OFFLOAD_MIN_BLOCKS_DEFAULT = 16;
/** Runs in flight at the worker; beyond, the engine's thread works too (a bounded queue). */
export const OFFLOAD_IN_FLIGHT_MAX_DEFAULT = 64;

interface Pending {
  op: BlockWorkerOp;
  buf: Buffer;
  n: number;
  run: BlockRun;
  data: Buffer | undefined;
  resolve: (statuses: Uint8Array | undefined) => void;
}

export interface WorkerBlockCodecOptions {
  minBlocks?: number;
  inFlightMax?: number;
  log?: LogFn;
}

export class WorkerBlockCodec implements BlockCodec {
  private worker: Worker | null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private readonly minBlocks: number;
  private readonly inFlightMax: number;
  private readonly log: LogFn;
  private closing = false;
  /** Runs done by the worker, and runs done here after a worker failure. */
  offloadedRuns = 0;
  fallbackRuns = 0;

  constructor(opts: WorkerBlockCodecOptions = {}) {
    this.minBlocks = opts.minBlocks ?? OFFLOAD_MIN_BLOCKS_DEFAULT;
    this.inFlightMax = opts.inFlightMax ?? OFFLOAD_IN_FLIGHT_MAX_DEFAULT;
    this.log = opts.log ?? (() => undefined);
    const w = new Worker(new URL('./block-worker-main.js', import.meta.url));
    w.on('message', (m: BlockWorkerReply) => this.onReply(m));
    w.on('error', (err) => this.lose(`failed: ${err.stack ?? err.message}`));
    w.on('exit', (code) => this.lose(`exited with code ${code}`));
    // After the listeners: adding a 'message' listener refs the worker's port again.
    w.unref();
    this.worker = w;
  }

  offloads(buf: Buffer, n: number, data?: Buffer): boolean {
    return this.worker !== null && n >= this.minBlocks && this.pending.size < this.inFlightMax && isShared(buf) && (data === undefined || isShared(data));
  }

  async sealBlocks(buf: Buffer, n: number, run: BlockRun, data?: Buffer): Promise<void> {
    await this.submit(0, buf, n, run, data);
  }

  async checkBlocks(buf: Buffer, n: number, run: BlockRun, data?: Buffer): Promise<Uint8Array> {
    const statuses = await this.submit(1, buf, n, run, data);
    assert(statuses !== undefined && statuses.length === n, 'block worker answered a check without one status per block');
    return statuses;
  }

  async sealTrailers(trailers: Buffer, n: number, run: BlockRun, data: Buffer): Promise<void> {
    await this.submit(2, trailers, n, run, data);
  }

  async checkTrailers(trailers: Buffer, n: number, run: BlockRun, data: Buffer): Promise<Uint8Array> {
    const statuses = await this.submit(3, trailers, n, run, data);
    assert(statuses !== undefined && statuses.length === n, 'block worker answered a check without one status per block');
    return statuses;
  }

  /**
   * Ends the worker; pending and later runs are done in this thread. Pending runs are
   * redone only once the thread has stopped: until then it may still be sealing one
   * of their buffers (review, session 8).
   */
  async close(): Promise<void> {
    const w = this.worker;
    if (w === null || this.closing) return;
    this.closing = true;
    this.worker = null; // later runs: in this thread
    await w.terminate();
    this.redoPending();
  }

  private submit(op: BlockWorkerOp, buf: Buffer, n: number, run: BlockRun, data: Buffer | undefined): Promise<Uint8Array | undefined> {
    const w = this.worker;
    if (w === null || !isShared(buf) || (data !== undefined && !isShared(data))) return Promise.resolve(this.inline(op, buf, n, run, data));
    const id = this.nextId++;
    if (this.pending.size === 0) w.ref();
    const p = new Promise<Uint8Array | undefined>((resolve) => this.pending.set(id, { op, buf, n, run, data, resolve }));
    const req: BlockWorkerRequest = {
      id,
      op,
      mem: buf.buffer as SharedArrayBuffer,
      byteOffset: buf.byteOffset,
      n,
      volumeId: run.volumeId,
      objectIndex: run.objectIndex,
      firstBlock: run.firstBlock,
      generation: run.generation,
      data: data === undefined ? null : (data.buffer as SharedArrayBuffer),
      dataByteOffset: data === undefined ? 0 : data.byteOffset,
    };
    w.postMessage(req);
    return p;
  }

  private onReply(m: BlockWorkerReply): void {
    if (this.closing) return; // close() redoes every pending run once the thread stopped
    const p = this.pending.get(m.id);
    assert(p !== undefined, `block worker answered unknown run ${m.id}`);
    this.pending.delete(m.id);
    if (this.pending.size === 0) this.worker?.unref();
    if ('error' in m) {
      this.log('error', `block worker: run ${m.id} failed (done in the main thread instead): ${m.error}`);
      p.resolve(this.inline(p.op, p.buf, p.n, p.run, p.data));
      return;
    }
    this.offloadedRuns++;
    p.resolve(m.statuses);
  }

  /** The worker thread failed or exited (it runs no more): everything pending is done here, and so is everything later. */
  private lose(why: string): void {
    if (this.worker === null || this.closing) return;
    this.worker = null;
    this.log('error', `block worker ${why}; sealing and checking continue in the main thread`);
    this.redoPending();
  }

  private redoPending(): void {
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.resolve(this.inline(p.op, p.buf, p.n, p.run, p.data));
    }
  }

  private inline(op: BlockWorkerOp, buf: Buffer, n: number, run: BlockRun, data: Buffer | undefined): Uint8Array | undefined {
    this.fallbackRuns++;
    if (op === 0) sealRun(buf, n, run, data);
    else if (op === 2) sealTrailerRun(buf, n, run, data!);
    if (op === 0 || op === 2) return undefined;
    const statuses = new Uint8Array(n);
    if (op === 1) checkRun(buf, n, run, statuses, data);
    else checkTrailerRun(buf, n, run, statuses, data!);
    return statuses;
  }
}

function isShared(b: Buffer): boolean {
  return b.buffer instanceof SharedArrayBuffer;
}

let shared: WorkerBlockCodec | null = null;

/** The process's one WorkerBlockCodec (created at first use; its worker never holds the process). */
export function sharedBlockCodec(log?: LogFn): WorkerBlockCodec {
  shared ??= new WorkerBlockCodec({ log });
  return shared;
}
