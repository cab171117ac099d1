// Local engine on one device (ENG1-ENG3, ENG5, ENG12 basics, VOL1): thin volumes,
// persistence across reopen, the no-metadata overwrite path (ENG2), checksums on
// every read (ENG5), device errors confined to one request, damaged metadata
// copies, volume management errors, and the real file device (DEV1).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SimDevice } from '../device/sim-device.js';
import { Prng, seedFromEnv } from '../stdx/prng.js';
import { isTesseraError, TesseraError } from '../stdx/errors.js';
import { BufferPool } from '../stdx/buffer-pool.js';
import { LocalEngine } from './engine.js';
import { openLocalStore } from './store.js';
import { SUPERBLOCK_BYTES, VOLTABLE_OFFSET } from './layout.js';

const MiB = 1024 * 1024;
const OBJECT = 64 * 1024;
const pool = new BufferPool(64 * MiB);

async function fresh(deviceBytes = 64 * MiB, seed = 1, dataZeroed = true): Promise<{ dev: SimDevice; engine: LocalEngine }> {
  const dev = new SimDevice(deviceBytes, new Prng(seed));
  await LocalEngine.format(dev, { objectSizeBytes: OBJECT, dataZeroed, bufferPool: pool });
  const engine = await LocalEngine.open(dev, { bufferPool: pool });
  return { dev, engine };
}

async function reopen(dev: SimDevice, engine: LocalEngine): Promise<LocalEngine> {
  await engine.close();
  dev.reopen();
  return LocalEngine.open(dev, { bufferPool: pool });
}

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  new Prng(seed).fill(b);
  return b;
}

async function readAll(vol: { read: (o: number, l: number, b: Buffer, at: number) => Promise<void> }, offset: number, length: number): Promise<Buffer> {
  const b = Buffer.alloc(length);
  await vol.read(offset, length, b, 0);
  return b;
}

async function rejectsCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof TesseraError && err.code === code);
}

test('VOL1/ENG3: a 1 TiB thin volume on a 64 MiB device; unwritten bytes read as zeros', async () => {
  const { engine } = await fresh();
  await engine.create('big', 2 ** 40);
  const vol = engine.open('big');
  const data = pattern(3 * 4096 + 512, 7);
  const at = 2 ** 40 - 2 * OBJECT - 1024; // spans an object boundary near the end
  await vol.write(at, data, false);
  assert.ok((await readAll(vol, at, data.length)).equals(data));
  assert.ok((await readAll(vol, 0, 8192)).equals(Buffer.alloc(8192)));
  assert.ok((await readAll(vol, at - 512, 512)).equals(Buffer.alloc(512)), 'bytes before a write in the same block stay zero');
  const info = engine.info('big');
  assert.equal(info.sizeBytes, 2 ** 40);
  assert.equal(info.usedBytes, 2 * OBJECT);
  await engine.close();
});

test('ENG1: volumes and data survive close and reopen', async () => {
  const { dev, engine } = await fresh();
  await engine.create('a', 16 * MiB);
  await engine.create('b', 8 * MiB);
  const data = pattern(MiB + 4096, 3);
  await engine.open('a').write(5 * 4096, data, false);
  await engine.rename('b', 'c');
  const e2 = await reopen(dev, engine);
  assert.deepEqual(e2.list().map((v) => v.name), ['a', 'c']);
  assert.ok((await readAll(e2.open('a'), 5 * 4096, data.length)).equals(data));
  await e2.close();
});

test('ENG2: random 4 KiB overwrites of allocated space write no metadata (<= 1 per 1000 data writes)', async () => {
  const { engine } = await fresh();
  await engine.create('v', 4 * MiB);
  const vol = engine.open('v');
  await vol.write(0, pattern(4 * MiB, 1), false); // allocate every object
  const seed = seedFromEnv();
  const prng = new Prng(seed);
  const metaBefore = engine.metadataWrites;
  const dataBefore = engine.dataWrites;
  const block = Buffer.alloc(4096);
  for (let i = 0; i < 5000; i++) {
    prng.fill(block);
    await vol.write(prng.int(1024) * 4096, block, false);
  }
  const meta = engine.metadataWrites - metaBefore;
  const data = engine.dataWrites - dataBefore;
  assert.equal(data, 5000, `seed ${seed}`);
  assert.ok(meta * 1000 <= data, `seed ${seed}: ${meta} metadata writes for ${data} data writes`);
  assert.equal(meta, 0);
  await engine.close();
});

test('ENG5: a flipped bit is reported as ERR_CHECKSUM, never served; other blocks still read', async () => {
  const { dev, engine } = await fresh();
  await engine.create('v', 4 * MiB);
  const vol = engine.open('v');
  await vol.write(0, pattern(OBJECT, 5), false);
  const chunk = 0; // first allocation takes the first chunk
  const blockOffset = engine.layout.dataOffset + chunk * engine.layout.chunkStrideBytes + 2 * 4608 + 100;
  dev.flipBit(blockOffset, 3);
  await rejectsCode(vol.read(2 * 4096, 4096, Buffer.alloc(4096), 0), 'ERR_CHECKSUM');
  await rejectsCode(vol.read(0, OBJECT, Buffer.alloc(OBJECT), 0), 'ERR_CHECKSUM');
  assert.ok((await readAll(vol, 0, 2 * 4096)).equals(pattern(OBJECT, 5).subarray(0, 8192)));
  assert.equal(engine.devices()[0].checksumErrors, 2);
  // A sub-block write into the damaged block is refused (its other bytes are unknown) ...
  await rejectsCode(vol.write(2 * 4096 + 512, Buffer.alloc(512, 1), false), 'ERR_CHECKSUM');
  // ... and a whole-block overwrite repairs it.
  await vol.write(2 * 4096, Buffer.alloc(4096, 9), false);
  assert.ok((await readAll(vol, 2 * 4096, 4096)).equals(Buffer.alloc(4096, 9)));
  await engine.close();
});

test('gathered IO: runs of 16+ whole blocks are one vectored IO of the caller\'s data and the trailers; unwritten blocks read as zeros; damage is ERR_CHECKSUM', async () => {
  const { dev, engine } = await fresh();
  const calls = { readParts: 0, writeParts: 0 };
  const readParts = dev.readParts.bind(dev);
  const writeParts = dev.writeParts.bind(dev);
  dev.readParts = (parts, at) => (calls.readParts++, readParts(parts, at));
  dev.writeParts = (parts, at) => (calls.writeParts++, writeParts(parts, at));
  await engine.create('v', 4 * MiB);
  const vol = engine.open('v');
  await vol.write(OBJECT + 4096, pattern(4096, 3), false); // one block of object 1: staged
  assert.equal(calls.writeParts, 0, 'a one-block write is staged');
  const whole = pattern(OBJECT, 4);
  await vol.write(0, whole, false); // object 0 whole: gathered
  assert.equal(calls.writeParts, 1);
  assert.ok((await readAll(vol, 0, OBJECT)).equals(whole));
  const obj1 = await readAll(vol, OBJECT, OBJECT);
  assert.equal(calls.readParts, 2);
  assert.ok(obj1.subarray(4096, 8192).equals(pattern(4096, 3)));
  assert.ok(obj1.subarray(0, 4096).equals(Buffer.alloc(4096)) && obj1.subarray(8192).equals(Buffer.alloc(OBJECT - 8192)), 'unwritten blocks of a gathered read are zeros');
  // The gathered write stored data and trailers as the staged path reads them.
  assert.ok((await readAll(vol, 5 * 4096 + 100, 1000)).equals(whole.subarray(5 * 4096 + 100, 5 * 4096 + 1100)));
  // Object 1 took the first chunk, object 0 the second.
  dev.scribble(engine.layout.dataOffset + engine.layout.chunkStrideBytes + 7 * 4608 + 4096, 512); // trailer of object 0's block 7
  await rejectsCode(vol.read(0, OBJECT, Buffer.alloc(OBJECT), 0), 'ERR_CHECKSUM');
  dev.scribble(engine.layout.dataOffset + 9 * 4608, 4096); // data of object 1's block 9 (unwritten, zero trailer)
  assert.ok((await readAll(vol, OBJECT, OBJECT)).equals(obj1), 'an unwritten block stays zeros whatever its data bytes hold');
  await engine.close();
});

test('ENG5: a damaged trailer is corruption, not an unwritten block', async () => {
  const { dev, engine } = await fresh();
  await engine.create('v', 4 * MiB);
  const vol = engine.open('v');
  await vol.write(0, pattern(8192, 5), false);
  dev.scribble(engine.layout.dataOffset + 4096, 512); // trailer of block 0
  await rejectsCode(vol.read(0, 4096, Buffer.alloc(4096), 0), 'ERR_CHECKSUM');
  await engine.close();
});

test('DEV2: device read and write errors fail only the affected request', async () => {
  const { dev, engine } = await fresh();
  await engine.create('v', 4 * MiB);
  const vol = engine.open('v');
  await vol.write(0, pattern(2 * OBJECT, 2), false);
  const second = engine.layout.dataOffset + engine.layout.chunkStrideBytes; // chunk 1 holds object 1
  dev.faults.readErrors.push({ offsetBytes: second, lengthBytes: 4608 });
  await rejectsCode(vol.read(OBJECT, 4096, Buffer.alloc(4096), 0), 'ERR_DEVICE_IO');
  assert.ok((await readAll(vol, 0, OBJECT)).equals(pattern(2 * OBJECT, 2).subarray(0, OBJECT)));
  dev.faults.writeErrors.push({ offsetBytes: second, lengthBytes: 4608 });
  await rejectsCode(vol.write(OBJECT, Buffer.alloc(4096, 1), false), 'ERR_DEVICE_IO');
  await vol.write(0, Buffer.alloc(4096, 1), false);
  dev.faults.readErrors.length = 0;
  assert.ok((await readAll(vol, OBJECT + 4096, 4096)).equals(pattern(2 * OBJECT, 2).subarray(OBJECT + 4096, OBJECT + 8192)));
  assert.equal(engine.devices()[0].ioErrors, 2);
  await engine.close();
});

test('ENG1: losing either superblock copy or either volume table copy loses nothing', async () => {
  for (const damage of [0, 1]) {
    const { dev, engine } = await fresh(64 * MiB, 10 + damage);
    await engine.create('v', 4 * MiB);
    await engine.open('v').write(0, pattern(4096, 1), true);
    await engine.close();
    dev.scribble(damage * SUPERBLOCK_BYTES, SUPERBLOCK_BYTES);
    dev.scribble(VOLTABLE_OFFSET + damage * 256 * 1024, 4096);
    dev.reopen();
    const e2 = await LocalEngine.open(dev, { bufferPool: pool });
    assert.deepEqual(e2.list().map((v) => v.name), ['v']);
    assert.ok((await readAll(e2.open('v'), 0, 4096)).equals(pattern(4096, 1)));
    await e2.close();
    // The damaged copies were repaired: now the other copies can be lost too.
    dev.scribble((1 - damage) * SUPERBLOCK_BYTES, SUPERBLOCK_BYTES);
    dev.scribble(VOLTABLE_OFFSET + (1 - damage) * 256 * 1024, 4096);
    dev.reopen();
    const e3 = await LocalEngine.open(dev, { bufferPool: pool });
    assert.deepEqual(e3.list().map((v) => v.name), ['v']);
    await e3.close();
  }
});

test('ENG1: losing one copy of a chunk table sector keeps the object map', async () => {
  const { dev, engine } = await fresh();
  await engine.create('v', 4 * MiB);
  await engine.open('v').write(0, pattern(OBJECT, 4), true);
  await engine.close();
  dev.scribble(engine.layout.chunkTableOffset, 512);
  dev.reopen();
  const e2 = await LocalEngine.open(dev, { bufferPool: pool });
  assert.ok((await readAll(e2.open('v'), 0, OBJECT)).equals(pattern(OBJECT, 4)));
  await e2.close();
  dev.scribble(engine.layout.chunkTableOffset + engine.layout.chunkTableBytes, 512); // now the other copy
  dev.reopen();
  const e3 = await LocalEngine.open(dev, { bufferPool: pool });
  assert.ok((await readAll(e3.open('v'), 0, OBJECT)).equals(pattern(OBJECT, 4)));
  await e3.close();
});

test('a device that is not a Tessera device is refused with ERR_FORMAT', async () => {
  const dev = new SimDevice(8 * MiB, new Prng(1));
  await rejectsCode(LocalEngine.open(dev, { bufferPool: pool }), 'ERR_FORMAT');
});

test('ENG3/ENG12: trim and write-zeroes give space back; NO_HOLE keeps it allocated', async () => {
  const { engine } = await fresh();
  await engine.create('v', 4 * MiB);
  const vol = engine.open('v');
  await vol.write(0, pattern(4 * MiB, 8), false);
  const full = engine.devices()[0].chunksUsed;
  assert.equal(engine.info('v').usedBytes, 4 * MiB);
  await vol.trim(OBJECT, 2 * OBJECT, false);
  assert.equal(engine.info('v').usedBytes, 4 * MiB - 2 * OBJECT);
  assert.equal(engine.devices()[0].chunksUsed, full - 2);
  await vol.writeZeroes(4 * OBJECT, OBJECT, false, true);
  assert.equal(engine.info('v').usedBytes, 4 * MiB - 3 * OBJECT);
  await vol.writeZeroes(6 * OBJECT, OBJECT, false, false); // NO_HOLE: zeros, still allocated
  assert.equal(engine.info('v').usedBytes, 4 * MiB - 3 * OBJECT);
  await vol.trim(8 * OBJECT + 4096, 8192, false); // partial: zeroed in place
  const got = await readAll(vol, 0, 10 * OBJECT);
  const want = pattern(4 * MiB, 8).subarray(0, 10 * OBJECT);
  want.fill(0, OBJECT, 3 * OBJECT);
  want.fill(0, 4 * OBJECT, 5 * OBJECT);
  want.fill(0, 6 * OBJECT, 7 * OBJECT);
  want.fill(0, 8 * OBJECT + 4096, 8 * OBJECT + 12288);
  assert.ok(got.equals(want));
  const map = await vol.blockStatus(0, 4 * OBJECT);
  assert.deepEqual(map, [
    { lengthBytes: OBJECT, hole: false, zero: false },
    { lengthBytes: 2 * OBJECT, hole: true, zero: true },
    { lengthBytes: OBJECT, hole: false, zero: false },
  ]);
  await engine.close();
});

test('ENG3: a freed chunk reused by another volume never shows its old data', async () => {
  const { engine } = await fresh(4 * MiB); // few chunks: reuse is certain
  await engine.create('a', 2 * MiB);
  await engine.create('b', 2 * MiB);
  const a = engine.open('a');
  const b = engine.open('b');
  const chunks = engine.layout.chunkCount;
  await a.write(0, pattern(chunks * OBJECT > 2 * MiB ? 2 * MiB : chunks * OBJECT, 1), false);
  await a.trim(0, 2 * MiB, false);
  await b.write(0, Buffer.alloc(512, 0xee), false); // sub-block write into a reused chunk
  const got = await readAll(b, 0, OBJECT);
  const want = Buffer.alloc(OBJECT);
  want.fill(0xee, 0, 512);
  assert.ok(got.equals(want));
  await engine.close();
});

test('ENG3: a format on a device full of garbage still reads unwritten space as zeros', async () => {
  const dev = new SimDevice(16 * MiB, new Prng(3));
  dev.scribble(0, 16 * MiB);
  await LocalEngine.format(dev, { objectSizeBytes: OBJECT, dataZeroed: false, bufferPool: pool });
  const engine = await LocalEngine.open(dev, { bufferPool: pool });
  await engine.create('v', 4 * MiB);
  const vol = engine.open('v');
  await vol.write(4096, Buffer.alloc(4096, 1), false);
  const want = Buffer.alloc(OBJECT);
  want.fill(1, 4096, 8192);
  assert.ok((await readAll(vol, 0, OBJECT)).equals(want));
  await engine.close();
});

test('concurrent sub-block writes to one block all survive (read-modify-write is serialised)', async () => {
  const { engine } = await fresh();
  await engine.create('v', 4 * MiB);
  const vol = engine.open('v');
  const writes: Promise<void>[] = [];
  for (let s = 0; s < 8; s++) writes.push(vol.write(s * 512, Buffer.alloc(512, s + 1), false));
  writes.push(vol.write(8192 + 100, Buffer.alloc(50, 0x55), false));
  writes.push(vol.write(8192 + 3000, Buffer.alloc(2000, 0x66), false));
  await Promise.all(writes);
  const got = await readAll(vol, 0, 4 * 4096);
  for (let s = 0; s < 8; s++) assert.ok(got.subarray(s * 512, s * 512 + 512).equals(Buffer.alloc(512, s + 1)), `sector ${s}`);
  assert.ok(got.subarray(8192 + 100, 8192 + 150).equals(Buffer.alloc(50, 0x55)));
  assert.ok(got.subarray(8192 + 3000, 8192 + 5000).equals(Buffer.alloc(2000, 0x66)));
  await engine.close();
});

test('VOL1: management errors: bad name, bad size, name taken, unknown volume, shrink below data, delete', async () => {
  const { dev, engine } = await fresh();
  await rejectsCode(engine.create('bad name', MiB), 'ERR_INVALID');
  await rejectsCode(engine.create('v', 1000), 'ERR_INVALID');
  await rejectsCode(engine.create('v', 0), 'ERR_INVALID');
  await engine.create('v', 4 * MiB);
  await rejectsCode(engine.create('v', MiB), 'ERR_EXISTS');
  assert.throws(() => engine.info('nope'), (e: unknown) => isTesseraError(e, 'ERR_NOT_FOUND'));
  await rejectsCode(engine.resize('nope', MiB), 'ERR_NOT_FOUND');
  const vol = engine.open('v');
  await vol.write(3 * MiB, pattern(OBJECT, 1), false);
  await rejectsCode(engine.resize('v', 2 * MiB), 'ERR_SHRINK');
  await rejectsCode(vol.read(4 * MiB - 512, 1024, Buffer.alloc(1024), 0), 'ERR_RANGE');
  // Shrink with discard, grow again: the old data must not come back.
  await engine.resize('v', 3 * MiB + 4096, { discardData: true });
  await engine.resize('v', 4 * MiB);
  const got = await readAll(vol, 3 * MiB, OBJECT);
  const want = Buffer.alloc(OBJECT);
  pattern(OBJECT, 1).copy(want, 0, 0, 4096);
  assert.ok(got.equals(want));
  await engine.create('w', MiB);
  await rejectsCode(engine.rename('v', 'w'), 'ERR_EXISTS');
  const used = engine.devices()[0].chunksUsed;
  await engine.delete('v');
  assert.ok(engine.devices()[0].chunksUsed < used);
  await rejectsCode(vol.read(0, 512, Buffer.alloc(512), 0), 'ERR_NOT_FOUND');
  const e2 = await reopen(dev, engine);
  assert.deepEqual(e2.list().map((v) => v.name), ['w']);
  await e2.close();
});

test('ENG3: ERR_NO_SPACE when the device is full, and space comes back after trim', async () => {
  const { engine } = await fresh(4 * MiB);
  await engine.create('v', 64 * MiB);
  const vol = engine.open('v');
  const chunks = engine.layout.chunkCount;
  for (let o = 0; o < chunks; o++) await vol.write(o * OBJECT, Buffer.alloc(4096, 1), false);
  await rejectsCode(vol.write(chunks * OBJECT, Buffer.alloc(4096, 1), false), 'ERR_NO_SPACE');
  await vol.trim(0, OBJECT, false);
  await vol.write(chunks * OBJECT, Buffer.alloc(4096, 1), false);
  await engine.close();
});

test('an fsync failure is fatal: the engine refuses all further IO', async () => {
  let fatal: Error | null = null;
  const dev = new SimDevice(16 * MiB, new Prng(1));
  await LocalEngine.format(dev, { objectSizeBytes: OBJECT, dataZeroed: true, bufferPool: pool });
  const engine = await LocalEngine.open(dev, { bufferPool: pool, onFatal: (e) => (fatal = e) });
  await engine.create('v', MiB);
  const vol = engine.open('v');
  dev.faults.flushError = true;
  await rejectsCode(vol.write(0, Buffer.alloc(4096), true), 'ERR_DEVICE_FLUSH');
  assert.ok(fatal);
  await rejectsCode(vol.read(0, 4096, Buffer.alloc(4096), 0), 'ERR_DEVICE_FLUSH');
  await rejectsCode(vol.flush(), 'ERR_DEVICE_FLUSH');
});

for (const directIo of ['off', 'auto'] as const) {
  test(`DEV1: the engine on a real file device (direct IO ${directIo}) persists across reopen`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-engine-'));
    try {
      const path = join(dir, 'dev0.img');
      const first = await openLocalStore({ devicePath: path, createSizeBytes: 256 * MiB, directIo });
      assert.equal(first.created, true);
      await first.store.create('v', 64 * MiB);
      const vol = first.store.open('v');
      const data = pattern(3 * MiB + 512, 11);
      await vol.write(4096 - 512, data, true);
      // Many small writes at once (the page-cache path sends them to the thread pool) and reads back.
      const small = Array.from({ length: 64 }, (_, i) => pattern(4096, 100 + i));
      await Promise.all(small.map((b, i) => vol.write(8 * MiB + i * 8192, b, false)));
      await vol.flush();
      const backs = await Promise.all(small.map((_, i) => readAll(vol, 8 * MiB + i * 8192, 4096)));
      backs.forEach((b, i) => assert.ok(b.equals(small[i]), `small write ${i}`));
      await first.store.close();
      const second = await openLocalStore({ devicePath: path, directIo });
      assert.equal(second.created, false);
      if (directIo === 'off') assert.equal(second.engine.device.directIo, false);
      assert.ok((await readAll(second.store.open('v'), 4096 - 512, data.length)).equals(data));
      await second.store.close();
      await rejectsCode(openLocalStore({ devicePath: join(dir, 'missing.img') }), 'ERR_NOT_FOUND');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}

test('a format cut short leaves no half-formatted device under the real name', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-engine-'));
  try {
    const path = join(dir, 'dev0.img');
    // What a crash during an earlier format leaves behind: a temporary file, never the device.
    await writeFile(`${path}.formatting`, Buffer.alloc(4096, 0xab));
    const opened = await openLocalStore({ devicePath: path, createSizeBytes: 64 * MiB });
    assert.equal(opened.created, true);
    assert.deepEqual(opened.store.list(), []);
    await opened.store.close();
    await assert.rejects(readFile(`${path}.formatting`), /ENOENT/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a device size too small to format is refused with ERR_INVALID and leaves no file behind', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-engine-'));
  try {
    const path = join(dir, 'dev0.img');
    await rejectsCode(openLocalStore({ devicePath: path, createSizeBytes: 1024 }), 'ERR_INVALID');
    await assert.rejects(readFile(path), /ENOENT/);
    await assert.rejects(readFile(`${path}.formatting`), /ENOENT/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('torn read: a block caught mid-write by a read (checksum mismatch once) is read again, not reported corrupt', async () => {
  const { dev, engine } = await fresh(64 * MiB, 41);
  await engine.create('v', 4 * MiB);
  const vol = engine.open('v');
  const data = pattern(8192, 42);
  await vol.write(0, data, true);
  // The next read of a data block sees half of it rewritten, as a concurrent
  // partial write of the same block can show; the re-read sees it whole.
  const realRead = dev.read.bind(dev);
  let torn = 0;
  dev.read = async (buf: Uint8Array, off: number) => {
    await realRead(buf, off);
    if (torn === 0 && buf.length >= 4608 && off >= 1024 * 1024) {
      torn++;
      buf.fill(0x5a, 2048, 3072);
    }
  };
  const errorsBefore = engine.devices()[0].checksumErrors;
  assert.ok((await readAll(vol, 0, data.length)).equals(data));
  assert.equal(torn, 1, 'the torn read happened');
  assert.equal(engine.devices()[0].checksumErrors, errorsBefore);
  await engine.close();
});

test('torn gathered read: a block of a vectored read caught mid-write is read again on its own and served (review, session 9)', async () => {
  const { dev, engine } = await fresh(64 * MiB, 43);
  await engine.create('v', 4 * MiB);
  const vol = engine.open('v');
  const data = pattern(OBJECT, 44);
  await vol.write(0, data, true); // 16 whole blocks: gathered
  const realReadParts = dev.readParts.bind(dev);
  let torn = 0;
  dev.readParts = async (parts: Uint8Array[], off: number) => {
    await realReadParts(parts, off);
    if (torn++ === 0) parts[2 * 9].fill(0x5a, 100, 900); // block 9's data, half rewritten
  };
  const errorsBefore = engine.devices()[0].checksumErrors;
  const back = Buffer.alloc(OBJECT, 0xee);
  await vol.read(0, OBJECT, back, 0);
  assert.ok(back.equals(data), 'the re-read block replaced the torn bytes');
  assert.equal(torn, 1, 'one gathered read, torn');
  assert.equal(engine.devices()[0].checksumErrors, errorsBefore);
  await engine.close();
});

for (const op of ['read', 'write'] as const) {
  test(`a ${op} over several pieces settles only after every piece settled, with the failure (review, session 8)`, async () => {
    const { dev, engine } = await fresh();
    await engine.create('v', 4 * OBJECT);
    const vol = engine.open('v');
    await vol.write(0, pattern(2 * OBJECT, 3), false);
    // The next IO's first device call fails at once; its second finishes 60 ms later.
    const orig = { read: dev.read.bind(dev), write: dev.write.bind(dev) };
    let calls = 0;
    let lateDone = false;
    const armed = (fn: (buf: Uint8Array, off: number) => Promise<void>) => async (buf: Uint8Array, off: number): Promise<void> => {
      const n = ++calls;
      if (n === 1) throw new TesseraError('ERR_DEVICE_IO', 'injected');
      if (n === 2) {
        await new Promise((r) => setTimeout(r, 60));
        await fn(buf, off);
        lateDone = true;
        return;
      }
      return fn(buf, off);
    };
    if (op === 'read') dev.read = armed(orig.read);
    else dev.write = armed(orig.write);
    try {
      const out = Buffer.alloc(2 * OBJECT, 0xee);
      const p = op === 'read' ? vol.read(0, 2 * OBJECT, out, 0) : vol.write(0, pattern(2 * OBJECT, 4), false);
      await rejectsCode(p, 'ERR_DEVICE_IO');
      assert.equal(lateDone, true, 'the other piece had finished when the IO failed');
      if (op === 'read') {
        const snapshot = Buffer.from(out);
        await new Promise((r) => setTimeout(r, 100));
        assert.ok(out.equals(snapshot), 'nothing writes into the caller\'s buffer after the IO settled');
      }
    } finally {
      dev.read = orig.read;
      dev.write = orig.write;
    }
  });
}

test('Volume.prefetchWrite: tells the device which stored blocks a coming write covers, for objects that have a chunk only', async () => {
  const { dev, engine } = await fresh();
  await engine.create('p', 4 * OBJECT);
  const vol = engine.open('p');
  assert.ok(vol.prefetchWrite);
  const calls: [number, number][] = [];
  (dev as SimDevice & { prefetchWrite: (o: number, l: number) => void }).prefetchWrite = (o, l) => void calls.push([o, l]);
  vol.prefetchWrite!(4096, 4096);
  assert.equal(calls.length, 0, 'no chunk yet: the write will choose one');
  // Object 3 first, so that objects and chunks are not numbered alike.
  await vol.write(3 * OBJECT, Buffer.alloc(4096, 2), false);
  await vol.write(OBJECT - 4096, Buffer.alloc(8192, 1), false); // the last block of object 0, the first of object 1
  const objects = engine.volumeById(vol.id)!.objects;
  const chunkStart = (obj: number) => engine.layout.dataOffset + objects.get(obj)! * engine.layout.chunkStrideBytes;
  assert.notEqual(objects.get(0), 0, 'object 0 is not in chunk 0');
  // Bytes 4,608 .. 12,800 of the volume: blocks 1..3 of object 0, the first and the last in part.
  vol.prefetchWrite!(4096 + 512, 8192);
  assert.deepEqual(calls, [[chunkStart(0) + 4608, 3 * 4608]]);
  // Across the object boundary: one call per object, each in its own chunk.
  calls.length = 0;
  vol.prefetchWrite!(OBJECT - 4096, 8192);
  const lastBlock = OBJECT / 4096 - 1;
  assert.deepEqual(calls, [
    [chunkStart(0) + lastBlock * 4608, 4608],
    [chunkStart(1), 4608],
  ]);
  // A range outside the volume, an empty one, or a deleted volume: nothing, and no throw.
  calls.length = 0;
  vol.prefetchWrite!(4 * OBJECT, 4096);
  vol.prefetchWrite!(0, 0);
  vol.prefetchWrite!(-512, 4096);
  await engine.delete('p');
  vol.prefetchWrite!(0, 4096);
  assert.deepEqual(calls, []);
});
