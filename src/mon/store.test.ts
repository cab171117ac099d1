// MetaStore contract: one suite run against EmbeddedStore (temp file) and EtcdStore
// (a real etcd started here on free loopback ports with a temp data dir, stopped by
// PID), plus backend-specific tests: the embedded store's durability, torn tail,
// corruption and compaction; etcd election failover on resign and on a leader
// that stops renewing its lease (measured, asserted ≤ 10 s).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, appendFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startTestEtcd, type TestEtcd } from './etcd-harness.js';
import { join } from 'node:path';
import { EmbeddedStore } from './embedded-store.js';
import { EtcdStore } from './etcd-store.js';
import type { MetaStore, WatchEvent } from './store.js';
import { isTesseraError } from '../stdx/errors.js';

const b = (s: string): Buffer => Buffer.from(s, 'utf8');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const start = performance.now();
  while (!cond()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Runs the contract against stores from `open`; each call gets a fresh, isolated key space. */
function contract(backend: string, open: () => Promise<MetaStore>): void {
  describe(`MetaStore contract: ${backend}`, () => {
    test('put/get/list/delete', async () => {
      const s = await open();
      try {
        assert.equal(await s.get('a'), null);
        const r1 = await s.put('pool/a', b('1'));
        await s.put('pool/b', b('2'));
        await s.put('other/c', b('3'));
        const got = await s.get('pool/a');
        assert.ok(got);
        assert.equal(got.value.toString(), '1');
        assert.equal(got.revision, r1);
        const listed = await s.list('pool/');
        assert.deepEqual(
          listed.map((e) => [e.key, e.value.toString()]),
          [
            ['pool/a', '1'],
            ['pool/b', '2'],
          ],
        );
        assert.equal(await s.delete('pool/a'), true);
        assert.equal(await s.delete('pool/a'), false);
        assert.equal(await s.get('pool/a'), null);
        assert.deepEqual((await s.list('pool/')).map((e) => e.key), ['pool/b']);
        await assert.rejects(s.put('', b('x')), (e) => isTesseraError(e, 'ERR_INVALID'));
      } finally {
        await s.close();
      }
    });

    test('revisions increase across keys and operations', async () => {
      const s = await open();
      try {
        const r1 = await s.put('k1', b('a'));
        const r2 = await s.put('k2', b('b'));
        const r3 = await s.put('k1', b('c'));
        assert.ok(r1 < r2 && r2 < r3, `${r1} < ${r2} < ${r3}`);
        assert.equal((await s.get('k1'))?.revision, r3);
        assert.equal((await s.get('k2'))?.revision, r2);
        const parallel = await Promise.all(Array.from({ length: 20 }, (_, i) => s.put(`p${i}`, b(String(i)))));
        assert.equal(new Set(parallel.map(String)).size, 20, 'each mutation has its own revision');
        assert.ok(parallel.every((r) => r > r3));
      } finally {
        await s.close();
      }
    });

    test('compareAndSet: create-if-absent, success, conflict, and exactly one of two racing wins', async () => {
      const s = await open();
      try {
        const c1 = await s.compareAndSet('map', null, b('v1'));
        assert.equal(c1.ok, true);
        const again = await s.compareAndSet('map', null, b('dup'));
        assert.deepEqual(again, { ok: false, revision: c1.revision });
        const c2 = await s.compareAndSet('map', c1.revision, b('v2'));
        assert.equal(c2.ok, true);
        assert.ok(c2.revision > c1.revision);
        const stale = await s.compareAndSet('map', c1.revision, b('stale'));
        assert.deepEqual(stale, { ok: false, revision: c2.revision });
        const missing = await s.compareAndSet('nope', 5n, b('x'));
        assert.deepEqual(missing, { ok: false, revision: 0n });

        const race = await Promise.all([s.compareAndSet('map', c2.revision, b('A')), s.compareAndSet('map', c2.revision, b('B'))]);
        assert.equal(race.filter((r) => r.ok).length, 1, JSON.stringify(race, (_k, v) => (typeof v === 'bigint' ? String(v) : v)));
        const winner = race.find((r) => r.ok)!;
        const now = await s.get('map');
        assert.equal(now?.revision, winner.revision);
        assert.equal(now?.value.toString(), race[0].ok ? 'A' : 'B');
      } finally {
        await s.close();
      }
    });

    test('watch sees puts and deletes under its prefix, in order', async () => {
      const s = await open();
      try {
        const seen: WatchEvent[] = [];
        const w = await s.watch('osd/', (e) => seen.push(e));
        const r1 = await s.put('osd/1', b('up'));
        await s.put('pool/x', b('ignored'));
        const r2 = await s.put('osd/2', b('up'));
        assert.equal(await s.delete('osd/1'), true);
        const r4 = await s.put('osd/2', b('down'));
        await waitFor(() => seen.length >= 4, 5000, '4 watch events');
        assert.deepEqual(
          seen.map((e) => [e.type, e.key, e.value?.toString()]),
          [
            ['put', 'osd/1', 'up'],
            ['put', 'osd/2', 'up'],
            ['delete', 'osd/1', undefined],
            ['put', 'osd/2', 'down'],
          ],
        );
        assert.equal(seen[0].revision, r1);
        assert.equal(seen[1].revision, r2);
        assert.ok(seen[2].revision > r2 && seen[2].revision < r4, 'the delete carries its own revision');
        assert.equal(seen[3].revision, r4);
        await w.close();
        await s.put('osd/3', b('up'));
        await sleep(100);
        assert.equal(seen.length, 4, 'no events after close');
      } finally {
        await s.close();
      }
    });

    test('campaign: a lone candidate is elected with a term', async () => {
      const s = await open();
      try {
        const c = await s.campaign('mon', 'mon-a', 2000);
        const term = await c.elected();
        assert.ok(term > 0n);
        assert.equal(c.isLeader(), true);
        assert.equal(await s.leader('mon'), 'mon-a');
        await c.resign();
        assert.equal(c.isLeader(), false);
      } finally {
        await s.close();
      }
    });
  });
}

// ---------- embedded ----------

const tmpRoot = mkdtempSync(join(tmpdir(), 'tessera-mon-'));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));
let fileSeq = 0;
const newPath = (): string => join(tmpRoot, `meta-${++fileSeq}.log`);

contract('embedded', () => EmbeddedStore.open(newPath()));

describe('EmbeddedStore durability', () => {
  test('survives close and reopen: values, revisions and the counter', async () => {
    const path = newPath();
    let s = await EmbeddedStore.open(path);
    await s.put('a', b('1'));
    const rb = await s.put('b', b('2'));
    await s.delete('a');
    const rDel = await s.put('c', b('3'));
    await s.close();
    s = await EmbeddedStore.open(path);
    assert.equal(s.tornTailBytes, 0);
    assert.equal(await s.get('a'), null);
    assert.deepEqual(await s.get('b'), { value: b('2'), revision: rb });
    const next = await s.put('d', b('4'));
    assert.ok(next > rDel, 'revision counter continues after reopen');
    await s.close();
  });

  test('a torn last record is dropped; earlier records survive; appends continue after it', async () => {
    const path = newPath();
    let s = await EmbeddedStore.open(path);
    await s.put('a', b('1'));
    const rb = await s.put('b', b('2'));
    await s.close();
    // A half-written record: no newline (the write stopped mid-line).
    appendFileSync(path, '1234abcd {"rev":"9","ops":[{"k":"c","r":"9","v":"');
    s = await EmbeddedStore.open(path);
    assert.ok(s.tornTailBytes > 0);
    assert.equal(await s.get('c'), null);
    assert.equal((await s.get('b'))?.revision, rb);
    await s.put('c', b('3'));
    await s.close();
    // A complete-looking last line with a bad checksum is torn too.
    appendFileSync(path, '00000000 {"rev":"99","ops":[]}\n');
    s = await EmbeddedStore.open(path);
    assert.ok(s.tornTailBytes > 0);
    assert.equal((await s.get('c'))?.value.toString(), '3');
    await s.close();
  });

  test('corruption before the last record is an error, not a silent truncation', async () => {
    const path = newPath();
    const s = await EmbeddedStore.open(path);
    await s.put('a', b('1'));
    await s.put('b', b('2'));
    await s.put('c', b('3'));
    await s.close();
    const bytes = readFileSync(path);
    const firstNl = bytes.indexOf(0x0a);
    bytes[firstNl - 3] ^= 0x01; // flip a bit inside the first record
    writeFileSync(path, bytes);
    await assert.rejects(EmbeddedStore.open(path), (e) => isTesseraError(e, 'ERR_FORMAT'));
  });

  test('concurrent puts share fsyncs (group commit) and all survive reopen', async () => {
    const path = newPath();
    let s = await EmbeddedStore.open(path);
    const n = 500;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: n }, (_, i) => s.put(`k/${i}`, b(String(i)))));
    const ms = performance.now() - t0;
    await s.close();
    const lines = readFileSync(path, 'utf8').split('\n').filter(Boolean).length;
    console.log(`# group commit: ${n} concurrent puts in ${ms.toFixed(1)} ms as ${lines} log records (fsyncs)`);
    assert.ok(lines < n / 4, `expected batching, got ${lines} records for ${n} puts`);
    s = await EmbeddedStore.open(path);
    assert.equal((await s.list('k/')).length, n);
    await s.close();
  });

  test('compaction rewrites the log to live state; reopen sees the same data and revision', async () => {
    const path = newPath();
    let s = await EmbeddedStore.open(path, { compactMinBytes: 8 * 1024 });
    let last = 0n;
    for (let i = 0; i < 400; i++) last = await s.put(`k/${i % 10}`, b(`value-${i}`.padEnd(64, '.')));
    await s.delete('k/0');
    await s.close();
    const sizeBytes = readFileSync(path).length;
    assert.ok(sizeBytes < 40 * 1024, `log was compacted (now ${sizeBytes} bytes)`);
    assert.equal(existsSync(path + '.tmp'), false);
    s = await EmbeddedStore.open(path);
    const items = await s.list('k/');
    assert.equal(items.length, 9);
    assert.equal((await s.get('k/9'))?.revision, last);
    assert.ok((await s.put('z', b('1'))) > last + 1n, 'the delete revision survived too');
    await s.close();
  });

  test('get/list/CAS/put after close fail with ERR_CLOSED', async () => {
    const s = await EmbeddedStore.open(newPath());
    await s.close();
    await assert.rejects(async () => s.put('a', b('1')), (e) => isTesseraError(e, 'ERR_CLOSED'));
    await assert.rejects(async () => s.get('a'), (e) => isTesseraError(e, 'ERR_CLOSED'));
  });
});

// ---------- etcd ----------

let etcd: TestEtcd | null = null;
let etcdEndpoint = '';
let prefixSeq = 0;
const runId = process.pid;

describe('etcd backend', () => {
  before(async () => {
    const t0 = performance.now();
    etcd = await startTestEtcd();
    etcdEndpoint = etcd.endpoint;
    console.log(`# etcd ${etcdEndpoint} pid ${etcd.pid} ready in ${(performance.now() - t0).toFixed(0)} ms`);
  });

  after(async () => {
    if (!etcd) return;
    const alive = etcd.alive();
    await etcd.stop();
    assert.ok(alive, 'etcd exited early');
  });

  const openEtcd = (prefix = `t${runId}-${++prefixSeq}/`): Promise<EtcdStore> => EtcdStore.connect({ endpoints: [etcdEndpoint], prefix });

  contract('etcd', () => openEtcd());

  test('election: resign hands leadership to the other candidate at once', async () => {
    const prefix = `t${runId}-${++prefixSeq}/`;
    const a = await openEtcd(prefix);
    const c = await openEtcd(prefix);
    try {
      const ca = await a.campaign('mon', 'mon-a', 2000);
      const termA = await ca.elected();
      const cb = await c.campaign('mon', 'mon-b', 2000);
      await sleep(300);
      assert.equal(ca.isLeader(), true);
      assert.equal(cb.isLeader(), false, 'only one leader');
      assert.equal(await a.leader('mon'), 'mon-a');
      const t0 = performance.now();
      await ca.resign();
      const termB = await cb.elected();
      const ms = performance.now() - t0;
      console.log(`# etcd election: takeover after resign in ${ms.toFixed(0)} ms`);
      assert.ok(termB > termA, 'terms grow');
      assert.equal(await c.leader('mon'), 'mon-b');
      assert.ok(ms < 2000);
    } finally {
      await a.close();
      await c.close();
    }
  });

  test('election: a leader that stops renewing its lease is replaced within 10 s', async () => {
    const prefix = `t${runId}-${++prefixSeq}/`;
    const a = await openEtcd(prefix);
    const c = await openEtcd(prefix);
    try {
      const ttlMs = 2000;
      const ca = await a.campaign('mon', 'mon-a', ttlMs);
      await ca.elected();
      const cb = await c.campaign('mon', 'mon-b', ttlMs);
      await sleep(300);
      assert.equal(cb.isLeader(), false);
      const t0 = performance.now();
      a.abandon(); // the leader's process "dies": no resign, keepalives stop
      await cb.elected();
      const ms = performance.now() - t0;
      console.log(`# etcd election: takeover after leader death (ttl ${ttlMs} ms) in ${ms.toFixed(0)} ms`);
      assert.ok(ms <= 10_000, `takeover took ${ms} ms`);
      assert.equal(await c.leader('mon'), 'mon-b');
    } finally {
      await c.close();
    }
  });

  test('election: when the leader process is killed (SIGKILL), the other candidate leads within 10 s', async () => {
    const prefix = `t${runId}-${++prefixSeq}/`;
    const ttlMs = 2000;
    const storeUrl = new URL('./etcd-store.js', import.meta.url).href;
    const script = `
      const { EtcdStore } = await import(${JSON.stringify(storeUrl)});
      const s = await EtcdStore.connect({ endpoints: [${JSON.stringify(etcdEndpoint)}], prefix: ${JSON.stringify(prefix)} });
      const c = await s.campaign('mon', 'mon-child', ${ttlMs});
      await c.elected();
      process.stdout.write('elected\\n');
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const c = await openEtcd(prefix);
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout!.on('data', (d: Buffer) => d.toString().includes('elected') && resolve());
        child.once('exit', (code) => reject(new Error(`child exited early with ${code}`)));
      });
      const cb = await c.campaign('mon', 'mon-parent', ttlMs);
      await sleep(300);
      assert.equal(cb.isLeader(), false);
      assert.equal(await c.leader('mon'), 'mon-child');
      const t0 = performance.now();
      process.kill(child.pid!, 'SIGKILL');
      await cb.elected();
      const ms = performance.now() - t0;
      console.log(`# etcd election: takeover after SIGKILL of the leader process (ttl ${ttlMs} ms) in ${ms.toFixed(0)} ms`);
      assert.ok(ms <= 10_000, `takeover took ${ms} ms`);
    } finally {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
      await c.close();
    }
  });

  test('election: a revoked lease tells the leader (onLost) and elects the other', async () => {
    const prefix = `t${runId}-${++prefixSeq}/`;
    const a = await openEtcd(prefix);
    const c = await openEtcd(prefix);
    const admin = await openEtcd(prefix);
    try {
      const ca = await a.campaign('mon', 'mon-a', 2000);
      await ca.elected();
      let lostAfterMs = -1;
      const cb = await c.campaign('mon', 'mon-b', 2000);
      await sleep(300);
      const t0 = performance.now();
      ca.onLost(() => (lostAfterMs = performance.now() - t0));
      // Revoke mon-a's lease behind its back, as an operator or etcd itself would.
      const leases = await (admin as unknown as { client: import('etcd3').Etcd3 }).client.leaseClient.leaseLeases({});
      const mine = await (admin as unknown as { client: import('etcd3').Etcd3 }).client.getAll().prefix(prefix + 'election/mon/').exec();
      const leaderKv = mine.kvs.sort((x, y) => Number(BigInt(x.create_revision) - BigInt(y.create_revision)))[0];
      assert.ok(leases.leases.some((l) => l.ID === leaderKv.lease));
      await (admin as unknown as { client: import('etcd3').Etcd3 }).client.leaseClient.leaseRevoke({ ID: leaderKv.lease });
      await cb.elected();
      const ms = performance.now() - t0;
      console.log(`# etcd election: takeover after lease revoke in ${ms.toFixed(0)} ms`);
      assert.ok(ms <= 10_000);
      await waitFor(() => lostAfterMs >= 0, 10_000, 'onLost on the old leader');
      assert.equal(ca.isLeader(), false);
      console.log(`# etcd election: old leader learned of the loss after ${lostAfterMs.toFixed(0)} ms`);
    } finally {
      await a.close();
      await c.close();
      await admin.close();
    }
  });
});
