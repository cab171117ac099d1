// Config resolution: defaults, file, flags, precedence, and error messages that
// name the bad field or flag.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolveConfig, DEFAULTS } from './config.js';
import { TESSERA_VERSION } from './version.js';

const cwd = '/srv/work';

function fails(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: Error & { code?: string }) => {
    assert.equal(err.code, 'ERR_INVALID');
    assert.match(err.message, pattern);
    return true;
  });
}

test('defaults: everything under ./tessera-data', () => {
  const c = resolveConfig({ cwd });
  assert.deepEqual(c, {
    dataDir: '/srv/work/tessera-data',
    nbd: { host: '127.0.0.1', port: 10809 },
    iscsi: { host: '127.0.0.1', port: 3260 },
    api: { socket: '/srv/work/tessera-data/tessera.sock', port: undefined },
    device: { path: '/srv/work/tessera-data/dev0.img', sizeBytes: 16 * 2 ** 30, directIo: 'off' },
    defaultVolume: { name: 'vol0', sizeBytes: 10 * 2 ** 30 },
    gateway: { idlePollUs: 100 },
  });
  assert.equal(DEFAULTS.nbdPort, 10809);
});

test('gateway.idlePollUs: 100 by default, from the file, the flag over the file, 0 = off; bad values named by flag or field', () => {
  const text = JSON.stringify({ gateway: { idlePollUs: 250 } });
  const file = { path: '/etc/tessera.json', text };
  assert.equal(resolveConfig({ cwd, file }).gateway.idlePollUs, 250);
  assert.equal(resolveConfig({ cwd, file, flags: { gateway: { idlePollUs: 0 } } }).gateway.idlePollUs, 0);
  fails(() => resolveConfig({ cwd, flags: { gateway: { idlePollUs: Number('abc') } } }), /--idle-poll-us: must be an integer number of microseconds/);
  fails(() => resolveConfig({ cwd, flags: { gateway: { idlePollUs: -1 } } }), /--idle-poll-us: must be 0..10000 \(0 = off\)/);
  fails(() => resolveConfig({ cwd, flags: { gateway: { idlePollUs: 10_001 } } }), /--idle-poll-us: must be 0..10000/);
  fails(() => resolveConfig({ cwd, file: { path: 'c.json', text: '{"gateway":{"idlePollUs":1.5}}' } }), /field "gateway.idlePollUs"/);
  fails(() => resolveConfig({ cwd, file: { path: 'c.json', text: '{"gateway":{"idlePoll":5}}' } }), /gateway/);
});

test('iSCSI portal: a port, -1 (the flag "off") for none, and bad values named by flag or field', () => {
  assert.deepEqual(resolveConfig({ cwd, flags: { iscsi: { port: 3261, host: '0.0.0.0' } } }).iscsi, { host: '0.0.0.0', port: 3261 });
  assert.equal(resolveConfig({ cwd, flags: { iscsi: { port: -1 } } }).iscsi.port, null);
  fails(() => resolveConfig({ cwd, flags: { iscsi: { port: Number('abc') } } }), /--iscsi-port: must be a port number or "off"/);
  fails(() => resolveConfig({ cwd, flags: { iscsi: { port: 70000 } } }), /--iscsi-port: must be 0..65535 or "off"/);
});

test('file values; relative paths are relative to the file; size strings', () => {
  const text = JSON.stringify({ dataDir: 'data', nbd: { port: 10900 }, device: { sizeBytes: '1T', directIo: 'off' }, defaultVolume: { name: 'boot', sizeBytes: 4096 } });
  const c = resolveConfig({ cwd, file: { path: '/etc/tessera/t.json', text } });
  assert.equal(c.dataDir, '/etc/tessera/data');
  assert.equal(c.api.socket, '/etc/tessera/data/tessera.sock');
  assert.equal(c.device.path, '/etc/tessera/data/dev0.img');
  assert.equal(c.nbd.port, 10900);
  assert.equal(c.device.sizeBytes, 2 ** 40);
  assert.equal(c.device.directIo, 'off');
  assert.deepEqual(c.defaultVolume, { name: 'boot', sizeBytes: 4096 });
});

test('flags override the file; flag paths are relative to the cwd', () => {
  const text = JSON.stringify({ dataDir: '/a', nbd: { host: '10.0.0.1', port: 1 }, api: { socket: '/a/s.sock' } });
  const c = resolveConfig({ cwd, file: { path: '/etc/t.json', text }, flags: { dataDir: 'mine', nbd: { port: 2 }, device: { sizeBytes: '2G' } } });
  assert.equal(c.dataDir, '/srv/work/mine');
  assert.equal(c.nbd.host, '10.0.0.1');
  assert.equal(c.nbd.port, 2);
  assert.equal(c.api.socket, '/a/s.sock'); // the file set it explicitly
  assert.equal(c.device.path, '/srv/work/mine/dev0.img');
  assert.equal(c.device.sizeBytes, 2 * 2 ** 30);
});

test('file errors name the file and the field', () => {
  const file = (obj: unknown) => ({ path: 't.json', text: JSON.stringify(obj) });
  fails(() => resolveConfig({ cwd, file: file({ nbd: { port: 70000 } }) }), /config file t\.json: field "nbd\.port": must be 0\.\.65535/);
  fails(() => resolveConfig({ cwd, file: file({ nbd: { port: '10809' } }) }), /field "nbd\.port": must be an integer port number/);
  fails(() => resolveConfig({ cwd, file: file({ device: { sizeBytes: '12X' } }) }), /field "device\.sizeBytes": bad size "12X"/);
  fails(() => resolveConfig({ cwd, file: file({ device: { sizeBytes: 1000 } }) }), /field "device\.sizeBytes": must be a positive multiple of 512/);
  fails(() => resolveConfig({ cwd, file: file({ device: { directIo: 'maybe' } }) }), /field "device\.directIo": must be "auto", "on" or "off"/);
  fails(() => resolveConfig({ cwd, file: file({ defaultVolume: { name: '-bad' } }) }), /field "defaultVolume\.name": must be 1-64/);
  fails(() => resolveConfig({ cwd, file: file({ nbd: { prot: 1 } }) }), /field "nbd\.prot": unknown field \(known fields: nbd\.host, nbd\.port\)/);
  fails(() => resolveConfig({ cwd, file: file({ datadir: 'x' }) }), /field "datadir": unknown field \(known fields: dataDir, nbd, iscsi, api, device, defaultVolume, gateway\)/);
  fails(() => resolveConfig({ cwd, file: file([1]) }), /config file t\.json: must be a JSON object/);
  fails(() => resolveConfig({ cwd, file: { path: 't.json', text: '{ "nbd": ' } }), /config file t\.json: not valid JSON/);
});

test('flag errors name the flag', () => {
  fails(() => resolveConfig({ cwd, flags: { nbd: { port: Number('abc') } } }), /--nbd-port: must be an integer port number/);
  fails(() => resolveConfig({ cwd, flags: { device: { sizeBytes: 'lots' } } }), /--device-size: bad size "lots"/);
  fails(() => resolveConfig({ cwd, flags: { defaultVolume: { sizeBytes: '100' } } }), /--volume-size: must be a positive multiple of 512/);
  fails(() => resolveConfig({ cwd, flags: { api: { port: -1 } } }), /--api-port: must be 0\.\.65535/);
});

test('a socket path too long for a unix socket is refused with advice', () => {
  fails(() => resolveConfig({ cwd, flags: { dataDir: '/' + 'd'.repeat(120) } }), /api\.socket: path .* is 1\d\d bytes, but a unix socket path may have at most 107/);
});

test('TESSERA_VERSION matches package.json', () => {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  assert.equal(TESSERA_VERSION, pkg.version);
});
