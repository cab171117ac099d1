// PG placement (CLU3), pure: objects → PGs → OSDs across failure domains.
//
// objectToPg hashes (pool, volume, object index) and masks it by the PG count
// (a power of two, so a later split of PG p into p and p + pgCount moves only
// half the objects of p and nothing else).
//
// placePgs is weighted rendezvous hashing (Ceph's straw2): each OSD draws
// u = strawUnit53(pool, pg, osd) and scores -ln(u) / weight; the lowest score
// wins. -ln(u) is Exp(1), so score_i is Exp(weight_i) and the minimum over a set
// of OSDs is won by OSD i with probability weight_i / sum(weights). The failure
// domain rule is applied by first taking the best OSD of each domain (host, or
// the OSD itself) and then the best `size` domains: a domain's best score is
// Exp(sum of its weights), so domains are chosen in proportion to their weight
// and OSDs within a domain in proportion to theirs.
//
// Invariants (each has a test in placement.test.ts):
//   - Never two replicas of a PG in one failure domain. With fewer eligible
//     domains than `size`, a PG gets fewer OSDs and says so in replicasMissing;
//     the rule is never relaxed.
//   - Only OSDs that are `in` with weight > 0 hold replicas. An OSD that is
//     down but still in keeps its replicas (a transient failure moves no data);
//     it is only never chosen as primary while another replica is up.
//   - Deterministic: the result depends on the map's contents, not on the order
//     of map.osds (ties are broken by OSD id), and never on a clock or PRNG.
//   - Replica sets are minimal-movement: an OSD that joins takes only replicas
//     it wins; an OSD that leaves gives up only its own replicas (every other
//     OSD's draws are unchanged). Primaries (a bounded local search among
//     each PG's replicas) and shards (bounded-load rendezvous) are balanced, so
//     they are stable where possible, not always.
//   - osds[0] is the PG's primary (preferred raft leader); the others follow in
//     rank order.
import { assert } from '../stdx/assert.js';
import { TesseraError } from '../stdx/errors.js';
import { objectHash32, shardHash32, strawUnit53 } from './hash.js';

/** Largest PG count of a pool: PG ids fit in 16 bits on the wire. */
export const PG_COUNT_MAX = 65536;
/** Largest replica count of a pool. */
export const POOL_SIZE_MAX = 16;
/** Largest shard (core) count of one OSD. */
export const OSD_SHARDS_MAX = 1024;
/**
 * The primary pass hands primaries away from OSDs more than this fraction above
 * or below their weighted fair share; within the band nothing moves, which keeps
 * primaries stable. 0.10 gives about ±10-15 % at 1024 PGs.
 */
export const PRIMARY_SLACK = 0.1;
/** Bound on the passes of the primary local search (each pass visits every PG once). */
export const PRIMARY_PASSES_MAX = 8;

export type FailureDomain = 'host' | 'osd';

export interface PlacementOsd {
  id: number;
  host: string;
  /** Relative capacity (e.g. TiB); 0 holds nothing. */
  weight: number;
  /** Reachable now (heartbeats). Down OSDs keep replicas but lose primaries. */
  up: boolean;
  /** Part of the data placement. Out OSDs hold nothing. */
  in: boolean;
  /** Cores that run PGs on this OSD; when set, primaries get a primaryShard. */
  shards?: number;
}

export interface PlacementMap {
  osds: PlacementOsd[];
}

export interface PlacementPool {
  id: number;
  pgCount: number;
  /** Replicas per PG. */
  size: number;
  failureDomain: FailureDomain;
}

export interface PgPlacement {
  pg: number;
  /** OSD ids, primary first, at most one per failure domain. */
  osds: number[];
  /** pool.size - osds.length: replicas that could not be placed without breaking the failure-domain rule. */
  replicasMissing: number;
  /** Shard (core) of the primary OSD that runs this PG, when that OSD declares shards. */
  primaryShard?: number;
}

export type PlacementErrorReason =
  | 'POOL_SIZE' // size < 1, > POOL_SIZE_MAX or not an integer
  | 'PG_COUNT' // not a power of two, or > PG_COUNT_MAX
  | 'POOL_ID' // not a non-negative safe integer
  | 'OSD_ID' // not a non-negative safe integer
  | 'DUPLICATE_OSD' // two OSDs share an id
  | 'WEIGHT' // negative, NaN or infinite
  | 'HOST' // empty host name
  | 'SHARDS' // not an integer in [1, OSD_SHARDS_MAX]
  | 'FAILURE_DOMAIN' // not 'host' or 'osd'
  | 'OBJECT_ID'; // volume id or object index not a non-negative safe integer

/** Invalid placement input; code ERR_INVALID, with a reason for callers and tests. */
export class PlacementError extends TesseraError {
  readonly reason: PlacementErrorReason;
  constructor(reason: PlacementErrorReason, message: string) {
    super('ERR_INVALID', message);
    this.reason = reason;
    this.name = 'PlacementError';
  }
}

function isId(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

function checkPgCount(pgCount: number): void {
  if (!Number.isInteger(pgCount) || pgCount < 1 || pgCount > PG_COUNT_MAX || (pgCount & (pgCount - 1)) !== 0) {
    throw new PlacementError('PG_COUNT', `pgCount must be a power of two in [1, ${PG_COUNT_MAX}], got ${pgCount}`);
  }
}

/** The PG of an object: a stable hash masked by pgCount - 1 (pgCount is a power of two). */
export function objectToPg(poolId: number, volumeId: number, objectIndex: number, pgCount: number): number {
  if (!isId(poolId)) throw new PlacementError('POOL_ID', `pool id must be a non-negative safe integer, got ${poolId}`);
  if (!isId(volumeId)) throw new PlacementError('OBJECT_ID', `volume id must be a non-negative safe integer, got ${volumeId}`);
  if (!isId(objectIndex)) throw new PlacementError('OBJECT_ID', `object index must be a non-negative safe integer, got ${objectIndex}`);
  checkPgCount(pgCount);
  return objectHash32(poolId, volumeId, objectIndex) & (pgCount - 1);
}

function validate(map: PlacementMap, pool: PlacementPool): void {
  if (!isId(pool.id)) throw new PlacementError('POOL_ID', `pool id must be a non-negative safe integer, got ${pool.id}`);
  checkPgCount(pool.pgCount);
  if (!Number.isInteger(pool.size) || pool.size < 1 || pool.size > POOL_SIZE_MAX) {
    throw new PlacementError('POOL_SIZE', `pool size must be an integer in [1, ${POOL_SIZE_MAX}], got ${pool.size}`);
  }
  if (pool.failureDomain !== 'host' && pool.failureDomain !== 'osd') {
    throw new PlacementError('FAILURE_DOMAIN', `failure domain must be 'host' or 'osd', got ${String(pool.failureDomain)}`);
  }
  const seen = new Set<number>();
  for (const osd of map.osds) {
    if (!isId(osd.id)) throw new PlacementError('OSD_ID', `OSD id must be a non-negative safe integer, got ${osd.id}`);
    if (seen.has(osd.id)) throw new PlacementError('DUPLICATE_OSD', `OSD id ${osd.id} appears twice in the map`);
    seen.add(osd.id);
    if (typeof osd.weight !== 'number' || !Number.isFinite(osd.weight) || osd.weight < 0) {
      throw new PlacementError('WEIGHT', `OSD ${osd.id}: weight must be finite and >= 0, got ${osd.weight}`);
    }
    if (typeof osd.host !== 'string' || osd.host.length === 0) {
      throw new PlacementError('HOST', `OSD ${osd.id}: host must be a non-empty string`);
    }
    if (osd.shards !== undefined && (!Number.isInteger(osd.shards) || osd.shards < 1 || osd.shards > OSD_SHARDS_MAX)) {
      throw new PlacementError('SHARDS', `OSD ${osd.id}: shards must be an integer in [1, ${OSD_SHARDS_MAX}], got ${osd.shards}`);
    }
  }
}

/**
 * Replica sets of every PG of the pool in rank order (best first), before the
 * primary is chosen. Each entry is a list of indexes into `cand`.
 */
function rankReplicas(cand: PlacementOsd[], domainOf: Int32Array, domainCount: number, pool: PlacementPool): number[][] {
  const bestScore = new Float64Array(domainCount);
  const bestIdx = new Int32Array(domainCount);
  const out: number[][] = [];
  for (let pg = 0; pg < pool.pgCount; pg++) {
    bestScore.fill(Infinity);
    bestIdx.fill(-1);
    for (let i = 0; i < cand.length; i++) {
      // straw2: -ln(u) ~ Exp(1), divided by weight ~ Exp(weight); lowest wins.
      const score = -Math.log(strawUnit53(pool.id, pg, cand[i].id)) / cand[i].weight;
      const d = domainOf[i];
      // cand is sorted by id, so on an exact tie the lower id (seen first) stays.
      if (score < bestScore[d]) {
        bestScore[d] = score;
        bestIdx[d] = i;
      }
    }
    // Best `size` domains by their best OSD's score: insertion into a short
    // sorted list (size <= 16), ties by OSD id so input order never matters.
    const chosen: number[] = [];
    for (let d = 0; d < domainCount; d++) {
      const i = bestIdx[d];
      if (i < 0) continue;
      let pos = chosen.length;
      while (pos > 0) {
        const j = chosen[pos - 1];
        const sj = bestScore[domainOf[j]];
        if (sj < bestScore[d] || (sj === bestScore[d] && cand[j].id < cand[i].id)) break;
        pos--;
      }
      if (pos >= pool.size) continue;
      chosen.splice(pos, 0, i);
      if (chosen.length > pool.size) chosen.pop();
    }
    out.push(chosen);
  }
  return out;
}

/**
 * Places every PG of `pool` on the OSDs of `map`. See the file header for the
 * rules. Throws PlacementError on invalid input.
 */
export function placePgs(map: PlacementMap, pool: PlacementPool): PgPlacement[] {
  validate(map, pool);
  // Candidates sorted by id: the result must not depend on the order of map.osds.
  const cand = map.osds.filter((o) => o.in && o.weight > 0).sort((a, b) => a.id - b.id);
  const domainIds = new Map<string, number>();
  const domainOf = new Int32Array(cand.length);
  for (let i = 0; i < cand.length; i++) {
    // Prefixes keep a host named "7" apart from OSD 7 (only one kind is used per pool anyway).
    const key = pool.failureDomain === 'host' ? `h:${cand[i].host}` : `o:${cand[i].id}`;
    let d = domainIds.get(key);
    if (d === undefined) {
      d = domainIds.size;
      domainIds.set(key, d);
    }
    domainOf[i] = d;
  }
  const ranked = rankReplicas(cand, domainOf, domainIds.size, pool);

  // Primaries. Start from the best-ranked up replica (stable: straw2 ranks move
  // only when the map does). Straw2 alone leaves primary counts at ±2-3 σ of a
  // binomial (±30 % for 1024 PGs on 20 OSDs), so a bounded local search then
  // hands a PG's primary to another up replica of the same PG when that OSD is
  // an outlier (above or below its weighted fair share by PRIMARY_SLACK) and the
  // hand-over narrows the gap between the two. Only outliers trigger moves, so
  // most PGs keep their best-ranked replica and a small map change shifts few
  // primaries. No data moves: the replica set is unchanged.
  let upWeight = 0;
  for (const o of cand) if (o.up) upWeight += o.weight;
  const fair = new Float64Array(cand.length);
  for (let i = 0; i < cand.length; i++) fair[i] = cand[i].up ? (pool.pgCount * cand[i].weight) / upWeight : 0;
  const primaryLoad = new Int32Array(cand.length);
  const primaryOf = new Int32Array(pool.pgCount).fill(-1);
  for (let pg = 0; pg < pool.pgCount; pg++) {
    const replicas = ranked[pg];
    const pick = replicas.find((i) => cand[i].up) ?? (replicas.length > 0 ? replicas[0] : -1);
    if (pick >= 0) {
      primaryLoad[pick]++;
      primaryOf[pg] = pick;
    }
  }
  for (let pass = 0; pass < PRIMARY_PASSES_MAX; pass++) {
    let moves = 0;
    for (let pg = 0; pg < pool.pgCount; pg++) {
      const cur = primaryOf[pg];
      if (cur < 0 || !cand[cur].up) continue;
      const curRatio = primaryLoad[cur] / fair[cur];
      let best = -1;
      let bestRatio = Infinity;
      for (const r of ranked[pg]) {
        if (r === cur || !cand[r].up) continue;
        const ratio = primaryLoad[r] / fair[r];
        if (ratio < bestRatio) {
          bestRatio = ratio;
          best = r;
        }
      }
      if (best < 0) continue;
      const outlier = curRatio > 1 + PRIMARY_SLACK || bestRatio < 1 - PRIMARY_SLACK;
      // Move only if, after the hand-over, the receiver is still no fuller than the giver.
      if (outlier && (primaryLoad[best] + 1) / fair[best] <= (primaryLoad[cur] - 1) / fair[cur]) {
        primaryLoad[cur]--;
        primaryLoad[best]++;
        primaryOf[pg] = best;
        moves++;
      }
    }
    if (moves === 0) break;
  }

  // Shards: each OSD that declares shards spreads the PGs it leads over them
  // with at most ceil(count / shards) per shard; each PG takes its best-ranked
  // shard (rendezvous on shardHash32) with room, so most keep their core when
  // the OSD's set of PGs changes a little.
  const primaryShard = new Int32Array(pool.pgCount).fill(-1);
  const shardLoad = new Map<number, Int32Array>();
  for (let pg = 0; pg < pool.pgCount; pg++) {
    const i = primaryOf[pg];
    if (i < 0) continue;
    const shards = cand[i].shards;
    if (shards === undefined) continue;
    let load = shardLoad.get(i);
    if (load === undefined) {
      load = new Int32Array(shards);
      shardLoad.set(i, load);
    }
    const cap = Math.ceil(primaryLoad[i] / shards);
    let best = -1;
    let bestKey = -1;
    for (let s = 0; s < shards; s++) {
      if (load[s] >= cap) continue;
      const key = shardHash32(pool.id, pg, cand[i].id, s);
      if (key > bestKey) {
        bestKey = key;
        best = s;
      }
    }
    assert(best >= 0, 'shard caps sum to at least the primary count');
    load[best]++;
    primaryShard[pg] = best;
  }

  const result: PgPlacement[] = [];
  for (let pg = 0; pg < pool.pgCount; pg++) {
    const p = primaryOf[pg];
    const osds: number[] = [];
    if (p >= 0) osds.push(cand[p].id);
    for (const i of ranked[pg]) if (i !== p) osds.push(cand[i].id);
    const entry: PgPlacement = { pg, osds, replicasMissing: pool.size - osds.length };
    if (primaryShard[pg] >= 0) entry.primaryShard = primaryShard[pg];
    result.push(entry);
  }
  return result;
}

/**
 * Replicas that move between two placements of the same pool: for each PG, the
 * OSDs in `after` that were not in `before` (each is a replica to copy).
 */
export function countMovedReplicas(before: readonly PgPlacement[], after: readonly PgPlacement[]): number {
  assert(before.length === after.length, 'placements of the same pool have the same PG count');
  let moved = 0;
  for (let pg = 0; pg < after.length; pg++) {
    const old = new Set(before[pg].osds);
    for (const id of after[pg].osds) if (!old.has(id)) moved++;
  }
  return moved;
}
