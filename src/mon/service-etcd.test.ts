// Monitors on a real etcd (started here on free loopback ports, stopped by
// PID): one active, the others standby answering 503 with the active address;
// MonClient follows the hint; concurrent creates through both monitors get
// unique ids; two writers on one etcd map never lose updates; the standby
// takes over when the active one resigns (at once) and when its process is
// SIGKILLed (within the lease TTL), continuing the epoch with no acknowledged
// write lost.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { isTesseraError } from '../stdx/errors.js';
import { httpJson } from '../io/node/httpclient.js';
import { startTestEtcd, type TestEtcd } from './etcd-harness.js';
import { startMonitor, type RunningMonitor } from './run.js';
import { MonClient } from './client.js';
import { EtcdStore } from './etcd-store.js';
import { MapRepo, MAP_KEY } from './map-repo.js';
import * as M from './map.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const TTL_MS = 2000;

describe('monitors on etcd', () => {
  let etcd: TestEtcd;
  let prefixSeq = 0;
  const newPrefix = (): string => `montest${process.pid}-${++prefixSeq}/`;

  before(async () => {
    etcd = await startTestEtcd();
    console.log(`# etcd ${etcd.endpoint} pid ${etcd.pid}`);
  });
  after(async () => {
    await etcd?.stop();
  });

  const startMon = (id: string, prefix: string): Promise<RunningMonitor> =>
    startMonitor({ id, port: 0, etcdEndpoints: [etcd.endpoint], etcdPrefix: prefix, electionTtlMs: TTL_MS });
  /** A monitor creates its initial pool only once OSDs boot; these tests have none, so they create one (epoch 1 → 2). */
  const createPool = (addr: string): Promise<unknown> => new MonClient({ addrs: [addr] }).createPool({ name: 'rbd', size: 1, minSize: 1, pgCount: 8 });

  test('the standby answers 503 with the active address; MonClient follows it; creates through both monitors get unique ids', async () => {
    const prefix = newPrefix();
    const a = await startMon('a', prefix);
    let b: RunningMonitor | undefined;
    try {
      await a.service.whenActive(10_000);
      await createPool(a.addr);
      b = await startMon('b', prefix);
      await sleep(300);
      assert.equal(b.service.isActive(), false, 'one active monitor');
      const raw = await httpJson({ host: '127.0.0.1', port: b.port }, 'GET', '/v1/map', undefined, { timeoutMs: 3000 });
      assert.equal(raw.status, 503);
      assert.deepEqual({ code: (raw.body as { code: string }).code, activeAddr: (raw.body as { activeAddr: string }).activeAddr }, { code: 'ERR_NOT_ACTIVE', activeAddr: a.addr });

      const viaB = new MonClient({ addrs: [b.addr] });
      assert.equal((await viaB.getMap()).epoch, 2);
      assert.equal(viaB.activeAddr(), a.addr, 'learned from the hint');
      const viaA = new MonClient({ addrs: [a.addr, b.addr] });
      const bAddr = b.addr;
      const n = 30;
      const created = await Promise.all(
        Array.from({ length: n }, (_, i) => [viaA.createVolume({ name: `a${i}`, sizeBytes: 512 }), new MonClient({ addrs: [bAddr] }).createVolume({ name: `b${i}`, sizeBytes: 512 })]).flat(),
      );
      assert.equal(new Set(created.map((v) => v.id)).size, 2 * n);
      const map = await viaA.getMap();
      assert.equal(map.volumes.length, 2 * n);
      assert.equal(map.epoch, 2 + 2 * n);
    } finally {
      await b?.close();
      await a.close();
    }
  });

  test('the active monitor closes (resigns): the standby takes over at once and continues the epoch', async () => {
    const prefix = newPrefix();
    const a = await startMon('a', prefix);
    let b: RunningMonitor | undefined;
    try {
      await a.service.whenActive(10_000);
      await createPool(a.addr);
      b = await startMon('b', prefix);
      const client = new MonClient({ addrs: [a.addr, b.addr] });
      for (let i = 0; i < 5; i++) await client.createVolume({ name: `v${i}`, sizeBytes: 512 });
      const before = await client.getMap();
      const t0 = performance.now();
      await a.close();
      await b.service.whenActive(10_000);
      const ms = performance.now() - t0;
      console.log(`# monitor takeover after resign: ${ms.toFixed(0)} ms`);
      assert.ok(ms < 3000, `takeover took ${ms.toFixed(0)} ms`);
      const after = await client.getMap();
      assert.equal(client.activeAddr(), b.addr);
      assert.deepEqual(after, before, 'the new active monitor serves the same map');
      const v = await client.createVolume({ name: 'next', sizeBytes: 512 });
      assert.equal(v.id, 6);
      assert.equal((await client.getMap()).epoch, before.epoch + 1);
    } finally {
      await b?.close();
      await a.close();
    }
  });

  test('the active monitor process is SIGKILLed under load: the standby takes over within the lease TTL, no acknowledged write is lost', async () => {
    const prefix = newPrefix();
    const runUrl = new URL('./run.js', import.meta.url).href;
    const script = `
      const { startMonitor } = await import(${JSON.stringify(runUrl)});
      const m = await startMonitor({ id: 'child', port: 0, etcdEndpoints: [${JSON.stringify(etcd.endpoint)}], etcdPrefix: ${JSON.stringify(prefix)}, electionTtlMs: ${TTL_MS} });
      await m.service.whenActive(10000);
      process.stdout.write(JSON.stringify({ addr: m.addr }) + '\\n');
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let b: RunningMonitor | undefined;
    try {
      const childAddr = await new Promise<string>((resolve, reject) => {
        let buf = '';
        child.stdout!.on('data', (d: Buffer) => {
          buf += d.toString();
          const line = buf.split('\n').find((l) => l.startsWith('{'));
          if (line) resolve((JSON.parse(line) as { addr: string }).addr);
        });
        child.once('exit', (c) => reject(new Error(`child monitor exited early with ${c}`)));
      });
      await createPool(childAddr);
      b = await startMon('b', prefix);
      const client = new MonClient({ addrs: [childAddr, b.addr], requestTimeoutMs: 2000 });
      const acked = new Map<string, number>();
      let unknown = 0;
      let stop = false;
      let killedAtMs = 0;
      let servedByB = 0;
      const writer = (async () => {
        for (let i = 0; !stop; i++) {
          try {
            const v = await client.createVolume({ name: `w${i}`, sizeBytes: 512 });
            acked.set(v.name, v.id);
            if (killedAtMs > 0 && client.activeAddr() === b!.addr) servedByB++;
          } catch (err) {
            // Outcome unknown (the request died with the process) or no monitor yet: not acknowledged.
            assert.ok(isTesseraError(err, 'ERR_TIMEOUT'), String(err));
            unknown++;
          }
        }
      })();
      const waitFor = async (what: string, ok: () => boolean): Promise<void> => {
        const deadline = performance.now() + 30_000;
        while (!ok()) {
          if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
          await Promise.race([sleep(10), writer]); // a writer that failed ends the wait with its error
        }
      };
      await waitFor('20 acknowledged creates', () => acked.size >= 20);
      const epochBefore = (await client.getMap()).epoch;
      killedAtMs = performance.now();
      process.kill(child.pid!, 'SIGKILL');
      await b.service.whenActive(15_000);
      const takeoverMs = performance.now() - killedAtMs;
      await waitFor('20 creates served by the new active monitor', () => servedByB >= 20);
      stop = true;
      await writer;
      console.log(`# monitor takeover after SIGKILL (ttl ${TTL_MS} ms): ${takeoverMs.toFixed(0)} ms; ${acked.size} creates acknowledged, ${unknown} with unknown outcome`);
      assert.ok(takeoverMs <= 10_000, `takeover took ${takeoverMs.toFixed(0)} ms`);

      const store = await EtcdStore.connect({ endpoints: [etcd.endpoint], prefix });
      try {
        const map = (await new MapRepo(store).load())!;
        assert.ok(map.epoch > epochBefore, 'the epoch continued');
        const byName = new Map(map.volumes.map((v) => [v.name, v.id]));
        for (const [name, id] of acked) assert.equal(byName.get(name), id, `acknowledged volume ${name} (id ${id}) is in the map`);
        assert.equal(new Set(map.volumes.map((v) => v.id)).size, map.volumes.length, 'unique ids');
        assert.ok(map.volumes.length <= acked.size + unknown, 'nothing appeared that was never asked for');
      } finally {
        await store.close();
      }
    } finally {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
      await b?.close();
    }
  });

  test("the active monitor's lease is revoked behind its back: it stops serving, the standby takes over, the old one stands again as standby", async () => {
    const prefix = newPrefix();
    const a = await startMon('a', prefix);
    let b: RunningMonitor | undefined;
    const admin = await EtcdStore.connect({ endpoints: [etcd.endpoint], prefix });
    try {
      await a.service.whenActive(10_000);
      await createPool(a.addr);
      b = await startMon('b', prefix);
      const client = new MonClient({ addrs: [a.addr, b.addr] });
      await client.createVolume({ name: 'before', sizeBytes: 512 });
      const epoch = (await client.getMap()).epoch;
      const etcd3 = (admin as unknown as { client: import('etcd3').Etcd3 }).client;
      const kvs = (await etcd3.getAll().prefix(prefix + 'election/mon/').exec()).kvs;
      const leaderKv = kvs.sort((x, y) => Number(BigInt(x.create_revision) - BigInt(y.create_revision)))[0];
      const t0 = performance.now();
      await etcd3.leaseClient.leaseRevoke({ ID: leaderKv.lease });
      await b.service.whenActive(10_000);
      const deadline = performance.now() + 10_000;
      while (a.service.isActive() && performance.now() < deadline) await sleep(10);
      console.log(`# lease revoked: standby active after ${(performance.now() - t0).toFixed(0)} ms`);
      assert.equal(a.service.isActive(), false, 'the old active monitor learned of its loss');
      await assert.rejects(a.service.createVolume({ name: 'stale', sizeBytes: 512 }), (e) => isTesseraError(e, 'ERR_CLOSED'));
      const raw = await httpJson({ host: '127.0.0.1', port: a.port }, 'GET', '/v1/map', undefined, { timeoutMs: 3000 });
      assert.equal(raw.status, 503);
      assert.equal((raw.body as { activeAddr: string }).activeAddr, b.addr);
      const v = await client.createVolume({ name: 'after', sizeBytes: 512 });
      assert.equal(v.id, 2);
      assert.equal((await client.getMap()).epoch, epoch + 1);
      // The old monitor is a candidate again: when b leaves, it takes over.
      await b.close();
      await a.service.whenActive(10_000);
      assert.equal((await client.getMap()).epoch, epoch + 1);
    } finally {
      await admin.close();
      await b?.close();
      await a.close();
    }
  });

  test('two writers on one etcd map (both believing they are active) never lose updates or reuse ids', async () => {
    const prefix = newPrefix();
    const s1 = await EtcdStore.connect({ endpoints: [etcd.endpoint], prefix });
    const s2 = await EtcdStore.connect({ endpoints: [etcd.endpoint], prefix });
    try {
      const r1 = new MapRepo(s1);
      const r2 = new MapRepo(s2);
      await r1.update((cur) => cur ?? M.createPool(M.initialMap('f'), { name: 'rbd', size: 1, minSize: 1, pgCount: 4 }).map);
      await r2.load();
      const n = 25;
      const create = (repo: MapRepo, name: string): Promise<number> =>
        repo.update((cur) => M.createVolume(cur!, { name, sizeBytes: 512 }, 't').map).then((res) => res.map.volumes.find((v) => v.name === name)!.id);
      // Each writer is serial (as MonService is), the two race each other.
      const writer = async (repo: MapRepo, prefix: string): Promise<number[]> => {
        const out: number[] = [];
        for (let i = 0; i < n; i++) out.push(await create(repo, `${prefix}${i}`));
        return out;
      };
      const ids = (await Promise.all([writer(r1, 'x'), writer(r2, 'y')])).flat();
      assert.equal(new Set(ids).size, 2 * n);
      const final = (await new MapRepo(s1).load())!;
      assert.equal(final.volumes.length, 2 * n);
      assert.equal(final.epoch, 2 + 2 * n);
      const raw = await s1.get(MAP_KEY);
      assert.ok(raw !== null && raw.value.length > 0);
    } finally {
      await s1.close();
      await s2.close();
    }
  });
});
