// Media faults under the engine on a pool (issue 4 part 8): silent bit flips
// and scribbles on one member are caught by the engine's block checksums and
// served from redundancy (another mirror copy, or a reconstruction from
// parity), then written back: 0 bad bytes served, no ERR_CHECKSUM, the bad
// strips repaired (a scrub is clean and a second read needs no repair).
// Seeds print and replay (TESSERA_SEED).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PoolDevice, firstChunkOffset } from './pool-device.js';
import type { Protection } from './records.js';
import { RECORD_BYTES } from './records.js';
import { SimDevice } from '../device/sim-device.js';
import { LocalEngine } from '../engine/engine.js';
import { BufferPool } from '../stdx/buffer-pool.js';
import { Prng, seedFromEnv } from '../stdx/prng.js';

const SEED = seedFromEnv();
console.log(`media.test seed: TESSERA_SEED=${SEED}`);
const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK = 64 * KiB;
const JOURNAL = 512 * KiB;
let uuids = 0;
const newUuid = () => (++uuids).toString(16).padStart(32, '0');
const buffers = new BufferPool(32 * MiB);

async function engineOnPool(protection: Protection, members: number, seed: number) {
  const devs = Array.from({ length: members }, (_, i) => new SimDevice(8 * MiB, new Prng(seed + i), `m${i}`, `sim://m${i}`));
  await PoolDevice.format(devs, { protection, dataCount: 4, stripBytes: 4 * KiB, chunkDataBytes: CHUNK, journalBytes: JOURNAL, dataZeroed: true, newUuid });
  const pool = await PoolDevice.open(devs, { rng: new Prng(seed), newUuid });
  await LocalEngine.format(pool, { objectSizeBytes: 64 * KiB, dataZeroed: true, bufferPool: buffers });
  const engine = await LocalEngine.open(pool, { bufferPool: buffers });
  await engine.create('vol', 8 * MiB);
  return { devs, pool, engine, vol: engine.open('vol') };
}

/** Flips `count` random bits in the chunk data regions of one member. */
function damage(dev: SimDevice, rng: Prng, count: number, scribble: boolean): void {
  const first = firstChunkOffset(JOURNAL);
  const chunks = Math.floor((dev.sizeBytes - first) / (RECORD_BYTES + CHUNK));
  for (let i = 0; i < count; i++) {
    const at = first + rng.int(chunks) * (RECORD_BYTES + CHUNK) + RECORD_BYTES + rng.int(CHUNK);
    if (scribble) dev.scribble(at - (at % 512), 512);
    else dev.flipBit(at, rng.int(8));
  }
}

for (const [protection, members] of [['raid6', 6], ['raid5', 5], ['mirror2', 3]] as const) {
  test(`${protection}: bit flips and scribbles on one member are served from redundancy and repaired; 0 bad bytes`, async () => {
    const seed = SEED + members;
    const rng = new Prng(seed);
    const { devs, pool, engine, vol } = await engineOnPool(protection, members, seed);
    const data = Buffer.alloc(3 * MiB);
    rng.fill(data);
    await vol.write(0, data, true);
    damage(devs[1], rng, 150, false);
    damage(devs[1], rng, 20, true);
    const out = Buffer.alloc(data.length);
    await vol.read(0, data.length, out, 0);
    assert.ok(out.equals(data), 'bad bytes served');
    const info = engine.devices()[0];
    assert.ok(info.repairedBlocks! > 0, 'no block needed repair: the damage missed the data');
    assert.equal(info.checksumErrors, 0);
    const repaired = info.repairedBlocks;
    const again = Buffer.alloc(data.length);
    await vol.read(0, data.length, again, 0);
    assert.ok(again.equals(data));
    assert.equal(engine.devices()[0].repairedBlocks, repaired, 'the first read repaired the blocks for good');
    // Partial writes read-modify-write damaged blocks too (same repair path).
    damage(devs[1], rng, 50, false);
    const patch = Buffer.alloc(1024, 0xab);
    await vol.write(4096 * 7 + 512, patch, false);
    patch.copy(data, 4096 * 7 + 512);
    await vol.read(0, data.length, out, 0);
    assert.ok(out.equals(data));
    assert.equal(engine.devices()[0].checksumErrors, 0);
    await engine.close();
    void pool;
  });
}

test('damage on more members than the redundancy covers is an error, never wrong data', async () => {
  const seed = SEED ^ 77;
  const { devs, engine, vol } = await engineOnPool('mirror2', 2, seed);
  const data = Buffer.alloc(256 * KiB, 3);
  await vol.write(0, data, true);
  const rng = new Prng(seed);
  // Both copies of every block: a two-member mirror puts each container on the same
  // chunk index of both members, so the same sectors of every chunk are both copies.
  for (const d of devs) {
    const first = firstChunkOffset(JOURNAL);
    const chunks = Math.floor((d.sizeBytes - first) / (RECORD_BYTES + CHUNK));
    for (let c = 0; c < chunks; c++) for (let off = 0; off < CHUNK; off += 4096) d.scribble(first + c * (RECORD_BYTES + CHUNK) + RECORD_BYTES + off + 1024, 512);
  }
  const out = Buffer.alloc(data.length);
  await assert.rejects(vol.read(0, data.length, out, 0), /checksum mismatch/);
  void rng;
  await engine.close();
});
