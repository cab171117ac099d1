// Disk pools end to end (issue 4, SPEC ENG6-ENG9): a real `tessera up` daemon,
// the real CLI and real NBD clients. A RAID6 pool of six device files holds a
// volume; fio writes it with crc32c verify headers while, through the CLI, a
// device fails, is replaced (`device replace --wait`, a rebuild with a
// progress bar), another is added and one is removed (its chunks move first).
// fio must then read every block back intact. After a restart the pool
// reopens from pools.json, and with two devices failed every block still
// verifies (RAID6 reads reconstruct). Control: a verify of a never-written
// region fails, so the verify really checks.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { PoolInfo } from '../../src/api/types.js';
import { seedFromEnv } from '../../src/stdx/prng.js';
import { DaemonFixture } from '../helpers/daemon.js';
import { describe as describeRun, mustSucceed, requireCommands, run, type RunResult } from '../helpers/run.js';

const MiB = 1024 * 1024;
const FIO_TIMEOUT_MS = 240_000;
const REGION_BYTES = 160 * MiB;

interface FioJob {
  error: number;
  read: { io_bytes: number };
  write: { io_bytes: number; iops: number };
}

describe('disk pools through the CLI, with fio and qemu over NBD', () => {
  const seed = seedFromEnv();
  let fx: DaemonFixture;
  const dev = (i: number): string => path.join(fx.dataDir, `m${i}.img`);

  before(async () => {
    console.log(`pool.test: TESSERA_SEED=${seed}`);
    requireCommands('fio', 'qemu-io');
    fx = await DaemonFixture.create({ deviceSize: '256M', volumeSize: '32M' });
  });

  after(async () => {
    await fx?.dispose();
  });

  async function cli(args: string[], timeoutMs?: number): Promise<RunResult> {
    return fx.cli(args, timeoutMs);
  }

  async function ok(args: string[], timeoutMs?: number): Promise<string> {
    return mustSucceed(await cli(args, timeoutMs), `tessera ${args.join(' ')}`, () => fx.describe()).stdout;
  }

  async function poolInfo(name: string): Promise<PoolInfo> {
    return JSON.parse(await ok(['pool', 'info', name, '--json'])) as PoolInfo;
  }

  function fioArgs(mode: 'write-verify' | 'verify-only', offsetBytes: number, sizeBytes: number): string[] {
    return [
      '--name=pool',
      '--ioengine=nbd',
      `--uri=${fx.uri('pv')}`,
      '--rw=randwrite',
      '--bsrange=4k-64k',
      '--iodepth=8',
      `--offset=${offsetBytes}`,
      `--size=${sizeBytes}`,
      '--verify=crc32c',
      `--randseed=${seed}`,
      '--output-format=json',
      '--verify_state_save=0',
      ...(mode === 'write-verify' ? ['--do_verify=1', '--end_fsync=1'] : ['--verify_only']),
    ];
  }

  async function fio(args: string[]): Promise<{ result: RunResult; job: FioJob | undefined }> {
    const result = await run('fio', args, { timeoutMs: FIO_TIMEOUT_MS, cwd: fx.dataDir });
    const start = result.stdout.indexOf('{');
    const job = start >= 0 ? (JSON.parse(result.stdout.slice(start)) as { jobs: FioJob[] }).jobs[0] : undefined;
    return { result, job };
  }

  function assertVerified(r: { result: RunResult; job: FioJob | undefined }, wrote: boolean): void {
    const ctx = `TESSERA_SEED=${seed}\n${describeRun(r.result)}\n${fx.describe()}`;
    assert.equal(r.result.code, 0, ctx);
    assert.equal(r.job?.error, 0, ctx);
    assert.doesNotMatch(r.result.stderr, /verify:|bad magic|crc32c/i, ctx);
    if (wrote) assert.equal(r.job?.write.io_bytes, REGION_BYTES, ctx);
    assert.equal(r.job?.read.io_bytes, REGION_BYTES, ctx);
  }

  test('pool create raid6 on six new device files; volume create --pool; clear errors for bad requests', async () => {
    const created = JSON.parse(await ok(['pool', 'create', 'lab', '--devices', [0, 1, 2, 3, 4, 5].map(dev).join(','), '--protection', 'raid6', '--device-size', '320M', '--json'])) as PoolInfo;
    assert.deepEqual([created.protection, created.stripe, created.state], ['raid6', { data: 3, parity: 2 }, 'online']);
    assert.deepEqual(created.members.map((m) => [m.path, m.state]), [0, 1, 2, 3, 4, 5].map((i) => [dev(i), 'ok']));
    const vol = JSON.parse(await ok(['volume', 'create', 'pv', '--size', '256M', '--pool', 'lab', '--json'])) as { pool: string };
    assert.equal(vol.pool, 'lab');
    assert.match(await ok(['pool', 'list']), /^lab\s+raid6\s+3\+2\s+online\s+6\/6/m);
    assert.match(await ok(['volume', 'list']), /^pv\s.*\slab\s/m);

    const taken = await cli(['pool', 'create', 'other', '--devices', `${dev(0)},${dev(9)}`, '--protection', 'mirror2', '--device-size', '64M']);
    assert.equal(taken.code, 1, describeRun(taken));
    assert.match(taken.stderr, /already in pool lab/);
    const bad = await cli(['pool', 'create', 'x', '--devices', dev(9), '--protection', 'raid7']);
    assert.equal(bad.code, 2, describeRun(bad));
    const tooFew = await cli(['pool', 'create', 'x', '--devices', `${dev(8)},${dev(9)}`, '--protection', 'raid6', '--device-size', '64M']);
    assert.equal(tooFew.code, 1, describeRun(tooFew));
    assert.match(tooFew.stderr, /raid6 needs at least 3 devices/);
    const noPool = await cli(['volume', 'create', 'y', '--size', '1G', '--pool', 'nosuch']);
    assert.equal(noPool.code, 1, describeRun(noPool));
    assert.match(noPool.stderr, /no pool "nosuch"/);
    // Capacity alarms: thresholds below the engine's own metadata raise one at once, in every view.
    assert.match(await ok(['pool', 'set', 'lab', '--alarm-at', '1,2']), /alarms at 1 % and 2 %; now critical/);
    assert.match(await ok(['pool', 'list']), /^lab\s.*\scritical\s/m);
    assert.match(await ok(['status']), /pools:\s+lab \(raid6, online, \d+ % used, ALARM critical\)/);
    assert.match(await ok(['pool', 'set', 'lab', '--alarm-at', '80,95']), /now ok/);
    const badAlarm = await cli(['pool', 'set', 'lab', '--alarm-at', '95,80']);
    assert.equal(badAlarm.code, 2, describeRun(badAlarm));
    const busy = await cli(['pool', 'delete', 'lab', '--yes']);
    assert.equal(busy.code, 1, describeRun(busy));
    assert.match(busy.stderr, /still holds 1 volume/);
  });

  test('fio verify while a device fails, is replaced (rebuild --wait), one is added and one removed: every block intact', async () => {
    let fioDone = false;
    const writer = fio(fioArgs('write-verify', 0, REGION_BYTES)).finally(() => (fioDone = true));
    await new Promise((r) => setTimeout(r, 1500));
    assert.match(await ok(['device', 'fail', dev(1)]), /failed .*m1\.img; pool lab is degraded/);
    const replaced = await cli(['device', 'replace', dev(1), dev(6), '--size', '320M', '--wait'], 180_000);
    mustSucceed(replaced, 'device replace --wait', () => fx.describe());
    assert.match(replaced.stderr, /rebuild \[#+\] 100 %.* done/, 'the progress bar reached 100 %');
    await ok(['device', 'add', 'lab', dev(7), '--size', '320M']);
    const removed = await cli(['device', 'remove', dev(2), '--wait'], 180_000);
    mustSucceed(removed, 'device remove --wait', () => fx.describe());
    assert.match(removed.stderr, /drain \[#+\] 100 %/);
    // fio writes, then reads everything back: the changes above ran under its IO.
    assert.equal(fioDone, false, 'fio was still running when the device changes were done (make the region larger if this fails)');
    assertVerified(await writer, true);

    const p = await poolInfo('lab');
    assert.equal(p.state, 'online');
    assert.deepEqual(p.degraded, { one: 0, more: 0 });
    const byPath = new Map(p.members.map((m) => [m.path, m]));
    assert.deepEqual([byPath.get(dev(1))?.state, byPath.get(dev(2))?.state], ['out', 'out'], 'the replaced and the removed device are out');
    assert.equal(p.members.filter((m) => m.state === 'out').length, 2);
    assert.equal(p.members.filter((m) => m.state === 'ok').length, 6);
    assert.equal(p.members.filter((m) => m.state === 'ok' && m.chunksUsed === 0).length, 0, 'every device in service holds chunks');
    assert.equal(p.rebuild?.running, false);
    assert.match(await ok(['pool', 'info', 'lab']), /state:\s+online[\s\S]*MEMBER\s+PATH\s+STATE\s+CHUNKS\s+USE%\s+WEAR/);
  });

  test('restart: the pool reopens from pools.json; with two devices failed every block still verifies', async () => {
    const stopped = await fx.daemon.stop();
    assert.equal(stopped.code, 0, fx.describe());
    await fx.start();
    assert.equal((await poolInfo('lab')).state, 'online');
    assertVerified(await fio(fioArgs('verify-only', 0, REGION_BYTES)), false);
    await ok(['device', 'fail', dev(0)]);
    await ok(['device', 'fail', dev(3)]);
    assertVerified(await fio(fioArgs('verify-only', 0, REGION_BYTES)), false);
    const control = await fio(fioArgs('verify-only', REGION_BYTES, 32 * MiB));
    assert.notEqual(control.result.code, 0, `a verify of never-written blocks must fail:\n${describeRun(control.result)}`);
  });

  test('partitions (DEV4): a raid5 pool on partitions of three files survives losing a whole file, and each partition\'s IOPS limit holds', async () => {
    const disk = (i: number): string => path.join(fx.dataDir, `disk${i}.img`);
    for (const i of [0, 1, 2]) {
      const out = await ok(['device', 'partition', disk(i), '--count', '2', '--iops', '150', '--size', '400M']);
      assert.match(out, new RegExp(`disk${i}\\.img#p2\\s+\\S+ MiB\\s+150\\s+unlimited`));
    }
    const parts = [0, 1, 2].flatMap((i) => [`${disk(i)}#p1`, `${disk(i)}#p2`]);
    const same = await cli(['pool', 'create', 'bad', '--devices', `${disk(0)},${disk(0)}#p1`, '--protection', 'mirror2']);
    assert.equal(same.code, 1, describeRun(same));
    assert.match(same.stderr, /are the same device/);
    const p = JSON.parse(await ok(['pool', 'create', 'parts', '--devices', parts.join(','), '--protection', 'raid5', '--stripe-width', '4', '--json'])) as PoolInfo;
    assert.deepEqual(p.members.map((m) => m.path), parts);
    const inUse = await cli(['device', 'partition', disk(1), '--count', '3']);
    assert.equal(inUse.code, 1, describeRun(inUse));
    assert.match(inUse.stderr, /already in pool parts/);
    await ok(['volume', 'create', 'pp', '--size', '64M', '--pool', 'parts']);
    const uri = fx.uri('pp');
    mustSucceed(await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 0 24M', uri], { timeoutMs: 120_000 }), 'qemu-io write');
    // IO limits: 6 partitions x 150 IOPS bound random reads (from the page cache they would run at thousands).
    const limited = await fio(['--name=lim', '--ioengine=nbd', `--uri=${uri}`, '--rw=randread', '--bs=4k', '--iodepth=16', '--size=24M', '--time_based', '--runtime=4', '--output-format=json']);
    const iops = (limited.job as unknown as { read: { iops: number } } | undefined)?.read.iops ?? NaN;
    console.log(`pool on IOPS-limited partitions: ${Math.round(iops)} read IOPS (limit 6 x 150)`);
    assert.ok(iops > 100 && iops < 6 * 150 * 1.5, `read IOPS ${iops} not bounded by the partitions' limits\n${describeRun(limited.result)}`);
    // Disk 1 dies: both of its partitions.
    await ok(['device', 'fail', `${disk(1)}#p1`]);
    await ok(['device', 'fail', `${disk(1)}#p2`]);
    const read = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x3c 0 24M', uri], { timeoutMs: 120_000 });
    mustSucceed(read, 'qemu-io read -P after losing disk1', () => fx.describe());
    assert.doesNotMatch(read.stdout, /Pattern verification failed/);
    await ok(['volume', 'delete', 'pp', '--yes']);
    await ok(['pool', 'delete', 'parts', '--yes']);
  });

  test('qemu-io writes and reads a pattern on the degraded pool; pool delete works once its volumes are gone', async () => {
    const uri = fx.uri('pv');
    mustSucceed(await run('qemu-io', ['-f', 'raw', '-c', `write -P 0x5a ${200 * MiB} 8M`, uri], { timeoutMs: 60_000 }), 'qemu-io write');
    const read = await run('qemu-io', ['-f', 'raw', '-c', `read -P 0x5a ${200 * MiB} 8M`, uri], { timeoutMs: 60_000 });
    mustSucceed(read, 'qemu-io read -P');
    assert.doesNotMatch(read.stdout, /Pattern verification failed/);
    await ok(['volume', 'delete', 'pv', '--yes']);
    await ok(['pool', 'delete', 'lab', '--yes']);
    assert.doesNotMatch(await ok(['pool', 'list']), /^lab/m);
  });
});
