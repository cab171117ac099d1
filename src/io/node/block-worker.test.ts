// WorkerBlockCodec (engine/block-codec.ts contract) against the in-thread codec:
// - sealing in the worker writes byte for byte the trailers sealRun writes here;
// - checking in the worker gives checkRun's verdicts: valid, unwritten (zero trailer,
//   older generation) and corrupt (flipped data byte, wrong identity);
// - with a run's data (whole blocks in shared memory), the worker copies it in before
//   sealing and copies valid blocks out (zeroing unwritten ones, leaving corrupt ones
//   alone) after checking, exactly as the in-thread codec does; through an engine on
//   a device without vectored IO, reads fill every byte of a stale buffer;
// - gathered runs (data in place, trailers apart): the same verdicts and trailers as
//   the in-thread codec, also when redone after the worker went away;
// - offloads() only for shared buffers of at least minBlocks blocks, and not past
//   inFlightMax runs in flight;
// - runs pending when the worker goes away are done in this thread, and so is
//   everything after;
// - through openLocalStore (the daemons' entry point), 1 MiB writes and reads go
//   through the worker and read back what was written, also when the client's
//   buffers are shared (the worker then moves the data too);
// - the worker never holds a process that is otherwise done (session 8: a 'message'
//   listener added after unref() held every process that opened a store).
// Random contents come from a seeded generator; the seed is printed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { BufferPool } from '../../stdx/buffer-pool.js';
import { checkRun, checkTrailerRun, sealRun, sealTrailerRun, type BlockRun } from '../../engine/block-codec.js';
import { BLOCK_DATA_BYTES, BLOCK_STRIDE_BYTES, BLOCK_TRAILER_BYTES } from '../../engine/layout.js';
import { LocalEngine } from '../../engine/engine.js';
import { SimDevice } from '../../device/sim-device.js';
import { Prng } from '../../stdx/prng.js';
import { BlockCheck } from '../../engine/trailer.js';
import { openLocalStore } from '../../engine/store.js';
import { sharedBlockCodec, WorkerBlockCodec } from './block-worker.js';

const SEED = Number(process.env.TEST_SEED ?? Date.now() % 1_000_000);
console.log(`# block-worker seed ${SEED} (replay: TEST_SEED=${SEED})`);

function fillRandom(buf: Buffer, seed: number): void {
  let x = seed >>> 0 || 1;
  for (let i = 0; i < buf.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf[i] = x & 0xff;
  }
}

const RUN: BlockRun = { volumeId: 3, objectIndex: 2 ** 40 + 7, firstBlock: 100, generation: 2 ** 33 + 5 };
const N = 64;

async function sharedBuffer(bytes: number): Promise<Buffer> {
  return new BufferPool(64 << 20, 8 << 20, true).acquire(bytes);
}

test('the worker seals byte for byte what sealRun seals here', async () => {
  const codec = new WorkerBlockCodec();
  try {
    const a = await sharedBuffer(N * BLOCK_STRIDE_BYTES);
    fillRandom(a, SEED);
    const b = Buffer.from(a); // a private copy, sealed here
    assert.equal(codec.offloads(a, N), true);
    await codec.sealBlocks(a, N, RUN);
    sealRun(b, N, RUN);
    assert.ok(a.equals(b), 'trailers differ');
    assert.equal(codec.offloadedRuns, 1);
    assert.equal(codec.fallbackRuns, 0);
  } finally {
    await codec.close();
  }
});

test('the worker checks as checkRun does: valid, unwritten, older generation, corrupt data, wrong identity', async () => {
  const codec = new WorkerBlockCodec();
  try {
    const buf = await sharedBuffer(N * BLOCK_STRIDE_BYTES);
    fillRandom(buf, SEED + 1);
    sealRun(buf, N, RUN);
    buf.fill(0, 5 * BLOCK_STRIDE_BYTES + BLOCK_DATA_BYTES, 6 * BLOCK_STRIDE_BYTES); // block 5: zero trailer
    sealRun(buf.subarray(9 * BLOCK_STRIDE_BYTES), 1, { ...RUN, firstBlock: RUN.firstBlock + 9, generation: RUN.generation - 1 }); // 9: older generation
    buf[17 * BLOCK_STRIDE_BYTES + 1234] ^= 0x40; // 17: a flipped data bit
    sealRun(buf.subarray(33 * BLOCK_STRIDE_BYTES), 1, { ...RUN, firstBlock: RUN.firstBlock + 34 }); // 33: another block's trailer
    const want = new Uint8Array(N);
    checkRun(buf, N, RUN, want);
    assert.deepEqual([want[5], want[9], want[17], want[33], want[0]], [BlockCheck.Unwritten, BlockCheck.Unwritten, BlockCheck.Corrupt, BlockCheck.Corrupt, BlockCheck.Valid]);
    const got = await codec.checkBlocks(buf, N, RUN);
    assert.deepEqual([...got], [...want]);
    assert.equal(codec.offloadedRuns, 1);
  } finally {
    await codec.close();
  }
});

test('with the run data: the worker copies in and seals, and checks and copies out, as the in-thread codec does', async () => {
  const codec = new WorkerBlockCodec();
  try {
    const data = Buffer.from(new SharedArrayBuffer(N * BLOCK_DATA_BYTES + 8)).subarray(8); // a view at an offset
    fillRandom(data, SEED + 4);
    const a = await sharedBuffer(N * BLOCK_STRIDE_BYTES);
    fillRandom(a, SEED + 5); // stale staging contents: data bytes are all replaced
    const b = Buffer.from(a); // a private copy, filled and sealed here
    assert.equal(codec.offloads(a, N, data), true);
    assert.equal(codec.offloads(a, N, Buffer.alloc(data.length)), false, 'private run data stays in this thread');
    await codec.sealBlocks(a, N, RUN, data);
    sealRun(b, N, RUN, data);
    assert.ok(a.equals(b), 'staging after copy-in and seal differs');
    for (let i = 0; i < N; i++) assert.ok(a.subarray(i * BLOCK_STRIDE_BYTES, i * BLOCK_STRIDE_BYTES + BLOCK_DATA_BYTES).equals(data.subarray(i * BLOCK_DATA_BYTES, (i + 1) * BLOCK_DATA_BYTES)));

    a.fill(0, 5 * BLOCK_STRIDE_BYTES + BLOCK_DATA_BYTES, 6 * BLOCK_STRIDE_BYTES); // block 5: unwritten
    a[17 * BLOCK_STRIDE_BYTES + 99] ^= 0x01; // block 17: corrupt
    const out = Buffer.from(new SharedArrayBuffer(N * BLOCK_DATA_BYTES));
    out.fill(0xab);
    const statuses = await codec.checkBlocks(a, N, RUN, out);
    const want = new Uint8Array(N);
    const outHere = Buffer.alloc(out.length, 0xab);
    checkRun(a, N, RUN, want, outHere);
    assert.deepEqual([...statuses], [...want]);
    assert.equal(statuses[5], BlockCheck.Unwritten);
    assert.equal(statuses[17], BlockCheck.Corrupt);
    assert.ok(out.equals(outHere), 'copied-out data differs from the in-thread codec');
    assert.ok(out.subarray(5 * BLOCK_DATA_BYTES, 6 * BLOCK_DATA_BYTES).equals(Buffer.alloc(BLOCK_DATA_BYTES)), 'unwritten block zeroed');
    assert.ok(out.subarray(17 * BLOCK_DATA_BYTES, 18 * BLOCK_DATA_BYTES).equals(Buffer.alloc(BLOCK_DATA_BYTES, 0xab)), 'corrupt block left alone');
    assert.ok(out.subarray(0, BLOCK_DATA_BYTES).equals(data.subarray(0, BLOCK_DATA_BYTES)), 'valid block copied out');
    assert.equal(codec.offloadedRuns, 2);
    assert.throws(() => sealRun(b, N, RUN, data.subarray(1)), /run data/);
  } finally {
    await codec.close();
  }
});

test('gathered runs (ops 2, 3): the worker seals and checks trailers of data in place as the in-thread codec does, and redoes them after close', async () => {
  const codec = new WorkerBlockCodec();
  try {
    const data = Buffer.from(new SharedArrayBuffer(N * BLOCK_DATA_BYTES));
    fillRandom(data, SEED + 7);
    const trailers = await sharedBuffer(N * BLOCK_TRAILER_BYTES);
    fillRandom(trailers, SEED + 8); // stale bytes: every trailer sector is rewritten whole
    const here = Buffer.alloc(trailers.length);
    await codec.sealTrailers(trailers, N, RUN, data);
    sealTrailerRun(here, N, RUN, data);
    assert.ok(trailers.equals(here), 'worker trailers differ from in-thread trailers');
    // Damage: 5 unwritten (zero trailer), 9 older generation, 17 a flipped data bit, 33 another block's trailer.
    trailers.fill(0, 5 * BLOCK_TRAILER_BYTES, 6 * BLOCK_TRAILER_BYTES);
    sealTrailerRun(trailers.subarray(9 * BLOCK_TRAILER_BYTES, 10 * BLOCK_TRAILER_BYTES), 1, { ...RUN, firstBlock: RUN.firstBlock + 9, generation: RUN.generation - 1 }, data.subarray(9 * BLOCK_DATA_BYTES, 10 * BLOCK_DATA_BYTES));
    data[17 * BLOCK_DATA_BYTES + 5] ^= 0x10;
    sealTrailerRun(trailers.subarray(33 * BLOCK_TRAILER_BYTES, 34 * BLOCK_TRAILER_BYTES), 1, { ...RUN, firstBlock: RUN.firstBlock + 34 }, data.subarray(33 * BLOCK_DATA_BYTES, 34 * BLOCK_DATA_BYTES));
    const dataHere = Buffer.from(data);
    const want = new Uint8Array(N);
    checkTrailerRun(trailers, N, RUN, want, dataHere);
    const got = await codec.checkTrailers(trailers, N, RUN, data);
    assert.deepEqual([...got], [...want]);
    assert.deepEqual([got[0], got[5], got[9], got[17], got[33]], [BlockCheck.Valid, BlockCheck.Unwritten, BlockCheck.Unwritten, BlockCheck.Corrupt, BlockCheck.Corrupt]);
    assert.ok(data.equals(dataHere), 'unwritten blocks zeroed alike');
    assert.ok(data.subarray(5 * BLOCK_DATA_BYTES, 6 * BLOCK_DATA_BYTES).equals(Buffer.alloc(BLOCK_DATA_BYTES)), 'an unwritten block reads as zeros');
    assert.equal(codec.offloadedRuns, 2);
    // Pending when the worker goes: done in this thread, same result.
    const resealed = Buffer.from(new SharedArrayBuffer(trailers.length));
    const pending = codec.sealTrailers(resealed, N, RUN, data);
    await codec.close();
    await pending;
    const again = Buffer.alloc(trailers.length);
    sealTrailerRun(again, N, RUN, data);
    assert.ok(resealed.equals(again));
    assert.deepEqual([...(await codec.checkTrailers(resealed, N, RUN, data))], new Array(N).fill(BlockCheck.Valid));
  } finally {
    await codec.close();
  }
});

test('staged runs with the client\'s data (a device without vectored IO, as with O_DIRECT or pools): the worker moves the data, reads fill every byte', async () => {
  const codec = new WorkerBlockCodec();
  try {
    const dev = new SimDevice(64 << 20, new Prng(SEED));
    const noParts = dev as unknown as { readParts?: unknown; writeParts?: unknown };
    noParts.readParts = undefined;
    noParts.writeParts = undefined;
    const pool = new BufferPool(64 << 20, 8 << 20, true);
    await LocalEngine.format(dev, { bufferPool: pool, dataZeroed: true });
    const engine = await LocalEngine.open(dev, { bufferPool: pool, blockCodec: codec });
    await engine.create('v', 32 << 20);
    const vol = engine.open('v');
    const data = Buffer.from(new SharedArrayBuffer(2 << 20));
    fillRandom(data, SEED + 9);
    const before = codec.offloadedRuns;
    await vol.write(4 << 20, data, false);
    const back = Buffer.from(new SharedArrayBuffer((2 << 20) + (1 << 20)));
    back.fill(0xee); // a recycled buffer: stale bytes must not survive a read
    await vol.read(4 << 20, back.length, back, 0);
    assert.ok(back.subarray(0, data.length).equals(data), 'written data');
    assert.ok(back.subarray(data.length).equals(Buffer.alloc(1 << 20)), 'the unwritten MiB of an allocated object reads as zeros');
    assert.ok(codec.offloadedRuns >= before + 5, `runs went through the worker (${codec.offloadedRuns - before})`);
    dev.flipBit(engine.layout.dataOffset + 3 * 4608 + 7, 1); // block 3 of the first chunk
    await assert.rejects(vol.read(4 << 20, 1 << 20, Buffer.from(new SharedArrayBuffer(1 << 20)), 0), (e: Error & { code?: string }) => e.code === 'ERR_CHECKSUM');
    await engine.close();
  } finally {
    await codec.close();
  }
});

test('offloads() only shared buffers of at least minBlocks blocks, and at most inFlightMax runs at once', async () => {
  const codec = new WorkerBlockCodec({ minBlocks: 16, inFlightMax: 2 });
  try {
    const shared = await sharedBuffer(N * BLOCK_STRIDE_BYTES);
    assert.equal(codec.offloads(shared, 15), false, 'a short run');
    assert.equal(codec.offloads(Buffer.alloc(N * BLOCK_STRIDE_BYTES), N), false, 'a private buffer');
    assert.equal(codec.offloads(shared, 16), true);
    const runs = [codec.sealBlocks(shared.subarray(0, 16 * BLOCK_STRIDE_BYTES), 16, RUN), codec.sealBlocks(shared.subarray(16 * BLOCK_STRIDE_BYTES, 32 * BLOCK_STRIDE_BYTES), 16, RUN)];
    assert.equal(codec.offloads(shared, 16), false, 'two runs in flight already');
    await Promise.all(runs);
    assert.equal(codec.offloads(shared, 16), true, 'room again');
  } finally {
    await codec.close();
  }
});

test('runs pending when the worker goes away are done in this thread, and so is every later run', async () => {
  const codec = new WorkerBlockCodec();
  const buf = await sharedBuffer(N * BLOCK_STRIDE_BYTES);
  fillRandom(buf, SEED + 2);
  const copy = Buffer.from(buf);
  sealRun(copy, N, RUN);
  const pending = codec.sealBlocks(buf, N, RUN);
  await codec.close();
  await pending;
  assert.ok(buf.equals(copy), 'the pending run was sealed');
  assert.equal(codec.offloads(buf, N), false, 'no worker any more');
  const statuses = await codec.checkBlocks(buf, N, RUN);
  assert.ok(statuses.every((s) => s === BlockCheck.Valid));
  assert.ok(codec.fallbackRuns >= 1);
});

test('openLocalStore: 1 MiB writes and reads go through the block worker and read back', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-blockworker-'));
  try {
    const opened = await openLocalStore({ devicePath: join(dir, 'dev0.img'), createSizeBytes: 256 << 20, directIo: 'off', blockWorker: true });
    assert.ok(opened.engine.codec !== null);
    const before = sharedBlockCodec().offloadedRuns;
    await opened.store.create('v', 64 << 20);
    const vol = opened.store.open('v');
    const data = Buffer.alloc(4 << 20);
    fillRandom(data, SEED + 3);
    // Unaligned start and length: partial head and tail blocks stay a read-modify-write.
    await vol.write(512, data.subarray(0, data.length - 1024), false);
    const back = Buffer.alloc(data.length - 1024);
    await vol.read(512, back.length, back, 0);
    assert.ok(back.equals(data.subarray(0, data.length - 1024)));
    assert.ok(sharedBlockCodec().offloadedRuns > before, 'runs went through the worker');
    // Aligned private buffers (NBD's, the OSDs'): staged, still sealed and checked in
    // the worker; this thread only copies (a regression in session 9 sealed them here).
    const alignedBefore = sharedBlockCodec().offloadedRuns;
    const priv = Buffer.alloc(1 << 20);
    fillRandom(priv, SEED + 10);
    await vol.write(16 << 20, priv, false);
    const privBack = Buffer.alloc(priv.length, 0xee);
    await vol.read(16 << 20, privBack.length, privBack, 0);
    assert.ok(privBack.equals(priv));
    assert.ok(sharedBlockCodec().offloadedRuns >= alignedBefore + 2, `aligned private runs went through the worker (${sharedBlockCodec().offloadedRuns - alignedBefore})`);
    // Shared client buffers (the iSCSI gateway's): aligned pieces move through the worker too.
    const sharedData = Buffer.from(new SharedArrayBuffer(2 << 20));
    fillRandom(sharedData, SEED + 6);
    await vol.write(8 << 20, sharedData, false);
    const sharedBack = Buffer.from(new SharedArrayBuffer(sharedData.length + 4096));
    await vol.read(8 << 20, sharedData.length + 4096, sharedBack, 0); // the last block was never written
    assert.ok(sharedBack.subarray(0, sharedData.length).equals(sharedData));
    assert.ok(sharedBack.subarray(sharedData.length).equals(Buffer.alloc(4096)), 'an unwritten block reads as zeros');
    await opened.store.close();
    const plain = await openLocalStore({ devicePath: join(dir, 'dev0.img'), directIo: 'off', blockWorker: false });
    const plainShared = Buffer.alloc(sharedData.length);
    await plain.store.open('v').read(8 << 20, plainShared.length, plainShared, 0);
    assert.ok(plainShared.equals(sharedData), 'what the worker copied in and sealed verifies in this thread');
    assert.equal(plain.engine.codec, null);
    const again = Buffer.alloc(back.length);
    await plain.store.open('v').read(512, again.length, again, 0);
    assert.ok(again.equals(back), 'what the worker sealed verifies in this thread');
    await plain.store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('close() while runs are in flight: every run completes correctly, late replies are ignored (review, session 8)', async () => {
  for (let round = 0; round < 20; round++) {
    const codec = new WorkerBlockCodec({ minBlocks: 16 });
    const bufs = await Promise.all(Array.from({ length: 8 }, () => sharedBuffer(16 * BLOCK_STRIDE_BYTES)));
    bufs.forEach((b, i) => fillRandom(b, SEED + 10 * round + i));
    const want = bufs.map((b) => {
      const c = Buffer.from(b);
      sealRun(c, 16, RUN);
      return c;
    });
    const runs = bufs.map((b) => codec.sealBlocks(b, 16, RUN));
    await runs[0]; // some replies in, others in flight
    await codec.close();
    await Promise.all(runs);
    bufs.forEach((b, i) => assert.ok(b.equals(want[i]), `round ${round}: run ${i} sealed as in this thread`));
  }
});

for (const io of [false, true]) test(`a process that opened and closed a local store (${io ? 'after a 1 MiB write' : 'without IO'}) exits on its own`, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-blockworker-exit-'));
  try {
    const storeUrl = new URL('../../engine/store.js', import.meta.url).href;
    const script = [
      `const { openLocalStore } = await import(${JSON.stringify(storeUrl)});`,
      `const o = await openLocalStore({ devicePath: ${JSON.stringify(join(dir, 'dev0.img'))}, createSizeBytes: 64 << 20, directIo: 'off' });`,
      io ? `await o.store.create('v', 8 << 20); await o.store.open('v').write(0, Buffer.alloc(1 << 20, 9), false);` : '',
      `await o.store.close();`,
      `console.log('closed');`,
    ].join('\n');
    // A module file, not -e: an -e script's process exits when the script ends.
    const scriptPath = join(dir, 'open-close.mjs');
    await writeFile(scriptPath, script);
    const t0 = Date.now();
    const r = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      const child = execFile(process.execPath, [scriptPath], { timeout: 20_000 }, (error, out, err) => resolve({ code: child.exitCode ?? (error ? 1 : 0), out, err }));
    });
    assert.equal(r.out.trim(), 'closed', r.err);
    assert.equal(r.code, 0, `the process did not exit by itself (killed after ${Date.now() - t0} ms): ${r.err}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
