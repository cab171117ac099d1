// DEV4 partitions: the table round-trips and is validated (overlaps,
// alignment, names, counts checked before use; the newer valid copy wins);
// a partition is a BlockDevice confined to its range, usable as a pool member;
// its IOPS and bandwidth limits hold under a virtual clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimDevice } from './sim-device.js';
import { MAX_WAITING, PartitionDevice, openPartitions, readPartitionTable, writePartitionTable, type LimitClock } from './partition-device.js';
import { PARTITION_TABLE_BYTES, decodePartitionTable, encodePartitionTable, type PartitionEntry } from './partition-table.js';
import { TokenBucket } from '../stdx/token-bucket.js';
import { Prng } from '../stdx/prng.js';
import { TesseraError } from '../stdx/errors.js';
import { PoolDevice } from '../pool/pool-device.js';

const MiB = 1024 * 1024;

function part(name: string, startMiB: number, sizeMiB: number, over: Partial<PartitionEntry> = {}): PartitionEntry {
  return { name, startBytes: startMiB * MiB, sizeBytes: sizeMiB * MiB, iopsLimit: 0, bandwidthBytesPerSec: 0, ...over };
}

/** Virtual time: sleep advances the clock. */
function virtualClock(): LimitClock & { t: number } {
  const c = {
    t: 0,
    nowMs: () => c.t,
    sleep: async (ms: number) => {
      c.t += ms;
    },
  };
  return c;
}

test('partition table: round trip, newer copy wins, every bad table refused with a reason', async () => {
  const dev = new SimDevice(64 * MiB, new Prng(1));
  const entries = [part('a', 1, 16, { iopsLimit: 500 }), part('b', 17, 47, { bandwidthBytesPerSec: 50 * MiB })];
  await writePartitionTable(dev, { sequence: 1, entries });
  assert.deepEqual((await readPartitionTable(dev)).entries, entries);
  await writePartitionTable(dev, { sequence: 2, entries: entries.slice(0, 1) });
  assert.equal((await readPartitionTable(dev)).entries.length, 1);
  const b = Buffer.alloc(PARTITION_TABLE_BYTES);
  encodePartitionTable({ sequence: 1, entries }, 64 * MiB, b);
  b[100] ^= 1;
  assert.equal(decodePartitionTable(b, 64 * MiB), 'bad checksum');
  encodePartitionTable({ sequence: 1, entries }, 64 * MiB, b);
  assert.match(decodePartitionTable(b, 32 * MiB) as string, /written for a 67108864-byte device/);
  const invalid: [PartitionEntry[], RegExp][] = [
    [[part('a', 1, 16), part('b', 10, 8)], /overlap/],
    [[part('a', 0, 16)], /multiples of 1 MiB, starting at 1 MiB/],
    [[{ ...part('a', 1, 1), sizeBytes: MiB + 512 }], /multiples of 1 MiB/],
    [[part('a', 1, 70)], /ends past the device/],
    [[part('a', 1, 1), part('a', 2, 1)], /two partitions are named a/],
    [[part('bad/name', 1, 1)], /partition name/],
    [Array.from({ length: 33 }, (_, i) => part(`p${i}`, 1 + i, 1)), /at most 32/],
  ];
  for (const [es, re] of invalid) {
    assert.throws(() => encodePartitionTable({ sequence: 1, entries: es }, 64 * MiB, b), (e: unknown) => e instanceof TesseraError && e.code === 'ERR_INVALID' && re.test(e.message), String(re));
  }
  await assert.rejects(readPartitionTable(new SimDevice(8 * MiB, new Prng(2))), /no valid partition table \(bad magic, bad magic\)/);
});

test('a partition is confined to its range and maps offsets onto the parent', async () => {
  const dev = new SimDevice(8 * MiB, new Prng(3));
  await writePartitionTable(dev, { sequence: 1, entries: [part('a', 1, 2), part('b', 3, 5)] });
  const [a, b] = await openPartitions(dev, virtualClock());
  assert.equal(b.sizeBytes, 5 * MiB);
  await b.write(Buffer.alloc(512, 9), 0);
  const raw = Buffer.alloc(512);
  await dev.read(raw, 3 * MiB);
  assert.equal(raw[0], 9);
  await assert.rejects(a.write(Buffer.alloc(512), 2 * MiB), (e: unknown) => e instanceof TesseraError && e.code === 'ERR_RANGE');
  await assert.rejects(a.read(Buffer.alloc(1024), 2 * MiB - 512), (e: unknown) => e instanceof TesseraError && e.code === 'ERR_RANGE');
});

test('IOPS and bandwidth limits hold (virtual clock), in arrival order', async () => {
  const dev = new SimDevice(8 * MiB, new Prng(4));
  const clock = virtualClock();
  const iops = new PartitionDevice(dev, part('i', 1, 2, { iopsLimit: 1000 }), clock);
  for (let i = 0; i < 2000; i++) await iops.write(Buffer.alloc(512), (i % 100) * 512);
  // 2000 IOs at 1000/s: about 2 s, less the initial burst of 100.
  assert.ok(clock.t >= 1850 && clock.t <= 2000, `2000 IOs took ${clock.t} ms of virtual time`);
  clock.t = 0;
  const bw = new PartitionDevice(dev, part('b', 3, 5, { bandwidthBytesPerSec: 10 * MiB }), clock);
  for (let i = 0; i < 40; i++) await bw.read(Buffer.alloc(MiB), 0);
  assert.ok(clock.t >= 3800 && clock.t <= 4000, `40 MiB at 10 MiB/s took ${clock.t} ms`);
  const unlimited = new PartitionDevice(dev, part('u', 3, 5), clock);
  const before = clock.t;
  for (let i = 0; i < 100; i++) await unlimited.write(Buffer.alloc(4096), 0);
  assert.equal(clock.t, before);
});

test('beyond MAX_WAITING queued IOs a partition refuses with ERR_LIMIT, without spending tokens', async () => {
  const dev = new SimDevice(8 * MiB, new Prng(7));
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const clock = { t: 0, nowMs: () => 0, sleep: () => gate };
  const p = new PartitionDevice(dev, part('q', 1, 2, { iopsLimit: 10 }), clock);
  const waiting = Array.from({ length: MAX_WAITING + 1 }, () => p.write(Buffer.alloc(512), 0).then(() => 'ok', (e: TesseraError) => e.code));
  await new Promise((r) => setImmediate(r));
  await assert.rejects(p.write(Buffer.alloc(512), 0), (e: unknown) => e instanceof TesseraError && e.code === 'ERR_LIMIT');
  release();
  const results = await Promise.all(waiting);
  assert.equal(results.filter((r) => r === 'ok').length, MAX_WAITING + 1, 'the burst IO and every waiting IO completed');
});

test('token bucket: burst, then the rate; debt keeps arrival order', () => {
  const b = new TokenBucket(100, 10);
  for (let i = 0; i < 10; i++) assert.equal(b.take(1, 0), 0);
  assert.equal(b.take(1, 0), 10); // 1 token short at 100/s
  assert.equal(b.take(1, 0), 20); // the next waits behind it
  assert.equal(b.take(1, 1000), 0); // a second later the bucket is full again (debt paid)
});

test('partitions serve as pool members, and a pool never puts two chunks of a container on one disk: losing any disk (all its partitions) loses nothing', async () => {
  // Three disks of two partitions each, raid5 asking for 4+1: without failure
  // domains 5 chunks on 3 disks put two on one disk (pigeonhole), whose loss
  // then loses data; with them the containers narrow to 2+1.
  for (let lostDisk = 0; lostDisk < 3; lostDisk++) {
    const disks = [0, 1, 2].map((i) => new SimDevice(40 * MiB, new Prng(5 + i), `disk${i}`, `sim://disk${i}`));
    const clock = virtualClock();
    const parts: PartitionDevice[] = [];
    for (const d of disks) {
      await writePartitionTable(d, { sequence: 1, entries: [part('p0', 1, 19), part('p1', 20, 19)] });
      parts.push(...(await openPartitions(d, clock)));
    }
    assert.deepEqual(parts.map((p) => p.failureDomain), ['sim://disk0', 'sim://disk0', 'sim://disk1', 'sim://disk1', 'sim://disk2', 'sim://disk2']);
    let n = 0;
    const newUuid = () => (++n).toString(16).padStart(32, '0');
    await PoolDevice.format(parts, { protection: 'raid5', dataCount: 4, stripBytes: 4096, chunkDataBytes: 256 * 1024, journalBytes: 512 * 1024, dataZeroed: true, newUuid });
    const pool = await PoolDevice.open(parts, { rng: new Prng(6), newUuid });
    const data = Buffer.alloc(2 * MiB);
    new Prng(7).fill(data);
    await pool.write(data, 0);
    await pool.failMember(2 * lostDisk);
    await pool.failMember(2 * lostDisk + 1);
    const out = Buffer.alloc(2 * MiB);
    await pool.read(out, 0);
    assert.ok(out.equals(data), `disk ${lostDisk} lost`);
    assert.equal((await readPartitionTable(disks[0])).entries.length, 2, 'the pool left the partition table alone');
  }
});
