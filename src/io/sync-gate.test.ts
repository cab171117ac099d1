// SyncGate's two policies on a virtual clock (io/sync-gate.ts): 'count' closes
// after a few slow IOs in a row, 'stall' only when slow IOs held the event loop
// for more than its share of a window; a closed gate reopens after backoffMs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SyncGate } from './sync-gate.js';

const count = (): SyncGate => new SyncGate({ policy: 'count', slowUs: 150, backoffMs: 250, slowBudget: 4 });
const stall = (): SyncGate => new SyncGate({ policy: 'stall', slowUs: 150, backoffMs: 250, windowMs: 100, stallBudgetFraction: 0.2 });

test("'count': four slow IOs in a row close the gate for backoffMs, then it opens afresh", () => {
  const g = count();
  for (let i = 0; i < 3; i++) g.note(200, i);
  assert.equal(g.allowed(3), true);
  g.note(200, 3);
  assert.equal(g.closings, 1);
  assert.equal(g.allowed(100), false);
  assert.equal(g.allowed(252.9), false);
  assert.equal(g.allowed(253), true);
  // afresh: three slow ones do not close it again
  for (let i = 0; i < 3; i++) g.note(200, 254 + i);
  assert.equal(g.allowed(260), true);
});

test("'count': fast IOs wear the score down by 1/32 each", () => {
  const g = count();
  for (let i = 0; i < 3; i++) g.note(200, 0);
  for (let i = 0; i < 32; i++) g.note(10, 1);
  g.note(200, 2); // score 3 again, not 4
  assert.equal(g.allowed(3), true);
  g.note(200, 3);
  assert.equal(g.allowed(4), false);
});

test("'stall': slow IOs that hold the loop for a fifth of a window close it; fewer do not", () => {
  const g = stall();
  // 66 writes of 300 us in one window: 19.8 ms, under the 20 ms budget
  for (let i = 0; i < 66; i++) g.note(300, i * 0.5);
  assert.equal(g.allowed(40), true);
  g.note(300, 40); // 20.1 ms
  assert.equal(g.closings, 1);
  assert.equal(g.allowed(289), false);
  assert.equal(g.allowed(290), true);
});

test("'stall': the budget is per window; fast IOs cost nothing; one very long stall closes at once", () => {
  const g = stall();
  // 3 % of 4,000 writes/s blocked for 0.5 ms: 6 ms per 100 ms window, for ten seconds
  let t = 0;
  for (let i = 0; i < 40_000; i++, t += 0.25) g.note(i % 33 === 0 ? 500 : 5, t);
  assert.equal(g.closings, 0);
  assert.equal(g.allowed(t), true);
  // 15 ms in each of two windows in a row: still under budget in each
  g.note(15_000, t + 200);
  g.note(15_000, t + 301);
  assert.equal(g.closings, 0);
  // but two in one window are not
  g.note(15_000, t + 500);
  g.note(15_000, t + 550);
  assert.equal(g.closings, 1);
  assert.equal(g.allowed(t + 799), false);
  // and a single 25 ms stall is over the budget by itself
  assert.equal(g.allowed(t + 801), true);
  g.note(25_000, t + 801);
  assert.equal(g.closings, 2);
  assert.equal(g.allowed(t + 802), false);
});

test('bad options are refused', () => {
  assert.throws(() => new SyncGate({ policy: 'count', slowUs: 150, backoffMs: 250 }), RangeError);
  assert.throws(() => new SyncGate({ policy: 'stall', slowUs: 150, backoffMs: 250, windowMs: 100, stallBudgetFraction: 1 }), RangeError);
  assert.throws(() => new SyncGate({ policy: 'stall', slowUs: 0, backoffMs: 250, windowMs: 100, stallBudgetFraction: 0.2 }), RangeError);
});
