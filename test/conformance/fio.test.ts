// Conformance and data integrity with fio's nbd engine (libnbd, many requests in
// flight) against a real `tessera up` daemon.
//
// fio writes every block of a region once in random order with a crc32c verify
// header (offset, length, seed) and reads it all back (--do_verify=1); then,
// after a clean restart of the daemon, a --verify_only job re-reads and checks
// every block again (durability across restart; --end_fsync sends NBD_CMD_FLUSH).
// Jobs: 4 KiB at iodepth 16; 4-64 KiB (bsrange); 512 B-16 KiB at 512-byte
// alignment, where concurrent writes share stored 4 KiB blocks and the engine's
// read-modify-write must not lose either (proto.md "Block size constraints":
// 512 is our advertised minimum). A control job runs --verify_only on a region
// that was never written and must FAIL, so a verify that checks nothing cannot
// pass silently.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { seedFromEnv } from '../../src/stdx/prng.js';
import { DaemonFixture } from '../helpers/daemon.js';
import { describe as describeRun, requireCommands, run, type RunResult } from '../helpers/run.js';

const MiB = 1024 * 1024;
const FIO_TIMEOUT_MS = 60_000;

interface FioJob {
  jobname: string;
  error: number;
  read: { io_bytes: number; iops: number };
  write: { io_bytes: number; iops: number };
}

interface Region {
  name: string;
  offsetBytes: number;
  sizeBytes: number;
  /** fio block size options. */
  bs: string[];
}

const REGIONS: Region[] = [
  { name: 'rw4k', offsetBytes: 0, sizeBytes: 64 * MiB, bs: ['--bs=4k'] },
  { name: 'bsrange', offsetBytes: 64 * MiB, sizeBytes: 64 * MiB, bs: ['--bsrange=4k-64k'] },
  { name: 'sub4k', offsetBytes: 128 * MiB, sizeBytes: 16 * MiB, bs: ['--bsrange=512-16k', '--blockalign=512'] },
];
const UNWRITTEN: Region = { name: 'control', offsetBytes: 160 * MiB, sizeBytes: 16 * MiB, bs: ['--bsrange=4k-64k'] };

describe('fio --ioengine=nbd with crc32c verify against tessera up', () => {
  const seed = seedFromEnv();
  let fx: DaemonFixture;

  before(async () => {
    console.log(`fio.test: TESSERA_SEED=${seed}`);
    requireCommands('fio');
    fx = await DaemonFixture.create({ deviceSize: '2G', volumeSize: '192M' });
  });

  after(async () => {
    await fx?.dispose();
  });

  function jobArgs(r: Region, mode: 'write-verify' | 'verify-only'): string[] {
    return [
      `--name=${r.name}`,
      '--ioengine=nbd',
      `--uri=${fx.uri('vol0')}`,
      '--rw=randwrite',
      ...r.bs,
      '--iodepth=16',
      `--offset=${r.offsetBytes}`,
      `--size=${r.sizeBytes}`,
      '--verify=crc32c',
      `--randseed=${seed}`,
      '--output-format=json',
      '--verify_state_save=0', // fio would drop local-*-verify.state files into its cwd
      ...(mode === 'write-verify' ? ['--do_verify=1', '--end_fsync=1'] : ['--verify_only']),
    ];
  }

  async function fio(args: string[]): Promise<{ result: RunResult; jobs: FioJob[] }> {
    const result = await run('fio', args, { timeoutMs: FIO_TIMEOUT_MS, cwd: fx.dataDir });
    assert.equal(result.timedOut, false, `fio timed out:\n${describeRun(result)}\n${fx.describe()}`);
    // The nbd engine prints "fio: connected to NBD server" before the JSON.
    const start = result.stdout.indexOf('{');
    let jobs: FioJob[] = [];
    if (start >= 0) {
      try {
        jobs = (JSON.parse(result.stdout.slice(start)) as { jobs: FioJob[] }).jobs;
      } catch (err) {
        throw new Error(`fio printed invalid JSON (${(err as Error).message}):\n${describeRun(result)}`);
      }
    }
    return { result, jobs };
  }

  async function assertClean(args: string[], r: Region, expectWriteBytes: boolean): Promise<void> {
    const { result, jobs } = await fio(args);
    const ctx = `TESSERA_SEED=${seed}\n${describeRun(result)}\n${fx.describe()}`;
    assert.equal(result.code, 0, `fio ${r.name} exited ${result.code}\n${ctx}`);
    assert.equal(jobs.length, 1, ctx);
    const job = jobs[0];
    assert.equal(job.error, 0, `fio ${r.name} reports error ${job.error}\n${ctx}`);
    assert.doesNotMatch(result.stderr, /verify:|bad magic|crc32c/i, ctx);
    // Everything was written and everything was read back for verification.
    if (expectWriteBytes) assert.equal(job.write.io_bytes, r.sizeBytes, `fio ${r.name} wrote ${job.write.io_bytes} bytes\n${ctx}`);
    assert.equal(job.read.io_bytes, r.sizeBytes, `fio ${r.name} verified ${job.read.io_bytes} bytes\n${ctx}`);
    console.log(`fio ${r.name}: ${expectWriteBytes ? `write ${Math.round(job.write.iops)} IOPS, ` : ''}verified ${r.sizeBytes / MiB} MiB`);
  }

  for (const r of REGIONS) {
    test(`fio randwrite ${r.bs.join(' ')} iodepth 16 --verify=crc32c --do_verify=1 over ${r.sizeBytes / MiB} MiB: 0 errors`, async () => {
      await assertClean(jobArgs(r, 'write-verify'), r, true);
    });
  }

  test('after a clean restart of the daemon, fio --verify_only reads every block back intact (durability)', async () => {
    const stopped = await fx.daemon.stop();
    assert.equal(stopped.code, 0, `daemon did not stop cleanly: ${JSON.stringify(stopped)}\n${fx.describe()}`);
    await fx.start();
    for (const r of REGIONS) await assertClean(jobArgs(r, 'verify-only'), r, false);
  });

  test('control: fio --verify_only on a never-written region fails (the verify really checks)', async () => {
    const { result, jobs } = await fio(jobArgs(UNWRITTEN, 'verify-only'));
    assert.notEqual(result.code, 0, `verify of zeros must fail:\n${describeRun(result)}`);
    assert.ok(jobs.length === 1 && jobs[0].error !== 0, `fio JSON must report an error:\n${describeRun(result)}`);
  });
});
