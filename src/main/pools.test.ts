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
  const dir = await mkdtemp(path.join(tmpdir(), 'tessera-pools-'));
  try {
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
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a listed device without the pool label is left out; an unopenable pool is offline while others run', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'tessera-pools-'));
  try {
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
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('capacity alarms: thresholds from create, raised as data is written (logged, in info), changed by setAlarms and kept across a restart', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'tessera-pools-'));
  try {
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
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
