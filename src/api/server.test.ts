// Management API: every route against MemoryVolumeStore (through fastify's
// inject, no socket), every error code's HTTP status, and the real listeners
// (unix socket with ApiClient, TCP with the bearer token).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { MemoryVolumeStore } from '../volume/memory.js';
import { TesseraError, type ErrorCode } from '../stdx/errors.js';
import type { VolumeStore } from '../volume/types.js';
import type { IscsiAdmin, IscsiTargetInfo, PoolAdmin, PoolInfo } from './types.js';
import { ApiServer, buildApi } from './server.js';
import { ApiClient } from './client.js';
import { ApiError, HTTP_STATUS_OF_CODE } from './errors.js';

const GiB = 2 ** 30;

async function call(app: ReturnType<typeof buildApi>, method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE', url: string, payload?: unknown) {
  const res = await app.inject({ method, url, payload: payload as object | undefined });
  return { status: res.statusCode, body: res.body ? (JSON.parse(res.body) as Record<string, unknown>) : undefined };
}

test('volume routes: create, list, info, resize, rename, delete', async () => {
  const store = new MemoryVolumeStore();
  const app = buildApi({ store });
  let r = await call(app, 'POST', '/v1/volumes', { name: 'a', sizeBytes: GiB });
  assert.equal(r.status, 201);
  assert.equal(r.body?.name, 'a');
  assert.equal(r.body?.sizeBytes, GiB);
  r = await call(app, 'POST', '/v1/volumes', { name: 'b', sizeBytes: '2G' });
  assert.equal(r.status, 201);
  assert.equal(r.body?.sizeBytes, 2 * GiB);
  await store.open('a').write(0, Buffer.alloc(4096, 1), false);

  r = await call(app, 'GET', '/v1/volumes');
  assert.equal(r.status, 200);
  assert.deepEqual(
    (r.body?.volumes as Array<{ name: string }>).map((v) => v.name),
    ['a', 'b'],
  );
  assert.deepEqual(r.body?.totals, { count: 2, sizeBytes: 3 * GiB, usedBytes: 65536 });

  r = await call(app, 'GET', '/v1/volumes/a');
  assert.equal(r.status, 200);
  assert.equal(r.body?.usedBytes, 65536);

  r = await call(app, 'PATCH', '/v1/volumes/a', { sizeBytes: 4 * GiB });
  assert.equal(r.status, 200);
  assert.equal(r.body?.sizeBytes, 4 * GiB);

  r = await call(app, 'PATCH', '/v1/volumes/a', { newName: 'c', sizeBytes: '3G' });
  assert.equal(r.status, 200);
  assert.equal(r.body?.name, 'c');
  assert.equal(r.body?.sizeBytes, 3 * GiB);

  r = await call(app, 'DELETE', '/v1/volumes/c');
  assert.equal(r.status, 204);
  assert.equal(r.body, undefined);
  assert.deepEqual(
    store.list().map((v) => v.name),
    ['b'],
  );
});

test('volume route errors: 404, 409, 400, shrink', async () => {
  const store = new MemoryVolumeStore();
  const app = buildApi({ store });
  await store.create('a', GiB);
  await store.create('b', GiB);
  await store.open('a').write(GiB - 4096, Buffer.alloc(4096, 1), false);

  const expect = async (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload: unknown, status: number, code: string, msg?: RegExp) => {
    const r = await call(app, method, url, payload);
    assert.equal(r.status, status, `${method} ${url} ${JSON.stringify(payload)} -> ${JSON.stringify(r.body)}`);
    assert.equal(r.body?.code, code);
    assert.equal(typeof r.body?.message, 'string');
    if (msg) assert.match(r.body?.message as string, msg);
  };
  await expect('GET', '/v1/volumes/nope', undefined, 404, 'ERR_NOT_FOUND', /no volume named "nope"/);
  await expect('PATCH', '/v1/volumes/nope', { sizeBytes: GiB }, 404, 'ERR_NOT_FOUND');
  await expect('DELETE', '/v1/volumes/nope', undefined, 404, 'ERR_NOT_FOUND');
  await expect('POST', '/v1/volumes', { name: 'a', sizeBytes: GiB }, 409, 'ERR_EXISTS');
  await expect('PATCH', '/v1/volumes/a', { newName: 'b' }, 409, 'ERR_EXISTS');
  await expect('PATCH', '/v1/volumes/a', { sizeBytes: GiB / 2 }, 409, 'ERR_SHRINK');
  await expect('POST', '/v1/volumes', { name: 'x', sizeBytes: 1000 }, 400, 'ERR_INVALID', /multiple of 512/);
  await expect('POST', '/v1/volumes', { name: 'x', sizeBytes: '10Q' }, 400, 'ERR_INVALID', /field "sizeBytes": bad size "10Q"/);
  await expect('POST', '/v1/volumes', { name: 'x', sizeBytes: -5 }, 400, 'ERR_INVALID', /field "sizeBytes"/);
  await expect('POST', '/v1/volumes', { name: '/bad', sizeBytes: GiB }, 400, 'ERR_INVALID', /bad volume name/);
  await expect('POST', '/v1/volumes', { sizeBytes: GiB }, 400, 'ERR_INVALID', /field "name"/);
  await expect('POST', '/v1/volumes', { name: 'x', sizeBytes: GiB, colour: 'red' }, 400, 'ERR_INVALID', /unknown field\(s\) "colour"/);
  await expect('PATCH', '/v1/volumes/a', {}, 400, 'ERR_INVALID', /nothing to change/);
  await expect('PATCH', '/v1/volumes/a', { newName: 'bad name', sizeBytes: 2 * GiB }, 400, 'ERR_INVALID', /bad volume name/);
  assert.equal(store.info('a').sizeBytes, GiB, 'a rejected rename must not leave a resize behind');
  await expect('GET', '/v1/nothing', undefined, 404, 'ERR_NO_ROUTE');
  const bad = await app.inject({ method: 'POST', url: '/v1/volumes', payload: '{"name":', headers: { 'content-type': 'application/json' } });
  assert.equal(bad.statusCode, 400);
  assert.equal(JSON.parse(bad.body).code, 'ERR_INVALID');

  // shrink with discardData succeeds
  const r = await call(app, 'PATCH', '/v1/volumes/a', { sizeBytes: GiB / 2, discardData: true });
  assert.equal(r.status, 200);
  assert.equal(r.body?.sizeBytes, GiB / 2);
});

/** A store whose every operation fails with `code`. */
function failingStore(code: ErrorCode): VolumeStore {
  const fail = (): never => {
    throw new TesseraError(code, `injected ${code}`);
  };
  return {
    list: fail,
    info: fail,
    create: async () => fail(),
    resize: async () => fail(),
    rename: async () => fail(),
    delete: async () => fail(),
    open: fail,
    devices: fail,
    stats: fail,
    close: async () => {},
  };
}

test('every TesseraError code maps to its HTTP status on every route', async () => {
  const codes: ErrorCode[] = [
    'ERR_DEVICE_IO', 'ERR_DEVICE_FLUSH', 'ERR_CHECKSUM', 'ERR_NO_SPACE', 'ERR_RANGE', 'ERR_INVALID', 'ERR_NOT_FOUND',
    'ERR_EXISTS', 'ERR_BUSY', 'ERR_SHRINK', 'ERR_FORMAT', 'ERR_LIMIT', 'ERR_CLOSED', 'ERR_TIMEOUT', 'ERR_PROTOCOL',
  ];
  const expected: Partial<Record<ErrorCode, number>> = { ERR_NOT_FOUND: 404, ERR_EXISTS: 409, ERR_INVALID: 400, ERR_SHRINK: 409, ERR_NO_SPACE: 507 };
  for (const code of codes) {
    const app = buildApi({ store: failingStore(code) });
    const routes: Array<['GET' | 'POST' | 'PATCH' | 'DELETE', string, unknown]> = [
      ['GET', '/v1/volumes', undefined],
      ['GET', '/v1/volumes/v', undefined],
      ['POST', '/v1/volumes', { name: 'v', sizeBytes: 4096 }],
      ['PATCH', '/v1/volumes/v', { sizeBytes: 4096 }],
      ['DELETE', '/v1/volumes/v', undefined],
      ['GET', '/v1/devices', undefined],
      ['GET', '/v1/stats', undefined],
      ['GET', '/v1/status', undefined],
    ];
    for (const [method, url, payload] of routes) {
      const r = await call(app, method, url, payload);
      assert.equal(r.status, HTTP_STATUS_OF_CODE[code], `${code} on ${method} ${url}`);
      if (expected[code] !== undefined) assert.equal(r.status, expected[code]);
      assert.deepEqual(r.body, { code, message: `injected ${code}` });
    }
  }
});

test('an unexpected exception is a 500 ERR_INTERNAL and is logged', async () => {
  const store = new MemoryVolumeStore();
  store.list = () => {
    throw new Error('boom');
  };
  const logged: string[] = [];
  const { Logger } = await import('../stdx/log.js');
  const app = buildApi({ store, log: new Logger('api', { sink: (l) => logged.push(l) }) });
  const r = await call(app, 'GET', '/v1/volumes');
  assert.equal(r.status, 500);
  assert.equal(r.body?.code, 'ERR_INTERNAL');
  assert.match(logged.join(''), /GET \/v1\/volumes failed: Error: boom/);
});

test('devices, stats and status', async () => {
  const store = new MemoryVolumeStore();
  await store.create('a', GiB);
  await store.open('a').write(0, Buffer.alloc(512), false);
  let now = 1_000_000;
  const app = buildApi({
    store,
    nowMs: () => now,
    status: () => ({ dataDir: '/d', nbd: { host: '127.0.0.1', port: 10809, uris: ['nbd://127.0.0.1:10809/a'] }, api: { socket: '/d/s', port: undefined }, device: { path: '/d/dev0.img' } }),
  });
  let r = await call(app, 'GET', '/v1/devices');
  assert.deepEqual(r.body, { devices: [] });
  r = await call(app, 'GET', '/v1/stats');
  assert.equal(r.status, 200);
  const vols = r.body?.volumes as Array<{ name: string; stats: { write: { ops: number } } }>;
  assert.equal(vols[0].name, 'a');
  assert.equal(vols[0].stats.write.ops, 1);
  now += 65_000;
  r = await call(app, 'GET', '/v1/status');
  assert.equal(r.status, 200);
  assert.equal(r.body?.uptimeS, 65);
  assert.equal(r.body?.pid, process.pid);
  assert.deepEqual(r.body?.volumes, { count: 1, sizeBytes: GiB, usedBytes: 65536 });
  assert.equal((r.body?.devices as { count: number }).count, 0);
  assert.equal((r.body?.daemon as { dataDir: string }).dataDir, '/d');
});

test('mutations are serialized: concurrent creates of one name give one 201 and one 409', async () => {
  const app = buildApi({ store: new MemoryVolumeStore() });
  const results = await Promise.all([1, 2, 3].map(() => call(app, 'POST', '/v1/volumes', { name: 'same', sizeBytes: GiB })));
  assert.deepEqual(results.map((r) => r.status).sort(), [201, 409, 409]);
});

test('listeners: unix socket (0600) with ApiClient; TCP needs the token for writes', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tessera-api-'));
  const socketPath = path.join(dir, 'api.sock');
  const store = new MemoryVolumeStore();
  const server = await ApiServer.start({ store, socketPath, tcp: { port: 0, token: 'sekret' } });
  try {
    assert.equal(statSync(socketPath).mode & 0o777, 0o600);
    const client = new ApiClient({ target: { socketPath } });
    const created = await client.createVolume({ name: 'v1', sizeBytes: GiB });
    assert.equal(created.name, 'v1');
    assert.equal((await client.listVolumes()).totals.count, 1);
    assert.equal((await client.getVolume('v1')).sizeBytes, GiB);
    assert.equal((await client.patchVolume('v1', { newName: 'v2' })).name, 'v2');
    await assert.rejects(client.getVolume('v1'), (e: ApiError) => e instanceof ApiError && e.code === 'ERR_NOT_FOUND' && e.httpStatus === 404);
    assert.deepEqual(await client.devices(), { devices: [] });
    assert.equal((await client.stats()).volumes.length, 1);
    assert.equal((await client.status()).volumes.count, 1);

    assert.ok(server.tcpPort !== undefined && server.tcpPort > 0);
    const anon = new ApiClient({ target: { host: '127.0.0.1', port: server.tcpPort } });
    assert.equal((await anon.listVolumes()).totals.count, 1, 'reads are open on TCP');
    await assert.rejects(anon.createVolume({ name: 'x', sizeBytes: GiB }), (e: ApiError) => e.code === 'ERR_UNAUTHORIZED' && e.httpStatus === 401);
    const wrong = new ApiClient({ target: { host: '127.0.0.1', port: server.tcpPort }, token: 'sekreT' });
    await assert.rejects(wrong.deleteVolume('v2'), (e: ApiError) => e.code === 'ERR_UNAUTHORIZED');
    const authed = new ApiClient({ target: { host: '127.0.0.1', port: server.tcpPort }, token: 'sekret' });
    await authed.deleteVolume('v2');
    assert.equal(store.list().length, 0);
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const gone = new ApiClient({ target: { socketPath }, timeoutMs: 1000 });
  await assert.rejects(gone.listVolumes(), (e: ApiError) => e.code === 'ERR_UNREACHABLE' && /no socket there/.test(e.message));
});

test('pool routes: bad bodies are 400 naming the field and never reach the pools; a daemon without pools says so', async () => {
  const calls: string[] = [];
  const info = { name: 'p' } as unknown as PoolInfo;
  const pools: PoolAdmin = {
    list: () => [info],
    info: () => info,
    create: async () => (calls.push('create'), info),
    setAlarms: async () => (calls.push('setAlarms'), info),
    delete: async () => void calls.push('delete'),
    addDevice: async () => (calls.push('addDevice'), info),
    failDevice: async () => (calls.push('failDevice'), info),
    replaceDevice: async () => (calls.push('replaceDevice'), info),
    removeDevice: async () => (calls.push('removeDevice'), info),
    partition: async () => (calls.push('partition'), { path: '/d', partitions: [] }),
    rebuild: () => (calls.push('rebuild'), info),
  };
  const app = buildApi({ store: new MemoryVolumeStore(), pools });
  const bad: Array<[string, string, unknown, RegExp]> = [
    ['POST', '/v1/pools', { name: 'p', devices: ['/a', '/b'], protection: 'raid7' }, /field "protection": must be mirror2, mirror3, raid5 or raid6/],
    ['POST', '/v1/pools', { name: 'p', devices: [], protection: 'raid5' }, /field "devices": give at least one device/],
    ['POST', '/v1/pools', { name: 'p', devices: ['/a'], protection: 'raid5', stripeWidth: 0 }, /field "stripeWidth"/],
    ['POST', '/v1/pools', { name: 'p', devices: ['/a'], protection: 'raid5', deviceSizeBytes: '8Q' }, /field "deviceSizeBytes"/],
    ['POST', '/v1/pools', { name: 'p', devices: ['/a'], protection: 'raid5', colour: 1 }, /unknown field\(s\) "colour"/],
    ['PATCH', '/v1/pools/p', { alarms: { warning: 1.5, critical: 0.9 } }, /field "alarms.warning"/],
    ['PATCH', '/v1/pools/p', {}, /field "alarms"/],
    ['POST', '/v1/pools/p/devices', {}, /field "path"/],
    ['POST', '/v1/devices/partition', { path: '/d', count: 0 }, /field "count"/],
    ['POST', '/v1/devices/partition', { path: '/d', count: 2, iopsLimit: -1 }, /field "iopsLimit"/],
    ['POST', '/v1/devices/replace', { path: '/a' }, /replace needs "newPath"/],
  ];
  for (const [method, url, payload, msg] of bad) {
    const r = await call(app, method as 'POST', url, payload);
    assert.equal(r.status, 400, `${method} ${url} ${JSON.stringify(payload)} -> ${JSON.stringify(r.body)}`);
    assert.equal(r.body?.code, 'ERR_INVALID');
    assert.match(r.body?.message as string, msg);
  }
  const unknown = await call(app, 'POST', '/v1/devices/explode', { path: '/a' });
  assert.deepEqual([unknown.status, unknown.body?.code], [404, 'ERR_NO_ROUTE']);
  assert.deepEqual(calls, [], 'no bad request reached the pools');

  const plain = buildApi({ store: new MemoryVolumeStore() });
  const r = await call(plain, 'GET', '/v1/pools', undefined);
  assert.deepEqual([r.status, r.body?.code], [400, 'ERR_INVALID']);
  assert.match(r.body?.message as string, /no disk pools/);
  const v = await call(plain, 'POST', '/v1/volumes', { name: 'x', sizeBytes: GiB, pool: 'p' });
  assert.deepEqual([v.status, v.body?.code], [400, 'ERR_INVALID']);
});

test('iSCSI routes: bad bodies and LUNs are 400 naming the field and never reach the daemon; a daemon without iSCSI says so', async () => {
  const calls: string[] = [];
  const info = { name: 'iqn.2026-11.a:b' } as unknown as IscsiTargetInfo;
  const iscsi: IscsiAdmin = {
    list: () => ({ portal: { host: '127.0.0.1', port: 3260 }, targets: [info] }),
    createTarget: async () => (calls.push('create'), info),
    deleteTarget: async () => void calls.push('delete'),
    mapLun: async () => (calls.push('map'), info),
    unmapLun: async () => (calls.push('unmap'), info),
    setInitiators: async () => (calls.push('initiators'), info),
    setChap: async () => (calls.push('chap'), info),
  };
  const app = buildApi({ store: new MemoryVolumeStore(), iscsi });
  const t = '/v1/iscsi/targets/iqn.2026-11.a:b';
  const bad: Array<[string, string, unknown, RegExp]> = [
    ['POST', '/v1/iscsi/targets', {}, /field "name"/],
    ['POST', '/v1/iscsi/targets', { name: 'iqn.2026-11.a:b', colour: 1 }, /unknown field\(s\) "colour"/],
    ['POST', '/v1/iscsi/targets', { name: 'iqn.2026-11.a:b', chap: { user: 'u' } }, /field "chap.secret"/],
    ['POST', '/v1/iscsi/targets', { name: 'iqn.2026-11.a:b', initiators: 'iqn.x' }, /field "initiators"/],
    ['POST', `${t}/luns`, { volume: 'v', lun: 16384 }, /field "lun"/],
    ['POST', `${t}/luns`, {}, /field "volume"/],
    ['DELETE', `${t}/luns/abc`, undefined, /LUN must be 0..16383/],
    ['DELETE', `${t}/luns/99999`, undefined, /LUN must be 0..16383/],
    ['PUT', `${t}/initiators`, { initiators: [1] }, /field "initiators.0"/],
    ['PUT', `${t}/chap`, {}, /field "chap"/],
  ];
  for (const [method, url, payload, msg] of bad) {
    const r = await call(app, method as 'POST', url, payload);
    assert.equal(r.status, 400, `${method} ${url} ${JSON.stringify(payload)} -> ${JSON.stringify(r.body)}`);
    assert.equal(r.body?.code, 'ERR_INVALID');
    assert.match(r.body?.message as string, msg);
  }
  assert.deepEqual(calls, [], 'no bad request reached the daemon');
  const good = await call(app, 'POST', `${t}/luns`, { volume: 'v', lun: 3 });
  assert.equal(good.status, 200);
  assert.deepEqual(calls, ['map']);

  const plain = buildApi({ store: new MemoryVolumeStore() });
  const r = await call(plain, 'GET', '/v1/iscsi/targets', undefined);
  assert.deepEqual([r.status, r.body?.code], [400, 'ERR_INVALID']);
  assert.match(r.body?.message as string, /serves no iSCSI/);
});
