// Cluster status aggregation (SPEC CLU1, MGT1/MGT3), pure: the map plus the
// OSD reports the active monitor holds in memory → ClusterStatus (health with
// reasons, OSDs up/in, PG state counts, capacity, recovery progress).
//
// Invariants:
// - Reports are never stored (SPEC CLU1: nothing per-IO in the store); only
//   reports younger than reportMaxAgeMs from OSDs the map has up count, so a
//   dead OSD's last words never describe a PG.
// - Every PG of every pool is counted exactly once in pgStates: by the best
//   report about it (a leader's, highest term first), or as 'unknown'.
// - health is HEALTH_ERR when data is unavailable (inactive PGs, PGs with fewer
//   acting OSDs than minSize, a nearly full cluster), HEALTH_WARN when it is at
//   risk or not yet known (down OSDs, degraded/recovering/peering/unknown PGs,
//   undersized acting sets, filling up), HEALTH_OK otherwise.
import type { ClusterStatus } from './api-types.js';
import type { ClusterMap, OsdReport, PgReport } from './map-types.js';

/** Used / total capacity above which health warns, and errs. */
export const CAPACITY_WARN_RATIO = 0.85;
export const CAPACITY_ERR_RATIO = 0.95;

export interface ReceivedReport {
  report: OsdReport;
  /** Monitor clock when it arrived. */
  receivedAtMs: number;
}

export interface StatusInput {
  map: ClusterMap;
  reports: Iterable<ReceivedReport>;
  nowMs: number;
  /** Reports older than this are ignored (the OSD's down timeout is a good value). */
  reportMaxAgeMs: number;
  monitors: { id: string; active: boolean }[];
}

/** Which of two reports on one PG describes it: a leader over a non-leader, then the higher term. */
function better(a: PgReport, b: PgReport): boolean {
  const al = a.role === 'leader' ? 1 : 0;
  const bl = b.role === 'leader' ? 1 : 0;
  if (al !== bl) return al > bl;
  return a.term > b.term;
}

export function aggregateStatus(input: StatusInput): ClusterStatus {
  const { map, nowMs } = input;
  const upOsds = new Set(map.osds.filter((o) => o.up).map((o) => o.id));
  const fresh = new Map<number, OsdReport>();
  for (const r of input.reports) {
    if (nowMs - r.receivedAtMs > input.reportMaxAgeMs || !upOsds.has(r.report.osdId)) continue;
    fresh.set(r.report.osdId, r.report);
  }

  // The best report per PG.
  const best = new Map<string, PgReport>();
  for (const rep of fresh.values()) {
    for (const pg of rep.pgs) {
      const key = `${pg.poolId}.${pg.pg}`;
      const cur = best.get(key);
      if (cur === undefined || better(pg, cur)) best.set(key, pg);
    }
  }

  const pgStates: Record<string, number> = {};
  const bump = (state: string): void => {
    pgStates[state] = (pgStates[state] ?? 0) + 1;
  };
  let pgsRecovering = 0;
  let bytesLeft = 0;
  let belowMinSize = 0;
  let undersized = 0;
  for (const pool of map.pools) {
    const pgs = map.pgs[String(pool.id)] ?? [];
    for (const rec of pgs) {
      if (rec.osds.length < pool.minSize) belowMinSize++;
      else if (rec.osds.length < pool.size) undersized++;
      const r = best.get(`${pool.id}.${rec.pg}`);
      if (r === undefined) {
        bump('unknown');
        continue;
      }
      // A report about the PG before its last change (a new acting set) says nothing
      // about the new replicas: the PG is still peering toward that set.
      if (r.pgEpoch !== undefined && r.pgEpoch < rec.epoch) {
        bump('peering');
        continue;
      }
      bump(r.state);
      if (r.state === 'recovering') pgsRecovering++;
      bytesLeft += r.recoveryBytesLeft;
    }
  }

  const led = new Map<number, number>();
  for (const r of best.values()) if (r.role === 'leader') led.set(r.leader, (led.get(r.leader) ?? 0) + 1);

  let totalBytes = 0;
  let usedBytes = 0;
  const osds = map.osds.map((o) => {
    const rep = fresh.get(o.id);
    const capacityBytes = rep?.capacityBytes ?? o.capacityBytes;
    const used = rep?.usedBytes ?? 0;
    if (o.in) {
      totalBytes += capacityBytes;
      usedBytes += used;
    }
    return { id: o.id, host: o.host, addr: o.addr, port: o.port, up: o.up, in: o.in, capacityBytes, usedBytes: used, leaderPgs: led.get(o.id) ?? 0 };
  });

  const errs: string[] = [];
  const warns: string[] = [];
  const n = (state: string): number => pgStates[state] ?? 0;
  if (n('inactive') > 0) errs.push(`${n('inactive')} PG(s) inactive (below quorum)`);
  if (belowMinSize > 0) errs.push(`${belowMinSize} PG(s) have fewer acting OSDs than their pool's minSize`);
  const usedRatio = totalBytes > 0 ? usedBytes / totalBytes : 0;
  if (usedRatio >= CAPACITY_ERR_RATIO) errs.push(`cluster is ${(usedRatio * 100).toFixed(1)} % full`);
  else if (usedRatio >= CAPACITY_WARN_RATIO) warns.push(`cluster is ${(usedRatio * 100).toFixed(1)} % full`);
  const downIn = map.osds.filter((o) => !o.up && o.in).length;
  if (downIn > 0) warns.push(`${downIn} OSD(s) down`);
  for (const state of ['degraded', 'recovering', 'peering'] as const) if (n(state) > 0) warns.push(`${n(state)} PG(s) ${state}`);
  if (n('unknown') > 0) warns.push(`${n('unknown')} PG(s) in unknown state (no report from their OSDs)`);
  if (undersized > 0) warns.push(`${undersized} PG(s) have fewer acting OSDs than their pool's size`);
  let replicasRepairing = 0;
  for (const rep of fresh.values()) replicasRepairing += rep.repairingReplicas ?? 0;
  if (replicasRepairing > 0) {
    warns.push(`${replicasRepairing} PG replica(s) repairing a raft log the WAL found damaged (they hold no vote until a leader re-replicated them)`);
  }

  return {
    fsid: map.fsid,
    epoch: map.epoch,
    health: errs.length > 0 ? 'HEALTH_ERR' : warns.length > 0 ? 'HEALTH_WARN' : 'HEALTH_OK',
    checks: [...errs, ...warns],
    monitors: input.monitors,
    osds,
    pgStates,
    capacity: { totalBytes, usedBytes },
    recovery: { pgsRecovering, bytesLeft },
    replicasRepairing,
    pools: map.pools.map((p) => ({ id: p.id, name: p.name, size: p.size, minSize: p.minSize, pgCount: p.pgCount })),
    volumes: map.volumes.length,
  };
}
