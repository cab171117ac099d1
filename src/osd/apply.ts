// Applies a PG's committed entries to the object store in log order while
// letting non-overlapping entries run concurrently: an entry starts only when no
// earlier, still running entry touches the same blocks (FIFO: a blocked entry
// also holds back every later one, so overlapping writes land in log order).
//
// Invariants: doneIndex is the highest index such that every entry <= it has
// completed; reads served at a ReadIndex wait for doneIndex >= that index.
// In flight entries are bounded (APPLY_IN_FLIGHT_MAX). An apply failure is
// reported once through onFatal (the replica's state can no longer be trusted).
// While a snapshot is being installed the queue is paused: queued entries are
// dropped (the snapshot supersedes them), nothing new starts, and the install
// replaces the PG's data only once no entry is running (a write still in flight
// would land on top of the snapshot's newer data).
import type { Entry } from '../raft/types.js';
import { assert, fail } from '../stdx/assert.js';
import { decodeOp, OpKind, type Op } from './op.js';
import type { ObjectStore } from './objects.js';

export const APPLY_IN_FLIGHT_MAX = 64;

interface Running {
  index: number;
  volumeId: number;
  start: number;
  end: number;
}

export class ApplyQueue {
  doneIndex: number;
  private readonly queue: Entry[] = [];
  private readonly running = new Map<number, Running>();
  private readonly completed = new Set<number>();
  private readonly waiters: { index: number; cb: () => void }[] = [];
  private failed = false;
  private paused = false;
  private idleWaiters: (() => void)[] = [];
  /**
   * Told of every range written (or zeroed) once the store write resolved,
   * before the entry counts as applied; null when nobody listens (the snapshot
   * sender tracks what changed behind a copy: snapshot.ts).
   */
  onWritten: ((volumeId: number, startBytes: number, endBytes: number) => void) | null = null;

  constructor(
    private readonly store: ObjectStore,
    startIndex: number,
    /** Called for each entry once applied (after the object store write resolved). */
    private readonly onApplied: (e: Entry) => void,
    private readonly onFatal: (err: Error) => void,
  ) {
    this.doneIndex = startIndex;
  }

  get idle(): boolean {
    return this.queue.length === 0 && this.running.size === 0;
  }

  /** Entries must arrive in index order, contiguous after what was pushed before. Dropped while paused. */
  push(entries: readonly Entry[]): void {
    if (this.paused) return;
    for (const e of entries) this.queue.push(e);
    this.pump();
  }

  /**
   * A snapshot install begins: drops the queued entries, starts nothing new until
   * reset(), and resolves once no entry is running any more.
   */
  pause(): Promise<void> {
    this.paused = true;
    this.queue.length = 0;
    if (this.running.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** A snapshot replaced the state (after pause() resolved): the queue resumes at index. */
  reset(index: number): void {
    if (!(this.running.size === 0)) fail(`apply reset to ${index} with ${this.running.size} entries still running`);
    this.paused = false;
    this.queue.length = 0;
    this.completed.clear();
    this.doneIndex = index;
    this.wake();
  }

  /** Runs cb once doneIndex >= index. */
  whenDone(index: number, cb: () => void): void {
    if (this.doneIndex >= index) cb();
    else this.waiters.push({ index, cb });
  }

  private pump(): void {
    while (this.queue.length > 0 && this.running.size < APPLY_IN_FLIGHT_MAX && !this.failed && !this.paused) {
      const e = this.queue[0];
      let op: Op | null = null;
      if (e.type !== 'conf') {
        try {
          op = decodeOp(e.data);
        } catch (err) {
          this.fail(err as Error);
          return;
        }
      }
      if (op && this.overlaps(op)) return;
      this.queue.shift();
      if (!op) {
        this.finish(e);
        continue;
      }
      const r: Running = { index: e.index, volumeId: op.volumeId, start: op.offsetBytes, end: op.offsetBytes + op.lengthBytes };
      this.running.set(e.index, r);
      const p =
        op.kind === OpKind.Write
          ? this.store.write(op.volumeId, op.offsetBytes, op.data as Buffer)
          : this.store.zero(op.volumeId, op.offsetBytes, op.lengthBytes, op.kind === OpKind.ZeroTrim);
      p.then(
        () => {
          this.running.delete(e.index);
          this.onWritten?.(r.volumeId, r.start, r.end);
          this.finish(e);
          if (this.running.size === 0 && this.idleWaiters.length > 0) for (const w of this.idleWaiters.splice(0)) w();
          this.pump();
        },
        (err: Error) => this.fail(err),
      );
    }
  }

  private overlaps(op: Op): boolean {
    const end = op.offsetBytes + op.lengthBytes;
    for (const r of this.running.values()) {
      if (r.volumeId === op.volumeId && r.start < end && op.offsetBytes < r.end) return true;
    }
    return false;
  }

  private finish(e: Entry): void {
    this.completed.add(e.index);
    this.onApplied(e);
    while (this.completed.delete(this.doneIndex + 1)) this.doneIndex++;
    this.wake();
  }

  private wake(): void {
    if (this.waiters.length === 0) return;
    for (let k = 0; k < this.waiters.length; ) {
      if (this.waiters[k].index <= this.doneIndex) {
        const w = this.waiters[k];
        this.waiters.splice(k, 1);
        w.cb();
      } else k++;
    }
  }

  private fail(err: Error): void {
    if (this.failed) return;
    this.failed = true;
    this.onFatal(err);
  }
}
