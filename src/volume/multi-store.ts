// One VolumeStore over several named stores: the daemon's default store (the
// engine on the data dir's device) and one engine per disk pool (main/pools.ts).
// Gateways and the API see a single namespace of volumes; each volume lives in
// exactly one store, and VolumeInfo.pool names it.
//
// Invariants: volume names are unique across all stores (create and rename
// check every store, under one lock, so two pools cannot gain the same name);
// a store is removed only when it holds no volume; Volume.id is made unique by
// giving each store its own id range (ids stay stable across restarts as long
// as the pools are registered in the same order).
import { TesseraError } from '../stdx/errors.js';
import type { DeviceInfo, StatsSnapshot, Volume, VolumeInfo, VolumeStore } from './types.js';

/** Ids of a store's volumes are offset by its slot times this (engines have far fewer volumes). */
const ID_RANGE_PER_STORE = 1 << 20;

interface Entry {
  name: string;
  store: VolumeStore;
  slot: number;
}

export class MultiStore implements VolumeStore {
  private readonly stores = new Map<string, Entry>();
  private nextSlot = 0;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(readonly defaultPool: string, defaultStore: VolumeStore) {
    this.addStore(defaultPool, defaultStore);
  }

  /** Registers a pool's store; its volumes appear at once. */
  addStore(name: string, store: VolumeStore): void {
    if (this.stores.has(name)) throw new TesseraError('ERR_EXISTS', `pool "${name}" already exists`);
    for (const v of store.list()) {
      if (this.find(v.name)) throw new TesseraError('ERR_EXISTS', `pool "${name}" holds volume "${v.name}", which another pool holds too; rename one of them first`);
    }
    this.stores.set(name, { name, store, slot: this.nextSlot++ });
  }

  /** Unregisters an empty pool's store (the caller closes it). */
  removeStore(name: string): VolumeStore {
    const e = this.stores.get(name);
    if (!e) throw new TesseraError('ERR_NOT_FOUND', `no pool "${name}"`);
    if (name === this.defaultPool) throw new TesseraError('ERR_INVALID', `the default pool "${name}" cannot be removed`);
    const n = e.store.list().length;
    if (n > 0) throw new TesseraError('ERR_BUSY', `pool "${name}" still holds ${n} volume(s); delete them first`);
    this.stores.delete(name);
    return e.store;
  }

  hasStore(name: string): boolean {
    return this.stores.has(name);
  }

  poolOf(volumeName: string): string {
    return this.owner(volumeName).name;
  }

  private find(volumeName: string): Entry | undefined {
    for (const e of this.stores.values()) if (e.store.list().some((v) => v.name === volumeName)) return e;
    return undefined;
  }

  private owner(volumeName: string): Entry {
    const e = this.find(volumeName);
    if (!e) throw new TesseraError('ERR_NOT_FOUND', `volume "${volumeName}" does not exist`);
    return e;
  }

  private tag(e: Entry, v: VolumeInfo): VolumeInfo {
    return { ...v, id: e.slot * ID_RANGE_PER_STORE + v.id, pool: e.name };
  }

  /** Name checks and the change run one at a time, so no name can be taken twice. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn);
    this.chain = run.catch(() => {});
    return run;
  }

  list(): VolumeInfo[] {
    return [...this.stores.values()].flatMap((e) => e.store.list().map((v) => this.tag(e, v))).sort((a, b) => a.name.localeCompare(b.name));
  }

  info(name: string): VolumeInfo {
    const e = this.owner(name);
    return this.tag(e, e.store.info(name));
  }

  create(name: string, sizeBytes: number, opts: { pool?: string } = {}): Promise<VolumeInfo> {
    return this.serial(async () => {
      const pool = opts.pool ?? this.defaultPool;
      const e = this.stores.get(pool);
      if (!e) throw new TesseraError('ERR_NOT_FOUND', `no pool "${pool}" (tessera pool list shows the pools)`);
      const other = this.find(name);
      if (other) throw new TesseraError('ERR_EXISTS', `volume "${name}" already exists${other.name === pool ? '' : ` (in pool ${other.name})`}`);
      return this.tag(e, await e.store.create(name, sizeBytes));
    });
  }

  async resize(name: string, sizeBytes: number, opts?: { discardData?: boolean }): Promise<VolumeInfo> {
    const e = this.owner(name);
    return this.tag(e, await e.store.resize(name, sizeBytes, opts));
  }

  rename(name: string, newName: string): Promise<VolumeInfo> {
    return this.serial(async () => {
      const e = this.owner(name);
      if (newName !== name && this.find(newName)) throw new TesseraError('ERR_EXISTS', `volume "${newName}" already exists`);
      return this.tag(e, await e.store.rename(name, newName));
    });
  }

  delete(name: string): Promise<void> {
    return this.serial(() => this.owner(name).store.delete(name));
  }

  open(name: string): Volume {
    return this.owner(name).store.open(name);
  }

  devices(): DeviceInfo[] {
    return [...this.stores.values()].flatMap((e) => e.store.devices().map((d) => ({ ...d, pool: e.name })));
  }

  stats(): StatsSnapshot {
    const parts = [...this.stores.values()].map((e) => e.store.stats());
    return { atMs: Date.now(), devices: parts.flatMap((p) => p.devices), volumes: parts.flatMap((p) => p.volumes) };
  }

  /** Closes every store; reports the first failure after trying all. */
  async close(): Promise<void> {
    const results = await Promise.allSettled([...this.stores.values()].map((e) => e.store.close()));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }
}
