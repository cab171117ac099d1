// pools.json (pool/registry.ts): parsing refuses what the daemon must not
// guess about, and the edits keep names and devices unique.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { emptyRegistry, formatRegistry, parseRegistry, poolOfDevice, withDevices, withPool, withoutPool } from './registry.js';

const U = 'a'.repeat(32);

test('round trip; edits keep names and devices unique', () => {
  let r = withPool(emptyRegistry(), { name: 'fast', uuid: U, devices: ['/d/a', '/d/b'] });
  r = withPool(r, { name: 'slow', uuid: U.replace(/a/g, 'b'), devices: ['/d/c'] });
  assert.deepEqual(parseRegistry(formatRegistry(r), 'pools.json'), r);
  assert.equal(poolOfDevice(r, '/d/c')?.name, 'slow');
  assert.throws(() => withPool(r, { name: 'fast', uuid: U, devices: ['/d/x'] }), /already exists/);
  assert.throws(() => withPool(r, { name: 'x', uuid: U, devices: ['/d/a'] }), /already in pool fast/);
  assert.throws(() => withPool(r, { name: 'default', uuid: U, devices: ['/d/x'] }), /data dir's own pool/);
  assert.throws(() => withPool(r, { name: 'bad name', uuid: U, devices: ['/d/x'] }), /bad pool name/);
  assert.throws(() => withDevices(r, 'slow', ['/d/c', '/d/a']), /listed in pools/);
  r = withDevices(r, 'slow', ['/d/c', '/d/d']);
  assert.deepEqual(poolOfDevice(r, '/d/d')?.name, 'slow');
  assert.deepEqual(withoutPool(r, 'fast').pools.map((p) => p.name), ['slow']);
});

test('parse refuses bad JSON, unknown fields, relative paths, repeated names and shared devices, naming the problem', () => {
  const bad: Array<[string, RegExp]> = [
    ['{', /not valid JSON/],
    [JSON.stringify({ version: 2, pools: [] }), /version/],
    [JSON.stringify({ version: 1, pools: [{ name: 'a', uuid: U, devices: ['rel/x'] }] }), /absolute/],
    [JSON.stringify({ version: 1, pools: [{ name: 'a', uuid: U, devices: [], extra: 1 }] }), /pools\.0/],
    [JSON.stringify({ version: 1, pools: [{ name: 'a', uuid: 'xyz', devices: [] }] }), /uuid/],
    [JSON.stringify({ version: 1, pools: [{ name: 'a', uuid: U, devices: [] }, { name: 'a', uuid: U, devices: [] }] }), /repeated/],
    [JSON.stringify({ version: 1, pools: [{ name: 'a', uuid: U, devices: ['/x'] }, { name: 'b', uuid: U, devices: ['/x'] }] }), /listed in pools a and b/],
  ];
  for (const [text, re] of bad) assert.throws(() => parseRegistry(text, 'pools.json'), (e: Error & { code?: string }) => e.code === 'ERR_FORMAT' && re.test(e.message), text);
});
