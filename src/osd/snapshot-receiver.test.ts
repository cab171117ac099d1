// The snapshot receiver (snapshot-receiver.ts): chunks of one PG are
// processed one at a time and in order; a newer transfer supersedes the one
// being installed (none of the old one's data or snapshot lands after the new
// one dropped the PG); retries of a chunk in progress or already written are
// answered without writing twice. Fakes stand in for the OSD, the PG, the
// store and raft (no IO). Reproducers of the session-23 review's findings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MsgSnap } from '../raft/types.js';
import type { OsdCore } from './osd.js';
import type { ObjectStore } from './objects.js';
import type { PgReplica } from './pg.js';
import { Status, type ClientResponse, type SnapshotChunk } from './proto.js';
import { SnapshotReceiver } from './snapshot-receiver.js';

/** A gate: calls of `wait` block until `open` (when `closed`). */
function gate() {
  let closed = false;
  const waiting: (() => void)[] = [];
  return {
    close: () => void (closed = true),
    open: () => {
      closed = false;
      for (const w of waiting.splice(0)) w();
    },
    wait: (): Promise<void> => (closed ? new Promise<void>((r) => waiting.push(r)) : Promise.resolve()),
  };
}

function fakes() {
  const events: string[] = [];
  const flushGate = gate();
  const writeGate = gate();
  const actions: (() => void)[] = [];
  /** Engine flushes still to fail (EIO). */
  const flushFailures = { left: 0 };
  const osd = {
    awaitSnapshot: async () => void events.push('await'),
    noteInstallStart: () => {},
    logInfo: () => {},
    runLater: (_pg: PgReplica, a: () => void) => void actions.push(a),
  } as unknown as OsdCore;
  const store = {
    dropPg: async () => void events.push('drop'),
    write: async (_v: number, off: number) => {
      await writeGate.wait();
      events.push(`write ${off}`);
    },
    zero: async (_v: number, off: number) => void events.push(`zero ${off}`),
    engine: {
      flush: async () => {
        await flushGate.wait();
        if (flushFailures.left > 0) {
          flushFailures.left--;
          throw new Error('EIO');
        }
      },
    },
  } as unknown as ObjectStore;
  const pg = {
    id: { key: 1, poolId: 1, pg: 0, pgCount: 1 },
    installingTransfer: 0,
    installNextSeq: 0,
    installChain: Promise.resolve(),
    installChunk: null,
    node: {
      role: 'follower',
      commit: 5,
      term: 2,
      acceptsSnapshot: (m: MsgSnap) => m.snapshot.index > 5,
      step: (m: MsgSnap) => void events.push(`step ${m.snapshot.index}`),
    },
    apply: { pause: async () => {} },
  } as unknown as PgReplica;
  const r = new SnapshotReceiver(osd, store);
  /** Runs the PG's queued actions (the OSD's next pass). */
  const pass = () => {
    for (const a of actions.splice(0)) a();
  };
  return { r, pg, events, flushGate, writeGate, flushFailures, pass };
}

const snap = (index: number): MsgSnap => ({ type: 'snap', from: 1, to: 2, term: 2, snapshot: { index, term: 2, conf: { voters: [1, 2, 3], learners: [] } } });
/** A chunk of transfer `id` writing one 4 KiB item per entry of `offsets`. */
const chunk = (id: number, seq: number, done: boolean, offsets: number[], s?: MsgSnap): SnapshotChunk => ({
  poolId: 1,
  pg: 0,
  pgEpoch: 1,
  fromOsd: 1,
  transferId: id,
  seq,
  done,
  items: offsets.map((o) => ({ volumeId: 1, offsetBytes: o, data: Buffer.alloc(4096) })),
  ...(s ? { snap: s } : {}),
});
const tick = () => new Promise((r) => setTimeout(r, 5));
const statusOf = (a: ClientResponse) => (a.status === Status.Ok ? 'ok' : `${a.status}: ${a.message}`);

test('snapshot receiver: a transfer whose done chunk was still flushing when a newer one began never steps its snapshot', async () => {
  const f = fakes();
  assert.equal(statusOf(await f.r.receive(f.pg, chunk(101, 0, false, [0], snap(10)))), 'ok');
  f.flushGate.close();
  const slowDone = f.r.receive(f.pg, chunk(101, 1, true, [4096], snap(10)));
  await tick();
  // The sender's retry of the done chunk (its answer timed out) gets the original's answer.
  const retry = f.r.receive(f.pg, chunk(101, 1, true, [4096], snap(10)));
  // Transfer B begins (the leader probed the replica, still awaiting, and got a reset).
  const b0 = f.r.receive(f.pg, chunk(102, 0, false, [8192], snap(20)));
  await tick();
  assert.equal(f.pg.installingTransfer, 102);
  assert.deepEqual(f.events, ['await', 'drop', 'write 0', 'write 4096'], 'B waits for the chunk in progress');
  f.flushGate.open();
  const [a, ar, b] = await Promise.all([slowDone, retry, b0]);
  assert.match(statusOf(a), /transfer 101 was superseded/);
  assert.equal(ar, a, 'the retry got the original answer');
  assert.equal(statusOf(b), 'ok');
  f.pass();
  assert.deepEqual(f.events, ['await', 'drop', 'write 0', 'write 4096', 'await', 'drop', 'write 8192'], "A's snapshot is not stepped");
});

test('snapshot receiver: a done chunk steps its snapshot in the next pass only if no newer transfer began meanwhile', async () => {
  const f = fakes();
  await f.r.receive(f.pg, chunk(101, 0, false, [0], snap(10)));
  assert.equal(statusOf(await f.r.receive(f.pg, chunk(101, 1, true, [], snap(10)))), 'ok');
  // B's first chunk arrives before the PG's next pass.
  assert.equal(statusOf(await f.r.receive(f.pg, chunk(102, 0, false, [], snap(20)))), 'ok');
  f.pass();
  assert.ok(!f.events.includes('step 10'), f.events.join(', '));
  // Without a newer transfer the snapshot is stepped.
  const g = fakes();
  await g.r.receive(g.pg, chunk(101, 0, false, [0], snap(10)));
  await g.r.receive(g.pg, chunk(101, 1, true, [], snap(10)));
  g.pass();
  assert.equal(g.events.at(-1), 'step 10');
  // A retry of the finished transfer's chunks is answered Ok and writes nothing.
  const n = g.events.length;
  assert.equal(statusOf(await g.r.receive(g.pg, chunk(101, 0, false, [0], snap(10)))), 'ok');
  assert.equal(g.events.length, n);
});

test("snapshot receiver: a superseded transfer's chunk in progress writes nothing more once a newer transfer began", async () => {
  const f = fakes();
  await f.r.receive(f.pg, chunk(101, 0, false, [], snap(10)));
  f.writeGate.close();
  const a1 = f.r.receive(f.pg, chunk(101, 1, false, [0, 4096, 8192]));
  await tick();
  const b0 = f.r.receive(f.pg, chunk(102, 0, false, [], snap(20)));
  await tick();
  f.writeGate.open();
  assert.match(statusOf(await a1), /superseded/);
  assert.equal(statusOf(await b0), 'ok');
  // A's first item was being written; its others were not, and B dropped the PG after it.
  assert.deepEqual(f.events, ['await', 'drop', 'write 0', 'await', 'drop']);
});

test('snapshot receiver: chunks are written in order; a retry of one written already is answered Ok without writing it again', async () => {
  const f = fakes();
  await f.r.receive(f.pg, chunk(101, 0, false, [0], snap(10)));
  assert.match(statusOf(await f.r.receive(f.pg, chunk(101, 2, false, [8192]))), /chunk 2 out of order \(expected 1\)/);
  assert.equal(statusOf(await f.r.receive(f.pg, chunk(101, 1, false, [4096]))), 'ok');
  assert.equal(statusOf(await f.r.receive(f.pg, chunk(101, 1, false, [4096]))), 'ok');
  assert.equal(statusOf(await f.r.receive(f.pg, chunk(101, 0, false, [0], snap(10)))), 'ok');
  assert.deepEqual(f.events, ['await', 'drop', 'write 0', 'write 4096']);
  // A chunk of a transfer that is not the one being installed is refused.
  assert.match(statusOf(await f.r.receive(f.pg, chunk(99, 3, false, [0]))), /transfer 99 is not the one being installed/);
});

test('snapshot receiver: a chunk being written for a PG that left this OSD writes nothing more (removeReplica clears installingTransfer)', async () => {
  const f = fakes();
  await f.r.receive(f.pg, chunk(101, 0, false, [], snap(10)));
  f.writeGate.close();
  const a1 = f.r.receive(f.pg, chunk(101, 1, false, [0, 4096, 8192]));
  await tick();
  // osd.ts removeReplica: the PG is gone, its data dropped.
  (f.pg as { removed: boolean }).removed = true;
  f.pg.installingTransfer = 0;
  f.writeGate.open();
  assert.match(statusOf(await a1), /superseded/);
  assert.deepEqual(f.events, ['await', 'drop', 'write 0']);
  assert.match(statusOf(await f.r.receive(f.pg, chunk(101, 2, false, [12288]))), /not the one being installed/);
});

test('snapshot receiver: a done chunk whose flush failed is flushed again on its retry before its snapshot is stepped', async () => {
  const f = fakes();
  await f.r.receive(f.pg, chunk(101, 0, false, [0], snap(10)));
  f.flushFailures.left = 1;
  await assert.rejects(f.r.receive(f.pg, chunk(101, 1, true, [4096], snap(10))), /EIO/);
  f.pass();
  assert.ok(!f.events.includes('step 10'));
  // The retry writes and flushes again (before, it was answered Ok as written: no flush, no step).
  assert.equal(statusOf(await f.r.receive(f.pg, chunk(101, 1, true, [4096], snap(10)))), 'ok');
  f.pass();
  assert.deepEqual(f.events, ['await', 'drop', 'write 0', 'write 4096', 'write 4096', 'step 10']);
});

test('snapshot receiver: a late copy of a superseded transfer\'s first chunk does not take over again', async () => {
  const f = fakes();
  await f.r.receive(f.pg, chunk(101, 0, false, [0], snap(10)));
  await f.r.receive(f.pg, chunk(102, 0, false, [4096], snap(12)));
  assert.match(statusOf(await f.r.receive(f.pg, chunk(101, 0, false, [0], snap(10)))), /transfer 101 was superseded/);
  assert.equal(f.pg.installingTransfer, 102);
  assert.equal(statusOf(await f.r.receive(f.pg, chunk(102, 1, true, [8192], snap(12)))), 'ok');
  f.pass();
  assert.deepEqual(f.events, ['await', 'drop', 'write 0', 'await', 'drop', 'write 4096', 'write 8192', 'step 12']);
});
