// Seeded fault simulation of a replicated cluster (issue 3 §7, SPEC CLU4/CLU5):
// 4 OSDs, one size-3 pool, a per-block register workload through the real
// client library, while the network drops and reorders messages, OSDs crash
// (power cut: unsynced WAL and engine writes dropped or torn) and restart, OSDs
// get partitioned away, and an OSD is taken out (membership change with
// snapshot catch-up). Every read is checked by register-check.ts; at the end
// every block is read back and the replicas of every PG must hold the same bytes.
// Each seed prints on failure; replay one with TESSERA_SEED=<seed>.
// SIM_SEEDS sets how many seeds run (default 200).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { operatorOut } from '../../src/mon/map.js';
import { objectToPg } from '../../src/placement/placement.js';
import { Prng } from '../../src/stdx/prng.js';
import { SIM_OBJECT_BYTES, SimCluster } from './cluster.js';
import { BlockHistory, fillTagBlock, readTagBlock } from './register-check.js';

const BLOCK_BYTES = 4096;
const VOLUME_BYTES = 16 * SIM_OBJECT_BYTES; // 16 objects, 256 blocks
const BLOCKS = 64; // the workload's hot set: blocks spread over every object
const ORPHAN_GRACE_MS = 2000;

interface RunResult {
  ops: number;
  violations: string[];
  log: string[];
  /** WAL commits started while an earlier one was in flight, summed over the OSDs still running. */
  walCommitsOverlapped: number;
  /** WAL gather turns (WalOptions.gatherTurn) over every incarnation of every OSD. */
  walGatherTurns: number;
  /** Page-cache hints the OSDs' engines gave their current devices (a power cut replaces a device). */
  prefetchWrites: number;
  /** Snapshot installs the OSDs' current incarnations began. */
  snapshotInstalls: number;
}

async function runSeed(seed: number, opts: { faults: boolean; durationMs: number }): Promise<RunResult> {
  const prng = new Prng(seed);
  const c = new SimCluster(seed, {
    osds: 4,
    volumeBytes: VOLUME_BYTES,
    pgCount: 8,
    osdConfig: {
      orphanGraceMs: ORPHAN_GRACE_MS,
      checkpointBytes: 256 * 1024,
      keepEntries: 64,
      keepBytes: 32 * 1024,
      // A snapshot is sent one object per chunk at 4 chunks a second, so faults
      // land between the chunks of an install (its data dropped, the rest to come).
      snapshotChunkBytes: SIM_OBJECT_BYTES,
      recoveryBytesPerSec: 4 * SIM_OBJECT_BYTES,
    },
  });
  await c.start();
  const vol = c.map.volumes[0];
  const ref = { id: vol.id, poolId: vol.poolId };
  const blockOffset = (b: number) => (b * 4 + (b % 4)) * BLOCK_BYTES; // 64 blocks over 16 objects
  const hist = Array.from({ length: BLOCKS }, () => new BlockHistory());
  const violations: string[] = [];
  let nextTag = 1;
  let ops = 0;
  let inFlight = 0;
  let stopAt = opts.durationMs;
  const busy = new Set<number>();

  const doOp = async () => {
    const b = prng.int(BLOCKS);
    if (busy.has(b)) return;
    busy.add(b);
    inFlight++;
    ops++;
    try {
      if (prng.chance(0.6)) {
        const tag = nextTag++;
        const buf = Buffer.alloc(BLOCK_BYTES);
        fillTagBlock(buf, b, tag);
        const w = hist[b].addWrite(tag, c.sched.nowMs);
        try {
          await c.client.write(ref, blockOffset(b), buf);
          w.ackMs = c.sched.nowMs;
        } catch {
          // outcome unknown: stays concurrent with everything after it
        }
      } else {
        const invokeMs = c.sched.nowMs;
        const out = Buffer.alloc(BLOCK_BYTES);
        try {
          await c.client.read(ref, blockOffset(b), BLOCK_BYTES, out);
        } catch {
          return;
        }
        const tag = readTagBlock(out, b);
        const v = tag < 0 ? `block ${b}: torn or garbage content` : hist[b].checkRead({ tag, invokeMs, returnMs: c.sched.nowMs });
        if (v) violations.push(`t=${c.sched.nowMs.toFixed(1)}ms ${v}`);
      }
    } finally {
      inFlight--;
      busy.delete(b);
    }
  };

  // Workload: keep up to 6 ops in flight until stopAt.
  const pump = () => {
    if (c.sched.nowMs >= stopAt) return;
    while (inFlight < 6) void doOp();
    c.sched.at(c.sched.nowMs + 1 + prng.float() * 3, pump);
  };
  c.sched.at(100, pump);

  // Faults.
  const ids = [...c.osds.keys()];
  let outDone = false;
  if (opts.faults) {
    c.net.faults.dropRate = prng.float() * 0.03;
    c.net.faults.delayMsMax = 0.5 + prng.float() * 4;
    const schedule = (atMs: number, fn: () => void | Promise<void>) => c.sched.at(atMs, () => void fn());
    let t = 300;
    while (t < opts.durationMs - 500) {
      const id = ids[prng.int(ids.length)];
      const kind = prng.int(10);
      const lenMs = 200 + prng.int(1500);
      if (kind < 5) {
        schedule(t, () => {
          if ([...c.osds.keys()].every((o) => o === id || c.isUp(o)) && c.isUp(id)) c.crash(id);
        });
        schedule(t + lenMs, () => (c.isUp(id) ? undefined : c.restart(id)));
      } else if (kind < 8) {
        schedule(t, () => {
          c.log.push(`${c.sched.nowMs.toFixed(1)} isolate osd.${id}`);
          c.net.isolate(id);
        });
        schedule(t + lenMs, () => c.net.heal());
      } else if (!outDone) {
        outDone = true;
        schedule(t, () => {
          c.log.push(`${c.sched.nowMs.toFixed(1)} operator out osd.${id}`);
          c.publish(operatorOut(c.map, id));
        });
      }
      t += lenMs + prng.int(400);
    }
  }

  await c.sched.runUntil(opts.durationMs);
  // Heal: everything up, network clean, then let the cluster settle and the workload drain.
  stopAt = 0;
  c.net.heal();
  c.net.faults.dropRate = 0;
  for (const id of ids) if (!c.isUp(id)) await c.restart(id);
  await c.sched.runUntil(c.sched.nowMs + 30_000, () => inFlight === 0);
  assert.equal(inFlight, 0, `seed ${seed}: workload did not drain`);
  // Recovery finishes (copies are throttled: a few seconds after the faults),
  // then the grace for replicas that left their PG passes.
  const pool0 = c.map.pools[0];
  const settled = () => {
    for (let pg = 0; pg < pool0.pgCount; pg++) {
      const acting = c.map.pgs[String(pool0.id)][pg].osds;
      const l = acting.map((id) => c.osds.get(id)?.core?.replica(pool0.id, pg)).find((r) => r?.isLeader);
      if (!l || l.node.conf.learners.length > 0 || l.sendingSnapshotTo.size > 0 || l.node.conf.voters.length !== acting.length || !acting.every((id) => l.node.conf.voters.includes(id))) return false;
    }
    return true;
  };
  await c.sched.runUntil(c.sched.nowMs + 20_000, settled);
  await c.sched.runUntil(c.sched.nowMs + 3_000);

  // Final reads: every block, through the client.
  for (let b = 0; b < BLOCKS; b++) {
    const out = Buffer.alloc(BLOCK_BYTES);
    const invokeMs = c.sched.nowMs;
    const p = c.client.read(ref, blockOffset(b), BLOCK_BYTES, out);
    let err: unknown = null;
    let done = false;
    p.then(
      () => (done = true),
      (e) => {
        err = e;
        done = true;
      },
    );
    await c.sched.runUntil(c.sched.nowMs + 30_000, () => done);
    if (err) {
      violations.push(`final read of block ${b} failed: ${(err as Error).message}`);
      continue;
    }
    const tag = readTagBlock(out, b);
    const v = tag < 0 ? `final: block ${b} torn or garbage` : hist[b].checkRead({ tag, invokeMs, returnMs: c.sched.nowMs });
    if (v) violations.push(`final: block ${b}: ${v}`);
  }

  // Replica agreement: every OSD in a PG's acting set that has applied the leader's
  // commit holds the same bytes for every workload block.
  const pool = c.map.pools[0];
  for (let b = 0; b < BLOCKS; b++) {
    const off = blockOffset(b);
    const pg = objectToPg(pool.id, vol.id, Math.floor(off / SIM_OBJECT_BYTES), pool.pgCount);
    const acting = c.map.pgs[String(pool.id)][pg].osds;
    const leader = acting.map((id) => c.osds.get(id)?.core?.replica(pool.id, pg)).find((r) => r?.isLeader);
    if (!leader) {
      violations.push(`PG ${pg} has no leader at the end`);
      continue;
    }
    const want = Buffer.alloc(BLOCK_BYTES);
    const leaderOsd = c.osds.get(leader.node.id);
    await leaderOsd?.store?.read(vol.id, off, BLOCK_BYTES, want, 0);
    for (const id of acting) {
      const r = c.osds.get(id)?.core?.replica(pool.id, pg);
      if (!r || r.apply.doneIndex < leader.node.commit) continue;
      const got = Buffer.alloc(BLOCK_BYTES);
      await c.osds.get(id)?.store?.read(vol.id, off, BLOCK_BYTES, got, 0);
      if (!got.equals(want)) violations.push(`PG ${pg} block ${b}: osd.${id} differs from leader osd.${leader.node.id}`);
    }
  }
  // Replicas left behind: a PG replica outside its acting set is deleted once the
  // grace has passed with nobody asking for its vote, also when it missed its own
  // removal while down or cut off (it learns it from a member's "removed" notice).
  for (const o of c.osds.values()) {
    for (let pg = 0; pg < pool.pgCount; pg++) {
      const r = o.core?.replica(pool.id, pg);
      if (!r || c.map.pgs[String(pool.id)][pg].osds.includes(o.id)) continue;
      if (c.sched.nowMs - r.orphanSinceMs > ORPHAN_GRACE_MS + 1000) {
        violations.push(`osd.${o.id} still holds PG ${pg} ${(c.sched.nowMs - r.orphanSinceMs).toFixed(0)} ms after leaving its acting set (${r.node.role}, member ${r.node.isMember})`);
      }
    }
  }
  // The monitor's "repairing" health check counts what the OSDs report.
  for (const o of c.osds.values()) {
    if (!o.core) continue;
    let repairing = 0;
    for (let pg = 0; pg < pool.pgCount; pg++) if (o.core.replica(pool.id, pg)?.node.repairing) repairing++;
    const reported = o.core.report().repairingReplicas;
    if (reported !== repairing) violations.push(`osd.${o.id} reports ${reported} repairing replicas, holds ${repairing}`);
  }
  violations.push(...c.fatalErrors().map((f) => `fatal: ${f}`));
  if (violations.length > 0) {
    // Diagnosis: every replica of every PG (role, term, log, apply, install state).
    for (const o of c.osds.values()) {
      for (let pg = 0; pg < pool.pgCount; pg++) {
        const r = o.core?.replica(pool.id, pg);
        if (!r) continue;
        const n = r.node;
        c.log.push(
          `end: osd.${o.id} PG ${pg}: ${n.role} term ${n.term} leader ${n.leaderId} commit ${n.commit} last ${n.lastIndex} snap ${n.snapshotMeta.index} ` +
            `done ${r.apply.doneIndex} conf ${JSON.stringify(n.conf)} installing ${r.installingTransfer} damaged ${r.damage ? 'yes' : 'no'} awaitingWal ${r.awaitingWal}`,
        );
      }
    }
  }
  let walCommitsOverlapped = 0;
  let walGatherTurns = 0;
  let prefetchWrites = 0;
  let snapshotInstalls = 0;
  for (const o of c.osds.values()) {
    snapshotInstalls += o.core?.counters.snapshotInstalls ?? 0;
    prefetchWrites += o.device.prefetchWrites;
    walCommitsOverlapped += o.core?.counters.walCommitsOverlapped ?? 0;
    walGatherTurns += o.walGatherTurns + (o.wal?.stats.gatherTurns ?? 0);
  }
  c.stop();
  return { ops, violations, log: c.log, walCommitsOverlapped, walGatherTurns, prefetchWrites, snapshotInstalls };
}

test('sim: a healthy 4-OSD cluster serves the register workload (smoke)', async () => {
  const r = await runSeed(1, { faults: false, durationMs: 2000 });
  assert.deepEqual(r.violations, []);
  assert.ok(r.ops > 100, `only ${r.ops} ops`);
  // fdatasync takes virtual time here, so passes overlap their WAL commits (the pipelined loop is exercised).
  assert.ok(r.walCommitsOverlapped > 0, 'no pass overlapped a WAL commit in flight');
  // Records arrive while a batch syncs, so the WAL's gather turn (as in the daemon) is taken.
  assert.ok(r.walGatherTurns > 0, 'the WAL never took a gather turn');
  // Entries being appended have their engine pages advised before they are applied (osd.ts, page-cache.ts).
  assert.ok(r.prefetchWrites > 0, 'no write was advised to its device before apply');
});

test('sim: seeded faults (drops, reordering, crashes with torn writes, partitions, OSD out) lose no acknowledged write and leave no replica behind', async () => {
  const envSeed = process.env.TESSERA_SEED;
  // Seeds outside the default range that once failed run too (reproducers).
  const REGRESSION_SEEDS = [1215, 1958];
  const range = Array.from({ length: Number(process.env.SIM_SEEDS ?? 200) }, (_, i) => 1000 + i);
  const seeds = envSeed ? [Number(envSeed) >>> 0] : [...range, ...REGRESSION_SEEDS.filter((s) => !range.includes(s))];
  let totalOps = 0;
  let gatherTurns = 0;
  let installs = 0;
  for (const seed of seeds) {
    const r = await runSeed(seed, { faults: true, durationMs: 2500 });
    totalOps += r.ops;
    gatherTurns += r.walGatherTurns;
    installs += r.snapshotInstalls;
    if (r.violations.length > 0) {
      assert.fail(`seed ${seed} (replay: TESSERA_SEED=${seed}): ${r.violations.slice(0, 5).join('; ')}\n--- log ---\n${r.log.slice(-80).join('\n')}`);
    }
  }
  console.log(`sim: ${seeds.length} seeds, ${totalOps} ops checked, ${gatherTurns} WAL gather turns, ${installs} snapshot installs`);
  assert.ok(envSeed || gatherTurns > 0, 'the busy-log path of the WAL (gather turn) never ran under faults');
  assert.ok(envSeed || installs > 0, 'no snapshot was installed under faults');
});

test('sim: entries a follower keeps do not pin the frames they arrived in (rpc/raft-codec.ts ownedEntryData)', async () => {
  // The simulated network delivers raft batches through the real codec into memory laid out
  // as the RPC layer's (cluster.ts frameOf): a 4 KiB entry decoded as a view into a 256 KiB
  // slab would keep the whole slab alive for as long as the log keeps the entry (a rarely
  // written PG keeps its last 64+ entries for minutes, each from a different frame).
  const c = new SimCluster(7, { osds: 3, volumeBytes: VOLUME_BYTES, pgCount: 8, osdConfig: {} });
  await c.start();
  const vol = c.map.volumes[0];
  const ref = { id: vol.id, poolId: vol.poolId };
  const pool = c.map.pools[0];
  let acked = 0;
  c.sched.at(100, async () => {
    for (let b = 0; b < 64; b++) {
      const buf = Buffer.alloc(BLOCK_BYTES);
      fillTagBlock(buf, b, b + 1);
      await c.client.write(ref, b * BLOCK_BYTES * 4, buf);
      acked++;
    }
  });
  await c.sched.runUntil(60_000, () => acked === 64);
  assert.equal(acked, 64, 'the writes did not finish');
  let kept = 0;
  const pinning: string[] = [];
  for (const o of c.osds.values()) {
    for (let pg = 0; pg < pool.pgCount; pg++) {
      const r = o.core?.replica(pool.id, pg);
      if (!r || r.isLeader) continue;
      const log = r.node.log;
      for (let i = log.firstIndex(); i <= log.lastIndex(); i++) {
        const d = log.entryAt(i)!.data;
        if (d.length < 1024) continue; // no-op and conf entries
        kept++;
        if (d.buffer.byteLength > 2 * d.length + 4096) pinning.push(`osd.${o.id} PG ${pg} entry ${i}: ${d.length} bytes in a buffer of ${d.buffer.byteLength}`);
      }
    }
  }
  assert.ok(kept >= 64, `followers keep only ${kept} data entries`);
  assert.deepEqual(pinning.slice(0, 5), []);
  assert.deepEqual(c.fatalErrors(), []);
  c.stop();
});
