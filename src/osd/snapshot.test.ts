// The snapshot sender's report of how each transfer ended (snapshot.ts): a
// transfer the receiver took is logged as sent and reported to raft as a
// success; one the receiver refused is logged with the chunk and the receiver's
// reason and reported as a failure (raft probes again). Fakes stand in for the
// OSD, the PG, the store and the network (no IO).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MsgSnap } from '../raft/types.js';
import type { Clock } from '../io/clock.js';
import { OSD_CONFIG_DEFAULTS, type OsdCore, type OsdNet } from './osd.js';
import type { ObjectStore } from './objects.js';
import type { PgReplica } from './pg.js';
import { SNAPSHOT_CHUNK_BYTES_MAX, Status, type ClientResponse, type SnapshotChunk } from './proto.js';
import { SnapshotSender } from './snapshot.js';

function fakes(answer: (c: SnapshotChunk) => ClientResponse) {
  const reports: { to: number; ok: boolean }[] = [];
  const logs: string[] = [];
  const osd = {
    id: 1,
    clusterMap: { volumes: [{ id: 1, poolId: 1 }], pgs: {} },
    clientInFlight: 0,
    runLater: (_pg: PgReplica, action: () => void) => action(),
    logInfo: (m: string) => void logs.push(m),
  } as unknown as OsdCore;
  // Two objects of SNAPSHOT_CHUNK_BYTES_MAX each: one chunk each (seq 0, then seq 1 with the snap).
  const store = { objectSizeBytes: SNAPSHOT_CHUNK_BYTES_MAX, pgObjects: () => [0, 1], read: async () => {} } as unknown as ObjectStore;
  const net = { sendSnapshotChunk: async (_to: number, c: SnapshotChunk) => answer(c) } as unknown as OsdNet;
  const clock: Clock = {
    nowMs: () => performance.now(),
    setTimer: (ms, cb) => {
      const t = setTimeout(cb, ms);
      return { cancel: () => clearTimeout(t) };
    },
  };
  const sender = new SnapshotSender(osd, store, net, clock, { ...OSD_CONFIG_DEFAULTS });
  const pg = {
    id: { key: 7, poolId: 1, pg: 7, pgCount: 8 },
    isLeader: true,
    sendingSnapshotTo: new Set<number>(),
    apply: { whenDone: (_i: number, cb: () => void) => cb() },
    node: { reportSnapshot: (to: number, ok: boolean) => void reports.push({ to, ok }) },
  } as unknown as PgReplica;
  const snap: MsgSnap = { type: 'snap', from: 1, to: 3, term: 2, snapshot: { index: 10, term: 2, conf: { voters: [1, 2, 3], learners: [] } } };
  return { sender, reports, logs, pg, snap };
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(cond(), 'the transfer did not end');
}

test('snapshot sender: a transfer the receiver took is logged as sent and reported as a success', async () => {
  const seqs: number[] = [];
  const f = fakes((c) => (seqs.push(c.seq), { status: Status.Ok }));
  f.sender.start(f.pg, f.snap);
  assert.deepEqual([...f.pg.sendingSnapshotTo], [3]);
  await until(() => f.reports.length > 0);
  assert.deepEqual(f.reports, [{ to: 3, ok: true }]);
  assert.deepEqual(seqs, [0, 1]);
  assert.deepEqual([...f.pg.sendingSnapshotTo], []);
  assert.equal(f.logs.length, 1);
  assert.match(f.logs[0], /^PG 1\.7: snapshot at index 10 \(term 2\) to osd\.3, transfer \d+: sent$/);
});

test('snapshot sender: a refused chunk ends the transfer, logged with the chunk and the receiver\'s reason, reported as a failure', async () => {
  const f = fakes((c) => (c.seq === 0 ? { status: Status.Ok } : { status: Status.NotReady, message: 'snapshot is not newer than this replica' }));
  f.sender.start(f.pg, f.snap);
  await until(() => f.reports.length > 0);
  assert.deepEqual(f.reports, [{ to: 3, ok: false }]);
  assert.equal(f.logs.length, 1);
  assert.match(f.logs[0], /transfer \d+: not completed \(chunk 1: refused: snapshot is not newer than this replica\)$/);
  assert.equal(f.sender.bytesLeft(f.pg), 0, 'a finished transfer leaves nothing to report as recovering');
});
