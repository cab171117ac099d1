// ClusterVolumeStore / ClusterVolume (SPEC VOL1, CLU6): the VolumeStore
// contract, checked side by side with MemoryVolumeStore (volume/memory.ts, the
// reference) on the same script of management calls and IO; then what only a
// cluster has: handles following rename/resize/delete made by another gateway
// through the map, a second store seeing the first one's changes, stats,
// devices and close.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Status } from '../osd/proto.js';
import { isTesseraError } from '../stdx/errors.js';
import { MemoryVolumeStore } from '../volume/memory.js';
import type { Volume, VolumeStore } from '../volume/types.js';
import { ClusterVolumeStore } from './volume-store.js';
import { openTestBed, type SimClock } from './testing.js';

const KiB = 1024;
const OBJ = 64 * KiB; // MemoryVolumeStore's object size; the fake cluster uses the same

function sleep(clock: SimClock, ms: number): Promise<void> {
  return new Promise((r) => clock.setTimer(ms, r));
}

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (i * 13 + seed * 101 + (i >> 8)) & 0xff;
  return b;
}

/** A call's outcome, comparable between stores: the error code, or a normalised value. */
async function outcome(f: () => unknown): Promise<unknown> {
  try {
    const v = await f();
    return { ok: normalise(v) };
  } catch (err) {
    if (isTesseraError(err)) return { code: err.code };
    throw err;
  }
}

function normalise(v: unknown): unknown {
  if (Buffer.isBuffer(v)) return v.toString('hex');
  if (Array.isArray(v)) return v.map(normalise);
  if (v !== null && typeof v === 'object') {
    const o = { ...(v as Record<string, unknown>) };
    // Not comparable: ids are allocated per store, usedBytes is unknown to a gateway (0), time differs.
    delete o.id;
    delete o.usedBytes;
    delete o.createdAt;
    delete o.objectSizeBytes;
    return o;
  }
  return v;
}

test('management and IO behave like MemoryVolumeStore (same script, same outcomes)', async () => {
  const b = await openTestBed({ cluster: { objectSizeBytes: OBJ } });
  const mem = new MemoryVolumeStore();
  try {
    const stores: VolumeStore[] = [mem, b.store];
    const handles: Array<Map<string, Volume>> = [new Map(), new Map()];
    const script: Array<[string, (s: VolumeStore, h: Map<string, Volume>) => unknown]> = [
      ['create bad name', (s) => s.create('-bad', 1 << 20)],
      ['create bad name 2', (s) => s.create('a/b', 1 << 20)],
      ['create empty name', (s) => s.create('', 1 << 20)],
      ['create size 0', (s) => s.create('x', 0)],
      ['create size unaligned', (s) => s.create('x', 1000)],
      ['create size too big', (s) => s.create('x', 2 ** 51)],
      ['create a', (s) => s.create('a', 4 * OBJ)],
      ['create b', (s) => s.create('b', 1 << 20)],
      ['create a again', (s) => s.create('a', 1 << 20)],
      ['list', (s) => s.list()],
      ['info a', (s) => s.info('a')],
      ['info missing', (s) => s.info('nope')],
      ['open missing', (s) => s.open('nope')],
      ['open a', (s, h) => void h.set('a', s.open('a'))],
      ['open b', (s, h) => void h.set('b', s.open('b'))],
      ['write', (_s, h) => h.get('a')!.write(1000, pattern(100_000, 1), false)],
      ['read', async (_s, h) => {
        const out = Buffer.alloc(4 * OBJ);
        await h.get('a')!.read(0, out.length, out, 0);
        return out;
      }],
      ['read past end', (_s, h) => h.get('a')!.read(4 * OBJ - 512, 1024, Buffer.alloc(1024), 0)],
      ['write past end', (_s, h) => h.get('a')!.write(4 * OBJ, Buffer.alloc(512), false)],
      ['negative offset', (_s, h) => h.get('a')!.writeZeroes(-512, 512, false, true)],
      ['block status', (_s, h) => h.get('a')!.blockStatus(0, 4 * OBJ)],
      ['trim whole object 1', (_s, h) => h.get('a')!.trim(OBJ, OBJ, false)],
      ['block status after trim', (_s, h) => h.get('a')!.blockStatus(0, 4 * OBJ)],
      ['trim partial', (_s, h) => h.get('a')!.trim(2000, 3000, false)],
      ['zeroes no trim', (_s, h) => h.get('a')!.writeZeroes(0, OBJ, false, false)],
      ['block status after zeroes', (_s, h) => h.get('a')!.blockStatus(0, 4 * OBJ)],
      ['write object 3', (_s, h) => h.get('a')!.write(3 * OBJ + 512, pattern(4096, 2), true)],
      ['flush', (_s, h) => h.get('a')!.flush()],
      ['read all', async (_s, h) => {
        const out = Buffer.alloc(4 * OBJ);
        await h.get('a')!.read(0, out.length, out, 0);
        return out;
      }],
      ['shrink over data', (s) => s.resize('a', 3 * OBJ)],
      ['shrink bad size', (s) => s.resize('a', 12345)],
      ['resize missing', (s) => s.resize('nope', 1 << 20)],
      ['shrink discarding', (s) => s.resize('a', 3 * OBJ + 1024, { discardData: true })],
      ['size after shrink', (_s, h) => h.get('a')!.sizeBytes()],
      ['grow', (s) => s.resize('a', 4 * OBJ)],
      ['tail reads zeros after regrow', async (_s, h) => {
        const out = Buffer.alloc(OBJ);
        await h.get('a')!.read(3 * OBJ, OBJ, out, 0);
        return out;
      }],
      ['shrink without data beyond', (s) => s.resize('b', 512 * KiB)],
      ['rename to bad', (s) => s.rename('a', 'bad name')],
      ['rename to existing', (s) => s.rename('a', 'b')],
      ['rename missing', (s) => s.rename('nope', 'c')],
      ['rename a to c', (s) => s.rename('a', 'c')],
      ['handle follows rename', (_s, h) => h.get('a')!.name()],
      ['info old name', (s) => s.info('a')],
      ['list after rename', (s) => s.list()],
      ['delete missing', (s) => s.delete('a')],
      ['delete c', (s) => s.delete('c')],
      ['read after delete', (_s, h) => h.get('a')!.read(0, 512, Buffer.alloc(512), 0)],
      ['write after delete', (_s, h) => h.get('a')!.write(0, Buffer.alloc(512), false)],
      ['flush after delete', (_s, h) => h.get('a')!.flush()],
      ['name after delete', (_s, h) => h.get('a')!.name()],
      ['list after delete', (s) => s.list()],
      ['devices', (s) => s.devices()],
      ['recreate c', (s) => s.create('c', 1 << 20)],
      ['new c is empty', async (s) => {
        const out = Buffer.alloc(4096);
        await s.open('c').read(0, 4096, out, 0);
        return out;
      }],
    ];
    for (const [name, step] of script) {
      const want = await outcome(() => step(stores[0], handles[0]));
      const got = await outcome(() => step(stores[1], handles[1]));
      assert.deepEqual(got, want, `step "${name}"`);
    }
  } finally {
    await b.close();
  }
});

test('a handle follows resize, rename and delete made elsewhere, through the map', async () => {
  const b = await openTestBed();
  try {
    await b.store.create('v', 1 << 20);
    const vol = b.store.open('v');
    await vol.write(0, pattern(4096, 1), false);
    b.cluster.mutateVolume('v', { sizeBytes: 2 << 20 });
    await sleep(b.clock, 1);
    assert.equal(vol.sizeBytes(), 2 << 20);
    await vol.write((2 << 20) - 4096, pattern(4096, 2), false); // beyond the old size
    b.cluster.mutateVolume('v', { newName: 'w' });
    await sleep(b.clock, 1);
    assert.equal(vol.name(), 'w');
    assert.equal(b.store.info('w').sizeBytes, 2 << 20);
    b.cluster.mutateVolume('w', { sizeBytes: 1 << 20 });
    await sleep(b.clock, 1);
    await assert.rejects(vol.write((2 << 20) - 4096, Buffer.alloc(4096), false), (e: unknown) => isTesseraError(e, 'ERR_RANGE'));
    b.cluster.mutateVolume('w', { remove: true });
    await sleep(b.clock, 1);
    await assert.rejects(vol.read(0, 512, Buffer.alloc(512), 0), (e: unknown) => isTesseraError(e, 'ERR_NOT_FOUND'));
    assert.equal(vol.name(), 'w');
    assert.deepEqual(b.store.list(), []);
  } finally {
    await b.close();
  }
});

test('IO in flight when the volume is deleted fails ERR_NOT_FOUND instead of retrying on', async () => {
  const b = await openTestBed({ client: { requestTimeoutMs: 1_000 } });
  try {
    await b.store.create('v', 1 << 20);
    const vol = b.store.open('v');
    b.cluster.faultHook = () => ({ kind: 'status', status: Status.Busy });
    const w = vol.write(0, pattern(512, 1), false);
    b.clock.setTimer(50, () => b.cluster.mutateVolume('v', { remove: true }));
    await assert.rejects(w, (e: unknown) => isTesseraError(e, 'ERR_NOT_FOUND'));
    assert.ok(b.clock.nowMs() < 2_000);
  } finally {
    await b.close();
  }
});

test('a second gateway sees volumes created by the first, and management waits for the map', async () => {
  const b = await openTestBed();
  const other = await ClusterVolumeStore.open({ mon: b.cluster.mon, transport: b.cluster.transport, clock: b.clock });
  try {
    const info = await b.store.create('shared', 1 << 20);
    // create() resolved: this store's map already holds it, synchronously.
    assert.equal(b.store.info('shared').id, info.id);
    const mine = b.store.open('shared');
    await mine.write(4096, pattern(8192, 5), false);
    await sleep(b.clock, 1);
    const theirs = other.open('shared');
    const out = Buffer.alloc(8192);
    await theirs.read(4096, 8192, out, 0);
    assert.ok(out.equals(pattern(8192, 5)));
    // Management on the other gateway by a name its map may not have yet: it fetches once.
    b.cluster.holdMaps();
    await b.store.create('fresh', 1 << 20);
    await other.rename('fresh', 'fresh2');
    assert.equal(other.info('fresh2').sizeBytes, 1 << 20);
    b.cluster.releaseMaps();
    await other.resize('shared', 2 << 20);
    assert.equal(other.info('shared').sizeBytes, 2 << 20);
    await sleep(b.clock, 1);
    assert.equal(mine.sizeBytes(), 2 << 20);
  } finally {
    await other.close();
    await b.close();
  }
});

test('management whose effect never reaches the map fails ERR_TIMEOUT after mapWaitMs', async () => {
  const b = await openTestBed({ mapWaitMs: 2_000 });
  try {
    // A monitor that acknowledges but whose map never shows the change.
    const realResize = b.cluster.mon.resizeVolume;
    await b.store.create('v', 1 << 20);
    b.cluster.mon.resizeVolume = async (name, sizeBytes) => ({ ...b.cluster.volume(name), sizeBytes });
    const t0 = b.clock.nowMs();
    await assert.rejects(b.store.resize('v', 2 << 20), (e: unknown) => isTesseraError(e, 'ERR_TIMEOUT'));
    assert.ok(b.clock.nowMs() - t0 >= 2_000 && b.clock.nowMs() - t0 < 2_500);
    b.cluster.mon.resizeVolume = realResize;
  } finally {
    await b.close();
  }
});

test('stats: per volume, measured in the client, shared by handles; devices are empty', async () => {
  const b = await openTestBed({ cluster: { latencyMs: () => 2 } });
  try {
    await b.store.create('v', 1 << 20);
    await b.store.create('w', 1 << 20);
    const v1 = b.store.open('v');
    const v2 = b.store.open('v');
    await v1.write(0, Buffer.alloc(8192, 1), false);
    await v2.read(0, 4096, Buffer.alloc(4096), 0);
    await v1.trim(0, 4096, false);
    await v2.flush();
    await assert.rejects(v1.read(1 << 20, 512, Buffer.alloc(512), 0));
    const s = v1.stats();
    assert.deepEqual([s.write.ops, s.write.bytes, s.read.ops, s.read.bytes, s.discard.ops, s.flush.ops, s.inFlight], [1, 8192, 1, 4096, 1, 1, 0]);
    assert.ok(s.write.latencyUsSum >= 2_000, 'latency measured on the injected clock');
    assert.deepEqual(v2.stats(), s);
    const all = b.store.stats();
    assert.deepEqual(
      all.volumes.map((x) => [x.name, x.stats.write.ops]),
      [
        ['v', 1],
        ['w', 0],
      ],
    );
    assert.deepEqual(all.devices, []);
    assert.deepEqual(b.store.devices(), []);
    const p = v1.write(0, Buffer.alloc(512), false);
    assert.equal(v1.stats().inFlight, 1);
    await p;
  } finally {
    await b.close();
  }
});

test('after close: management and IO fail ERR_CLOSED', async () => {
  const b = await openTestBed();
  await b.store.create('v', 1 << 20);
  const vol = b.store.open('v');
  await b.store.close();
  await assert.rejects(b.store.create('x', 1 << 20), (e: unknown) => isTesseraError(e, 'ERR_CLOSED'));
  await assert.rejects(vol.write(0, Buffer.alloc(512), false), (e: unknown) => isTesseraError(e, 'ERR_CLOSED'));
  assert.throws(() => b.store.open('v'), (e: unknown) => isTesseraError(e, 'ERR_CLOSED'));
  await b.close();
});

test('close() of a store from open() closes the transport it was given (its sockets would keep a gateway alive)', async () => {
  const b = await openTestBed();
  let closes = 0;
  const transport = {
    request: (osd: Parameters<typeof b.cluster.transport.request>[0], req: Parameters<typeof b.cluster.transport.request>[1], timeoutMs: number) =>
      b.cluster.transport.request(osd, req, timeoutMs),
    close: async () => {
      closes++;
    },
  };
  const store = await ClusterVolumeStore.open({ mon: b.cluster.mon, transport, clock: b.clock });
  await store.create('t', 1 << 20);
  await store.open('t').write(0, pattern(4096, 1), false);
  assert.equal(closes, 0);
  await store.close();
  await store.close();
  assert.equal(closes, 1);
  await b.close();
});
