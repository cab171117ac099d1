// IdlePoll on a virtual clock and a hand-run defer queue: windows open on
// poke, keep exactly one step pending, close on arrival (a hit) or at the
// deadline (a miss), back off after misses in a row, and never run when off.
// Plus one run on the real event loop: a poke keeps the loop turning for the
// window and then lets it sleep.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BACKOFF_POKES, IDLE_POLL_US_MAX, IdlePoll, MISSES_BEFORE_BACKOFF } from './idle-poll.js';

function harness(windowUs: number) {
  let nowUs = 0; // integer microseconds: no float drift in the deadline comparisons
  let queue: Array<() => void> = [];
  const poll = new IdlePoll(windowUs, { nowMs: () => nowUs / 1000, defer: (fn) => queue.push(fn) });
  return {
    poll,
    pending: () => queue.length,
    advanceUs(us: number) {
      nowUs += us;
    },
    /** Runs the deferred steps once (one loop turn). */
    turn() {
      const q = queue;
      queue = [];
      for (const fn of q) fn();
    },
    /** Turns until nothing is pending, `usPerTurn` apart; returns the number of turns. */
    spin(usPerTurn: number, maxTurns = 10_000): number {
      let turns = 0;
      while (queue.length > 0 && turns < maxTurns) {
        nowUs += usPerTurn;
        this.turn();
        turns++;
      }
      return turns;
    },
  };
}

test('a poke keeps the loop turning for the window, then it stops (a miss)', () => {
  const h = harness(100);
  h.poll.poke();
  assert.equal(h.poll.polling, true);
  assert.equal(h.pending(), 1);
  const turns = h.spin(10);
  assert.equal(turns, 10, 'steps of 10 us: the 10th is at the 100 us deadline');
  assert.equal(h.poll.polling, false);
  assert.deepEqual(h.poll.stats, { windows: 1, hits: 0, misses: 1, skipped: 0 });
});

test('an arrival inside the window closes it and counts a hit; the pending step then ends quietly', () => {
  const h = harness(100);
  h.poll.poke();
  h.advanceUs(30);
  h.turn();
  h.poll.noteArrival();
  assert.equal(h.poll.polling, false);
  h.spin(10);
  assert.equal(h.pending(), 0);
  assert.deepEqual(h.poll.stats, { windows: 1, hits: 1, misses: 0, skipped: 0 });
});

test('an arrival with no window open counts nothing', () => {
  const h = harness(100);
  h.poll.noteArrival();
  assert.deepEqual(h.poll.stats, { windows: 0, hits: 0, misses: 0, skipped: 0 });
});

test('pokes inside an open window extend it with one step pending, not one per poke', () => {
  const h = harness(100);
  h.poll.poke();
  for (let i = 0; i < 5; i++) {
    h.advanceUs(50);
    h.poll.poke();
    assert.equal(h.pending(), 1);
    h.turn();
  }
  // Last poke at 250 us: the window ends at 350 us.
  const turns = h.spin(10);
  assert.equal(turns, 10);
  assert.deepEqual(h.poll.stats, { windows: 1, hits: 0, misses: 1, skipped: 0 });
});

test(`after ${MISSES_BEFORE_BACKOFF} misses in a row only one poke in ${BACKOFF_POKES} opens a window, until one hits`, () => {
  const h = harness(100);
  for (let i = 0; i < MISSES_BEFORE_BACKOFF; i++) {
    h.poll.poke();
    h.spin(50);
  }
  assert.equal(h.poll.stats.misses, MISSES_BEFORE_BACKOFF);
  let opened = 0;
  for (let i = 0; i < BACKOFF_POKES * 3; i++) {
    h.poll.poke();
    if (h.poll.polling) {
      opened++;
      h.spin(50); // these probes miss too
    }
  }
  assert.equal(opened, 3);
  assert.equal(h.poll.stats.skipped, BACKOFF_POKES * 3 - 3);
  // A probe that catches a request ends the back-off: every poke opens a window again.
  for (let i = 0; i < BACKOFF_POKES && !h.poll.polling; i++) h.poll.poke();
  assert.equal(h.poll.polling, true);
  h.poll.noteArrival();
  for (let i = 0; i < 3; i++) {
    h.poll.poke();
    assert.equal(h.poll.polling, true, 'no back-off after a hit');
    h.poll.noteArrival();
  }
});

test('busy/quiet: a window opens only when the last busy connection goes quiet and stays open', () => {
  const h = harness(100);
  h.poll.busy();
  h.poll.busy();
  h.poll.quiet(true);
  assert.equal(h.poll.polling, false, 'another connection still waits on its request');
  assert.equal(h.poll.busyCount, 1);
  h.poll.quiet(false);
  assert.equal(h.poll.polling, false, 'a closing connection opens no window');
  assert.equal(h.poll.busyCount, 0);
  h.poll.busy();
  h.poll.quiet(true);
  assert.equal(h.poll.polling, true);
  assert.equal(h.poll.stats.windows, 1);
  assert.throws(() => h.poll.quiet(true), /quiet\(\) without busy\(\)/);
});

test('window 0 is off: pokes schedule nothing', () => {
  const h = harness(0);
  h.poll.poke();
  assert.equal(h.pending(), 0);
  assert.equal(h.poll.polling, false);
  assert.deepEqual(h.poll.stats, { windows: 0, hits: 0, misses: 0, skipped: 0 });
});

test('out-of-range windows are refused', () => {
  for (const bad of [-1, 1.5, IDLE_POLL_US_MAX + 1, Number.NaN]) assert.throws(() => new IdlePoll(bad), RangeError, String(bad));
  assert.doesNotThrow(() => new IdlePoll(IDLE_POLL_US_MAX));
});

test('on the real event loop: the loop turns during the window and goes quiet after it', async () => {
  const poll = new IdlePoll(2000); // 2 ms: long enough to count turns on a loaded machine
  const startMs = performance.now();
  poll.poke();
  assert.equal(poll.polling, true);
  while (poll.polling) await new Promise<void>((r) => setImmediate(r));
  const elapsedMs = performance.now() - startMs;
  assert.ok(elapsedMs >= 2, `window closed after ${elapsedMs.toFixed(3)} ms`);
  assert.deepEqual(poll.stats, { windows: 1, hits: 0, misses: 1, skipped: 0 });
});
