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
// - Sessions report each connection's first request in flight (busy) and its
//   last one answered (quiet), one quiet per busy. A window opens only when
//   no connection of the process has a request in flight and the quiet
//   connection stays open: while any request waits on the OSDs, their CPU
//   is left to them.
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
// - The policy is pure (clock and defer injected; the defaults are
//   performance.now and setImmediate, no file or socket IO), so it lives with
//   the gateway and config.ts can share its limits without importing from io/.
import { assert } from '../stdx/assert.js';

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

/** What a protocol session reports (GatewayTcpServer hands one to each session). */
export interface QuietHooks {
  /** The connection's first request is in flight (its in-flight count went 0 -> 1). */
  busy(): void;
  /** Its last request was answered (1 -> 0); `stayOpen` false when the connection is closing or closed. */
  quiet(stayOpen: boolean): void;
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
  /** Connections with a request in flight (busy() minus quiet()). */
  private busyConnections = 0;
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

  /** Connections of the process with a request in flight. */
  get busyCount(): number {
    return this.busyConnections;
  }

  /** QuietHooks.busy of one connection. */
  busy(): void {
    this.busyConnections++;
  }

  /** QuietHooks.quiet of one connection: opens a window if it stays open and no other connection has work in flight. */
  quiet(stayOpen: boolean): void {
    assert(this.busyConnections > 0, 'idle poll: quiet() without busy()');
    this.busyConnections--;
    if (stayOpen && this.busyConnections === 0) this.poke();
  }

  /** Opens (or extends) a window now: the next request is likely close. */
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
