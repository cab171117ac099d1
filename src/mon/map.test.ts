// Pure cluster-map transitions (map.ts): pools, OSD boot/down/out/in/rm, PG
// acting-set recomputation and its stability (a PG's epoch moves only when its
// set does), volume CRUD and its error codes, the map schema, and placement
// properties on random maps driven through the map functions (failure domains;
// adding one OSD to N moves at most 1/N + 5 % of the replicas). Seeds are
// printed; TESSERA_SEED replays a run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prng, seedFromEnv } from '../stdx/prng.js';
import { isTesseraError } from '../stdx/errors.js';
import { placePgs } from '../placement/placement.js';
import * as M from './map.js';
import { DEFAULT_OBJECT_BYTES } from '../engine/layout.js';
import type { ClusterMap, PgRecord } from './map-types.js';
import type { OsdBootRequest } from './api-types.js';

const code = (c: string) => (err: unknown) => isTesseraError(err) && err.code === c;

function seeded(name: string): { seed: number; prng: Prng } {
  const seed = seedFromEnv();
  console.log(`# ${name}: seed ${seed} (TESSERA_SEED=${seed} replays)`);
  return { seed, prng: new Prng(seed) };
}

function bootReq(uuid: string, host: string, extra: Partial<OsdBootRequest> = {}): OsdBootRequest {
  return { uuid, host, addr: '127.0.0.1', port: 7000, weight: 1, capacityBytes: 1 << 30, ...extra };
}

/** A map with `n` OSDs (one per host h<i>, uuids u<i>) and a pool 'rbd' (size 3, 64 PGs) created after them. */
function cluster(n: number, pgCount = 64, perHost = 1): ClusterMap {
  let m = M.initialMap('fsid-1');
  for (let i = 1; i <= n; i++) m = M.osdBoot(m, bootReq(`u${i}`, `h${Math.ceil(i / perHost)}`)).map;
  return M.createPool(m, { name: 'rbd', size: 3, minSize: 2, pgCount }).map;
}

function pgsOf(m: ClusterMap, poolId = 1): PgRecord[] {
  return m.pgs[String(poolId)];
}

function assertValid(m: ClusterMap, ctx = ''): void {
  assert.deepEqual(M.mapInvariantErrors(m), [], ctx);
  M.parseClusterMap(JSON.parse(JSON.stringify(m)));
}

test('initial map and pool creation: epochs, ids, PG tables from placePgs', () => {
  const m0 = M.initialMap('fsid-1');
  assert.equal(m0.epoch, 1);
  assertValid(m0);
  const { map: m1, pool } = M.createPool(m0, { name: 'rbd', size: 3, minSize: 2, pgCount: 16 });
  assert.equal(m1.epoch, 2);
  assert.equal(m0.epoch, 1, 'the input map is not mutated');
  assert.equal(pool.id, 1);
  assert.equal(pool.createdEpoch, 2);
  assert.equal(pool.failureDomain, 'host');
  assert.equal(pool.objectSizeBytes, M.OBJECT_SIZE_BYTES_DEFAULT);
  // The OSD daemons format their engines with the default object size, and serve only pools of their size.
  assert.equal(M.OBJECT_SIZE_BYTES_DEFAULT, DEFAULT_OBJECT_BYTES);
  assert.equal(pgsOf(m1).length, 16);
  for (const [k, r] of pgsOf(m1).entries()) assert.deepEqual(r, { pg: k, osds: [], epoch: 2 }, 'no OSDs yet: empty acting sets');
  assertValid(m1);

  const m = cluster(5, 32);
  const pool2 = m.pools[0];
  assert.equal(pool2.createdEpoch, m.epoch);
  const byId = new Map(m.osds.map((o) => [o.id, o]));
  for (const r of pgsOf(m)) {
    assert.equal(r.epoch, m.epoch);
    assert.equal(r.osds.length, 3);
    assert.equal(new Set(r.osds.map((id) => byId.get(id)!.host)).size, 3, 'one replica per host');
  }
  const expected = placePgs({ osds: m.osds }, { id: 1, pgCount: 32, size: 3, failureDomain: 'host' });
  assert.deepEqual(pgsOf(m).map((r) => r.osds), expected.map((p) => p.osds));
  assertValid(m);
});

test('pool creation errors', () => {
  const m = M.initialMap('f');
  const ok = { name: 'p', size: 3, minSize: 2, pgCount: 64 };
  assert.throws(() => M.createPool(m, { ...ok, pgCount: 100 }), code('ERR_INVALID'), 'pgCount not a power of two');
  assert.throws(() => M.createPool(m, { ...ok, pgCount: 0 }), code('ERR_INVALID'));
  assert.throws(() => M.createPool(m, { ...ok, pgCount: 131072 }), code('ERR_INVALID'));
  assert.throws(() => M.createPool(m, { ...ok, size: 0 }), code('ERR_INVALID'));
  assert.throws(() => M.createPool(m, { ...ok, size: 17 }), code('ERR_INVALID'));
  assert.throws(() => M.createPool(m, { ...ok, minSize: 4 }), code('ERR_INVALID'), 'minSize > size');
  assert.throws(() => M.createPool(m, { ...ok, minSize: 0 }), code('ERR_INVALID'));
  assert.throws(() => M.createPool(m, { ...ok, name: 'bad name' }), code('ERR_INVALID'));
  assert.throws(() => M.createPool(m, { ...ok, failureDomain: 'rack' as 'host' }), code('ERR_INVALID'));
  assert.throws(() => M.createPool(m, { ...ok, objectSizeBytes: 3000 }), code('ERR_INVALID'));
  const m1 = M.createPool(m, ok).map;
  assert.throws(() => M.createPool(m1, ok), code('ERR_EXISTS'));
  const m2 = M.createPool(m1, { ...ok, name: 'q', failureDomain: 'osd' });
  assert.equal(m2.pool.id, 2);
  assert.equal(m2.map.nextPoolId, 3);
});

test('OSD boot: new uuid gets nextOsdId, same uuid keeps its id; up and in; unchanged reboot is no change', () => {
  let m = cluster(3);
  const e0 = m.epoch;
  const r4 = M.osdBoot(m, bootReq('u4', 'h4'));
  assert.equal(r4.osdId, 4);
  assert.equal(r4.map.epoch, e0 + 1);
  assert.equal(r4.map.nextOsdId, 5);
  assert.deepEqual(
    { up: r4.map.osds[3].up, in: r4.map.osds[3].in },
    { up: true, in: true },
  );
  m = r4.map;
  // Same uuid, same fields, already up: the same map object (no epoch, no write).
  const again = M.osdBoot(m, bootReq('u4', 'h4'));
  assert.equal(again.osdId, 4);
  assert.equal(again.map, m);
  // Same uuid with a new address: same id, new epoch, PGs untouched (placement inputs unchanged).
  const moved = M.osdBoot(m, bootReq('u4', 'h4', { addr: '10.0.0.4', port: 7100 }));
  assert.equal(moved.osdId, 4);
  assert.equal(moved.map.epoch, m.epoch + 1);
  assert.equal(moved.map.osds[3].addr, '10.0.0.4');
  assert.equal(moved.map.pgs, m.pgs, 'an address change places nothing');
  // Bad requests.
  assert.throws(() => M.osdBoot(m, bootReq('', 'h')), code('ERR_INVALID'));
  assert.throws(() => M.osdBoot(m, bootReq('x', 'h', { port: 0 })), code('ERR_INVALID'));
  assert.throws(() => M.osdBoot(m, bootReq('x', 'h', { weight: -1 })), code('ERR_INVALID'));
  assert.throws(() => M.osdBoot(m, bootReq('x', 'bad host')), code('ERR_INVALID'));
  assertValid(moved.map);
});

test('mark down keeps acting sets; mark out re-places only the PGs that held the OSD, with a new epoch', () => {
  const m = cluster(6, 128);
  const down = M.markDown(m, [2]);
  assert.equal(down.epoch, m.epoch + 1);
  assert.equal(down.osds[1].up, false);
  assert.equal(down.osds[1].in, true);
  assert.equal(down.pgs, m.pgs, 'down moves nothing');
  assert.equal(M.markDown(down, [2]), down, 'already down: no change');
  assert.equal(M.markDown(down, [99]), down, 'unknown ids are skipped');

  const out = M.markOut(down, [2]);
  assert.equal(out.epoch, down.epoch + 1);
  assert.equal(out.osds[1].in, false);
  assert.equal(out.osds[1].outByOperator, undefined, 'an automatic out is not an operator out');
  let changed = 0;
  for (let pg = 0; pg < 128; pg++) {
    const before = pgsOf(down)[pg];
    const after = pgsOf(out)[pg];
    if (before.osds.includes(2)) {
      changed++;
      assert.equal(after.epoch, out.epoch, `pg ${pg}: set changed, epoch moves`);
      assert.ok(!after.osds.includes(2));
      assert.equal(after.osds.length, 3);
      for (const id of before.osds) if (id !== 2) assert.ok(after.osds.includes(id), `pg ${pg}: surviving replica ${id} stays`);
      // OSD 2 is down: never the primary of a re-placed PG while others are up.
      assert.notEqual(after.osds[0], 2);
    } else {
      assert.equal(after, before, `pg ${pg}: untouched PG keeps its record (epoch ${before.epoch})`);
    }
  }
  assert.ok(changed > 0);
  assert.equal(M.markOut(out, [2]), out, 'already out: no change');
  assertValid(out);

  // It comes back (boot): in again, and the PGs go back to the same sets as before.
  const back = M.osdBoot(out, bootReq('u2', 'h2'));
  assert.equal(back.osdId, 2);
  assert.equal(back.map.osds[1].in, true);
  assert.equal(back.map.osds[1].up, true);
  for (let pg = 0; pg < 128; pg++) {
    assert.deepEqual([...pgsOf(back.map)[pg].osds].sort(), [...pgsOf(m)[pg].osds].sort(), `pg ${pg}`);
  }
});

test('operator out/in: sticky across boots and heartbeats; in restores placement', () => {
  const m = cluster(5);
  const out = M.operatorOut(m, 3);
  assert.equal(out.osds[2].in, false);
  assert.equal(out.osds[2].outByOperator, true);
  assert.ok(pgsOf(out).every((r) => !r.osds.includes(3)));
  assert.equal(M.operatorOut(out, 3), out, 'idempotent');
  const rebooted = M.osdBoot(M.markDown(out, [3]), bootReq('u3', 'h3'));
  assert.equal(rebooted.map.osds[2].up, true);
  assert.equal(rebooted.map.osds[2].in, false, 'a boot does not undo an operator out');
  assert.equal(M.markUp(rebooted.map, 3), rebooted.map);
  const back = M.operatorIn(rebooted.map, 3);
  assert.equal(back.osds[2].in, true);
  assert.equal('outByOperator' in back.osds[2], false);
  assert.equal(M.operatorIn(back, 3), back, 'idempotent');
  for (let pg = 0; pg < 64; pg++) assert.deepEqual([...pgsOf(back)[pg].osds].sort(), [...pgsOf(m)[pg].osds].sort());
  assert.throws(() => M.operatorOut(m, 42), code('ERR_NOT_FOUND'));
  assert.throws(() => M.operatorIn(m, 42), code('ERR_NOT_FOUND'));
  assertValid(back);
});

test('osd rm: only when out and in no acting set; ids are never reused', () => {
  const m = cluster(4);
  assert.throws(() => M.osdRm(m, 2), code('ERR_BUSY'), 'in');
  assert.throws(() => M.osdRm(m, 9), code('ERR_NOT_FOUND'));
  const out = M.operatorOut(m, 2);
  // A hand-made map where the out OSD still sits in an acting set: refused.
  const stuck: ClusterMap = { ...out, pgs: { '1': pgsOf(out).map((r, k) => (k === 0 ? { ...r, osds: [2, ...r.osds.slice(1)] } : r)) } };
  assert.throws(() => M.osdRm(stuck, 2), (e) => isTesseraError(e, 'ERR_BUSY') && /acting set/.test(e.message));
  const rm = M.osdRm(out, 2);
  assert.equal(rm.epoch, out.epoch + 1);
  assert.deepEqual(rm.osds.map((o) => o.id), [1, 3, 4]);
  assert.equal(rm.nextOsdId, 5);
  assertValid(rm);
  const reboot = M.osdBoot(rm, bootReq('u2', 'h2'));
  assert.equal(reboot.osdId, 5, 'a removed OSD that boots again is a new OSD');
});

test('recompute keeps unchanged PGs (record and epoch); changed PGs take the new epoch and the new OSD', () => {
  const m = cluster(8, 256);
  // Age some PGs first so epochs differ: out and back in an OSD.
  const aged = M.operatorIn(M.operatorOut(m, 5), 5);
  const added = M.osdBoot(aged, bootReq('u9', 'h9')).map;
  let same = 0;
  let moved = 0;
  for (let pg = 0; pg < 256; pg++) {
    const a = pgsOf(aged)[pg];
    const b = pgsOf(added)[pg];
    if (b === a) {
      same++;
      continue;
    }
    moved++;
    assert.equal(b.epoch, added.epoch);
    assert.ok(b.osds.includes(9), `pg ${pg}: a changed PG changed because it took the new OSD`);
    assert.equal(b.osds.filter((id) => !a.osds.includes(id)).length, 1, `pg ${pg}: one replica moves`);
  }
  assert.ok(same > 0 && moved > 0, `${same} same, ${moved} moved`);
  // The epochs of unchanged PGs still differ among themselves (history kept, not reset).
  assert.ok(new Set(pgsOf(added).map((r) => r.epoch)).size >= 2);
});

test('volumes: create, resize, rename, delete and their errors', () => {
  const noPool = M.initialMap('f');
  assert.throws(() => M.createVolume(noPool, { name: 'v', sizeBytes: 4096 }, 't'), code('ERR_NOT_FOUND'));
  let m = M.createPool(M.createPool(noPool, { name: 'rbd', size: 1, minSize: 1, pgCount: 8 }).map, { name: 'fast', size: 1, minSize: 1, pgCount: 8 }).map;
  const c1 = M.createVolume(m, { name: 'v1', sizeBytes: 1 << 20 }, '2025-01-01T00:00:00.000Z');
  assert.deepEqual(c1.volume, { id: 1, name: 'v1', poolId: 1, sizeBytes: 1 << 20, createdAt: '2025-01-01T00:00:00.000Z' });
  assert.equal(c1.map.epoch, m.epoch + 1);
  m = c1.map;
  const c2 = M.createVolume(m, { name: 'v2', sizeBytes: 512, pool: 'fast' }, 't');
  assert.equal(c2.volume.poolId, 2);
  assert.equal(c2.volume.id, 2);
  m = c2.map;
  assert.throws(() => M.createVolume(m, { name: 'v1', sizeBytes: 512 }, 't'), code('ERR_EXISTS'));
  assert.throws(() => M.createVolume(m, { name: 'v3', sizeBytes: 512, pool: 'nope' }, 't'), code('ERR_NOT_FOUND'));
  for (const sizeBytes of [0, -512, 1000, 512.5, NaN, M.VOLUME_SIZE_BYTES_MAX + 512]) {
    assert.throws(() => M.createVolume(m, { name: 'v3', sizeBytes }, 't'), code('ERR_INVALID'), `size ${sizeBytes}`);
  }
  for (const name of ['', '-x', 'a b', 'x'.repeat(65), 'é']) assert.throws(() => M.createVolume(m, { name, sizeBytes: 512 }, 't'), code('ERR_INVALID'), name);

  const grown = M.resizeVolume(m, 'v1', 2 << 20);
  assert.equal(grown.volume.sizeBytes, 2 << 20);
  assert.equal(grown.map.epoch, m.epoch + 1);
  assert.equal(M.resizeVolume(m, 'v1', 1 << 20).map, m, 'same size: no change');
  assert.equal(M.resizeVolume(m, 'v1', 512).volume.sizeBytes, 512, 'shrink: the client library discards the data first');
  assert.throws(() => M.resizeVolume(m, 'v1', 777), code('ERR_INVALID'));
  assert.throws(() => M.resizeVolume(m, 'nope', 512), code('ERR_NOT_FOUND'));

  const renamed = M.renameVolume(m, 'v1', 'v1b');
  assert.equal(renamed.volume.id, 1);
  assert.equal(renamed.volume.name, 'v1b');
  assert.equal(M.renameVolume(m, 'v1', 'v1').map, m);
  assert.throws(() => M.renameVolume(m, 'v1', 'v2'), code('ERR_EXISTS'));
  assert.throws(() => M.renameVolume(m, 'nope', 'x'), code('ERR_NOT_FOUND'));
  assert.throws(() => M.renameVolume(m, 'v1', 'bad/name'), code('ERR_INVALID'));

  const deleted = M.deleteVolume(m, 'v2');
  assert.deepEqual(deleted.volumes.map((v) => v.name), ['v1']);
  assert.throws(() => M.deleteVolume(deleted, 'v2'), code('ERR_NOT_FOUND'));
  const c3 = M.createVolume(deleted, { name: 'v2', sizeBytes: 512 }, 't');
  assert.equal(c3.volume.id, 3, 'volume ids are never reused');
  assertValid(c3.map);
});

test('schema: parseClusterMap accepts sound maps and rejects broken ones with ERR_FORMAT', () => {
  const m = cluster(4, 8);
  M.createVolume(m, { name: 'v', sizeBytes: 512 }, 't');
  const good = JSON.parse(JSON.stringify(m)) as ClusterMap;
  assert.deepEqual(M.parseClusterMap(good), good);
  const broken: Array<[string, (x: ClusterMap) => void]> = [
    ['unknown field', (x) => ((x as unknown as Record<string, unknown>).extra = 1)],
    ['negative epoch', (x) => (x.epoch = -1)],
    ['PG table short', (x) => x.pgs['1'].pop()],
    ['PG record index', (x) => (x.pgs['1'][3].pg = 4)],
    ['unknown OSD in a PG', (x) => (x.pgs['1'][0].osds = [77])],
    ['duplicate OSD id', (x) => (x.osds[1].id = x.osds[0].id)],
    ['id >= nextOsdId', (x) => (x.nextOsdId = 2)],
    ['PG epoch in the future', (x) => (x.pgs['1'][0].epoch = x.epoch + 1)],
    ['pgCount not a power of two', (x) => (x.pools[0].pgCount = 6)],
    ['PG table of an unknown pool', (x) => (x.pgs['9'] = [])],
    ['minSize > size', (x) => (x.pools[0].minSize = 5)],
    ['string epoch', (x) => ((x as unknown as Record<string, unknown>).epoch = '5')],
  ];
  for (const [what, breakIt] of broken) {
    const x = JSON.parse(JSON.stringify(m)) as ClusterMap;
    breakIt(x);
    assert.throws(() => M.parseClusterMap(x), code('ERR_FORMAT'), what);
  }
  assert.throws(() => M.parseClusterMap(null), code('ERR_FORMAT'));
});

test('random OSD churn through the map: invariants, one replica per failure domain, epochs move only with sets (300 steps × 10 maps)', () => {
  const { seed, prng } = seeded('map churn');
  for (let run = 0; run < 10; run++) {
    const hosts = 3 + prng.int(6);
    let m = M.initialMap(`f${run}`);
    let uuid = 0;
    for (let i = 0; i < hosts * (1 + prng.int(2)); i++) m = M.osdBoot(m, bootReq(`u${++uuid}`, `h${prng.int(hosts)}`, { weight: 1 + prng.int(3) })).map;
    m = M.createPool(m, { name: 'a', size: 3, minSize: 2, pgCount: 64 }).map;
    m = M.createPool(m, { name: 'b', size: 2, minSize: 1, pgCount: 32, failureDomain: prng.chance(0.5) ? 'osd' : 'host' }).map;
    for (let step = 0; step < 300; step++) {
      const ctx = `seed ${seed} run ${run} step ${step}`;
      const ids = m.osds.map((o) => o.id);
      const pick = (): number => ids[prng.int(ids.length)];
      const prev = m;
      const r = prng.int(8);
      try {
        if (r === 0) m = M.osdBoot(m, bootReq(`u${++uuid}`, `h${prng.int(hosts + 2)}`)).map;
        else if (r === 1 && ids.length > 0) {
          const o = m.osds[prng.int(m.osds.length)];
          m = M.osdBoot(m, bootReq(o.uuid, o.host, { weight: o.weight })).map;
        } else if (r === 2 && ids.length > 0) m = M.markDown(m, [pick()]);
        else if (r === 3 && ids.length > 0) m = M.markOut(m, [pick()]);
        else if (r === 4 && ids.length > 0) m = M.operatorOut(m, pick());
        else if (r === 5 && ids.length > 0) m = M.operatorIn(m, pick());
        else if (r === 6 && ids.length > 0) m = M.osdRm(m, pick());
        else if (ids.length > 0) m = M.markUp(m, pick());
      } catch (err) {
        assert.ok(isTesseraError(err, 'ERR_BUSY'), `${ctx}: ${String(err)}`);
        continue;
      }
      if (m === prev) continue;
      assert.equal(m.epoch, prev.epoch + 1, ctx);
      assertValid(m, ctx);
      const byId = new Map(m.osds.map((o) => [o.id, o]));
      for (const pool of m.pools) {
        const eligible = m.osds.filter((o) => o.in && o.weight > 0);
        const domains = new Set(eligible.map((o) => (pool.failureDomain === 'host' ? o.host : String(o.id)))).size;
        const placed = placePgs({ osds: m.osds }, { id: pool.id, pgCount: pool.pgCount, size: pool.size, failureDomain: pool.failureDomain });
        for (let pg = 0; pg < pool.pgCount; pg++) {
          const rec = m.pgs[String(pool.id)][pg];
          const old = prev.pgs[String(pool.id)][pg];
          const doms = rec.osds.map((id) => (pool.failureDomain === 'host' ? byId.get(id)!.host : String(id)));
          assert.equal(new Set(doms).size, doms.length, `${ctx} pool ${pool.name} pg ${pg}: two replicas in one failure domain`);
          assert.equal(rec.osds.length, Math.min(pool.size, domains), `${ctx} pool ${pool.name} pg ${pg}: replica count`);
          for (const id of rec.osds) assert.ok(byId.get(id)!.in, `${ctx}: out OSD ${id} in an acting set`);
          assert.deepEqual([...rec.osds].sort(), [...placed[pg].osds].sort(), `${ctx} pg ${pg}: set is placePgs' set`);
          const sameSet = old.osds.length === rec.osds.length && old.osds.every((id) => rec.osds.includes(id));
          if (sameSet) assert.equal(rec, old, `${ctx} pg ${pg}: same set must keep the record and epoch`);
          else assert.equal(rec.epoch, m.epoch, `${ctx} pg ${pg}: changed set takes the new epoch`);
        }
      }
    }
  }
});

test('adding one OSD to N through osdBoot moves at most 1/N + 5 % of the replicas (20 maps, 1024 PGs)', () => {
  const { seed, prng } = seeded('map add OSD');
  const lines: string[] = [];
  for (let n = 0; n < 20; n++) {
    const osdCount = 6 + prng.int(15);
    const perHost = prng.chance(0.5) ? 1 : 2;
    let m = M.initialMap('f');
    for (let i = 0; i < osdCount; i++) m = M.osdBoot(m, bootReq(`u${i}`, `h${Math.floor(i / perHost)}`)).map;
    m = M.createPool(m, { name: 'rbd', size: 3, minSize: 2, pgCount: 1024 }).map;
    const after = M.osdBoot(m, bootReq(`u${osdCount}`, `h${Math.floor(osdCount / perHost)}`)).map;
    let movedReplicas = 0;
    let changedPgs = 0;
    for (let pg = 0; pg < 1024; pg++) {
      const a = pgsOf(m)[pg];
      const b = pgsOf(after)[pg];
      const added = b.osds.filter((id) => !a.osds.includes(id));
      movedReplicas += added.length;
      if (b !== a) changedPgs++;
      for (const id of added) assert.equal(id, osdCount + 1, `seed ${seed} map ${n} pg ${pg}: a replica moved to an old OSD`);
    }
    const fraction = movedReplicas / (3 * 1024);
    const bound = 1 / osdCount + 0.05;
    if (n < 4) lines.push(`${osdCount}→${osdCount + 1}: ${(fraction * 100).toFixed(1)} % of replicas, ${((changedPgs / 1024) * 100).toFixed(1)} % of PGs re-epoched`);
    assert.ok(fraction <= bound, `seed ${seed} map ${n}: ${osdCount}→${osdCount + 1} moved ${(fraction * 100).toFixed(1)} % > ${(bound * 100).toFixed(1)} %`);
    assert.equal(changedPgs, pgsOf(after).filter((r) => r.osds.includes(osdCount + 1)).length, 'only PGs that took the new OSD change epoch');
  }
  console.log(`# map add OSD: ${lines.join('; ')}`);
});
