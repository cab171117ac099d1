// ClusterPrStore: the PrStore (gateway/scsi/types.ts) of a gateway in a cluster.
// PR records live in the monitor (mon/pr-service.ts, whose header has the protocol
// and the argument why it is safe); this gateway keeps a copy of the records it
// follows and one long-poll loop that renews its lease and brings newer records.
//
// Invariants:
// - current(key) is a record only while this gateway's lease is vouched for: some
//   poll got an answer and now < (that poll's SEND time) + leaseMs − safetyMarginMs.
//   The monitor starts the lease no earlier than it received the poll, so this
//   gateway stops vouching before the monitor stops waiting for it; the margin
//   covers clock-rate differences. leaseMs comes from the monitor's answers (the
//   monitor is the authority; no configuration can disagree with it).
// - Every poll lists every key this gateway holds a record of, with its rev: that is
//   the acknowledgement a compare-and-set on another gateway waits for. Records are
//   applied (and listeners called) before the next poll is sent, so when another
//   gateway's compareAndSet resolves, this one's current() already has the new rev.
// - load() registers the follow at the monitor (GET ?gateway=) before it returns;
//   it resolves once the lease is vouched for, so current(key) is then a record.
// - compareAndSet sends a fresh op id, so MonClient may retry it (timeouts, monitor
//   failover) without turning an applied write into a spurious conflict. It works on
//   a key that was not loaded, but does not follow that key (call load() first).
// - One poll in flight at a time; failed polls are retried after a bounded backoff
//   (POLL_RETRY_MS_MIN..POLL_RETRY_MS_MAX). Records held are bounded by the
//   monitor's follow limit (it only sends keys this gateway follows there).
// - Time only from the injected Clock.
import { randomUUID } from 'node:crypto';
import { TesseraError } from '../../stdx/errors.js';
import { KeyedListeners } from '../../stdx/keyed-listeners.js';
import type { Logger } from '../../stdx/log.js';
import type { Clock, TimerHandle } from '../../io/clock.js';
import { nodeClock } from '../../io/node/clock.js';
import { MonClient } from '../../mon/client.js';
import type { PrWatchAnswer } from '../../mon/api-types.js';
import { checkPrKey, PR_LEASE_MS_DEFAULT, prStateText } from '../../mon/pr-service.js';
import type { PrCasResult, PrRecord, PrStore } from './types.js';

export const SAFETY_MARGIN_MS_DEFAULT = 500;
export const LOAD_TIMEOUT_MS_DEFAULT = 10_000;
const POLL_RETRY_MS_MIN = 50;
const POLL_RETRY_MS_MAX = 500;
/** Per-request timeout of the GET and DELETE calls. */
const REQUEST_TIMEOUT_MS = 3000;
/** close() waits at most this long for the monitor to end the lease. */
const RELEASE_TIMEOUT_MS = 1000;

export interface ClusterPrStoreOptions {
  /** Monitor API addresses ("host:port"). */
  monitors: string[];
  authToken?: string;
  /** This gateway process's id at the monitor; default a random UUID (new at every start). */
  gatewayId?: string;
  clock?: Clock;
  /** current() stops vouching this long before the lease (from the poll's send time) ends; default 500. */
  safetyMarginMs?: number;
  /** load() fails with ERR_TIMEOUT when no poll confirms the lease within this; default 10 s. */
  loadTimeoutMs?: number;
  /** Per-request timeout of a compare-and-set; default 2 × leaseMs + 5 s (failover hold + acknowledgements). */
  casTimeoutMs?: number;
  log?: Logger;
}

interface ValidityWaiter {
  resolve: () => void;
  reject: (err: unknown) => void;
  timer: TimerHandle;
}

export class ClusterPrStore implements PrStore {
  readonly gatewayId: string;
  private readonly mon: MonClient;
  private readonly casMon: MonClient;
  private readonly pollMon: MonClient;
  private readonly clock: Clock;
  private readonly marginMs: number;
  private readonly loadTimeoutMs: number;
  private readonly casTimeoutMs: number | undefined;
  private readonly log: Logger | undefined;

  /** Newest record seen of every key the monitor told us about (acknowledged in each poll). */
  private readonly records = new Map<string, PrRecord>();
  /** Keys load() completed for: only these are current(). */
  private readonly loaded = new Set<string>();
  private readonly loads = new Map<string, Promise<void>>();
  private readonly listeners = new KeyedListeners<PrRecord>();
  private readonly validityWaiters = new Set<ValidityWaiter>();
  /** From the monitor's answers; null before the first one. */
  private leaseMs: number | null = null;
  /** Send time of the newest poll that got an answer. */
  private lastOkSentMs = -Infinity;
  private started = false;
  private closed = false;
  private healthy = true;
  private sleepTimer: TimerHandle | null = null;
  private wakeSleep: (() => void) | null = null;

  constructor(opts: ClusterPrStoreOptions) {
    this.gatewayId = opts.gatewayId ?? randomUUID();
    this.clock = opts.clock ?? nodeClock;
    this.marginMs = opts.safetyMarginMs ?? SAFETY_MARGIN_MS_DEFAULT;
    if (!(this.marginMs >= 0)) throw new TesseraError('ERR_INVALID', `safetyMarginMs must be >= 0, got ${this.marginMs}`);
    this.loadTimeoutMs = opts.loadTimeoutMs ?? LOAD_TIMEOUT_MS_DEFAULT;
    this.casTimeoutMs = opts.casTimeoutMs;
    this.log = opts.log;
    this.mon = new MonClient({ addrs: opts.monitors, authToken: opts.authToken, clock: this.clock, requestTimeoutMs: REQUEST_TIMEOUT_MS });
    // Polls fail fast (each address twice) so the loop's own retry sends a fresh one
    // (a vouching window counts from a poll's send time).
    this.pollMon = new MonClient({ addrs: opts.monitors, authToken: opts.authToken, clock: this.clock, attemptsMax: 2 * opts.monitors.length, retryDelayMs: 50 });
    // A PR OUT waits on its compare-and-set: a few attempts (each address twice), not
    // the default budget of minutes, then the gate answers NOT READY and the
    // initiator retries; the op id makes a retried CAS idempotent at the monitor.
    this.casMon = new MonClient({ addrs: opts.monitors, authToken: opts.authToken, clock: this.clock, requestTimeoutMs: REQUEST_TIMEOUT_MS, attemptsMax: 2 * opts.monitors.length, retryDelayMs: 100 });
  }

  current(key: string): PrRecord | 'unavailable' {
    if (this.closed || !this.loaded.has(key) || !this.vouched()) return 'unavailable';
    return this.records.get(key) ?? 'unavailable';
  }

  async load(key: string): Promise<PrRecord> {
    checkPrKey(key);
    this.checkOpen();
    this.startLoop();
    if (!this.loaded.has(key)) {
      let p = this.loads.get(key);
      if (p === undefined) {
        const loadP = this.fetchAndFollow(key);
        p = loadP;
        this.loads.set(key, loadP);
        const forget = (): void => {
          if (this.loads.get(key) === loadP) this.loads.delete(key);
        };
        loadP.then(forget, forget);
      }
      await p;
    }
    await this.whenVouched();
    const rec = this.records.get(key);
    if (rec === undefined) throw new TesseraError('ERR_CLOSED', 'PR store closed while loading');
    return rec;
  }

  async compareAndSet(key: string, expectRev: number, state: unknown): Promise<PrCasResult> {
    checkPrKey(key);
    this.checkOpen();
    const stateText = prStateText(state);
    const timeoutMs = this.casTimeoutMs ?? 2 * (this.leaseMs ?? PR_LEASE_MS_DEFAULT) + 5000;
    const a = await this.casMon.prCompareAndSet(key, { expectRev, state, op: randomUUID() }, timeoutMs);
    const rec: PrRecord = a.ok ? { rev: a.rev, state: JSON.parse(stateText) as unknown } : { rev: a.current.rev, state: a.current.state };
    // Only keys this gateway follows are kept: every kept key is listed in each poll,
    // and the monitor bounds the keys a gateway follows (a poll over it would fail).
    if (this.loaded.has(key) || this.loads.has(key)) this.apply(key, rec);
    return a.ok ? { ok: true, rev: a.rev } : { ok: false, current: rec };
  }

  subscribe(key: string, listener: (rec: PrRecord) => void): () => void {
    return this.listeners.add(key, listener);
  }

  /** Stops the loop and ends the lease at the monitor (best effort). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const err = new TesseraError('ERR_CLOSED', 'PR store closed');
    for (const w of [...this.validityWaiters]) {
      w.timer.cancel();
      w.reject(err);
    }
    this.validityWaiters.clear();
    this.sleepTimer?.cancel();
    this.wakeSleep?.();
    if (this.started) await this.pollMon.prRelease(this.gatewayId, RELEASE_TIMEOUT_MS).catch(() => undefined);
  }

  // ---------- internals ----------

  private checkOpen(): void {
    if (this.closed) throw new TesseraError('ERR_CLOSED', 'PR store closed');
  }

  private vouched(): boolean {
    return this.leaseMs !== null && this.clock.nowMs() < this.lastOkSentMs + this.leaseMs - this.marginMs;
  }

  private async fetchAndFollow(key: string): Promise<void> {
    const a = await this.mon.prGet(key, this.gatewayId);
    this.checkOpen();
    // Not a lease renewal for our purposes: only a poll answer covers every followed key.
    this.apply(key, { rev: a.rev, state: a.state });
    this.loaded.add(key);
  }

  private whenVouched(): Promise<void> {
    if (this.vouched()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w: ValidityWaiter = {
        resolve,
        reject,
        timer: this.clock.setTimer(this.loadTimeoutMs, () => {
          this.validityWaiters.delete(w);
          reject(new TesseraError('ERR_TIMEOUT', `no monitor confirmed gateway ${this.gatewayId}'s PR lease within ${this.loadTimeoutMs} ms`));
        }),
      };
      this.validityWaiters.add(w);
    });
  }

  /** Keeps the newer record and tells the key's listeners. */
  private apply(key: string, rec: PrRecord): void {
    const cur = this.records.get(key);
    if (cur !== undefined && cur.rev >= rec.rev) return;
    this.records.set(key, rec);
    this.listeners.emit(key, rec, (err) => this.log?.error(`PR listener for ${key} threw: ${(err as Error).stack ?? String(err)}`));
  }

  private startLoop(): void {
    if (this.started) return;
    this.started = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    let delayMs = POLL_RETRY_MS_MIN;
    while (!this.closed) {
      const sentMs = this.clock.nowMs();
      const known = [...this.records].map(([k, r]) => [k, r.rev] as const);
      const leaseMs = this.leaseMs;
      // Two poll cycles must fit in one vouching window (leaseMs − margin). After a failed
      // poll the lease is running out: ask for an answer at once, not a long poll.
      const waitMs = leaseMs === null || !this.healthy ? 0 : Math.max(0, Math.floor((leaseMs - this.marginMs) / 3));
      let a: PrWatchAnswer;
      try {
        a = await this.pollMon.prWatch(this.gatewayId, known, waitMs, waitMs + (leaseMs ?? PR_LEASE_MS_DEFAULT));
      } catch (err) {
        if (this.closed) break;
        if (this.healthy) this.log?.warn(`PR lease poll failed (retrying): ${(err as Error).message}`);
        this.healthy = false;
        await this.sleep(delayMs);
        delayMs = Math.min(2 * delayMs, POLL_RETRY_MS_MAX);
        continue;
      }
      if (this.closed) break;
      delayMs = POLL_RETRY_MS_MIN;
      if (!this.healthy) this.log?.info('PR lease poll works again');
      this.healthy = true;
      this.onAnswer(a, sentMs);
    }
  }

  private onAnswer(a: PrWatchAnswer, sentMs: number): void {
    if (a.leaseMs <= this.marginMs && this.leaseMs !== a.leaseMs) {
      this.log?.error(`the monitor's PR lease (${a.leaseMs} ms) is not longer than this gateway's safety margin (${this.marginMs} ms): PR state is never usable`);
    }
    this.leaseMs = a.leaseMs;
    for (const r of a.records) this.apply(r.key, { rev: r.rev, state: r.state });
    this.lastOkSentMs = Math.max(this.lastOkSentMs, sentMs);
    if (!this.vouched()) return;
    for (const w of [...this.validityWaiters]) {
      w.timer.cancel();
      w.resolve();
    }
    this.validityWaiters.clear();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.sleepTimer = null;
        this.wakeSleep = null;
        resolve();
      };
      this.sleepTimer = this.clock.setTimer(ms, done);
      this.wakeSleep = done;
    });
  }
}
