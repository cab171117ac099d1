// In-memory raft log retention in the seeded cluster simulation (issue 3 §4,
// SPEC CLU4; src/osd/osd.ts compactIndex): while every replica of a PG is up to
// date, each keeps only keepMinEntries applied entries in memory (every entry
// kept is a live buffer the GC visits); when one falls behind, the leader keeps
// what it lacks and tells the followers in its heartbeats, so that a follower
// which becomes leader brings the lagging replica up to date from its log, not
// with a whole-PG snapshot. Deterministic; TESSERA_SEED replays another seed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { COMPACT_STEP_ENTRIES, OSD_CONFIG_DEFAULTS } from '../../src/osd/osd.js';
import type { PgReplica } from '../../src/osd/pg.js';
import { SIM_OBJECT_BYTES, SimCluster } from './cluster.js';

const BLOCK_BYTES = 4096;
const BLOCKS = (4 * SIM_OBJECT_BYTES) / BLOCK_BYTES;

test('sim: a PG whose replicas are current keeps ~keepMinEntries in memory; a follower cut off for 300 writes is caught up from the log by a new leader', async () => {
  const seed = Number(process.env.TESSERA_SEED ?? 7) >>> 0;
  const c = new SimCluster(seed, { osds: 3, volumeBytes: 4 * SIM_OBJECT_BYTES, pgCount: 1 });
  await c.start();
  const vol = c.map.volumes[0];
  const ref = { id: vol.id, poolId: vol.poolId };
  const data = Buffer.alloc(BLOCK_BYTES, 0x5a);
  const replica = (id: number): PgReplica => c.osds.get(id)!.core!.replica(vol.poolId, 0)!;
  const kept = (id: number): number => replica(id).node.lastIndex - replica(id).node.snapshotMeta.index;
  const context = () => `seed ${seed} (replay: TESSERA_SEED=${seed}); ${[1, 2, 3].map((id) => `osd.${id}: ${replica(id).node.role} last ${replica(id).node.lastIndex} snap ${replica(id).node.snapshotMeta.index} done ${replica(id).apply.doneIndex} retain ${replica(id).node.leaderRetain}`).join('; ')}\n${c.log.slice(-20).join('\n')}`;

  /** n writes, 8 at a time, each to its own block of the PG's objects. */
  const write = async (n: number): Promise<void> => {
    for (let k = 0; k < n; k += 8) {
      let pending = 0;
      let failed: unknown = null;
      for (let j = k; j < Math.min(n, k + 8); j++) {
        pending++;
        c.client.write(ref, (j % BLOCKS) * BLOCK_BYTES, data).then(
          () => pending--,
          (err) => ((failed = err), pending--),
        );
      }
      await c.sched.runUntil(c.sched.nowMs + 20_000, () => pending === 0);
      assert.equal(pending, 0, `writes did not finish: ${context()}`);
      assert.equal(failed, null, `a write failed: ${String(failed)} ${context()}`);
    }
  };

  try {
    // 1. Steady state: after 400 writes, a few ticks of housekeeping compact every replica.
    await write(400);
    await c.sched.runUntil(c.sched.nowMs + 2_000);
    const bound = OSD_CONFIG_DEFAULTS.keepMinEntries + COMPACT_STEP_ENTRIES + 8;
    assert.ok(bound < 400, `keepMinEntries ${OSD_CONFIG_DEFAULTS.keepMinEntries}: the default no longer keeps the log short`);
    for (const id of [1, 2, 3]) assert.ok(kept(id) <= bound, `osd.${id} keeps ${kept(id)} entries (at most ${bound} expected): ${context()}`);

    // 2. A follower cut off while 300 writes go on: every replica keeps what it lacks.
    const leader = [1, 2, 3].find((id) => replica(id).isLeader)!;
    assert.ok(leader !== undefined, `no leader: ${context()}`);
    const [lagging, other] = [1, 2, 3].filter((id) => id !== leader);
    c.net.isolate(lagging);
    const laggingAt = replica(lagging).apply.doneIndex;
    await write(300);
    await c.sched.runUntil(c.sched.nowMs + 2_000);
    for (const id of [leader, other]) {
      assert.ok(replica(id).node.snapshotMeta.index <= laggingAt, `osd.${id} compacted past what osd.${lagging} lacks (${laggingAt}): ${context()}`);
    }

    // 3. The old leader goes away as the follower comes back: the other follower
    //    must lead and catch it up from its own log.
    c.net.heal();
    c.net.isolate(leader);
    const target = replica(other).node.commit;
    await c.sched.runUntil(c.sched.nowMs + 30_000, () => replica(other).isLeader && replica(lagging).apply.doneIndex >= target);
    assert.ok(replica(other).isLeader, `osd.${other} did not take over: ${context()}`);
    assert.ok(replica(lagging).apply.doneIndex >= target, `osd.${lagging} did not catch up to ${target}: ${context()}`);
    assert.equal(c.osds.get(lagging)!.core!.counters.snapshotInstalls, 0, `osd.${lagging} needed a snapshot: ${context()}`);
    c.net.heal();
    await write(16);
    assert.deepEqual(c.fatalErrors(), []);
  } finally {
    c.stop();
  }
});
