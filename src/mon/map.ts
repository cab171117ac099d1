// The cluster map's pure transitions (SPEC CLU1, CLU3): every function takes a
// ClusterMap and returns a NEW map with epoch + 1, or the very same object when
// nothing changes (callers test `next === map` to skip a store write). No IO,
// no clock, no randomness: times and ids come in as arguments, so the monitor,
// tests and the simulation get identical results from identical inputs.
//
// Stored form: the map is one JSON value (see map-repo.ts for its key); a map
// read from a store or the network goes through parseClusterMap (a zod schema
// plus the cross-field invariants below) before anything trusts it.
//
// Invariants (checked by mapInvariantErrors; map-types.ts states them too):
// - epoch >= 1 and grows by one per committed change (several per batch).
// - OSD, pool and volume ids are positive, unique and below next*Id; ids are
//   never reused (next*Id only grows). Pool and volume names are unique.
// - pgs[poolId] has exactly pool.pgCount records, record k has pg === k, its
//   OSDs exist, are distinct and at most pool.size, and epoch <= map epoch.
// - A PG's acting set (`osds`) is recomputed only when the set of `in` OSDs,
//   their weights or hosts change, and a PG keeps its old record (list order
//   and epoch) unless its SET of OSDs changed: a PG epoch bump fences every
//   client and peer of that PG, and a set change forces raft membership
//   changes, so neither happens without data having to move.
// - `up` never changes acting sets: an OSD that stops heartbeating stays in its
//   PGs (raft keeps going on the majority) until it is marked out.
import { z } from 'zod';
import { TesseraError } from '../stdx/errors.js';
import { PG_COUNT_MAX, POOL_SIZE_MAX, placePgs, type PlacementOsd } from '../placement/placement.js';
import type { ClusterMap, OsdRecord, PgRecord, PoolRecord, VolumeRecord } from './map-types.js';
import type { OsdBootRequest, PoolCreateRequest } from './api-types.js';

/** Volume sizes and offsets are whole sectors. */
export const SECTOR_BYTES = 512;
/** Largest volume (1 PiB): object indexes and byte offsets stay far inside 2^53. */
export const VOLUME_SIZE_BYTES_MAX = 2 ** 50;
/** Default object size of a pool: a volume is cut into objects of this size. */
export const OBJECT_SIZE_BYTES_DEFAULT = 4 * 1024 * 1024;
export const OBJECT_SIZE_BYTES_MIN = 64 * 1024;
export const OBJECT_SIZE_BYTES_MAX = 64 * 1024 * 1024;
/** Bounds that keep one map small enough for one store value (VALUE_BYTES_MAX). */
export const OSDS_MAX = 4096;
export const POOLS_MAX = 64;
export const VOLUMES_MAX = 100_000;
/** Same shape as volume names in the rest of Tessera (NBD export names, CLI arguments). */
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const HOST_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$/;
/** Longest OSD uuid / address accepted. */
const TEXT_BYTES_MAX = 256;

// ---------- schema ----------

const id = z.int().positive().max(Number.MAX_SAFE_INTEGER);
const count = z.int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const text = z.string().min(1).max(TEXT_BYTES_MAX);

export const OsdRecordSchema = z.strictObject({
  id,
  uuid: text,
  host: z.string().regex(HOST_RE),
  addr: text,
  port: z.int().min(0).max(65535),
  weight: z.number().nonnegative().max(1e6),
  up: z.boolean(),
  in: z.boolean(),
  outByOperator: z.boolean().optional(),
  capacityBytes: count,
});

export const PoolRecordSchema = z.strictObject({
  id,
  name: z.string().regex(NAME_RE),
  type: z.literal('replicated'),
  size: z.int().min(1).max(POOL_SIZE_MAX),
  minSize: z.int().min(1).max(POOL_SIZE_MAX),
  pgCount: z.int().min(1).max(PG_COUNT_MAX),
  failureDomain: z.enum(['host', 'osd']),
  objectSizeBytes: z.int().min(OBJECT_SIZE_BYTES_MIN).max(OBJECT_SIZE_BYTES_MAX),
  createdEpoch: id,
});

export const PgRecordSchema = z.strictObject({
  pg: count,
  osds: z.array(id).max(POOL_SIZE_MAX),
  epoch: id,
});

export const VolumeRecordSchema = z.strictObject({
  id,
  name: z.string().regex(NAME_RE),
  poolId: id,
  sizeBytes: z.int().positive().max(VOLUME_SIZE_BYTES_MAX),
  createdAt: z.string().max(64),
});

const ClusterMapShape = z.strictObject({
  fsid: text,
  epoch: id,
  osds: z.array(OsdRecordSchema).max(OSDS_MAX),
  pools: z.array(PoolRecordSchema).max(POOLS_MAX),
  pgs: z.record(z.string().regex(/^[1-9][0-9]{0,15}$/), z.array(PgRecordSchema).max(PG_COUNT_MAX)),
  volumes: z.array(VolumeRecordSchema).max(VOLUMES_MAX),
  nextOsdId: id,
  nextPoolId: id,
  nextVolumeId: id,
});

/** Cross-field invariants of a map (see the file header); empty when it is sound. */
export function mapInvariantErrors(m: ClusterMap): string[] {
  const errs: string[] = [];
  const osdIds = new Set<number>();
  const uuids = new Set<string>();
  for (const o of m.osds) {
    if (osdIds.has(o.id)) errs.push(`OSD id ${o.id} appears twice`);
    if (uuids.has(o.uuid)) errs.push(`OSD uuid ${o.uuid} appears twice`);
    if (o.id >= m.nextOsdId) errs.push(`OSD id ${o.id} >= nextOsdId ${m.nextOsdId}`);
    osdIds.add(o.id);
    uuids.add(o.uuid);
  }
  const poolNames = new Set<string>();
  const poolIds = new Set<number>();
  for (const p of m.pools) {
    if (poolIds.has(p.id)) errs.push(`pool id ${p.id} appears twice`);
    if (poolNames.has(p.name)) errs.push(`pool name ${p.name} appears twice`);
    if (p.id >= m.nextPoolId) errs.push(`pool id ${p.id} >= nextPoolId ${m.nextPoolId}`);
    if (p.minSize > p.size) errs.push(`pool ${p.name}: minSize ${p.minSize} > size ${p.size}`);
    if ((p.pgCount & (p.pgCount - 1)) !== 0) errs.push(`pool ${p.name}: pgCount ${p.pgCount} is not a power of two`);
    if ((p.objectSizeBytes & (p.objectSizeBytes - 1)) !== 0) errs.push(`pool ${p.name}: objectSizeBytes is not a power of two`);
    if (p.createdEpoch > m.epoch) errs.push(`pool ${p.name}: createdEpoch ${p.createdEpoch} > epoch ${m.epoch}`);
    poolIds.add(p.id);
    poolNames.add(p.name);
    const pgs = m.pgs[String(p.id)];
    if (pgs === undefined) {
      errs.push(`pool ${p.name} has no PG table`);
      continue;
    }
    if (pgs.length !== p.pgCount) errs.push(`pool ${p.name}: ${pgs.length} PG records for pgCount ${p.pgCount}`);
    for (let k = 0; k < pgs.length; k++) {
      const r = pgs[k];
      if (r.pg !== k) errs.push(`pool ${p.name}: record ${k} says pg ${r.pg}`);
      if (r.osds.length > p.size) errs.push(`pool ${p.name} pg ${k}: ${r.osds.length} OSDs > size ${p.size}`);
      if (new Set(r.osds).size !== r.osds.length) errs.push(`pool ${p.name} pg ${k}: an OSD appears twice`);
      for (const oid of r.osds) if (!osdIds.has(oid)) errs.push(`pool ${p.name} pg ${k}: unknown OSD ${oid}`);
      if (r.epoch > m.epoch) errs.push(`pool ${p.name} pg ${k}: epoch ${r.epoch} > map epoch ${m.epoch}`);
    }
  }
  for (const key of Object.keys(m.pgs)) if (!poolIds.has(Number(key))) errs.push(`PG table for unknown pool ${key}`);
  const volIds = new Set<number>();
  const volNames = new Set<string>();
  for (const v of m.volumes) {
    if (volIds.has(v.id)) errs.push(`volume id ${v.id} appears twice`);
    if (volNames.has(v.name)) errs.push(`volume name ${v.name} appears twice`);
    if (v.id >= m.nextVolumeId) errs.push(`volume id ${v.id} >= nextVolumeId ${m.nextVolumeId}`);
    if (!poolIds.has(v.poolId)) errs.push(`volume ${v.name}: unknown pool ${v.poolId}`);
    if (v.sizeBytes % SECTOR_BYTES !== 0) errs.push(`volume ${v.name}: size not a multiple of ${SECTOR_BYTES}`);
    volIds.add(v.id);
    volNames.add(v.name);
  }
  return errs;
}

export const ClusterMapSchema = ClusterMapShape.superRefine((m, ctx) => {
  for (const message of mapInvariantErrors(m)) ctx.addIssue({ code: 'custom', message });
});

/** Validates a map from a store or the network; ERR_FORMAT with the first problems otherwise. */
export function parseClusterMap(value: unknown, what = 'cluster map'): ClusterMap {
  const res = ClusterMapSchema.safeParse(value);
  if (res.success) return res.data;
  const issues = res.error.issues.slice(0, 5).map((i) => (i.path.length > 0 ? `${i.path.join('.')}: ${i.message}` : i.message));
  throw new TesseraError('ERR_FORMAT', `${what} is invalid: ${issues.join('; ')}`);
}

// ---------- helpers ----------

function invalid(message: string): TesseraError {
  return new TesseraError('ERR_INVALID', message);
}

function checkName(kind: string, name: unknown): asserts name is string {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw invalid(`bad ${kind} name ${JSON.stringify(name)}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
}

function checkVolumeSize(sizeBytes: unknown): asserts sizeBytes is number {
  if (typeof sizeBytes !== 'number' || !Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % SECTOR_BYTES !== 0) {
    throw invalid(`volume size must be a positive multiple of ${SECTOR_BYTES} bytes, got ${String(sizeBytes)}`);
  }
  if (sizeBytes > VOLUME_SIZE_BYTES_MAX) throw invalid(`volume size ${sizeBytes} exceeds the limit of ${VOLUME_SIZE_BYTES_MAX} bytes`);
}

function findOsd(map: ClusterMap, osdId: number): OsdRecord {
  const o = map.osds.find((x) => x.id === osdId);
  if (!o) throw new TesseraError('ERR_NOT_FOUND', `no OSD ${osdId}`);
  return o;
}

/** The volume named `name`; ERR_NOT_FOUND otherwise. */
export function findVolume(map: ClusterMap, name: string): VolumeRecord {
  const v = map.volumes.find((x) => x.name === name);
  if (!v) throw new TesseraError('ERR_NOT_FOUND', `no volume "${name}"`);
  return v;
}

function sameSet(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (const x of a) if (!b.includes(x)) return false;
  return true;
}

function toPlacementOsds(osds: readonly OsdRecord[]): PlacementOsd[] {
  return osds.map((o) => ({ id: o.id, host: o.host, weight: o.weight, up: o.up, in: o.in }));
}

/** The fields that decide placement: when none changed, acting sets cannot change. */
function placementKey(osds: readonly OsdRecord[]): string {
  return osds
    .filter((o) => o.in && o.weight > 0)
    .map((o) => `${o.id}:${o.weight}:${o.host}`)
    .sort()
    .join(',');
}

/**
 * PG table of `pool` over `osds` at map epoch `epoch`: placePgs' result where
 * the set of OSDs of a PG changed (then its epoch is `epoch`), the old record
 * unchanged (same list order, same epoch) where it did not.
 */
function placePool(osds: readonly OsdRecord[], pool: PoolRecord, old: readonly PgRecord[] | undefined, epoch: number): PgRecord[] {
  const placed = placePgs({ osds: toPlacementOsds(osds) }, { id: pool.id, pgCount: pool.pgCount, size: pool.size, failureDomain: pool.failureDomain });
  return placed.map((p) => {
    const prev = old?.[p.pg];
    if (prev !== undefined && sameSet(prev.osds, p.osds)) return prev;
    return { pg: p.pg, osds: p.osds, epoch };
  });
}

/**
 * `next` (already at its new epoch) with every pool's PG table recomputed when
 * the placement inputs differ from `prev`'s; the same tables otherwise.
 */
function withPlacement(prev: ClusterMap, next: ClusterMap): ClusterMap {
  if (placementKey(prev.osds) === placementKey(next.osds)) return next;
  const pgs: Record<string, PgRecord[]> = {};
  for (const pool of next.pools) pgs[String(pool.id)] = placePool(next.osds, pool, next.pgs[String(pool.id)], next.epoch);
  return { ...next, pgs };
}

/** `map` with OSD `osdId` replaced by `patch` applied to it; same object when nothing differs. */
function patchOsd(map: ClusterMap, osdId: number, patch: Partial<OsdRecord>): ClusterMap {
  const cur = findOsd(map, osdId);
  const updated: OsdRecord = { ...cur, ...patch };
  // Only `outByOperator: true` is stored: absent means "not out by an operator".
  if (updated.outByOperator !== true) delete updated.outByOperator;
  if (JSON.stringify(updated) === JSON.stringify(cur)) return map;
  const next: ClusterMap = { ...map, epoch: map.epoch + 1, osds: map.osds.map((o) => (o.id === osdId ? updated : o)) };
  return withPlacement(map, next);
}

// ---------- transitions ----------

/** The first map of a new cluster: no OSDs, pools or volumes, epoch 1. */
export function initialMap(fsid: string): ClusterMap {
  if (typeof fsid !== 'string' || fsid.length === 0 || fsid.length > TEXT_BYTES_MAX) throw invalid('fsid must be a non-empty string');
  return { fsid, epoch: 1, osds: [], pools: [], pgs: {}, volumes: [], nextOsdId: 1, nextPoolId: 1, nextVolumeId: 1 };
}

/**
 * Creates a replicated pool: id nextPoolId, createdEpoch and every PG's epoch
 * the new map epoch, acting sets from placePgs over the OSDs that are in.
 */
export function createPool(map: ClusterMap, req: PoolCreateRequest): { map: ClusterMap; pool: PoolRecord } {
  checkName('pool', req.name);
  if (map.pools.some((p) => p.name === req.name)) throw new TesseraError('ERR_EXISTS', `pool "${req.name}" already exists`);
  if (map.pools.length >= POOLS_MAX) throw new TesseraError('ERR_LIMIT', `the cluster has ${POOLS_MAX} pools, the limit`);
  if (!Number.isInteger(req.size) || req.size < 1 || req.size > POOL_SIZE_MAX) throw invalid(`pool size must be an integer in [1, ${POOL_SIZE_MAX}], got ${req.size}`);
  if (!Number.isInteger(req.minSize) || req.minSize < 1 || req.minSize > req.size) {
    throw invalid(`pool minSize must be an integer in [1, size=${req.size}], got ${req.minSize}`);
  }
  const pgCount = req.pgCount;
  if (!Number.isInteger(pgCount) || pgCount < 1 || pgCount > PG_COUNT_MAX || (pgCount & (pgCount - 1)) !== 0) {
    throw invalid(`pgCount must be a power of two in [1, ${PG_COUNT_MAX}], got ${pgCount}`);
  }
  const failureDomain = req.failureDomain ?? 'host';
  if (failureDomain !== 'host' && failureDomain !== 'osd') throw invalid(`failure domain must be 'host' or 'osd', got ${String(failureDomain)}`);
  const objectSizeBytes = req.objectSizeBytes ?? OBJECT_SIZE_BYTES_DEFAULT;
  if (
    !Number.isInteger(objectSizeBytes) ||
    objectSizeBytes < OBJECT_SIZE_BYTES_MIN ||
    objectSizeBytes > OBJECT_SIZE_BYTES_MAX ||
    (objectSizeBytes & (objectSizeBytes - 1)) !== 0
  ) {
    throw invalid(`objectSizeBytes must be a power of two in [${OBJECT_SIZE_BYTES_MIN}, ${OBJECT_SIZE_BYTES_MAX}], got ${objectSizeBytes}`);
  }
  const epoch = map.epoch + 1;
  const pool: PoolRecord = {
    id: map.nextPoolId,
    name: req.name,
    type: 'replicated',
    size: req.size,
    minSize: req.minSize,
    pgCount,
    failureDomain,
    objectSizeBytes,
    createdEpoch: epoch,
  };
  const pgs = { ...map.pgs, [String(pool.id)]: placePool(map.osds, pool, undefined, epoch) };
  return { map: { ...map, epoch, pools: [...map.pools, pool], pgs, nextPoolId: map.nextPoolId + 1 }, pool };
}

/**
 * An OSD boots: a known uuid keeps its id (its address, host, weight and
 * capacity are refreshed), a new uuid gets nextOsdId. It is marked up and,
 * unless an operator marked it out, in.
 */
export function osdBoot(map: ClusterMap, req: OsdBootRequest): { map: ClusterMap; osdId: number } {
  if (typeof req.uuid !== 'string' || req.uuid.length === 0 || req.uuid.length > TEXT_BYTES_MAX) throw invalid('OSD uuid must be a non-empty string');
  if (typeof req.host !== 'string' || !HOST_RE.test(req.host)) throw invalid(`bad OSD host name ${JSON.stringify(req.host)}`);
  if (typeof req.addr !== 'string' || req.addr.length === 0 || req.addr.length > TEXT_BYTES_MAX) throw invalid('OSD addr must be a non-empty string');
  if (!Number.isInteger(req.port) || req.port < 1 || req.port > 65535) throw invalid(`OSD port must be in [1, 65535], got ${req.port}`);
  if (typeof req.weight !== 'number' || !Number.isFinite(req.weight) || req.weight < 0 || req.weight > 1e6) throw invalid(`OSD weight must be in [0, 1e6], got ${req.weight}`);
  if (!Number.isSafeInteger(req.capacityBytes) || req.capacityBytes < 0) throw invalid(`OSD capacityBytes must be a non-negative integer`);
  const known = map.osds.find((o) => o.uuid === req.uuid);
  const fields = { host: req.host, addr: req.addr, port: req.port, weight: req.weight, capacityBytes: req.capacityBytes, up: true };
  if (known) {
    const next = patchOsd(map, known.id, { ...fields, in: known.outByOperator === true ? known.in : true });
    return { map: next, osdId: known.id };
  }
  if (map.osds.length >= OSDS_MAX) throw new TesseraError('ERR_LIMIT', `the cluster has ${OSDS_MAX} OSDs, the limit`);
  const osd: OsdRecord = { id: map.nextOsdId, uuid: req.uuid, ...fields, in: true };
  const next: ClusterMap = { ...map, epoch: map.epoch + 1, osds: [...map.osds, osd], nextOsdId: map.nextOsdId + 1 };
  return { map: withPlacement(map, next), osdId: osd.id };
}

/** A heartbeat from an OSD the map has down: it is alive, so up again (and in, as on boot). */
export function markUp(map: ClusterMap, osdId: number): ClusterMap {
  const o = findOsd(map, osdId);
  return patchOsd(map, osdId, { up: true, in: o.outByOperator === true ? o.in : true });
}

/** OSDs whose heartbeats stopped: down. Acting sets do not change (see header). Unknown ids are skipped. */
export function markDown(map: ClusterMap, osdIds: readonly number[]): ClusterMap {
  const ids = new Set(osdIds);
  if (!map.osds.some((o) => ids.has(o.id) && o.up)) return map;
  return { ...map, epoch: map.epoch + 1, osds: map.osds.map((o) => (ids.has(o.id) && o.up ? { ...o, up: false } : o)) };
}

/**
 * OSDs down past the out grace: out (not by an operator, so a later boot brings
 * them back in). Their PGs get new acting sets. Unknown ids are skipped.
 */
export function markOut(map: ClusterMap, osdIds: readonly number[]): ClusterMap {
  const ids = new Set(osdIds);
  if (!map.osds.some((o) => ids.has(o.id) && o.in)) return map;
  const next: ClusterMap = { ...map, epoch: map.epoch + 1, osds: map.osds.map((o) => (ids.has(o.id) && o.in ? { ...o, in: false } : o)) };
  return withPlacement(map, next);
}

/** `tessera osd out`: out until `osd in`, whatever its heartbeats. ERR_NOT_FOUND for an unknown id. */
export function operatorOut(map: ClusterMap, osdId: number): ClusterMap {
  return patchOsd(map, osdId, { in: false, outByOperator: true });
}

/** `tessera osd in`: back in placement (also when down: the operator decides). ERR_NOT_FOUND for an unknown id. */
export function operatorIn(map: ClusterMap, osdId: number): ClusterMap {
  return patchOsd(map, osdId, { in: true, outByOperator: undefined });
}

/** The (pool id, pg) pairs whose acting set holds `osdId`. */
export function pgsOfOsd(map: ClusterMap, osdId: number): Array<{ poolId: number; pg: number }> {
  const out: Array<{ poolId: number; pg: number }> = [];
  for (const [poolId, pgs] of Object.entries(map.pgs)) for (const r of pgs) if (r.osds.includes(osdId)) out.push({ poolId: Number(poolId), pg: r.pg });
  return out;
}

/** `tessera osd rm`: only for an OSD that is out and in no acting set (ERR_BUSY otherwise). Its id is never reused. */
export function osdRm(map: ClusterMap, osdId: number): ClusterMap {
  const o = findOsd(map, osdId);
  if (o.in) throw new TesseraError('ERR_BUSY', `OSD ${osdId} is in: mark it out first`);
  const held = pgsOfOsd(map, osdId);
  if (held.length > 0) throw new TesseraError('ERR_BUSY', `OSD ${osdId} is still in the acting set of ${held.length} PG(s), e.g. ${held[0].poolId}.${held[0].pg}`);
  return { ...map, epoch: map.epoch + 1, osds: map.osds.filter((x) => x.id !== osdId) };
}

/**
 * Creates a volume in `req.pool` (by name; default the first pool) with id
 * nextVolumeId. `createdAt` is an ISO time string given by the caller.
 */
export function createVolume(map: ClusterMap, req: { name: string; sizeBytes: number; pool?: string }, createdAt: string): { map: ClusterMap; volume: VolumeRecord } {
  checkName('volume', req.name);
  checkVolumeSize(req.sizeBytes);
  if (map.volumes.some((v) => v.name === req.name)) throw new TesseraError('ERR_EXISTS', `volume "${req.name}" already exists`);
  if (map.volumes.length >= VOLUMES_MAX) throw new TesseraError('ERR_LIMIT', `the cluster has ${VOLUMES_MAX} volumes, the limit`);
  let pool: PoolRecord | undefined;
  if (req.pool === undefined) {
    pool = map.pools[0];
    if (!pool) throw new TesseraError('ERR_NOT_FOUND', 'the cluster has no pool: create one first');
  } else {
    pool = map.pools.find((p) => p.name === req.pool);
    if (!pool) throw new TesseraError('ERR_NOT_FOUND', `no pool "${req.pool}"`);
  }
  const volume: VolumeRecord = { id: map.nextVolumeId, name: req.name, poolId: pool.id, sizeBytes: req.sizeBytes, createdAt };
  return { map: { ...map, epoch: map.epoch + 1, volumes: [...map.volumes, volume], nextVolumeId: map.nextVolumeId + 1 }, volume };
}

/**
 * Grows or shrinks a volume. The monitor holds no data: before it asks for a
 * shrink, the client library (client/volume-store.ts) refuses it over written
 * data unless told to discard it, and zeroes (trims) the data past the new end,
 * so that growing again never exposes it.
 */
export function resizeVolume(map: ClusterMap, name: string, sizeBytes: number): { map: ClusterMap; volume: VolumeRecord } {
  const v = findVolume(map, name);
  checkVolumeSize(sizeBytes);
  if (sizeBytes === v.sizeBytes) return { map, volume: v };
  const volume = { ...v, sizeBytes };
  return { map: { ...map, epoch: map.epoch + 1, volumes: map.volumes.map((x) => (x.id === v.id ? volume : x)) }, volume };
}

/** Renames a volume (its id, and so its data, stays). ERR_EXISTS when the new name is taken. */
export function renameVolume(map: ClusterMap, name: string, newName: string): { map: ClusterMap; volume: VolumeRecord } {
  const v = findVolume(map, name);
  checkName('volume', newName);
  if (newName === name) return { map, volume: v };
  if (map.volumes.some((x) => x.name === newName)) throw new TesseraError('ERR_EXISTS', `volume "${newName}" already exists`);
  const volume = { ...v, name: newName };
  return { map: { ...map, epoch: map.epoch + 1, volumes: map.volumes.map((x) => (x.id === v.id ? volume : x)) }, volume };
}

/** Deletes a volume from the map (its objects are garbage for the OSDs to reclaim); its id is never reused. */
export function deleteVolume(map: ClusterMap, name: string): ClusterMap {
  const v = findVolume(map, name);
  return { ...map, epoch: map.epoch + 1, volumes: map.volumes.filter((x) => x.id !== v.id) };
}
