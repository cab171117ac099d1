// MapCache (SPEC CLU1, CLU6): follows newer epochs by long poll, backs off on
// monitor errors, refresh(minEpoch) forces fetches, listeners see every newer
// map, leader hints live for one PG epoch, close stops everything.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isTesseraError } from '../stdx/errors.js';
import { MapCache } from './map-cache.js';
import { FakeCluster, SimClock } from './testing.js';

async function setup(): Promise<{ clock: SimClock; cluster: FakeCluster; maps: MapCache; close: () => void }> {
  const clock = new SimClock();
  const cluster = new FakeCluster({ clock });
  const maps = await MapCache.open({ mon: cluster.mon, clock, waitMapMs: 30_000, retryBackoffMsMin: 50, retryBackoffMsMax: 400 });
  return {
    clock,
    cluster,
    maps,
    close: () => {
      maps.close();
      cluster.close();
      clock.close();
    },
  };
}

/** Resolves after `ms` of virtual time. */
function sleep(clock: SimClock, ms: number): Promise<void> {
  return new Promise((r) => clock.setTimer(ms, r));
}

test('follows newer epochs with long polls and tells listeners', async () => {
  const s = await setup();
  try {
    const seen: Array<[number, number]> = [];
    s.maps.onChange((m, prev) => seen.push([prev.epoch, m.epoch]));
    assert.equal(s.maps.epoch, 1);
    await s.cluster.mon.createVolume({ name: 'a', sizeBytes: 1 << 20 });
    await sleep(s.clock, 1);
    assert.equal(s.maps.epoch, 2);
    assert.equal(s.maps.volumeNamed('a')?.id, 1);
    assert.equal(s.maps.volume(1)?.name, 'a');
    s.cluster.mutateVolume('a', { newName: 'b' });
    await sleep(s.clock, 1);
    assert.equal(s.maps.volumeNamed('a'), undefined);
    assert.equal(s.maps.volumeNamed('b')?.id, 1);
    assert.deepEqual(seen, [
      [1, 2],
      [2, 3],
    ]);
    // Idle: the long poll times out and is renewed (every 30 s of virtual time).
    const polls = s.cluster.counts.waitMap;
    await sleep(s.clock, 95_000);
    assert.equal(s.cluster.counts.waitMap - polls, 3);
    // An older or equal map is never installed.
    assert.equal(s.maps.install({ ...s.maps.map, epoch: 2 }), false);
    assert.equal(s.maps.epoch, 3);
  } finally {
    s.close();
  }
});

test('monitor errors: the follow loop backs off (doubling, capped) and recovers', async () => {
  const s = await setup();
  try {
    s.cluster.monFailures = 5; // the current long poll is already waiting: fails from the next call on
    const t0 = s.clock.nowMs();
    await s.cluster.mon.createVolume({ name: 'a', sizeBytes: 1 << 20 }); // wakes the poll; the next 5 calls fail
    const deadline = t0 + 10_000;
    while (s.maps.epoch < 2 && s.clock.nowMs() < deadline) await sleep(s.clock, 10);
    assert.equal(s.maps.epoch, 2, 'the first poll delivered the map');
    await s.cluster.mon.createVolume({ name: 'b', sizeBytes: 1 << 20 });
    while (s.maps.epoch < 3 && s.clock.nowMs() < deadline) await sleep(s.clock, 10);
    assert.equal(s.maps.epoch, 3);
    // Five failures: 50 + 100 + 200 + 400 + 400 ms of backoff.
    const elapsed = s.clock.nowMs() - t0;
    assert.ok(elapsed >= 1_150 && elapsed < 1_300, `recovered after ${elapsed} ms`);
  } finally {
    s.close();
  }
});

test('refresh(minEpoch) fetches until the epoch is reached, even while long polls lag', async () => {
  const s = await setup();
  try {
    s.cluster.holdMaps();
    await s.cluster.mon.createVolume({ name: 'a', sizeBytes: 1 << 20 });
    await sleep(s.clock, 100);
    assert.equal(s.maps.epoch, 1, 'held: the long poll does not see it');
    const m = await s.maps.refresh(2);
    assert.equal(m.epoch, 2);
    assert.equal(s.maps.epoch, 2);
    // Concurrent refreshes share one getMap.
    const calls = s.cluster.counts.getMap;
    await Promise.all([s.maps.refresh(), s.maps.refresh(), s.maps.refresh()]);
    assert.equal(s.cluster.counts.getMap - calls, 1);
    // An epoch that never comes: ERR_TIMEOUT after the given time.
    const t0 = s.clock.nowMs();
    await assert.rejects(s.maps.refresh(50, 1_000), (e: unknown) => isTesseraError(e, 'ERR_TIMEOUT'));
    assert.ok(s.clock.nowMs() - t0 >= 1_000 && s.clock.nowMs() - t0 < 1_100);
    // awaitMap: a predicate satisfied by a later map.
    const waiting = s.maps.awaitMap((mm) => mm.volumes.some((v) => v.name === 'z'), 5_000);
    s.clock.setTimer(300, () => void s.cluster.mon.createVolume({ name: 'z', sizeBytes: 1 << 20 }));
    const got = await waiting;
    assert.ok(got.volumes.some((v) => v.name === 'z'));
    s.cluster.releaseMaps();
  } finally {
    s.close();
  }
});

test('leader hints: first OSD by default, learnt per PG epoch, reset when the PG moves', async () => {
  const s = await setup();
  try {
    const pg = 3;
    const acting = s.cluster.actingSet(pg);
    const epoch = s.maps.map.pgs['1'][pg].epoch;
    assert.equal(s.maps.leaderHint(1, pg), acting[0]);
    s.maps.noteLeader(1, pg, epoch, acting[2]);
    assert.equal(s.maps.leaderHint(1, pg), acting[2]);
    s.maps.noteLeader(1, pg, epoch - 1, acting[1]); // from an older epoch: ignored
    assert.equal(s.maps.leaderHint(1, pg), acting[2]);
    s.maps.noteLeader(1, pg + 1, s.maps.map.pgs['1'][pg + 1].epoch, s.cluster.actingSet(pg + 1)[1]);
    // Another PG's change keeps this hint; this PG's change resets it.
    s.cluster.changeActingSet(pg + 1, s.cluster.actingSet(pg + 1).slice().reverse());
    await sleep(s.clock, 1);
    assert.equal(s.maps.leaderHint(1, pg), acting[2]);
    assert.equal(s.maps.leaderHint(1, pg + 1), s.cluster.actingSet(pg + 1)[0]);
    s.cluster.changeActingSet(pg, [acting[1], acting[0], acting[2]]);
    await sleep(s.clock, 1);
    assert.equal(s.maps.leaderHint(1, pg), acting[1]);
    assert.equal(s.maps.leaderHint(1, 9999), 0, 'no such PG');
    assert.equal(s.maps.leaderHint(7, 0), 0, 'no such pool');
  } finally {
    s.close();
  }
});

test('close stops the follow loop and fails waiters with ERR_CLOSED', async () => {
  const s = await setup();
  try {
    s.cluster.holdMaps();
    const waiting = s.maps.awaitMap(() => false, 60_000);
    s.clock.setTimer(500, () => s.maps.close());
    await assert.rejects(waiting, (e: unknown) => isTesseraError(e, 'ERR_CLOSED'));
    await assert.rejects(s.maps.refresh(), (e: unknown) => isTesseraError(e, 'ERR_CLOSED'));
    s.cluster.releaseMaps();
    const polls = s.cluster.counts.waitMap;
    await s.cluster.mon.createVolume({ name: 'late', sizeBytes: 1 << 20 });
    await sleep(s.clock, 100_000);
    assert.ok(s.cluster.counts.waitMap - polls <= 1, 'no new long polls after close');
    assert.equal(s.maps.volumeNamed('late'), undefined, 'maps after close are dropped');
  } finally {
    s.close();
  }
});

test('a monitor that never answers getMap holds awaitMap neither past its deadline nor past close()', async () => {
  const clock = new SimClock();
  const cluster = new FakeCluster({ clock });
  let hang = false;
  const mon = { ...cluster.mon, getMap: () => (hang ? new Promise<never>(() => {}) : cluster.mon.getMap()) };
  const maps = await MapCache.open({ mon, clock, waitMapMs: 30_000, retryBackoffMsMin: 50, retryBackoffMsMax: 400 });
  try {
    hang = true;
    const t0 = clock.nowMs();
    await assert.rejects(maps.awaitMap(() => false, 2_000), (e: unknown) => isTesseraError(e, 'ERR_TIMEOUT'));
    assert.ok(clock.nowMs() - t0 >= 2_000 && clock.nowMs() - t0 < 2_100, `timed out after ${clock.nowMs() - t0} ms`);
    const waiting = maps.awaitMap(() => false, 60_000);
    clock.setTimer(500, () => maps.close());
    await assert.rejects(waiting, (e: unknown) => isTesseraError(e, 'ERR_CLOSED'));
    assert.ok(clock.nowMs() - t0 < 3_000, 'close() woke the waiter at once');
  } finally {
    maps.close();
    cluster.close();
    clock.close();
  }
});
