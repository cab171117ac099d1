// Formatting and argument parsing of the pool commands (cli/pool.ts); the
// commands themselves run against a real daemon in test/conformance/pool.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ApiClient } from '../api/client.js';
import type { PoolInfo } from '../api/types.js';
import type { CliIo } from './io.js';
import { formatPoolInfo, formatPoolList, parseAlarmAt, progressBar, waitForJob } from './pool.js';

function pool(over: Partial<PoolInfo> = {}): PoolInfo {
  return {
    name: 'lab', protection: 'raid6', state: 'online', stripe: { data: 3, parity: 2 }, chunkBytes: 16 << 20, sizeBytes: 3 * 2 ** 30,
    capacity: { usedChunks: 10, totalChunks: 100, usedFraction: 0.1, alarm: 'ok', thresholds: { warning: 0.8, critical: 0.95 } },
    volumes: 1, containers: 2, narrowed: 0, degraded: { one: 0, more: 0 }, repairedBlocks: 0,
    members: [{ index: 0, path: '/d/a', state: 'ok', chunksUsed: 5, chunksTotal: 50, wear: 0.001 }, { index: 1, path: '', state: 'out', chunksUsed: 0, chunksTotal: 50, wear: 0 }],
    rebuild: null,
    ...over,
  };
}

test('progress bar: width, percent, clamped', () => {
  assert.equal(progressBar(0, 100), `[${'.'.repeat(30)}]   0 %`);
  assert.equal(progressBar(50, 100), `[${'#'.repeat(15)}${'.'.repeat(15)}]  50 %`);
  assert.equal(progressBar(200, 100), `[${'#'.repeat(30)}] 100 %`);
  assert.equal(progressBar(0, 0), `[${'#'.repeat(30)}] 100 %`);
});

test('--alarm-at: percentages to fractions; bad input is a usage error naming the form', () => {
  assert.deepEqual(parseAlarmAt('80,95'), { warning: 0.8, critical: 0.95 });
  assert.deepEqual(parseAlarmAt('70%, 90%'), { warning: 0.7, critical: 0.9 });
  for (const bad of ['80', '95,80', '0,50', '50,101', 'a,b']) assert.throws(() => parseAlarmAt(bad), /WARNING,CRITICAL/);
});

test('pool list and info show protection, state, devices in service, alarm and the job', () => {
  const running = pool({ state: 'degraded', degraded: { one: 2, more: 0 }, rebuild: { running: true, kind: 'rebuild', containersTotal: 4, containersDone: 1, unrecoverable: 0, noRoom: 0, bytesTotal: 4 << 20, bytesDone: 1 << 20, etaMs: 3000, elapsedMs: 1000 } });
  assert.match(formatPoolList({ pools: [running] }), /^lab\s+raid6\s+3\+2\s+degraded\s+1\/1\s+3\.00 GiB\s+10%\s+ok\s+1\s+rebuild 25%$/m);
  const info = formatPoolInfo(running);
  assert.match(info, /state:\s+degraded \(2 container\(s\) lack one chunk, 0 lack two or more\)/);
  assert.match(info, /alarm ok \(warning at 80 %, critical at 95 %\)/);
  assert.match(info, /rebuild:\s+rebuild \[#{8}\.{22}\]  25 % 1\/4 containers, 1\.00 MiB\/4\.00 MiB, ETA 3s/);
  assert.match(info, /^\s+1\s+-\s+out\s+0\/50/m);
});

test('waitForJob polls until the job ends, prints a line per 10 % off a terminal, and fails on a job that left containers degraded', async () => {
  const steps = [10, 55, 100].map((pct, i) => pool({ rebuild: { running: i < 2, kind: 'rebuild', containersTotal: 10, containersDone: pct / 10, unrecoverable: 0, noRoom: 0, bytesTotal: 100, bytesDone: pct, etaMs: 1000, elapsedMs: 1 } }));
  let calls = 0;
  const client = { getPool: async () => steps[Math.min(calls++, steps.length - 1)] } as unknown as ApiClient;
  const err: string[] = [];
  const io = { err: (t: string) => err.push(t), out: () => {}, interactive: false, sleepMs: async () => {}, env: {}, cwd: '/', prompt: async () => '', nowMs: () => 0 } as CliIo;
  const final = await waitForJob(client, 'lab', io, false);
  assert.equal(final.rebuild?.running, false);
  assert.equal(err.length, 3, err.join(''));
  assert.match(err[2], /100 % 10\/10 containers.*done/);
  const stuck = pool({ rebuild: { running: false, kind: 'rebuild', containersTotal: 3, containersDone: 3, unrecoverable: 0, noRoom: 2, bytesTotal: 1, bytesDone: 1, etaMs: 0, elapsedMs: 1 } });
  const client2 = { getPool: async () => stuck } as unknown as ApiClient;
  await assert.rejects(waitForJob(client2, 'lab', io, true), /left 2 container\(s\) without a device with room/);
});
