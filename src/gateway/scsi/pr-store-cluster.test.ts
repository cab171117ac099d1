// ClusterPrStore against a real monitor (embedded store, 127.0.0.1, a free port,
// a temp dir), two stores standing for two gateways exporting one volume:
// - the multipath guarantee, many times: when one store's compareAndSet resolves,
//   the other's current(key) already has the new rev (and its listener ran);
// - read-modify-write loops through both stores lose no update;
// - with the monitor stopped, current() turns 'unavailable' within the lease and
//   comes back when the monitor returns (same port, same data dir);
// - a gateway restart (new store, new gateway id) finds the state in the monitor;
// - with a manual clock, the vouching window ends exactly at the last answered
//   poll's send time + leaseMs − safetyMarginMs;
// - after a failed poll the next one asks for an answer at once (waitMs 0), not a
//   long poll: a monitor restart must not cost the gateways a lease (CI, session 8).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Clock, TimerHandle } from '../../io/clock.js';
import { startMonitor, type RunningMonitor } from '../../mon/run.js';
import { freePort } from '../../mon/etcd-harness.js';
import { PR_ACK_MARGIN_MS } from '../../mon/pr-service.js';
import { ClusterPrStore } from './pr-store-cluster.js';
import type { PrRecord } from './types.js';

const root = mkdtempSync(join(tmpdir(), 'tessera-pr-cluster-'));
// The node clock's timers are unref'd (in a daemon, its servers keep the process
// alive). Here a wait that only such a timer ends (the restarted monitor's CAS hold,
// a store's retry sleep) let the event loop run dry under load in a full run
// (session 9: "Promise resolution is still pending but the event loop has already
// resolved"). A real daemon always has a listening server; the test keeps a timer.
const keepAlive = setInterval(() => undefined, 1000);
after(() => {
  clearInterval(keepAlive);
  rmSync(root, { recursive: true, force: true });
});
let seq = 0;
const newDir = (): string => join(root, `mon-${++seq}`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const LEASE_MS = 600;
const MARGIN_MS = 200;

async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<number> {
  const start = performance.now();
  while (!cond()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
  return performance.now() - start;
}

async function monitor(dataDir = newDir(), port = 0): Promise<RunningMonitor> {
  const m = await startMonitor({ id: 'a', port, dataDir, prLeaseMs: LEASE_MS, initialPool: null });
  await m.service.whenActive(5000);
  return m;
}

const store = (m: RunningMonitor | string, clock?: Clock): ClusterPrStore =>
  new ClusterPrStore({ monitors: [typeof m === 'string' ? m : m.addr], safetyMarginMs: MARGIN_MS, clock });

const rev = (r: PrRecord | 'unavailable'): number | 'unavailable' => (r === 'unavailable' ? r : r.rev);

test('two gateways: when one compareAndSet resolves, the other gateway already has the new rev (repeated)', async () => {
  const m = await monitor();
  const a = store(m);
  const b = store(m);
  try {
    assert.equal(a.current('1'), 'unavailable', 'not loaded');
    assert.deepEqual(await a.load('1'), { rev: 0, state: null });
    assert.deepEqual(await b.load('1'), { rev: 0, state: null });
    const seenByB: number[] = [];
    b.subscribe('1', (r) => seenByB.push(r.rev));
    const rounds = 60;
    for (let i = 0; i < rounds; i++) {
      const [writer, other] = i % 3 === 2 ? [b, a] : [a, b];
      const cur = writer.current('1');
      assert.notEqual(cur, 'unavailable');
      const r = await writer.compareAndSet('1', (cur as PrRecord).rev, { round: i });
      assert.deepEqual(r, { ok: true, rev: i + 1 });
      // THE multipath guarantee: no await between the answer and this check.
      assert.deepEqual(other.current('1'), { rev: i + 1, state: { round: i } }, `round ${i}`);
      assert.deepEqual(writer.current('1'), { rev: i + 1, state: { round: i } });
    }
    assert.deepEqual(seenByB, Array.from({ length: rounds }, (_, i) => i + 1), "B's listener saw every rev, its own writes included");
    // A stale writer gets the current record back (and keeps it).
    assert.deepEqual(await b.compareAndSet('1', 0, 'stale'), { ok: false, current: { rev: rounds, state: { round: rounds - 1 } } });
  } finally {
    await a.close();
    await b.close();
    await m.close();
  }
});

test('read-modify-write loops through two gateways lose no update', async () => {
  const m = await monitor();
  const gws = [store(m), store(m)];
  try {
    await Promise.all(gws.map((g) => g.load('2')));
    const loops = 20;
    const perLoop = 3;
    await Promise.all(
      Array.from({ length: loops }, async (_, i) => {
        const g = gws[i % 2];
        for (let n = 0; n < perLoop; ) {
          const cur = g.current('2');
          if (cur === 'unavailable') throw new Error('lease lost during the test');
          const count = (cur.state as { count?: number } | null)?.count ?? 0;
          if ((await g.compareAndSet('2', cur.rev, { count: count + 1 })).ok) n++;
        }
      }),
    );
    for (const g of gws) assert.deepEqual(g.current('2'), { rev: loops * perLoop, state: { count: loops * perLoop } });
  } finally {
    await Promise.all(gws.map((g) => g.close()));
    await m.close();
  }
});

test('monitor stopped: current() turns unavailable within the lease and recovers when it returns; a gateway restart keeps the state', async () => {
  const dataDir = newDir();
  const port = await freePort();
  let m = await monitor(dataDir, port);
  const a = store(m);
  const b = store(m);
  try {
    await a.load('3');
    await b.load('3');
    assert.deepEqual(await a.compareAndSet('3', 0, { holder: 'a' }), { ok: true, rev: 1 });
    await m.close();
    const stoppedAt = performance.now();
    const ms = await until(() => b.current('3') === 'unavailable', 'B to stop vouching');
    assert.ok(ms <= LEASE_MS - MARGIN_MS + 150, `B vouched ${ms.toFixed(0)} ms after the monitor stopped`);
    assert.equal(a.current('3'), 'unavailable');
    await sleep(LEASE_MS);
    assert.equal(b.current('3'), 'unavailable', 'stays unavailable while the monitor is away');

    m = await monitor(dataDir, port);
    await until(() => b.current('3') !== 'unavailable', 'B to vouch again', 5000);
    assert.deepEqual(b.current('3'), { rev: 1, state: { holder: 'a' } });
    console.log(`# monitor away ${(performance.now() - stoppedAt).toFixed(0)} ms`);
    // The restarted monitor holds CAS for one lease, then B's re-registered follow is honoured.
    assert.deepEqual(await a.compareAndSet('3', 1, { holder: 'b' }), { ok: true, rev: 2 });
    assert.deepEqual(b.current('3'), { rev: 2, state: { holder: 'b' } });

    await a.close();
    assert.equal(a.current('3'), 'unavailable', 'a closed store vouches for nothing');
    const a2 = store(m);
    assert.notEqual(a2.gatewayId, a.gatewayId);
    assert.deepEqual(await a2.load('3'), { rev: 2, state: { holder: 'b' } }, 'the state is in the monitor');
    assert.deepEqual(await a2.compareAndSet('3', 2, null), { ok: true, rev: 3 });
    assert.deepEqual(b.current('3'), { rev: 3, state: null });
    await a2.close();
  } finally {
    await a.close();
    await b.close();
    await m.close();
  }
});

class ManualClock implements Clock {
  now = 1_000_000;
  nowMs(): number {
    return this.now;
  }
  setTimer(_delayMs: number, _cb: () => void): TimerHandle {
    return { cancel: () => undefined }; // the loop only sleeps after failures; none here
  }
}

test('manual clock: the store vouches until the last answered poll was sent + leaseMs − margin, not a millisecond longer', async () => {
  const m = await monitor();
  const clock = new ManualClock();
  const s = store(m, clock);
  try {
    await s.load('4');
    const sentAt = clock.now; // every poll so far was sent at this instant
    assert.deepEqual(s.current('4'), { rev: 0, state: null });
    clock.now = sentAt + LEASE_MS - MARGIN_MS - 1;
    assert.notEqual(s.current('4'), 'unavailable');
    clock.now = sentAt + LEASE_MS - MARGIN_MS;
    assert.equal(s.current('4'), 'unavailable', 'checked in the same turn: no newer poll was sent');
    // The next answered poll (sent at the new time) vouches again.
    await until(() => s.current('4') !== 'unavailable', 'a poll sent after the clock moved', LEASE_MS + PR_ACK_MARGIN_MS);
  } finally {
    await s.close();
    await m.close();
  }
});

test('after a failed poll the next poll asks for an answer at once (waitMs 0); after an answer it long-polls again', async () => {
  // A fake monitor that records each watch's waitMs and hangs up on the 2nd and 3rd
  // (the client's two attempts of one poll), so the store's loop sees one failed poll.
  const waits: number[] = [];
  const json = (res: import('node:http').ServerResponse, body: unknown): void => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/v1/pr/watch') {
      waits.push(Number(url.searchParams.get('waitMs')));
      if (waits.length === 2 || waits.length === 3) return void req.socket.destroy();
      const delayMs = waits.length >= 5 ? 200 : 0;
      setTimeout(() => json(res, { leaseMs: 3000, records: [] }), delayMs);
      return;
    }
    if (url.pathname === '/v1/pr/7') return json(res, { rev: 0, state: null, leaseMs: 3000 });
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const s = new ClusterPrStore({ monitors: [`127.0.0.1:${(server.address() as AddressInfo).port}`], safetyMarginMs: 500 });
  try {
    await s.load('7');
    await until(() => waits.length >= 5, 'five polls');
    // 1: first poll (no lease known yet) → 0; 2-3: a long poll (3000 − 500) / 3, hung up twice;
    // 4: the poll after the failure → 0; 5: answered, so long-polling again.
    assert.deepEqual(waits.slice(0, 5), [0, 833, 833, 0, 833]);
  } finally {
    await s.close();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
});
