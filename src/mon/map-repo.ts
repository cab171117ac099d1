// The cluster map in the MetaStore: one JSON value under MAP_KEY, changed only
// by compare-and-set on the revision it was read at.
//
// Stored keys (relative to the store; EtcdStore adds its prefix, default
// 'tessera/', so in etcd the map is at 'tessera/mon/map'):
//   mon/map            the ClusterMap as UTF-8 JSON (map-types.ts), at most
//                      VALUE_BYTES_MAX bytes; validated by parseClusterMap on
//                      every read.
//   election/mon/...   (etcd) / '\0election/mon' (embedded): the monitors'
//                      election (MON_ELECTION); the candidate id is JSON
//                      {"id","addr"} so a standby can name the active one.
//
// Invariants:
// - No lost updates: update() applies its function to the map at revision R and
//   writes only if the key is still at R; on a conflict it re-reads and applies
//   the function again to the newer map (bounded retries). So even two monitors
//   that both believe they are active serialize through the store, and ids and
//   epochs stay unique and increasing.
// - One update at a time per MapRepo (MonService serializes its writes); two
//   repos, in one process or two, may race freely.
// - A written map has a larger epoch than the one it replaces and passes the
//   map invariants (a bug never reaches the store).
import { assert, fail } from '../stdx/assert.js';
import { TesseraError } from '../stdx/errors.js';
import { VALUE_BYTES_MAX, type MetaStore } from './store.js';
import { mapInvariantErrors, parseClusterMap } from './map.js';
import type { ClusterMap } from './map-types.js';

export const MAP_KEY = 'mon/map';
export const MON_ELECTION = 'mon';
/** Re-reads after CAS conflicts before an update gives up with ERR_BUSY. */
export const CAS_RETRIES_MAX = 16;
/** Upper bound of the wait after a lost compare-and-set race (ms). */
export const CAS_BACKOFF_MS_MAX = 20;

function defaultCasBackoff(attempt: number): Promise<void> {
  if (attempt === 0) return Promise.resolve(); // the first retry is immediate: most races are single
  const capMs = Math.min(CAS_BACKOFF_MS_MAX, 2 ** attempt);
  return new Promise((resolve) => setTimeout(resolve, Math.random() * capMs));
}

export function encodeMap(map: ClusterMap): Buffer {
  const value = Buffer.from(JSON.stringify(map), 'utf8');
  if (value.length > VALUE_BYTES_MAX) {
    throw new TesseraError('ERR_LIMIT', `the cluster map would be ${value.length} bytes, over the store's ${VALUE_BYTES_MAX}-byte value limit (fewer PGs or volumes)`);
  }
  return value;
}

export function decodeMap(value: Buffer): ClusterMap {
  let json: unknown;
  try {
    json = JSON.parse(value.toString('utf8'));
  } catch (err) {
    throw new TesseraError('ERR_FORMAT', `stored cluster map at ${MAP_KEY} is not JSON`, { cause: err });
  }
  return parseClusterMap(json, `stored cluster map at ${MAP_KEY}`);
}

export interface UpdateResult {
  map: ClusterMap;
  /** False when the function returned the map unchanged (nothing written). */
  changed: boolean;
}

export class MapRepo {
  private current: ClusterMap | null = null;
  /** Revision of MAP_KEY that `current` was read or written at; null: key absent (as far as we know). */
  private revision: bigint | null = null;

  constructor(
    private readonly store: MetaStore,
    /**
     * Waits after the attempt-th lost race (jittered, growing): two writers that
     * retry at once can keep beating each other (a split brain of two monitors
     * lost 17 races in a row in a test). Injectable for deterministic tests.
     */
    private readonly backoff: (attempt: number) => Promise<void> = defaultCasBackoff,
  ) {}

  /** The map as last read or written here (null before load or when none is stored). */
  get map(): ClusterMap | null {
    return this.current;
  }

  /** Reads the stored map (null when none exists yet). */
  async load(): Promise<ClusterMap | null> {
    const got = await this.store.get(MAP_KEY);
    if (got === null) {
      this.current = null;
      this.revision = null;
      return null;
    }
    this.current = decodeMap(got.value);
    this.revision = got.revision;
    return this.current;
  }

  /**
   * Applies fn to the current map (null when none is stored) and stores the
   * result with compare-and-set; on conflict re-reads and applies fn again.
   * fn must be pure (it may run several times) and return its argument to mean
   * "no change". Errors thrown by fn propagate and nothing is written.
   */
  async update(fn: (cur: ClusterMap | null) => ClusterMap): Promise<UpdateResult> {
    for (let attempt = 0; attempt <= CAS_RETRIES_MAX; attempt++) {
      const cur = this.current;
      const next = fn(cur);
      if (next === cur) return { map: next, changed: false };
      if (!(cur === null || next.epoch > cur.epoch)) fail(`a map update must raise the epoch (${cur?.epoch} -> ${next.epoch})`);
      const errs = mapInvariantErrors(next);
      if (!(errs.length === 0)) fail(`refusing to store an invalid map: ${errs.slice(0, 3).join('; ')}`);
      const res = await this.store.compareAndSet(MAP_KEY, this.revision, encodeMap(next));
      if (res.ok) {
        this.current = next;
        this.revision = res.revision;
        return { map: next, changed: true };
      }
      await this.backoff(attempt);
      await this.load(); // someone else wrote: apply fn again to what is there now
    }
    throw new TesseraError('ERR_BUSY', `cluster map update lost ${CAS_RETRIES_MAX + 1} compare-and-set races in a row`);
  }
}
