// KeyedLock: runs on one key are serialized in arrival order; other keys overlap.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeyedLock } from './key-lock.js';

test('runs on one key never interleave; different keys overlap; idle() waits for all', async () => {
  const lock = new KeyedLock();
  const log: string[] = [];
  const step = (name: string, ms: number) => async () => {
    log.push(`${name}+`);
    await new Promise((r) => setTimeout(r, ms));
    log.push(`${name}-`);
    return name;
  };
  const runs = [lock.run('a', step('a1', 20)), lock.run('a', step('a2', 1)), lock.run('b', step('b1', 5))];
  assert.equal(lock.size, 2);
  await lock.idle();
  assert.deepEqual(await Promise.all(runs), ['a1', 'a2', 'b1']);
  assert.ok(log.indexOf('a1-') < log.indexOf('a2+'), 'a2 waits for a1');
  assert.ok(log.indexOf('b1+') < log.indexOf('a1-'), 'b1 overlaps a1');
  assert.equal(lock.size, 0);
  await assert.rejects(lock.run('a', async () => Promise.reject(new Error('x'))), /x/);
  assert.equal(await lock.run('a', async () => 'after a failure'), 'after a failure');
});
