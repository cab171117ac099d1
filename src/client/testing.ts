// Test doubles for the client library: a virtual clock (SimClock), and an
// in-memory cluster (FakeCluster) that serves MonApi (`cluster.mon`) and
// OsdTransport (`cluster.transport`) with per-OSD byte stores and scripted
// faults. Used by the tests in this folder; usable by gateway tests that want a
// "cluster" without daemons.
//
// SimClock: time is virtual and only moves when nothing else can happen. Timers
// fire one per macrotask (setImmediate), earliest first, after the microtasks
// queued so far have run — with everything else in memory, "no microtask left"
// means "idle until the next timer", so a 60 s deadline passes in microseconds
// of real time and runs replay exactly. Close it (or everything that keeps
// timers) at the end of a test, or it keeps the process busy.
//
// FakeCluster models what the client relies on, not raft:
// - A request is applied when it arrives (synchronously inside request()), so
//   the per-OSD FIFO clause of the transport contract holds; a reply can then
//   be lost or late (the client sees ERR_TIMEOUT after its timeoutMs).
// - An OSD refuses a request with an older pgEpoch than its view of the PG
//   (StaleEpoch) and answers NotReady to a newer one (its map is behind), as
//   src/osd/osd.ts does; one not in the PG's acting set answers NotReady, a non-leader
//   answers NotLeader with a hint (scriptable). The leader applies a write to
//   every acting OSD's store (a committed raft entry). A misrouted object (its
//   objectToPg is not the request's PG) answers Range and is counted.
// - Overlapping writes/zeroes of the same volume outstanding at once (sent and
//   not yet settled at the transport) are counted in `overlapViolations`: the
//   client's ordering rule says this never happens.
// - Maps: every change bumps the epoch; waitMap long polls see it at once
//   unless `holdMaps()` (then only getMap does), which lets a test make OSDs
//   run ahead of the client's map.
import { setImmediate } from 'node:timers';
import type { Clock, TimerHandle } from '../io/clock.js';
import type { ClusterStatus, MonApi, OsdBootRequest, PoolCreateRequest } from '../mon/api-types.js';
import type { ClusterMap, OsdRecord, OsdReport, PoolRecord, VolumeRecord } from '../mon/map-types.js';
import type { ClientRequest, ClientResponse, ExtentWire } from '../osd/proto.js';
import { IO_BYTES_MAX, Method, Status } from '../osd/proto.js';
import { objectToPg, placePgs } from '../placement/placement.js';
import { TesseraError, type ErrorCode } from '../stdx/errors.js';
import { checkName, checkSize } from '../volume/memory.js';
import type { ClusterClientOptions } from './client.js';
import type { MapCacheOptions } from './map-cache.js';
import type { OsdAddress, OsdTransport } from './transport.js';
import { ClusterVolumeStore } from './volume-store.js';

// ------------------------------------------------------------------ SimClock

interface SimTimer {
  atMs: number;
  seq: number;
  cb: () => void;
  cancelled: boolean;
}

export class SimClock implements Clock {
  private now = 0;
  private seq = 0;
  /** Sorted by (atMs, seq). */
  private timers: SimTimer[] = [];
  private scheduled = false;
  private closed = false;
  /** Timers fired so far. */
  fired = 0;

  nowMs(): number {
    return this.now;
  }

  setTimer(delayMs: number, cb: () => void): TimerHandle {
    const t: SimTimer = { atMs: this.now + Math.max(0, delayMs), seq: this.seq++, cb, cancelled: false };
    let lo = 0;
    let hi = this.timers.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const m = this.timers[mid];
      if (m.atMs < t.atMs || (m.atMs === t.atMs && m.seq < t.seq)) lo = mid + 1;
      else hi = mid;
    }
    this.timers.splice(lo, 0, t);
    this.schedule();
    return {
      cancel: () => {
        t.cancelled = true;
      },
    };
  }

  /** Timers not yet fired or cancelled. */
  get pendingTimers(): number {
    let n = 0;
    for (const t of this.timers) if (!t.cancelled) n++;
    return n;
  }

  /** Stops firing timers (end of a test). */
  close(): void {
    this.closed = true;
    this.timers = [];
  }

  private schedule(): void {
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(() => this.step());
  }

  private step(): void {
    this.scheduled = false;
    if (this.closed) return;
    while (this.timers.length > 0 && this.timers[0].cancelled) this.timers.shift();
    const t = this.timers.shift();
    if (t === undefined) return;
    if (t.atMs > this.now) this.now = t.atMs;
    this.fired++;
    if (this.timers.length > 0) this.schedule();
    t.cb();
  }
}

// ------------------------------------------------------------------ faults

/** What the fake network/OSD does with one request instead of serving it normally. */
export type FaultAction =
  /** Lost before the OSD: never applied; the client times out. */
  | { kind: 'drop' }
  /** Applied, reply lost: the client times out (and will retry: applied twice). */
  | { kind: 'dropReply' }
  /** Applied, reply after `ms` (a timeout if ms >= the client's timeout). */
  | { kind: 'delayReply'; ms: number }
  /** Connection refused: ERR_CLOSED, not applied. */
  | { kind: 'refuse' }
  /** The transport rejects with this code; `applied`: the OSD executed it first. */
  | { kind: 'reject'; code: ErrorCode; applied: boolean }
  /** Answered with this error status, not applied. */
  | { kind: 'status'; status: Exclude<Status, typeof Status.Ok>; leaderHint?: number; pgEpoch?: number };

/** Called for every request; `seq` counts requests from 1. Return undefined to serve normally. */
export type FaultHook = (osdId: number, req: ClientRequest, seq: number) => FaultAction | undefined;

export interface TraceEntry {
  seq: number;
  osdId: number;
  method: number;
  volumeId: number;
  pg: number;
  pgEpoch: number;
  offsetBytes: number;
  lengthBytes: number;
  status: number | 'timeout' | 'refused';
}

// ------------------------------------------------------------------ FakeCluster

export interface FakeClusterOptions {
  clock: Clock;
  /** OSDs, each on its own host; ids 1..osdCount. */
  osdCount?: number;
  pgCount?: number;
  poolSize?: number;
  objectSizeBytes?: number;
  /** Reply latency per request (virtual ms); default 0 (next microtask). */
  latencyMs?: (osdId: number, req: ClientRequest) => number;
  /** Bound on `trace` entries kept (oldest dropped). */
  traceMax?: number;
}

interface FakeOsd {
  rec: OsdRecord;
  /** 'down': refuses connections; 'blackhole': swallows requests. */
  state: 'ok' | 'down' | 'blackhole';
  /** Object data by `${volumeId}/${objectIndex}`, each objectSizeBytes long. */
  store: Map<string, Buffer>;
  /** Per PG key: the OSD's own (lagging) view of the PG epoch, when scripted. */
  epochView: Map<string, number>;
}

interface Waiter {
  afterEpoch: number;
  resolve: (m: ClusterMap | null) => void;
  timer: TimerHandle;
}

export const FAKE_POOL_NAME = 'rbd';

export class FakeCluster {
  readonly clock: Clock;
  private map: ClusterMap;
  readonly osds = new Map<number, FakeOsd>();
  /** Leader per PG key; default the PG's first OSD. */
  private readonly leaders = new Map<string, number>();
  /** Scripted NotLeader hint per PG key (e.g. 0 = "unknown"). */
  private readonly hintOverride = new Map<string, number>();
  private waiters: Waiter[] = [];
  private held = false;
  private closed = false;
  private seq = 0;
  private readonly latencyMs: (osdId: number, req: ClientRequest) => number;
  private readonly traceMax: number;
  /** Outstanding writes/zeroes: volumeId → list of [start, end). */
  private readonly outstanding = new Map<number, Array<[number, number]>>();

  faultHook: FaultHook | undefined;
  /** Next N monitor calls (getMap, waitMap) fail with ERR_CLOSED. */
  monFailures = 0;
  readonly trace: TraceEntry[] = [];
  readonly counts = {
    requests: 0,
    applied: 0,
    misrouted: 0,
    overlapViolations: 0,
    inFlight: 0,
    inFlightPeak: 0,
    getMap: 0,
    waitMap: 0,
  };
  /** Parked requests (holdRequests): served when released unless their timeout fired first. */
  private parked: Array<{ run: () => void; dead: boolean }> | null = null;

  readonly mon: MonApi;
  readonly transport: OsdTransport;

  constructor(opts: FakeClusterOptions) {
    this.clock = opts.clock;
    this.latencyMs = opts.latencyMs ?? (() => 0);
    this.traceMax = opts.traceMax ?? 100_000;
    const osdCount = opts.osdCount ?? 5;
    const osds: OsdRecord[] = [];
    for (let id = 1; id <= osdCount; id++) {
      const rec: OsdRecord = { id, uuid: `uuid-${id}`, host: `host${id}`, addr: '127.0.0.1', port: 7000 + id, weight: 1, up: true, in: true, capacityBytes: 1 << 30 };
      osds.push(rec);
      this.osds.set(id, { rec, state: 'ok', store: new Map(), epochView: new Map() });
    }
    const pool: PoolRecord = {
      id: 1,
      name: FAKE_POOL_NAME,
      type: 'replicated',
      size: opts.poolSize ?? 3,
      minSize: 2,
      pgCount: opts.pgCount ?? 16,
      failureDomain: 'host',
      objectSizeBytes: opts.objectSizeBytes ?? 64 * 1024,
      createdEpoch: 1,
    };
    const placed = placePgs({ osds }, pool);
    this.map = {
      fsid: 'fake-fsid',
      epoch: 1,
      osds,
      pools: [pool],
      pgs: { [String(pool.id)]: placed.map((p) => ({ pg: p.pg, osds: p.osds, epoch: 1 })) },
      volumes: [],
      nextOsdId: osdCount + 1,
      nextPoolId: 2,
      nextVolumeId: 1,
    };
    this.mon = this.makeMon();
    this.transport = { request: (osd, req, timeoutMs) => this.request(osd, req, timeoutMs) };
  }

  // -------------------------------------------------------------- inspection

  get epoch(): number {
    return this.map.epoch;
  }

  /** The authoritative map (do not mutate). */
  get currentMap(): ClusterMap {
    return this.map;
  }

  pool(): PoolRecord {
    return this.map.pools[0];
  }

  volume(name: string): VolumeRecord {
    const v = this.map.volumes.find((x) => x.name === name);
    if (v === undefined) throw new Error(`fake: no volume ${name}`);
    return v;
  }

  pgOf(volumeId: number, objectIndex: number): number {
    const p = this.pool();
    return objectToPg(p.id, volumeId, objectIndex, p.pgCount);
  }

  actingSet(pg: number): number[] {
    return this.map.pgs[String(this.pool().id)][pg].osds;
  }

  leaderOf(pg: number): number {
    return this.leaders.get(pgKey(this.pool().id, pg)) ?? this.actingSet(pg)[0];
  }

  /** The volume's bytes [0, sizeBytes) as the PG leaders store them. */
  readVolume(volumeId: number, sizeBytes: number): Buffer {
    const objBytes = this.pool().objectSizeBytes;
    const out = Buffer.alloc(sizeBytes);
    for (let obj = 0; obj * objBytes < sizeBytes; obj++) {
      const data = this.osds.get(this.leaderOf(this.pgOf(volumeId, obj)))!.store.get(`${volumeId}/${obj}`);
      if (data !== undefined) data.copy(out, obj * objBytes, 0, Math.min(objBytes, sizeBytes - obj * objBytes));
    }
    return out;
  }

  /** Objects of the volume allocated on their PG leader. */
  allocatedObjects(volumeId: number): number[] {
    const out: number[] = [];
    for (const [osdId, o] of this.osds) {
      for (const key of o.store.keys()) {
        const [v, obj] = key.split('/').map(Number);
        if (v === volumeId && this.leaderOf(this.pgOf(v, obj)) === osdId) out.push(obj);
      }
    }
    return out.sort((a, b) => a - b);
  }

  /** Every acting replica of every PG holds the same objects as its leader; returns mismatches. */
  replicaMismatches(): string[] {
    const bad: string[] = [];
    const poolId = this.pool().id;
    const pgs = this.map.pgs[String(poolId)];
    for (const rec of pgs) {
      const leader = this.osds.get(this.leaderOf(rec.pg))!;
      for (const id of rec.osds) {
        const o = this.osds.get(id)!;
        for (const [key, data] of leader.store) {
          const [v, obj] = key.split('/').map(Number);
          if (this.pgOf(v, obj) !== rec.pg) continue;
          const other = o.store.get(key);
          if (other === undefined || !other.equals(data)) bad.push(`pg ${rec.pg} osd ${id} object ${key}`);
        }
      }
    }
    return bad;
  }

  // -------------------------------------------------------------- scripting

  /** Makes `osdId` the PG's leader (raft election); other OSDs answer NotLeader naming it. */
  setLeader(pg: number, osdId: number): void {
    this.leaders.set(pgKey(this.pool().id, pg), osdId);
  }

  /** NotLeader replies for the PG carry this hint instead of the real leader (0 = unknown); undefined clears. */
  setLeaderHint(pg: number, hint: number | undefined): void {
    const k = pgKey(this.pool().id, pg);
    if (hint === undefined) this.hintOverride.delete(k);
    else this.hintOverride.set(k, hint);
  }

  setOsdState(osdId: number, state: 'ok' | 'down' | 'blackhole', markInMap = false): void {
    this.osds.get(osdId)!.state = state;
    if (markInMap) {
      const rec = this.map.osds.find((o) => o.id === osdId)!;
      if (rec.up !== (state === 'ok')) {
        rec.up = state === 'ok';
        this.publish();
      }
    }
  }

  /** The OSD keeps answering with this PG epoch (as if it had not seen newer maps); undefined clears. */
  setOsdEpochView(osdId: number, pg: number, epoch: number | undefined): void {
    const k = pgKey(this.pool().id, pg);
    const o = this.osds.get(osdId)!;
    if (epoch === undefined) o.epochView.delete(k);
    else o.epochView.set(k, epoch);
  }

  /**
   * Moves a PG to a new acting set (a new PG epoch = the new map epoch); new
   * members get the PG's objects from the old leader (instant recovery); the
   * new leader is the first OSD.
   */
  changeActingSet(pg: number, osds: number[]): void {
    const poolId = this.pool().id;
    const from = this.osds.get(this.leaderOf(pg))!;
    const inPg = (key: string): boolean => {
      const [v, obj] = key.split('/').map(Number);
      return this.pgOf(v, obj) === pg;
    };
    // Members get exactly the leader's objects of this PG; OSDs that leave drop theirs.
    for (const [id, o] of this.osds) {
      if (o === from) continue;
      for (const key of [...o.store.keys()]) if (inPg(key)) o.store.delete(key);
      if (!osds.includes(id)) continue;
      for (const [key, data] of from.store) if (inPg(key)) o.store.set(key, Buffer.from(data));
    }
    if (!osds.includes(from.rec.id)) {
      for (const key of [...from.store.keys()]) if (inPg(key)) from.store.delete(key);
    }
    const rec = this.map.pgs[String(poolId)][pg];
    rec.osds = osds.slice();
    rec.epoch = this.map.epoch + 1; // the epoch publish() is about to commit
    this.leaders.delete(pgKey(poolId, pg));
    this.publish();
  }

  /** Long polls stop seeing new epochs (getMap still does) until releaseMaps(). */
  holdMaps(): void {
    this.held = true;
  }

  releaseMaps(): void {
    this.held = false;
    this.wakeWaiters();
  }

  /** Requests are parked (not applied) until releaseRequests(); a parked request whose timeout passes is lost. */
  holdRequests(): void {
    if (this.parked === null) this.parked = [];
  }

  get parkedCount(): number {
    return this.parked?.filter((p) => !p.dead).length ?? 0;
  }

  releaseRequests(): void {
    const parked = this.parked ?? [];
    this.parked = null;
    for (const p of parked) if (!p.dead) p.run();
  }

  /** Resolves pending long polls with null and stops serving them. */
  close(): void {
    this.closed = true;
    for (const w of this.waiters) {
      w.timer.cancel();
      w.resolve(null);
    }
    this.waiters = [];
  }

  // -------------------------------------------------------------- monitor

  private publish(): void {
    this.map.epoch++;
    this.wakeWaiters();
  }

  private wakeWaiters(): void {
    if (this.held) return;
    const keep: Waiter[] = [];
    for (const w of this.waiters) {
      if (this.map.epoch > w.afterEpoch) {
        w.timer.cancel();
        w.resolve(structuredClone(this.map));
      } else keep.push(w);
    }
    this.waiters = keep;
  }

  private monCall(): void {
    if (this.monFailures > 0) {
      this.monFailures--;
      throw new TesseraError('ERR_CLOSED', 'fake monitor: connection refused');
    }
  }

  private makeMon(): MonApi {
    const unsupported = (what: string) => async (): Promise<never> => {
      throw new TesseraError('ERR_INVALID', `fake monitor: ${what} is not supported`);
    };
    return {
      getMap: async () => {
        this.counts.getMap++;
        this.monCall();
        return structuredClone(this.map);
      },
      waitMap: async (afterEpoch: number, waitMs: number) => {
        this.counts.waitMap++;
        this.monCall();
        if (this.closed) return null;
        if (!this.held && this.map.epoch > afterEpoch) return structuredClone(this.map);
        return new Promise<ClusterMap | null>((resolve) => {
          const w: Waiter = {
            afterEpoch,
            resolve,
            timer: this.clock.setTimer(waitMs, () => {
              this.waiters = this.waiters.filter((x) => x !== w);
              resolve(null);
            }),
          };
          this.waiters.push(w);
        });
      },
      createVolume: async (req: { name: string; sizeBytes: number; pool?: string }) => {
        checkName(req.name);
        checkSize(req.sizeBytes);
        if (this.map.volumes.some((v) => v.name === req.name)) throw new TesseraError('ERR_EXISTS', `volume "${req.name}" already exists`);
        const pool = req.pool === undefined ? this.map.pools[0] : this.map.pools.find((p) => p.name === req.pool);
        if (pool === undefined) throw new TesseraError('ERR_NOT_FOUND', `no pool named "${req.pool}"`);
        const v: VolumeRecord = { id: this.map.nextVolumeId++, name: req.name, poolId: pool.id, sizeBytes: req.sizeBytes, createdAt: new Date(this.clock.nowMs()).toISOString() };
        this.map.volumes.push(v);
        this.publish();
        return { ...v };
      },
      resizeVolume: async (name: string, sizeBytes: number) => {
        const v = this.findVolume(name);
        checkSize(sizeBytes);
        v.sizeBytes = sizeBytes;
        this.publish();
        return { ...v };
      },
      renameVolume: async (name: string, newName: string) => {
        checkName(newName);
        const v = this.findVolume(name);
        if (this.map.volumes.some((x) => x.name === newName)) throw new TesseraError('ERR_EXISTS', `volume "${newName}" already exists`);
        v.name = newName;
        this.publish();
        return { ...v };
      },
      deleteVolume: async (name: string) => {
        const v = this.findVolume(name);
        this.map.volumes = this.map.volumes.filter((x) => x !== v);
        this.publish();
      },
      createPool: unsupported('createPool') as (req: PoolCreateRequest) => Promise<PoolRecord>,
      osdBoot: unsupported('osdBoot') as (req: OsdBootRequest) => Promise<{ osdId: number; map: ClusterMap }>,
      osdReport: unsupported('osdReport') as (r: OsdReport) => Promise<void>,
      osdOut: unsupported('osdOut') as (id: number) => Promise<void>,
      osdIn: unsupported('osdIn') as (id: number) => Promise<void>,
      osdRm: unsupported('osdRm') as (id: number) => Promise<void>,
      status: unsupported('status') as () => Promise<ClusterStatus>,
    };
  }

  /** Changes a volume's record behind the client's back (another gateway's management call). */
  mutateVolume(name: string, change: { sizeBytes?: number; newName?: string; remove?: boolean }): void {
    const v = this.findVolume(name);
    if (change.remove === true) this.map.volumes = this.map.volumes.filter((x) => x !== v);
    if (change.sizeBytes !== undefined) v.sizeBytes = change.sizeBytes;
    if (change.newName !== undefined) v.name = change.newName;
    this.publish();
  }

  private findVolume(name: string): VolumeRecord {
    const v = this.map.volumes.find((x) => x.name === name);
    if (v === undefined) throw new TesseraError('ERR_NOT_FOUND', `no volume named "${name}"`);
    return v;
  }

  // -------------------------------------------------------------- OSDs

  private request(osd: OsdAddress, req: ClientRequest, timeoutMs: number): Promise<ClientResponse> {
    return new Promise<ClientResponse>((resolve, reject) => {
      const seq = ++this.seq;
      const c = this.counts;
      c.requests++;
      c.inFlight++;
      if (c.inFlight > c.inFlightPeak) c.inFlightPeak = c.inFlight;
      const entry: TraceEntry = {
        seq,
        osdId: osd.id,
        method: req.method,
        volumeId: req.volumeId,
        pg: req.pg,
        pgEpoch: req.pgEpoch,
        offsetBytes: req.offsetBytes,
        lengthBytes: req.method === Method.Write ? req.data.length : req.lengthBytes,
        status: 'timeout',
      };
      this.trace.push(entry);
      if (this.trace.length > this.traceMax) this.trace.splice(0, this.trace.length - this.traceMax);
      const mutating = req.method === Method.Write || req.method === Method.Zero;
      const range: [number, number] = [entry.offsetBytes, entry.offsetBytes + entry.lengthBytes];
      if (mutating) this.addOutstanding(req.volumeId, range);
      let settled = false;
      const done = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        c.inFlight--;
        if (mutating) this.removeOutstanding(req.volumeId, range);
        fn();
      };
      const timeout = (): void =>
        done(() => reject(new TesseraError('ERR_TIMEOUT', `fake OSD ${osd.id}: no reply within ${timeoutMs} ms`)));
      const reply = (resp: ClientResponse, afterMs: number): void => {
        entry.status = resp.status;
        if (afterMs >= timeoutMs) {
          entry.status = 'timeout';
          this.clock.setTimer(timeoutMs, timeout);
        } else if (afterMs <= 0) queueMicrotask(() => done(() => resolve(resp)));
        else this.clock.setTimer(afterMs, () => done(() => resolve(resp)));
      };
      const o = this.osds.get(osd.id);
      const action = this.faultHook?.(osd.id, req, seq);
      if (o === undefined || o.state === 'down' || action?.kind === 'refuse') {
        entry.status = 'refused';
        queueMicrotask(() => done(() => reject(new TesseraError('ERR_CLOSED', `fake OSD ${osd.id}: connection refused`))));
        return;
      }
      if (o.state === 'blackhole' || action?.kind === 'drop') {
        this.clock.setTimer(timeoutMs, timeout);
        return;
      }
      if (action?.kind === 'reject') {
        if (action.applied) this.serve(osd.id, req);
        entry.status = 'refused';
        queueMicrotask(() => done(() => reject(new TesseraError(action.code, `fake transport to OSD ${osd.id}: scripted ${action.code}`))));
        return;
      }
      if (action?.kind === 'status') {
        reply({ status: action.status, leaderHint: action.leaderHint, pgEpoch: action.pgEpoch, message: 'scripted fault' }, this.latencyMs(osd.id, req));
        return;
      }
      const serve = (): void => {
        const resp = this.serve(osd.id, req);
        if (action?.kind === 'dropReply') {
          entry.status = 'timeout';
          this.clock.setTimer(timeoutMs, timeout);
        } else if (action?.kind === 'delayReply') reply(resp, action.ms);
        else reply(resp, this.latencyMs(osd.id, req));
      };
      if (this.parked !== null) {
        const p = { run: serve, dead: false };
        this.parked.push(p);
        this.clock.setTimer(timeoutMs, () => {
          if (!settled) {
            p.dead = true;
            timeout();
          }
        });
        return;
      }
      serve();
    });
  }

  private addOutstanding(volumeId: number, r: [number, number]): void {
    let list = this.outstanding.get(volumeId);
    if (list === undefined) {
      list = [];
      this.outstanding.set(volumeId, list);
    }
    for (const [s, e] of list) if (s < r[1] && r[0] < e) this.counts.overlapViolations++;
    list.push(r);
  }

  private removeOutstanding(volumeId: number, r: [number, number]): void {
    const list = this.outstanding.get(volumeId)!;
    list.splice(list.indexOf(r), 1);
  }

  /** One OSD's answer to a request, applying it if it is a write the leader accepts. */
  private serve(osdId: number, req: ClientRequest): ClientResponse {
    const pool = this.map.pools.find((p) => p.id === req.poolId);
    const rec = this.map.pgs[String(req.poolId)]?.[req.pg];
    if (pool === undefined || rec === undefined) return err(Status.NotReady, `no PG ${req.poolId}.${req.pg}`);
    const key = pgKey(req.poolId, req.pg);
    const o = this.osds.get(osdId)!;
    // As src/osd/osd.ts: a sender behind gets StaleEpoch, an OSD behind answers NotReady.
    const osdEpoch = o.epochView.get(key) ?? rec.epoch;
    if (req.pgEpoch < osdEpoch) return { status: Status.StaleEpoch, pgEpoch: osdEpoch, message: `PG epoch is ${osdEpoch}` };
    if (req.pgEpoch > osdEpoch) return { status: Status.NotReady, pgEpoch: osdEpoch, message: `OSD map is behind (PG epoch ${osdEpoch})` };
    if (!rec.osds.includes(osdId)) return err(Status.NotReady, `PG ${req.pg} has no replica on OSD ${osdId}`);
    const leader = this.leaders.get(key) ?? rec.osds[0];
    if (osdId !== leader) {
      const hint = this.hintOverride.has(key) ? this.hintOverride.get(key)! : leader;
      return { status: Status.NotLeader, leaderHint: hint, message: `leader is ${hint}` };
    }
    const objBytes = pool.objectSizeBytes;
    const len = req.method === Method.Write ? req.data.length : req.lengthBytes;
    const obj = Math.floor(req.offsetBytes / objBytes);
    const inObj = req.offsetBytes - obj * objBytes;
    if (req.offsetBytes % 512 !== 0 || len % 512 !== 0 || len === 0 || len > IO_BYTES_MAX || inObj + len > objBytes) {
      return err(Status.Range, `bad range ${req.offsetBytes}+${len}`);
    }
    if (objectToPg(pool.id, req.volumeId, obj, pool.pgCount) !== req.pg) {
      this.counts.misrouted++;
      return err(Status.Range, `object ${req.volumeId}/${obj} is not in PG ${req.pg}`);
    }
    const okey = `${req.volumeId}/${obj}`;
    switch (req.method) {
      case Method.Read: {
        const data = Buffer.alloc(len);
        o.store.get(okey)?.copy(data, 0, inObj, inObj + len);
        return { status: Status.Ok, data };
      }
      case Method.BlockStatus: {
        const allocated = o.store.has(okey);
        const extents: ExtentWire[] = [{ lengthBytes: len, hole: !allocated, zero: !allocated }];
        return { status: Status.Ok, extents };
      }
      case Method.Write:
        this.counts.applied++;
        for (const id of rec.osds) {
          const s = this.osds.get(id)!.store;
          let b = s.get(okey);
          if (b === undefined) {
            b = Buffer.alloc(objBytes);
            s.set(okey, b);
          }
          req.data.copy(b, inObj);
        }
        return { status: Status.Ok };
      case Method.Zero:
        this.counts.applied++;
        for (const id of rec.osds) {
          const s = this.osds.get(id)!.store;
          const b = s.get(okey);
          if (req.mayTrim && len === objBytes) s.delete(okey);
          else if (b !== undefined) b.fill(0, inObj, inObj + len);
          else if (!req.mayTrim) s.set(okey, Buffer.alloc(objBytes));
        }
        return { status: Status.Ok };
      default:
        return err(Status.Invalid, 'unknown method');
    }
  }
}

function pgKey(poolId: number, pg: number): string {
  return `${poolId}.${pg}`;
}

function err(status: Exclude<Status, typeof Status.Ok>, message: string): ClientResponse {
  return { status, message };
}

// ------------------------------------------------------------------ setup helper

export interface TestBed {
  clock: SimClock;
  cluster: FakeCluster;
  store: ClusterVolumeStore;
  /** Closes store, cluster and clock (call in a finally or t.after). */
  close(): Promise<void>;
}

/** A SimClock, a FakeCluster and a ClusterVolumeStore on them. */
export async function openTestBed(opts: {
  cluster?: Omit<FakeClusterOptions, 'clock'>;
  client?: Omit<ClusterClientOptions, 'maps' | 'transport' | 'clock'>;
  mapCache?: Omit<MapCacheOptions, 'mon' | 'clock'>;
  mapWaitMs?: number;
} = {}): Promise<TestBed> {
  const clock = new SimClock();
  const cluster = new FakeCluster({ ...opts.cluster, clock });
  const store = await ClusterVolumeStore.open({
    mon: cluster.mon,
    transport: cluster.transport,
    clock,
    client: opts.client,
    mapCache: opts.mapCache,
    mapWaitMs: opts.mapWaitMs,
  });
  return {
    clock,
    cluster,
    store,
    close: async () => {
      await store.close();
      cluster.close();
      clock.close();
    },
  };
}
