// The client's copy of the cluster map (SPEC CLU1, CLU6): the current
// ClusterMap with O(1) indexes (OSD, pool, volume by id and name), followed by
// MonApi.waitMap long polls, plus per-PG leader hints for routing.
//
// Invariants:
// - The held map's epoch only grows: a map is installed only if its epoch is
//   greater than the current one, whoever fetched it (follow loop or refresh).
// - Listeners run synchronously after a new map is installed, in registration
//   order; a throwing listener is logged and does not stop the others.
// - A leader hint is valid for one PG epoch: when a PG's epoch changes (its
//   acting set moved) the hint resets to 0, which routes to the PG's first OSD
//   (the primary, preferred raft leader). Hints learnt for an older PG epoch are
//   ignored.
// - The follow loop makes one MonApi call at a time and backs off (capped,
//   doubling) on errors; close() stops it: a long poll in progress is not
//   cancelled (MonApi cannot), its result is dropped when it returns.
// - Bounded: listeners (LISTENERS_MAX); concurrent refreshes share one getMap.
import type { Clock, TimerHandle } from '../io/clock.js';
import type { MonApi } from '../mon/api-types.js';
import type { ClusterMap, OsdRecord, PgRecord, PoolRecord, VolumeRecord } from '../mon/map-types.js';
import { TesseraError } from '../stdx/errors.js';

export type ClientLogFn = (level: 'debug' | 'info' | 'warn' | 'error', message: string) => void;

export interface MapCacheOptions {
  mon: MonApi;
  clock: Clock;
  /** How long one MonApi.waitMap long poll may wait on the monitor. */
  waitMapMs?: number;
  /** Backoff after a failed monitor call: starts here, doubles, capped at the max. */
  retryBackoffMsMin?: number;
  retryBackoffMsMax?: number;
  /** Default bound on refresh()/awaitMap() when the caller gives none. */
  refreshTimeoutMs?: number;
  log?: ClientLogFn;
}

export const MAP_WAIT_MS_DEFAULT = 30_000;
export const MAP_RETRY_BACKOFF_MS_MIN = 50;
export const MAP_RETRY_BACKOFF_MS_MAX = 5_000;
export const MAP_REFRESH_TIMEOUT_MS_DEFAULT = 30_000;
/** Bound on change listeners (each volume store registers one). */
export const LISTENERS_MAX = 1024;

export type MapListener = (map: ClusterMap, previous: ClusterMap) => void;

interface PoolHints {
  /** Leader OSD id per PG; 0 = no hint (use the PG's first OSD). */
  leader: Int32Array;
  /** PG epoch the hint belongs to. */
  pgEpoch: Float64Array;
}

export class MapCache {
  private current: ClusterMap;
  private osdById = new Map<number, OsdRecord>();
  private poolById = new Map<number, PoolRecord>();
  private pgsByPool = new Map<number, PgRecord[]>();
  private volumeById = new Map<number, VolumeRecord>();
  private volumeByName = new Map<string, VolumeRecord>();
  private readonly hints = new Map<number, PoolHints>();
  private readonly listeners: MapListener[] = [];
  private fetching: Promise<ClusterMap> | null = null;
  private readonly sleeps = new Set<{ timer: TimerHandle; wake: () => void }>();
  private closed = false;
  private following = false;
  private readonly waitMapMs: number;
  private readonly backoffMsMin: number;
  private readonly backoffMsMax: number;
  private readonly refreshTimeoutMs: number;

  /** Fetches the current map, then follows newer epochs in the background. */
  static async open(opts: MapCacheOptions): Promise<MapCache> {
    const map = await opts.mon.getMap();
    const cache = new MapCache(opts, map);
    cache.startFollowing();
    return cache;
  }

  /** A cache on a map already in hand; call startFollowing() to follow the monitor. */
  constructor(
    private readonly opts: MapCacheOptions,
    initial: ClusterMap,
  ) {
    this.waitMapMs = opts.waitMapMs ?? MAP_WAIT_MS_DEFAULT;
    this.backoffMsMin = opts.retryBackoffMsMin ?? MAP_RETRY_BACKOFF_MS_MIN;
    this.backoffMsMax = Math.max(this.backoffMsMin, opts.retryBackoffMsMax ?? MAP_RETRY_BACKOFF_MS_MAX);
    this.refreshTimeoutMs = opts.refreshTimeoutMs ?? MAP_REFRESH_TIMEOUT_MS_DEFAULT;
    this.current = initial;
    this.index(initial);
  }

  get map(): ClusterMap {
    return this.current;
  }

  get epoch(): number {
    return this.current.epoch;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  osd(id: number): OsdRecord | undefined {
    return this.osdById.get(id);
  }

  pool(id: number): PoolRecord | undefined {
    return this.poolById.get(id);
  }

  poolByName(name: string): PoolRecord | undefined {
    for (const p of this.current.pools) if (p.name === name) return p;
    return undefined;
  }

  /** A PG's record (acting set, PG epoch) in the held map. */
  pgRecord(poolId: number, pg: number): PgRecord | undefined {
    return this.pgsByPool.get(poolId)?.[pg];
  }

  volume(id: number): VolumeRecord | undefined {
    return this.volumeById.get(id);
  }

  volumeNamed(name: string): VolumeRecord | undefined {
    return this.volumeByName.get(name);
  }

  /** The OSD to send a PG's requests to: the learnt leader, else the PG's first OSD; 0 if the PG has none. */
  leaderHint(poolId: number, pg: number): number {
    const rec = this.pgsByPool.get(poolId)?.[pg];
    if (rec === undefined) return 0;
    const h = this.hints.get(poolId);
    if (h !== undefined && pg < h.leader.length && h.leader[pg] !== 0 && h.pgEpoch[pg] === rec.epoch) return h.leader[pg];
    return rec.osds[0] ?? 0;
  }

  /** Records that `osdId` leads (or should be tried first for) the PG at `pgEpoch`; ignored for another epoch. */
  noteLeader(poolId: number, pg: number, pgEpoch: number, osdId: number): void {
    const pgs = this.pgsByPool.get(poolId);
    const rec = pgs?.[pg];
    if (pgs === undefined || rec === undefined || rec.epoch !== pgEpoch) return;
    let h = this.hints.get(poolId);
    if (h === undefined || h.leader.length !== pgs.length) {
      const n = pgs.length;
      h = { leader: new Int32Array(n), pgEpoch: new Float64Array(n) };
      this.hints.set(poolId, h);
    }
    h.leader[pg] = osdId;
    h.pgEpoch[pg] = pgEpoch;
  }

  /** Calls `listener(map, previous)` after every newer map; returns the unsubscribe function. */
  onChange(listener: MapListener): () => void {
    if (this.listeners.length >= LISTENERS_MAX) throw new TesseraError('ERR_LIMIT', `at most ${LISTENERS_MAX} map listeners`);
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  /**
   * Installs `map` if it is newer than the held one (used by the follow loop and
   * refresh; also by tests and by a daemon that receives maps by other means).
   * Returns true if it was installed.
   */
  install(map: ClusterMap): boolean {
    if (this.closed || map.epoch <= this.current.epoch) return false;
    const previous = this.current;
    this.current = map;
    this.index(map);
    // Hints of PGs whose epoch changed are stale: reset them (0 = first OSD).
    for (const [poolId, h] of this.hints) {
      const pgs = map.pgs[String(poolId)];
      if (pgs === undefined || pgs.length !== h.leader.length) {
        this.hints.delete(poolId);
        continue;
      }
      for (let pg = 0; pg < pgs.length; pg++) {
        if (h.leader[pg] !== 0 && h.pgEpoch[pg] !== pgs[pg].epoch) h.leader[pg] = 0;
      }
    }
    for (const l of this.listeners.slice()) {
      try {
        l(map, previous);
      } catch (err) {
        this.opts.log?.('error', `map listener failed at epoch ${map.epoch}: ${String(err)}`);
      }
    }
    return true;
  }

  /**
   * Fetches the map from the monitor (one getMap shared by concurrent callers)
   * until its epoch is at least `minEpoch`; rejects with ERR_TIMEOUT after
   * `timeoutMs`, ERR_CLOSED on close. With minEpoch 0 it is one forced fetch
   * (errors of that fetch are returned).
   */
  async refresh(minEpoch = 0, timeoutMs = this.refreshTimeoutMs): Promise<ClusterMap> {
    if (minEpoch <= 0) {
      this.checkOpen();
      await this.fetch();
      return this.current;
    }
    return this.awaitMap((m) => m.epoch >= minEpoch, timeoutMs, `epoch ${minEpoch}`);
  }

  /**
   * Resolves with the first held map that satisfies `pred`, fetching from the
   * monitor with backoff meanwhile (the follow loop may also deliver it).
   * Rejects ERR_TIMEOUT after timeoutMs, ERR_CLOSED on close.
   */
  async awaitMap(pred: (map: ClusterMap) => boolean, timeoutMs = this.refreshTimeoutMs, what = 'the expected map'): Promise<ClusterMap> {
    const clock = this.opts.clock;
    const deadlineMs = clock.nowMs() + timeoutMs;
    let backoffMs = this.backoffMsMin;
    let lastError: unknown = null;
    for (;;) {
      this.checkOpen();
      if (pred(this.current)) return this.current;
      if (clock.nowMs() >= deadlineMs) {
        const why = lastError === null ? '' : `; last monitor error: ${String(lastError)}`;
        throw new TesseraError('ERR_TIMEOUT', `the cluster map did not reach ${what} within ${timeoutMs} ms (held epoch ${this.current.epoch})${why}`, {
          cause: lastError ?? undefined,
        });
      }
      // The fetch is raced against the deadline and close(): a monitor that accepts
      // the request and never answers must not hold the caller past either.
      const bound = this.cancellableSleep(Math.max(0, deadlineMs - clock.nowMs()));
      try {
        await Promise.race([this.fetch(), bound.done]);
        lastError = null;
      } catch (err) {
        lastError = err;
      } finally {
        bound.cancel();
      }
      this.checkOpen();
      if (pred(this.current)) return this.current;
      if (clock.nowMs() >= deadlineMs) continue; // times out above
      await this.sleep(Math.min(backoffMs, Math.max(0, deadlineMs - clock.nowMs())));
      backoffMs = Math.min(backoffMs * 2, this.backoffMsMax);
    }
  }

  /** Starts the background long-poll loop (idempotent). */
  startFollowing(): void {
    if (this.following || this.closed) return;
    this.following = true;
    void this.follow();
  }

  /** Stops following and wakes every waiter with ERR_CLOSED. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.sleeps) {
      s.timer.cancel();
      s.wake();
    }
    this.sleeps.clear();
    this.listeners.length = 0;
  }

  private async follow(): Promise<void> {
    const clock = this.opts.clock;
    let backoffMs = this.backoffMsMin;
    while (!this.closed) {
      const t0 = clock.nowMs();
      try {
        const m = await this.opts.mon.waitMap(this.current.epoch, this.waitMapMs);
        if (this.closed) return;
        if (m !== null) this.install(m);
        backoffMs = this.backoffMsMin;
        // A monitor that answers "nothing new" long before the poll time would
        // make this loop spin: pause as after an error.
        if (m === null && clock.nowMs() - t0 < this.waitMapMs / 2) await this.sleep(this.backoffMsMin);
      } catch (err) {
        if (this.closed) return;
        this.opts.log?.('warn', `waiting for cluster map after epoch ${this.current.epoch} failed: ${String(err)}; retrying in ${backoffMs} ms`);
        await this.sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, this.backoffMsMax);
      }
    }
  }

  /** One getMap shared by all concurrent callers; installs the result if newer. */
  private fetch(): Promise<ClusterMap> {
    if (this.fetching === null) {
      this.fetching = this.opts.mon.getMap().then(
        (m) => {
          this.fetching = null;
          this.install(m);
          return this.current;
        },
        (err: unknown) => {
          this.fetching = null;
          throw err;
        },
      );
    }
    return this.fetching;
  }

  private sleep(ms: number): Promise<void> {
    return this.cancellableSleep(ms).done;
  }

  /** A sleep that close() wakes; cancel() drops its timer early (it then never resolves). */
  private cancellableSleep(ms: number): { done: Promise<void>; cancel: () => void } {
    if (this.closed) return { done: Promise.resolve(), cancel: () => {} };
    let entry: { timer: TimerHandle; wake: () => void } | null = null;
    const done = new Promise<void>((resolve) => {
      const e = {
        timer: this.opts.clock.setTimer(ms, () => {
          this.sleeps.delete(e);
          resolve();
        }),
        wake: resolve,
      };
      entry = e;
      this.sleeps.add(e);
    });
    const cancel = (): void => {
      if (entry === null) return;
      entry.timer.cancel();
      this.sleeps.delete(entry);
      entry = null;
    };
    return { done, cancel };
  }

  private checkOpen(): void {
    if (this.closed) throw new TesseraError('ERR_CLOSED', 'the cluster map cache is closed');
  }

  private index(map: ClusterMap): void {
    const osds = new Map<number, OsdRecord>();
    for (const o of map.osds) osds.set(o.id, o);
    const pools = new Map<number, PoolRecord>();
    const pgs = new Map<number, PgRecord[]>();
    for (const p of map.pools) {
      pools.set(p.id, p);
      const list = map.pgs[String(p.id)];
      if (list !== undefined) pgs.set(p.id, list);
    }
    const vById = new Map<number, VolumeRecord>();
    const vByName = new Map<string, VolumeRecord>();
    for (const v of map.volumes) {
      vById.set(v.id, v);
      vByName.set(v.name, v);
    }
    this.osdById = osds;
    this.poolById = pools;
    this.pgsByPool = pgs;
    this.volumeById = vById;
    this.volumeByName = vByName;
  }
}
