// MonService + HTTP API + MonClient on the embedded store, over real HTTP on
// 127.0.0.1 (port 0): the map survives a restart and its epoch continues;
// volume CRUD with stable error codes; long polls; batched concurrent writes;
// OSD boot/report/down/out with real (short) timeouts; the full grace of a
// newly active monitor; status with reports and 'unknown' PGs; client failover
// across addresses; two monitors that both believe they are active (split
// brain on one store) never hand out an id twice; losing the election stops
// writes at once. etcd-backed failover is in service-etcd.test.ts.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isTesseraError, TesseraError } from '../stdx/errors.js';
import { httpJson } from '../io/node/httpclient.js';
import { startMonitor, type RunningMonitor, type StartMonitorOptions } from './run.js';
import { MonClient, MonRemoteError } from './client.js';
import { MonService, WAITERS_MAX } from './service.js';
import { listenMonHttp } from './http.js';
import { EmbeddedStore } from './embedded-store.js';
import { MapRepo, MAP_KEY } from './map-repo.js';
import { MonNotActiveError } from './errors.js';
import type { Campaign, MetaStore } from './store.js';
import type { ClusterMap, OsdReport } from './map-types.js';
import { freePort } from './etcd-harness.js';

const root = mkdtempSync(join(tmpdir(), 'tessera-mon-svc-'));
after(() => rmSync(root, { recursive: true, force: true }));
let seq = 0;
const newDir = (): string => join(root, `mon-${++seq}`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const code = (c: string) => (err: unknown) => isTesseraError(err) && err.code === c;

async function until<T>(fn: () => Promise<T | undefined | null | false>, timeoutMs: number, what: string): Promise<T> {
  const start = performance.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (performance.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * A started, active monitor. Unless `createPool` is false, a new cluster gets
 * its pool at once through the API (a real monitor waits for `size` OSDs to
 * boot before creating its initial pool; these tests have no OSDs).
 */
async function mon(opts: Partial<StartMonitorOptions> & { createPool?: boolean } = {}): Promise<{ m: RunningMonitor; client: MonClient }> {
  const { createPool = true, ...startOpts } = opts;
  const m = await startMonitor({ id: 'a', port: 0, dataDir: opts.dataDir ?? newDir(), ...startOpts });
  await m.service.whenActive(5000);
  const client = new MonClient({ addrs: [m.addr], requestTimeoutMs: 3000, authToken: opts.authToken });
  if (createPool && opts.initialPool !== null && (await client.getMap()).pools.length === 0) {
    await client.createPool(opts.initialPool ?? { name: 'rbd', size: 3, minSize: 2, pgCount: 64 });
  }
  return { m, client: new MonClient({ addrs: [m.addr], requestTimeoutMs: 3000 }) };
}

const boot = (i: number) => ({ uuid: `uuid-${i}`, host: `h${i}`, addr: '127.0.0.1', port: 7000 + i, weight: 1, capacityBytes: 1 << 30 });
const report = (osdId: number, pgs: OsdReport['pgs'] = []): OsdReport => ({ osdId, uuid: `uuid-${osdId}`, capacityBytes: 1 << 30, usedBytes: 1 << 20, pgs });

test('embedded store: the first start creates the map; the initial pool comes once `size` failure domains have booted; a restart keeps both and continues the epoch', async () => {
  const dataDir = newDir();
  let { m, client } = await mon({ dataDir, createPool: false });
  assert.equal((await client.getMap()).epoch, 1, 'initial map');
  assert.deepEqual((await client.getMap()).pools, [], 'no pool before its failure domains are in');
  await client.osdBoot(boot(1));
  await client.osdBoot(boot(2));
  assert.deepEqual((await client.getMap()).pools, [], 'two hosts are not enough for size 3');
  await client.osdBoot(boot(3));
  const first = await client.getMap();
  assert.deepEqual(
    first.pools.map((p) => [p.name, p.size, p.minSize, p.pgCount, p.createdEpoch]),
    [['rbd', 3, 2, 64, first.epoch]],
  );
  assert.equal(first.pgs['1'].length, 64);
  assert.ok(first.pgs['1'].every((pg) => [...pg.osds].sort().join() === '1,2,3'), 'every PG starts on its full acting set');
  const v1 = await client.createVolume({ name: 'v1', sizeBytes: 1 << 20 });
  assert.equal(v1.id, 1);
  assert.equal((await client.getMap()).epoch, first.epoch + 1);
  await m.close();
  await m.close(); // idempotent

  ({ m, client } = await mon({ dataDir, initialPool: { name: 'other', size: 1, minSize: 1, pgCount: 8 } }));
  const again = await client.getMap();
  assert.equal(again.fsid, first.fsid);
  assert.equal(again.epoch, first.epoch + 1);
  assert.deepEqual(again.volumes.map((v) => v.name), ['v1']);
  await client.osdBoot(boot(4));
  assert.deepEqual((await client.getMap()).pools.map((p) => p.name), ['rbd'], 'the initial pool is only for a new cluster');
  const v2 = await client.createVolume({ name: 'v2', sizeBytes: 512 });
  assert.equal(v2.id, 2);
  await m.close();
});

test('HTTP API: volume and pool CRUD keep their error codes; bad bodies are ERR_INVALID; unknown routes ERR_NO_ROUTE', async () => {
  const { m, client } = await mon();
  try {
    const v = await client.createVolume({ name: 'disk', sizeBytes: 4096 });
    assert.equal(v.poolId, 1);
    await assert.rejects(client.createVolume({ name: 'disk', sizeBytes: 4096 }), (e) => e instanceof MonRemoteError && e.code === 'ERR_EXISTS' && e.httpStatus === 409);
    await assert.rejects(client.createVolume({ name: 'x', sizeBytes: 1000 }), (e) => e instanceof MonRemoteError && e.code === 'ERR_INVALID' && e.httpStatus === 400);
    await assert.rejects(client.createVolume({ name: 'x', sizeBytes: 512, pool: 'nope' }), (e) => e instanceof MonRemoteError && e.code === 'ERR_NOT_FOUND' && e.httpStatus === 404);
    assert.equal((await client.resizeVolume('disk', 8192)).sizeBytes, 8192);
    assert.equal((await client.resizeVolume('disk', 8192 - 512)).sizeBytes, 8192 - 512, 'a shrink is the client library\'s to make safe');
    assert.equal((await client.resizeVolume('disk', 8192)).sizeBytes, 8192);
    await assert.rejects(client.resizeVolume('nope', 512), code('ERR_NOT_FOUND'));
    await client.createVolume({ name: 'other', sizeBytes: 512 });
    await assert.rejects(client.renameVolume('disk', 'other'), code('ERR_EXISTS'));
    const renamed = await client.renameVolume('disk', 'disk2');
    assert.equal(renamed.id, v.id);
    // PATCH with a bad size and a rename: neither applies.
    const target = { host: '127.0.0.1', port: m.port };
    const both = await httpJson(target, 'PATCH', '/v1/volumes/disk2', { sizeBytes: 777, newName: 'disk3' }, { timeoutMs: 2000 });
    assert.equal(both.status, 400);
    assert.deepEqual((await client.getMap()).volumes.map((x) => x.name).sort(), ['disk2', 'other']);
    const ok = await httpJson(target, 'PATCH', '/v1/volumes/disk2', { sizeBytes: 16384, newName: 'disk3' }, { timeoutMs: 2000 });
    assert.equal(ok.status, 200);
    assert.deepEqual([(ok.body as { name: string }).name, (ok.body as { sizeBytes: number }).sizeBytes], ['disk3', 16384]);
    await client.deleteVolume('disk3');
    await assert.rejects(client.deleteVolume('disk3'), code('ERR_NOT_FOUND'));

    const pool = await client.createPool({ name: 'fast', size: 2, minSize: 1, pgCount: 16, failureDomain: 'osd' });
    assert.equal(pool.id, 2);
    await assert.rejects(client.createPool({ name: 'fast', size: 2, minSize: 1, pgCount: 16 }), code('ERR_EXISTS'));
    await assert.rejects(client.createPool({ name: 'p', size: 2, minSize: 1, pgCount: 12 }), code('ERR_INVALID'));
    await assert.rejects(client.createPool({ name: 'p', size: 2, minSize: 3, pgCount: 16 }), code('ERR_INVALID'));
    // Only the OSDs' object size (their engines store 4 MiB objects).
    await assert.rejects(client.createPool({ name: 'p', size: 2, minSize: 1, pgCount: 16, objectSizeBytes: 1024 * 1024 }), /objectSizeBytes 1048576: the OSDs store 4194304-byte objects/);
    assert.equal((await client.createPool({ name: 'p4', size: 2, minSize: 1, pgCount: 16, objectSizeBytes: 4 * 1024 * 1024 })).objectSizeBytes, 4 * 1024 * 1024);
    assert.equal((await client.createVolume({ name: 'f1', sizeBytes: 512, pool: 'fast' })).poolId, 2);

    // Raw requests the typed client cannot make.
    const unknownField = await httpJson(target, 'POST', '/v1/volumes', { name: 'z', sizeBytes: 512, color: 'red' }, { timeoutMs: 2000 });
    assert.equal(unknownField.status, 400);
    assert.equal((unknownField.body as { code: string }).code, 'ERR_INVALID');
    assert.match((unknownField.body as { message: string }).message, /unknown field\(s\) "color"/);
    const noRoute = await httpJson(target, 'GET', '/v1/nothing', undefined, { timeoutMs: 2000 });
    assert.deepEqual([noRoute.status, (noRoute.body as { code: string }).code], [404, 'ERR_NO_ROUTE']);
    const big = await httpJson(target, 'POST', '/v1/volumes', { name: 'x'.repeat(100_000), sizeBytes: 512 }, { timeoutMs: 2000 });
    assert.deepEqual([big.status, (big.body as { code: string }).code], [413, 'ERR_LIMIT']);
    const badId = await httpJson(target, 'POST', '/v1/osds/abc/out', undefined, { timeoutMs: 2000 });
    assert.deepEqual([badId.status, (badId.body as { code: string }).code], [400, 'ERR_INVALID']);
    const badWait = await httpJson(target, 'GET', '/v1/map/wait?after=1&waitMs=999999', undefined, { timeoutMs: 2000 });
    assert.equal(badWait.status, 400);
  } finally {
    await m.close();
  }
});

test('long poll: answers promptly on a change, null (204) on timeout, at once when the map is already newer', async () => {
  const { m, client } = await mon();
  try {
    const e = (await client.getMap()).epoch;
    const t0 = performance.now();
    const waiting = client.waitMap(e, 10_000);
    await sleep(50);
    await client.createVolume({ name: 'w', sizeBytes: 512 });
    const got = await waiting;
    const ms = performance.now() - t0;
    assert.equal(got?.epoch, e + 1);
    assert.ok(ms < 1000, `long poll took ${ms.toFixed(0)} ms`);
    const t1 = performance.now();
    assert.equal(await client.waitMap(e + 1, 300), null);
    const waited = performance.now() - t1;
    assert.ok(waited >= 280 && waited < 2000, `timeout after ${waited.toFixed(0)} ms`);
    const t2 = performance.now();
    assert.equal((await client.waitMap(e - 1, 10_000))?.epoch, e + 1);
    assert.ok(performance.now() - t2 < 500);
    // Many waiters, one change: all answered.
    const many = await Promise.all([...Array.from({ length: 20 }, () => client.waitMap(e + 1, 5000)), client.createVolume({ name: 'w2', sizeBytes: 512 })]);
    for (const r of many.slice(0, 20)) assert.equal((r as ClusterMap).epoch, e + 2);

    // Waiters are bounded; a client that hangs up frees its slot at once.
    const svc = m.service;
    const held = Array.from({ length: WAITERS_MAX }, () => svc.waitMap(e + 2, 30_000));
    assert.equal(svc.counters().waiters, WAITERS_MAX);
    await assert.rejects(svc.waitMap(e + 2, 1000), code('ERR_LIMIT'));
    await client.createVolume({ name: 'w3', sizeBytes: 512 });
    assert.ok((await Promise.all(held)).every((x) => x?.epoch === e + 3));
    assert.equal(svc.counters().waiters, 0);
    const hangUp = httpJson({ host: '127.0.0.1', port: m.port }, 'GET', `/v1/map/wait?after=${e + 3}&waitMs=30000`, undefined, { timeoutMs: 200 });
    await assert.rejects(hangUp);
    await until(async () => svc.counters().waiters === 0, 2000, 'the waiter of a closed connection to go');
  } finally {
    await m.close();
  }
});

test('concurrent volume creates are batched into few writes and get unique, consecutive ids', async () => {
  const { m, client } = await mon();
  try {
    const e0 = (await client.getMap()).epoch;
    const rev0 = (await m.store.get(MAP_KEY))!.revision;
    const n = 100;
    const t0 = performance.now();
    const vols = await Promise.all(Array.from({ length: n }, (_, i) => client.createVolume({ name: `c${i}`, sizeBytes: 512 * (i + 1) })));
    const ms = performance.now() - t0;
    const ids = vols.map((v) => v.id).sort((a, b) => a - b);
    assert.deepEqual(ids, Array.from({ length: n }, (_, i) => i + 1));
    const map = await client.getMap();
    assert.equal(map.epoch, e0 + n, 'one epoch per change');
    assert.equal(map.volumes.length, n);
    const writes = Number((await m.store.get(MAP_KEY))!.revision - rev0);
    console.log(`# ${n} concurrent volume creates over HTTP in ${ms.toFixed(0)} ms, ${writes} map writes`);
    assert.ok(writes < n / 2, `expected batching, got ${writes} writes for ${n} creates`);
  } finally {
    await m.close();
  }
});

test('OSDs: boot places PGs; reports keep OSDs up; silence marks down (sets kept), then out (sets re-placed); boot brings it back', async () => {
  const downAfterMs = 1000;
  const { m, client } = await mon({ osdDownAfterMs: downAfterMs, osdOutAfterMs: 1000, tickMs: 25 });
  const keepAlive = new Set([1, 2, 3, 4]);
  const lastSentMs = new Map<number, number>();
  let stop = false;
  let holdReports = false;
  const reporter = (async () => {
    while (!stop) {
      for (const id of holdReports ? [] : keepAlive) {
        lastSentMs.set(id, performance.now());
        await client.osdReport(report(id)).catch(() => undefined);
      }
      await sleep(100);
    }
  })();
  try {
    for (let i = 1; i <= 4; i++) {
      const r = await client.osdBoot(boot(i));
      assert.equal(r.osdId, i);
      assert.equal(r.map.osds.find((o) => o.id === i)?.up, true);
    }
    assert.equal((await client.osdBoot(boot(2))).osdId, 2, 'same uuid, same id');
    const placed = await client.getMap();
    assert.ok(placed.pgs['1'].every((r) => r.osds.length === 3));
    keepAlive.delete(4);
    const down = await until(async () => {
      const x = await client.getMap();
      return x.osds.find((o) => o.id === 4)?.up === false ? x : null;
    }, 5000, 'OSD 4 down');
    // The monitor shares this process's clock: its last heartbeat from OSD 4 came after lastSentMs.
    const silentMs = performance.now() - lastSentMs.get(4)!;
    assert.ok(silentMs >= downAfterMs, `marked down after ${silentMs.toFixed(0)} ms of silence`);
    assert.deepEqual(down.pgs, placed.pgs, 'down changes no acting set');
    assert.ok(down.osds.filter((o) => o.id !== 4).every((o) => o.up), 'reporting OSDs stay up');
    const out = await until(async () => {
      const x = await client.getMap();
      return x.osds.find((o) => o.id === 4)?.in === false ? x : null;
    }, 5000, 'OSD 4 out');
    for (let pg = 0; pg < 64; pg++) {
      const before = placed.pgs['1'][pg];
      const now = out.pgs['1'][pg];
      assert.ok(!now.osds.includes(4));
      if (!before.osds.includes(4)) assert.deepEqual(now, before, `pg ${pg} kept its record`);
      else assert.ok(now.epoch > before.epoch);
    }
    const st = await client.status();
    assert.equal(st.osds.find((o) => o.id === 4)?.up, false);
    // Operator out / in / rm.
    await assert.rejects(client.osdRm(3), code('ERR_BUSY'));
    await client.osdOut(3);
    assert.equal((await client.getMap()).osds.find((o) => o.id === 3)?.in, false);
    await client.osdReport(report(3));
    assert.equal((await client.getMap()).osds.find((o) => o.id === 3)?.in, false, 'heartbeats do not undo an operator out');
    await client.osdIn(3);
    assert.equal((await client.getMap()).osds.find((o) => o.id === 3)?.in, true);
    await assert.rejects(client.osdOut(99), code('ERR_NOT_FOUND'));
    // Out and in no acting set, but a leader still lists it in its raft membership: not yet.
    holdReports = true; // the background reports would replace the one below
    await sleep(150);
    const leading = { poolId: 1, pg: 0, role: 'leader' as const, term: 2, leader: 1, commitIndex: 9, appliedIndex: 9, voters: [1, 2, 4], learners: [3], state: 'recovering' as const, recoveryBytesLeft: 4096, pgEpoch: out.pgs['1'][0].epoch };
    await client.osdReport(report(1, [leading]));
    await assert.rejects(client.osdRm(4), (e: unknown) => code('ERR_BUSY')(e) && /still a raft member of PG 1\.0/.test((e as Error).message));
    await client.osdReport(report(1, [{ ...leading, voters: [1, 2, 3], learners: [] }]));
    await client.osdRm(4);
    holdReports = false;
    assert.deepEqual((await client.getMap()).osds.map((o) => o.id), [1, 2, 3]);
    await assert.rejects(client.osdReport(report(4)), code('ERR_NOT_FOUND'));
    const reborn = await client.osdBoot(boot(4));
    assert.equal(reborn.osdId, 5, 'a removed OSD comes back as a new one');
  } finally {
    stop = true;
    await reporter;
    await m.close();
  }
});

test('a newly active monitor gives every OSD a full osdDownAfterMs; a report from a down OSD marks it up', async () => {
  const dataDir = newDir();
  const downAfterMs = 1000;
  let { m, client } = await mon({ dataDir, osdDownAfterMs: downAfterMs, tickMs: 20 });
  for (let i = 1; i <= 3; i++) await client.osdBoot(boot(i));
  await m.close();
  await sleep(1200); // longer than osdDownAfterMs without any monitor
  ({ m, client } = await mon({ dataDir, osdDownAfterMs: downAfterMs, tickMs: 20 }));
  const tActive = performance.now();
  try {
    await sleep(300);
    const mid = await client.getMap();
    assert.ok(performance.now() - tActive < downAfterMs - 50, 'checked inside the grace');
    assert.ok(mid.osds.every((o) => o.up), 'no OSD marked down before a full osdDownAfterMs since election');
    await client.osdReport(report(1));
    await client.osdReport(report(2));
    const down = await until(async () => {
      const x = await client.getMap();
      return x.osds.find((o) => o.id === 3)?.up === false ? x : null;
    }, 3000, 'OSD 3 down');
    const ms = performance.now() - tActive;
    assert.ok(ms >= downAfterMs - 50, `OSD 3 marked down ${ms.toFixed(0)} ms after election`);
    await client.osdReport(report(3));
    const back = await client.getMap();
    assert.equal(back.osds.find((o) => o.id === 3)?.up, true);
    assert.equal(back.epoch, down.epoch + 1);
  } finally {
    await m.close();
  }
});

test("status: reports aggregate into PG states, 'unknown' for unreported PGs, health with reasons", async () => {
  const { m, client } = await mon({ initialPool: { name: 'rbd', size: 2, minSize: 1, pgCount: 8 } });
  try {
    await client.osdBoot(boot(1));
    await client.osdBoot(boot(2));
    let st = await client.status();
    assert.deepEqual(st.pgStates, { unknown: 8 });
    assert.equal(st.health, 'HEALTH_WARN');
    assert.deepEqual(st.monitors, [{ id: 'a', active: true }]);
    const pg = (n: number, state: 'active' | 'recovering') => ({
      poolId: 1, pg: n, role: 'leader' as const, term: 1, leader: 1, commitIndex: 1, appliedIndex: 1, voters: [1, 2], learners: [], state, recoveryBytesLeft: state === 'recovering' ? 1000 : 0,
    });
    await client.osdReport(report(1, [pg(0, 'active'), pg(1, 'active'), pg(2, 'active'), pg(3, 'recovering')]));
    st = await client.status();
    assert.deepEqual(st.pgStates, { active: 3, recovering: 1, unknown: 4 });
    assert.deepEqual(st.recovery, { pgsRecovering: 1, bytesLeft: 1000 });
    assert.ok(st.checks.some((c) => /4 PG\(s\) in unknown state/.test(c)), st.checks.join('; '));
    await client.osdReport(report(2, [4, 5, 6, 7].map((n) => pg(n, 'active'))));
    await client.osdReport(report(1, [0, 1, 2, 3].map((n) => pg(n, 'active'))));
    st = await client.status();
    assert.deepEqual(st.pgStates, { active: 8 });
    assert.equal(st.health, 'HEALTH_OK', st.checks.join('; '));
    assert.deepEqual(st.capacity, { totalBytes: 2 * (1 << 30), usedBytes: 2 * (1 << 20) });
    await assert.rejects(client.osdReport({ ...report(1), uuid: 'someone-else' }), code('ERR_NOT_FOUND'));
    const bad = await httpJson({ host: '127.0.0.1', port: m.port }, 'POST', '/v1/osds/report', { ...report(1), pgs: [{ ...pg(0, 'active'), state: 'happy' }] }, { timeoutMs: 2000 });
    assert.equal(bad.status, 400);
    // Replicas repairing a damaged raft log: counted over the wire, a warning.
    await client.osdReport({ ...report(2, [4, 5, 6, 7].map((n) => pg(n, 'active'))), repairingReplicas: 2 });
    st = await client.status();
    assert.equal(st.replicasRepairing, 2);
    assert.equal(st.health, 'HEALTH_WARN');
    assert.ok(st.checks.some((c) => /^2 PG replica\(s\) repairing/.test(c)), st.checks.join('; '));
    for (const v of [-1, 1.5, '2']) {
      const r = await httpJson({ host: '127.0.0.1', port: m.port }, 'POST', '/v1/osds/report', { ...report(2), repairingReplicas: v }, { timeoutMs: 2000 });
      assert.equal(r.status, 400, `repairingReplicas ${JSON.stringify(v)}`);
    }
    assert.equal((await client.status()).replicasRepairing, 2, 'a refused report changes nothing');
  } finally {
    await m.close();
  }
});

test('MonClient: skips dead addresses, remembers the live one, and gives up with ERR_TIMEOUT after attemptsMax', async () => {
  const { m } = await mon();
  const dead = `127.0.0.1:${await freePort()}`;
  try {
    const client = new MonClient({ addrs: [dead, m.addr], requestTimeoutMs: 2000 });
    assert.equal((await client.getMap()).epoch, 2);
    assert.equal(client.activeAddr(), m.addr);
    // A create to a refused address is safe to retry elsewhere.
    const c2 = new MonClient({ addrs: [dead, m.addr] });
    assert.equal((await c2.createVolume({ name: 'r', sizeBytes: 512 })).name, 'r');
    const none = new MonClient({ addrs: [dead], attemptsMax: 3, retryDelayMs: 10 });
    const t0 = performance.now();
    await assert.rejects(none.getMap(), (e) => isTesseraError(e, 'ERR_TIMEOUT') && /no active monitor/.test(e.message));
    assert.ok(performance.now() - t0 < 2000);
    assert.throws(() => new MonClient({ addrs: ['nohost'] }), code('ERR_INVALID'));
    assert.throws(() => new MonClient({ addrs: [] }), code('ERR_INVALID'));
  } finally {
    await m.close();
  }
});

test('startMonitor: needs a data dir or etcd endpoints; a taken port is ERR_ADDRESS_IN_USE and releases the store', async () => {
  await assert.rejects(startMonitor({ id: 'a', port: 0 }), code('ERR_INVALID'));
  await assert.rejects(startMonitor({ id: 'a', port: 0, etcdEndpoints: [] }), code('ERR_INVALID'));
  const { m } = await mon();
  const dataDir = newDir();
  try {
    await assert.rejects(startMonitor({ id: 'b', port: m.port, dataDir }), code('ERR_ADDRESS_IN_USE'));
    // The store was closed on the failure: it opens again.
    const again = await startMonitor({ id: 'b', port: 0, dataDir });
    await again.close();
  } finally {
    await m.close();
  }
});

test('auth token: every route needs the bearer token', async () => {
  const { m } = await mon({ authToken: 's3cret' });
  try {
    const anon = new MonClient({ addrs: [m.addr] });
    await assert.rejects(anon.getMap(), (e) => e instanceof MonRemoteError && e.remoteCode === 'ERR_UNAUTHORIZED' && e.httpStatus === 401);
    const wrong = new MonClient({ addrs: [m.addr], authToken: 's3cret!' });
    await assert.rejects(wrong.createVolume({ name: 'a', sizeBytes: 512 }), (e) => e instanceof MonRemoteError && e.httpStatus === 401);
    const good = new MonClient({ addrs: [m.addr], authToken: 's3cret' });
    assert.equal((await good.createVolume({ name: 'a', sizeBytes: 512 })).id, 1);
  } finally {
    await m.close();
  }
});

test('split brain on one store: two monitors that both act as active never hand out a volume id twice', async () => {
  // The embedded store elects every candidate at once, so both services are active.
  const store = await EmbeddedStore.open(join(newDir() + '-store.log'));
  const a = new MonService({ store, id: 'a' });
  const b = new MonService({ store, id: 'b' });
  const ha = await listenMonHttp({ service: a, port: 0 });
  const hb = await listenMonHttp({ service: b, port: 0 });
  try {
    a.start(`127.0.0.1:${ha.port}`);
    await a.whenActive(5000);
    await a.createPool({ name: 'rbd', size: 1, minSize: 1, pgCount: 8 }); // no OSDs boot here
    b.start(`127.0.0.1:${hb.port}`);
    await b.whenActive(5000);
    const ca = new MonClient({ addrs: [`127.0.0.1:${ha.port}`] });
    const cb = new MonClient({ addrs: [`127.0.0.1:${hb.port}`] });
    const n = 40;
    const created = await Promise.all(
      Array.from({ length: n }, (_, i) => [ca.createVolume({ name: `a${i}`, sizeBytes: 512 }), cb.createVolume({ name: `b${i}`, sizeBytes: 512 })]).flat(),
    );
    const ids = created.map((v) => v.id);
    assert.equal(new Set(ids).size, 2 * n, 'unique ids');
    const repo = new MapRepo(store);
    const stored = (await repo.load())!;
    assert.equal(stored.volumes.length, 2 * n, 'no lost update');
    assert.deepEqual(stored.volumes.map((v) => v.id).sort((x, y) => x - y), Array.from({ length: 2 * n }, (_, i) => i + 1));
    assert.equal(stored.epoch, 2 + 2 * n);
    for (const v of created) assert.equal(stored.volumes.find((x) => x.id === v.id)?.name, v.name, 'each acknowledged create is stored as acknowledged');
    // The same name through the other monitor: ERR_EXISTS, even though its cached map is older.
    await assert.rejects(cb.createVolume({ name: 'a0', sizeBytes: 512 }), code('ERR_EXISTS'));
  } finally {
    await ha.close();
    await hb.close();
    await a.close();
    await b.close();
    await store.close();
  }
});

/** A MetaStore whose elections the test decides: every candidate is elected at once and loses on demand. */
class ControlledStore implements MetaStore {
  readonly campaigns: ControlledCampaign[] = [];
  private term = 0n;
  constructor(private readonly inner: MetaStore) {}
  get = (k: string) => this.inner.get(k);
  list = (p: string) => this.inner.list(p);
  put = (k: string, v: Buffer) => this.inner.put(k, v);
  delete = (k: string) => this.inner.delete(k);
  compareAndSet = (k: string, r: bigint | null, v: Buffer) => this.inner.compareAndSet(k, r, v);
  watch: MetaStore['watch'] = (p, cb, o) => this.inner.watch(p, cb, o);
  async campaign(electionName: string, candidateId: string): Promise<Campaign> {
    const c = new ControlledCampaign(electionName, candidateId, ++this.term);
    this.campaigns.push(c);
    return c;
  }
  async leader(): Promise<string | null> {
    return this.campaigns.find((c) => c.isLeader())?.candidateId ?? null;
  }
  close = () => this.inner.close();
}

class ControlledCampaign implements Campaign {
  private leading = true;
  private readonly lost: Array<(e: TesseraError) => void> = [];
  constructor(
    readonly electionName: string,
    readonly candidateId: string,
    private readonly term: bigint,
  ) {}
  isLeader = () => this.leading;
  elected = () => (this.leading ? Promise.resolve(this.term) : Promise.reject(new Error('ended')));
  onLost(cb: (e: TesseraError) => void): void {
    this.lost.push(cb);
  }
  async resign(): Promise<void> {
    this.leading = false;
  }
  /** Ends leadership without telling anyone (a store bug the service must survive). */
  fadeAway(): void {
    this.leading = false;
  }
  lose(err: TesseraError): void {
    this.leading = false;
    for (const cb of this.lost) cb(err);
  }
}

test('losing the election stops serving at once (calls, queued writes, long polls); the monitor stands again and continues the epoch', async () => {
  const inner = await EmbeddedStore.open(join(newDir() + '-store.log'));
  const store = new ControlledStore(inner);
  const svc = new MonService({ store, id: 'a', initialPool: null });
  // The node clock's timers are unref'd (a server keeps a real monitor alive); keep this test's loop alive.
  const keepAlive = setInterval(() => undefined, 1000);
  try {
    svc.start('127.0.0.1:1');
    await svc.whenActive(5000);
    await svc.createPool({ name: 'rbd', size: 1, minSize: 1, pgCount: 4 });
    const e = (await svc.getMap()).epoch;
    const waiting = svc.waitMap(e, 10_000);
    const queued = [svc.createVolume({ name: 'q1', sizeBytes: 512 }), svc.createVolume({ name: 'q2', sizeBytes: 512 })];
    store.campaigns[0].lose(new TesseraError('ERR_TIMEOUT', 'lease expired'));
    assert.equal(svc.isActive(), false, 'inactive in the same turn');
    await assert.rejects(svc.getMap(), (err) => err instanceof MonNotActiveError);
    await assert.rejects(svc.createVolume({ name: 'late', sizeBytes: 512 }), (err) => err instanceof MonNotActiveError);
    await assert.rejects(waiting, (err) => err instanceof MonNotActiveError);
    // The first queued create may already be in flight (its compare-and-set is safe either way); the rest are refused.
    const settled = await Promise.allSettled(queued);
    assert.equal(settled[1].status, 'rejected');
    // It stands again, is elected, and continues from the stored map.
    await svc.whenActive(5000);
    assert.equal(store.campaigns.length, 2);
    const map = await svc.getMap();
    assert.ok(map.epoch >= e);
    const v = await svc.createVolume({ name: 'after', sizeBytes: 512 });
    assert.equal((await svc.getMap()).epoch, map.epoch + 1);
    assert.ok(v.id >= 1);
    // A campaign that ends silently is noticed at the next call; the monitor stands again.
    store.campaigns[1].fadeAway();
    await assert.rejects(svc.getMap(), (err) => err instanceof MonNotActiveError);
    await svc.whenActive(5000);
    assert.equal(store.campaigns.length, 3);
    assert.equal((await svc.getMap()).epoch, map.epoch + 1);
  } finally {
    clearInterval(keepAlive);
    await svc.close();
    await store.close();
  }
});

test('a monitor on every interface advertises a reachable address: the first non-loopback IPv4 (or 127.0.0.1), or mon.advertiseHost', async () => {
  const { networkInterfaces } = await import('node:os');
  const external = Object.values(networkInterfaces())
    .flat()
    .find((a) => a?.family === 'IPv4' && !a.internal)?.address;
  const wild = await startMonitor({ id: 'w', host: '0.0.0.0', port: 0, dataDir: newDir() });
  try {
    assert.equal(wild.addr, `${external ?? '127.0.0.1'}:${wild.port}`);
  } finally {
    await wild.close();
  }
  const named = await startMonitor({ id: 'n', host: '0.0.0.0', port: 0, dataDir: newDir(), advertiseHost: 'mon1.example.org' });
  try {
    assert.equal(named.addr, `mon1.example.org:${named.port}`);
  } finally {
    await named.close();
  }
});
