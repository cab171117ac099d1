// Reproducers of pool bugs found in review (session 5); each failed before
// its fix. Small raid5 2+1 pools on simulated members.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PoolDevice, firstChunkOffset } from './pool-device.js';
import { encodeJournalRecord, decodeJournalHeader, decodeJournalPayload, recordBytes } from './journal-format.js';
import type { BlockDevice } from '../device/device.js';
import { SimDevice } from '../device/sim-device.js';
import { Prng } from '../stdx/prng.js';
import { TesseraError } from '../stdx/errors.js';

const KiB = 1024;
const JOURNAL = 256 * KiB;
let u = 0;
const newUuid = () => (++u).toString(16).padStart(32, '0');
const FORMAT = { protection: 'raid5' as const, dataCount: 2, stripBytes: 4 * KiB, chunkDataBytes: 32 * KiB, journalBytes: JOURNAL, dataZeroed: true, newUuid };
const sim = (i: number) => new SimDevice(2 * 1024 * KiB, new Prng(i + 1), `m${i}`, `sim://m${i}`);
const open = (devs: BlockDevice[]) => PoolDevice.open(devs, { rng: new Prng(1), newUuid, sleep: () => Promise.resolve() });

async function readAll(p: PoolDevice, off: number, len: number): Promise<Buffer> {
  const b = Buffer.alloc(len);
  await p.read(b, off);
  return b;
}

test('a rebuild switch cut short (a survivor keeps the old header) does not drop the container at open', async () => {
  const devs = [0, 1, 2, 3].map(sim);
  await PoolDevice.format(devs, FORMAT);
  const p = await open(devs);
  await p.write(Buffer.alloc(64 * KiB, 0xaa), 0);
  await p.flush();
  const hdr = firstChunkOffset(JOURNAL);
  // Members holding a container header in their chunk 0.
  const withHeader: number[] = [];
  for (let i = 0; i < devs.length; i++) {
    const b = Buffer.alloc(4096);
    await devs[i].read(b, hdr);
    if (b.toString('latin1', 0, 8) === 'TSRCONT1') withHeader.push(i);
  }
  const [failIdx, survivor] = withHeader;
  const oldHeader = Buffer.alloc(4096);
  await devs[survivor].read(oldHeader, hdr);
  await p.failMember(failIdx);
  await p.rebuild();
  // As if power was cut before the survivor's new header landed.
  await devs[survivor].write(oldHeader, hdr);
  await devs[survivor].flush();
  const again = await open(devs.filter((_, i) => i !== failIdx));
  assert.ok((await readAll(again, 0, 64 * KiB)).every((x) => x === 0xaa));
});

test('a journal batch that fails leaves no gap in the sequence: later records are replayed', async () => {
  const devs = [0, 1, 2].map(sim);
  await PoolDevice.format(devs, FORMAT);
  const p = await open(devs);
  await p.write(Buffer.alloc(4 * KiB, 1), 0);
  devs[0].faults.writeErrors = [{ offsetBytes: 64 * KiB, lengthBytes: JOURNAL }]; // its journal area
  await assert.rejects(p.write(Buffer.alloc(4 * KiB, 2), 0), (e: unknown) => e instanceof TesseraError && e.code === 'ERR_DEVICE_IO');
  devs[0].faults.writeErrors = [];
  for (let i = 0; i < 5; i++) await p.write(Buffer.alloc(4 * KiB, 3 + i), 0);
  const again = await open(devs);
  assert.equal(again.replayed, 6, 'every durable record since the checkpoint was replayed');
});

test('a checkpoint that fails does not wedge the journal', async () => {
  const devs = [0, 1, 2].map(sim);
  await PoolDevice.format(devs, FORMAT);
  const p = await open(devs);
  let failures = 0;
  for (let i = 0; i < 60; i++) {
    devs[2].faults.flushError = i >= 20 && i < 30;
    try {
      await p.write(Buffer.alloc(4 * KiB, i), (i % 8) * 4 * KiB);
    } catch {
      failures++;
    }
  }
  assert.ok(failures <= 10, `${failures} writes failed; only those while flushes failed may`);
  assert.ok((await readAll(p, 7 * 4 * KiB, 4 * KiB)).every((x) => x === 55), 'the last write to the range (i = 55) is there');
});

test('an extent owned by a narrowed container stays its own after reopen (no overlap)', async () => {
  const devs = [0, 1, 2].map(sim);
  await PoolDevice.format(devs, FORMAT);
  const p = await open(devs);
  await p.failMember(0);
  await p.write(Buffer.alloc(32 * KiB, 0xbb), 32 * KiB); // extent 1: a narrowed 1+1 container
  const d3 = sim(3);
  await p.replaceMember(0, d3);
  await p.write(Buffer.alloc(32 * KiB, 0xaa), 0); // extent 0: a 2+1 container whose range covers extent 1
  await p.flush();
  const again = await open([devs[1], devs[2], d3]);
  assert.ok((await readAll(again, 32 * KiB, 32 * KiB)).every((x) => x === 0xbb));
  assert.ok((await readAll(again, 0, 32 * KiB)).every((x) => x === 0xaa));
});

test('a member missing at open is recorded as failed: when its stale device returns it is not read', async () => {
  const devs = [0, 1, 2].map(sim);
  await PoolDevice.format(devs, FORMAT);
  const p = await open(devs);
  await p.write(Buffer.alloc(64 * KiB, 0xaa), 0);
  await p.flush();
  const degraded = await open([devs[1], devs[2]]);
  await degraded.write(Buffer.alloc(64 * KiB, 0xbb), 0);
  for (let i = 0; i < 40; i++) await degraded.write(Buffer.alloc(64 * KiB, 0xcc), 128 * KiB); // checkpoints pass
  await degraded.flush();
  const all = await open(devs);
  assert.ok((await readAll(all, 0, 64 * KiB)).every((x) => x === 0xbb), 'stale strips of the returned device were read');
  assert.deepEqual((await all.scrub()).mismatches, []);
});

test('a member whose writes keep failing with another error (ERR_LIMIT) is failed, never left with stale parity', async () => {
  const sims = [0, 1, 2].map(sim);
  let refuse = -1;
  const devs: BlockDevice[] = sims.map((s, i) => {
    const d = Object.create(s) as SimDevice;
    d.write = async (b: Uint8Array, o: number) => {
      if (i === refuse && o >= firstChunkOffset(JOURNAL)) throw new TesseraError('ERR_LIMIT', 'too many IOs waiting');
      return s.write(b, o);
    };
    return d;
  });
  await PoolDevice.format(devs, FORMAT);
  const p = await open(devs);
  await p.write(Buffer.alloc(64 * KiB, 0xaa), 0);
  refuse = 1;
  await p.write(Buffer.alloc(KiB, 0xbb), 8 * KiB).catch(() => undefined);
  refuse = -1;
  assert.deepEqual((await p.scrub()).mismatches, []);
  assert.ok(!p.info().members[1].usable, 'the refusing member was taken out of service');
});

test('journal records of a 32-chunk-wide container decode (roleMask >>> 32 is >>> 0 in JavaScript)', () => {
  const byRole = Array.from({ length: 32 }, (_, i) => (i === 31 ? Buffer.alloc(512, 7) : null));
  const u = { containerId: 1, generation: 1, row: 0, stripOffset: 0, lengthBytes: 512, byRole };
  const buf = Buffer.alloc(recordBytes(u));
  const pool = 'ab'.repeat(16);
  encodeJournalRecord(u, 5, pool, buf, 0);
  const h = decodeJournalHeader(buf, 0, pool, buf.length)!;
  const back = decodeJournalPayload(h, buf, 0, 32);
  assert.ok(back && back.byRole[31]!.every((x) => x === 7));
});

test('a pool opens even when a journal record belongs to a container that lost more than its parity', async () => {
  const devs = [0, 1, 2].map(sim);
  await PoolDevice.format(devs, FORMAT);
  const p = await open(devs);
  await p.write(Buffer.alloc(8 * KiB, 0x11), 0); // journaled, not checkpointed
  const alone = await open([devs[0]]); // two of three members gone: raid5 cannot take the record
  assert.ok(alone.unreplayable > 0);
  await assert.rejects(readAll(alone, 0, 8 * KiB), (e: unknown) => e instanceof TesseraError && e.code === 'ERR_DEVICE_IO');
});

// Session 6 review.

test('addMember whose label write fails leaves no member behind (writes kept failing with ERR_CLOSED)', async () => {
  const devs = [0, 1, 2].map(sim);
  await PoolDevice.format(devs, FORMAT);
  const p = await open(devs);
  const bad = sim(7);
  bad.faults.flushError = true;
  await assert.rejects(p.addMember(bad));
  await bad.close();
  assert.equal(p.info().members.length, 3);
  for (let i = 0; i < 16; i++) await p.write(Buffer.alloc(32 * KiB, i), i * 64 * KiB);
  assert.equal((await readAll(p, 15 * 64 * KiB, 4096))[0], 15);
});

test('overlapping label rewrites (a failure recorded while a member is added) leave labels that open', async () => {
  for (let seed = 0; seed < 20; seed++) {
    const devs = [0, 1, 2, 3].map(sim);
    for (const d of devs) d.faults.jitterTurns = 4;
    await PoolDevice.format(devs, FORMAT);
    const p = await open(devs);
    const extra = sim(8 + seed);
    extra.faults.jitterTurns = 4;
    await Promise.all([p.addMember(extra), p.failMember(seed % 4)]);
    await p.close();
    const kept = [...devs, extra];
    for (const d of kept) d.reopen();
    const again = await open(kept);
    assert.equal(again.info().members.length, 5, `seed ${seed}`);
    await again.close();
  }
});

test('a drain may put a chunk back into its own failure domain (another partition of the same disk)', async () => {
  const { openPartitions, writePartitionTable } = await import('../device/partition-device.js');
  const MiB = 1024 * KiB;
  const clock = { nowMs: () => 0, sleep: () => Promise.resolve() };
  const parts = [];
  for (const i of [0, 1, 2]) {
    const d = new SimDevice(8 * MiB, new Prng(40 + i), `disk${i}`, `sim://disk${i}`);
    await writePartitionTable(d, { sequence: 1, entries: [0, 1].map((j) => ({ name: `p${j}`, startBytes: (1 + j * 3) * MiB, sizeBytes: 3 * MiB, iopsLimit: 0, bandwidthBytesPerSec: 0 })) });
    parts.push(...(await openPartitions(d, clock)));
  }
  await PoolDevice.format(parts, FORMAT);
  const p = await open(parts);
  const data = Buffer.alloc(128 * KiB);
  new Prng(3).fill(data);
  await p.write(data, 0);
  // Every 2+1 container spans all three disks; disk0's other partition is the only place left for disk0#p0's chunks.
  const r = await p.removeMember(0);
  assert.equal(r?.noRoom, 0);
  assert.equal(p.chunksOn(0), 0);
  assert.ok((await readAll(p, 0, data.length)).equals(data));
});
