// FileDevice's choice between a synchronous syscall and libuv's thread pool on a
// buffered device (see the comment on readGate/writeGate in file-device.ts and
// io/sync-gate.ts):
// - a write alone in its event-loop turn (queue depth 1) is synchronous;
// - of the writes issued in one turn (commands that arrived together at QD32), only
//   the first is synchronous and the others go to the pool (session 8: every write
//   went synchronous, because a synchronous write never counts as in flight, and
//   the main thread paid the kernel's page-cache copy of every 4 KiB write);
// - small reads are synchronous, reads over 64 KiB use the pool;
// - whichever path, the bytes land where they were written.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { FileDevice, WRITE_PIECE_BYTES, splitWrite, type InlineWrites } from './file-device.js';
import { pageAdviceAvailable } from './page-cache.js';

const cjsFs = createRequire(import.meta.url)('node:fs') as typeof import('node:fs');
const root = mkdtempSync(join(tmpdir(), 'tessera-filedev-'));
after(() => rmSync(root, { recursive: true, force: true }));
let seq = 0;

async function device(inlineWrites: InlineWrites = 'first-per-turn'): Promise<FileDevice> {
  const path = join(root, `dev-${++seq}.img`);
  await FileDevice.create(path, 16 << 20);
  return FileDevice.open(path, 'off', undefined, inlineWrites);
}

const block = (fill: number, bytes = 4608): Buffer => Buffer.alloc(bytes, fill);

/** Blocks 0..count-1 hold block(i + 1). */
async function expectBlocks(d: FileDevice, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const back = Buffer.alloc(4608);
    await d.read(back, i * 4608);
    assert.ok(back.equals(block(i + 1)), `block ${i}`);
  }
}

test('a write alone in its event-loop turn is synchronous', async () => {
  const d = await device();
  try {
    for (let i = 0; i < 5; i++) {
      await d.write(block(i + 1), i * 4608);
      await nextTurn();
    }
    assert.deepEqual({ sync: d.syncIos, async: d.asyncIos }, { sync: 5, async: 0 });
  } finally {
    await d.close();
  }
});

test('of 32 writes issued in one turn, only the first is synchronous; all land', async () => {
  const d = await device();
  try {
    await Promise.all(Array.from({ length: 32 }, (_, i) => d.write(block(i + 1), i * 4608)));
    assert.deepEqual({ sync: d.syncIos, async: d.asyncIos }, { sync: 1, async: 31 });
    await nextTurn();
    // The next turn starts afresh: a lone write is synchronous again.
    await d.write(block(0xee), 40 * 4608);
    assert.equal(d.syncIos, 2);
    await expectBlocks(d, 32);
  } finally {
    await d.close();
  }
});

test("inlineWrites 'all' (OSDs): 32 small writes of one turn are all synchronous, a large one still uses the pool; all land", async () => {
  const d = await device('all');
  try {
    await Promise.all(Array.from({ length: 32 }, (_, i) => d.write(block(i + 1), i * 4608)));
    assert.deepEqual({ sync: d.syncIos, async: d.asyncIos }, { sync: 32, async: 0 });
    await d.write(block(0x5a, 128 * 1024), 64 * 4608);
    assert.equal(d.asyncIos, 1, 'a write over 64 KiB would hold the event loop too long');
    await expectBlocks(d, 32);
  } finally {
    await d.close();
  }
});

/** What a fast write costs on the virtual clock of withSlowWrites. */
const FAST_WRITE_MS = 0.01;

/**
 * Runs fn with fs.writeSync taking slowMs for the calls that slow(n) picks (n
 * counts from 1) and FAST_WRITE_MS for the others, on a virtual clock
 * (performance.now, which the gates read) that moves only inside writeSync: the
 * gates see exactly these durations, not the machine's load (real writes timed
 * under a busy test run once closed the gate in the "occasional slow write" test).
 */
async function withSlowWrites(slowMs: number, slow: (n: number) => boolean, fn: () => Promise<void>): Promise<void> {
  const real = cjsFs.writeSync;
  let n = 0;
  let nowMs = performance.now();
  performance.now = () => nowMs;
  (cjsFs as { writeSync: unknown }).writeSync = (...args: Parameters<typeof fs.writeSync>) => {
    nowMs += slow(++n) ? slowMs : FAST_WRITE_MS;
    return (real as (...a: Parameters<typeof fs.writeSync>) => number)(...args);
  };
  syncBuiltinESMExports();
  try {
    await fn();
  } finally {
    (cjsFs as { writeSync: unknown }).writeSync = real;
    syncBuiltinESMExports();
    delete (performance as { now?: unknown }).now;
  }
}

test("inlineWrites 'all' (the engine's default): writes that keep holding the event loop (page cache throttled) go to the pool for a while", async () => {
  const d = await device('all');
  try {
    // Every synchronous write takes ~300 us, as when the kernel throttles dirty pages:
    // the write gate closes once they held the loop for a fifth of its 100 ms window
    // (20 ms: at most 67 of them), and the rest use the pool.
    await withSlowWrites(0.3, () => true, async () => {
      for (let i = 0; i < 100; i++) await d.write(block(i + 1), i * 4608);
    });
    assert.equal(d.writeGate.closings, 1);
    assert.ok(d.syncIos >= 2 && d.syncIos <= 67, `sync writes ${d.syncIos}`);
    assert.equal(d.syncIos + d.asyncIos, 100);
    await expectBlocks(d, 100);
    // The reads of expectBlocks were synchronous: slow writes do not close the read gate.
    assert.equal(d.readGate.closings, 0);
    assert.equal(d.syncIos, 100 - d.asyncIos + 100);
  } finally {
    await d.close();
  }
});

test("inlineWrites 'all': an occasional slow write (a folio locked by writeback) keeps writes synchronous", async () => {
  // Reproducer (session 14): the old gate closed after 4 slow writes net of 1/32 per
  // fast one. An OSD under load blocked in ~3 % of its inline writes, which is about
  // that rate, so run to run it sent 7-85 % of its writes to the pool and paid the
  // hand-off: up to 13 % more CPU per replicated write.
  const d = await device('all');
  try {
    await withSlowWrites(0.3, (n) => n % 20 === 0, async () => {
      for (let i = 0; i < 400; i++) await d.write(block((i % 250) + 1), i * 4608);
    });
    assert.deepEqual({ sync: d.syncIos, async: d.asyncIos, closings: d.writeGate.closings }, { sync: 400, async: 0, closings: 0 });
  } finally {
    await d.close();
  }
});

test('a closed write gate sends writes to the pool but leaves small reads synchronous, and the other way round', async () => {
  const d = await device('all');
  try {
    d.writeGate.note(1e6, performance.now()); // one write that held the loop for a second
    await d.write(block(1), 0);
    assert.deepEqual({ sync: d.syncIos, async: d.asyncIos }, { sync: 0, async: 1 });
    await d.read(Buffer.alloc(4608), 0);
    assert.deepEqual({ sync: d.syncIos, async: d.asyncIos }, { sync: 1, async: 1 });
    const e = await device('all');
    try {
      for (let i = 0; i < 4; i++) e.readGate.note(1e3, performance.now()); // four page-cache misses
      await e.read(Buffer.alloc(4608), 0);
      await e.write(block(2), 0);
      assert.deepEqual({ sync: e.syncIos, async: e.asyncIos }, { sync: 1, async: 1 });
    } finally {
      await e.close();
    }
  } finally {
    await d.close();
  }
});

test('small reads are synchronous, reads over 64 KiB use the thread pool', async () => {
  const d = await device();
  try {
    await d.write(block(7, 128 << 10), 0);
    await nextTurn();
    const before = { sync: d.syncIos, async: d.asyncIos };
    const small = Buffer.alloc(4096);
    await d.read(small, 0);
    assert.equal(d.syncIos, before.sync + 1);
    const big = Buffer.alloc(128 << 10);
    await d.read(big, 0);
    assert.equal(d.asyncIos, before.async + 1);
    assert.ok(big.equals(block(7, 128 << 10)));
  } finally {
    await d.close();
  }
});

test('readParts/writeParts: the parts are one range back to back (preadv/pwritev); a short transfer is ERR_DEVICE_IO', async () => {
  const dev = await device();
  try {
    const parts = [Buffer.alloc(4096, 1), Buffer.from(new SharedArrayBuffer(512)).fill(2), Buffer.alloc(4096, 3)];
    await dev.writeParts(parts, 8192);
    const whole = Buffer.alloc(4096 + 512 + 4096);
    await dev.read(whole, 8192);
    assert.ok(whole.equals(Buffer.concat(parts)));
    const back = [Buffer.alloc(4096), Buffer.from(new SharedArrayBuffer(512)), Buffer.alloc(4096)];
    await dev.readParts(back, 8192);
    assert.ok(Buffer.concat(back).equals(whole));
    const before = dev.stats.read.snapshot().errors;
    await assert.rejects(dev.readParts([Buffer.alloc(4096), Buffer.alloc(4096)], dev.sizeBytes - 4096), (e: Error & { code?: string }) => e.code === 'ERR_DEVICE_IO');
    assert.equal(dev.stats.read.snapshot().errors, before + 1);
  } finally {
    await dev.close();
  }
});

test('splitWrite: consecutive pieces of exactly pieceBytes (the last shorter), parts cut into views at the cuts', () => {
  const a = Buffer.alloc(10, 1);
  const b = Buffer.alloc(3, 2);
  const c = Buffer.alloc(9, 3);
  const pieces = splitWrite([a, b, Buffer.alloc(0), c], 1000, 8);
  assert.deepEqual(
    pieces.map((p) => [p.offsetBytes, p.parts.map((x) => x.length)]),
    [
      [1000, [8]],
      [1008, [2, 3, 3]],
      [1016, [6]],
    ],
  );
  // views, not copies: the bytes are the caller's
  assert.equal(pieces[0].parts[0].buffer, a.buffer);
  assert.equal(pieces[1].parts[0].byteOffset, a.byteOffset + 8);
  assert.equal(pieces[1].parts[1], b, 'a part inside one piece is passed as is');
  assert.ok(Buffer.concat(pieces.flatMap((p) => p.parts)).equals(Buffer.concat([a, b, c])));
  assert.deepEqual(splitWrite([a], 0, 10).map((p) => p.parts.length), [1], 'exactly one piece');
  assert.throws(() => splitWrite([a], 0, 0));
});

test('a write is cut only between stored blocks: 4,096 data + 512 trailer bytes, as the engine gathers them', () => {
  assert.equal(WRITE_PIECE_BYTES % 4608, 0);
  const parts: Buffer[] = [];
  for (let i = 0; i < 256; i++) parts.push(Buffer.alloc(4096), Buffer.alloc(512));
  const base = 7 * 4608 + 12345 * 4608; // a block boundary anywhere in the device
  const pieces = splitWrite(parts, base, WRITE_PIECE_BYTES);
  assert.equal(pieces.length, Math.ceil((256 * 4608) / WRITE_PIECE_BYTES));
  for (const [i, p] of pieces.entries()) {
    assert.equal(p.offsetBytes, base + i * WRITE_PIECE_BYTES, `piece ${i} offset`);
    assert.equal((p.offsetBytes - base) % 4608, 0, `piece ${i} starts at a block`);
    // whole parts only: no data block or trailer is cut
    assert.ok(p.parts.every((x, k) => x.length === (k % 2 === 0 ? 4096 : 512)), `piece ${i} holds whole blocks`);
  }
});

test('a buffered write over WRITE_PIECE_BYTES goes to the kernel in pieces (small page-cache folios) and lands whole', async () => {
  const dev = await device();
  try {
    // 1 MiB of 4 KiB blocks, each followed by a 512-byte trailer, as the engine gathers them
    const parts: Buffer[] = [];
    for (let i = 0; i < 256; i++) parts.push(Buffer.alloc(4096, i), Buffer.alloc(512, 255 - i));
    const total = 256 * 4608;
    await dev.writeParts(parts, 4608);
    const pieces = Math.ceil(total / WRITE_PIECE_BYTES);
    assert.equal(dev.splitWriteCalls, pieces, 'one pwritev per piece');
    const back = Buffer.alloc(total);
    await dev.read(back, 4608);
    assert.ok(back.equals(Buffer.concat(parts)));
    // a single large buffer is split too; one of exactly WRITE_PIECE_BYTES is not
    const big = Buffer.alloc(3 * WRITE_PIECE_BYTES + 100, 7);
    await dev.write(big, 2 << 20);
    assert.equal(dev.splitWriteCalls, pieces + 4);
    await dev.write(Buffer.alloc(WRITE_PIECE_BYTES, 8), 6 << 20);
    assert.equal(dev.splitWriteCalls, pieces + 4);
    const back2 = Buffer.alloc(big.length);
    await dev.read(back2, 2 << 20);
    assert.ok(back2.equals(big));
  } finally {
    await dev.close();
  }
});

/**
 * Runs fn with fs.writev replaced by a recorder: the device's pwritev calls are held
 * (not performed) until the test runs them, in the order it chooses.
 */
async function withHeldWrites(fn: (held: Array<{ parts: Uint8Array[]; pos: number; cb: (err: Error | null, n: number) => void }>) => Promise<void>): Promise<void> {
  const held: Array<{ parts: Uint8Array[]; pos: number; cb: (err: Error | null, n: number) => void }> = [];
  const real = cjsFs.writev;
  (cjsFs as { writev: unknown }).writev = (_fd: number, parts: Uint8Array[], pos: number, cb: (err: Error | null, n: number) => void) => held.push({ parts, pos, cb });
  syncBuiltinESMExports();
  try {
    await fn(held);
  } finally {
    (cjsFs as { writev: unknown }).writev = real;
    syncBuiltinESMExports();
  }
}

test('a split write settles only once its last piece is done', async () => {
  const dev = await device();
  try {
    await withHeldWrites(async (held) => {
      let settled = false;
      const p = dev.write(Buffer.alloc(3 * WRITE_PIECE_BYTES, 1), 0).then(() => (settled = true));
      assert.equal(held.length, 3, 'all pieces issued at once');
      for (let i = 0; i < held.length; i++) {
        await nextTurn();
        assert.equal(settled, false, `settled after ${i} of ${held.length} pieces`);
        assert.equal(dev.stats.inFlight, 1);
        const h = held[i];
        h.cb(null, h.parts.reduce((n, x) => n + x.length, 0));
      }
      await p;
      assert.equal(dev.stats.inFlight, 0);
    });
  } finally {
    await dev.close();
  }
});

test('overlapping split writes racing in the kernel leave every block whole, from one write or the other (reproducer: cuts inside a block tore it)', async () => {
  const dev = await device();
  try {
    const blocks = 64;
    const fromA = Buffer.alloc(blocks * 4608, 0xaa);
    const fromB = Buffer.alloc(blocks * 4608, 0xbb);
    await withHeldWrites(async (held) => {
      const a = dev.write(fromA, 4608);
      const aPieces = held.splice(0);
      const b = dev.write(fromB, 4608);
      const bPieces = held.splice(0);
      assert.ok(aPieces.length > 1 && bPieces.length > 1);
      // The worst order the kernel may choose: A's first piece, all of B, then the rest of A.
      for (const h of [aPieces[0], ...bPieces, ...aPieces.slice(1)]) {
        const n = fs.writevSync((dev as unknown as { fd: number }).fd, h.parts as NodeJS.ArrayBufferView[], h.pos);
        h.cb(null, n);
      }
      await Promise.all([a, b]);
    });
    const back = Buffer.alloc(blocks * 4608);
    await dev.read(back, 4608);
    for (let i = 0; i < blocks; i++) {
      const blk = back.subarray(i * 4608, (i + 1) * 4608);
      assert.ok(blk.every((x) => x === 0xaa) || blk.every((x) => x === 0xbb), `block ${i} mixes both writes`);
    }
  } finally {
    await dev.close();
  }
});

test('a split write whose pwritev fails is one ERR_DEVICE_IO, counted once, and leaves nothing in flight', async () => {
  const dev = await device();
  // the descriptor is gone (EBADF): every piece fails; the write fails once
  const fd = (dev as unknown as { fd: number }).fd;
  fs.closeSync(fd);
  await assert.rejects(dev.write(Buffer.alloc(4 * WRITE_PIECE_BYTES), 0), (e: Error & { code?: string }) => e.code === 'ERR_DEVICE_IO' && /EBADF/.test(e.message));
  assert.equal(dev.splitWriteCalls, 4);
  assert.equal(dev.stats.write.snapshot().errors, 1);
  assert.equal(dev.stats.inFlight, 0);
});

test('prefetchWrite advises the partial pages of a stored block (page-cache.ts), never after close, never throws', async () => {
  const d = await device();
  d.prefetchWrite(4608, 4608); // block 1: pages 1 and 2 in part, one call
  d.prefetchWrite(0, 8 * 4608); // eight blocks from 0: nine whole pages, no call
  const expected = pageAdviceAvailable ? 1 : 0;
  assert.deepEqual(d.pageAdvice, { calls: expected, errors: 0 });
  await d.close();
  d.prefetchWrite(4608, 4608);
  assert.deepEqual(d.pageAdvice, { calls: expected, errors: 0 }, 'the closed fd number may name another file by now');
});

test('prefetchWrite on an O_DIRECT device advises nothing (its writes never read pages)', async (t) => {
  const path = join(root, `dev-${++seq}.img`);
  await FileDevice.create(path, 16 << 20);
  let d: FileDevice;
  try {
    d = await FileDevice.open(path, 'on');
  } catch (err) {
    t.diagnostic(`O_DIRECT not supported under ${root} (${(err as Error).message}): only the buffered case was checked`);
    return;
  }
  try {
    assert.equal(d.directIo, true);
    d.prefetchWrite(4608, 4608);
    assert.deepEqual(d.pageAdvice, { calls: 0, errors: 0 });
  } finally {
    await d.close();
  }
});
