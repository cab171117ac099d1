// Snapshot recovery under continuing writes in the seeded cluster simulation
// (issue 3 §4/§5, SPEC CLU4/CLU5; src/osd/snapshot.ts). A follower cut off
// long enough that its leaders compacted past it needs a whole-PG snapshot of
// every PG. The writes go on while it is copied, so the leader keeps the log
// after each snapshot's index (recoveryRetainBytes) and the follower catches up
// from that log: each PG is copied once. Only recoveryTransfersMax copies run at
// once per sending OSD; a waiting one starts from the leader's applied point of
// then. Without the retained log every copy arrived stale and was sent again
// (session 21: the cluster conformance test's part 7). A replica whose install
// began (its data dropped) awaits a snapshot in raft, durably: a new leader
// catches it up when the sender goes away mid-copy, and an OSD restarted
// mid-copy does not take its partial copy for its state. Deterministic;
// TESSERA_SEED replays another seed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { PgReplica } from '../../src/osd/pg.js';
import { SIM_OBJECT_BYTES, SimCluster } from './cluster.js';

const BLOCK_BYTES = 4096;
const PG_COUNT = 4;
const VOLUME_BYTES = 8 * SIM_OBJECT_BYTES;
const BLOCKS = VOLUME_BYTES / BLOCK_BYTES;
/** With one object per chunk, a PG copy (2 objects) takes ~2 s: long against the write rate below. */
const RECOVERY_BYTES_PER_SEC = SIM_OBJECT_BYTES;
/** One write each WRITE_GAP_MS of sim time: ~100 KiB/s in all, ~25 KiB/s per PG. */
const WRITE_GAP_MS = 40;

async function scenario(seed: number, retainBytes: number) {
  const c = new SimCluster(seed, {
    osds: 3,
    volumeBytes: VOLUME_BYTES,
    pgCount: PG_COUNT,
    // keepBytes: the leader keeps ~2 entries for a lagging peer, so the cut-off
    // follower needs a snapshot of every PG.
    osdConfig: { keepBytes: 2 * BLOCK_BYTES, recoveryBytesPerSec: RECOVERY_BYTES_PER_SEC, snapshotChunkBytes: SIM_OBJECT_BYTES, recoveryTransfersMax: 1, recoveryRetainBytes: retainBytes },
  });
  await c.start();
  const vol = c.map.volumes[0];
  const ref = { id: vol.id, poolId: vol.poolId };
  const replica = (osd: number, pg: number): PgReplica => c.osds.get(osd)!.core!.replica(vol.poolId, pg)!;
  const leaderOf = (pg: number) => [1, 2, 3].find((id) => replica(id, pg).isLeader);
  const data = Buffer.alloc(BLOCK_BYTES, 0x3c);
  let writing = true;
  let acked = 0;
  const failures: string[] = [];
  // The writer: one 4 KiB write every WRITE_GAP_MS over every block (all PGs).
  const writer = (async () => {
    for (let i = 0; writing; i++) {
      c.client.write(ref, ((i * 7) % BLOCKS) * BLOCK_BYTES, data).then(
        () => acked++,
        (err: Error) => failures.push(err.message),
      );
      await c.sched.sleep(WRITE_GAP_MS);
    }
  })();
  const context = (victim: number) =>
    `seed ${seed} (replay: TESSERA_SEED=${seed}); ${[...Array(PG_COUNT).keys()].map((pg) => `PG ${pg}: leader osd.${leaderOf(pg)} commit ${replica(leaderOf(pg) ?? 1, pg).node.commit}, osd.${victim} done ${replica(victim, pg).apply.doneIndex}`).join('; ')}\n${c.log.slice(-20).join('\n')}`;
  try {
    await c.sched.runUntil(c.sched.nowMs + 3_000);
    // A follower of every PG (the OSD leading none, or the least).
    const victim = [1, 2, 3].sort((a, b) => [...Array(PG_COUNT).keys()].filter((pg) => replica(a, pg).isLeader).length - [...Array(PG_COUNT).keys()].filter((pg) => replica(b, pg).isLeader).length)[0];
    c.net.isolate(victim);
    await c.sched.runUntil(c.sched.nowMs + 8_000);
    const before = [...Array(PG_COUNT).keys()].map((pg) => ({ pg, done: replica(victim, pg).apply.doneIndex, leader: leaderOf(pg) }));
    for (const b of before) {
      assert.ok(b.leader !== undefined && b.leader !== victim, `PG ${b.pg} has no leader besides osd.${victim}: ${context(victim)}`);
      const floor = replica(b.leader, b.pg).node.snapshotMeta.index;
      assert.ok(floor > b.done, `PG ${b.pg}: its leader kept the log osd.${victim} lacks (from ${b.done}; compacted to ${floor}); the test needs a snapshot: ${context(victim)}`);
    }
    c.net.heal();
    const installsBefore = c.osds.get(victim)!.core!.counters.snapshotInstalls;
    // Caught up while the writes go on: every PG of the victim applied what its
    // leader had committed when the network healed, and its leader replicates to it.
    const targets = before.map((b) => replica(b.leader!, b.pg).node.commit);
    const caughtUp = () =>
      before.every((b, i) => {
        const l = leaderOf(b.pg);
        return l !== undefined && replica(victim, b.pg).apply.doneIndex >= targets[i] && replica(l, b.pg).node.progress(victim)?.state === 'replicate';
      });
    await c.sched.runUntil(c.sched.nowMs + 60_000, caughtUp);
    const result = {
      caughtUp: caughtUp(),
      installs: c.osds.get(victim)!.core!.counters.snapshotInstalls - installsBefore,
      queued: [1, 2, 3].reduce((n, id) => n + c.osds.get(id)!.core!.counters.snapshotsQueued, 0),
      stale: [1, 2, 3].reduce((n, id) => n + c.osds.get(id)!.core!.counters.snapshotsStale, 0),
      context: context(victim),
    };
    writing = false;
    let writerDone = false;
    void writer.then(() => (writerDone = true));
    await c.sched.runUntil(c.sched.nowMs + 2_000, () => writerDone);
    await c.sched.runUntil(c.sched.nowMs + 2_000);
    assert.deepEqual(failures, [], `writes failed: ${result.context}`);
    assert.ok(acked > 0);
    assert.deepEqual(c.fatalErrors(), []);
    if (process.env.SIM_DEBUG) console.log(result);
    return result;
  } finally {
    writing = false;
    c.stop();
  }
}

test('sim: a follower cut off past its leaders\' logs is copied once per PG while writes go on, and catches up from the log kept after each snapshot', async () => {
  const seed = Number(process.env.TESSERA_SEED ?? 11) >>> 0;
  const r = await scenario(seed, 1024 * 1024);
  assert.ok(r.caughtUp, `the follower did not catch up within 60 s: ${r.context}`);
  assert.equal(r.installs, PG_COUNT, `one snapshot per PG expected: ${r.context}`);
  assert.equal(r.stale, 0, `no transfer should have gone stale: ${r.context}`);
  // (Whether a copy waited for a slot depends on the seed: seed 11 queues 2; snapshot.test.ts tests the queue.)
  console.log(`# seed ${seed}: ${r.installs} copies, ${r.queued} waited for a slot`);
});

// Before final passes went unthrottled (session 23), no copy arrived in time and
// the follower never caught up; now a small final pass outruns most writes, but
// a PG is still copied more than once.
test('sim (mutation check): with no log kept after a snapshot, copies go stale under the same writes and PGs are copied more than once', async () => {
  const seed = Number(process.env.TESSERA_SEED ?? 11) >>> 0;
  const r = await scenario(seed, 0);
  assert.ok(r.stale > 0 && r.installs > PG_COUNT, `the retained log made no difference (caught up ${r.caughtUp}, ${r.installs} installs, ${r.stale} stale): ${r.context}`);
});

/**
 * One PG of 8 objects on 3 OSDs, sent one object per chunk (a copy takes ~8 s),
 * under a steady writer: a follower is cut off until its leader compacted past
 * it, then healed; resolves once its snapshot install began (its data dropped).
 */
async function installUnderWay(seed: number) {
  const c = new SimCluster(seed, {
    osds: 3,
    volumeBytes: VOLUME_BYTES,
    pgCount: 1,
    osdConfig: { keepBytes: 2 * BLOCK_BYTES, recoveryBytesPerSec: RECOVERY_BYTES_PER_SEC, snapshotChunkBytes: SIM_OBJECT_BYTES },
  });
  await c.start();
  const vol = c.map.volumes[0];
  const ref = { id: vol.id, poolId: vol.poolId };
  const replica = (osd: number): PgReplica => c.osds.get(osd)!.core!.replica(vol.poolId, 0)!;
  const leader = () => [1, 2, 3].find((id) => c.isUp(id) && replica(id).isLeader);
  let writing = true;
  const failures: string[] = [];
  const writer = (async () => {
    for (let i = 0; writing; i++) {
      const data = Buffer.alloc(BLOCK_BYTES, (i % 250) + 1);
      c.client.write(ref, ((i * 7) % BLOCKS) * BLOCK_BYTES, data).catch((err: Error) => failures.push(err.message));
      await c.sched.sleep(WRITE_GAP_MS);
    }
  })();
  const context = () =>
    `seed ${seed} (replay: TESSERA_SEED=${seed}); ${[1, 2, 3]
      .filter((id) => c.isUp(id))
      .map((id) => `osd.${id}: ${replica(id).node.role} commit ${replica(id).node.commit} done ${replica(id).apply.doneIndex} installing ${replica(id).installingTransfer} awaiting ${replica(id).awaitingSnapshot}`)
      .join('; ')}\n${c.log.slice(-20).join('\n')}`;
  /** Stops the writer, lets the cluster settle, and checks no write failed and no OSD died. */
  const finish = async () => {
    writing = false;
    let writerDone = false;
    void writer.then(() => (writerDone = true));
    await c.sched.runUntil(c.sched.nowMs + 2_000, () => writerDone);
    await c.sched.runUntil(c.sched.nowMs + 5_000);
    assert.deepEqual(failures, [], `writes failed: ${context()}`);
    assert.deepEqual(c.fatalErrors(), []);
  };
  const stop = () => {
    writing = false;
    c.stop();
  };
  try {
    await c.sched.runUntil(c.sched.nowMs + 3_000);
    const first = leader();
    assert.ok(first !== undefined, `no leader: ${context()}`);
    const victim = [1, 2, 3].find((id) => id !== first)!;
    c.net.isolate(victim);
    await c.sched.runUntil(c.sched.nowMs + 8_000);
    c.net.heal();
    await c.sched.runUntil(c.sched.nowMs + 20_000, () => replica(victim).installingTransfer !== 0);
    assert.notEqual(replica(victim).installingTransfer, 0, `no install began: ${context()}`);
    /** The victim applied what its (other) leader committed, and the leader replicates to it. */
    const caughtUp = (not: number) => {
      const l = leader();
      return l !== undefined && l !== not && l !== victim && !replica(victim).awaitingSnapshot && replica(victim).apply.doneIndex >= replica(l).node.commit - 2 && replica(l).node.progress(victim)?.state === 'replicate';
    };
    return { c, vol, replica, leader, victim, context, caughtUp, finish, stop };
  } catch (err) {
    stop();
    throw err;
  }
}

test('sim: a follower whose snapshot install began (its data dropped) when the sending leader was cut off is caught up by the next leader', async () => {
  const f = await installUnderWay(Number(process.env.TESSERA_SEED ?? 5) >>> 0);
  try {
    const sender = f.leader()!;
    assert.notEqual(sender, f.victim);
    f.c.net.isolate(sender);
    // Another leader takes over (the victim cannot: its log is behind) and catches it up.
    await f.c.sched.runUntil(f.c.sched.nowMs + 60_000, () => f.caughtUp(sender));
    assert.ok(f.caughtUp(sender), `the victim osd.${f.victim} was not caught up by a new leader: ${f.context()}`);
    f.c.net.heal();
    await f.finish();
  } finally {
    f.stop();
  }
});

test('sim: an OSD restarted in the middle of a snapshot install (a partial copy made durable) awaits a new snapshot instead of taking the copy for its state', async () => {
  const f = await installUnderWay(Number(process.env.TESSERA_SEED ?? 5) >>> 0);
  const { c, victim, replica } = f;
  try {
    // A few chunks in, the partial copy is made durable (as another PG's install
    // or a checkpoint would), then the OSD loses power.
    await c.sched.runUntil(c.sched.nowMs + 2_500);
    assert.notEqual(replica(victim).installingTransfer, 0, `the install ended too soon: ${f.context()}`);
    let flushed = false;
    void c.osds.get(victim)!.engine!.flush().then(() => (flushed = true));
    await c.sched.runUntil(c.sched.nowMs + 1_000, () => flushed);
    assert.ok(flushed);
    c.crash(victim);
    await c.sched.runUntil(c.sched.nowMs + 500);
    await c.restart(victim);
    assert.equal(replica(victim).awaitingSnapshot, true, `the restarted replica does not know its data is a partial copy: ${f.context()}`);
    assert.equal(replica(victim).node.awaitingSnapshot, true);
    await c.sched.runUntil(c.sched.nowMs + 60_000, () => f.caughtUp(0));
    assert.ok(f.caughtUp(0), `the restarted osd.${victim} was not caught up: ${f.context()}`);
    await f.finish();
    // Every block of the victim's copy equals the leader's.
    const l = f.leader()!;
    assert.ok(replica(victim).apply.doneIndex >= replica(l).node.commit, `not caught up at the end: ${f.context()}`);
    const want = Buffer.alloc(BLOCK_BYTES);
    const got = Buffer.alloc(BLOCK_BYTES);
    for (let b = 0; b < BLOCKS; b++) {
      let pending = 2;
      void c.osds.get(l)!.store!.read(f.vol.id, b * BLOCK_BYTES, BLOCK_BYTES, want, 0).then(() => pending--);
      void c.osds.get(victim)!.store!.read(f.vol.id, b * BLOCK_BYTES, BLOCK_BYTES, got, 0).then(() => pending--);
      await c.sched.runUntil(c.sched.nowMs + 1_000, () => pending === 0);
      assert.ok(got.equals(want), `block ${b}: osd.${victim} holds ${got[0]}, the leader osd.${l} ${want[0]}: ${f.context()}`);
    }
  } finally {
    f.stop();
  }
});

test('sim: an OSD with a snapshot install under way still checkpoints (the PG recorded as awaiting a snapshot), and after a restart it awaits one', async () => {
  const f = await installUnderWay(Number(process.env.TESSERA_SEED ?? 5) >>> 0);
  const { c, victim, replica } = f;
  try {
    await c.sched.runUntil(c.sched.nowMs + 2_500);
    assert.notEqual(replica(victim).installingTransfer, 0, `the install ended too soon: ${f.context()}`);
    // Before, any install under way skipped every checkpoint of the OSD: one that
    // never completed let its WAL grow without bound (session 23 review).
    const wal = c.osds.get(victim)!.wal!;
    const before = wal.bytesSinceCheckpoint();
    assert.ok(before > 0);
    let done = false;
    void c.osds.get(victim)!.core!.checkpoint().then(() => (done = true));
    await c.sched.runUntil(c.sched.nowMs + 2_000, () => done);
    assert.ok(done);
    assert.ok(wal.bytesSinceCheckpoint() < before, `no checkpoint: ${wal.bytesSinceCheckpoint()} bytes since, ${before} before: ${f.context()}`);
    c.crash(victim);
    await c.sched.runUntil(c.sched.nowMs + 500);
    await c.restart(victim);
    assert.equal(replica(victim).awaitingSnapshot, true, `the checkpoint did not record the wait: ${f.context()}`);
    await c.sched.runUntil(c.sched.nowMs + 60_000, () => f.caughtUp(0));
    assert.ok(f.caughtUp(0), `the restarted osd.${victim} was not caught up: ${f.context()}`);
    await f.finish();
  } finally {
    f.stop();
  }
});

/**
 * One PG copied at one object a second while a hot object takes a write every
 * writeGapMs, far more than the log kept holds; with `trim`, the last four
 * objects are trimmed during the copy. The copy must arrive once, and the
 * follower's data and allocated objects must equal the leader's.
 */
async function longCopy(seed: number, writeGapMs: number, trim: boolean): Promise<void> {
  // One PG of 8 objects sent at one object a second (~8 s), while a hot object
  // takes ~100 KiB/s of writes: ~800 KiB behind the copy, far more than the
  // 256 KiB of log kept. A copy whose index stayed the one it began at could
  // only arrive stale, again and again.
  const c = new SimCluster(seed, {
    osds: 3,
    volumeBytes: VOLUME_BYTES,
    pgCount: 1,
    osdConfig: { keepBytes: 2 * BLOCK_BYTES, recoveryBytesPerSec: RECOVERY_BYTES_PER_SEC, snapshotChunkBytes: SIM_OBJECT_BYTES, recoveryRetainBytes: 256 * 1024 },
  });
  await c.start();
  const vol = c.map.volumes[0];
  const ref = { id: vol.id, poolId: vol.poolId };
  const replica = (osd: number): PgReplica => c.osds.get(osd)!.core!.replica(vol.poolId, 0)!;
  const leader = () => [1, 2, 3].find((id) => replica(id).isLeader);
  const context = () => `seed ${seed} (replay: TESSERA_SEED=${seed}); ${[1, 2, 3].map((id) => `osd.${id}: ${replica(id).node.role} commit ${replica(id).node.commit} done ${replica(id).apply.doneIndex}`).join('; ')}\n${c.log.slice(-20).join('\n')}`;
  const failures: string[] = [];
  try {
    // Every object exists (the copy ships all 8).
    let pending = 0;
    for (let b = 0; b < BLOCKS; b += SIM_OBJECT_BYTES / BLOCK_BYTES) {
      pending++;
      c.client.write(ref, b * BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 1)).then(() => pending--, (err: Error) => failures.push(err.message));
    }
    await c.sched.runUntil(c.sched.nowMs + 10_000, () => pending === 0);
    assert.equal(pending, 0, `fill: ${context()}`);
    let writing = true;
    const hotBlocks = SIM_OBJECT_BYTES / BLOCK_BYTES;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        c.client.write(ref, (i % hotBlocks) * BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, (i % 250) + 2)).catch((err: Error) => failures.push(err.message));
        await c.sched.sleep(writeGapMs);
      }
    })();
    const victim = [1, 2, 3].find((id) => id !== leader())!;
    c.net.isolate(victim);
    await c.sched.runUntil(c.sched.nowMs + 8_000);
    c.net.heal();
    // While the copy runs, the last objects are trimmed one by one (freed on the
    // leader): some before the copy reads them, some after (written behind it).
    const TRIMMED = trim ? [4, 5, 6, 7] : [];
    let trimsLeft = TRIMMED.length;
    void (async () => {
      for (const obj of TRIMMED) {
        await c.sched.sleep(1_500);
        await c.client.zero(ref, obj * SIM_OBJECT_BYTES, SIM_OBJECT_BYTES, true).catch((err: Error) => failures.push(err.message));
        trimsLeft--;
      }
    })();
    const caughtUp = () => {
      const l = leader();
      return trimsLeft === 0 && l !== undefined && l !== victim && !replica(victim).awaitingSnapshot && replica(victim).apply.doneIndex >= replica(l).node.commit - 2 && replica(l).node.progress(victim)?.state === 'replicate';
    };
    await c.sched.runUntil(c.sched.nowMs + 60_000, caughtUp);
    const installs = c.osds.get(victim)!.core!.counters.snapshotInstalls;
    const stale = [1, 2, 3].reduce((n, id) => n + c.osds.get(id)!.core!.counters.snapshotsStale, 0);
    assert.ok(caughtUp(), `not caught up within 60 s (${installs} installs, ${stale} stale): ${context()}`);
    assert.equal(stale, 0, context());
    assert.equal(installs, 1, `one copy expected: ${context()}`);
    writing = false;
    let writerDone = false;
    void writer.then(() => (writerDone = true));
    await c.sched.runUntil(c.sched.nowMs + 2_000, () => writerDone);
    await c.sched.runUntil(c.sched.nowMs + 5_000);
    // The victim's copy equals the leader's, block for block.
    const l = leader()!;
    const want = Buffer.alloc(BLOCK_BYTES);
    const got = Buffer.alloc(BLOCK_BYTES);
    for (let b = 0; b < BLOCKS; b++) {
      let reads = 2;
      void c.osds.get(l)!.store!.read(vol.id, b * BLOCK_BYTES, BLOCK_BYTES, want, 0).then(() => reads--);
      void c.osds.get(victim)!.store!.read(vol.id, b * BLOCK_BYTES, BLOCK_BYTES, got, 0).then(() => reads--);
      await c.sched.runUntil(c.sched.nowMs + 1_000, () => reads === 0);
      assert.ok(got.equals(want), `block ${b}: osd.${victim} holds ${got[0]}, the leader osd.${l} ${want[0]}: ${context()}`);
    }
    // The same objects are allocated: a trimmed object did not come back as a
    // whole object of zeros (before zero ranges, the copy allocated all four).
    const allocated = async (osd: number) => {
      let ext: { lengthBytes: number; hole: boolean }[] | null = null;
      void c.osds.get(osd)!.store!.blockStatus(vol.id, 0, VOLUME_BYTES).then((e) => (ext = e));
      await c.sched.runUntil(c.sched.nowMs + 1_000, () => ext !== null);
      const objs: number[] = [];
      let pos = 0;
      for (const e of ext!) {
        if (!e.hole) for (let o = pos / SIM_OBJECT_BYTES; o < (pos + e.lengthBytes) / SIM_OBJECT_BYTES; o++) objs.push(o);
        pos += e.lengthBytes;
      }
      return objs;
    };
    const want0 = trim ? [0, 1, 2, 3] : [0, 1, 2, 3, 4, 5, 6, 7];
    assert.deepEqual(await allocated(l), want0, `the leader's objects: ${context()}`);
    assert.deepEqual(await allocated(victim), want0, `osd.${victim}'s objects: ${context()}`);
    assert.deepEqual(failures, [], `writes failed: ${context()}`);
    assert.deepEqual(c.fatalErrors(), []);
  } finally {
    c.stop();
  }
}

test('sim: a copy that takes longer than the log kept for it completes: objects written behind it are sent again, and its index moves up to the applied point of the final pass; objects trimmed meanwhile are not allocated on the copy', async () => {
  await longCopy(Number(process.env.TESSERA_SEED ?? 3) >>> 0, WRITE_GAP_MS, true);
});

// Review reproducer (session 23): with a write every 15 ms (~270 KiB/s into one
// object, more than the 256 KiB kept per second the throttled final pass took),
// every final pass went stale and the transfer began again from scratch: 9
// copies and no catch-up within 60 s. A small final pass now goes unthrottled,
// and a stale one starts again from a newer index instead of a new transfer.
test('sim: a copy completes once even when a hot object is written faster than the recovery rate sends an object', async () => {
  await longCopy(Number(process.env.TESSERA_SEED ?? 4) >>> 0, 5, false);
});
