// Widening narrowed containers (issue 4 part 4, docs/raid.md "Variable stripe
// width"): a RAID5 pool asking for 4+1 on three members gets 2+1 containers;
// after two members are added, widen() moves their extents into 4+1
// containers while writes go on, frees the narrow ones, and the pool then
// holds the same data with less parity (scrub clean, same after a reopen). A
// seeded crash test cuts power at random points of a widen with writes in
// flight: every sector reads as its flushed value or a later write, parity
// matches, and a second widen finishes the job. Seeds print and replay
// (TESSERA_SEED; TESSERA_WIDEN_CRASH_POINTS runs to change the count).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PoolDevice } from './pool-device.js';
import { SimDevice } from '../device/sim-device.js';
import { Prng, seedFromEnv } from '../stdx/prng.js';

const SEED = seedFromEnv();
const POINTS = Number(process.env.TESSERA_WIDEN_CRASH_POINTS ?? 100);
console.log(`widen.test seed: TESSERA_SEED=${SEED}, ${POINTS} crash points`);
const KiB = 1024;
const MiB = 1024 * KiB;
const SECTOR = 512;
const CHUNK = 64 * KiB;
let uuids = 0;
const newUuid = () => (++uuids).toString(16).padStart(32, '0');

function sim(i: number, seed: number): SimDevice {
  const d = new SimDevice(4 * MiB, new Prng(seed * 97 + i), `m${i}`, `sim://m${i}`);
  d.faults.jitterTurns = 3;
  return d;
}

const turns = async (): Promise<void> => {
  for (let i = 0; i < 2; i++) await new Promise((r) => setImmediate(r));
};

/** A raid5 pool asking for 4+1 on three members (so 2+1), `bytes` written, then two members added. */
async function narrowPool(seed: number, bytes: number): Promise<{ devs: SimDevice[]; pool: PoolDevice; model: Buffer }> {
  const devs = [0, 1, 2].map((i) => sim(i, seed));
  await PoolDevice.format(devs, { protection: 'raid5', dataCount: 4, stripBytes: 4 * KiB, chunkDataBytes: CHUNK, journalBytes: 512 * KiB, dataZeroed: true, newUuid });
  const pool = await PoolDevice.open(devs, { rng: new Prng(seed), newUuid, sleep: turns });
  const model = Buffer.alloc(bytes);
  new Prng(seed ^ 0x77).fill(model);
  for (let off = 0; off < bytes; off += 96 * KiB) await pool.write(model.subarray(off, Math.min(bytes, off + 96 * KiB)), off);
  for (const i of [3, 4]) {
    const d = sim(i, seed);
    devs.push(d);
    await pool.addMember(d);
  }
  await pool.flush();
  return { devs, pool, model };
}

test('widen: 2+1 containers become 4+1 while writes go on; same data, less parity, scrub clean, same after reopen', async () => {
  const { devs, pool, model } = await narrowPool(SEED, 1 * MiB); // 16 extents: 8 containers of 2+1
  assert.deepEqual(pool.containerShapes(), { '2+1': 8 });
  const usedBefore = pool.capacity().usedChunks;
  const rng = new Prng(SEED ^ 1);
  let stop = false;
  let writes = 0;
  const writer = (async () => {
    while (!stop) {
      const len = SECTOR * (1 + rng.int(24));
      const off = rng.int((model.length - len) / SECTOR + 1) * SECTOR;
      const b = Buffer.alloc(len);
      rng.fill(b);
      await pool.write(b, off);
      b.copy(model, off);
      writes++;
      const out = Buffer.alloc(len);
      await pool.read(out, off);
      assert.ok(out.equals(b), `a read after a write during the widen saw other data at ${off}`);
      await new Promise((r) => setImmediate(r));
    }
  })();
  let p;
  try {
    p = await pool.widen({ busyShare: 0.5 });
  } finally {
    stop = true;
    await writer;
  }
  assert.ok(writes > 10, `only ${writes} writes ran during the widen`);
  assert.deepEqual([p.containersDone, p.containersTotal, p.noRoom], [4, 4, 0]);
  assert.deepEqual(pool.containerShapes(), { '4+1': 4 });
  assert.equal(pool.narrowedContainers(), 0);
  assert.equal(pool.capacity().usedChunks, usedBefore - 4, '24 chunks (8 x 2+1) became 20 (4 x 4+1)');
  const scrub = await pool.scrub();
  assert.deepEqual([scrub.unverifiable, scrub.mismatches.length], [0, 0]);
  const out = Buffer.alloc(model.length);
  await pool.read(out, 0);
  assert.ok(out.equals(model));
  await pool.flush();
  await pool.close();
  for (const d of devs) d.reopen();
  const again = await PoolDevice.open(devs, { rng: new Prng(SEED), newUuid });
  assert.deepEqual(again.containerShapes(), { '4+1': 4 });
  assert.equal(again.capacity().usedChunks, usedBefore - 4, 'the freed narrow chunks stay free after a reopen');
  await again.read(out, 0);
  assert.ok(out.equals(model));
  await again.failMember(1);
  await again.read(out, 0);
  assert.ok(out.equals(model), 'the wide containers survive a member failure');
  await again.close();
});

test('widen with too few members changes nothing; a rebuild and a widen do not run together', async () => {
  const devs = [0, 1, 2].map((i) => sim(i, SEED ^ 5));
  await PoolDevice.format(devs, { protection: 'raid5', dataCount: 4, stripBytes: 4 * KiB, chunkDataBytes: CHUNK, journalBytes: 512 * KiB, dataZeroed: true, newUuid });
  const pool = await PoolDevice.open(devs, { rng: new Prng(SEED), newUuid, sleep: turns });
  await pool.write(Buffer.alloc(256 * KiB, 9), 0);
  const p = await pool.widen();
  assert.ok(p.noRoom > 0);
  assert.deepEqual(pool.containerShapes(), { '2+1': 2 });
  const { pool: big } = await narrowPool(SEED ^ 6, 1 * MiB);
  const running = big.widen();
  await assert.rejects(big.rebuild(), (e: Error & { code?: string }) => e.code === 'ERR_BUSY');
  await running;
});

/** Cuts that hit a widen before it finished: the test says how many. */
let midWiden = 0;

async function crashPoint(seed: number): Promise<void> {
  const rng = new Prng(seed);
  const bytes = (4 + rng.int(9)) * CHUNK;
  const { devs: before, pool, model } = await narrowPool(seed, bytes);
  const usedBefore = pool.capacity().usedChunks;
  const durable = Buffer.from(model);
  const candidates = new Map<number, Buffer[]>();
  const inFlight: Promise<unknown>[] = [pool.widen().catch(() => undefined)];
  for (let i = 0; i < rng.int(6); i++) {
    const len = SECTOR * (1 + rng.int(16));
    const off = rng.int((bytes - len) / SECTOR + 1) * SECTOR;
    const data = Buffer.alloc(len);
    rng.fill(data);
    for (let s = 0; s < len; s += SECTOR) {
      const sector = (off + s) / SECTOR;
      candidates.set(sector, [...(candidates.get(sector) ?? []), data.subarray(s, s + SECTOR)]);
    }
    inFlight.push(pool.write(data, off).catch(() => undefined));
  }
  // Cut once a random share of the widen's bytes has moved, plus a few more turns (mid-copy, mid-claim, mid-free).
  let finished = false;
  void inFlight[0].then(() => (finished = true));
  const share = rng.float() * 0.9;
  const extra = rng.int(60);
  for (let t = 0; !finished; t++) {
    const p = pool.rebuildProgress();
    if (p && p.bytesDone >= share * p.bytesTotal) break;
    await (t % 8 === 0 ? new Promise((r) => setImmediate(r)) : Promise.resolve());
  }
  for (let t = 0; t < extra; t++) await (t % 8 === 0 ? new Promise((r) => setImmediate(r)) : Promise.resolve());
  if (!finished) midWiden++;
  const devs = before.map((d) => d.powerCut().device);
  await Promise.all(inFlight);

  const check = async (p: PoolDevice, when: string): Promise<void> => {
    const out = Buffer.alloc(bytes);
    await p.read(out, 0);
    for (let s = 0; s < bytes / SECTOR; s++) {
      const got = out.subarray(s * SECTOR, (s + 1) * SECTOR);
      if (got.equals(durable.subarray(s * SECTOR, (s + 1) * SECTOR))) continue;
      assert.ok((candidates.get(s) ?? []).some((c) => got.equals(c)), `seed ${seed} ${when}: sector ${s} reads as neither its flushed value nor a later write`);
    }
    const scrub = await p.scrub();
    assert.deepEqual(scrub.mismatches, [], `seed ${seed} ${when}: rows whose parity does not match`);
  };
  const reopened = await PoolDevice.open(devs, { rng: new Prng(seed + 1), newUuid, sleep: turns });
  await check(reopened, 'after the cut');
  const used = reopened.capacity().usedChunks;
  const shapes = reopened.containerShapes();
  const extents = Object.entries(shapes).reduce((a, [shape, n]) => a + n * Number(shape.split('+')[0]), 0);
  assert.ok(used <= 3 * 8 * 2 + 5 * 8, `seed ${seed}: ${used} chunks in use after the cut: chunks leaked (${JSON.stringify(shapes)}, ${extents} slots)`);
  await reopened.widen();
  const third = await reopened.widen();
  assert.equal(third.bytesDone, 0, `seed ${seed}: a second widen finishes the job (${JSON.stringify(reopened.containerShapes())})`);
  assert.ok(reopened.capacity().usedChunks <= usedBefore, `seed ${seed}: ${reopened.capacity().usedChunks} chunks in use after widening, ${usedBefore} before`);
  await check(reopened, 'after a second widen');
  await reopened.close();
}

test(`widen survives power cuts: ${POINTS} cut points, reopened and checked`, async () => {
  for (let i = 0; i < POINTS; i++) {
    const seed = SEED + i;
    try {
      await crashPoint(seed);
    } catch (err) {
      throw new Error(`widen crash point failed; replay with TESSERA_SEED=${seed} TESSERA_WIDEN_CRASH_POINTS=1: ${(err as Error).message}`, { cause: err });
    }
  }
  console.log(`widen crash points: ${midWiden} of ${POINTS} cut a widen midway`);
  if (POINTS >= 50) assert.ok(midWiden >= POINTS / 2, `only ${midWiden} of ${POINTS} cuts landed mid-widen: the test would miss what it is for`);
});

// Review of the widen (session 6): each failed before its fix.

test('chunks freed by a widen read as zeros when reused, also after a reopen (dataZeroed pools skipped zeroing them)', async () => {
  const { devs, pool } = await narrowPool(SEED ^ 11, 1 * MiB);
  await pool.widen();
  // New containers now land on chunks the narrow containers held: unwritten parts must read as zeros.
  const probe = async (p: PoolDevice, at: number): Promise<void> => {
    await p.write(Buffer.alloc(4 * KiB, 0xee), at);
    const out = Buffer.alloc(CHUNK);
    await p.read(out, at + 4 * KiB - (at % CHUNK) + CHUNK); // an untouched extent of the same new container
    assert.ok(out.every((b) => b === 0), 'an untouched extent of a new container reads as old data');
    const row = Buffer.alloc(CHUNK - 4 * KiB);
    await p.read(row, at + 4 * KiB);
    assert.ok(row.every((b) => b === 0), 'the rest of a freshly written extent reads as old data');
  };
  await probe(pool, 2 * MiB);
  assert.deepEqual((await pool.scrub()).mismatches, []);
  await pool.flush();
  await pool.close();
  for (const d of devs) d.reopen();
  const again = await PoolDevice.open(devs, { rng: new Prng(SEED), newUuid });
  await probe(again, 2 * MiB + 4 * CHUNK);
  assert.deepEqual((await again.scrub()).mismatches, []);
  await again.close();
});

test('a device whose flush fails while a claim is written is failed; the claim stands or the old copy does (no write lost after reopen)', async () => {
  const { devs, pool, model } = await narrowPool(SEED ^ 12, 1 * MiB);
  devs[4].faults.flushError = true;
  await pool.widen().catch(() => undefined);
  const later = Buffer.alloc(8 * KiB, 0x42);
  await pool.write(later, 100 * KiB);
  later.copy(model, 100 * KiB);
  await pool.flush();
  await pool.close();
  devs[4].faults.flushError = false;
  for (const d of devs) d.reopen();
  const again = await PoolDevice.open(devs, { rng: new Prng(SEED), newUuid });
  const out = Buffer.alloc(model.length);
  await again.read(out, 0);
  assert.ok(out.equals(model), 'a write after the failed claim was lost at reopen');
  await again.close();
});

test('an extent whose rows fail their parity check is not copied (the copy would make the damage permanent)', async () => {
  const { devs, pool } = await narrowPool(SEED ^ 13, 1 * MiB);
  // Scribble a strip of member 0's first chunk: its row's parity no longer matches.
  const first = 1 * MiB; // firstChunkOffset of a 512 KiB journal
  devs[0].scribble(first + 4 * KiB + 8 * KiB, 4 * KiB);
  const p = await pool.widen();
  assert.ok(p.unrecoverable >= 1, JSON.stringify(p));
  assert.ok((await pool.scrub()).mismatches.length > 0, 'the damage is still visible to a scrub where the parity can repair it');
});
