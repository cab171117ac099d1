// kill -9 of a real `tessera up` daemon while an NBD client writes: every write
// covered by a completed NBD_CMD_FLUSH must survive, and nothing may read back
// as garbage (GUIDE §4: "0 flushed writes lost, 0 garbage reads"; proto.md
// "NBD_CMD_FLUSH": the server MUST NOT reply until all writes it completed
// before the flush are on permanent storage).
//
// Each round: the client (test/conformance/crash.py under nbdsh) writes batches
// of concurrent 4 KiB writes / write-zeroes / trims to distinct blocks, each
// batch followed by a flush whose completion it prints; at a random moment
// (seeded) the test SIGKILLs the daemon, restarts it on the same data dir, and
// the verifier reads the whole volume: each block must hold exactly its state
// after the last flushed batch, or the state from the one batch that may have
// been in flight, and every block outside the written region must be zero.
// Three rounds on the same volume; each round's observed state is the baseline
// of the next, so overwrites across crashes are checked too.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Prng, seedFromEnv } from '../../src/stdx/prng.js';
import { CONFORMANCE_DIR, DaemonFixture, makeTempDir } from '../helpers/daemon.js';
import { describe as describeRun, nbdshEnv, runNbdshScript } from '../helpers/run.js';

const ROUNDS = 3;
/** The writer's region: 4096 blocks of 4 KiB (16 MiB) of a 64 MiB volume. */
const REGION_BLOCKS = 4096;
const BATCH_OPS_MAX = 32;
const KILL_DELAY_MS_MIN = 200;
const KILL_DELAY_MS_MAX = 2_000;
const FIRST_FLUSH_TIMEOUT_MS = 20_000;
const WRITER_TIMEOUT_MS = 60_000;
const VERIFY_TIMEOUT_MS = 60_000;

describe('kill -9 of tessera up during writes: flushed data survives, nothing is garbage', () => {
  const seed = seedFromEnv();
  const prng = new Prng(seed);
  let fx: DaemonFixture;
  let work: string;

  before(async () => {
    console.log(`crash.test: TESSERA_SEED=${seed}`);
    nbdshEnv();
    work = await makeTempDir('tessera-crash-');
    fx = await DaemonFixture.create({ deviceSize: '2G', volumeSize: '64M' });
  });

  after(async () => {
    await fx?.dispose();
    if (work) await rm(work, { recursive: true, force: true });
  });

  function env(round: number, mode: 'write' | 'verify', lastFlushed = -1): NodeJS.ProcessEnv {
    return {
      CRASH_MODE: mode,
      CRASH_URI: fx.uri('vol0'),
      CRASH_SEED: String(seed),
      CRASH_ROUND: String(round),
      CRASH_BLOCKS: String(REGION_BLOCKS),
      CRASH_BATCH: String(BATCH_OPS_MAX),
      CRASH_STATE: path.join(work, 'state.json'),
      CRASH_LAST_FLUSHED: String(lastFlushed),
    };
  }

  for (let round = 1; round <= ROUNDS; round++) {
    test(`round ${round}: kill -9 at a random moment, restart, every flushed block reads back exactly (proto.md NBD_CMD_FLUSH)`, async () => {
      const script = path.join(CONFORMANCE_DIR, 'crash.py');
      const killDelayMs = KILL_DELAY_MS_MIN + prng.int(KILL_DELAY_MS_MAX - KILL_DELAY_MS_MIN);
      let resolveFirstFlush: () => void = () => {};
      const firstFlush = new Promise<void>((resolve) => (resolveFirstFlush = resolve));
      let seen = '';
      const writer = runNbdshScript(script, env(round, 'write'), {
        timeoutMs: WRITER_TIMEOUT_MS,
        onStdout: (chunk) => {
          seen += chunk;
          if (/^FLUSHED \d+$/m.test(seen)) resolveFirstFlush();
        },
      });
      const early = await Promise.race([
        firstFlush.then(() => null),
        writer.then((r) => r),
        new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), FIRST_FLUSH_TIMEOUT_MS).unref()),
      ]);
      if (early !== null) {
        await fx.daemon.kill();
        const r = await writer;
        assert.fail(`writer did not complete a first flush (${early === 'timeout' ? 'timeout' : 'it exited'}):\n${describeRun(r)}\n${fx.describe()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, killDelayMs));
      const daemonDiedEarly = !fx.daemon.alive;
      const killed = await fx.daemon.kill();
      assert.equal(daemonDiedEarly, false, `the daemon died before the kill:\n${fx.describe()}`);
      assert.equal(killed.signal, 'SIGKILL', `daemon exit: ${JSON.stringify(killed)}`);

      const w = await writer;
      assert.equal(w.timedOut, false, `writer did not stop after the kill:\n${describeRun(w)}`);
      assert.match(w.stdout, /WRITER STOPPED/, `writer should stop on a connection error after the kill:\n${describeRun(w)}`);
      const flushed = [...w.stdout.matchAll(/^FLUSHED (\d+)$/gm)].map((m) => Number(m[1]));
      assert.ok(flushed.length > 0, describeRun(w));
      const lastFlushed = flushed[flushed.length - 1];
      assert.deepEqual(flushed, [...Array(lastFlushed + 1).keys()], 'flushes must be reported in order, none missing');

      await fx.start(); // restart on the same data dir and port: recovery
      const v = await runNbdshScript(script, env(round, 'verify', lastFlushed), { timeoutMs: VERIFY_TIMEOUT_MS });
      const summary = v.stdout.split('\n').find((l) => l.startsWith('CRASH VERIFY OK'));
      console.log(`round ${round}: killed ${killDelayMs} ms after the first flush, ${lastFlushed + 1} batches flushed; ${summary ?? 'VERIFY FAILED'}`);
      assert.ok(
        v.code === 0 && summary !== undefined,
        `round ${round} verification failed (TESSERA_SEED=${seed}):\n${describeRun(v)}\n--- writer ---\n${describeRun(w)}\n${fx.describe()}`,
      );
    });
  }
});
