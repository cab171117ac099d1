// The LBA range lock behind COMPARE AND WRITE atomicity (SBC-4 5.3): shared holds
// never wait for each other, an exclusive hold waits for earlier overlapping holds and
// blocks later ones, non-overlapping ranges are independent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RangeLock } from './range-lock.js';

test('SBC-4 5.3: shared holds do not conflict; an exclusive one waits for earlier overlapping holds', async () => {
  const lock = new RangeLock();
  const w1 = lock.enter(0, 10, false);
  const w2 = lock.enter(5, 15, false);
  assert.ok(lock.ready(w1) && lock.ready(w2));
  const caw = lock.enter(8, 9, true);
  assert.equal(lock.ready(caw), false);
  const later = lock.enter(8, 20, false);
  assert.equal(lock.ready(later), false, 'a later write waits for the CAW');
  const apart = lock.enter(100, 200, false);
  assert.equal(lock.ready(apart), true, 'non-overlapping writes go ahead');
  const order: string[] = [];
  const cawDone = lock.wait(caw).then(() => order.push('caw'));
  const laterDone = lock.wait(later).then(() => order.push('later'));
  lock.leave(w1);
  await Promise.resolve();
  assert.deepEqual(order, []);
  lock.leave(w2);
  await cawDone;
  assert.deepEqual(order, ['caw']);
  lock.leave(caw);
  await laterDone;
  assert.deepEqual(order, ['caw', 'later']);
  lock.leave(later);
  lock.leave(apart);
  assert.equal(lock.size, 0);
});

test('SBC-4 5.3: overlapping exclusive holds are served in arrival order', async () => {
  const lock = new RangeLock();
  const a = lock.enter(0, 4, true);
  const b = lock.enter(2, 6, true);
  assert.equal(lock.ready(a), true);
  assert.equal(lock.ready(b), false);
  let bIn = false;
  const bDone = lock.wait(b).then(() => (bIn = true));
  await Promise.resolve();
  assert.equal(bIn, false);
  lock.leave(a);
  await bDone;
  assert.equal(bIn, true);
  lock.leave(b);
  lock.leave(b); // idempotent
  assert.equal(lock.size, 0);
});
