// Tests of the simulated segment store: durable vs unsynced bytes, what a power
// cut may and may not do (durable prefixes always intact, unsynced tails dropped,
// kept or torn at 512-byte sectors, unsynced creates/removes either way), dead
// handles after a cut, and fault injection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prng, seedFromEnv } from '../stdx/prng.js';
import { isTesseraError } from '../stdx/errors.js';
import { SIM_SECTOR_BYTES, SimSegmentStore } from './sim-segments.js';

function pattern(len: number, tag: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (tag * 31 + i) & 0xff;
  return b;
}

test('append, read, sync and list: reads see appends at once; sync makes them durable', async () => {
  const store = new SimSegmentStore(new Prng(1));
  const seg = await store.create('a-1');
  await store.create('a-0');
  assert.deepEqual(await store.list(), ['a-0', 'a-1']);
  await seg.append([Buffer.from('hello '), new Uint8Array([119, 111]), Buffer.from('rld')]);
  assert.equal(seg.sizeBytes, 11);
  assert.equal((await seg.read(0, 11)).toString(), 'hello world');
  assert.equal(store.durableSizeBytes('a-1'), 0);
  await seg.sync();
  assert.equal(store.durableSizeBytes('a-1'), 11);
  await assert.rejects(seg.read(5, 7), (err) => isTesseraError(err, 'ERR_RANGE'));
  await assert.rejects(store.create('a-1'), (err) => isTesseraError(err, 'ERR_EXISTS'));
  await assert.rejects(store.open('nope'), (err) => isTesseraError(err, 'ERR_NOT_FOUND'));
  await assert.rejects(store.create('../escape'), /bad segment name/);
  const again = await store.open('a-1');
  assert.equal(again.sizeBytes, 11);
  await store.remove('a-0');
  await store.remove('a-0'); // absent: no-op
  assert.deepEqual(await store.list(), ['a-1']);
  await seg.close();
  await assert.rejects(seg.append([Buffer.from('x')]), (err) => isTesseraError(err, 'ERR_CLOSED'));
});

test('power cut: durable prefixes survive exactly; unsynced tails are dropped, kept or torn only at sector granularity', async () => {
  const seed = seedFromEnv();
  const prng = new Prng(seed);
  const outcomes = { dropped: 0, kept: 0, torn: 0, garbage: 0, zero: 0 };
  for (let round = 0; round < 300; round++) {
    const store = new SimSegmentStore(prng);
    const seg = await store.create('s');
    await store.syncDir();
    const durableLen = prng.int(3000);
    const tailLen = 1 + prng.int(5000);
    const durable = pattern(durableLen, 1);
    const tail = pattern(tailLen, 2);
    await seg.append([durable]);
    await seg.sync();
    await seg.append([tail]);
    const cut = store.powerCut();
    outcomes.dropped += cut.dropped;
    outcomes.kept += cut.kept;
    outcomes.torn += cut.torn;
    await assert.rejects(seg.read(0, 1), (err) => isTesseraError(err, 'ERR_CLOSED'), 'the old handle is dead');
    assert.deepEqual(await cut.store.list(), ['s'], 'a dir-synced name survives');
    const after = await cut.store.open('s');
    const bytes = await after.read(0, after.sizeBytes);
    const ctx = `seed ${seed} round ${round}`;
    assert.ok(bytes.length >= durableLen && bytes.length <= durableLen + tailLen, ctx);
    assert.ok(bytes.subarray(0, durableLen).equals(durable), `${ctx}: durable prefix changed`);
    const end = bytes.length;
    if (end !== durableLen + tailLen && end !== durableLen) assert.equal(end % SIM_SECTOR_BYTES, 0, `${ctx}: a torn file ends on a sector boundary`);
    // Every tail sector (clipped to the file) is the new data, zeros or garbage as a whole.
    for (let s = Math.floor(durableLen / SIM_SECTOR_BYTES) * SIM_SECTOR_BYTES; s < end; s += SIM_SECTOR_BYTES) {
      const from = Math.max(s, durableLen);
      const to = Math.min(s + SIM_SECTOR_BYTES, end);
      const got = bytes.subarray(from, to);
      const want = tail.subarray(from - durableLen, to - durableLen);
      if (got.equals(want)) continue;
      if (got.every((b) => b === 0)) {
        outcomes.zero++;
        continue;
      }
      assert.ok(s >= durableLen, `${ctx}: the sector shared with durable data may only be new or zero`);
      outcomes.garbage++;
    }
    // What survived a cut is durable: a second cut changes nothing.
    const again = cut.store.powerCut().store;
    const s2 = await again.open('s');
    assert.ok((await s2.read(0, s2.sizeBytes)).equals(bytes), `${ctx}: a second cut changed surviving data`);
  }
  assert.ok(outcomes.dropped > 0 && outcomes.kept > 0 && outcomes.torn > 0, JSON.stringify(outcomes));
  assert.ok(outcomes.zero > 0 && outcomes.garbage > 0, JSON.stringify(outcomes));
});

test('power cut: unsynced creates may vanish and unsynced removes may be undone; synced ones stay', async () => {
  let vanished = 0;
  let resurrected = 0;
  for (let seed = 0; seed < 64; seed++) {
    const store = new SimSegmentStore(new Prng(seed));
    const keep = await store.create('keep');
    await keep.append([Buffer.from('k')]);
    await keep.sync();
    const old = await store.create('old');
    await old.append([Buffer.from('o')]);
    await old.sync();
    await store.syncDir();
    const fresh = await store.create('fresh');
    await fresh.append([Buffer.from('f')]);
    await fresh.sync(); // data synced, name not
    await store.remove('old'); // not synced
    const names = await store.powerCut().store.list();
    assert.ok(names.includes('keep'));
    if (!names.includes('fresh')) vanished++;
    if (names.includes('old')) resurrected++;
  }
  assert.ok(vanished > 0 && vanished < 64 && resurrected > 0 && resurrected < 64, `vanished ${vanished} resurrected ${resurrected}`);
  // After syncDir both are final.
  const store = new SimSegmentStore(new Prng(99));
  await store.create('a');
  await store.create('b');
  await store.syncDir();
  await store.remove('a');
  await store.syncDir();
  assert.deepEqual(await store.powerCut().store.list(), ['b']);
});

test('faults: a failed sync leaves data unsynced; a failed append may leave a prefix; flipBit corrupts stored bytes', async () => {
  const store = new SimSegmentStore(new Prng(5));
  const seg = await store.create('x');
  await seg.append([Buffer.from('abcdef')]);
  store.faults.failNextSync = true;
  await assert.rejects(seg.sync(), (err) => isTesseraError(err, 'ERR_DEVICE_FLUSH'));
  assert.equal(store.durableSizeBytes('x'), 0);
  await seg.sync();
  assert.equal(store.durableSizeBytes('x'), 6);
  store.faults.failNextSyncDir = true;
  await assert.rejects(store.syncDir(), (err) => isTesseraError(err, 'ERR_DEVICE_FLUSH'));
  store.faults.failNextAppend = true;
  await assert.rejects(seg.append([Buffer.alloc(100, 1)]), (err) => isTesseraError(err, 'ERR_DEVICE_IO'));
  assert.ok(seg.sizeBytes >= 6 && seg.sizeBytes <= 106);
  store.flipBit('x', 2, 0);
  assert.equal((await seg.read(0, 6)).toString(), 'abbdef');
  // Jitter only delays: results are the same.
  store.faults.jitterTurns = 10;
  await seg.append([Buffer.from('!')]);
  assert.equal((await seg.read(seg.sizeBytes - 1, 1)).toString(), '!');
});
