// Failure detection (decide.ts) with plain numbers for time: down after
// osdDownAfterMs of silence, out after osdOutAfterMs down, the full grace a
// newly elected monitor gives every OSD, operator outs left alone, and the
// detector applied to the map end to end.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FailureDetector } from './decide.js';
import * as M from './map.js';
import type { ClusterMap } from './map-types.js';

const T = { osdDownAfterMs: 6000, osdOutAfterMs: 60_000 };

function cluster(n: number): ClusterMap {
  let m = M.initialMap('f');
  for (let i = 1; i <= n; i++) m = M.osdBoot(m, { uuid: `u${i}`, host: `h${i}`, addr: 'a', port: 1, weight: 1, capacityBytes: 0 }).map;
  return M.createPool(m, { name: 'rbd', size: 3, minSize: 2, pgCount: 32 }).map;
}

test('a newly active monitor gives every up OSD a full osdDownAfterMs before marking it down', () => {
  const m = cluster(3);
  const d = new FailureDetector(T, 100_000);
  assert.deepEqual(d.decide(m, 100_000), { down: [], out: [] });
  assert.deepEqual(d.decide(m, 105_999), { down: [], out: [] });
  // A heartbeat from a previous term (earlier than activation) does not shorten the grace.
  d.heartbeat(1, 90_000);
  assert.deepEqual(d.decide(m, 105_999).down, []);
  assert.deepEqual(d.decide(m, 106_000).down, [1, 2, 3]);
});

test('heartbeats keep an OSD up; silence for osdDownAfterMs marks it down', () => {
  const m = cluster(3);
  const d = new FailureDetector(T, 0);
  for (let t = 0; t <= 20_000; t += 1000) {
    d.heartbeat(1, t);
    d.heartbeat(2, t);
    if (t <= 4000) d.heartbeat(3, t);
    const { down } = d.decide(m, t);
    if (t < 10_000) assert.deepEqual(down, [], `t=${t}`);
    else assert.deepEqual(down, [3], `t=${t}: OSD 3 silent since 4000`);
  }
  assert.equal(d.lastHeartbeat(3), 4000);
});

test('down for osdOutAfterMs: out; not when out by an operator, not when already out, not when it came back', () => {
  let m = cluster(4);
  const d = new FailureDetector(T, 0);
  for (const id of [1, 2, 3, 4]) d.heartbeat(id, 0);
  const first = d.decide(m, 6000);
  assert.deepEqual(first.down, [1, 2, 3, 4]);
  m = M.markDown(m, first.down);
  m = M.operatorOut(m, 4);
  // OSD 2 comes back before the grace ends.
  d.heartbeat(2, 30_000);
  m = M.markUp(m, 2);
  d.heartbeat(2, 65_000);
  assert.deepEqual(d.decide(m, 65_999), { down: [], out: [] });
  const late = d.decide(m, 66_000);
  assert.deepEqual(late, { down: [], out: [1, 3] }, 'grace counted from marking down (6000)');
  m = M.markOut(m, late.out);
  assert.deepEqual(d.decide(m, 200_000), { down: [2], out: [] }, 'out OSDs are not marked out again; 2 went silent');
});

test('an OSD already down at election is counted down from when this monitor first sees it', () => {
  const m = M.markDown(cluster(3), [2]);
  const d = new FailureDetector(T, 500_000);
  d.heartbeat(1, 500_000);
  d.heartbeat(3, 500_000);
  assert.deepEqual(d.decide(m, 500_000).out, []);
  assert.deepEqual(d.decide(m, 559_999).out, []);
  assert.deepEqual(d.decide(m, 560_000).out, [2]);
});

test('restartOutGrace (operator in) and removed OSDs are forgotten', () => {
  let m = M.markDown(cluster(3), [3]);
  const d = new FailureDetector(T, 0);
  d.heartbeat(1, 0);
  d.heartbeat(2, 0);
  d.decide(m, 1000); // sees 3 down at 1000
  d.restartOutGrace(3, 50_000);
  assert.deepEqual(d.decide(m, 61_000).out, [], 'grace restarted at 50000');
  assert.deepEqual(d.decide(m, 110_000).out, [3]);
  m = M.osdRm(M.operatorOut(m, 3), 3);
  d.heartbeat(1, 110_000);
  d.heartbeat(2, 110_000);
  assert.deepEqual(d.decide(m, 110_000), { down: [], out: [] });
  assert.throws(() => new FailureDetector({ osdDownAfterMs: 0, osdOutAfterMs: 1 }, 0), RangeError);
});
