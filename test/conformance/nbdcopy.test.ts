// Conformance with nbdcopy (libnbd) against a real `tessera up` daemon: bulk
// copies in and out must round-trip byte for byte.
//
// nbdcopy drives the server the way imaging tools do: many requests in flight
// (up to 64 MiB of them), 256 KiB-ish writes, NBD_CMD_WRITE_ZEROES/TRIM for
// zero runs it detects in the source, NBD_CMD_BLOCK_STATUS to skip holes when
// reading, NBD_CMD_FLUSH with --flush, and with --connections=N several
// connections to one export at once, which it only does because the server
// advertises NBD_FLAG_CAN_MULTI_CONN (proto.md "NBD_FLAG_CAN_MULTI_CONN": a
// flush on any connection covers writes completed on every connection).
// A wrong block-status answer, a lost out-of-order reply or a zero-write that
// zeros the wrong range all show up as a byte mismatch here.
import assert from 'node:assert/strict';
import { open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Prng, seedFromEnv } from '../../src/stdx/prng.js';
import { firstMismatch, writeRandomFile } from '../helpers/bytes.js';
import { DaemonFixture, makeTempDir } from '../helpers/daemon.js';
import { mustSucceed, requireCommands, run, runNbdsh } from '../helpers/run.js';

const MiB = 1024 * 1024;
const IMAGE_BYTES = 64 * MiB;
const COPY_TIMEOUT_MS = 60_000;

describe('nbdcopy against tessera up', () => {
  const seed = seedFromEnv();
  let fx: DaemonFixture;
  let work: string;
  let randomImg: string;
  let zeroRunsImg: string;

  before(async () => {
    console.log(`nbdcopy.test: TESSERA_SEED=${seed}`);
    requireCommands('nbdcopy', 'nbdsh');
    work = await makeTempDir('tessera-nbdcopy-');
    fx = await DaemonFixture.create({ deviceSize: '2G', volumeSize: '64M' });
    mustSucceed(await fx.cli(['volume', 'create', 'copy2', '--size', '64M']), 'tessera volume create copy2', () => fx.describe());
    const prng = new Prng(seed);
    randomImg = path.join(work, 'random.img');
    await writeRandomFile(randomImg, IMAGE_BYTES, prng);
    // Same size, random data with zero runs: object-aligned, sector-unaligned, and the tail.
    zeroRunsImg = path.join(work, 'zero-runs.img');
    await writeRandomFile(zeroRunsImg, IMAGE_BYTES, prng);
    const fh = await open(zeroRunsImg, 'r+');
    try {
      for (const [off, len] of [
        [8 * MiB, 4 * MiB],
        [20 * MiB + 512, 100 * 1024],
        [33 * MiB + 7, 3 * MiB + 1001],
        [IMAGE_BYTES - MiB, MiB],
      ]) {
        await fh.write(Buffer.alloc(len), 0, len, off);
      }
    } finally {
      await fh.close();
    }
  });

  after(async () => {
    await fx?.dispose();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function nbdcopy(args: string[], what: string): Promise<void> {
    mustSucceed(await run('nbdcopy', args, { timeoutMs: COPY_TIMEOUT_MS }), what, () => fx.describe());
  }

  async function assertSameFile(expectedPath: string, actualPath: string, what: string): Promise<void> {
    const [expected, actual] = await Promise.all([readFile(expectedPath), readFile(actualPath)]);
    const diff = firstMismatch(expected, actual);
    assert.equal(diff, null, `${what}: ${diff} (TESSERA_SEED=${seed})`);
  }

  test('nbdcopy file -> nbd:// -> file round-trips 64 MiB byte for byte (with --flush)', async () => {
    const out = path.join(work, 'out1.img');
    await nbdcopy(['--flush', randomImg, fx.uri('vol0')], 'nbdcopy file -> vol0');
    await nbdcopy([fx.uri('vol0'), out], 'nbdcopy vol0 -> file');
    await assertSameFile(randomImg, out, 'vol0 read back after nbdcopy');
  });

  test('nbdcopy --connections=4 overwrites with zero runs and reads back exactly (proto.md NBD_FLAG_CAN_MULTI_CONN, NBD_CMD_WRITE_ZEROES)', async () => {
    // vol0 now holds random.img everywhere; the zero runs must replace data, not be skipped.
    const out = path.join(work, 'out2.img');
    await nbdcopy(['--connections=4', '--requests=16', '--flush', zeroRunsImg, fx.uri('vol0')], 'nbdcopy --connections=4 file -> vol0');
    await nbdcopy(['--connections=4', '--requests=16', fx.uri('vol0'), out], 'nbdcopy --connections=4 vol0 -> file');
    await assertSameFile(zeroRunsImg, out, 'vol0 after a 4-connection copy with zero runs');
  });

  test('nbdcopy nbd:// -> nbd:// between two volumes of one daemon, then back to a file', async () => {
    const out = path.join(work, 'out3.img');
    await nbdcopy(['--flush', '--connections=2', fx.uri('vol0'), fx.uri('copy2')], 'nbdcopy vol0 -> copy2');
    await nbdcopy([fx.uri('copy2'), out], 'nbdcopy copy2 -> file');
    await assertSameFile(zeroRunsImg, out, 'copy2 after a volume-to-volume copy');
  });

  test('a copy made with --flush is visible to a new connection at once (proto.md NBD_CMD_FLUSH)', async () => {
    // Spot-check with an independent client (nbdsh), sector-unaligned offsets included.
    const expected = await readFile(zeroRunsImg);
    const probes = [0, 8 * MiB - 4096, 20 * MiB, 33 * MiB, IMAGE_BYTES - MiB - 4096];
    const statements = probes.map(
      (off) => `assert h.pread(8192, ${off}).hex() == '${expected.subarray(off, off + 8192).toString('hex')}', 'mismatch at ${off}'`,
    );
    mustSucceed(await runNbdsh(fx.uri('copy2'), statements, 20_000), 'nbdsh spot check of copy2', () => fx.describe());
  });
});
