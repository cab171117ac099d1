// The daemon's disk pools (SPEC ENG6-ENG9, issue 4): wiring only. Each pool is
// a PoolDevice over member files or block devices, with a local engine on it
// whose volumes join the daemon's one namespace (volume/multi-store.ts), so
// NBD serves them like any other. pools.json (pool/registry.ts) lists each
// pool's device paths for the next start; the members' labels stay the truth.
//
// Invariants:
// - Pool changes run one at a time (a chain), and each is ordered so that a
//   crash leaves a pool that opens: a new device is listed before it is
//   labelled (open skips a device without this pool's label); a removed or
//   replaced device is dropped from the list only after the labels say it is
//   out of service.
// - At most one job (rebuild or drain) per pool; a rebuild asked for while one
//   runs runs again after it (a failure during a rebuild is not missed).
// - A pool that cannot be opened is kept listed as offline with the reason;
//   the daemon and every other pool keep running.
import { randomBytes } from 'node:crypto';
import type { AlarmThresholds, PoolAdmin, PoolInfo, PoolMemberInfo, PoolRebuildInfo } from '../api/types.js';
import { DEFAULT_THRESHOLDS, checkThresholds } from '../pool/alarms.js';
import type { BlockDevice } from '../device/device.js';
import { PartitionDevice, readPartitionTable, writePartitionTable, type LimitClock } from '../device/partition-device.js';
import { PARTITION_ALIGN_BYTES, MAX_PARTITIONS, validatePartitions, type PartitionEntry } from '../device/partition-table.js';
import { LocalEngine } from '../engine/engine.js';
import { FileDevice } from '../io/node/file-device.js';
import { loadSimdParity } from '../io/node/raid-wasm.js';
import { readStateFile, replaceStateFile } from '../io/node/registry-file.js';
import { PoolDevice, type ParityCodec, type RebuildProgress } from '../pool/pool-device.js';
import { parityCountOf, type Protection } from '../pool/records.js';
import {
  DEFAULT_POOL,
  REGISTRY_FILE,
  checkPoolName,
  emptyRegistry,
  formatRegistry,
  parseRegistry,
  poolOfDevice,
  withDevices,
  withAlarms,
  withPool,
  withoutPool,
  type PoolEntry,
  type Registry,
} from '../pool/registry.js';
import { TesseraError } from '../stdx/errors.js';
import type { Logger } from '../stdx/log.js';
import { Prng } from '../stdx/prng.js';
import type { MultiStore } from '../volume/multi-store.js';

/** How often a running job's progress is logged. */
const PROGRESS_LOG_MS = 10_000;
/** The IO limits of partitions run on real time. */
const REAL_CLOCK: LimitClock = { nowMs: () => performance.now(), sleep: (ms) => new Promise((r) => setTimeout(r, ms)) };

/** `/dev/sdb#p2` -> the device and the partition name (undefined for a whole device). */
export function splitPartitionPath(p: string): { base: string; partition: string | undefined } {
  const at = p.lastIndexOf('#');
  return at < 0 ? { base: p, partition: undefined } : { base: p.slice(0, at), partition: p.slice(at + 1) };
}

/** Data chunks per container when not given: leave one device's worth of room for rebuilds, at most 8. */
const STRIPE_WIDTH_MAX_DEFAULT = 8;

interface Job {
  kind: 'rebuild' | 'drain' | 'widen';
  progress: RebuildProgress | null;
  startedAtMs: number;
  /** The pool work itself (what delete waits for). */
  core: Promise<void>;
  /** Everything, including the follow-up registry change (what close waits for). */
  done: Promise<void>;
  error?: string;
  running: boolean;
}

interface Managed {
  entry: PoolEntry;
  pool: PoolDevice | null;
  engine: LocalEngine | null;
  error?: string;
  job: Job | null;
  rebuildAgain: boolean;
  /** Member index being drained (state 'draining'). */
  draining: number | null;
  /** Paths of members whose device was given up (replaced or removed), for pool info. */
  formerPaths: Map<number, string>;
  deleted: boolean;
}

export interface PoolManagerOptions {
  dataDir: string;
  store: MultiStore;
  log: Logger;
  /** The data dir's own device: never a pool member. */
  defaultDevicePath: string;
  onFatal: (err: Error) => void;
  /** Rebuild pacing (share of time while user IO runs); default 0.3. */
  busyShare?: number;
}

export function defaultStripeWidth(protection: Protection, devices: number): number {
  const m = parityCountOf(protection);
  if (protection === 'mirror2' || protection === 'mirror3') return 1;
  return Math.max(1, Math.min(STRIPE_WIDTH_MAX_DEFAULT, devices - m, Math.max(2, devices - m - 1)));
}

export class PoolManager implements PoolAdmin {
  private readonly pools = new Map<string, Managed>();
  /** Devices whose partitions are open: one FileDevice each, closed with its last partition. */
  private readonly parents = new Map<string, { dev: FileDevice; refs: number }>();
  private registry: Registry = emptyRegistry();
  private chain: Promise<unknown> = Promise.resolve();
  private readonly codec: ParityCodec | undefined;
  private closed = false;

  private constructor(private readonly o: PoolManagerOptions) {
    try {
      this.codec = loadSimdParity();
    } catch (err) {
      o.log.warn(`RAID SIMD kernels not loaded, using the slower TypeScript codec: ${(err as Error).message}`);
    }
  }

  private get registryPath(): string {
    return `${this.o.dataDir}/${REGISTRY_FILE}`;
  }

  /** Reads pools.json and opens every pool in it (an unopenable pool stays listed as offline). */
  static async open(o: PoolManagerOptions): Promise<PoolManager> {
    const m = new PoolManager(o);
    const text = await readStateFile(m.registryPath);
    if (text !== undefined) m.registry = parseRegistry(text, m.registryPath);
    for (const entry of m.registry.pools) {
      const managed: Managed = { entry, pool: null, engine: null, job: null, rebuildAgain: false, draining: null, formerPaths: new Map(), deleted: false };
      m.pools.set(entry.name, managed);
      try {
        await m.openPool(managed);
        o.log.info(`opened pool ${entry.name}: ${managed.pool!.protection}, ${entry.devices.length} device(s), ${o.store.list().filter((v) => v.pool === entry.name).length} volume(s)`);
        if (managed.pool!.info().degraded.some((n) => n > 0)) {
          o.log.warn(`pool ${entry.name} is degraded: rebuilding`);
          m.startRebuild(managed);
        }
      } catch (err) {
        managed.error = (err as Error).message;
        o.log.error(`pool ${entry.name} is offline: ${managed.error}`);
      }
    }
    return m;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new TesseraError('ERR_CLOSED', 'the daemon is stopping'));
    const run = this.chain.then(fn);
    this.chain = run.catch(() => {});
    return run;
  }

  private async saveRegistry(next: Registry): Promise<void> {
    await replaceStateFile(this.registryPath, formatRegistry(next));
    this.registry = next;
  }

  private poolOptions(name: string, thresholds: AlarmThresholds = DEFAULT_THRESHOLDS) {
    const log = this.o.log.child(`pool ${name}`);
    return {
      name,
      thresholds,
      rng: new Prng(randomBytes(4).readUInt32LE(0)),
      newUuid: () => randomBytes(16).toString('hex'),
      codec: this.codec,
      onAlarm: (level: string, used: number, was: string) => {
        const text = `capacity ${(used * 100).toFixed(1)} % used: alarm ${was} -> ${level}`;
        if (level === 'ok') log.info(text);
        else if (level === 'warning') log.warn(text);
        else log.error(`${text}; add a device (tessera device add ${name} PATH) or free space`);
      },
    };
  }

  private async openMembers(paths: string[], onMissing: (p: string, why: string) => void): Promise<BlockDevice[]> {
    const devs: BlockDevice[] = [];
    try {
      for (const p of paths) {
        if (!(await FileDevice.exists(splitPartitionPath(p).base))) {
          onMissing(p, 'missing');
          continue;
        }
        try {
          devs.push(await this.openDevice(p));
        } catch (err) {
          // A listed device that cannot be opened (no such partition any more, no
          // access) is left out like a missing one: the pool runs without it.
          onMissing(p, (err as Error).message);
        }
      }
    } catch (err) {
      await Promise.allSettled(devs.map((d) => d.close()));
      throw err;
    }
    return devs;
  }

  /** A whole device, or a partition (`PATH#NAME`) with the IO limits of its table entry. */
  private async openDevice(p: string): Promise<BlockDevice> {
    const { base, partition } = splitPartitionPath(p);
    // Page cache + fdatasync: the pool's own buffers are not page-aligned for O_DIRECT.
    if (partition === undefined) return FileDevice.open(p, 'off');
    let e = this.parents.get(base);
    if (!e) {
      e = { dev: await FileDevice.open(base, 'off'), refs: 0 };
      this.parents.set(base, e);
    }
    const parent = e;
    const release = async (): Promise<void> => {
      if (--parent.refs > 0) return;
      this.parents.delete(base);
      await parent.dev.close();
    };
    parent.refs++;
    try {
      const table = await readPartitionTable(parent.dev);
      const entry = table.entries.find((x) => x.name === partition);
      if (!entry) throw new TesseraError('ERR_NOT_FOUND', `${base} has no partition ${partition} (it has ${table.entries.map((x) => x.name).join(', ') || 'none'})`);
      return new PartitionDevice(parent.dev, entry, REAL_CLOCK, release);
    } catch (err) {
      await release();
      throw err;
    }
  }

  private async openPool(m: Managed): Promise<void> {
    const log = this.o.log.child(`pool ${m.entry.name}`);
    const devs = await this.openMembers(m.entry.devices, (p, why) => log.warn(`device ${p} is ${why === 'missing' ? 'missing' : `left out (${why})`}; the pool runs without it`));
    const skipped: BlockDevice[] = [];
    let pool: PoolDevice;
    try {
      pool = await PoolDevice.open(devs, {
        ...this.poolOptions(m.entry.name, m.entry.alarms),
        expectPoolUuid: m.entry.uuid,
        onSkip: (d, why) => {
          log.warn(`device ${d.path} left out: ${why}`);
          skipped.push(d);
        },
      });
    } catch (err) {
      await Promise.allSettled(devs.map((d) => d.close()));
      throw err;
    }
    await Promise.allSettled(skipped.map((d) => d.close()));
    try {
      const engine = await LocalEngine.open(pool, { log: log.child('engine').fn(), onFatal: this.o.onFatal });
      m.pool = pool;
      m.engine = engine;
      this.o.store.addStore(m.entry.name, engine);
    } catch (err) {
      await pool.close();
      throw err;
    }
  }

  // ------------------------------------------------------------ info

  list(): PoolInfo[] {
    return [this.defaultInfo(), ...[...this.pools.values()].map((m) => this.describe(m))];
  }

  info(name: string): PoolInfo {
    if (name === DEFAULT_POOL) return this.defaultInfo();
    return this.describe(this.get(name));
  }

  private get(name: string): Managed {
    const m = this.pools.get(name);
    if (!m) throw new TesseraError('ERR_NOT_FOUND', `no pool "${name}" (tessera pool list shows the pools)`);
    return m;
  }

  private online(name: string): Managed & { pool: PoolDevice; engine: LocalEngine } {
    const m = this.get(name);
    if (!m.pool || !m.engine) throw new TesseraError('ERR_BUSY', `pool ${name} is offline: ${m.error ?? 'not open'}`);
    return m as Managed & { pool: PoolDevice; engine: LocalEngine };
  }

  private defaultInfo(): PoolInfo {
    const devices = this.o.store.devices().filter((d) => d.pool === DEFAULT_POOL);
    const d = devices[0];
    const used = d?.chunksUsed ?? 0;
    const total = d?.chunksTotal ?? 0;
    return {
      name: DEFAULT_POOL,
      protection: 'none',
      state: 'online',
      stripe: { data: 1, parity: 0 },
      chunkBytes: d?.chunkSizeBytes ?? 0,
      sizeBytes: d?.sizeBytes ?? 0,
      capacity: { usedChunks: used, totalChunks: total, usedFraction: total > 0 ? used / total : 0, alarm: 'ok', thresholds: { ...DEFAULT_THRESHOLDS } },
      volumes: this.o.store.list().filter((v) => v.pool === DEFAULT_POOL).length,
      containers: 0,
      narrowed: 0,
      degraded: { one: 0, more: 0 },
      repairedBlocks: 0,
      members: d ? [{ index: 0, path: d.path, state: 'ok', chunksUsed: used, chunksTotal: total, wear: 0 }] : [],
      rebuild: null,
    };
  }

  private describe(m: Managed): PoolInfo {
    if (!m.pool || !m.engine) {
      return {
        name: m.entry.name, protection: 'none', state: 'offline', error: m.error, stripe: { data: 0, parity: 0 }, chunkBytes: 0, sizeBytes: 0,
        capacity: { usedChunks: 0, totalChunks: 0, usedFraction: 0, alarm: 'ok', thresholds: m.entry.alarms ?? { ...DEFAULT_THRESHOLDS } }, volumes: 0, containers: 0, narrowed: 0, degraded: { one: 0, more: 0 }, repairedBlocks: 0,
        members: m.entry.devices.map((path, index) => ({ index, path, state: 'missing', chunksUsed: 0, chunksTotal: 0, wear: 0 })), rebuild: null,
      };
    }
    const pool = m.pool;
    const info = pool.info();
    const cap = pool.capacity();
    const members: PoolMemberInfo[] = info.members.map((s) => {
      const dev = pool.memberDevice(s.index);
      const used = s.totalChunks - s.freeChunks;
      // A member missing since the start has no known uuid, so its chunks show
      // only as unknown positions: count it as holding some while any container is degraded.
      const holds = s.known ? pool.chunksOn(s.index) > 0 : info.degraded[1] + info.degraded[2] > 0;
      const state: PoolMemberInfo['state'] = m.draining === s.index ? 'draining' : s.usable ? 'ok' : !holds ? 'out' : s.present ? 'failed' : 'missing';
      return { index: s.index, path: dev?.path ?? m.formerPaths.get(s.index) ?? '', state, chunksUsed: used, chunksTotal: s.totalChunks, wear: s.totalChunks > 0 ? s.wear : 0 };
    });
    const degraded = { one: info.degraded[1], more: info.degraded[2] };
    return {
      name: m.entry.name,
      protection: pool.protection,
      state: degraded.one + degraded.more > 0 ? 'degraded' : 'online',
      stripe: { data: pool.dataCount, parity: parityCountOf(pool.protection) },
      chunkBytes: pool.chunkBytes,
      sizeBytes: pool.sizeBytes,
      capacity: { ...cap, thresholds: pool.thresholds },
      volumes: m.engine.list().length,
      containers: info.containers,
      narrowed: pool.narrowedContainers(),
      degraded,
      repairedBlocks: m.engine.devices()[0]?.repairedBlocks ?? 0,
      members,
      rebuild: this.jobInfo(m),
    };
  }

  private jobInfo(m: Managed): PoolRebuildInfo | null {
    const j = m.job;
    if (!j) return null;
    const p = j.running ? m.pool?.rebuildProgress() ?? j.progress : j.progress;
    return {
      running: j.running,
      kind: j.kind,
      containersTotal: p?.containersTotal ?? 0,
      containersDone: p?.containersDone ?? 0,
      unrecoverable: p?.unrecoverable ?? 0,
      noRoom: p?.noRoom ?? 0,
      bytesTotal: p?.bytesTotal ?? 0,
      bytesDone: p?.bytesDone ?? 0,
      etaMs: j.running ? (p?.etaMs ?? null) : 0,
      elapsedMs: Math.round(performance.now() - j.startedAtMs),
      ...(j.error !== undefined ? { error: j.error } : {}),
    };
  }

  // ------------------------------------------------------------ changes

  create(req: { name: string; devices: string[]; protection: Protection; stripeWidth?: number; deviceSizeBytes?: number; alarms?: AlarmThresholds }): Promise<PoolInfo> {
    return this.serial(async () => {
      checkPoolName(req.name);
      if (req.alarms) checkThresholds(req.alarms);
      if (this.pools.has(req.name)) throw new TesseraError('ERR_EXISTS', `pool "${req.name}" already exists`);
      this.checkNewDevices(req.devices);
      // Partitions of one device are one failure domain: width and redundancy count domains.
      const domains = new Set(req.devices.map((d) => splitPartitionPath(d).base)).size;
      if (domains < 1 + parityCountOf(req.protection)) {
        throw new TesseraError('ERR_INVALID', `${req.protection} needs at least ${1 + parityCountOf(req.protection)} devices, got ${domains}${domains < req.devices.length ? ` (partitions of one device count once)` : ''}`);
      }
      const stripeWidth = req.stripeWidth ?? defaultStripeWidth(req.protection, domains);
      const created = await this.createMissing(req.devices, req.deviceSizeBytes);
      let devs: BlockDevice[] = [];
      try {
        devs = await this.openMembers(req.devices, (p, why) => {
          throw new TesseraError('ERR_NOT_FOUND', why === 'missing' ? `device ${p} does not exist` : why);
        });
        const uuid = randomBytes(16).toString('hex');
        let first = true;
        await PoolDevice.format(devs, {
          protection: req.protection,
          dataCount: stripeWidth,
          dataZeroed: created.length === req.devices.length,
          newUuid: () => (first ? ((first = false), uuid) : randomBytes(16).toString('hex')),
        });
        const pool = await PoolDevice.open(devs, this.poolOptions(req.name, req.alarms));
        devs = [];
        try {
          await LocalEngine.format(pool, { dataZeroed: true });
        } finally {
          await pool.close();
        }
        const entry: PoolEntry = { name: req.name, uuid, devices: [...req.devices], ...(req.alarms ? { alarms: { ...req.alarms } } : {}) };
        const next = withPool(this.registry, entry);
        const managed: Managed = { entry, pool: null, engine: null, job: null, rebuildAgain: false, draining: null, formerPaths: new Map(), deleted: false };
        await this.openPool(managed);
        try {
          await this.saveRegistry(next);
        } catch (err) {
          this.o.store.removeStore(req.name);
          await managed.engine!.close();
          throw err;
        }
        this.pools.set(req.name, managed);
        this.o.log.info(`created pool ${req.name}: ${req.protection} ${stripeWidth}+${parityCountOf(req.protection)} on ${req.devices.join(', ')}`);
        return this.describe(managed);
      } catch (err) {
        await Promise.allSettled(devs.map((d) => d.close()));
        for (const p of created) await FileDevice.remove(p);
        throw err;
      }
    });
  }

  /**
   * Paths must be new to every pool, distinct, and not the data dir's device; a
   * whole device and a partition of it never both serve (in one pool or two).
   */
  private checkNewDevices(paths: string[]): void {
    if (paths.length === 0) throw new TesseraError('ERR_INVALID', 'give at least one device');
    const seen: string[] = [];
    const clash = (a: string, b: string): boolean => {
      const x = splitPartitionPath(a);
      const y = splitPartitionPath(b);
      return x.base === y.base && (x.partition === undefined || y.partition === undefined || x.partition === y.partition);
    };
    for (const p of paths) {
      if (!p.startsWith('/')) throw new TesseraError('ERR_INVALID', `device path ${p} must be absolute`);
      const twice = seen.find((q) => clash(p, q));
      if (twice !== undefined) throw new TesseraError('ERR_INVALID', twice === p ? `device ${p} is given twice` : `${p} and ${twice} are the same device`);
      seen.push(p);
      if (splitPartitionPath(p).base === this.o.defaultDevicePath) throw new TesseraError('ERR_INVALID', `device ${p} is the data dir's own device`);
      for (const entry of this.registry.pools) {
        const d = entry.devices.find((q) => clash(p, q));
        if (d !== undefined) throw new TesseraError('ERR_EXISTS', `device ${p} is already in pool ${entry.name}${d === p ? '' : ` (as ${d})`}`);
      }
    }
  }

  /**
   * Splits a device into `count` equal partitions p1..pN (DEV4), each with the
   * given IO limits, by writing its partition table. Refused for a device (or
   * a partition of it) that serves a pool; a missing file is created sparse.
   */
  partition(devicePath: string, o: { count: number; iopsLimit?: number; bandwidthBytesPerSec?: number; deviceSizeBytes?: number }): Promise<{ path: string; partitions: Array<PartitionEntry & { path: string }> }> {
    return this.serial(async () => {
      if (splitPartitionPath(devicePath).partition !== undefined) throw new TesseraError('ERR_INVALID', `${devicePath} is a partition; give the whole device`);
      this.checkNewDevices([devicePath]);
      if (!(Number.isInteger(o.count) && o.count >= 1 && o.count <= MAX_PARTITIONS)) throw new TesseraError('ERR_INVALID', `the partition count must be 1..${MAX_PARTITIONS}`);
      const created = await this.createMissing([devicePath], o.deviceSizeBytes);
      try {
        const dev = await FileDevice.open(devicePath, 'off');
        try {
          const each = Math.floor((dev.sizeBytes - PARTITION_ALIGN_BYTES) / o.count / PARTITION_ALIGN_BYTES) * PARTITION_ALIGN_BYTES;
          if (each < PARTITION_ALIGN_BYTES) throw new TesseraError('ERR_INVALID', `${devicePath} (${dev.sizeBytes} bytes) is too small for ${o.count} partitions of at least 1 MiB`);
          const entries: PartitionEntry[] = Array.from({ length: o.count }, (_, i) => ({
            name: `p${i + 1}`,
            startBytes: PARTITION_ALIGN_BYTES + i * each,
            sizeBytes: each,
            iopsLimit: o.iopsLimit ?? 0,
            bandwidthBytesPerSec: o.bandwidthBytesPerSec ?? 0,
          }));
          validatePartitions(entries, dev.sizeBytes);
          let sequence = 1;
          try {
            sequence = (await readPartitionTable(dev)).sequence + 1;
          } catch {
            // no valid table yet
          }
          await writePartitionTable(dev, { sequence, entries });
          this.o.log.info(`partitioned ${devicePath}: ${o.count} x ${each} bytes${o.iopsLimit ? `, ${o.iopsLimit} IOPS` : ''}${o.bandwidthBytesPerSec ? `, ${o.bandwidthBytesPerSec} bytes/s` : ''} each`);
          return { path: devicePath, partitions: entries.map((e) => ({ ...e, path: `${devicePath}#${e.name}` })) };
        } finally {
          await dev.close();
        }
      } catch (err) {
        for (const p of created) await FileDevice.remove(p);
        throw err;
      }
    });
  }

  /** Creates the paths that do not exist as sparse files; returns them. */
  private async createMissing(paths: string[], sizeBytes: number | undefined): Promise<string[]> {
    const created: string[] = [];
    try {
      for (const p of paths) {
        if (await FileDevice.exists(splitPartitionPath(p).base)) continue;
        if (splitPartitionPath(p).partition !== undefined) throw new TesseraError('ERR_NOT_FOUND', `device ${splitPartitionPath(p).base} does not exist (partition it first: tessera device partition)`);
        if (sizeBytes === undefined) throw new TesseraError('ERR_NOT_FOUND', `device ${p} does not exist (give a size to create it as a sparse file)`);
        await FileDevice.create(p, sizeBytes);
        created.push(p);
      }
    } catch (err) {
      for (const p of created) await FileDevice.remove(p);
      throw err;
    }
    return created;
  }

  setAlarms(name: string, alarms: AlarmThresholds): Promise<PoolInfo> {
    return this.serial(async () => {
      checkThresholds(alarms);
      const m = this.get(name);
      await this.saveRegistry(withAlarms(this.registry, name, alarms));
      m.entry = this.registry.pools.find((p) => p.name === name)!;
      m.pool?.setThresholds(alarms);
      this.o.log.info(`pool ${name}: capacity alarms at ${Math.round(alarms.warning * 100)} % and ${Math.round(alarms.critical * 100)} %`);
      return this.describe(m);
    });
  }

  delete(name: string): Promise<void> {
    return this.serial(async () => {
      const m = this.get(name);
      if (m.engine && m.engine.list().length > 0) this.o.store.removeStore(name); // ERR_BUSY naming the volumes
      await this.saveRegistry(withoutPool(this.registry, name));
      m.deleted = true;
      this.pools.delete(name);
      if (m.job?.running) {
        // Nothing left to protect: stop the job (it leaves no container mid-copy).
        m.rebuildAgain = false;
        m.pool?.stopRebuild();
        await m.job.core;
      }
      if (m.engine) {
        if (this.o.store.hasStore(name)) this.o.store.removeStore(name);
        await m.engine.close();
      }
      this.o.log.info(`deleted pool ${name} (its devices are free again)`);
    });
  }

  addDevice(poolName: string, devicePath: string, deviceSizeBytes?: number): Promise<PoolInfo> {
    return this.serial(async () => {
      const m = this.online(poolName);
      this.checkNewDevices([devicePath]);
      const index = await this.attach(m, devicePath, deviceSizeBytes);
      this.o.log.info(`added device ${devicePath} to pool ${poolName} as member ${index}`);
      if (m.pool.info().degraded.some((n) => n > 0)) this.startRebuild(m);
      else if (m.pool.narrowedContainers() > 0 && !m.job?.running) {
        const pool = m.pool;
        this.runJob(m, 'widen', () => pool.widen({ busyShare: this.o.busyShare }));
      }
      return this.describe(m);
    });
  }

  /** Lists, creates if needed, opens and labels a new member; returns its index. */
  private async attach(m: Managed & { pool: PoolDevice }, devicePath: string, deviceSizeBytes: number | undefined): Promise<number> {
    const created = await this.createMissing([devicePath], deviceSizeBytes);
    // Listed first: a crash before the label is written leaves a listed device
    // without this pool's label, which open leaves out (never the reverse).
    await this.saveRegistry(withDevices(this.registry, m.entry.name, [...m.entry.devices, devicePath]));
    m.entry = this.registry.pools.find((p) => p.name === m.entry.name)!;
    let dev: BlockDevice | undefined;
    try {
      dev = await this.openDevice(devicePath);
      // A file created just now reads as zeros; anything else may hold old data.
      return await m.pool.addMember(dev, { dataZeroed: created.length === 1 });
    } catch (err) {
      await dev?.close();
      await this.saveRegistry(withDevices(this.registry, m.entry.name, m.entry.devices.filter((p) => p !== devicePath)));
      m.entry = this.registry.pools.find((p) => p.name === m.entry.name)!;
      for (const p of created) await FileDevice.remove(p);
      throw err;
    }
  }

  /** The pool and member index of a device path; index -1: listed, but not open (missing or left out at start). */
  private locate(devicePath: string): { m: Managed & { pool: PoolDevice; engine: LocalEngine }; index: number } {
    const entry = poolOfDevice(this.registry, devicePath);
    if (!entry) throw new TesseraError('ERR_NOT_FOUND', `device ${devicePath} is in no pool (tessera pool info NAME lists a pool's devices)`);
    const m = this.online(entry.name);
    const members = m.pool.info().members;
    return { m, index: members.findIndex((s) => m.pool.memberDevice(s.index)?.path === devicePath) };
  }

  /** Unlists a path that is not open (its member, if any, is out of service already). */
  private async unlist(m: Managed, devicePath: string): Promise<void> {
    await this.saveRegistry(withDevices(this.registry, m.entry.name, m.entry.devices.filter((p) => p !== devicePath)));
    m.entry = this.registry.pools.find((p) => p.name === m.entry.name)!;
  }

  failDevice(devicePath: string): Promise<PoolInfo> {
    return this.serial(async () => {
      const { m, index } = this.locate(devicePath);
      if (index < 0 || (!m.pool.info().members[index].usable && m.draining !== index)) throw new TesseraError('ERR_INVALID', `device ${devicePath} is already out of service`);
      await m.pool.failMember(index);
      this.o.log.warn(`device ${devicePath} (member ${index} of pool ${m.entry.name}) failed by the operator`);
      this.startRebuild(m);
      return this.describe(m);
    });
  }

  replaceDevice(devicePath: string, newPath: string, deviceSizeBytes?: number): Promise<PoolInfo> {
    return this.serial(async () => {
      const { m, index } = this.locate(devicePath);
      this.checkNewDevices([newPath]);
      if (m.job?.running && m.job.kind === 'drain') throw new TesseraError('ERR_BUSY', `pool ${m.entry.name} is draining a device; wait for it`);
      // The new device first: a bad new path must not cost the old device its place.
      const added = await this.attach(m, newPath, deviceSizeBytes);
      if (index < 0) await this.unlist(m, devicePath);
      else {
        if (m.pool.info().members[index].usable) await m.pool.failMember(index);
        await this.forget(m, index, devicePath);
      }
      this.o.log.info(`replaced device ${devicePath} (member ${index}) of pool ${m.entry.name} by ${newPath} (member ${added}): rebuilding`);
      this.startRebuild(m);
      return this.describe(m);
    });
  }

  /** Drops an out-of-service member's device: closed and unlisted. */
  private async forget(m: Managed & { pool: PoolDevice }, index: number, devicePath: string): Promise<void> {
    const dev = m.pool.detachMember(index);
    await dev?.close();
    m.formerPaths.set(index, devicePath);
    await this.saveRegistry(withDevices(this.registry, m.entry.name, m.entry.devices.filter((p) => p !== devicePath)));
    m.entry = this.registry.pools.find((p) => p.name === m.entry.name)!;
  }

  removeDevice(devicePath: string): Promise<PoolInfo> {
    return this.serial(async () => {
      const { m, index } = this.locate(devicePath);
      if (index < 0) {
        await this.unlist(m, devicePath);
        this.o.log.info(`removed device ${devicePath} (not open) from pool ${m.entry.name}`);
        return this.describe(m);
      }
      if (m.job?.running) throw new TesseraError('ERR_BUSY', `pool ${m.entry.name} is running a ${m.job.kind}; remove the device when it is done (tessera pool rebuild ${m.entry.name} --wait)`);
      m.pool.checkRemovable(index);
      if (!m.pool.info().members[index].usable) {
        await m.pool.removeMember(index);
        await this.forget(m, index, devicePath);
        this.o.log.info(`removed device ${devicePath} (out of service) from pool ${m.entry.name}`);
        return this.describe(m);
      }
      m.draining = index;
      this.runJob(
        m,
        'drain',
        async () => {
          try {
            return await m.pool.removeMember(index, { busyShare: this.o.busyShare });
          } finally {
            m.draining = null;
          }
        },
        async () => {
          await this.forget(m, index, devicePath);
          this.o.log.info(`removed device ${devicePath} from pool ${m.entry.name}: its chunks moved to the other devices`);
        },
      );
      return this.describe(m);
    });
  }

  rebuild(name: string): PoolInfo {
    const m = this.online(name);
    if (!m.job?.running) this.startRebuild(m);
    return this.describe(m);
  }

  private startRebuild(m: Managed): void {
    if (!m.pool) return;
    if (m.job?.running) {
      m.rebuildAgain = true;
      return;
    }
    const pool = m.pool;
    this.runJob(m, 'rebuild', () => pool.rebuild({ busyShare: this.o.busyShare }));
  }

  /**
   * Runs `fn` (pool work) in the background as the pool's job; then, if it
   * succeeded, `after` (a registry change) as a serial operation, unless the
   * pool was deleted or the daemon is stopping meanwhile. `delete` waits for
   * the pool work only, never for `after` (which would wait for it in turn).
   */
  private runJob(m: Managed, kind: Job['kind'], fn: () => Promise<RebuildProgress | null>, after?: () => Promise<void>): void {
    const log = this.o.log.child(`pool ${m.entry.name}`);
    const job: Job = { kind, progress: null, startedAtMs: performance.now(), running: true, core: Promise.resolve(), done: Promise.resolve() };
    m.job = job;
    m.rebuildAgain = false;
    const timer = setInterval(() => {
      const p = m.pool?.rebuildProgress();
      if (p) log.info(`${kind}: ${p.containersDone}/${p.containersTotal} containers, ${Math.round((100 * p.bytesDone) / Math.max(1, p.bytesTotal))} %`);
    }, PROGRESS_LOG_MS);
    timer.unref();
    let ok = false;
    job.core = (async () => {
      try {
        job.progress = await fn();
        ok = true;
        const p = job.progress;
        if (p) {
          if (kind === 'widen') {
            log.info(`widen done: ${p.containersDone} run(s) of extents now in full-width containers${p.noRoom > 0 ? `; ${p.noRoom} stay narrow until more devices have room` : ''}`);
          } else {
            const note = [p.unrecoverable > 0 ? `${p.unrecoverable} container(s) lost beyond their parity` : '', p.noRoom > 0 ? `${p.noRoom} container(s) found no device with room: add a device` : ''].filter(Boolean).join('; ');
            (note ? log.warn.bind(log) : log.info.bind(log))(`${kind} done: ${p.containersDone} container(s), ${p.bytesDone} bytes${note ? `; ${note}` : ''}`);
          }
        }
      } catch (err) {
        job.error = (err as Error).message;
        job.progress = m.pool?.rebuildProgress() ?? null;
        log.error(`${kind} failed: ${job.error}`);
      } finally {
        clearInterval(timer);
        job.running = false;
      }
    })();
    job.done = (async () => {
      await job.core;
      if (ok && after && !m.deleted && !this.closed) {
        await this.serial(async () => {
          if (!m.deleted) await after();
        }).catch((err: Error) => log.error(`${kind}: ${err.message}`));
      }
      if (m.deleted || this.closed || m.job !== job) return;
      if (m.rebuildAgain) this.startRebuild(m);
      else if (kind !== 'widen' && ok && m.pool && m.pool.narrowedContainers() > 0) {
        // Containers made narrow while devices were short: widen them now that there may be room.
        const pool = m.pool;
        this.runJob(m, 'widen', () => pool.widen({ busyShare: this.o.busyShare }));
      }
    })();
  }

  /** Waits for running jobs to stop (the stores are closed by the MultiStore). */
  async close(): Promise<void> {
    this.closed = true;
    for (const m of this.pools.values()) if (m.job?.running) m.pool?.stopRebuild();
    await this.chain;
    await Promise.allSettled([...this.pools.values()].map((m) => m.job?.done));
  }
}
