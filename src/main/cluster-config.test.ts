// Cluster config resolution: defaults < file < flags, errors naming the field.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveClusterConfig } from './cluster-config.js';

test('defaults: one local monitor, size-3 pool with min_size 2, embedded store', () => {
  const c = resolveClusterConfig({ cwd: '/srv' });
  assert.deepEqual(c.monitors, ['127.0.0.1:6780']);
  assert.deepEqual(c.etcd, []);
  assert.equal(c.defaultPool.size, 3);
  assert.equal(c.defaultPool.minSize, 2);
  assert.equal(c.osd.dataDir, '/srv/tessera-osd');
});

test('file values are relative to the file, flags override the file', () => {
  const text = JSON.stringify({ cluster: { monitors: ['10.0.0.1:6780', '10.0.0.2:6780'], defaultPool: { pgCount: 128 } }, osd: { dataDir: 'osd1', deviceSizeBytes: '1G', port: 7000 } });
  const c = resolveClusterConfig({ cwd: '/work', file: { path: '/etc/tessera/cluster.json', text }, flags: { osd: { port: 7001 } } });
  assert.deepEqual(c.monitors, ['10.0.0.1:6780', '10.0.0.2:6780']);
  assert.equal(c.defaultPool.pgCount, 128);
  assert.equal(c.osd.dataDir, '/etc/tessera/osd1');
  assert.equal(c.osd.deviceSizeBytes, 2 ** 30);
  assert.equal(c.osd.port, 7001);
});

test('bad values name the field', () => {
  const bad = (text: string, re: RegExp) =>
    assert.throws(() => resolveClusterConfig({ cwd: '/', file: { path: 'c.json', text } }), (err: Error & { code?: string }) => err.code === 'ERR_INVALID' && re.test(err.message));
  bad('{"cluster":{"monitors":["nohostport"]}}', /cluster\.monitors\.0.*host:port/);
  bad('{"cluster":{"defaultPool":{"pgCount":100}}}', /pgCount.*power of two/);
  bad('{"cluster":{"defaultPool":{"size":2,"minSize":3}}}', /minSize \(3\) must not exceed size \(2\)/);
  bad('{"osd":{"prot":1}}', /osd\.prot.*unknown field/);
  bad('{"osd":{"deviceSizeBytes":"12x"}}', /osd\.deviceSizeBytes/);
  bad('[1]', /must be a JSON object/);
  bad('{', /not valid JSON/);
});

test('gateway.idlePollUs: 100 by default, from the file, flags override; bad values name the field', () => {
  assert.equal(resolveClusterConfig({ cwd: '/' }).gateway.idlePollUs, 100);
  const text = JSON.stringify({ gateway: { idlePollUs: 40 } });
  assert.equal(resolveClusterConfig({ cwd: '/', file: { path: 'c.json', text } }).gateway.idlePollUs, 40);
  assert.equal(resolveClusterConfig({ cwd: '/', file: { path: 'c.json', text }, flags: { gateway: { idlePollUs: 0 } } }).gateway.idlePollUs, 0);
  for (const v of ['-1', '10001', '2.5', '"fast"']) {
    assert.throws(
      () => resolveClusterConfig({ cwd: '/', file: { path: 'c.json', text: `{"gateway":{"idlePollUs":${v}}}` } }),
      (err: Error & { code?: string }) => err.code === 'ERR_INVALID' && /gateway\.idlePollUs/.test(err.message),
      v,
    );
  }
});

test('osd.directIo: off by default, from the file or the flags; other values name the field', () => {
  assert.equal(resolveClusterConfig({ cwd: '/' }).osd.directIo, 'off');
  const text = JSON.stringify({ osd: { directIo: 'auto' } });
  assert.equal(resolveClusterConfig({ cwd: '/', file: { path: 'c.json', text } }).osd.directIo, 'auto');
  assert.equal(resolveClusterConfig({ cwd: '/', file: { path: 'c.json', text }, flags: { osd: { directIo: 'on' } } }).osd.directIo, 'on');
  assert.throws(
    () => resolveClusterConfig({ cwd: '/', file: { path: 'c.json', text: '{"osd":{"directIo":"maybe"}}' } }),
    (err: Error & { code?: string }) => err.code === 'ERR_INVALID' && /osd\.directIo/.test(err.message),
  );
});

test('mon.advertiseHost: unset by default (derived from mon.host at start), a host name from the file, bad values name the field', () => {
  assert.equal(resolveClusterConfig({ cwd: '/' }).mon.advertiseHost, null);
  const text = JSON.stringify({ mon: { host: '0.0.0.0', advertiseHost: 'mon1.example.org' } });
  assert.equal(resolveClusterConfig({ cwd: '/', file: { path: 'c.json', text } }).mon.advertiseHost, 'mon1.example.org');
  assert.throws(
    () => resolveClusterConfig({ cwd: '/', file: { path: 'c.json', text: '{"mon":{"advertiseHost":"a b/c"}}' } }),
    (err: Error & { code?: string }) => err.code === 'ERR_INVALID' && /mon\.advertiseHost/.test(err.message),
  );
});
