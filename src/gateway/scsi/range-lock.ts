// An LBA range lock inside one LU, so COMPARE AND WRITE is atomic with respect to
// every other write to an overlapping range (SBC-4 5.3: no other command may change
// the blocks between the compare and the write). Writes take shared holds (they never
// wait for each other: SCSI orders nothing between concurrent writes); COMPARE AND
// WRITE and ORWRITE (a read-modify-write) take exclusive holds.
//
// Invariants:
// - A hold is registered synchronously when a command starts, and gets a sequence
//   number; it waits only for conflicting holds registered before it. So waiting is
//   first-come-first-served per range and cannot deadlock (every wait points at a
//   smaller sequence number), and a CAW cannot be starved by a stream of writes.
// - Shared vs shared never conflicts; exclusive conflicts with any overlap.
// - The fast path (no exclusive hold anywhere) costs one small object and a Set
//   insert/delete per write, and no promise.
// - Only this gateway's commands are covered: CAW atomicity across gateways exporting
//   the same volume would need the volume itself to compare-and-write.

export class RangeHold {
  /** Resolvers of commands waiting for this hold to be released. */
  waiters: Array<() => void> | null = null;
  constructor(
    readonly startLba: number,
    readonly endLba: number,
    readonly exclusive: boolean,
    readonly seq: number,
  ) {}
}

export class RangeLock {
  private readonly holds = new Set<RangeHold>();
  private nextSeq = 0;
  private exclusiveHolds = 0;

  /** Registers a hold on [startLba, endLba). Check ready() before the IO; wait() if not. */
  enter(startLba: number, endLba: number, exclusive: boolean): RangeHold {
    const h = new RangeHold(startLba, endLba, exclusive, this.nextSeq++);
    this.holds.add(h);
    if (exclusive) this.exclusiveHolds++;
    return h;
  }

  /** True when no earlier conflicting hold exists. */
  ready(h: RangeHold): boolean {
    if (!h.exclusive && this.exclusiveHolds === 0) return true;
    return this.blocker(h) === null;
  }

  /** Resolves once every earlier conflicting hold was released. */
  async wait(h: RangeHold): Promise<void> {
    for (let b = this.blocker(h); b !== null; b = this.blocker(h)) {
      const blocker = b;
      await new Promise<void>((resolve) => (blocker.waiters ??= []).push(resolve));
    }
  }

  leave(h: RangeHold): void {
    if (!this.holds.delete(h)) return;
    if (h.exclusive) this.exclusiveHolds--;
    const w = h.waiters;
    if (w !== null) {
      h.waiters = null;
      for (const resolve of w) resolve();
    }
  }

  /** Holds currently registered (tests, stats). */
  get size(): number {
    return this.holds.size;
  }

  private blocker(h: RangeHold): RangeHold | null {
    // Set iteration is insertion order = sequence order: stop at h itself.
    for (const o of this.holds) {
      if (o === h) break;
      if (!h.exclusive && !o.exclusive) continue;
      if (o.startLba < h.endLba && h.startLba < o.endLba) return o;
    }
    return null;
  }
}
