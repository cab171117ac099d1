// The snapshot sender's limit on transfers at once (snapshot.ts,
// OsdConfig.recoveryTransfersMax): beyond it a snapshot raft asks for is
// reported failed at once (raft asks again after its next probe), counted in
// snapshotsDeferred; a finished transfer frees its slot. Fakes stand in for the
// OSD, the PGs, the store and the network (no IO).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MsgSnap } from '../raft/types.js';
import type { Clock } from '../io/clock.js';
import { OSD_CONFIG_DEFAULTS, type OsdConfig, type OsdCore, type OsdNet } from './osd.js';
import type { ObjectStore } from './objects.js';
import type { PgReplica } from './pg.js';
import { Status, type ClientResponse, type SnapshotChunk } from './proto.js';
import { SnapshotSender } from './snapshot.js';

function fakes(transfersMax: number) {
  const reports: { pg: number; to: number; ok: boolean }[] = [];
  const later: (() => void)[] = [];
  const pending: { pg: number; answer: (r: ClientResponse) => void }[] = [];
  const osd = {
    id: 1,
    clusterMap: { volumes: [{ id: 1, poolId: 1 }], pgs: {} },
    counters: { snapshotsDeferred: 0 },
    clientInFlight: 0,
    runLater: (_pg: PgReplica, action: () => void) => void later.push(action),
    logInfo: () => {},
  } as unknown as OsdCore;
  const store = { objectSizeBytes: 4096, pgObjects: () => [0], read: async () => {} } as unknown as ObjectStore;
  const net = { sendSnapshotChunk: (_to: number, c: SnapshotChunk) => new Promise<ClientResponse>((answer) => pending.push({ pg: c.pg, answer })) } as unknown as OsdNet;
  const clock: Clock = {
    nowMs: () => performance.now(),
    setTimer: (ms, cb) => {
      const t = setTimeout(cb, ms);
      return { cancel: () => clearTimeout(t) };
    },
  };
  const config: OsdConfig = { ...OSD_CONFIG_DEFAULTS, recoveryTransfersMax: transfersMax };
  const sender = new SnapshotSender(osd, store, net, clock, config);
  const pg = (n: number) =>
    ({
      id: { key: n, poolId: 1, pg: n, pgCount: 8 },
      isLeader: true,
      sendingSnapshotTo: new Set<number>(),
      apply: { whenDone: (_i: number, cb: () => void) => cb() },
      node: { reportSnapshot: (to: number, ok: boolean) => void reports.push({ pg: n, to, ok }) },
    }) as unknown as PgReplica;
  const snap = (to: number): MsgSnap => ({ type: 'snap', from: 1, to, term: 1, snapshot: { index: 10, term: 1, conf: { voters: [1, 2, 3], learners: [] } } });
  return { sender, osd, reports, later, pending, pg, snap };
}

/** Lets the transfers run up to their next wait (the throttle's first tokens take well under 5 ms). */
const settle = () => new Promise((r) => setTimeout(r, 20));

test('snapshot sender: at most recoveryTransfersMax transfers at once; the others are reported failed at once and counted; a finished one frees its slot', async () => {
  const f = fakes(2);
  const pgs = [f.pg(0), f.pg(1), f.pg(2)];
  for (const p of pgs) f.sender.start(p, f.snap(3));
  assert.equal(f.sender.running, 2);
  assert.equal(f.osd.counters.snapshotsDeferred, 1);
  assert.deepEqual([...pgs[2].sendingSnapshotTo], [], 'the deferred PG is not marked as sending');
  // The deferral reaches raft through the OSD's pass (runLater), as a failed snapshot.
  for (const a of f.later.splice(0)) a();
  assert.deepEqual(f.reports, [{ pg: 2, to: 3, ok: false }]);
  // The first transfer's only chunk is taken: it finishes and reports success.
  await settle();
  assert.equal(f.pending.length, 2, 'both running transfers sent their chunk');
  assert.deepEqual(f.pending.map((p) => p.pg).sort(), [0, 1]);
  const first = f.pending.shift()!;
  first.answer({ status: Status.Ok });
  await settle();
  for (const a of f.later.splice(0)) a();
  assert.equal(f.sender.running, 1);
  assert.deepEqual(f.reports.at(-1), { pg: first.pg, to: 3, ok: true });
  // Raft asks again for PG 2: there is room now.
  f.sender.start(pgs[2], f.snap(3));
  assert.equal(f.sender.running, 2);
  assert.equal(f.osd.counters.snapshotsDeferred, 1);
});
