// Page-cache advice before engine writes (page-cache.ts, src/native/pagecache.c):
// which pages a stored block's write covers only in part, and, against the real
// kernel, that advising them brings exactly those pages into the page cache.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { BLOCK_STRIDE_BYTES } from '../../engine/layout.js';
import { adviseWritePages, PAGE_BYTES, pageAdviceAvailable, type PageAdviceCounters } from './page-cache.js';

function recorder(): { calls: [number, number][]; willNeed: (fd: number, o: number, l: number) => number } {
  const calls: [number, number][] = [];
  return { calls, willNeed: (_fd, o, l) => (calls.push([o, l]), 0) };
}

test('adviseWritePages: only the pages a write covers in part, one call when they are adjacent', () => {
  const cases: { at: number; len: number; want: [number, number][] }[] = [
    // Block 0 of a page-aligned chunk (the data area is 1 MiB aligned, and chunks
    // of 4 MiB objects are 4,608 x 1,024 bytes apart): page 0 whole, 512 bytes of page 1.
    { at: 0, len: BLOCK_STRIDE_BYTES, want: [[PAGE_BYTES, PAGE_BYTES]] },
    // Block 1: the end of page 1 and the start of page 2, both in part: one call of two pages.
    { at: BLOCK_STRIDE_BYTES, len: BLOCK_STRIDE_BYTES, want: [[PAGE_BYTES, 2 * PAGE_BYTES]] },
    // Block 7 ends on a page boundary: only its first page is partial.
    { at: 7 * BLOCK_STRIDE_BYTES, len: BLOCK_STRIDE_BYTES, want: [[7 * PAGE_BYTES, PAGE_BYTES]] },
    // Eight blocks from block 0 cover nine whole pages: nothing to read.
    { at: 0, len: 8 * BLOCK_STRIDE_BYTES, want: [] },
    // A long run: its first and its last page, two calls.
    { at: BLOCK_STRIDE_BYTES, len: 20 * BLOCK_STRIDE_BYTES, want: [[PAGE_BYTES, PAGE_BYTES], [Math.floor((21 * BLOCK_STRIDE_BYTES) / PAGE_BYTES) * PAGE_BYTES, PAGE_BYTES]] },
    // Inside one page.
    { at: 512, len: 1024, want: [[0, PAGE_BYTES]] },
    { at: 0, len: 0, want: [] },
  ];
  for (const c of cases) {
    const r = recorder();
    const counters: PageAdviceCounters = { calls: 0, errors: 0 };
    const n = adviseWritePages(3, c.at, c.len, counters, r.willNeed);
    assert.deepEqual(r.calls, c.want, `write ${c.at}+${c.len}`);
    assert.equal(n, c.want.length);
    assert.equal(counters.calls, c.want.length);
  }
  // A range no write could have, or a bad descriptor, is advised nothing and never throws (the OSD hints mid-pass).
  const none = recorder();
  const c0: PageAdviceCounters = { calls: 0, errors: 0 };
  for (const [fd, at, len] of [[3, -512, 4608], [3, 0.5, 4608], [3, 0, -1], [3, 0, Number.NaN], [3, 2 ** 53, 4608], [-1, 512, 512], [1.5, 512, 512], [2 ** 32, 512, 512]]) {
    assert.equal(adviseWritePages(fd, at, len, c0, none.willNeed), 0, `${fd} ${at}+${len}`);
  }
  assert.deepEqual(none.calls, []);
  assert.deepEqual(c0, { calls: 0, errors: 0 });
  // A refusal is counted, never thrown; no advice function means no advice.
  const counters: PageAdviceCounters = { calls: 0, errors: 0 };
  adviseWritePages(3, 512, 512, counters, () => 9);
  assert.deepEqual(counters, { calls: 1, errors: 1 });
  assert.equal(adviseWritePages(3, 512, 512, counters, null), 0);
});

function cachedPages(path: string): number | null {
  const r = spawnSync('fincore', ['--noheadings', '--output', 'PAGES', path], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  const n = Number(r.stdout.trim());
  return Number.isInteger(n) ? n : null;
}

/** Drops a file's pages from the page cache (GNU dd: iflag=nocache count=0 advises DONTNEED for the whole file). */
function dropCache(path: string): boolean {
  return spawnSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0'], { stdio: 'ignore' }).status === 0;
}

test('adviseWritePages on a real file: the partial pages of a block write are read into the page cache, and no other', async (t) => {
  // pretest builds the module (scripts/build-native.mjs, with the gcc that
  // scripts/ensure-system-deps.sh installs): on Linux a missing build is a failure, so CI notices.
  const built = existsSync(join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'native', 'pagecache.node'));
  const off = process.env.TESSERA_PAGE_ADVICE === '0';
  if (process.platform === 'linux' && !off) assert.ok(built, 'dist/native/pagecache.node was not built (scripts/build-native.mjs)');
  assert.equal(pageAdviceAvailable, built && !off);
  const dir = await mkdtemp(join(tmpdir(), 'tessera-pagecache-'));
  try {
    const path = join(dir, 'dev');
    const fd = openSync(path, 'w+');
    try {
      writeSync(fd, Buffer.alloc(16 * PAGE_BYTES, 0x5a), 0, 16 * PAGE_BYTES, 0);
      fsyncSync(fd);
      const counters: PageAdviceCounters = { calls: 0, errors: 0 };
      if (!pageAdviceAvailable) {
        t.diagnostic('native page-cache module not built here: no advice given (checked: none is attempted)');
        assert.equal(adviseWritePages(fd, BLOCK_STRIDE_BYTES, BLOCK_STRIDE_BYTES, counters), 0);
        return;
      }
      const observable = dropCache(path) && cachedPages(path) === 0;
      // Block 1's write: pages 1 and 2 in part; then a write of whole pages 8 and 9.
      assert.equal(adviseWritePages(fd, BLOCK_STRIDE_BYTES, BLOCK_STRIDE_BYTES, counters), 1);
      assert.equal(adviseWritePages(fd, 8 * PAGE_BYTES, 2 * PAGE_BYTES, counters), 0);
      assert.deepEqual(counters, { calls: 1, errors: 0 });
      if (!observable) {
        t.diagnostic('page cache not observable here (no fincore, or dropping a file\'s cache has no effect): only the calls were checked');
        return;
      }
      // The read runs in the background: wait for it (bounded).
      let pages = 0;
      for (let i = 0; i < 200 && pages < 2; i++) {
        pages = cachedPages(path) ?? 0;
        if (pages < 2) await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(pages, 2, 'exactly the two partial pages are cached');
      // A descriptor that names no file is refused by the kernel and counted, not thrown.
      adviseWritePages(-1 >>> 1, 512, 512, counters);
      assert.deepEqual(counters, { calls: 2, errors: 1 });
      // The module checks its arguments itself (a wrong fd or a truncated offset would advise the wrong file or range).
      const raw = createRequire(import.meta.url)('../../../native/pagecache.node') as { willNeed(fd: number, o: number, l: number): number };
      assert.equal(raw.willNeed(fd, 0, PAGE_BYTES), 0);
      for (const args of [[Number.NaN, 0, 1], [2 ** 32 + fd, 0, 1], [fd + 0.5, 0, 1], [-1, 0, 1], [fd, -1, 1], [fd, 0.5, 1], [fd, 0, 0], [fd, 2 ** 53, 1]]) {
        assert.throws(() => raw.willNeed(args[0], args[1], args[2]), { code: 'ERR_INVALID' }, `willNeed(${args.join(', ')})`);
      }
    } finally {
      closeSync(fd);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
