// ClusterClient (SPEC CLU6) against the in-memory FakeCluster on virtual time:
// routing to the PG leader with the PG epoch, splitting at object boundaries,
// sector read-modify-write for unaligned IO, NotLeader redirects (with and
// without a hint), StaleEpoch in both directions, timeouts and the deadline,
// final error codes, the write-ordering rule under retries, bounded in-flight
// requests with ERR_LIMIT beyond the waiting bound, and close().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Method, Status } from '../osd/proto.js';
import { isTesseraError } from '../stdx/errors.js';
import { openTestBed, type TestBed } from './testing.js';

const KiB = 1024;

async function bed(opts: Parameters<typeof openTestBed>[0] = {}): Promise<TestBed & { volId: number; poolId: number }> {
  const b = await openTestBed(opts);
  const info = await b.store.create('v', 1024 * KiB);
  return { ...b, volId: info.id, poolId: b.cluster.pool().id };
}

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

async function rejectsCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isTesseraError(err), `expected a TesseraError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

test('every piece goes to the leader of objectToPg(pool, volume, object) with the PG epoch', async () => {
  const b = await bed({ cluster: { objectSizeBytes: 16 * KiB, pgCount: 8 } });
  try {
    const vol = b.store.open('v');
    const objBytes = 16 * KiB;
    for (let obj = 0; obj < 32; obj++) await vol.write(obj * objBytes, pattern(objBytes, obj), false);
    const writes = b.cluster.trace.filter((t) => t.method === Method.Write);
    assert.equal(writes.length, 32, 'one request per object, leader known from the start');
    for (const t of writes) {
      const obj = Math.floor(t.offsetBytes / objBytes);
      const pg = b.cluster.pgOf(b.volId, obj);
      assert.equal(t.pg, pg);
      assert.equal(t.osdId, b.cluster.leaderOf(pg));
      assert.equal(t.pgEpoch, b.cluster.currentMap.pgs['1'][pg].epoch);
      assert.equal(t.status, Status.Ok);
    }
    assert.equal(b.cluster.counts.misrouted, 0);
    const out = Buffer.alloc(32 * objBytes);
    await vol.read(0, out.length, out, 0);
    for (let obj = 0; obj < 32; obj++) assert.ok(out.subarray(obj * objBytes, (obj + 1) * objBytes).equals(pattern(objBytes, obj)), `object ${obj}`);
    assert.deepEqual(b.cluster.replicaMismatches(), []);
  } finally {
    await b.close();
  }
});

test('an IO crossing objects is split at object boundaries into one request per object', async () => {
  const b = await bed({ cluster: { objectSizeBytes: 4 * KiB } });
  try {
    const vol = b.store.open('v');
    const offset = 2 * 4096 + 1024;
    const data = pattern(2 * 4096 + 512, 3);
    await vol.write(offset, data, false);
    const writes = b.cluster.trace.filter((t) => t.method === Method.Write).map((t) => [t.offsetBytes, t.lengthBytes]);
    assert.deepEqual(writes, [
      [9216, 3072],
      [12288, 4096],
      [16384, 1536],
    ]);
    const out = Buffer.alloc(data.length);
    await vol.read(offset, data.length, out, 0);
    assert.ok(out.equals(data));
    const reads = b.cluster.trace.filter((t) => t.method === Method.Read).map((t) => [t.offsetBytes, t.lengthBytes]);
    assert.deepEqual(reads, writes);
    // A read into the middle of a larger buffer lands at outOffset.
    const big = Buffer.alloc(data.length + 100, 0xee);
    await vol.read(offset, data.length, big, 50);
    assert.ok(big.subarray(50, 50 + data.length).equals(data));
    assert.equal(big[49], 0xee);
    assert.equal(big[50 + data.length], 0xee);
  } finally {
    await b.close();
  }
});

test('read data a transport lends (release) is copied out first and released exactly once per response, aligned or not', async () => {
  const b = await bed({ cluster: { objectSizeBytes: 4 * KiB } });
  try {
    const vol = b.store.open('v');
    const data = pattern(5 * 4096, 9);
    await vol.write(4096, data, false);
    const inner = b.cluster.transport.request;
    let lent = 0;
    let released = 0;
    b.cluster.transport.request = async (osd, req, timeoutMs) => {
      const resp = await inner(osd, req, timeoutMs);
      if (resp.status !== Status.Ok || resp.data === undefined) return resp;
      const buf = Buffer.from(resp.data);
      lent++;
      let given = false;
      // The transport reuses a released buffer at once: a caller reading it later sees 0xee.
      const release = (): void => {
        assert.ok(!given, 'released twice');
        given = true;
        released++;
        buf.fill(0xee);
      };
      return { status: Status.Ok, data: buf, release };
    };
    const out = Buffer.alloc(data.length);
    await vol.read(4096, data.length, out, 0);
    assert.ok(out.equals(data), 'aligned read across objects');
    const odd = Buffer.alloc(3000);
    await vol.read(4096 + 700, odd.length, odd, 0);
    assert.ok(odd.equals(data.subarray(700, 3700)), 'unaligned read');
    const rmw = pattern(1000, 4);
    await vol.write(4096 + 100, rmw, false); // read-modify-write of its edge sectors
    await vol.read(4096, data.length, out, 0);
    const want = Buffer.from(data);
    rmw.copy(want, 100);
    assert.ok(out.equals(want), 'read after a read-modify-write');
    assert.ok(lent >= 8);
    assert.equal(released, lent);
  } finally {
    await b.close();
  }
});

test('unaligned writes, zeroes and reads use whole sectors (read-modify-write of the edges)', async () => {
  const b = await bed({ cluster: { objectSizeBytes: 4 * KiB } });
  try {
    const vol = b.store.open('v');
    const size = 64 * KiB;
    const mirror = Buffer.alloc(size);
    const base = pattern(size, 9);
    await vol.write(0, base, false);
    base.copy(mirror);
    const cases: Array<[number, number]> = [
      [100, 1000], // head and tail partial, two sectors
      [4000, 200], // crosses an object boundary, both pieces partial
      [5000, 10], // inside one sector
      [8192 + 512, 700], // head aligned, tail partial
      [12288 + 3, 509], // head partial, tail aligned
    ];
    let seed = 20;
    for (const [off, len] of cases) {
      const d = pattern(len, seed++);
      await vol.write(off, d, false);
      d.copy(mirror, off);
    }
    for (const [off, len] of [
      [300, 900],
      [20000 + 7, 5000],
      [30000, 3],
    ] as Array<[number, number]>) {
      await vol.writeZeroes(off, len, false, true);
      mirror.fill(0, off, off + len);
    }
    // A long unaligned zero: head and tail sectors written, the middle zeroed with Zero.
    await vol.writeZeroes(33 * KiB + 5, 20 * KiB, false, false);
    mirror.fill(0, 33 * KiB + 5, 53 * KiB + 5);
    for (const t of b.cluster.trace) {
      assert.equal(t.offsetBytes % 512, 0, `request at ${t.offsetBytes} is not sector aligned`);
      assert.equal(t.lengthBytes % 512, 0);
    }
    assert.ok(b.cluster.readVolume(b.volId, size).equals(mirror), 'stored bytes');
    const out = Buffer.alloc(size);
    await vol.read(0, size, out, 0);
    assert.ok(out.equals(mirror), 'read back');
    const part = Buffer.alloc(777);
    await vol.read(4001, 777, part, 0);
    assert.ok(part.equals(mirror.subarray(4001, 4778)), 'unaligned read');
    assert.equal(b.cluster.counts.overlapViolations, 0);
  } finally {
    await b.close();
  }
});

test('a long unaligned zero inside one object: edge sectors rewritten, the middle sent as one Zero', async () => {
  const b = await bed({ cluster: { objectSizeBytes: 256 * KiB } });
  try {
    const vol = b.store.open('v');
    const base = pattern(256 * KiB, 8);
    await vol.write(0, base, false);
    const before = b.cluster.trace.length;
    await vol.writeZeroes(5, 200 * KiB, false, false);
    const want = Buffer.from(base);
    want.fill(0, 5, 5 + 200 * KiB);
    assert.ok(b.cluster.readVolume(b.volId, 256 * KiB).equals(want));
    const t = b.cluster.trace.slice(before).map((e) => [e.method, e.offsetBytes, e.lengthBytes]);
    assert.deepEqual(t, [
      [Method.Read, 0, 512],
      [Method.Read, 200 * KiB, 512],
      [Method.Write, 0, 512],
      [Method.Write, 200 * KiB, 512],
      [Method.Zero, 512, 200 * KiB - 512],
    ]);
  } finally {
    await b.close();
  }
});

test('NotLeader with a hint: redirect at once, and later requests go straight to the leader', async () => {
  const b = await bed();
  try {
    const vol = b.store.open('v');
    const pg = b.cluster.pgOf(b.volId, 0);
    const acting = b.cluster.actingSet(pg);
    b.cluster.setLeader(pg, acting[1]);
    await vol.write(0, pattern(4096, 1), false);
    await vol.write(4096, pattern(4096, 2), false);
    const t = b.cluster.trace.filter((e) => e.method === Method.Write);
    assert.deepEqual(
      t.map((e) => [e.osdId, e.status]),
      [
        [acting[0], Status.NotLeader],
        [acting[1], Status.Ok],
        [acting[1], Status.Ok],
      ],
    );
    assert.equal(b.clock.nowMs(), 0, 'a redirect with a hint does not back off');
    assert.equal(b.store.maps.leaderHint(b.poolId, pg), acting[1]);
  } finally {
    await b.close();
  }
});

test('NotLeader without a hint: try the next OSDs of the acting set', async () => {
  const b = await bed();
  try {
    const vol = b.store.open('v');
    const pg = b.cluster.pgOf(b.volId, 0);
    const acting = b.cluster.actingSet(pg);
    b.cluster.setLeader(pg, acting[2]);
    b.cluster.setLeaderHint(pg, 0);
    await vol.write(0, pattern(4096, 1), false);
    const t = b.cluster.trace.filter((e) => e.method === Method.Write);
    assert.deepEqual(
      t.map((e) => [e.osdId, e.status]),
      [
        [acting[0], Status.NotLeader],
        [acting[1], Status.NotLeader],
        [acting[2], Status.Ok],
      ],
    );
  } finally {
    await b.close();
  }
});

test('two OSDs naming each other as leader: bounded immediate redirects, then backoff until the deadline', async () => {
  const b = await bed({ client: { opTimeoutMs: 2_000, redirectsMax: 3 } });
  try {
    const vol = b.store.open('v');
    const pg = b.cluster.pgOf(b.volId, 0);
    const [x, y] = b.cluster.actingSet(pg);
    b.cluster.faultHook = (osd) => ({ kind: 'status', status: Status.NotLeader, leaderHint: osd === x ? y : x });
    const t0 = b.clock.nowMs();
    await rejectsCode(vol.write(0, pattern(512, 1), false), 'ERR_TIMEOUT');
    assert.ok(b.clock.nowMs() - t0 <= 2_000 + 1, 'fails at the deadline');
    assert.ok(b.cluster.counts.requests < 200, `ping-pong is throttled (${b.cluster.counts.requests} requests)`);
  } finally {
    await b.close();
  }
});

test('StaleEpoch from an OSD ahead of our map: refresh the map, then resend to the new acting set', async () => {
  const b = await bed();
  try {
    const vol = b.store.open('v');
    await vol.write(0, pattern(4096, 1), false);
    const pg = b.cluster.pgOf(b.volId, 0);
    const old = b.cluster.actingSet(pg);
    const others = [...b.cluster.osds.keys()].filter((id) => !old.includes(id));
    b.cluster.holdMaps(); // the client's long poll does not see the change
    b.cluster.changeActingSet(pg, [old[0], ...others].slice(0, 3));
    const newEpoch = b.cluster.epoch;
    assert.ok(b.store.maps.epoch < newEpoch);
    const getMapsBefore = b.cluster.counts.getMap;
    await vol.write(512, pattern(512, 2), false);
    assert.ok(b.cluster.counts.getMap > getMapsBefore, 'refreshed with getMap');
    assert.ok(b.store.maps.epoch >= newEpoch);
    const t = b.cluster.trace.filter((e) => e.method === Method.Write).slice(1);
    assert.equal(t[0].status, Status.StaleEpoch);
    assert.equal(t[t.length - 1].status, Status.Ok);
    assert.equal(t[t.length - 1].pgEpoch, newEpoch);
    const out = Buffer.alloc(1024);
    await vol.read(0, 1024, out, 0);
    const want = pattern(4096, 1).subarray(0, 1024);
    pattern(512, 2).copy(want, 512);
    assert.ok(out.equals(want));
    assert.deepEqual(b.cluster.replicaMismatches(), []);
    b.cluster.releaseMaps();
  } finally {
    await b.close();
  }
});

test('an OSD behind our map (NotReady, or StaleEpoch with an older epoch): back off and resend until it catches up', async () => {
  const b = await bed();
  try {
    const vol = b.store.open('v');
    const pg = b.cluster.pgOf(b.volId, 0);
    const leader = b.cluster.leaderOf(pg);
    const epoch = b.cluster.currentMap.pgs['1'][pg].epoch;
    b.cluster.setOsdEpochView(leader, pg, epoch - 1 >= 0 ? epoch - 1 : 0);
    b.clock.setTimer(100, () => b.cluster.setOsdEpochView(leader, pg, undefined));
    await vol.write(0, pattern(4096, 1), false);
    const t = b.cluster.trace.filter((e) => e.method === Method.Write);
    assert.ok(t.length >= 2);
    assert.equal(t[0].status, Status.NotReady);
    assert.equal(t[t.length - 1].status, Status.Ok);
    assert.equal(t[t.length - 1].osdId, leader);
    assert.ok(b.clock.nowMs() >= 100);
    // The protocol also allows StaleEpoch carrying an older epoch: not a reason to refresh, just retry.
    const getMaps = b.cluster.counts.getMap;
    b.cluster.faultHook = (_osd, _req, seq) => (seq <= t[t.length - 1].seq + 2 ? { kind: 'status', status: Status.StaleEpoch, pgEpoch: 0 } : undefined);
    await vol.write(4096, pattern(4096, 2), false);
    assert.equal(b.cluster.counts.getMap, getMaps);
    assert.ok(b.cluster.readVolume(b.volId, 8192).subarray(4096).equals(pattern(4096, 2)));
  } finally {
    await b.close();
  }
});

test('a request lost before the OSD times out and is retried on the next OSD, then redirected', async () => {
  const b = await bed({ client: { requestTimeoutMs: 1_000 } });
  try {
    const vol = b.store.open('v');
    const pg = b.cluster.pgOf(b.volId, 0);
    const acting = b.cluster.actingSet(pg);
    b.cluster.faultHook = (_osd, _req, seq) => (seq === 1 ? { kind: 'drop' } : undefined);
    await vol.write(0, pattern(4096, 5), false);
    const t = b.cluster.trace.filter((e) => e.method === Method.Write);
    assert.deepEqual(
      t.map((e) => [e.osdId, e.status]),
      [
        [acting[0], 'timeout'],
        [acting[1], Status.NotLeader],
        [acting[0], Status.Ok],
      ],
    );
    assert.ok(b.clock.nowMs() >= 1_000);
    assert.ok(b.cluster.readVolume(b.volId, 4096).equals(pattern(4096, 5)));
  } finally {
    await b.close();
  }
});

test('a lost reply after the write was applied: retried, applied twice, same bytes', async () => {
  const b = await bed({ client: { requestTimeoutMs: 500 } });
  try {
    const vol = b.store.open('v');
    b.cluster.faultHook = (_osd, req, seq) => (seq === 1 && req.method === Method.Write ? { kind: 'dropReply' } : undefined);
    await vol.write(0, pattern(8192, 6), false);
    assert.equal(b.cluster.counts.applied, 2);
    assert.ok(b.cluster.readVolume(b.volId, 8192).equals(pattern(8192, 6)));
  } finally {
    await b.close();
  }
});

test('refused connections, Busy and NotReady are retried; an unreachable PG fails at the deadline', async () => {
  const b = await bed({ client: { opTimeoutMs: 10_000, requestTimeoutMs: 1_000 } });
  try {
    const vol = b.store.open('v');
    let n = 0;
    b.cluster.faultHook = () => {
      n++;
      if (n === 1) return { kind: 'refuse' };
      if (n === 2) return { kind: 'status', status: Status.Busy };
      if (n === 3) return { kind: 'status', status: Status.NotReady };
      return undefined;
    };
    await vol.write(0, pattern(512, 1), false);
    b.cluster.faultHook = undefined;
    for (const id of b.cluster.osds.keys()) b.cluster.setOsdState(id, 'blackhole');
    const t0 = b.clock.nowMs();
    await rejectsCode(vol.write(0, pattern(512, 2), false), 'ERR_TIMEOUT');
    const elapsed = b.clock.nowMs() - t0;
    assert.ok(elapsed >= 10_000 - 1 && elapsed <= 10_000 + 1, `failed after ${elapsed} ms, deadline 10000`);
    for (const id of b.cluster.osds.keys()) b.cluster.setOsdState(id, 'down');
    const t1 = b.clock.nowMs();
    await rejectsCode(vol.read(0, 512, Buffer.alloc(512), 0), 'ERR_TIMEOUT');
    assert.ok(b.clock.nowMs() - t1 <= 10_000 + 1);
  } finally {
    await b.close();
  }
});

test('transport ERR_CHECKSUM (damaged reply, maybe applied) and ERR_LIMIT are retried on the same OSD', async () => {
  const b = await bed();
  try {
    const vol = b.store.open('v');
    b.cluster.faultHook = (_osd, _req, seq) => {
      if (seq === 1) return { kind: 'reject', code: 'ERR_CHECKSUM', applied: true };
      if (seq === 2) return { kind: 'reject', code: 'ERR_LIMIT', applied: false };
      return undefined;
    };
    await vol.write(0, pattern(4096, 3), false);
    const t = b.cluster.trace.filter((e) => e.method === Method.Write);
    assert.equal(t.length, 3);
    assert.equal(new Set(t.map((e) => e.osdId)).size, 1, 'no rotation');
    assert.ok(b.cluster.readVolume(b.volId, 4096).equals(pattern(4096, 3)));
    // Any other transport rejection is final.
    b.cluster.faultHook = () => ({ kind: 'reject', code: 'ERR_INVALID', applied: false });
    await rejectsCode(vol.write(0, pattern(512, 4), false), 'ERR_INVALID');
  } finally {
    await b.close();
  }
});

test('Range, Io, Checksum, NoSpace and Invalid are final and map to error codes', async () => {
  const b = await bed();
  try {
    const vol = b.store.open('v');
    const cases: Array<[number, string]> = [
      [Status.Range, 'ERR_RANGE'],
      [Status.Io, 'ERR_DEVICE_IO'],
      [Status.Checksum, 'ERR_CHECKSUM'],
      [Status.NoSpace, 'ERR_NO_SPACE'],
      [Status.Invalid, 'ERR_INVALID'],
    ];
    for (const [status, code] of cases) {
      b.cluster.faultHook = () => ({ kind: 'status', status: status as typeof Status.Io });
      const before = b.cluster.counts.requests;
      await rejectsCode(vol.write(0, pattern(512, 1), false), code);
      assert.equal(b.cluster.counts.requests - before, 1, `${code} is not retried`);
    }
    b.cluster.faultHook = undefined;
    assert.equal(vol.stats().write.errors, cases.length);
  } finally {
    await b.close();
  }
});

test('ordering: a later overlapping write waits for an earlier one that is being retried', async () => {
  // Write A's first attempt is applied but its reply is lost, so A is retried
  // after the request timeout. B (overlapping) is submitted right after A.
  // Without the rule B would be sent at once and A's retry would land after it,
  // leaving A's bytes; with it, B is sent only after A's retry completed.
  const b = await bed({ client: { requestTimeoutMs: 1_000 } });
  try {
    const vol = b.store.open('v');
    const a = pattern(8192, 1);
    const bb = pattern(8192, 2);
    const c = pattern(4096, 3);
    b.cluster.faultHook = (_osd, req, seq) => (seq === 1 && req.method === Method.Write ? { kind: 'dropReply' } : undefined);
    const pa = vol.write(0, a, false);
    const pb = vol.write(4096, bb, false); // overlaps A's second half
    const pc = vol.write(512 * KiB, c, false); // elsewhere: not held back
    await Promise.all([pa, pb, pc]);
    const want = Buffer.alloc(12288);
    a.copy(want, 0);
    bb.copy(want, 4096);
    assert.ok(b.cluster.readVolume(b.volId, 12288).equals(want), 'the second write wins');
    const t = b.cluster.trace.filter((e) => e.method === Method.Write);
    const aSends = t.filter((e) => e.offsetBytes === 0);
    const bSend = t.find((e) => e.offsetBytes === 4096)!;
    const cSend = t.find((e) => e.offsetBytes === 512 * KiB)!;
    assert.ok(aSends.length >= 2, 'A was retried');
    assert.ok(bSend.seq > aSends[aSends.length - 1].seq, 'B sent after A\'s retry');
    assert.ok(cSend.seq < aSends[1].seq, 'C (no overlap) did not wait for A');
    assert.equal(b.cluster.counts.overlapViolations, 0);
  } finally {
    await b.close();
  }
});

test('ordering: trims and zeroes are ordered with writes; reads are not held back', async () => {
  const b = await bed({ client: { requestTimeoutMs: 1_000 } });
  try {
    const vol = b.store.open('v');
    await vol.write(0, pattern(64 * KiB, 4), false);
    b.cluster.faultHook = (_osd, req, seq) => (req.method === Method.Zero && seq <= 3 ? { kind: 'status', status: Status.Busy } : undefined);
    const before = b.cluster.trace.length;
    const pz = vol.trim(0, 64 * KiB, false); // the whole object: Zero with mayTrim, retried (Busy)
    const pw = vol.write(1024, pattern(512, 5), false);
    const out = Buffer.alloc(512);
    const pr = vol.read(8192, 512, out, 0);
    await Promise.all([pz, pw, pr]);
    const want = Buffer.alloc(64 * KiB);
    pattern(512, 5).copy(want, 1024);
    assert.ok(b.cluster.readVolume(b.volId, 64 * KiB).equals(want));
    const t = b.cluster.trace.slice(before);
    const lastZero = t.filter((e) => e.method === Method.Zero).pop()!;
    const write = t.find((e) => e.method === Method.Write)!;
    const read = t.find((e) => e.method === Method.Read)!;
    assert.ok(write.seq > lastZero.seq);
    assert.ok(read.seq < lastZero.seq, 'the read did not wait');
  } finally {
    await b.close();
  }
});

test('bounded in-flight: at most inFlightRequestsMax requests out, the rest wait, ERR_LIMIT beyond the waiting bound', async () => {
  const b = await bed({ client: { inFlightRequestsMax: 4, waitingRequestsMax: 8 }, cluster: { objectSizeBytes: 4 * KiB } });
  try {
    const vol = b.store.open('v');
    b.cluster.holdRequests();
    const ops: Promise<void>[] = [];
    for (let i = 0; i < 12; i++) ops.push(vol.write(i * 4096, pattern(4096, i), false));
    assert.equal(b.cluster.counts.inFlight, 4, 'four requests at the OSDs');
    assert.equal(b.store.client.counters().pending, 12);
    await rejectsCode(vol.write(100 * 4096, pattern(4096, 99), false), 'ERR_LIMIT');
    await rejectsCode(vol.read(0, 4096, Buffer.alloc(4096), 0), 'ERR_LIMIT');
    assert.equal(b.store.client.counters().rejectedLimit, 2);
    b.cluster.releaseRequests();
    await Promise.all(ops);
    assert.equal(b.cluster.counts.inFlightPeak, 4);
    assert.equal(b.store.client.counters().inFlightPeak, 4);
    for (let i = 0; i < 12; i++) {
      const out = Buffer.alloc(4096);
      await vol.read(i * 4096, 4096, out, 0);
      assert.ok(out.equals(pattern(4096, i)));
    }
    // An operation of more objects than the whole bound can never be admitted.
    await rejectsCode(vol.write(0, Buffer.alloc(13 * 4096), false), 'ERR_LIMIT');
    assert.equal(b.store.client.counters().pending, 0);
  } finally {
    await b.close();
  }
});

test('blockStatus merges per-object extents; long ranges run in windows', async () => {
  const b = await bed({ cluster: { objectSizeBytes: 4 * KiB } });
  try {
    const vol = b.store.open('v');
    await vol.write(8192, pattern(8192, 1), false); // objects 2, 3
    await vol.write(20480, pattern(4096, 2), false); // object 5
    assert.deepEqual(await vol.blockStatus(0, 32 * KiB), [
      { lengthBytes: 8192, hole: true, zero: true },
      { lengthBytes: 8192, hole: false, zero: false },
      { lengthBytes: 4096, hole: true, zero: true },
      { lengthBytes: 4096, hole: false, zero: false },
      { lengthBytes: 8192, hole: true, zero: true },
    ]);
    assert.deepEqual(await vol.blockStatus(8192 + 100, 5000), [{ lengthBytes: 5000, hole: false, zero: false }]);
    assert.deepEqual(await vol.blockStatus(1000, 24), [{ lengthBytes: 24, hole: true, zero: true }]);
    // More objects than WINDOW_PIECES: sequential windows, merged across the seam.
    await b.store.create('big', 2048 * 4096);
    const big = b.store.open('big');
    await big.write(1500 * 4096, pattern(4096, 3), false);
    assert.deepEqual(await big.blockStatus(0, 2048 * 4096), [
      { lengthBytes: 1500 * 4096, hole: true, zero: true },
      { lengthBytes: 4096, hole: false, zero: false },
      { lengthBytes: 547 * 4096, hole: true, zero: true },
    ]);
  } finally {
    await b.close();
  }
});

test('close fails waiting operations with ERR_CLOSED and waits for requests already sent', async () => {
  const b = await bed({ client: { inFlightRequestsMax: 1, requestTimeoutMs: 1_000 } });
  const vol = b.store.open('v');
  b.cluster.holdRequests();
  const first = vol.write(0, pattern(512, 1), false);
  const second = vol.write(4096, pattern(512, 2), false);
  const closing = b.store.close();
  await rejectsCode(second, 'ERR_CLOSED');
  b.cluster.releaseRequests();
  await first; // was at the OSD: it completes
  await closing;
  await rejectsCode(vol.write(0, pattern(512, 3), false), 'ERR_CLOSED');
  await b.close();
});
