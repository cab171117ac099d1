// VolumeStore and Volume (volume/types.ts) on a cluster (SPEC VOL1, CLU6): the
// NBD server, the management API and the CLI use this exactly as they use the
// local engine. Management goes to the monitor (MonApi); list/info/open read the
// followed cluster map (MapCache); IO goes through ClusterClient.
//
// Invariants:
// - create/resize/rename/delete resolve only once the held map shows their
//   effect, so a following info()/open() on this store sees it (ERR_TIMEOUT if
//   the map does not show it within mapWaitMs: the change was made, the map
//   did not follow).
// - A Volume handle is bound to the volume id (ids are never reused): name()
//   and sizeBytes() follow rename and resize through the map; after the id
//   leaves the map every IO fails ERR_NOT_FOUND. Range checks use the size in
//   the held map (ERR_RANGE).
// - flush() and fua need no work: an OSD answers a write or zero only after its
//   PG's raft log entry is committed, i.e. fsynced on a majority of the PG's
//   replicas, so every acknowledged write is already durable.
// - Shrinking checks for allocated data beyond the new size (blockStatus on the
//   OSDs; ERR_SHRINK unless discardData) and, with discardData, zeroes (mayTrim)
//   what was allocated there after the monitor committed the new size, so the
//   data cannot reappear when the volume grows again. Cost is proportional to
//   the removed range (one blockStatus per object): objects are hashed over
//   PGs, and the OSD protocol has no per-volume object listing yet.
// - Per-volume IoStats are measured in this client (all handles of one volume
//   share them) and dropped when the volume leaves the map.
import type { Clock } from '../io/clock.js';
import type { MonApi } from '../mon/api-types.js';
import type { ClusterMap, VolumeRecord } from '../mon/map-types.js';
import { TesseraError } from '../stdx/errors.js';
import { IoStats, type IoStatsSnapshot } from '../stdx/stats.js';
import { checkName, checkSize } from '../volume/memory.js';
import type { DeviceInfo, Extent, StatsSnapshot, Volume, VolumeInfo, VolumeStore } from '../volume/types.js';
import { ClusterClient, WINDOW_PIECES, type ClusterClientOptions } from './client.js';
import { MapCache, type ClientLogFn, type MapCacheOptions } from './map-cache.js';
import type { OsdTransport } from './transport.js';

export const MGMT_MAP_WAIT_MS_DEFAULT = 30_000;

export interface ClusterVolumeStoreOptions {
  mon: MonApi;
  transport: OsdTransport;
  clock: Clock;
  /** Pool (by name) of new volumes; default: the monitor's choice. */
  pool?: string;
  /** How long create/resize/rename/delete wait for the map to show their effect. */
  mapWaitMs?: number;
  /** Milliseconds since the Unix epoch for StatsSnapshot.atMs; default clock.nowMs (only differences are used). */
  wallClockMs?: () => number;
  client?: Omit<ClusterClientOptions, 'maps' | 'transport' | 'clock'>;
  mapCache?: Omit<MapCacheOptions, 'mon' | 'clock'>;
  log?: ClientLogFn;
}

/** The parts of a store, for callers that share one MapCache and ClusterClient between several users. */
export interface ClusterVolumeStoreParts {
  mon: MonApi;
  maps: MapCache;
  client: ClusterClient;
  clock: Clock;
  pool?: string;
  mapWaitMs?: number;
  wallClockMs?: () => number;
  /** close() closes maps and client too. */
  ownsParts?: boolean;
  /** With ownsParts: the client's transport, closed once the client drained. */
  transport?: OsdTransport;
}

export class ClusterVolumeStore implements VolumeStore {
  readonly maps: MapCache;
  readonly client: ClusterClient;
  private readonly mon: MonApi;
  private readonly mapWaitMs: number;
  private readonly wallClockMs: () => number;
  private readonly statsById = new Map<number, IoStats>();
  private readonly unsubscribe: () => void;
  private closed = false;

  /** Fetches the map and starts following it; the store owns its MapCache and ClusterClient. */
  static async open(opts: ClusterVolumeStoreOptions): Promise<ClusterVolumeStore> {
    const maps = await MapCache.open({ ...opts.mapCache, log: opts.mapCache?.log ?? opts.log, mon: opts.mon, clock: opts.clock });
    const client = new ClusterClient({ ...opts.client, log: opts.client?.log ?? opts.log, maps, transport: opts.transport, clock: opts.clock });
    return new ClusterVolumeStore({
      mon: opts.mon,
      maps,
      client,
      clock: opts.clock,
      pool: opts.pool,
      mapWaitMs: opts.mapWaitMs,
      wallClockMs: opts.wallClockMs,
      ownsParts: true,
      transport: opts.transport,
    });
  }

  constructor(private readonly parts: ClusterVolumeStoreParts) {
    this.mon = parts.mon;
    this.maps = parts.maps;
    this.client = parts.client;
    this.mapWaitMs = parts.mapWaitMs ?? MGMT_MAP_WAIT_MS_DEFAULT;
    this.wallClockMs = parts.wallClockMs ?? (() => parts.clock.nowMs());
    this.unsubscribe = this.maps.onChange((map) => {
      if (this.statsById.size === 0) return;
      const live = new Set(map.volumes.map((v) => v.id));
      for (const id of this.statsById.keys()) if (!live.has(id)) this.statsById.delete(id);
    });
  }

  list(): VolumeInfo[] {
    return this.maps.map.volumes
      .slice()
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((v) => this.toInfo(v));
  }

  info(name: string): VolumeInfo {
    return this.toInfo(this.named(name));
  }

  async create(name: string, sizeBytes: number): Promise<VolumeInfo> {
    this.checkOpen();
    checkName(name);
    checkSize(sizeBytes);
    const rec = await this.mon.createVolume({ name, sizeBytes, pool: this.parts.pool });
    // Ids are never reused: the map that allocated this id (nextVolumeId past it) holds the creation.
    await this.maps.awaitMap((m) => m.nextVolumeId > rec.id || hasVolume(m, rec.id), this.mapWaitMs, `the creation of volume "${name}"`);
    return this.toInfo(this.maps.volume(rec.id) ?? rec);
  }

  async resize(name: string, sizeBytes: number, opts?: { discardData?: boolean }): Promise<VolumeInfo> {
    this.checkOpen();
    const v = await this.lookup(name);
    checkSize(sizeBytes);
    if (sizeBytes === v.sizeBytes) return this.toInfo(v);
    let runs: Array<[number, number]> = [];
    if (sizeBytes < v.sizeBytes) {
      runs = await this.allocatedRuns(v, sizeBytes, v.sizeBytes);
      if (runs.length > 0 && opts?.discardData !== true) {
        throw new TesseraError('ERR_SHRINK', `volume "${name}" holds data beyond ${sizeBytes} bytes; pass discardData to drop it`);
      }
    }
    // Data beyond the new end must not reappear if the volume grows again: it is
    // trimmed before the monitor shrinks the volume, so a crash in between leaves
    // a volume of the old size without that data, never a shrunk one still holding
    // it. (A write into that range racing the shrink from another gateway is lost
    // with the rest, as discardData says.)
    for (const [start, end] of runs) await this.zeroRange(v, start, end);
    const rec = await this.mon.resizeVolume(name, sizeBytes);
    await this.maps.awaitMap(
      (m) => {
        const x = findVolume(m, rec.id);
        return x === undefined || x.sizeBytes === rec.sizeBytes;
      },
      this.mapWaitMs,
      `the resize of volume "${name}"`,
    );
    return this.toInfo(this.maps.volume(rec.id) ?? rec);
  }

  async rename(name: string, newName: string): Promise<VolumeInfo> {
    this.checkOpen();
    checkName(newName);
    const v = await this.lookup(name);
    if (name === newName) return this.toInfo(v);
    const rec = await this.mon.renameVolume(name, newName);
    await this.maps.awaitMap(
      (m) => {
        const x = findVolume(m, rec.id);
        return x === undefined || x.name === rec.name;
      },
      this.mapWaitMs,
      `the rename of volume "${name}"`,
    );
    return this.toInfo(this.maps.volume(rec.id) ?? rec);
  }

  async delete(name: string): Promise<void> {
    this.checkOpen();
    const v = await this.lookup(name);
    await this.mon.deleteVolume(name);
    await this.maps.awaitMap((m) => !hasVolume(m, v.id), this.mapWaitMs, `the deletion of volume "${name}"`);
    this.statsById.delete(v.id);
  }

  open(name: string): Volume {
    this.checkOpen();
    return new ClusterVolume(this, this.named(name));
  }

  /** Devices belong to the OSDs; cluster capacity is in MonApi.status(). A gateway has none. */
  devices(): DeviceInfo[] {
    return [];
  }

  stats(): StatsSnapshot {
    return {
      atMs: this.wallClockMs(),
      devices: [],
      volumes: this.maps.map.volumes.map((v) => ({ name: v.name, stats: (this.statsById.get(v.id) ?? EMPTY_STATS).snapshot() })),
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    if (this.parts.ownsParts === true) {
      const drained = this.client.close();
      this.maps.close();
      await drained;
      // Its sockets would otherwise keep the process alive (gateway shutdown).
      await this.parts.transport?.close?.();
    }
  }

  /** The shared IoStats of a volume (created on first use). */
  statsFor(id: number): IoStats {
    let s = this.statsById.get(id);
    if (s === undefined) {
      s = new IoStats();
      this.statsById.set(id, s);
    }
    return s;
  }

  private toInfo(v: VolumeRecord): VolumeInfo {
    return {
      name: v.name,
      id: v.id,
      sizeBytes: v.sizeBytes,
      // Allocation lives on the OSDs and is not in the map; reported as 0 until
      // OSDs report per-volume usage to the monitor.
      usedBytes: 0,
      objectSizeBytes: this.maps.pool(v.poolId)?.objectSizeBytes ?? 0,
      createdAt: v.createdAt,
    };
  }

  private named(name: string): VolumeRecord {
    const v = this.maps.volumeNamed(name);
    if (v === undefined) throw new TesseraError('ERR_NOT_FOUND', `no volume named "${name}"`);
    return v;
  }

  /** Like named(), but a miss fetches the map once (another gateway may have just created it). */
  private async lookup(name: string): Promise<VolumeRecord> {
    if (this.maps.volumeNamed(name) === undefined) await this.maps.refresh().catch(() => undefined);
    return this.named(name);
  }

  /** [start, end) runs of [from, to) that the OSDs report allocated (not holes). */
  private async allocatedRuns(v: VolumeRecord, from: number, to: number): Promise<Array<[number, number]>> {
    const extents = await this.client.blockStatus(v, from, to - from);
    const runs: Array<[number, number]> = [];
    let pos = from;
    for (const e of extents) {
      if (!e.hole) runs.push([pos, pos + e.lengthBytes]);
      pos += e.lengthBytes;
    }
    return runs;
  }

  /** Zeroes (mayTrim) [start, end) in sequential windows so a long range stays under the client's admission bound. */
  private async zeroRange(v: VolumeRecord, start: number, end: number): Promise<void> {
    const objBytes = this.maps.pool(v.poolId)?.objectSizeBytes;
    if (objBytes === undefined) return;
    const windowBytes = WINDOW_PIECES * objBytes;
    for (let pos = start; pos < end; ) {
      const stop = Math.min(end, (Math.floor(pos / windowBytes) + 1) * windowBytes);
      await this.client.zero(v, pos, stop - pos, true);
      pos = stop;
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new TesseraError('ERR_CLOSED', 'the volume store is closed');
  }
}

const EMPTY_STATS = new IoStats();

function findVolume(m: ClusterMap, id: number): VolumeRecord | undefined {
  for (const v of m.volumes) if (v.id === id) return v;
  return undefined;
}

function hasVolume(m: ClusterMap, id: number): boolean {
  return findVolume(m, id) !== undefined;
}

/** A live handle on one volume id; see the file header for its rules. */
export class ClusterVolume implements Volume {
  readonly id: number;
  private last: VolumeRecord;
  private readonly ioStats: IoStats;

  constructor(
    private readonly store: ClusterVolumeStore,
    rec: VolumeRecord,
  ) {
    this.id = rec.id;
    this.last = rec;
    this.ioStats = store.statsFor(rec.id);
  }

  name(): string {
    return (this.current() ?? this.last).name;
  }

  sizeBytes(): number {
    return (this.current() ?? this.last).sizeBytes;
  }

  stats(): IoStatsSnapshot {
    return this.ioStats.snapshot();
  }

  read(offsetBytes: number, lengthBytes: number, out: Buffer, outOffset: number): Promise<void> {
    const v = this.check(offsetBytes, lengthBytes);
    if (v instanceof Error) return Promise.reject(v);
    return this.store.client.read(v, offsetBytes, lengthBytes, out, outOffset, this.ioStats);
  }

  /** `fua` needs nothing: an acknowledged write is raft-committed (fsynced on a majority of replicas). */
  write(offsetBytes: number, data: Buffer, _fua: boolean): Promise<void> {
    const v = this.check(offsetBytes, data.length);
    if (v instanceof Error) return Promise.reject(v);
    return this.store.client.write(v, offsetBytes, data, this.ioStats);
  }

  /** Nothing to do: every write that resolved is already durable (raft commit = fsync on a majority). */
  flush(): Promise<void> {
    const v = this.check(0, 0);
    if (v instanceof Error) return Promise.reject(v);
    this.ioStats.flush.record(0, 0);
    return Promise.resolve();
  }

  trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    return this.writeZeroes(offsetBytes, lengthBytes, fua, true);
  }

  writeZeroes(offsetBytes: number, lengthBytes: number, _fua: boolean, mayTrim: boolean): Promise<void> {
    const v = this.check(offsetBytes, lengthBytes);
    if (v instanceof Error) return Promise.reject(v);
    return this.store.client.zero(v, offsetBytes, lengthBytes, mayTrim, this.ioStats);
  }

  blockStatus(offsetBytes: number, lengthBytes: number): Promise<Extent[]> {
    const v = this.check(offsetBytes, lengthBytes);
    if (v instanceof Error) return Promise.reject(v);
    return this.store.client.blockStatus(v, offsetBytes, lengthBytes);
  }

  private current(): VolumeRecord | undefined {
    const r = this.store.maps.volume(this.id);
    if (r !== undefined) this.last = r;
    return r;
  }

  private check(offsetBytes: number, lengthBytes: number): VolumeRecord | TesseraError {
    const v = this.current();
    if (v === undefined) return new TesseraError('ERR_NOT_FOUND', `volume "${this.last.name}" was deleted`);
    if (!Number.isSafeInteger(offsetBytes) || !Number.isSafeInteger(lengthBytes) || offsetBytes < 0 || lengthBytes < 0 || offsetBytes + lengthBytes > v.sizeBytes) {
      return new TesseraError('ERR_RANGE', `range ${offsetBytes}+${lengthBytes} is outside volume "${v.name}"`);
    }
    return v;
  }
}
