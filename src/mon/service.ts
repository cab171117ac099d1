// MonService (SPEC CLU1, CLU2, CLU5): the monitor's logic on a MetaStore —
// elected leadership, the cluster map's writes, failure detection and status.
// It implements MonApi; http.ts serves it, client.ts calls it over the network.
//
// Stored keys: see map-repo.ts (the map under MAP_KEY = 'mon/map'; the
// election MON_ELECTION = 'mon'). OSD reports are kept in memory only.
//
// Invariants:
// - Only the active monitor (elected through store.campaign) answers calls and
//   runs the timers; every other call gets MonNotActiveError (HTTP 503 with the
//   active monitor's address). Losing the election (onLost) deactivates it at
//   once, in the same turn: queued writes are refused, long polls released,
//   timers stopped; it then stands for election again.
// - Every map change goes through MapRepo.update (compare-and-set on the map's
//   revision), so two monitors that briefly both think they are active cannot
//   lose each other's updates or hand out one id twice.
// - Writes are batched: the operations queued while one store write is in
//   flight are applied in order to the map and committed with ONE write; each
//   gets its own result or error. The queue is bounded (MUTATIONS_QUEUED_MAX).
// - A newly active monitor gives every OSD a full osdDownAfterMs before it can
//   be marked down (FailureDetector), since it has not heard any heartbeat yet.
// - Long polls are bounded in number (WAITERS_MAX) and duration (WAIT_MS_MAX).
// - Time comes only from the injected Clock (timers, heartbeat ages); wall time
//   (volume createdAt) from the injected wallClockMs.
import { randomUUID } from 'node:crypto';
import { isTesseraError, TesseraError } from '../stdx/errors.js';
import type { Logger } from '../stdx/log.js';
import type { Clock, TimerHandle } from '../io/clock.js';
import { nodeClock } from '../io/node/clock.js';
import type { Campaign, MetaStore } from './store.js';
import type { ClusterMap, OsdReport, PoolRecord, VolumeRecord } from './map-types.js';
import type { ClusterStatus, MonApi, OsdBootRequest, PoolCreateRequest } from './api-types.js';
import * as M from './map.js';
import { FailureDetector, OSD_DOWN_AFTER_MS_DEFAULT, OSD_OUT_AFTER_MS_DEFAULT } from './decide.js';
import { aggregateStatus, type ReceivedReport } from './status.js';
import { MapRepo, MON_ELECTION } from './map-repo.js';
import { MonNotActiveError } from './errors.js';
import { PrService } from './pr-service.js';

/** Map operations waiting for the store; beyond this calls fail with ERR_LIMIT. */
export const MUTATIONS_QUEUED_MAX = 1024;
/** Operations committed together in one store write. */
export const BATCH_OPS_MAX = 128;
/** Concurrent long polls (waitMap) per monitor. */
export const WAITERS_MAX = 4096;
/** Longest long poll. */
export const WAIT_MS_MAX = 60_000;
/** Election lease: a dead active monitor is replaced after about this long. */
export const ELECTION_TTL_MS_DEFAULT = 5000;
/** Pause before standing for election again after a failure. */
const RECAMPAIGN_DELAY_MS = 500;
/** Bound on how long a 503 waits to learn the active monitor's address. */
const LEADER_LOOKUP_TIMEOUT_MS = 1000;

export const INITIAL_POOL_DEFAULT: PoolCreateRequest = { name: 'rbd', size: 3, minSize: 2, pgCount: 64, failureDomain: 'host' };

export interface MonServiceOptions {
  store: MetaStore;
  /** This monitor's id: shown in status, part of its election candidacy. */
  id: string;
  clock?: Clock;
  /** Wall clock in ms for volume createdAt; default Date.now. */
  wallClockMs?: () => number;
  osdDownAfterMs?: number;
  osdOutAfterMs?: number;
  /** How often the active monitor checks heartbeats; default min(1000, osdDownAfterMs / 4). */
  tickMs?: number;
  electionTtlMs?: number;
  /** Gateway lease for persistent reservations (pr-service.ts); default PR_LEASE_MS_DEFAULT. */
  prLeaseMs?: number;
  /** Pool created with the first map of a new cluster; null for none. Default INITIAL_POOL_DEFAULT. */
  initialPool?: PoolCreateRequest | null;
  /** fsid of a new cluster; default a random UUID. */
  newFsid?: () => string;
  log?: Logger;
}

interface PendingOp {
  apply: (m: ClusterMap) => { map: ClusterMap; result: unknown };
  resolve: (result: unknown) => void;
  reject: (err: unknown) => void;
}

interface Waiter {
  afterEpoch: number;
  resolve: (m: ClusterMap | null) => void;
  reject: (err: unknown) => void;
  timer: TimerHandle;
  detach: () => void;
}

type Outcome = { ok: true; result: unknown } | { ok: false; err: unknown };

interface CandidateInfo {
  id: string;
  addr: string;
}

function parseCandidate(candidateId: string | null): CandidateInfo | null {
  if (candidateId === null) return null;
  try {
    const v = JSON.parse(candidateId) as Partial<CandidateInfo>;
    return typeof v.id === 'string' && typeof v.addr === 'string' ? { id: v.id, addr: v.addr } : null;
  } catch {
    return null;
  }
}

export class MonService implements MonApi {
  readonly id: string;
  readonly osdDownAfterMs: number;
  readonly osdOutAfterMs: number;
  /** Persistent reservations of the gateways (served by http.ts under /v1/pr). */
  readonly pr: PrService;
  private readonly store: MetaStore;
  private readonly clock: Clock;
  private readonly wallClockMs: () => number;
  private readonly tickMs: number;
  private readonly electionTtlMs: number;
  private readonly initialPool: PoolCreateRequest | null;
  private readonly newFsid: () => string;
  private readonly log: Logger | undefined;
  private readonly repo: MapRepo;

  private advertiseAddr = '';
  private started = false;
  private closed = false;
  private active = false;
  private activeTerm: bigint | null = null;
  private campaign: Campaign | null = null;
  private detector: FailureDetector | null = null;
  private tickTimer: TimerHandle | null = null;
  private tickBusy = false;
  private readonly reports = new Map<number, ReceivedReport>();
  private readonly queue: PendingOp[] = [];
  private flushing = false;
  private readonly waiters = new Set<Waiter>();
  private activeListeners: Array<() => void> = [];
  private wakeLoop: (() => void) | null = null;
  private loopDone: Promise<void> = Promise.resolve();

  constructor(opts: MonServiceOptions) {
    if (typeof opts.id !== 'string' || opts.id.length === 0 || opts.id.length > 128) throw new TesseraError('ERR_INVALID', 'monitor id must be 1-128 characters');
    this.id = opts.id;
    this.store = opts.store;
    this.clock = opts.clock ?? nodeClock;
    this.wallClockMs = opts.wallClockMs ?? (() => Date.now());
    this.osdDownAfterMs = opts.osdDownAfterMs ?? OSD_DOWN_AFTER_MS_DEFAULT;
    this.osdOutAfterMs = opts.osdOutAfterMs ?? OSD_OUT_AFTER_MS_DEFAULT;
    if (!(this.osdDownAfterMs > 0) || !(this.osdOutAfterMs > 0)) throw new TesseraError('ERR_INVALID', 'osdDownAfterMs and osdOutAfterMs must be positive');
    this.tickMs = opts.tickMs ?? Math.max(10, Math.min(1000, Math.floor(this.osdDownAfterMs / 4)));
    this.electionTtlMs = opts.electionTtlMs ?? ELECTION_TTL_MS_DEFAULT;
    this.initialPool = opts.initialPool === undefined ? INITIAL_POOL_DEFAULT : opts.initialPool;
    this.newFsid = opts.newFsid ?? (() => randomUUID());
    this.log = opts.log;
    this.repo = new MapRepo(this.store);
    this.pr = new PrService({ store: this.store, clock: this.clock, leaseMs: opts.prLeaseMs, checkActive: () => void this.checkActive(), log: this.log });
    // A bad initial pool spec fails here, not in a retry loop after every election.
    if (this.initialPool !== null) M.createPool(M.initialMap('check'), this.initialPool);
  }

  /**
   * Enters the election as `advertiseAddr` ("host:port" where clients reach this
   * monitor's API) and keeps standing until close(). Returns at once; see
   * whenActive().
   */
  start(advertiseAddr: string): void {
    if (this.started) throw new TesseraError('ERR_INVALID', 'monitor already started');
    if (this.closed) throw new TesseraError('ERR_CLOSED', 'monitor closed');
    this.started = true;
    this.advertiseAddr = advertiseAddr;
    this.loopDone = this.electionLoop();
  }

  isActive(): boolean {
    return this.active;
  }

  /** The election term (fencing token) of the current activity, or null when standby. */
  term(): bigint | null {
    return this.activeTerm;
  }

  /** Resolves once this monitor is active; ERR_TIMEOUT after timeoutMs. */
  whenActive(timeoutMs: number): Promise<void> {
    if (this.active) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (): void => {
        timer.cancel();
        resolve();
      };
      const timer = this.clock.setTimer(timeoutMs, () => {
        this.activeListeners = this.activeListeners.filter((l) => l !== done);
        reject(new TesseraError('ERR_TIMEOUT', `monitor ${this.id} not active after ${timeoutMs} ms`));
      });
      this.activeListeners.push(done);
    });
  }

  /** In-memory load, for metrics and tests. */
  counters(): { waiters: number; queuedOps: number; reports: number } {
    return { waiters: this.waiters.size, queuedOps: this.queue.length, reports: this.reports.size };
  }

  /** "host:port" of the active monitor as far as the store knows (null when unknown). */
  async activeAddr(): Promise<string | null> {
    if (this.active) return this.advertiseAddr;
    if (this.closed) return null;
    let timer: TimerHandle | undefined;
    const timeout = new Promise<null>((resolve) => {
      timer = this.clock.setTimer(LEADER_LOOKUP_TIMEOUT_MS, () => resolve(null));
    });
    try {
      const leader = await Promise.race([this.store.leader(MON_ELECTION).catch(() => null), timeout]);
      const info = parseCandidate(leader);
      // Our own candidacy while we are not active is stale (we just lost): no hint.
      if (info === null || info.id === this.id) return null;
      return info.addr;
    } finally {
      timer?.cancel();
    }
  }

  /** Leaves the election (a standby takes over at once), releases waiters. Does not close the store. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stepDown('closing', new TesseraError('ERR_CLOSED', `monitor ${this.id} is closing`));
    const c = this.campaign;
    this.campaign = null;
    await c?.resign().catch(() => undefined);
    this.wakeLoop?.();
    await this.loopDone;
  }

  // ---------- election ----------

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = this.clock.setTimer(ms, () => {
        this.wakeLoop = null;
        resolve();
      });
      this.wakeLoop = () => {
        t.cancel();
        this.wakeLoop = null;
        resolve();
      };
    });
  }

  private async electionLoop(): Promise<void> {
    const candidateId = JSON.stringify({ id: this.id, addr: this.advertiseAddr } satisfies CandidateInfo);
    while (!this.closed) {
      let c: Campaign;
      try {
        c = await this.store.campaign(MON_ELECTION, candidateId, this.electionTtlMs);
      } catch (err) {
        if (this.closed) break;
        this.log?.warn(`cannot stand for election: ${(err as Error).message}`);
        await this.sleep(RECAMPAIGN_DELAY_MS);
        continue;
      }
      if (this.closed) {
        await c.resign().catch(() => undefined);
        break;
      }
      this.campaign = c;
      const lost = new Promise<void>((resolve) => {
        c.onLost((err) => {
          this.stepDown('election lost', new MonNotActiveError(`monitor ${this.id} lost its election: ${err.message}`, null));
          resolve();
        });
        this.wakeLoop = resolve;
      });
      try {
        const term = await c.elected();
        await this.becomeActive(term, c);
        await lost;
      } catch (err) {
        if (!this.closed) this.log?.warn(`election: ${(err as Error).message}`);
        this.stepDown('election failed', new MonNotActiveError(`monitor ${this.id} is not active`, null));
        await c.resign().catch(() => undefined);
      }
      this.wakeLoop = null;
      if (this.campaign === c) this.campaign = null;
      if (!this.closed) await this.sleep(RECAMPAIGN_DELAY_MS);
    }
  }

  private async becomeActive(term: bigint, c: Campaign): Promise<void> {
    let map = await this.repo.load();
    if (map === null) {
      const fsid = this.newFsid();
      // The initial pool waits for its failure domains (withInitialPool, at OSD boot).
      const res = await this.repo.update((cur) => cur ?? M.initialMap(fsid)); // cur: another monitor created it meanwhile
      map = res.map;
      if (res.changed) this.log?.info(`created cluster ${map.fsid} at epoch ${map.epoch}`);
    }
    if (this.closed || !c.isLeader()) throw new MonNotActiveError('lost the election while loading the map', null);
    this.detector = new FailureDetector({ osdDownAfterMs: this.osdDownAfterMs, osdOutAfterMs: this.osdOutAfterMs }, this.clock.nowMs());
    this.reports.clear();
    this.active = true;
    this.activeTerm = term;
    this.pr.activate();
    this.log?.info(`monitor ${this.id} is active (term ${term}) at map epoch ${map.epoch}`);
    this.scheduleTick();
    const listeners = this.activeListeners;
    this.activeListeners = [];
    for (const l of listeners) l();
  }

  private stepDown(why: string, err: unknown): void {
    const wasActive = this.active;
    this.active = false;
    this.activeTerm = null;
    this.detector = null;
    this.tickTimer?.cancel();
    this.tickTimer = null;
    this.reports.clear();
    this.pr.deactivate(err);
    for (const op of this.queue.splice(0)) op.reject(err);
    for (const w of [...this.waiters]) {
      this.removeWaiter(w);
      w.reject(err);
    }
    if (wasActive) this.log?.warn(`monitor ${this.id} is no longer active: ${why}`);
  }

  private checkActive(): ClusterMap {
    if (this.closed) throw new MonNotActiveError(`monitor ${this.id} is closed`, null);
    // Belt and braces: should the store's campaign end without an onLost, stop at the next call.
    if (this.active && this.campaign !== null && !this.campaign.isLeader()) {
      this.stepDown('campaign ended', new MonNotActiveError(`monitor ${this.id} is no longer the active monitor`, null));
      this.wakeLoop?.(); // the election loop stands again
    }
    const map = this.repo.map;
    if (!this.active || map === null) throw new MonNotActiveError(`monitor ${this.id} is not the active monitor`, null);
    return map;
  }

  // ---------- writes ----------

  private submit<T>(apply: (m: ClusterMap) => { map: ClusterMap; result: T }): Promise<T> {
    try {
      this.checkActive();
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.queue.length >= MUTATIONS_QUEUED_MAX) {
      return Promise.reject(new TesseraError('ERR_LIMIT', `${MUTATIONS_QUEUED_MAX} map changes are queued; retry later`));
    }
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ apply, resolve: resolve as (r: unknown) => void, reject });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, BATCH_OPS_MAX);
        await this.commitBatch(batch);
      }
    } finally {
      this.flushing = false;
    }
  }

  private async commitBatch(batch: PendingOp[]): Promise<void> {
    if (!this.active) {
      const err = new MonNotActiveError(`monitor ${this.id} is not the active monitor`, null);
      for (const op of batch) op.reject(err);
      return;
    }
    let outcomes: Outcome[] = [];
    try {
      const res = await this.repo.update((cur) => {
        if (cur === null) throw new TesseraError('ERR_NOT_FOUND', 'the cluster map vanished from the store');
        outcomes = [];
        let m = cur;
        for (const op of batch) {
          try {
            const r = op.apply(m);
            m = r.map;
            outcomes.push({ ok: true, result: r.result });
          } catch (err) {
            outcomes.push({ ok: false, err });
          }
        }
        return m;
      });
      if (res.changed) this.committed(res.map);
    } catch (err) {
      if (batch.length > 1 && isTesseraError(err, 'ERR_LIMIT')) {
        // The batch made the map too big: commit one by one so only the culprit fails.
        for (const op of batch) await this.commitBatch([op]);
        return;
      }
      if (!isTesseraError(err)) this.log?.error(`map update failed: ${(err as Error).stack ?? String(err)}`);
      for (const op of batch) op.reject(err);
      return;
    }
    batch.forEach((op, i) => {
      const o = outcomes[i];
      if (o.ok) op.resolve(o.result);
      else op.reject(o.err);
    });
  }

  private committed(map: ClusterMap): void {
    for (const w of [...this.waiters]) {
      if (map.epoch > w.afterEpoch) {
        this.removeWaiter(w);
        w.resolve(map);
      }
    }
  }

  // ---------- timers ----------

  private scheduleTick(): void {
    this.tickTimer?.cancel();
    this.tickTimer = this.clock.setTimer(this.tickMs, () => {
      this.tickTimer = null;
      this.tick();
      if (this.active) this.scheduleTick();
    });
  }

  /** One failure-detection pass (called by the timer; public for tests that drive a manual clock). */
  tick(): void {
    const map = this.repo.map;
    const detector = this.detector;
    if (!this.active || map === null || detector === null || this.tickBusy) return;
    for (const id of this.reports.keys()) if (!map.osds.some((o) => o.id === id)) this.reports.delete(id);
    const d = detector.decide(map, this.clock.nowMs());
    if (d.down.length === 0 && d.out.length === 0) return;
    this.tickBusy = true;
    this.submit((m) => ({ map: M.markOut(M.markDown(m, d.down), d.out), result: undefined }))
      .then(() => {
        if (d.down.length > 0) this.log?.warn(`marked OSD(s) ${d.down.join(', ')} down: no heartbeat for ${this.osdDownAfterMs} ms`);
        if (d.out.length > 0) this.log?.warn(`marked OSD(s) ${d.out.join(', ')} out: down for ${this.osdOutAfterMs} ms`);
      })
      .catch((err: unknown) => this.log?.warn(`marking OSDs down/out failed: ${(err as Error).message}`))
      .finally(() => {
        this.tickBusy = false;
      });
  }

  // ---------- MonApi ----------

  async getMap(): Promise<ClusterMap> {
    return this.checkActive();
  }

  waitMap(afterEpoch: number, waitMs: number, signal?: AbortSignal): Promise<ClusterMap | null> {
    let map: ClusterMap;
    try {
      map = this.checkActive();
      if (!Number.isSafeInteger(afterEpoch) || afterEpoch < 0) throw new TesseraError('ERR_INVALID', `afterEpoch must be a non-negative integer, got ${afterEpoch}`);
      if (!Number.isSafeInteger(waitMs) || waitMs < 0 || waitMs > WAIT_MS_MAX) throw new TesseraError('ERR_INVALID', `waitMs must be an integer in [0, ${WAIT_MS_MAX}], got ${waitMs}`);
    } catch (err) {
      return Promise.reject(err);
    }
    if (map.epoch > afterEpoch) return Promise.resolve(map);
    if (waitMs === 0 || signal?.aborted) return Promise.resolve(null);
    if (this.waiters.size >= WAITERS_MAX) return Promise.reject(new TesseraError('ERR_LIMIT', `${WAITERS_MAX} map waiters already; retry later`));
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        this.removeWaiter(w);
        resolve(null);
      };
      const w: Waiter = {
        afterEpoch,
        resolve,
        reject,
        timer: this.clock.setTimer(waitMs, () => {
          this.removeWaiter(w);
          resolve(null);
        }),
        detach: () => signal?.removeEventListener('abort', onAbort),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(w);
    });
  }

  private removeWaiter(w: Waiter): void {
    this.waiters.delete(w);
    w.timer.cancel();
    w.detach();
  }

  async createVolume(req: { name: string; sizeBytes: number; pool?: string }): Promise<VolumeRecord> {
    const createdAt = new Date(this.wallClockMs()).toISOString();
    const volume = await this.submit((m) => {
      const r = M.createVolume(m, req, createdAt);
      return { map: r.map, result: r.volume };
    });
    this.log?.info(`created volume ${volume.name} (id ${volume.id}, ${volume.sizeBytes} bytes)`);
    return volume;
  }

  async resizeVolume(name: string, sizeBytes: number): Promise<VolumeRecord> {
    return this.submit((m) => {
      const r = M.resizeVolume(m, name, sizeBytes);
      return { map: r.map, result: r.volume };
    });
  }

  async renameVolume(name: string, newName: string): Promise<VolumeRecord> {
    return this.submit((m) => {
      const r = M.renameVolume(m, name, newName);
      return { map: r.map, result: r.volume };
    });
  }

  /** Resize and/or rename as one map change: both apply or neither (the HTTP PATCH route). */
  async patchVolume(name: string, patch: { sizeBytes?: number; newName?: string }): Promise<VolumeRecord> {
    return this.submit((m) => {
      let cur = m;
      let volume = M.findVolume(m, name);
      if (patch.sizeBytes !== undefined) ({ map: cur, volume } = M.resizeVolume(cur, name, patch.sizeBytes));
      if (patch.newName !== undefined) ({ map: cur, volume } = M.renameVolume(cur, name, patch.newName));
      // Two changes in one operation still raise the epoch by one.
      if (cur.epoch > m.epoch + 1) cur = { ...cur, epoch: m.epoch + 1 };
      return { map: cur, result: volume };
    });
  }

  async deleteVolume(name: string): Promise<void> {
    await this.submit((m) => ({ map: M.deleteVolume(m, name), result: undefined }));
    this.log?.info(`deleted volume ${name}`);
  }

  async createPool(req: PoolCreateRequest): Promise<PoolRecord> {
    // OSD daemons store 4 MiB objects, and serve only pools of their object size
    // (osd.ts checkRequest): refuse the pool now rather than its every IO later.
    if (req.objectSizeBytes !== undefined && req.objectSizeBytes !== M.OBJECT_SIZE_BYTES_DEFAULT) {
      throw new TesseraError('ERR_INVALID', `objectSizeBytes ${req.objectSizeBytes}: the OSDs store ${M.OBJECT_SIZE_BYTES_DEFAULT}-byte objects, and a pool must use the same size`);
    }
    const pool = await this.submit((m) => {
      const r = M.createPool(m, req);
      return { map: r.map, result: r.pool };
    });
    this.log?.info(`created pool ${pool.name} (id ${pool.id}, size ${pool.size}, ${pool.pgCount} PGs)`);
    return pool;
  }

  async osdBoot(req: OsdBootRequest): Promise<{ osdId: number; map: ClusterMap }> {
    const osdId = await this.submit((m) => {
      const r = M.osdBoot(m, req);
      return { map: this.withInitialPool(r.map), result: r.osdId };
    });
    // Same turn as the commit's continuation: no tick runs between the commit and this heartbeat.
    this.detector?.heartbeat(osdId, this.clock.nowMs());
    return { osdId, map: this.checkActive() };
  }

  /**
   * The initial pool is created once `size` OSDs are in, not with the first map:
   * then every PG starts with its full acting set at the pool's epoch, and its
   * OSDs bootstrap the raft group together (a PG whose set changed before any
   * OSD saw it could never bootstrap). Only for a cluster that never had a pool.
   */
  private withInitialPool(map: ClusterMap): ClusterMap {
    const pool = this.initialPool;
    if (pool === null || map.nextPoolId !== 1) return map;
    const domains = new Set(map.osds.filter((o) => o.in && o.up).map((o) => ((pool.failureDomain ?? 'host') === 'host' ? o.host : String(o.id))));
    if (domains.size < pool.size) return map;
    this.log?.info(`${domains.size} failure domains are in: creating pool ${pool.name}`);
    return M.createPool(map, pool).map;
  }

  async osdReport(report: OsdReport): Promise<void> {
    const map = this.checkActive();
    const osd = map.osds.find((o) => o.id === report.osdId);
    if (!osd || osd.uuid !== report.uuid) throw new TesseraError('ERR_NOT_FOUND', `no OSD ${report.osdId} with uuid ${report.uuid}: boot first`);
    const nowMs = this.clock.nowMs();
    this.detector?.heartbeat(osd.id, nowMs);
    this.reports.set(osd.id, { report, receivedAtMs: nowMs });
    if (!osd.up || (!osd.in && osd.outByOperator !== true)) {
      await this.submit((m) => ({ map: M.markUp(m, osd.id), result: undefined }));
      this.log?.info(`OSD ${osd.id} is up again (report)`);
    }
  }

  async osdOut(osdId: number): Promise<void> {
    await this.submit((m) => ({ map: M.operatorOut(m, osdId), result: undefined }));
    this.log?.info(`OSD ${osdId} marked out by the operator`);
  }

  async osdIn(osdId: number): Promise<void> {
    await this.submit((m) => ({ map: M.operatorIn(m, osdId), result: undefined }));
    this.detector?.restartOutGrace(osdId, this.clock.nowMs());
    this.log?.info(`OSD ${osdId} marked in by the operator`);
  }

  async osdRm(osdId: number): Promise<void> {
    // Out and in no acting set is not enough: until the PGs' leaders have removed
    // it from their raft memberships (recovery done), its copy may still count
    // toward their quorums. Fresh leader reports tell.
    const nowMs = this.clock.nowMs();
    for (const [from, r] of this.reports) {
      if (from === osdId || nowMs - r.receivedAtMs > this.osdDownAfterMs) continue;
      const pg = r.report.pgs.find((p) => p.role === 'leader' && (p.voters.includes(osdId) || p.learners.includes(osdId)));
      if (pg) {
        throw new TesseraError('ERR_BUSY', `OSD ${osdId} is still a raft member of PG ${pg.poolId}.${pg.pg} (led by OSD ${from}): recovery has not finished; see tessera status`);
      }
    }
    await this.submit((m) => ({ map: M.osdRm(m, osdId), result: undefined }));
    this.reports.delete(osdId);
    this.log?.info(`OSD ${osdId} removed`);
  }

  async status(): Promise<ClusterStatus> {
    const map = this.checkActive();
    return aggregateStatus({
      map,
      reports: this.reports.values(),
      nowMs: this.clock.nowMs(),
      reportMaxAgeMs: this.osdDownAfterMs,
      monitors: [{ id: this.id, active: true }],
    });
  }
}
