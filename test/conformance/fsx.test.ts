// fsx-style random workload (like Ceph's and xfstests' fsx) through libnbd's
// Python API under nbdsh, against a real `tessera up` daemon: read, write (some
// FUA), trim, write_zeroes with and without NO_HOLE/FAST_ZERO, flush, cache and
// block_status at byte-granular, 512- and 4K-aligned offsets up to 1 MiB, in
// batches of up to 16 concurrent non-overlapping requests (so sub-block writes to
// one stored 4 KiB block race in the engine's read-modify-write), each checked
// against a mirror; the whole volume is compared at checkpoints and at the end.
// GUIDE §4: "Random read/write/trim/write-zeroes/resize checked against a mirror
// file: 0 mismatches".
//
// Three phases with `tessera volume resize` between them (shrink to a size that
// is not a multiple of 4 KiB, then grow): each phase reconnects and first checks
// the whole volume against the mirror truncated/zero-extended, so data past a
// shrink must not reappear after a grow.
//
// Seeded: TESSERA_SEED replays a run; TESSERA_FSX_OPS changes the total number
// of operations (default 50,000, the CI minimum).
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { seedFromEnv } from '../../src/stdx/prng.js';
import { CONFORMANCE_DIR, DaemonFixture, makeTempDir } from '../helpers/daemon.js';
import { describe as describeRun, mustSucceed, nbdshEnv, runNbdshScript } from '../helpers/run.js';

const MiB = 1024 * 1024;
const OPS_TOTAL = Number(process.env.TESSERA_FSX_OPS ?? 50_000);
const PHASE_TIMEOUT_MS = 120_000;

interface Phase {
  /** Volume size during the phase; the volume is resized to it first (phase 1: created so). */
  sizeBytes: number;
  /** Share of OPS_TOTAL. */
  share: number;
  /** Shrinking below written data needs --discard-data. */
  discardData: boolean;
}

const PHASES: Phase[] = [
  { sizeBytes: 64 * MiB, share: 0.5, discardData: false },
  { sizeBytes: 40 * MiB + 3 * 512, share: 0.25, discardData: true }, // shrink, end not 4K-aligned
  { sizeBytes: 72 * MiB, share: 0.25, discardData: false }, // grow past the old size
];

describe('fsx random workload through nbdsh against tessera up', () => {
  const seed = seedFromEnv();
  let fx: DaemonFixture;
  let work: string;
  let failedPhase: number | null = null;

  before(async () => {
    console.log(`fsx.test: TESSERA_SEED=${seed} TESSERA_FSX_OPS=${OPS_TOTAL}`);
    nbdshEnv(); // throws a clear message if nbdsh/python3-libnbd is missing
    work = await makeTempDir('tessera-fsx-');
    fx = await DaemonFixture.create({ deviceSize: '2G', volumeSize: '64M' });
  });

  after(async () => {
    await fx?.dispose();
    if (work) await rm(work, { recursive: true, force: true });
  });

  PHASES.forEach((phase, index) => {
    const n = index + 1;
    const ops = Math.max(1, Math.round(OPS_TOTAL * phase.share));
    test(`fsx phase ${n}: ${ops} ops on ${phase.sizeBytes} bytes, 0 mismatches (proto.md "Request message", NBD_CMD_FLAG_NO_HOLE, NBD_CMD_FLAG_FAST_ZERO)`, async () => {
      // Each phase starts from the mirror the previous one saved: after a failure, later phases prove nothing.
      if (failedPhase !== null) assert.fail(`phase ${failedPhase} failed, and this phase starts from its result`);
      failedPhase = n; // cleared on success
      if (n > 1) {
        const args = ['volume', 'resize', 'vol0', '--size', String(phase.sizeBytes), '--json'];
        if (phase.discardData) args.push('--discard-data');
        const r = mustSucceed(await fx.cli(args), `tessera volume resize to ${phase.sizeBytes}`, () => fx.describe());
        assert.equal((JSON.parse(r.stdout) as { sizeBytes: number }).sizeBytes, phase.sizeBytes, r.stdout);
      }
      const r = await runNbdshScript(
        path.join(CONFORMANCE_DIR, 'fsx.py'),
        {
          FSX_URI: fx.uri('vol0'),
          FSX_SEED: String(seed),
          FSX_OPS: String(ops),
          FSX_PHASE: String(n),
          FSX_MIRROR: path.join(work, 'mirror.bin'),
          FSX_SIZE: String(phase.sizeBytes),
        },
        { timeoutMs: PHASE_TIMEOUT_MS },
      );
      const summary = r.stdout.split('\n').find((l) => l.startsWith('FSX OK'));
      if (summary) console.log(summary);
      assert.ok(
        r.code === 0 && !r.timedOut && summary !== undefined,
        `fsx phase ${n} failed (replay with TESSERA_SEED=${seed} TESSERA_FSX_OPS=${OPS_TOTAL}):\n${describeRun(r)}\n${fx.describe()}`,
      );
      assert.match(summary, /0 mismatches/);
      assert.ok(fx.daemon.alive, fx.describe());
      failedPhase = null;
    });
  });
});
