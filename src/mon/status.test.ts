// Status aggregation (status.ts): PG states from the best fresh report per PG,
// 'unknown' for unreported PGs, stale and down OSDs' reports ignored, health
// levels with their reasons, capacity and recovery totals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as M from './map.js';
import { aggregateStatus, type ReceivedReport } from './status.js';
import type { ClusterMap, OsdReport, PgReport } from './map-types.js';

function cluster(): ClusterMap {
  let m = M.initialMap('fsid-s');
  for (let i = 1; i <= 3; i++) m = M.osdBoot(m, { uuid: `u${i}`, host: `h${i}`, addr: 'a', port: 1, weight: 1, capacityBytes: 1000 }).map;
  return M.createPool(m, { name: 'rbd', size: 3, minSize: 2, pgCount: 8 }).map;
}

function pgRep(pg: number, state: PgReport['state'], extra: Partial<PgReport> = {}): PgReport {
  return { poolId: 1, pg, role: 'leader', term: 1, leader: 1, commitIndex: 5, appliedIndex: 5, voters: [1, 2, 3], learners: [], state, recoveryBytesLeft: 0, ...extra };
}

function rep(osdId: number, pgs: PgReport[], usedBytes = 100, receivedAtMs = 1000): ReceivedReport {
  const report: OsdReport = { osdId, uuid: `u${osdId}`, capacityBytes: 1000, usedBytes, pgs };
  return { report, receivedAtMs };
}

const base = { nowMs: 1500, reportMaxAgeMs: 6000, monitors: [{ id: 'a', active: true }] };

test('all PGs reported active: HEALTH_OK, capacity summed over in OSDs', () => {
  const map = cluster();
  const reports = [
    rep(1, [0, 1, 2].map((pg) => pgRep(pg, 'active'))),
    rep(2, [3, 4, 5].map((pg) => pgRep(pg, 'active', { leader: 2 }))),
    rep(3, [6, 7].map((pg) => pgRep(pg, 'active', { leader: 3 }))),
  ];
  const s = aggregateStatus({ map, reports, ...base });
  assert.deepEqual(s.osds.map((o) => [o.id, o.leaderPgs]), [[1, 3], [2, 3], [3, 2]], 'PGs led per OSD');
  assert.equal(s.health, 'HEALTH_OK', s.checks.join('; '));
  assert.deepEqual(s.checks, []);
  assert.deepEqual(s.pgStates, { active: 8 });
  assert.deepEqual(s.capacity, { totalBytes: 3000, usedBytes: 300 });
  assert.equal(s.fsid, 'fsid-s');
  assert.equal(s.epoch, map.epoch);
  assert.equal(s.osds.length, 3);
  assert.deepEqual(s.pools, [{ id: 1, name: 'rbd', size: 3, minSize: 2, pgCount: 8 }]);
  assert.equal(s.volumes, 0);
});

test("unreported PGs count as 'unknown' and warn; stale and down OSDs' reports are ignored", () => {
  let map = cluster();
  const reports = [
    rep(1, [pgRep(0, 'active'), pgRep(1, 'degraded')]),
    rep(2, [pgRep(2, 'active')], 100, -10_000), // stale: older than reportMaxAgeMs
    rep(3, [pgRep(3, 'inactive')]),
  ];
  map = M.markDown(map, [3]); // OSD 3's report no longer counts
  const s = aggregateStatus({ map, reports, ...base });
  assert.deepEqual(s.pgStates, { active: 1, degraded: 1, unknown: 6 });
  assert.equal(s.health, 'HEALTH_WARN');
  assert.ok(s.checks.some((c) => /6 PG\(s\) in unknown state/.test(c)), s.checks.join('; '));
  assert.ok(s.checks.some((c) => /1 OSD\(s\) down/.test(c)));
  assert.ok(s.checks.some((c) => /1 PG\(s\) degraded/.test(c)));
  assert.equal(s.osds.find((o) => o.id === 2)!.usedBytes, 0, 'a stale report gives no usage');
  const total = Object.values(s.pgStates).reduce((a, b) => a + b, 0);
  assert.equal(total, 8, 'every PG counted once');
});

test('a leader report wins over a follower report; the higher term wins among leaders', () => {
  const map = cluster();
  const reports = [
    rep(1, [pgRep(0, 'peering', { role: 'follower', term: 9 }), pgRep(1, 'active', { term: 2 })]),
    rep(2, [pgRep(0, 'active', { term: 3 }), pgRep(1, 'recovering', { term: 3, recoveryBytesLeft: 4096 })]),
  ];
  const s = aggregateStatus({ map, reports, ...base });
  assert.equal(s.pgStates.active, 1);
  assert.equal(s.pgStates.recovering, 1);
  assert.equal(s.pgStates.peering, undefined);
  assert.deepEqual(s.recovery, { pgsRecovering: 1, bytesLeft: 4096 });
});

test('HEALTH_ERR: inactive PGs, acting sets below minSize, a full cluster', () => {
  const map = cluster();
  const all = (state: PgReport['state']): ReceivedReport[] => [rep(1, [0, 1, 2, 3, 4, 5, 6, 7].map((pg) => pgRep(pg, pg === 0 ? state : 'active')))];
  const inactive = aggregateStatus({ map, reports: all('inactive'), ...base });
  assert.equal(inactive.health, 'HEALTH_ERR');
  assert.match(inactive.checks[0], /1 PG\(s\) inactive/);

  const full = aggregateStatus({ map, reports: [{ ...all('active')[0], report: { ...all('active')[0].report, usedBytes: 2900 } }], ...base });
  assert.equal(full.health, 'HEALTH_ERR');
  assert.ok(full.checks.some((c) => /full/.test(c)));

  // Two of three OSDs out: every PG has one OSD, below minSize 2.
  const thin = M.operatorOut(M.operatorOut(map, 2), 3);
  const s = aggregateStatus({ map: thin, reports: all('active'), ...base });
  assert.equal(s.health, 'HEALTH_ERR');
  assert.ok(s.checks.some((c) => /8 PG\(s\) have fewer acting OSDs than their pool's minSize/.test(c)), s.checks.join('; '));

  // A fresh cluster without OSDs: PGs have no acting set at all.
  const empty = M.createPool(M.initialMap('f'), { name: 'rbd', size: 3, minSize: 2, pgCount: 4 }).map;
  const e = aggregateStatus({ map: empty, reports: [], ...base });
  assert.equal(e.health, 'HEALTH_ERR');
  assert.deepEqual(e.pgStates, { unknown: 4 });
  assert.deepEqual(e.capacity, { totalBytes: 0, usedBytes: 0 });
});

test('a report about an older PG epoch than the map counts as peering, not as its stale state (reproducer: HEALTH_OK right after an OSD joined)', () => {
  const map = cluster();
  const epoch = map.pgs['1'][0].epoch;
  const fresh = (pg: number) => pgRep(pg, 'active', { pgEpoch: epoch });
  const reports = [rep(1, [fresh(0), fresh(1), fresh(2), fresh(3), fresh(4), fresh(5), pgRep(6, 'active', { pgEpoch: epoch - 1 }), pgRep(7, 'active')])];
  const s = aggregateStatus({ map, reports, ...base });
  assert.deepEqual(s.pgStates, { active: 7, peering: 1 }, 'old-epoch report → peering; a report without an epoch (older OSD) is taken as is');
  assert.equal(s.health, 'HEALTH_WARN');
  assert.ok(s.checks.some((c) => /1 PG\(s\) peering/.test(c)), s.checks.join('; '));
});

test('replicas repairing a WAL-damaged raft log: summed over fresh reports of up OSDs, a warning while any remains', () => {
  let map = cluster();
  const all = (osdId: number, repairing: number | undefined): ReceivedReport => {
    const r = rep(osdId, osdId === 1 ? [0, 1, 2, 3, 4, 5, 6, 7].map((pg) => pgRep(pg, 'active')) : []);
    return repairing === undefined ? r : { ...r, report: { ...r.report, repairingReplicas: repairing } };
  };
  const ok = aggregateStatus({ map, reports: [all(1, 0), all(2, undefined), all(3, 0)], ...base });
  assert.equal(ok.health, 'HEALTH_OK', ok.checks.join('; '));
  assert.equal(ok.replicasRepairing, 0);
  const s = aggregateStatus({ map, reports: [all(1, 0), all(2, 2), all(3, 1)], ...base });
  assert.equal(s.replicasRepairing, 3);
  assert.equal(s.health, 'HEALTH_WARN');
  assert.ok(s.checks.some((c) => /^3 PG replica\(s\) repairing a raft log the WAL found damaged/.test(c)), s.checks.join('; '));
  map = M.markDown(map, [3]);
  assert.equal(aggregateStatus({ map, reports: [all(1, 0), all(2, 2), all(3, 1)], ...base }).replicasRepairing, 2, 'a down OSD\'s report no longer counts');
});
