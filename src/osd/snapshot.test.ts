// The snapshot sender (snapshot.ts): the report of how each transfer ended (a
// transfer the receiver took is logged as sent and reported to raft as a
// success; one the receiver refused is logged with the chunk and the receiver's
// reason and reported as a failure, so raft probes again); at most
// recoveryTransfersMax at once, the rest waiting in order and renewed to a fresh
// snapshot point when they start; and the log kept after a snapshot's index
// (retainIndex). Fakes stand in for the OSD, the PG, the store and the network
// (no IO).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MsgSnap } from '../raft/types.js';
import type { Clock } from '../io/clock.js';
import { OSD_CONFIG_DEFAULTS, type OsdConfig, type OsdCore, type OsdNet } from './osd.js';
import type { ObjectStore } from './objects.js';
import type { PgReplica } from './pg.js';
import { SNAPSHOT_CHUNK_BYTES_MAX, Status, type ClientResponse, type SnapshotChunk } from './proto.js';
import { SnapshotSender } from './snapshot.js';

type Answer = (c: SnapshotChunk) => ClientResponse | Promise<ClientResponse>;

function fakes(answer: Answer, config: Partial<OsdConfig> = {}, transferIdBase = 0) {
  const reports: { pg: number; to: number; ok: boolean }[] = [];
  const logs: string[] = [];
  const counters = { snapshotsQueued: 0, snapshotsStale: 0 };
  const osd = {
    id: 1,
    clusterMap: { volumes: [{ id: 1, poolId: 1 }], pgs: {} },
    clientInFlight: 0,
    counters,
    runLater: (_pg: PgReplica, action: () => void) => action(),
    logInfo: (m: string) => void logs.push(m),
  } as unknown as OsdCore;
  // Two objects of SNAPSHOT_CHUNK_BYTES_MAX each: one chunk each (seq 0, then seq 1 with the snap).
  // Objects in `holes` are not held (trimmed); `reads` lists the offsets read.
  const holes = new Set<number>();
  const reads: number[] = [];
  const store = {
    objectSizeBytes: SNAPSHOT_CHUNK_BYTES_MAX,
    pgObjects: () => [0, 1],
    blockStatus: async (_v: number, off: number, len: number) => [{ lengthBytes: len, hole: holes.has(off / SNAPSHOT_CHUNK_BYTES_MAX), zero: holes.has(off / SNAPSHOT_CHUNK_BYTES_MAX) }],
    read: async (_v: number, off: number) => void reads.push(off),
  } as unknown as ObjectStore;
  const net = { sendSnapshotChunk: async (_to: number, c: SnapshotChunk) => answer(c) } as unknown as OsdNet;
  const clock: Clock = {
    nowMs: () => performance.now(),
    setTimer: (ms, cb) => {
      const t = setTimeout(cb, ms);
      return { cancel: () => clearTimeout(t) };
    },
  };
  const sender = new SnapshotSender(osd, store, net, clock, { ...OSD_CONFIG_DEFAULTS, ...config }, transferIdBase);
  /** renewSnapshot calls, and what the next ones answer (the leader's applied point now, or null). */
  const renewals: { pg: number; to: number; term: number }[] = [];
  let renewTo: number | null = 50;
  /** The applied point snapshotPoint() gives (the final pass's index); whenDone of it waits while `blockFinal`. */
  let appliedNow = 10;
  let blockFinal = false;
  const blocked: (() => void)[] = [];
  const pgOf = (n: number) =>
    ({
      id: { key: n, poolId: 1, pg: n, pgCount: 8 },
      isLeader: true,
      removed: false,
      sendingSnapshotTo: new Set<number>(),
      apply: {
        onWritten: null,
        whenDone: (i: number, cb: () => void) => (blockFinal && i === appliedNow ? blocked.push(cb) : cb()),
      },
      node: {
        term: 2,
        commit: 30,
        snapshotPoint: () => ({ ...snapAt(appliedNow).snapshot }),
        reportSnapshot: (to: number, ok: boolean) => void reports.push({ pg: n, to, ok }),
        renewSnapshot: (to: number, term: number): MsgSnap | null => {
          renewals.push({ pg: n, to, term });
          return renewTo === null ? null : { ...snapAt(10), to, snapshot: { ...snapAt(10).snapshot, index: renewTo } };
        },
      },
    }) as unknown as PgReplica;
  const snapAt = (index: number, to = 3): MsgSnap => ({ type: 'snap', from: 1, to, term: 2, snapshot: { index, term: 2, conf: { voters: [1, 2, 3], learners: [] } } });
  return {
    sender,
    osd,
    holes,
    reads,
    reports,
    logs,
    counters,
    renewals,
    setRenew: (v: number | null) => (renewTo = v),
    /** The final pass ships index `index` and, with block, waits for unblock() before sending. */
    setFinal: (index: number, block: boolean) => {
      appliedNow = index;
      blockFinal = block;
    },
    unblock: () => {
      blockFinal = false;
      for (const cb of blocked.splice(0)) cb();
    },
    pg: pgOf(7),
    pgOf,
    snap: snapAt(10),
    snapAt,
  };
}

/** A receiver that holds each chunk's answer until release(), then answers Ok at once until hold(). */
function gated() {
  const waiting: (() => void)[] = [];
  const seen: SnapshotChunk[] = [];
  let open = false;
  const answer: Answer = (c) =>
    new Promise((resolve) => {
      seen.push(c);
      if (open) resolve({ status: Status.Ok });
      else waiting.push(() => resolve({ status: Status.Ok }));
    });
  return {
    answer,
    seen,
    /** Answers every chunk sent so far, and the next ones at once. */
    release: async () => {
      open = true;
      for (const w of waiting.splice(0)) w();
      await new Promise((r) => setTimeout(r, 20));
    },
    hold: () => void (open = false),
  };
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
  assert.deepEqual(f.reports, [{ pg: 7, to: 3, ok: true }]);
  // Two objects, one a chunk; nothing written behind the copy: an empty final chunk.
  assert.deepEqual(seqs, [0, 1, 2]);
  assert.deepEqual([...f.pg.sendingSnapshotTo], []);
  assert.equal(f.logs.length, 1);
  assert.match(f.logs[0], /^PG 1\.7: snapshot at index 10 \(term 2\) to osd\.3, transfer \d+: sent$/);
});

test('snapshot sender: a refused chunk ends the transfer, logged with the chunk and the receiver\'s reason, reported as a failure', async () => {
  const f = fakes((c) => (c.seq === 0 ? { status: Status.Ok } : { status: Status.NotReady, message: 'snapshot is not newer than this replica' }));
  f.sender.start(f.pg, f.snap);
  await until(() => f.reports.length > 0);
  assert.deepEqual(f.reports, [{ pg: 7, to: 3, ok: false }]);
  assert.equal(f.logs.length, 1);
  assert.match(f.logs[0], /transfer \d+: not completed \(chunk 1: refused: snapshot is not newer than this replica\)$/);
  assert.equal(f.sender.bytesLeft(f.pg), 0, 'a finished transfer leaves nothing to report as recovering');
});

test('snapshot sender: beyond recoveryTransfersMax a snapshot waits its turn, then ships the leader\'s applied point of then (renewSnapshot)', async () => {
  const g = gated();
  const f = fakes(g.answer, { recoveryTransfersMax: 1 });
  const b = f.pgOf(8);
  f.sender.start(f.pg, f.snap);
  f.sender.start(b, f.snapAt(12));
  assert.deepEqual(f.sender.counts, { running: 1, queued: 1 });
  assert.equal(f.counters.snapshotsQueued, 1);
  // A waiting copy counts as recovering, and as a whole copy left to send.
  assert.deepEqual([...b.sendingSnapshotTo], [3]);
  assert.equal(f.sender.bytesLeft(b), 2 * SNAPSHOT_CHUNK_BYTES_MAX);
  // Raft asking again for the same peer does not queue it twice.
  f.sender.start(b, f.snapAt(13));
  assert.deepEqual(f.sender.counts, { running: 1, queued: 1 });
  assert.equal(f.counters.snapshotsQueued, 1);
  await new Promise((r) => setTimeout(r, 10));
  assert.ok(g.seen.every((c) => c.pg === 7), 'only the first PG is sent while it runs');
  await g.release();
  await until(() => f.reports.length === 2);
  assert.deepEqual(f.reports, [
    { pg: 7, to: 3, ok: true },
    { pg: 8, to: 3, ok: true },
  ]);
  assert.deepEqual(f.renewals, [{ pg: 8, to: 3, term: 2 }]);
  const first = g.seen.filter((c) => c.pg === 8 && c.seq === 0)[0];
  assert.equal(first?.snap?.snapshot.index, 50, 'the queued copy starts from the renewed point');
  const last = g.seen.filter((c) => c.pg === 8 && c.done)[0];
  assert.equal(last?.snap?.snapshot.index, 50, 'and ends there (the log kept after it covers what was written)');
  assert.match(f.logs[1], /^PG 1\.8: snapshot at index 50 \(term 2\) to osd\.3, transfer \d+: sent$/);
  assert.deepEqual(f.sender.counts, { running: 0, queued: 0 });
  assert.deepEqual([...b.sendingSnapshotTo], []);
});

test('snapshot sender: a waiting snapshot raft no longer wants (renewSnapshot null) is dropped and the next one starts', async () => {
  const g = gated();
  const f = fakes(g.answer, { recoveryTransfersMax: 1 });
  const b = f.pgOf(8);
  const c = f.pgOf(9);
  f.sender.start(f.pg, f.snap);
  f.sender.start(b, f.snapAt(12));
  f.sender.start(c, f.snapAt(14));
  f.setRenew(null);
  await g.release();
  await until(() => f.reports.length === 1 && f.renewals.length === 2);
  assert.deepEqual(f.renewals.map((r) => r.pg), [8, 9]);
  assert.deepEqual([...b.sendingSnapshotTo], []);
  assert.deepEqual([...c.sendingSnapshotTo], []);
  assert.deepEqual(f.sender.counts, { running: 0, queued: 0 });
  f.setRenew(60);
  g.hold();
  // forgetPg: a PG that left this OSD loses its waiting copy.
  f.sender.start(f.pg, f.snapAt(20));
  f.sender.start(b, f.snapAt(21));
  f.sender.forgetPg(b);
  assert.deepEqual(f.sender.counts, { running: 1, queued: 0 });
  await g.release();
  await until(() => f.reports.length === 2);
  assert.deepEqual(f.renewals.map((r) => r.pg), [8, 9]);
});

test('snapshot sender: the log after a copy\'s index is kept: past the budget during the first pass it is dropped quietly and the copy goes on in passes; in the final pass the pass starts again from a newer index; after the copy it stays until the peer caught up', async () => {
  const g = gated();
  const f = fakes(g.answer, { recoveryRetainBytes: 1000 });
  const bytesAt = (i: number) => (i <= 60 ? 100 : undefined);
  let match = 5;
  const matchOf = () => match;
  assert.equal(f.sender.retainIndex(f.pg, 40, bytesAt, matchOf), null, 'nothing held without a transfer');
  f.setFinal(20, true);
  f.sender.start(f.pg, f.snap); // index 10
  await until(() => g.seen.length === 1);
  assert.equal(f.sender.retainIndex(f.pg, 15, bytesAt, matchOf), 10, 'first pass: held from its index (500 bytes)');
  assert.equal(f.sender.retainIndex(f.pg, 20, bytesAt, matchOf), 10, '1000 bytes: still held');
  assert.equal(f.sender.retainIndex(f.pg, 20, bytesAt, matchOf), 10, 'counted once');
  assert.equal(f.sender.retainIndex(f.pg, 21, bytesAt, matchOf), null, '1100 bytes: dropped');
  assert.equal(f.counters.snapshotsStale, 0, 'quietly: the copy goes on');
  // The first pass ends; nothing was written behind it, so the final pass comes
  // at once: index 20 (the applied point), held from there.
  await g.release();
  await until(() => f.sender.retainIndex(f.pg, 20, bytesAt, matchOf) === 20);
  assert.equal(f.sender.retainIndex(f.pg, 30, bytesAt, matchOf), 20, '1000 bytes after 20: held');
  assert.equal(f.sender.retainIndex(f.pg, 31, bytesAt, matchOf), null, '1100 bytes: dropped');
  assert.equal(f.counters.snapshotsStale, 1);
  // The pass stops and another begins from the applied point of then (25).
  f.setFinal(25, false);
  f.unblock();
  await until(() => f.reports.length === 1);
  assert.deepEqual(f.reports, [{ pg: 7, to: 3, ok: true }]);
  assert.match(f.logs[0], /final pass from index 20 went stale: more than 1000 bytes of entries were written after index 20; another from a newer index/);
  assert.match(f.logs[1], /snapshot at index 25 \(term 2\) to osd.3, transfer \d+: sent$/);

  // A copy that arrives: the log stays until the peer's match reaches the
  // commit index of then (30), and the kept part shrinks as the match rises.
  f.sender.start(f.pg, f.snapAt(22));
  await until(() => f.reports.length === 2);
  assert.equal(f.reports[1].ok, true);
  match = 22;
  assert.equal(f.sender.retainIndex(f.pg, 28, bytesAt, matchOf), 22, 'installed, not caught up');
  match = 26;
  assert.equal(f.sender.retainIndex(f.pg, 32, bytesAt, matchOf), 26, 'the hold rises with the match');
  match = 30;
  assert.equal(f.sender.retainIndex(f.pg, 34, bytesAt, matchOf), null, 'caught up: released');
  assert.equal(f.sender.retainIndex(f.pg, 34, bytesAt, () => 1), null, 'and forgotten');
});

test('snapshot sender: a hold ends when leadership moves on (another term) or the peer left', async () => {
  const g = gated();
  const f = fakes(g.answer);
  const bytesAt = () => 100;
  f.sender.start(f.pg, f.snap);
  await until(() => g.seen.length === 1);
  assert.equal(f.sender.retainIndex(f.pg, 12, bytesAt, () => 5), 10);
  assert.equal(f.sender.retainIndex(f.pg, 12, bytesAt, () => undefined), null, 'peer left');
  const b = f.pgOf(8);
  f.sender.start(b, f.snap);
  await until(() => g.seen.length === 2);
  assert.equal(f.sender.retainIndex(b, 12, bytesAt, () => 5), 10);
  (b.node as { term: number }).term = 3;
  assert.equal(f.sender.retainIndex(b, 12, bytesAt, () => 5), null, 'a later term');
  await g.release();
  await until(() => f.logs.length === 2);
  // b's transfer stops at its next chunk, and its end is not reported to the later term (which has its own request).
  assert.deepEqual(f.reports, [{ pg: 7, to: 3, ok: true }]);
  assert.match(f.logs.find((l) => l.startsWith('PG 1.8'))!, /not completed \(no longer the leader\)/);
});

test('snapshot sender: when the log kept covers what was written behind the first pass, nothing is sent again', async () => {
  const g = gated();
  const f = fakes(g.answer);
  f.sender.start(f.pg, f.snap);
  await until(() => g.seen.length === 1);
  f.pg.apply.onWritten?.(1, 0, 4096);
  assert.equal(f.sender.retainIndex(f.pg, 12, () => 4096, () => 5), 10);
  await g.release();
  await until(() => f.reports.length === 1);
  assert.deepEqual(
    g.seen.map((c) => [c.seq, c.items.length, c.done, c.snap?.snapshot.index]),
    [
      [0, 1, false, 10],
      [1, 1, false, undefined],
      [2, 0, true, 10],
    ],
  );
});

test('snapshot sender: past the log kept, objects written behind the copy are sent again in the final pass, with the index of then', async () => {
  const g = gated();
  const f = fakes(g.answer, { recoveryRetainBytes: 1000 });
  f.setFinal(40, false);
  f.sender.start(f.pg, f.snap);
  await until(() => g.seen.length === 1);
  // While chunk 0 (object 0) is in flight, a write lands in object 1 of volume 1
  // (not sent yet: sent anyway) and one in object 0 (sent: to send again); more
  // was written than the log kept holds.
  f.pg.apply.onWritten?.(1, 0, 4096);
  f.pg.apply.onWritten?.(1, SNAPSHOT_CHUNK_BYTES_MAX + 10, SNAPSHOT_CHUNK_BYTES_MAX + 20);
  assert.equal(f.sender.retainIndex(f.pg, 12, () => 4096, () => 5), null);
  await g.release();
  await until(() => f.reports.length === 1);
  assert.deepEqual(f.reports, [{ pg: 7, to: 3, ok: true }]);
  const done = g.seen.filter((c) => c.done);
  assert.equal(done.length, 1);
  assert.equal(done[0].snap?.snapshot.index, 40);
  assert.deepEqual(
    g.seen.map((c) => [c.seq, c.items.map((it) => it.offsetBytes / SNAPSHOT_CHUNK_BYTES_MAX)]),
    [
      [0, [0]],
      [1, [1]],
      [2, [0]],
      [3, [1]],
    ],
    'objects 0 and 1 again, the last chunk done',
  );
  assert.match(f.logs[0], /snapshot at index 40 \(term 2\)/);
  assert.equal(f.pg.apply.onWritten, null, 'tracking ends with the transfer');
});

test('snapshot sender: an object trimmed behind the copy is sent again as a zero range, not as a whole object of zeros', async () => {
  const g = gated();
  const f = fakes(g.answer, { recoveryRetainBytes: 1000 });
  f.setFinal(40, false);
  f.sender.start(f.pg, f.snap);
  await until(() => g.seen.length === 1);
  // Object 0 was sent; then it is written and trimmed (freed) on the leader.
  f.pg.apply.onWritten?.(1, 0, SNAPSHOT_CHUNK_BYTES_MAX);
  f.holes.add(0);
  assert.equal(f.sender.retainIndex(f.pg, 12, () => 4096, () => 5), null);
  await g.release();
  await until(() => f.reports.length === 1);
  assert.deepEqual(f.reports, [{ pg: 7, to: 3, ok: true }]);
  const resent = g.seen.filter((c) => c.seq >= 2).flatMap((c) => c.items);
  assert.deepEqual(resent, [{ volumeId: 1, offsetBytes: 0, zeroBytes: SNAPSHOT_CHUNK_BYTES_MAX }]);
  assert.deepEqual(f.reads, [0, SNAPSHOT_CHUNK_BYTES_MAX], 'the trimmed object is not read again');
  assert.equal(g.seen.at(-1)?.done, true);
});

test('snapshot sender: objects written behind the copy are tracked for any volume id (no packed key)', async () => {
  const g = gated();
  const f = fakes(g.answer, { recoveryRetainBytes: 1000 });
  f.setFinal(40, false);
  f.sender.start(f.pg, f.snap);
  await until(() => g.seen.length === 1);
  // A volume id beyond 2^21: the old packed key (volumeId x 2^32 + obj) asserted
  // here, inside the apply queue's callback (the PG's apply stalled).
  const bigVolume = 2 ** 40 + 3;
  const bigObj = 2 ** 28 + 1;
  f.pg.apply.onWritten?.(bigVolume, bigObj * SNAPSHOT_CHUNK_BYTES_MAX, bigObj * SNAPSHOT_CHUNK_BYTES_MAX + 4096);
  assert.equal(f.sender.retainIndex(f.pg, 12, () => 4096, () => 5), null);
  await g.release();
  await until(() => f.reports.length === 1);
  const resent = g.seen.filter((c) => c.seq >= 2).flatMap((c) => c.items.map((it) => [it.volumeId, it.offsetBytes / SNAPSHOT_CHUNK_BYTES_MAX]));
  assert.deepEqual(resent, [[bigVolume, bigObj]]);
});

test('snapshot sender: transfer ids carry the sender and a count from a base drawn per start, so a restarted OSD does not reuse ids its receivers completed', async () => {
  const ids = async (base: number) => {
    const g = gated();
    const f = fakes(g.answer, {}, base);
    await g.release();
    f.sender.start(f.pg, f.snap);
    f.sender.start(f.pgOf(8), f.snap);
    await until(() => f.reports.length === 2);
    return [...new Set(g.seen.map((c) => c.transferId))];
  };
  const first = await ids(0x7000_0000);
  assert.deepEqual(first, [2 ** 32 + 0x7000_0001, 2 ** 32 + 0x7000_0002], 'osd.1: its id above 2^32, then base + count');
  const restarted = await ids(0x1234_5678);
  assert.ok(!restarted.some((id) => first.includes(id)), `${restarted} vs ${first}`);
  const wrapped = await ids(2 ** 32 - 1);
  assert.deepEqual(wrapped, [2 ** 32, 2 ** 32 + 1], 'the count wraps within 32 bits');
  assert.ok(wrapped.every((id) => Number.isSafeInteger(id)));
});

test('snapshot sender: the log kept after a copy for its peer is let go when the replica stops leading (dropHolds)', async () => {
  const g = gated();
  const f = fakes(g.answer);
  await g.release();
  f.sender.start(f.pg, f.snap);
  await until(() => f.reports.length === 1);
  // Sent: the log after index 10 stays until the peer reaches the commit index of then.
  assert.equal(f.sender.retainIndex(f.pg, 12, () => 100, () => 5), 10);
  assert.equal(f.sender.holdCount, 1);
  f.sender.dropHolds(f.pgOf(8));
  assert.equal(f.sender.holdCount, 1, 'another PG');
  f.sender.dropHolds(f.pg);
  assert.equal(f.sender.holdCount, 0);
  assert.equal(f.sender.retainIndex(f.pg, 12, () => 100, () => 5), null);
});

test('snapshot sender: a final pass whose kept log overflows starts again from a newer index with what it had not sent (the receiver keeps its copy)', async () => {
  const seen: SnapshotChunk[] = [];
  let releaseSeq2: (() => void) | null = null;
  const answer: Answer = (c) => {
    seen.push(c);
    if (c.seq !== 2) return { status: Status.Ok };
    return new Promise((resolve) => (releaseSeq2 = () => resolve({ status: Status.Ok })));
  };
  const f = fakes(answer, { recoveryRetainBytes: 1000 });
  f.setFinal(40, false);
  f.sender.start(f.pg, f.snap);
  await until(() => seen.length === 1);
  // Both objects are written behind the first pass, more than the log kept holds.
  f.pg.apply.onWritten?.(1, 0, 4096);
  f.pg.apply.onWritten?.(1, SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_CHUNK_BYTES_MAX + 4096);
  assert.equal(f.sender.retainIndex(f.pg, 12, () => 4096, () => 5), null);
  // The final pass (index 40) sends object 0 as chunk 2; meanwhile its kept log overflows.
  await until(() => releaseSeq2 !== null);
  assert.equal(f.sender.retainIndex(f.pg, 45, () => 4096, () => 5), null);
  assert.equal(f.counters.snapshotsStale, 1);
  f.setFinal(50, false);
  releaseSeq2!();
  await until(() => f.reports.length === 1);
  assert.deepEqual(f.reports, [{ pg: 7, to: 3, ok: true }]);
  assert.deepEqual(
    seen.map((c) => [c.seq, c.items.map((it) => it.offsetBytes / SNAPSHOT_CHUNK_BYTES_MAX), c.done, c.snap?.snapshot.index]),
    [
      [0, [0], false, 10],
      [1, [1], false, undefined],
      [2, [0], false, undefined],
      [3, [1], true, 50],
    ],
    'no new transfer (seq 0): object 1, not sent by the stopped pass, goes in the next one, which ships index 50',
  );
  assert.ok(f.logs.some((l) => /final pass from index 40 went stale: .*another from a newer index \(1 object\(s\) not sent yet\)/.test(l)), f.logs.join('\n'));
  assert.equal(f.sender.retainIndex(f.pg, 52, () => 1, () => 5), 50, 'the log after the new index is kept for the peer');
});

test('snapshot sender: after FINAL_PASS_ATTEMPTS_MAX final passes went stale the transfer is cancelled (raft asks again)', async () => {
  const seen: SnapshotChunk[] = [];
  const f = fakes((c) => {
    seen.push(c);
    // While each final pass's first chunk is in flight, both objects are written
    // again and its kept log overflows.
    if (c.seq >= 2) {
      f.pg.apply.onWritten?.(1, 0, 4096);
      f.pg.apply.onWritten?.(1, SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_CHUNK_BYTES_MAX + 4096);
      f.sender.retainIndex(f.pg, 1000, () => 4096, () => 5);
    }
    return { status: Status.Ok };
  }, { recoveryRetainBytes: 1000 });
  f.setFinal(40, false);
  f.sender.start(f.pg, f.snap);
  await until(() => seen.length === 1);
  f.pg.apply.onWritten?.(1, 0, 4096);
  f.pg.apply.onWritten?.(1, SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_CHUNK_BYTES_MAX + 4096);
  f.sender.retainIndex(f.pg, 12, () => 4096, () => 5);
  await until(() => f.reports.length === 1);
  assert.deepEqual(f.reports, [{ pg: 7, to: 3, ok: false }]);
  assert.equal(f.counters.snapshotsStale, 3);
  assert.match(f.logs.at(-1)!, /not completed \(stale: .* \(3 final passes\)\)/);
  assert.ok(!seen.some((c) => c.done), 'no done chunk');
});

test('snapshot sender: when the log kept after the first pass outgrows the budget before its last (empty) chunk goes, final passes follow instead of a stale end', async () => {
  const seen: SnapshotChunk[] = [];
  let f: ReturnType<typeof fakes> | null = null;
  f = fakes(
    (c) => {
      seen.push(c);
      // Client IO picks up: the next chunk (the empty last one) yields to it.
      if (c.seq === 1) f!.osd.clientInFlight = 1000;
      return { status: Status.Ok };
    },
    { recoveryRetainBytes: 1000 },
  );
  f.setFinal(40, false);
  f.sender.start(f.pg, f.snap);
  await until(() => seen.length === 2);
  // The first pass is over and its log fits; while the last chunk waits, it outgrows the budget.
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(f.sender.retainIndex(f.pg, 40, () => 100, () => 5), null);
  f.osd.clientInFlight = 0;
  await until(() => f!.reports.length === 1);
  assert.deepEqual(f.reports, [{ pg: 7, to: 3, ok: true }]);
  assert.deepEqual(
    seen.map((c) => [c.seq, c.items.length, c.done, c.snap?.snapshot.index]),
    [
      [0, 1, false, 10],
      [1, 1, false, undefined],
      [2, 0, true, 40],
    ],
  );
});
