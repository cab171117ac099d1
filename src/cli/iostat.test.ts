// iostat: rates and percentiles from fabricated snapshots (pure), the text and
// JSON forms, and one live tick against an API server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { IoStats, bucketUpperUs, latencyBucket } from '../stdx/stats.js';
import type { StatsSnapshot } from '../volume/types.js';
import { MemoryVolumeStore } from '../volume/memory.js';
import { ApiServer } from '../api/server.js';
import { ApiClient } from '../api/client.js';
import { computeIostat, formatIostat, formatLatencyUs, runIostat } from './iostat.js';
import type { CliIo } from './io.js';

function snap(atMs: number, devices: Record<string, IoStats>, volumes: Record<string, IoStats>): StatsSnapshot {
  const list = (m: Record<string, IoStats>) => Object.entries(m).map(([name, s]) => ({ name, stats: s.snapshot() }));
  // JSON round trip: the CLI sees snapshots as the API ships them
  return JSON.parse(JSON.stringify({ atMs, devices: list(devices), volumes: list(volumes) })) as StatsSnapshot;
}

test('rates, MB/s, percentiles, queue depth and errors over the interval', () => {
  const dev = new IoStats();
  const vol = new IoStats();
  for (let i = 0; i < 50; i++) dev.read.record(4096, 100); // before the interval: must not count
  const s0 = snap(10_000, { dev0: dev }, { vol0: vol });
  // p99 of 200 ops is the 198th fastest: 197 fast + 3 slow puts it among the slow
  for (let i = 0; i < 197; i++) dev.read.record(1 << 20, 100);
  for (let i = 0; i < 3; i++) dev.read.record(1 << 20, 5000);
  for (let i = 0; i < 400; i++) dev.write.record(4096, 40);
  dev.write.recordError();
  dev.flush.recordError();
  dev.inFlight = 7;
  for (let i = 0; i < 10; i++) vol.write.record(512, 2000);
  const s1 = snap(12_000, { dev0: dev }, { vol0: vol });

  const rep = computeIostat(s0, s1);
  assert.equal(rep.intervalS, 2);
  const d = rep.devices[0];
  assert.equal(d.name, 'dev0');
  assert.equal(d.readOpsPerS, 100); // 200 ops / 2 s
  assert.equal(d.readMBPerS, 100); // 200 MiB / 2 s
  assert.equal(d.writeOpsPerS, 200);
  assert.equal(d.writeMBPerS, (400 * 4096) / 2 ** 20 / 2);
  assert.equal(d.readP50Us, bucketUpperUs(latencyBucket(100)));
  assert.equal(d.readP99Us, bucketUpperUs(latencyBucket(5000)));
  assert.equal(d.writeP50Us, bucketUpperUs(latencyBucket(40)));
  assert.equal(d.inFlight, 7);
  assert.equal(d.errors, 2);
  const v = rep.volumes[0];
  assert.equal(v.writeOpsPerS, 5);
  assert.equal(v.readOpsPerS, 0);
  assert.equal(v.readP99Us, 0);
  assert.equal(v.writeP99Us, bucketUpperUs(latencyBucket(2000)));

  const text = formatIostat(rep);
  const lines = text.trimEnd().split('\n');
  assert.equal(lines[0], '1970-01-01T00:00:12.000Z  interval 2.00 s');
  assert.match(lines[1], /^DEVICE\s+r\/s\s+w\/s\s+rMB\/s\s+wMB\/s\s+r_p50\s+r_p99\s+w_p50\s+w_p99\s+inflight\s+errors$/);
  assert.deepEqual(lines[2].split(/\s+/), ['dev0', '100.0', '200.0', '100.00', '0.78', formatLatencyUs(d.readP50Us), formatLatencyUs(d.readP99Us), formatLatencyUs(d.writeP50Us), formatLatencyUs(d.writeP99Us), '7', '2']);
  assert.match(lines[3], /^VOLUME\s+r\/s/);
  assert.deepEqual(lines[4].split(/\s+/).slice(0, 3), ['vol0', '0.0', '5.0']);
});

test('a new volume, and counters that went backwards (restart), count from zero', () => {
  const old = new IoStats();
  for (let i = 0; i < 100; i++) old.read.record(4096, 10);
  const s0 = snap(0, {}, { v: old });
  const fresh = new IoStats();
  for (let i = 0; i < 3; i++) fresh.read.record(4096, 10);
  const s1 = snap(1000, {}, { v: fresh, w: fresh });
  const rep = computeIostat(s0, s1);
  assert.deepEqual(
    rep.volumes.map((r) => [r.name, r.readOpsPerS]),
    [
      ['v', 3],
      ['w', 3],
    ],
  );
  assert.equal(rep.devices.length, 0);
  assert.doesNotMatch(formatIostat(rep), /DEVICE/);
});

test('latency formatting', () => {
  assert.equal(formatLatencyUs(0), '0');
  assert.equal(formatLatencyUs(87.5), '88us');
  assert.equal(formatLatencyUs(1250), '1.25ms');
  assert.equal(formatLatencyUs(40_000), '40.0ms');
  assert.equal(formatLatencyUs(2_100_000), '2.10s');
});

test('live: two ticks over the API, text and JSON', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tessera-iostat-'));
  const socketPath = path.join(dir, 's.sock');
  const store = new MemoryVolumeStore();
  await store.create('vol0', 2 ** 30);
  const server = await ApiServer.start({ store, socketPath });
  try {
    const vol = store.open('vol0');
    let out = '';
    let clockMs = 0;
    const io: CliIo = {
      out: (t) => (out += t),
      err: () => {},
      env: {},
      cwd: dir,
      interactive: false,
      prompt: async () => '',
      nowMs: () => clockMs,
      // the "interval": IO happens while iostat sleeps
      sleepMs: async (ms) => {
        clockMs += ms;
        for (let i = 0; i < 4; i++) await vol.write(i * 4096, Buffer.alloc(4096, 1), false);
      },
    };
    const client = new ApiClient({ target: { socketPath } });
    await runIostat(client, io, { intervalS: 0.1, count: 2, json: false });
    const reports = out.trim().split('\n\n');
    assert.equal(reports.length, 2);
    for (const r of reports) assert.match(r, /VOLUME\s+r\/s[^\n]*\nvol0\s+0\.0\s+\d+\.\d/);

    out = '';
    await runIostat(client, io, { intervalS: 0.1, count: 1, json: true });
    const lines = out.trim().split('\n');
    assert.equal(lines.length, 1);
    const rep = JSON.parse(lines[0]);
    assert.equal(rep.volumes[0].name, 'vol0');
    assert.ok(rep.volumes[0].writeOpsPerS > 0);
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
