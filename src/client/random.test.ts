// Seeded random IO through ClusterVolume against a mirror buffer, on a fake
// cluster that drops requests and replies, delays replies past the timeout,
// refuses connections, damages replies (ERR_CHECKSUM), fills the transport's
// queue (ERR_LIMIT), answers Busy/NotReady/NotLeader, moves PG leaders and
// acting sets (new PG epochs) while IO runs, lets OSD epochs lag and holds map
// notifications back.
//
// Each round submits a batch of writes, zeroes and trims concurrently (with
// unaligned ranges), plus reads of ranges no write of the batch touches. The
// ordering rule says overlapping writes apply in submission order, so the
// mirror applies the batch in submission order and must equal the cluster's
// bytes after every round. Also checked: every op succeeds (all faults are
// retryable and the deadline is far), reads match, replicas agree, no request
// was misrouted, no two overlapping writes were ever outstanding at once.
// Prints its seed; TESSERA_SEED=N replays a run exactly (virtual time).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Method, Status } from '../osd/proto.js';
import { Prng, seedFromEnv } from '../stdx/prng.js';
import { openTestBed, type FaultAction } from './testing.js';

const KiB = 1024;

test('random concurrent IO with faults matches a mirror', async () => {
  const seed = seedFromEnv();
  console.log(`client random IO: seed ${seed} (TESSERA_SEED=${seed} replays)`);
  const prng = new Prng(seed);
  const objBytes = 8 * KiB;
  const sizeBytes = 48 * objBytes;
  const b = await openTestBed({
    cluster: { objectSizeBytes: objBytes, pgCount: 8, osdCount: 5, latencyMs: () => prng.int(4) },
    client: { requestTimeoutMs: 200, opTimeoutMs: 60_000, inFlightRequestsMax: 8, waitingRequestsMax: 4096, retryBackoffMsMax: 100, seed },
  });
  const { cluster, clock, store } = b;
  try {
    await store.create('r', sizeBytes);
    const vol = store.open('r');
    const volId = cluster.volume('r').id;
    const mirror = Buffer.alloc(sizeBytes);
    const osdIds = [...cluster.osds.keys()];

    cluster.faultHook = (_osd, req): FaultAction | undefined => {
      const x = prng.float();
      if (x < 0.03) return { kind: 'drop' };
      if (x < 0.06) return { kind: 'dropReply' };
      if (x < 0.08) return { kind: 'delayReply', ms: prng.int(400) };
      if (x < 0.09) return { kind: 'refuse' };
      if (x < 0.11) return { kind: 'status', status: Status.Busy };
      if (x < 0.12) return { kind: 'status', status: Status.NotReady };
      if (x < 0.125) return { kind: 'reject', code: 'ERR_CHECKSUM', applied: prng.chance(0.5) };
      if (x < 0.13) return { kind: 'reject', code: 'ERR_LIMIT', applied: false };
      if (x < 0.14 && req.method !== Method.BlockStatus) return { kind: 'status', status: Status.NotLeader, leaderHint: prng.chance(0.5) ? 0 : osdIds[prng.int(osdIds.length)] };
      return undefined;
    };

    // Cluster changes while IO runs.
    const disturb = (): void => {
      const pg = prng.int(cluster.pool().pgCount);
      const x = prng.float();
      if (x < 0.4) {
        const acting = cluster.actingSet(pg);
        cluster.setLeader(pg, acting[prng.int(acting.length)]);
      } else if (x < 0.7) {
        cluster.changeActingSet(pg, shuffledOsds().slice(0, 3));
      } else if (x < 0.8) {
        const acting = cluster.actingSet(pg);
        const osd = acting[prng.int(acting.length)];
        cluster.setOsdEpochView(osd, pg, Math.max(0, cluster.currentMap.pgs['1'][pg].epoch - 1));
        clock.setTimer(prng.int(300), () => cluster.setOsdEpochView(osd, pg, undefined));
      } else {
        // The client's long poll misses a PG move: OSDs answer StaleEpoch until it refreshes.
        cluster.holdMaps();
        for (let k = 0; k < 4; k++) cluster.changeActingSet(prng.int(cluster.pool().pgCount), shuffledOsds().slice(0, 3));
        clock.setTimer(prng.int(500), () => cluster.releaseMaps());
      }
    };
    const shuffledOsds = (): number[] => {
      const out = osdIds.slice();
      for (let i = out.length - 1; i > 0; i--) {
        const j = prng.int(i + 1);
        [out[i], out[j]] = [out[j], out[i]];
      }
      return out;
    };

    const rounds = 150;
    let ops = 0;
    for (let round = 0; round < rounds; round++) {
      const batch: Promise<void>[] = [];
      const written: Array<[number, number]> = [];
      const reads: Array<{ off: number; len: number; out: Buffer; want: Buffer }> = [];
      const n = 1 + prng.int(16);
      const pickRange = (maxLen: number): [number, number] => {
        const aligned = prng.chance(0.6);
        let off = prng.int(sizeBytes);
        let len = 1 + prng.int(maxLen);
        if (aligned) {
          off -= off % 512;
          len = Math.max(512, len - (len % 512));
        }
        len = Math.min(len, sizeBytes - off);
        return [off, len];
      };
      const planned: Array<() => Promise<void>> = [];
      for (let i = 0; i < n; i++) {
        const kind = prng.float();
        if (kind < 0.55) {
          const [off, len] = pickRange(3 * objBytes);
          const data = Buffer.alloc(len);
          prng.fill(data);
          data.copy(mirror, off);
          written.push([off, off + len]);
          planned.push(() => vol.write(off, data, false));
        } else if (kind < 0.75) {
          const [off, len] = pickRange(2 * objBytes);
          const mayTrim = prng.chance(0.5);
          mirror.fill(0, off, off + len);
          written.push([off, off + len]);
          planned.push(() => vol.writeZeroes(off, len, false, mayTrim));
        } else if (kind < 0.85) {
          const [off, len] = pickRange(4 * objBytes);
          mirror.fill(0, off, off + len);
          written.push([off, off + len]);
          planned.push(() => vol.trim(off, len, false));
        } else {
          const [off, len] = pickRange(2 * objBytes);
          reads.push({ off, len, out: Buffer.alloc(len), want: Buffer.alloc(0) });
        }
      }
      // Only reads of ranges no write of this batch touches (a sector of slack around each) are
      // deterministic; the mirror, already updated with the batch, holds their bytes unchanged.
      const stableReads = reads.filter((r) => !written.some(([s, e]) => s < r.off + r.len + 512 && r.off - 512 < e));
      for (const r of stableReads) r.want = Buffer.from(mirror.subarray(r.off, r.off + r.len));
      for (const p of planned) batch.push(p());
      for (const r of stableReads) batch.push(vol.read(r.off, r.len, r.out, 0));
      if (prng.chance(0.5)) clock.setTimer(prng.int(50), disturb);
      ops += batch.length;
      const results = await Promise.allSettled(batch);
      for (const res of results) if (res.status === 'rejected') assert.fail(`round ${round}: an operation failed: ${String(res.reason)} (seed ${seed})`);
      for (const r of stableReads) assert.ok(r.out.equals(r.want), `round ${round}: read ${r.off}+${r.len} differs (seed ${seed})`);
      const stored = cluster.readVolume(volId, sizeBytes);
      if (!stored.equals(mirror)) {
        let i = 0;
        while (stored[i] === mirror[i]) i++;
        assert.fail(`round ${round}: cluster bytes differ from the mirror from byte ${i} (seed ${seed})`);
      }
      if (round % 10 === 9) {
        const out = Buffer.alloc(sizeBytes);
        await vol.read(0, sizeBytes, out, 0);
        assert.ok(out.equals(mirror), `round ${round}: full read differs (seed ${seed})`);
        const ext = await vol.blockStatus(0, sizeBytes);
        assert.equal(ext.reduce((s, e) => s + e.lengthBytes, 0), sizeBytes);
        assert.deepEqual(cluster.replicaMismatches(), [], `seed ${seed}`);
      }
    }
    cluster.releaseMaps();
    assert.equal(cluster.counts.overlapViolations, 0, `overlapping writes outstanding together (seed ${seed})`);
    assert.equal(cluster.counts.misrouted, 0);
    const c = store.client.counters();
    assert.equal(c.pending, 0);
    assert.ok(c.inFlightPeak <= 8);
    console.log(
      `client random IO: ${ops} ops, ${cluster.counts.requests} requests, ${c.retries} retries, ${c.redirects} redirects, ${c.staleEpochs} stale epochs, ${c.transportFailures} transport failures, virtual ${Math.round(clock.nowMs())} ms, map epoch ${cluster.epoch}`,
    );
  } finally {
    await b.close();
  }
});
