// PrService (persistent reservations in the monitor):
// - with a manual clock on the embedded store (deterministic lease arithmetic): a
//   just-activated monitor holds CAS for leaseMs + margin; a CAS waits for the
//   acknowledgement of a following gateway; it stops waiting when a dead gateway's
//   lease expires, and after leaseMs + margin for a live gateway that never
//   acknowledges; losing activity fails a waiting CAS, whose retry with the same op
//   answers ok; long-poll semantics (a gateway without a lease is answered at once);
//   limits and validation; damaged stored records.
// - on the embedded store and on a real etcd (real clock): concurrent CAS of one key
//   have exactly one winner per rev, also from two services on one store (two
//   monitors that both believe they are active); read-modify-write loops lose no update.
// - over HTTP with a real monitor: 50 concurrent read-modify-write loops from two
//   clients lose no update; route validation; on etcd, a standby that takes over
//   holds CAS for one lease.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isTesseraError } from '../stdx/errors.js';
import type { Clock, TimerHandle } from '../io/clock.js';
import { httpJson } from '../io/node/httpclient.js';
import { refClock } from '../io/node/clock.js';
import { EmbeddedStore } from './embedded-store.js';
import { EtcdStore } from './etcd-store.js';
import { startTestEtcd, type TestEtcd } from './etcd-harness.js';
import { startMonitor, type RunningMonitor } from './run.js';
import { MonClient } from './client.js';
import { MonNotActiveError } from './errors.js';
import type { MetaStore } from './store.js';
import { PR_ACK_MARGIN_MS, PR_FOLLOWS_PER_GATEWAY_MAX, PR_GATEWAYS_MAX, PrService } from './pr-service.js';
import type { PrCasAnswer } from './api-types.js';

const root = mkdtempSync(join(tmpdir(), 'tessera-pr-svc-'));
after(() => rmSync(root, { recursive: true, force: true }));
let seq = 0;
const newDir = (): string => join(root, `d${++seq}`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const code = (c: string) => (err: unknown) => isTesseraError(err) && err.code === c;

class ManualClock implements Clock {
  now = 0;
  private timers: Array<{ atMs: number; seq: number; cb: () => void; cancelled: boolean }> = [];
  private seq = 0;
  nowMs(): number {
    return this.now;
  }
  setTimer(delayMs: number, cb: () => void): TimerHandle {
    const t = { atMs: this.now + Math.max(0, delayMs), seq: this.seq++, cb, cancelled: false };
    this.timers.push(t);
    return { cancel: () => void (t.cancelled = true) };
  }
  /** Moves time forward, firing due timers in order. */
  advance(ms: number): void {
    const end = this.now + ms;
    for (;;) {
      const due = this.timers.filter((t) => !t.cancelled && t.atMs <= end).sort((a, b) => a.atMs - b.atMs || a.seq - b.seq)[0];
      if (due === undefined) break;
      due.cancelled = true;
      this.now = due.atMs;
      due.cb();
    }
    this.timers = this.timers.filter((t) => !t.cancelled);
    this.now = end;
  }
}

interface Tracked<T> {
  done: boolean;
  value?: T;
  err?: unknown;
}
function track<T>(p: Promise<T>): Tracked<T> {
  const t: Tracked<T> = { done: false };
  p.then(
    (v) => Object.assign(t, { done: true, value: v }),
    (e: unknown) => Object.assign(t, { done: true, err: e }),
  );
  return t;
}

async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const start = performance.now();
  while (!(await cond())) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const LEASE_MS = 1000;
const HOLD_MS = LEASE_MS + PR_ACK_MARGIN_MS;

async function manualService(): Promise<{ svc: PrService; clock: ManualClock; store: MetaStore }> {
  const store = await EmbeddedStore.open(join(mkdtempSync(join(root, 'emb-')), 'store.log'));
  const clock = new ManualClock();
  const svc = new PrService({ store, clock, leaseMs: LEASE_MS });
  svc.activate();
  return { svc, clock, store };
}

async function done(svc: PrService, store: MetaStore): Promise<void> {
  svc.deactivate(new MonNotActiveError('test over', null));
  await store.close();
}

describe('PrService with a manual clock', () => {
  test('a just-activated monitor holds CAS for leaseMs + margin; reads and watches are served meanwhile', async () => {
    const { svc, clock, store } = await manualService();
    try {
      assert.equal(svc.isHolding(), true);
      const cas = track(svc.compareAndSet('1', 0, { a: 1 }));
      assert.deepEqual(await svc.get('1', 'g'), { rev: 0, state: null, leaseMs: LEASE_MS }, 'reads during the hold');
      assert.deepEqual(await svc.watchKeys('g', [['1', 0]], 0), { leaseMs: LEASE_MS, records: [] });
      await sleep(50);
      assert.equal(cas.done, false);
      clock.advance(HOLD_MS - 1);
      await svc.watchKeys('g', [['1', 0]], 0); // keep g's lease
      await sleep(50);
      assert.equal(cas.done, false, 'still held 1 ms before the end');
      assert.equal((await svc.get('1')).rev, 0, 'nothing written during the hold');
      clock.advance(1);
      await until(async () => (await svc.get('1')).rev === 1, 'the commit after the hold');
      assert.equal(cas.done, false, 'committed, waiting for g');
      await svc.watchKeys('g', [['1', 1]], 0);
      await until(() => cas.done, 'the CAS answer');
      assert.deepEqual(cas.value, { ok: true, rev: 1 });
    } finally {
      await done(svc, store);
    }
  });

  test('a CAS answers only after every following gateway acknowledged the new rev; its waiting poll is woken with the record', async () => {
    const { svc, clock, store } = await manualService();
    try {
      clock.advance(HOLD_MS);
      await svc.get('1', 'g1');
      await svc.get('1', 'g2');
      const poll1 = track(svc.watchKeys('g1', [['1', 0]], 400));
      const poll2 = track(svc.watchKeys('g2', [['1', 0]], 400));
      await sleep(20);
      assert.equal(poll1.done || poll2.done, false, 'nothing new yet');
      assert.equal(svc.counters().polls, 2);
      const cas = track(svc.compareAndSet('1', 0, { holder: 'x' }));
      await until(() => poll1.done && poll2.done, 'the polls to be woken');
      assert.deepEqual(poll1.value, { leaseMs: LEASE_MS, records: [{ key: '1', rev: 1, state: { holder: 'x' } }] });
      await sleep(20);
      assert.equal(cas.done, false);
      await svc.watchKeys('g1', [['1', 1]], 0);
      await sleep(20);
      assert.equal(cas.done, false, 'g2 has not acknowledged');
      const next = track(svc.watchKeys('g2', [['1', 1]], 400));
      await until(() => cas.done, 'the CAS answer');
      assert.deepEqual(cas.value, { ok: true, rev: 1 });
      assert.equal(next.done, false, 'the acknowledging poll waits for the next change');
      // A conflict answer waits the same way for the rev it returns (already acknowledged here).
      assert.deepEqual(await svc.compareAndSet('1', 0, null), { ok: false, current: { rev: 1, state: { holder: 'x' } } });
      clock.advance(LEASE_MS / 2);
      await until(() => next.done, 'the poll to time out');
      assert.deepEqual(next.value, { leaseMs: LEASE_MS, records: [] });
    } finally {
      await done(svc, store);
    }
  });

  test('a poll from a gateway without a lease here (first poll, lease expired, new monitor) is answered at once; the next one waits', async () => {
    const { svc, clock, store } = await manualService();
    try {
      clock.advance(HOLD_MS);
      const first = track(svc.watchKeys('g', [['6', 0]], 400));
      await until(() => first.done, 'the first poll answered at once');
      assert.deepEqual(first.value, { leaseMs: LEASE_MS, records: [] });
      const second = track(svc.watchKeys('g', [['6', 0]], 400));
      await sleep(30);
      assert.equal(second.done, false, 'a gateway holding a lease long-polls');
      clock.advance(400);
      await until(() => second.done, 'the long poll to end');
      clock.advance(LEASE_MS); // g's lease runs out
      assert.equal(svc.counters().gateways, 0);
      const again = track(svc.watchKeys('g', [['6', 0]], 400));
      await until(() => again.done, 'the poll after the lease ran out answered at once');
    } finally {
      await done(svc, store);
    }
  });

  test('a CAS stops waiting for a dead gateway when its lease expires', async () => {
    const { svc, clock, store } = await manualService();
    try {
      clock.advance(HOLD_MS);
      await svc.get('2', 'dead');
      clock.advance(400); // its lease ends 600 ms from now
      const cas = track(svc.compareAndSet('2', 0, 'x'));
      await until(async () => (await svc.get('2')).rev === 1, 'the commit');
      clock.advance(599);
      await sleep(30);
      assert.equal(cas.done, false);
      assert.equal(svc.counters().gateways, 1);
      clock.advance(1);
      await until(() => cas.done, 'the CAS answer');
      assert.deepEqual(cas.value, { ok: true, rev: 1 });
      assert.equal(svc.counters().gateways, 0);
      // A released gateway stops holding CAS calls at once.
      await svc.get('2', 'leaving');
      const cas2 = track(svc.compareAndSet('2', 1, 'y'));
      await until(async () => (await svc.get('2')).rev === 2, 'the second commit');
      assert.equal(cas2.done, false);
      svc.release('leaving');
      await until(() => cas2.done, 'the answer after release');
      assert.deepEqual(cas2.value, { ok: true, rev: 2 });
    } finally {
      await done(svc, store);
    }
  });

  test('a live gateway that never acknowledges holds a CAS at most leaseMs + margin after the commit', async () => {
    const { svc, clock, store } = await manualService();
    try {
      clock.advance(HOLD_MS);
      await svc.get('3', 'stuck');
      const cas = track(svc.compareAndSet('3', 0, 1));
      await until(async () => (await svc.get('3')).rev === 1, 'the commit');
      for (let t = 0; t < HOLD_MS - 250; t += 250) {
        clock.advance(250);
        // Renews its lease, keeps claiming rev 0 (it is answered the new record every time).
        const a = await svc.watchKeys('stuck', [['3', 0]], 400);
        assert.equal(a.records[0]?.rev, 1);
      }
      clock.advance(249);
      await sleep(30);
      assert.equal(cas.done, false);
      clock.advance(1);
      await until(() => cas.done, 'the bounded answer');
      assert.deepEqual(cas.value, { ok: true, rev: 1 });
    } finally {
      await done(svc, store);
    }
  });

  test('losing activity fails a waiting CAS; its retry with the same op at the next activation answers ok after the new hold', async () => {
    const { svc, clock, store } = await manualService();
    try {
      clock.advance(HOLD_MS);
      await svc.get('4', 'g');
      const poll = track(svc.watchKeys('g', [['4', 0]], 400));
      const cas = track(svc.compareAndSet('4', 0, { v: 1 }, 'op-1'));
      await until(() => poll.done, 'the woken poll');
      svc.deactivate(new MonNotActiveError('lost the election', null));
      await until(() => cas.done, 'the failed CAS');
      assert.ok(cas.err instanceof MonNotActiveError);
      await assert.rejects(svc.get('4'), (e) => e instanceof MonNotActiveError);
      svc.activate();
      const retry = track(svc.compareAndSet('4', 0, { v: 1 }, 'op-1'));
      const other = track(svc.compareAndSet('4', 0, { v: 1 }, 'op-2'));
      clock.advance(HOLD_MS);
      await until(() => retry.done && other.done, 'the answers');
      assert.deepEqual(retry.value, { ok: true, rev: 1 }, 'the applied op is recognized');
      assert.deepEqual(other.value, { ok: false, current: { rev: 1, state: { v: 1 } } });
    } finally {
      await done(svc, store);
    }
  });

  test('validation and limits', async () => {
    const { svc, clock, store } = await manualService();
    try {
      clock.advance(HOLD_MS);
      for (const k of ['', '01', 'x', '1/2', '12345678901234567']) await assert.rejects(svc.get(k), code('ERR_INVALID'), k);
      await assert.rejects(svc.get('1', 'bad id!'), code('ERR_INVALID'));
      await assert.rejects(svc.compareAndSet('1', -1, null), code('ERR_INVALID'));
      await assert.rejects(svc.compareAndSet('1', 0, undefined), code('ERR_INVALID'));
      await assert.rejects(svc.compareAndSet('1', 0, 'x'.repeat(65 * 1024)), code('ERR_LIMIT'));
      await assert.rejects(svc.watchKeys('g', [['1', 0], ['1', 0]], 0), code('ERR_INVALID'));
      await assert.rejects(svc.watchKeys('g', [['1', -1]], 0), code('ERR_INVALID'));
      const many = Array.from({ length: PR_FOLLOWS_PER_GATEWAY_MAX + 1 }, (_, i) => [String(i + 1), 0] as const);
      await assert.rejects(svc.watchKeys('g', many, 0), code('ERR_LIMIT'));
      await svc.watchKeys('g', many.slice(0, PR_FOLLOWS_PER_GATEWAY_MAX), 0);
      await assert.rejects(svc.get('999', 'g'), code('ERR_LIMIT'), 'one more follow than allowed');
      for (let i = 1; i < PR_GATEWAYS_MAX; i++) await svc.watchKeys(`g${i}`, [], 0);
      assert.equal(svc.counters().gateways, PR_GATEWAYS_MAX);
      await assert.rejects(svc.watchKeys('one-too-many', [], 0), code('ERR_LIMIT'));
      clock.advance(LEASE_MS);
      assert.equal(svc.counters().gateways, 0, 'all leases expired');
      // A damaged stored record is an error naming it, never a silent rev 0.
      await store.put('pr/77', Buffer.from('{"rev":'));
      await assert.rejects(svc.get('77'), (e: unknown) => isTesseraError(e, 'ERR_FORMAT') && e.message.includes('pr/77'));
      await store.put('pr/78', Buffer.from('null'));
      await assert.rejects(svc.compareAndSet('78', 0, 1), code('ERR_FORMAT'));
      assert.equal(svc.counters().followedKeys, 0);
      assert.equal(svc.counters().cachedKeys, 0, 'nothing cached without followers');
    } finally {
      await done(svc, store);
    }
  });
});

// ---------- the same contract on both store backends (real clock) ----------

async function serializationSuite(openStore: () => Promise<MetaStore>): Promise<void> {
  const store = await openStore();
  // refClock: the hold timer is all that keeps this test's process alive.
  const a = new PrService({ store, leaseMs: 100, clock: refClock });
  const b = new PrService({ store, leaseMs: 100, clock: refClock }); // a second monitor that believes it is active
  a.activate();
  b.activate();
  try {
    for (let rev = 0; rev < 3; rev++) {
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).compareAndSet('10', rev, { writer: i })));
      assert.equal(results.filter((r) => r.ok).length, 1, `one winner for rev ${rev}`);
      for (const r of results) assert.equal(r.ok ? r.rev : r.current.rev, rev + 1);
    }
    const loops = 50;
    const perLoop = 4;
    await Promise.all(
      Array.from({ length: loops }, async (_, i) => {
        const svc = i % 2 === 0 ? a : b;
        for (let n = 0; n < perLoop; ) {
          const cur = await svc.get('11');
          const count = (cur.state as { count?: number } | null)?.count ?? 0;
          const r = await svc.compareAndSet('11', cur.rev, { count: count + 1 }, `l${i}-${n}`);
          if (r.ok) n++;
        }
      }),
    );
    assert.deepEqual(await a.get('11'), { rev: loops * perLoop, state: { count: loops * perLoop }, leaseMs: 100 });
  } finally {
    a.deactivate(new MonNotActiveError('test over', null));
    b.deactivate(new MonNotActiveError('test over', null));
    await store.close();
  }
}

test('embedded store: concurrent CAS have one winner per rev, also across two services; no lost update', async () => {
  await serializationSuite(() => EmbeddedStore.open(join(mkdtempSync(join(root, 'emb-')), 'store.log')));
});

// ---------- over HTTP ----------

test('HTTP: 50 concurrent read-modify-write loops from two clients lose no update; retries with one op are idempotent; bad requests are refused', async () => {
  const m = await startMonitor({ id: 'a', port: 0, dataDir: newDir(), prLeaseMs: 300, initialPool: null });
  try {
    await m.service.whenActive(5000);
    const c1 = new MonClient({ addrs: [m.addr] });
    const c2 = new MonClient({ addrs: [m.addr] });
    const loops = 50;
    const perLoop = 3;
    await Promise.all(
      Array.from({ length: loops }, async (_, i) => {
        const c = i % 2 === 0 ? c1 : c2;
        for (let n = 0; n < perLoop; ) {
          const cur = await c.prGet('42');
          const count = (cur.state as { count?: number } | null)?.count ?? 0;
          const r: PrCasAnswer = await c.prCompareAndSet('42', { expectRev: cur.rev, state: { count: count + 1 }, op: `c${i}-${n}` });
          if (r.ok) n++;
        }
      }),
    );
    const fin = await c1.prGet('42');
    assert.deepEqual(fin, { rev: loops * perLoop, state: { count: loops * perLoop }, leaseMs: 300 });
    const once = await c1.prCompareAndSet('42', { expectRev: fin.rev, state: 'x', op: 'same-op' });
    const twice = await c2.prCompareAndSet('42', { expectRev: fin.rev, state: 'x', op: 'same-op' });
    assert.deepEqual([once, twice], [{ ok: true, rev: fin.rev + 1 }, { ok: true, rev: fin.rev + 1 }]);

    const target = { host: '127.0.0.1', port: m.port };
    const req = (method: string, path: string, body?: unknown) => httpJson(target, method, path, body, { timeoutMs: 3000 });
    const expect = async (p: ReturnType<typeof req>, status: number, errCode: string): Promise<void> => {
      const r = await p;
      assert.deepEqual([r.status, (r.body as { code: string }).code], [status, errCode]);
    };
    await expect(req('GET', '/v1/pr/007'), 400, 'ERR_INVALID');
    await expect(req('GET', '/v1/pr/watch?gateway=g&keys=1,2&known=0&waitMs=0'), 400, 'ERR_INVALID');
    await expect(req('GET', '/v1/pr/watch?gateway=g&keys=1&known=x&waitMs=0'), 400, 'ERR_INVALID');
    await expect(req('GET', '/v1/pr/watch?gateway=g&keys=1&known=0&waitMs=999999'), 400, 'ERR_INVALID');
    await expect(req('POST', '/v1/pr/1/cas', { expectRev: 0 }), 400, 'ERR_INVALID');
    await expect(req('POST', '/v1/pr/1/cas', { expectRev: 0, state: 1, extra: 1 }), 400, 'ERR_INVALID');
    await expect(req('POST', '/v1/pr/1/cas', { expectRev: 0, state: 'x'.repeat(70 * 1024) }), 413, 'ERR_LIMIT');
    await expect(req('POST', '/v1/pr/1/cas', { expectRev: 0, state: 'x'.repeat(65 * 1024) }), 429, 'ERR_LIMIT');
    const w = await req('GET', '/v1/pr/watch?gateway=g&keys=42,43&known=0,0&waitMs=0');
    assert.equal(w.status, 200);
    assert.deepEqual(
      (w.body as { records: Array<{ key: string; rev: number }> }).records.map((r) => [r.key, r.rev]),
      [['42', fin.rev + 1]],
    );
    const rel = await req('DELETE', '/v1/pr/gateways/g');
    assert.equal(rel.status, 204);
    assert.equal(m.service.pr.counters().gateways, 0);
  } finally {
    await m.close();
  }
});

describe('PrService on etcd', () => {
  let etcd: TestEtcd;
  let prefixSeq = 0;
  const newPrefix = (): string => `prtest${process.pid}-${++prefixSeq}/`;
  before(async () => {
    etcd = await startTestEtcd();
    console.log(`# etcd ${etcd.endpoint} pid ${etcd.pid}`);
  });
  after(async () => {
    await etcd?.stop();
  });

  test('concurrent CAS have one winner per rev, also across two services; no lost update', async () => {
    await serializationSuite(() => EtcdStore.connect({ endpoints: [etcd.endpoint], prefix: newPrefix() }));
  });

  test('a standby that takes over holds CAS for one lease; the state written under the old monitor is kept', async () => {
    const prefix = newPrefix();
    const leaseMs = 1000;
    const start = (id: string): Promise<RunningMonitor> =>
      startMonitor({ id, port: 0, etcdEndpoints: [etcd.endpoint], etcdPrefix: prefix, electionTtlMs: 2000, prLeaseMs: leaseMs, initialPool: null });
    const a = await start('a');
    let b: RunningMonitor | undefined;
    try {
      await a.service.whenActive(10_000);
      b = await start('b');
      const client = new MonClient({ addrs: [a.addr, b.addr] });
      await sleep(leaseMs + PR_ACK_MARGIN_MS);
      assert.deepEqual(await client.prCompareAndSet('5', { expectRev: 0, state: 'under a', op: 'o1' }), { ok: true, rev: 1 });
      await a.close();
      await b.service.whenActive(10_000);
      const t0 = performance.now();
      const r = await client.prCompareAndSet('5', { expectRev: 1, state: 'under b', op: 'o2' });
      const ms = performance.now() - t0;
      assert.deepEqual(r, { ok: true, rev: 2 });
      assert.ok(ms >= leaseMs - 50, `the CAS was held ${ms.toFixed(0)} ms, expected about ${leaseMs + PR_ACK_MARGIN_MS}`);
      assert.deepEqual(await client.prGet('5'), { rev: 2, state: 'under b', leaseMs });
    } finally {
      await b?.close();
      await a.close();
    }
  });
});
