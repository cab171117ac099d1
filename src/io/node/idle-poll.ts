// Idle polling for the gateway (NBD, iSCSI): after the last in-flight request
// of a connection is answered, keep the event loop turning (setImmediate, so
// libuv polls its sockets with a zero timeout) for a short window instead of
// letting the process sleep in epoll_wait.
//
// Why: at queue depth 1 the client sends its next request a few tens of
// microseconds after our reply. If the gateway's thread is asleep by then, the
// request waits for the kernel to wake it, which in a virtual machine means a
// halted vCPU woken by an inter-processor interrupt: on the 2-vCPU benchmark VM
// that wake-up was a third of a 4 KiB iSCSI read's round trip (docs/benchmarks.md,
// run P). Polling keeps the thread on its vCPU, so the request is read the moment
// it lands. SPDK and Vitastor poll all the time; this polls only in the window
// after a reply and only while it pays.
//
// Invariants:
// - Nothing polls unless poke() was called within the last `windowUs`; the
//   process sleeps as before when idle for longer.
// - A request arriving (noteArrival) ends the window at once: a request that
//   goes to the OSDs is answered on their reply, and spinning meanwhile would
//   take the CPU they need (the cluster's processes share the machine's cores).
// - Adaptive: a window that ends without a request is a miss; after
//   MISSES_BEFORE_BACKOFF misses in a row only one poke in BACKOFF_POKES opens
//   a window, until a window catches a request again. A client whose requests
//   come just too late for the window therefore costs at most
//   1/BACKOFF_POKES of the windows.
// - windowUs 0 turns polling off (every call is a no-op).
// - At most one setImmediate is pending at any time.

/** Misses in a row after which polling backs off. */
export const MISSES_BEFORE_BACKOFF = 4;
/** While backed off, one poke in this many opens a window (a probe). */
export const BACKOFF_POKES = 16;
/** Upper bound of the window: polling longer than this is a busy loop, not a latency trick. */
export const IDLE_POLL_US_MAX = 10_000;
/** Default window (`--idle-poll-us`): covers a loopback client's turnaround with room to spare. */
export const IDLE_POLL_US_DEFAULT = 100;

export interface IdlePollDeps {
  /** Monotonic time in milliseconds with sub-millisecond precision. */
  nowMs(): number;
  /** Runs `fn` after the event loop has polled for IO once (setImmediate). */
  defer(fn: () => void): void;
}

export interface IdlePollStats {
  /** Windows opened by poke(). */
  windows: number;
  /** Windows in which a request arrived. */
  hits: number;
  /** Windows that ended without one. */
  misses: number;
  /** Pokes ignored while backed off. */
  skipped: number;
}

const realDeps: IdlePollDeps = {
  nowMs: () => performance.now(),
  defer: (fn) => setImmediate(fn),
};

export class IdlePoll {
  readonly stats: IdlePollStats = { windows: 0, hits: 0, misses: 0, skipped: 0 };
  private readonly windowMs: number;
  /** End of the open window (ms); 0 when none is open. */
  private deadlineMs = 0;
  private stepPending = false;
  private missesInRow = 0;
  private pokesWhileBackedOff = 0;
  private readonly step = (): void => this.onStep();

  constructor(
    readonly windowUs: number,
    private readonly deps: IdlePollDeps = realDeps,
  ) {
    if (!(Number.isInteger(windowUs) && windowUs >= 0 && windowUs <= IDLE_POLL_US_MAX)) {
      throw new RangeError(`idle poll window ${windowUs} us must be an integer in 0..${IDLE_POLL_US_MAX}`);
    }
    this.windowMs = windowUs / 1000;
  }

  /** A window is open: the loop is being kept awake. */
  get polling(): boolean {
    return this.deadlineMs !== 0;
  }

  /** A connection has nothing in flight any more: its client's next request is likely close. */
  poke(): void {
    if (this.windowMs === 0) return;
    if (this.missesInRow >= MISSES_BEFORE_BACKOFF) {
      this.pokesWhileBackedOff++;
      if (this.pokesWhileBackedOff % BACKOFF_POKES !== 0) {
        this.stats.skipped++;
        return;
      }
    }
    if (this.deadlineMs === 0) this.stats.windows++;
    this.deadlineMs = this.deps.nowMs() + this.windowMs;
    if (!this.stepPending) {
      this.stepPending = true;
      this.deps.defer(this.step);
    }
  }

  /** A request arrived on some connection: a window open now caught it, and closes. */
  noteArrival(): void {
    if (this.deadlineMs === 0) return;
    this.deadlineMs = 0;
    this.stats.hits++;
    this.missesInRow = 0;
    this.pokesWhileBackedOff = 0;
  }

  private onStep(): void {
    this.stepPending = false;
    if (this.deadlineMs === 0) return;
    if (this.deps.nowMs() < this.deadlineMs) {
      this.stepPending = true;
      this.deps.defer(this.step);
      return;
    }
    this.deadlineMs = 0;
    this.stats.misses++;
    this.missesInRow++;
  }
}
