// LocalPrStore on a temp dir: records survive a reopen; compare-and-set conflicts
// answer the current record; concurrent writers of one key get exactly one success
// per rev; listeners see own writes; a damaged file stops load() with ERR_FORMAT
// naming the file (and leaves it alone); a failed fsync surfaces as
// ERR_DEVICE_FLUSH and fails the store.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isTesseraError, TesseraError } from '../../stdx/errors.js';
import { LocalPrStore, nodePrFileIo, type PrFileIo } from './pr-store-local.js';
import type { PrRecord } from './types.js';

const root = mkdtempSync(join(tmpdir(), 'tessera-pr-local-'));
after(() => rmSync(root, { recursive: true, force: true }));
let seq = 0;
const newDir = (): string => join(root, `d${++seq}`);
const code = (c: string) => (err: unknown) => isTesseraError(err) && err.code === c;

test('records persist across a reopen; conflicts answer the current record; listeners see own writes', async () => {
  const dataDir = newDir();
  const s = new LocalPrStore({ dataDir });
  assert.equal(s.current('7'), 'unavailable', 'before load');
  assert.deepEqual(await s.load('7'), { rev: 0, state: null });
  assert.deepEqual(s.current('7'), { rev: 0, state: null });
  const seen: PrRecord[] = [];
  const unsubscribe = s.subscribe('7', (r) => seen.push(r));
  assert.deepEqual(await s.compareAndSet('7', 0, { holder: 'a', keys: [1, 2] }), { ok: true, rev: 1 });
  assert.deepEqual(s.current('7'), { rev: 1, state: { holder: 'a', keys: [1, 2] } });
  assert.deepEqual(await s.compareAndSet('7', 0, { holder: 'b' }), { ok: false, current: { rev: 1, state: { holder: 'a', keys: [1, 2] } } });
  assert.deepEqual(await s.compareAndSet('7', 1, { holder: 'b' }), { ok: true, rev: 2 });
  unsubscribe();
  assert.deepEqual(await s.compareAndSet('7', 2, null), { ok: true, rev: 3 });
  assert.deepEqual(
    seen.map((r) => r.rev),
    [1, 2],
    'own writes delivered until unsubscribed',
  );
  // The caller's object is copied: mutating it later does not change the record.
  const st = { n: 1 };
  await s.compareAndSet('8', 0, st);
  st.n = 2;
  assert.deepEqual(s.current('8'), { rev: 1, state: { n: 1 } });
  await s.close();
  await assert.rejects(s.load('7'), code('ERR_CLOSED'));

  const again = new LocalPrStore({ dataDir });
  assert.deepEqual(await again.load('7'), { rev: 3, state: null });
  assert.deepEqual(await again.load('8'), { rev: 1, state: { n: 1 } });
  assert.deepEqual(await again.load('9'), { rev: 0, state: null });
  assert.match(readFileSync(again.fileOf('8'), 'utf8'), /^\{"v":1,"key":"8","rev":1,"crc32c":\d+,"state":\{"n":1\}\}\n$/);
  await again.close();
});

test('concurrent compare-and-sets of one key: exactly one wins per rev; read-modify-write loops lose no update', async () => {
  const s = new LocalPrStore({ dataDir: newDir() });
  await s.load('1');
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => s.compareAndSet('1', 0, { writer: i })));
  assert.equal(results.filter((r) => r.ok).length, 1);
  for (const r of results) if (!r.ok) assert.equal(r.current.rev, 1);

  const loops = 10;
  const perLoop = 5;
  await Promise.all(
    Array.from({ length: loops }, async () => {
      for (let done = 0; done < perLoop; ) {
        const cur = s.current('1');
        assert.notEqual(cur, 'unavailable');
        const rec = cur as PrRecord;
        const n = typeof rec.state === 'object' && rec.state !== null && 'count' in rec.state ? (rec.state as { count: number }).count : 0;
        if ((await s.compareAndSet('1', rec.rev, { count: n + 1 })).ok) done++;
      }
    }),
  );
  assert.deepEqual(s.current('1'), { rev: 1 + loops * perLoop, state: { count: loops * perLoop } });
  await s.close();
});

test('bad keys and oversized states are refused before any IO', async () => {
  const s = new LocalPrStore({ dataDir: newDir() });
  for (const k of ['', '01', 'a', '../x', '1.json', '12345678901234567']) await assert.rejects(s.load(k), code('ERR_INVALID'), k);
  await assert.rejects(s.compareAndSet('1', 0, 'x'.repeat(70 * 1024)), code('ERR_LIMIT'));
  await assert.rejects(s.compareAndSet('1', 0, undefined), code('ERR_INVALID'));
  await assert.rejects(s.compareAndSet('1', -1, null), code('ERR_INVALID'));
  await s.close();
});

test('a damaged record file stops load() with ERR_FORMAT naming the file, and is left as it was', async () => {
  const dataDir = newDir();
  const s = new LocalPrStore({ dataDir });
  await s.load('5');
  await s.compareAndSet('5', 0, { holder: 'x' });
  await s.close();
  const file = s.fileOf('5');
  const good = readFileSync(file, 'utf8');
  const damaged = [
    ['not JSON', good.slice(0, 20)],
    ['checksum', good.replace('"holder":"x"', '"holder":"y"')],
    ['other key', good.replace('"key":"5"', '"key":"6"')],
    ['version', good.replace('"v":1', '"v":9')],
    ['rev', good.replace('"rev":1', '"rev":0')],
  ];
  for (const [what, text] of damaged) {
    writeFileSync(file, text);
    const r = new LocalPrStore({ dataDir });
    await assert.rejects(
      r.load('5'),
      (err: unknown) => isTesseraError(err, 'ERR_FORMAT') && err.message.includes(file),
      what,
    );
    assert.equal(r.current('5'), 'unavailable', what);
    await assert.rejects(r.compareAndSet('5', 0, null), code('ERR_FORMAT'), `${what}: no write over a damaged file`);
    assert.equal(readFileSync(file, 'utf8'), text, `${what}: file untouched`);
    await r.close();
  }
});

test('an fsync failure rejects the compare-and-set with ERR_DEVICE_FLUSH, keeps the old record and fails the store', async () => {
  let failNext = false;
  const io: PrFileIo = {
    ...nodePrFileIo,
    replaceFile: async (p, text) => {
      if (failNext) throw new TesseraError('ERR_DEVICE_FLUSH', `fsync of ${p}.tmp failed: EIO`);
      return nodePrFileIo.replaceFile(p, text);
    },
  };
  const dataDir = newDir();
  const s = new LocalPrStore({ dataDir, io });
  await s.load('3');
  assert.deepEqual(await s.compareAndSet('3', 0, { a: 1 }), { ok: true, rev: 1 });
  const seen: number[] = [];
  s.subscribe('3', (r) => seen.push(r.rev));
  failNext = true;
  await assert.rejects(s.compareAndSet('3', 1, { a: 2 }), code('ERR_DEVICE_FLUSH'));
  assert.deepEqual(seen, [], 'no listener call for a write that is not durable');
  assert.equal(s.current('3'), 'unavailable', 'the store no longer vouches for anything');
  failNext = false;
  await assert.rejects(s.compareAndSet('3', 1, { a: 3 }), code('ERR_DEVICE_FLUSH'), 'the store stays failed');
  await assert.rejects(s.load('4'), code('ERR_DEVICE_FLUSH'));
  await s.close();
  assert.deepEqual(await new LocalPrStore({ dataDir }).load('3'), { rev: 1, state: { a: 1 } });
});
