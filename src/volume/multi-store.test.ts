// MultiStore: one volume namespace over the daemon's stores (default device
// and disk pools). Names are unique across pools, ids do not collide, IO and
// management reach the owning store, and a pool leaves only when empty.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryVolumeStore } from './memory.js';
import { MultiStore } from './multi-store.js';

const MiB = 1024 * 1024;

function twoPools(): { multi: MultiStore; a: MemoryVolumeStore; b: MemoryVolumeStore } {
  const a = new MemoryVolumeStore();
  const b = new MemoryVolumeStore();
  const multi = new MultiStore('default', a);
  multi.addStore('fast', b);
  return { multi, a, b };
}

test('create goes to the named pool (default otherwise); list tags each volume with its pool; ids are unique', async () => {
  const { multi, a, b } = twoPools();
  await multi.create('v1', MiB);
  await multi.create('v2', MiB, { pool: 'fast' });
  assert.deepEqual(a.list().map((v) => v.name), ['v1']);
  assert.deepEqual(b.list().map((v) => v.name), ['v2']);
  const list = multi.list();
  assert.deepEqual(list.map((v) => [v.name, v.pool]), [['v1', 'default'], ['v2', 'fast']]);
  assert.notEqual(list[0].id, list[1].id, 'both stores number their first volume 1');
  assert.equal(multi.info('v2').pool, 'fast');
  assert.equal(multi.poolOf('v2'), 'fast');
});

test('a name is unique across pools: create and rename refuse a name another pool holds', async () => {
  const { multi } = twoPools();
  await multi.create('v1', MiB);
  await assert.rejects(multi.create('v1', MiB, { pool: 'fast' }), /already exists \(in pool default\)/);
  await multi.create('v2', MiB, { pool: 'fast' });
  await assert.rejects(multi.rename('v2', 'v1'), (e: Error & { code?: string }) => e.code === 'ERR_EXISTS');
  // Racing creates of one name in two pools: exactly one wins.
  const r = await Promise.allSettled([multi.create('x', MiB), multi.create('x', MiB, { pool: 'fast' })]);
  assert.equal(r.filter((s) => s.status === 'fulfilled').length, 1);
  await assert.rejects(multi.create('y', MiB, { pool: 'nosuch' }), /no pool "nosuch"/);
});

test('IO, resize, rename and delete reach the owning store', async () => {
  const { multi, b } = twoPools();
  await multi.create('v', MiB, { pool: 'fast' });
  const vol = multi.open('v');
  await vol.write(0, Buffer.alloc(4096, 7), false);
  const out = Buffer.alloc(4096);
  await b.open('v').read(0, 4096, out, 0);
  assert.equal(out[0], 7);
  assert.equal((await multi.resize('v', 2 * MiB)).sizeBytes, 2 * MiB);
  assert.equal((await multi.rename('v', 'w')).pool, 'fast');
  await multi.delete('w');
  assert.equal(b.list().length, 0);
  assert.throws(() => multi.open('w'), (e: Error & { code?: string }) => e.code === 'ERR_NOT_FOUND');
});

test('a pool leaves only when empty; the default pool never; a pool whose names clash is refused', async () => {
  const { multi } = twoPools();
  await multi.create('v', MiB, { pool: 'fast' });
  assert.throws(() => multi.removeStore('fast'), (e: Error & { code?: string }) => e.code === 'ERR_BUSY');
  assert.throws(() => multi.removeStore('default'), /cannot be removed/);
  await multi.delete('v');
  multi.removeStore('fast');
  assert.equal(multi.hasStore('fast'), false);
  const clash = new MemoryVolumeStore();
  await multi.create('dup', MiB);
  await clash.create('dup', MiB);
  assert.throws(() => multi.addStore('other', clash), /holds volume "dup"/);
});
