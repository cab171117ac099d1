// The daemon's pools (main/pools.ts) on real files: a pool survives a device
// file that vanished (it opens degraded, rebuilds by itself, the member shows
// as out once empty), a listed device without the pool's label (a crash
// between listing and labelling) is left out instead of keeping the pool
// offline, and a pool that cannot open is listed offline while the daemon
// and its other pools keep running.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, truncate, writeFile, readFile, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Logger } from '../stdx/log.js';
import { MemoryVolumeStore } from '../volume/memory.js';
import { MultiStore } from '../volume/multi-store.js';
import { PoolManager, defaultStripeWidth } from './pools.js';

const MiB = 1024 * 1024;

async function setup(dir: string): Promise<{ pools: PoolManager; store: MultiStore; lines: string[] }> {
  const lines: string[] = [];
  const store = new MultiStore('default', new MemoryVolumeStore());
  const pools = await PoolManager.open({
    dataDir: dir,
    store,
    log: new Logger('pools', { sink: (l) => lines.push(l), level: 'info' }),
    defaultDevicePath: path.join(dir, 'dev0.img'),
    onFatal: (err) => assert.fail(`fatal: ${err.message}`),
  });
  return { pools, store, lines };
}

/** Runs `fn` with a fresh temp dir, removed afterwards whatever happens. */
async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'tessera-pools-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function shutdown(s: { pools: PoolManager; store: MultiStore }): Promise<void> {
  await s.pools.close();
  await s.store.close();
}

async function until(cond: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('default stripe width leaves room for one device to rebuild into', () => {
  assert.deepEqual([defaultStripeWidth('raid6', 6), defaultStripeWidth('raid5', 4), defaultStripeWidth('raid6', 4), defaultStripeWidth('raid5', 12), defaultStripeWidth('mirror2', 5)], [3, 2, 2, 8, 1]);
});

test('a vanished device: the pool opens degraded, rebuilds by itself, data intact; the member ends up out', async () => {
  await withDir(async (dir) => {
  const devs = [0, 1, 2].map((i) => path.join(dir, `m${i}.img`)); // 2+1: every container uses every device
  let s = await setup(dir);
  await s.pools.create({ name: 'p', devices: devs, protection: 'raid5', deviceSizeBytes: 160 * MiB });
  await s.store.create('v', 64 * MiB, { pool: 'p' });
  const data = Buffer.alloc(8 * MiB);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 12)) & 0xff;
  await s.store.open('v').write(0, data, true);
  await shutdown(s);

  await unlink(devs[1]);
  s = await setup(dir);
  assert.ok(s.lines.some((l) => /device .*m1\.img is missing/.test(l)), s.lines.join(''));
  assert.equal(s.pools.info('p').rebuild?.kind, 'rebuild', 'a degraded pool starts its rebuild at open');
  await until(() => s.pools.info('p').rebuild?.running === false, 'the rebuild');
  const info = s.pools.info('p');
  // Three devices for 2+1 containers: nowhere to rebuild to until a device is added.
  assert.equal(info.state, 'degraded', JSON.stringify(info));
  assert.ok((info.rebuild?.noRoom ?? 0) > 0);
  assert.deepEqual(info.members.map((m) => m.state), ['ok', 'missing', 'ok']);
  await s.pools.addDevice('p', path.join(dir, 'm3.img'), 160 * MiB);
  await until(() => s.pools.info('p').rebuild?.running === false && s.pools.info('p').state === 'online', 'the rebuild onto the new device');
  assert.deepEqual(s.pools.info('p').members.map((m) => m.state), ['ok', 'out', 'ok', 'ok']);
  const out = Buffer.alloc(data.length);
  await s.store.open('v').read(0, data.length, out, 0);
  assert.ok(out.equals(data));
  await shutdown(s);
  });
});

test('a listed device without the pool label is left out; an unopenable pool is offline while others run', async () => {
  await withDir(async (dir) => {
  const a = [0, 1].map((i) => path.join(dir, `a${i}.img`));
  const b = [0, 1].map((i) => path.join(dir, `b${i}.img`));
  let s = await setup(dir);
  await s.pools.create({ name: 'a', devices: a, protection: 'mirror2', deviceSizeBytes: 128 * MiB });
  await s.pools.create({ name: 'b', devices: b, protection: 'mirror2', deviceSizeBytes: 128 * MiB });
  await s.store.create('va', 16 * MiB, { pool: 'a' });
  await shutdown(s);

  // A crash right after pools.json listed a new device for pool a, before its label was written.
  const stray = path.join(dir, 'stray.img');
  await writeFile(stray, '');
  await truncate(stray, 128 * MiB);
  const reg = JSON.parse(await readFile(path.join(dir, 'pools.json'), 'utf8')) as { pools: { name: string; devices: string[] }[] };
  reg.pools[0].devices.push(stray);
  await writeFile(path.join(dir, 'pools.json'), JSON.stringify(reg));
  // Pool b loses both devices.
  for (const p of b) await unlink(p);

  s = await setup(dir);
  assert.ok(s.lines.some((l) => /stray\.img left out/.test(l)), s.lines.join(''));
  assert.equal(s.pools.info('a').state, 'online');
  assert.deepEqual(s.store.list().map((v) => v.name), ['va']);
  const off = s.pools.info('b');
  assert.equal(off.state, 'offline');
  assert.ok(off.error && off.error.length > 0);
  assert.deepEqual(s.pools.list().map((p) => [p.name, p.state]), [['default', 'online'], ['a', 'online'], ['b', 'offline']]);
  await assert.rejects(s.pools.addDevice('b', path.join(dir, 'x.img'), 128 * MiB), /pool b is offline/);
  // The offline pool can be forgotten.
  await s.pools.delete('b');
  assert.deepEqual(s.pools.list().map((p) => p.name), ['default', 'a']);
  await shutdown(s);
  });
});

test('capacity alarms: thresholds from create, raised as data is written (logged, in info), changed by setAlarms and kept across a restart', async () => {
  await withDir(async (dir) => {
  const devs = [0, 1].map((i) => path.join(dir, `m${i}.img`));
  let s = await setup(dir);
  const created = await s.pools.create({ name: 'p', devices: devs, protection: 'mirror2', deviceSizeBytes: 256 * MiB, alarms: { warning: 0.5, critical: 0.9 } });
  assert.deepEqual(created.capacity.thresholds, { warning: 0.5, critical: 0.9 });
  await assert.rejects(s.pools.setAlarms('p', { warning: 0.9, critical: 0.5 }), /0 < warning < critical/);
  await s.store.create('v', 160 * MiB, { pool: 'p' });
  const vol = s.store.open('v');
  const chunk = Buffer.alloc(16 * MiB, 1);
  for (let off = 0; s.pools.info('p').capacity.usedFraction < 0.6; off += 16 * MiB) await vol.write(off, chunk, false);
  assert.equal(s.pools.info('p').capacity.alarm, 'warning');
  assert.ok(s.lines.some((l) => /WARN.*capacity .* used: alarm ok -> warning/.test(l)), s.lines.join(''));
  const lowered = await s.pools.setAlarms('p', { warning: 0.2, critical: 0.4 });
  assert.equal(lowered.capacity.alarm, 'critical');
  assert.ok(s.lines.some((l) => /ERROR.*alarm warning -> critical; add a device/.test(l)), s.lines.join(''));
  await shutdown(s);
  s = await setup(dir);
  assert.deepEqual(s.pools.info('p').capacity.thresholds, { warning: 0.2, critical: 0.4 });
  assert.equal(s.pools.info('p').capacity.alarm, 'critical');
  await shutdown(s);
  });
});

test('review fixes: delete during a finishing drain does not hang; remove refusals come at once; bad new paths cost nothing; unopenable listed devices can be removed; partitions of one disk are one domain', async () => {
  await withDir(async (dir) => {
  const devs = [0, 1, 2].map((i) => path.join(dir, `m${i}.img`));
  let s = await setup(dir);
  // Partitions of one file are one failure domain: not enough for a mirror.
  await s.pools.partition(path.join(dir, 'one.img'), { count: 2, deviceSizeBytes: 300 * MiB });
  await assert.rejects(s.pools.create({ name: 'x', devices: [`${path.join(dir, 'one.img')}#p1`, `${path.join(dir, 'one.img')}#p2`], protection: 'mirror2' }), /partitions of one device count once/);

  await s.pools.create({ name: 'p', devices: devs, protection: 'mirror2', deviceSizeBytes: 160 * MiB });
  await s.store.create('v', 32 * MiB, { pool: 'p' });
  await s.store.open('v').write(0, Buffer.alloc(8 * MiB, 5), true);
  // A replace with a bad new path leaves the old device in service.
  await assert.rejects(s.pools.replaceDevice(devs[0], path.join(dir, 'nosuch.img')), /does not exist/);
  assert.equal(s.pools.info('p').members[0].state, 'ok');
  // An add of a partition that does not exist leaves nothing listed.
  await assert.rejects(s.pools.addDevice('p', `${path.join(dir, 'one.img')}#p9`), /no partition p9/);
  assert.ok(!JSON.parse(await readFile(path.join(dir, 'pools.json'), 'utf8')).pools[0].devices.some((d: string) => d.includes('#p9')));
  await s.store.delete('v');
  // Deleting the pool while a drain runs (or finishes) must not hang.
  await s.pools.removeDevice(devs[2]);
  const t0 = Date.now();
  await s.pools.delete('p');
  assert.ok(Date.now() - t0 < 20_000);
  await shutdown(s);

  // A two-device mirror refuses to lose one, at once; a listed device that is gone can be removed.
  s = await setup(dir);
  const two = [3, 4].map((i) => path.join(dir, `m${i}.img`));
  await s.pools.create({ name: 'q', devices: [...two, path.join(dir, 'm5.img')], protection: 'mirror2', deviceSizeBytes: 160 * MiB });
  await shutdown(s);
  await unlink(path.join(dir, 'm5.img'));
  s = await setup(dir);
  await s.pools.removeDevice(path.join(dir, 'm5.img'));
  assert.ok(!JSON.parse(await readFile(path.join(dir, 'pools.json'), 'utf8')).pools[0].devices.includes(path.join(dir, 'm5.img')));
  await until(() => s.pools.info('q').rebuild?.running !== true, 'the rebuild after start');
  await assert.rejects(s.pools.removeDevice(two[0]), (e: Error & { code?: string }) => e.code === 'ERR_INVALID' && /needs at least 2/.test(e.message));
  assert.equal(s.pools.info('q').rebuild?.kind === 'drain', false, 'no drain started');
  await shutdown(s);
  });
});

test('narrow containers are widened by themselves once devices are added (pool info shows them until then)', async () => {
  await withDir(async (dir) => {
  const devs = [0, 1, 2].map((i) => path.join(dir, `w${i}.img`));
  const s = await setup(dir);
  const created = await s.pools.create({ name: 'w', devices: devs, protection: 'raid5', stripeWidth: 4, deviceSizeBytes: 200 * MiB });
  assert.deepEqual(created.stripe, { data: 4, parity: 1 });
  await s.store.create('v', 96 * MiB, { pool: 'w' });
  const data = Buffer.alloc(64 * MiB);
  for (let i = 0; i < data.length; i += 4096) data[i] = (i >> 12) & 0xff;
  await s.store.open('v').write(0, data, true);
  const before = s.pools.info('w');
  assert.ok(before.narrowed > 0 && before.narrowed === before.containers, JSON.stringify(before));
  await s.pools.addDevice('w', path.join(dir, 'w3.img'), 200 * MiB);
  await s.pools.addDevice('w', path.join(dir, 'w4.img'), 200 * MiB);
  await until(() => s.pools.info('w').rebuild?.kind === 'widen' && s.pools.info('w').rebuild?.running === false, 'the widen');
  const after = s.pools.info('w');
  // Runs of 4 extents that were all in use are now 4+1; a partly used run stays narrow (widening it would use more chunks).
  assert.ok(after.narrowed < before.narrowed, `narrow containers: ${before.narrowed} before, ${after.narrowed} after`);
  assert.ok(after.capacity.usedChunks <= before.capacity.usedChunks, `${after.capacity.usedChunks} chunks after, ${before.capacity.usedChunks} before`);
  const out = Buffer.alloc(data.length);
  await s.store.open('v').read(0, data.length, out, 0);
  assert.ok(out.equals(data));
  assert.ok(s.lines.some((l) => /widen done: \d+ run/.test(l)), s.lines.join(''));
  await shutdown(s);
  });
});

test('a damaged pools.json stops the start with an error naming the file and the problem, and is left as it was', async () => {
  await withDir(async (dir) => {
    const file = path.join(dir, 'pools.json');
    for (const [text, why] of [['{"version":1,"pools":[', /not valid JSON/], ['{"version":1,"pools":[{"name":"a","uuid":"x","devices":[]}]}', /pools\.0\.uuid/]] as const) {
      await writeFile(file, text);
      await assert.rejects(setup(dir), (e: Error & { code?: string }) => e.code === 'ERR_FORMAT' && e.message.includes(file) && why.test(e.message));
      assert.equal(await readFile(file, 'utf8'), text, 'the file is not rewritten');
    }
  });
});
