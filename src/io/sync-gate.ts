// When a small page-cache IO may run synchronously on the event-loop thread
// (io/node/file-device.ts) and when it must go to libuv's thread pool instead.
// Pure: time comes from the caller, so the policy is tested without a disk.
//
// A synchronous IO saves the pool's hand-off (a futex wake-up, a context switch
// each way, a completion callback), but while it waits for the disk the whole
// event loop stands still. Each gate watches the IOs it let through and closes
// for `backoffMs` when they stall the loop too much; then it opens again and
// measures afresh.
//
// Two policies, because reads and writes stall differently:
// - 'count' (reads): a page-cache miss waits for the disk every time, and at
//   queue depth the pool overlaps those waits. So a few slow IOs in a row close
//   the gate: each slow one adds 1 to a score, each fast one takes 1/32 off, and
//   the score reaching `slowBudget` closes it.
// - 'stall' (writes): a buffered write waits only now and then (a page-cache
//   folio locked by writeback; dirty throttling), and the pool's hand-off costs
//   every write more than those waits cost the loop on average. A 3-OSD cluster
//   at QD32 blocked in ~3 % of its inline writes for 0.15-2 ms, which tripped
//   the 'count' gate and sent ~85 % of writes to the pool; forcing them inline
//   used ~11 % less OSD CPU per write (session 14, docs/benchmarks.md). So this
//   gate closes only when slow IOs held the loop for more than
//   `stallBudgetFraction` of a `windowMs` window (sustained throttling or a
//   slow disk), or one of them for longer than that budget.
//
// Invariants: `allowed(now)` is false exactly while now < closedUntilMs; a
// closed gate counts nothing (the IOs it refuses run on the pool, unmeasured);
// fast IOs (<= slowUs) never close a gate.

export interface SyncGateOptions {
  policy: 'count' | 'stall';
  /** An IO slower than this most likely waited for the disk or a lock. */
  slowUs: number;
  /** How long a closed gate stays closed. */
  backoffMs: number;
  /** 'count': slow IOs (net of the fast ones' decay) that close the gate. */
  slowBudget?: number;
  /** 'stall': length of one measuring window. */
  windowMs?: number;
  /** 'stall': share of a window that slow IOs may hold the loop. */
  stallBudgetFraction?: number;
}

export class SyncGate {
  private closedUntilMs = 0;
  private slowScore = 0;
  private windowStartMs = Number.NEGATIVE_INFINITY;
  private stalledUs = 0;
  /** Times the gate closed (tests, stats). */
  closings = 0;

  constructor(private readonly o: SyncGateOptions) {
    if (!(o.slowUs > 0 && o.backoffMs > 0)) throw new RangeError(`SyncGate: slowUs ${o.slowUs}, backoffMs ${o.backoffMs}`);
    if (o.policy === 'count' && !(o.slowBudget !== undefined && o.slowBudget >= 1)) throw new RangeError(`SyncGate: slowBudget ${o.slowBudget}`);
    if (o.policy === 'stall' && !(o.windowMs !== undefined && o.windowMs > 0 && o.stallBudgetFraction !== undefined && o.stallBudgetFraction > 0 && o.stallBudgetFraction < 1)) {
      throw new RangeError(`SyncGate: windowMs ${o.windowMs}, stallBudgetFraction ${o.stallBudgetFraction}`);
    }
  }

  /** May the next IO run synchronously? */
  allowed(nowMs: number): boolean {
    if (this.closedUntilMs === 0) return true;
    if (nowMs < this.closedUntilMs) return false;
    this.closedUntilMs = 0;
    this.slowScore = 0;
    this.windowStartMs = Number.NEGATIVE_INFINITY;
    return true;
  }

  /** A synchronous IO finished at nowMs after latencyUs of wall time. */
  note(latencyUs: number, nowMs: number): void {
    if (this.o.policy === 'count') this.noteCount(latencyUs, nowMs);
    else this.noteStall(latencyUs, nowMs);
  }

  private noteCount(latencyUs: number, nowMs: number): void {
    if (latencyUs > this.o.slowUs) {
      if (++this.slowScore >= this.o.slowBudget!) this.close(nowMs);
    } else if (this.slowScore > 0) {
      this.slowScore = Math.max(0, this.slowScore - 1 / 32);
    }
  }

  private noteStall(latencyUs: number, nowMs: number): void {
    const windowMs = this.o.windowMs!;
    if (nowMs - this.windowStartMs >= windowMs) {
      this.windowStartMs = nowMs;
      this.stalledUs = 0;
    }
    if (latencyUs <= this.o.slowUs) return;
    this.stalledUs += latencyUs;
    if (this.stalledUs > this.o.stallBudgetFraction! * windowMs * 1000) this.close(nowMs);
  }

  private close(nowMs: number): void {
    this.closedUntilMs = nowMs + this.o.backoffMs;
    this.slowScore = 0;
    this.stalledUs = 0;
    this.closings++;
  }
}
