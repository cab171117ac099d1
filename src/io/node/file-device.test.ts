// FileDevice's choice between a synchronous syscall and libuv's thread pool on a
// buffered device (see the comment on syncSlowScore in file-device.ts):
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
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { FileDevice, WRITE_PIECE_BYTES_MAX, splitWrite, type InlineWrites } from './file-device.js';

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

test('splitWrite: consecutive pieces of at most pieceBytes, parts cut into views at the boundaries', () => {
  const a = Buffer.alloc(10, 1);
  const b = Buffer.alloc(3, 2);
  const c = Buffer.alloc(9, 3);
  const pieces = splitWrite([a, b, c], 1000, 8);
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
  // at most IOV_MAX (1024) parts per piece, whatever their size
  const tiny = Array.from({ length: 1500 }, () => Buffer.alloc(1));
  assert.deepEqual(splitWrite(tiny, 0, 1 << 20).map((p) => p.parts.length), [1024, 476]);
  assert.throws(() => splitWrite([a], 0, 0));
});

test('a buffered write over WRITE_PIECE_BYTES_MAX goes to the kernel in pieces (small page-cache folios) and lands whole', async () => {
  const dev = await device();
  try {
    // 1 MiB of 4 KiB blocks, each followed by a 512-byte trailer, as the engine gathers them
    const parts: Buffer[] = [];
    for (let i = 0; i < 256; i++) parts.push(Buffer.alloc(4096, i), Buffer.alloc(512, 255 - i));
    const total = 256 * 4608;
    await dev.writeParts(parts, 4608);
    const pieces = Math.ceil(total / WRITE_PIECE_BYTES_MAX);
    assert.equal(dev.splitWriteCalls, pieces, 'one pwritev per piece');
    const back = Buffer.alloc(total);
    await dev.read(back, 4608);
    assert.ok(back.equals(Buffer.concat(parts)));
    // a single large buffer is split too; a small one is not
    const big = Buffer.alloc(3 * WRITE_PIECE_BYTES_MAX + 100, 7);
    await dev.write(big, 2 << 20);
    assert.equal(dev.splitWriteCalls, pieces + 4);
    await dev.write(Buffer.alloc(WRITE_PIECE_BYTES_MAX, 8), 6 << 20);
    assert.equal(dev.splitWriteCalls, pieces + 4);
    const back2 = Buffer.alloc(big.length);
    await dev.read(back2, 2 << 20);
    assert.ok(back2.equals(big));
  } finally {
    await dev.close();
  }
});

test('a split write whose pwritev fails is one ERR_DEVICE_IO, counted once, and leaves nothing in flight', async () => {
  const dev = await device();
  // the descriptor is gone (EBADF): every piece fails; the write fails once
  fs.closeSync((dev as unknown as { fd: number }).fd);
  await assert.rejects(dev.write(Buffer.alloc(4 * WRITE_PIECE_BYTES_MAX), 0), (e: Error & { code?: string }) => e.code === 'ERR_DEVICE_IO' && /EBADF/.test(e.message));
  assert.equal(dev.splitWriteCalls, 4);
  assert.equal(dev.stats.write.snapshot().errors, 1);
  assert.equal(dev.stats.inFlight, 0);
});
