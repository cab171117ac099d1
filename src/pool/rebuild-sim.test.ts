// Rebuild in virtual time (issue 4 part 8): members are simulated devices with
// a bandwidth limit (each IO occupies its device for length / bandwidth), the
// clock is a SimClock, and a member fails in pools of 4 and 8 devices holding
// the same data. Checked: 8 devices rebuild in at most 0.6 of the time of 4
// (reads and writes spread over every survivor); a pool 10 % full rebuilds in
// at most 0.2 of the time of a full one (only containers that hold data);
// user reads during a rebuild keep at least 70 % of their throughput without one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { BlockDevice } from '../device/device.js';
import { SimDevice } from '../device/sim-device.js';
import { SimClock } from '../client/testing.js';
import { PoolDevice } from './pool-device.js';
import { Prng, seedFromEnv } from '../stdx/prng.js';
import { IoStats } from '../stdx/stats.js';

const SEED = seedFromEnv();
console.log(`rebuild-sim.test seed: TESSERA_SEED=${SEED}`);
const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK = 256 * KiB;
const BANDWIDTH_BYTES_PER_MS = 100 * KiB; // 100 MB/s per device

/** A device that takes length / bandwidth of virtual time per IO, one IO at a time. */
class SlowDevice implements BlockDevice {
  readonly stats = new IoStats();
  private busyUntilMs = 0;
  constructor(
    private readonly inner: SimDevice,
    private readonly clock: SimClock,
  ) {}
  get name() { return this.inner.name; }
  get path() { return this.inner.path; }
  get sizeBytes() { return this.inner.sizeBytes; }
  get sectorBytes() { return this.inner.sectorBytes; }
  get directIo() { return false; }
  private occupy(bytes: number): Promise<void> {
    const start = Math.max(this.clock.nowMs(), this.busyUntilMs);
    this.busyUntilMs = start + bytes / BANDWIDTH_BYTES_PER_MS;
    const wait = this.busyUntilMs - this.clock.nowMs();
    return new Promise((r) => this.clock.setTimer(wait, r));
  }
  async read(buf: Uint8Array, off: number) { await this.occupy(buf.length); await this.inner.read(buf, off); }
  async write(buf: Uint8Array, off: number) { await this.occupy(buf.length); await this.inner.write(buf, off); }
  flush() { return this.inner.flush(); }
  close() { return this.inner.close(); }
}

let uuids = 0;
const newUuid = () => (++uuids).toString(16).padStart(32, '0');

async function poolOf(members: number, seed: number): Promise<{ pool: PoolDevice; clock: SimClock }> {
  const clock = new SimClock();
  const devs = Array.from({ length: members }, (_, i) => new SlowDevice(new SimDevice(24 * MiB, new Prng(seed + i), `m${i}`, `sim://m${i}`), clock));
  await PoolDevice.format(devs, { protection: 'raid5', dataCount: 2, stripBytes: 64 * KiB, chunkDataBytes: CHUNK, journalBytes: 2 * MiB, dataZeroed: true, newUuid });
  const pool = await PoolDevice.open(devs, {
    rng: new Prng(seed),
    newUuid,
    nowMs: () => clock.nowMs(),
    sleep: (ms) => new Promise((r) => clock.setTimer(ms, r)),
  });
  return { pool, clock };
}

async function fillBytes(pool: PoolDevice, bytes: number): Promise<void> {
  const step = 2 * CHUNK; // one container's worth (2 data chunks): full-row writes
  const b = Buffer.alloc(step, 0x3c);
  for (let off = 0; off < bytes; off += step) await pool.write(b.subarray(0, Math.min(step, bytes - off)), off);
}

async function rebuildTimeMs(members: number, dataBytes: number, seed: number): Promise<number> {
  const { pool, clock } = await poolOf(members, seed);
  await fillBytes(pool, dataBytes);
  // Fail the member holding the most chunks: every pool loses a comparable share.
  const busiest = pool.info().members.reduce((a, b) => (b.totalChunks - b.freeChunks > a.totalChunks - a.freeChunks ? b : a));
  await pool.failMember(busiest.index);
  const t0 = clock.nowMs();
  const r = await pool.rebuild();
  assert.equal(r.containersDone, r.containersTotal);
  assert.deepEqual(pool.info().degraded, [0, 0, 0]);
  const t = clock.nowMs() - t0;
  clock.close();
  return t;
}

test('rebuild scales with the members: 8 devices take at most 0.6 of the time of 4 for the same data', async () => {
  const data = 12 * MiB;
  const four = await rebuildTimeMs(4, data, SEED);
  const eight = await rebuildTimeMs(8, data, SEED + 100);
  console.log(`rebuild of ${data / MiB} MiB of data: 4 devices ${four.toFixed(0)} ms, 8 devices ${eight.toFixed(0)} ms (ratio ${(eight / four).toFixed(2)}, virtual time)`);
  assert.ok(eight <= 0.6 * four, `8 devices took ${(eight / four).toFixed(2)} of the time of 4`);
});

test('data-aware: a pool 10 % full rebuilds in at most 0.2 of the time of a full one', async () => {
  const { pool, clock } = await poolOf(8, SEED + 199);
  const capacity = pool.sizeBytes;
  clock.close();
  const step = 2 * CHUNK;
  // Full, less the room the 7 survivors need to take the failed member's chunks.
  const fullBytes = Math.floor((0.85 * capacity) / step) * step;
  const tenthBytes = Math.floor((0.1 * capacity) / step) * step;
  const full = await rebuildTimeMs(8, fullBytes, SEED + 200);
  // A tenth is few containers, so its time varies with where they fall: the mean of three layouts.
  let tenth = 0;
  for (const s of [300, 301, 302]) tenth += (await rebuildTimeMs(8, tenthBytes, SEED + s)) / 3;
  console.log(`rebuild: ${(fullBytes / MiB).toFixed(0)} MiB (85 % full) ${full.toFixed(0)} ms, ${(tenthBytes / MiB).toFixed(0)} MiB (10 %) ${tenth.toFixed(0)} ms (ratio ${(tenth / full).toFixed(2)}, virtual time)`);
  assert.ok(tenth <= 0.2 * full, `10 % full took ${(tenth / full).toFixed(2)} of the time of full`);
});

test('user reads keep at least 70 % of their throughput while a rebuild runs', async () => {
  async function userReadsPerSecond(withRebuild: boolean): Promise<number> {
    const { pool, clock } = await poolOf(6, SEED + 400);
    await fillBytes(pool, 12 * MiB);
    await pool.failMember(0);
    const rng = new Prng(SEED + 401);
    const durationMs = 400;
    const t0 = clock.nowMs();
    let reads = 0;
    const reader = async () => {
      const b = Buffer.alloc(64 * KiB);
      while (clock.nowMs() - t0 < durationMs) {
        await pool.read(b, rng.int((12 * MiB) / (64 * KiB)) * 64 * KiB);
        reads++;
      }
    };
    const rebuilding = withRebuild ? pool.rebuild({ parallel: 4, busyShare: 0.3 }) : Promise.resolve();
    await Promise.all([reader(), reader(), reader(), reader()]);
    const rate = (reads * 1000) / (clock.nowMs() - t0);
    await rebuilding;
    clock.close();
    return rate;
  }
  const alone = await userReadsPerSecond(false);
  const during = await userReadsPerSecond(true);
  console.log(`user 64 KiB reads (degraded pool): ${alone.toFixed(0)}/s alone, ${during.toFixed(0)}/s during the rebuild (${((100 * during) / alone).toFixed(0)} %)`);
  assert.ok(during >= 0.7 * alone, `user reads kept only ${((100 * during) / alone).toFixed(0)} % of their throughput`);
});
