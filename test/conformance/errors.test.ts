// Error paths and protocol abuse against a real `tessera up` daemon, with libnbd
// (nbdsh) as a well-behaved client and a hand-written raw TCP client
// (test/helpers/nbdraw.ts) as a badly behaved one.
//
// - proto.md "Error values": reads and trims past the end get EINVAL, writes and
//   write-zeroes past the end get ENOSPC, and a rejected request changes nothing.
// - proto.md "Block size constraints": once the client asked for block sizes
//   (libnbd does by default) misaligned requests get EINVAL; a client that did
//   not ask may send byte-granular requests, and they must work.
// - proto.md "NBD_OPT_GO"/"NBD_OPT_EXPORT_NAME": an unknown export is an error
//   (GO) or a closed connection (EXPORT_NAME, which cannot report errors).
// - Oversized requests (more than the 32 MiB maximum payload), unknown commands,
//   bad magic, unknown client flags: EINVAL or a closed connection, never a crash.
// - GUIDE §4 "Protocol abuse": while a libnbd client writes and verifies, raw
//   clients send garbage and disconnect at every handshake stage and in the
//   middle of requests; the good client never sees an error, the daemon stays
//   up, and every abusive socket is closed afterwards (no leaked sockets).
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Prng, seedFromEnv } from '../../src/stdx/prng.js';
import { CONFORMANCE_DIR, DaemonFixture, TESSERA_BIN } from '../helpers/daemon.js';
import {
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_EINVAL,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_OPT_EXPORT_NAME,
  RawNbd,
} from '../helpers/nbdraw.js';
import { describe as describeRun, mustSucceed, nbdshEnv, run, runNbdshScript, type RunResult } from '../helpers/run.js';

const MiB = 1024 * 1024;
const VOLUME_BYTES = 64 * MiB;
const PAYLOAD_BYTES_MAX = 32 * MiB;
const SCRIPT_TIMEOUT_MS = 30_000;
const STEADY_SECONDS = 6;
const SOCKET_SETTLE_MS_MAX = 12_000;

/** Sockets the daemon holds open (Linux /proc). */
function socketCount(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
    } catch {
      // closed while we looked
    }
  }
  return n;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('NBD error paths and protocol abuse against tessera up', () => {
  const seed = seedFromEnv();
  let fx: DaemonFixture;

  before(async () => {
    console.log(`errors.test: TESSERA_SEED=${seed}`);
    nbdshEnv();
    fx = await DaemonFixture.create({ deviceSize: '2G', volumeSize: '64M' });
  });

  after(async () => {
    await fx?.dispose();
  });

  function check(name: string, volume: string): Promise<RunResult> {
    return runNbdshScript(
      path.join(CONFORMANCE_DIR, 'errors.py'),
      {
        ERRORS_CHECK: name,
        ERRORS_URI: fx.uri(volume),
        ERRORS_BAD_URI: fx.uri('no-such-export'),
        ERRORS_NODE: process.execPath,
        ERRORS_BIN: TESSERA_BIN,
        ERRORS_DATA_DIR: fx.dataDir,
      },
      { timeoutMs: SCRIPT_TIMEOUT_MS },
    );
  }

  async function mustPass(name: string, volume = 'vol0'): Promise<void> {
    const r = await check(name, volume);
    assert.ok(r.code === 0 && r.stdout.includes(`OK ${name}`), `check ${name} failed:\n${describeRun(r)}\n${fx.describe()}`);
  }

  async function rawExport(): Promise<RawNbd> {
    const c = await RawNbd.connect(fx.daemon.port);
    const { sizeBytes } = await c.exportName('vol0');
    assert.equal(sizeBytes, BigInt(VOLUME_BYTES));
    return c;
  }

  /** A small read that must succeed: the connection is still in sync. */
  async function assertUsable(c: RawNbd, cookie: bigint): Promise<void> {
    c.write(RawNbd.request(NBD_CMD_READ, cookie, 0n, 512));
    const r = await c.readSimpleReply();
    assert.deepEqual(r, { error: 0, cookie });
    await c.read(512);
  }

  test('nbdsh: reads/trims past the end get EINVAL, writes/zeroes past the end ENOSPC (proto.md "Error values")', async () => {
    await mustPass('past_end');
  });

  test('nbdsh: misaligned requests get EINVAL after block sizes were agreed (proto.md "Block size constraints")', async () => {
    await mustPass('misaligned');
  });

  test('nbdsh: byte-granular requests work when the client did not request block sizes (proto.md "Block size constraints")', async () => {
    await mustPass('unaligned_allowed');
  });

  test('nbdsh/nbdinfo: an unknown export name is refused (proto.md NBD_OPT_GO, NBD_REP_ERR_UNKNOWN)', async () => {
    await mustPass('unknown_export');
    const r = await run('nbdinfo', [fx.uri('no-such-export')], { timeoutMs: SCRIPT_TIMEOUT_MS });
    assert.notEqual(r.code, 0, describeRun(r));
  });

  test('nbdsh: a live connection follows `tessera volume resize` (ENOSPC/EINVAL past a shrunken end, zeros after regrow)', async () => {
    mustSucceed(await fx.cli(['volume', 'create', 'resizeme', '--size', '16M']), 'volume create resizeme', () => fx.describe());
    await mustPass('resize_while_connected', 'resizeme');
  });

  test('nbdsh: IO on a volume deleted under a live connection fails with ESHUTDOWN (proto.md "Error values")', async () => {
    mustSucceed(await fx.cli(['volume', 'create', 'deleteme', '--size', '16M']), 'volume create deleteme', () => fx.describe());
    await mustPass('deleted_while_connected', 'deleteme');
  });

  test('raw: NBD_OPT_EXPORT_NAME of an unknown export closes the connection (proto.md NBD_OPT_EXPORT_NAME)', async () => {
    const c = await RawNbd.connect(fx.daemon.port);
    await c.readGreeting();
    c.sendClientFlags(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    c.sendOption(NBD_OPT_EXPORT_NAME, Buffer.from('no-such-export'));
    const rest = await c.untilClosed();
    assert.equal(rest.length, 0, `the server must send nothing, got ${rest.toString('hex')}`);
  });

  test('raw: unknown client flags close the connection (proto.md "Client flags")', async () => {
    const c = await RawNbd.connect(fx.daemon.port);
    await c.readGreeting();
    c.sendClientFlags(0x8000_0000 | NBD_FLAG_C_FIXED_NEWSTYLE);
    await c.untilClosed();
  });

  test('raw: a read above the 32 MiB maximum payload gets EINVAL and the connection stays usable (proto.md NBD_CMD_READ)', async () => {
    const c = await rawExport();
    try {
      c.write(RawNbd.request(NBD_CMD_READ, 1n, 0n, PAYLOAD_BYTES_MAX + 4096));
      assert.deepEqual(await c.readSimpleReply(), { error: NBD_EINVAL, cookie: 1n });
      await assertUsable(c, 2n);
    } finally {
      c.reset();
    }
  });

  test('raw: a write above the maximum payload gets EINVAL, its payload is skipped, and the stream stays in sync', async () => {
    const c = await rawExport();
    try {
      const len = PAYLOAD_BYTES_MAX + 512;
      c.write(RawNbd.request(NBD_CMD_WRITE, 3n, 0n, len));
      c.write(Buffer.alloc(len, 0x77));
      assert.deepEqual(await c.readSimpleReply(), { error: NBD_EINVAL, cookie: 3n });
      await assertUsable(c, 4n);
      // Nothing of the rejected payload landed.
      c.write(RawNbd.request(NBD_CMD_READ, 5n, 0n, 4096));
      assert.deepEqual(await c.readSimpleReply(), { error: 0, cookie: 5n });
      assert.ok(!(await c.read(4096)).includes(0x77), 'bytes of a rejected oversized write were stored');
    } finally {
      c.reset();
    }
  });

  test('raw: an unknown command gets EINVAL and the connection stays usable (proto.md "Error values")', async () => {
    const c = await rawExport();
    try {
      c.write(RawNbd.request(99, 6n, 0n, 512));
      assert.deepEqual(await c.readSimpleReply(), { error: NBD_EINVAL, cookie: 6n });
      await assertUsable(c, 7n);
    } finally {
      c.reset();
    }
  });

  test('raw: a request with a bad magic closes the connection (proto.md "Request message")', async () => {
    const c = await rawExport();
    const bad = RawNbd.request(NBD_CMD_READ, 8n, 0n, 512);
    bad.writeUInt32BE(0xdeadbeef, 0);
    c.write(bad);
    await c.untilClosed();
  });

  test('a libnbd client keeps working while raw clients send garbage and disconnect mid-request; no sockets leak (GUIDE §4)', async () => {
    const prng = new Prng(seed);
    const pid = fx.daemon.pid;
    const port = fx.daemon.port;
    await sleep(200);
    const baseline = socketCount(pid);

    let steadyConnected: () => void = () => {};
    const connected = new Promise<void>((resolve) => (steadyConnected = resolve));
    const steady = runNbdshScript(
      path.join(CONFORMANCE_DIR, 'errors.py'),
      { ERRORS_CHECK: 'steady', ERRORS_URI: fx.uri('vol0'), ERRORS_SECONDS: String(STEADY_SECONDS), ERRORS_SEED: String(seed) },
      { timeoutMs: SCRIPT_TIMEOUT_MS, onStdout: (s) => s.includes('STEADY CONNECTED') && steadyConnected() },
    );
    await Promise.race([connected, steady]);

    type Abuse = (c: RawNbd) => Promise<void>;
    const garbage = (n: number): Buffer => {
      const b = Buffer.alloc(n);
      prng.fill(b);
      return b;
    };
    const afterExport = async (c: RawNbd): Promise<void> => {
      await c.exportName('vol0');
    };
    const abuses: Array<[string, Abuse]> = [
      ['close at once', async () => {}],
      ['garbage instead of client flags', async (c) => c.write(garbage(1 + prng.int(4096)))],
      ['close after the greeting', async (c) => void (await c.readGreeting())],
      ['close after client flags', async (c) => (await c.readGreeting(), c.sendClientFlags(3))],
      ['half an option header', async (c) => (await c.readGreeting(), c.sendClientFlags(3), c.write(Buffer.from('IHAVEOPT\0\0')))],
      ['option announcing 100 bytes, sending 10', async (c) => {
        await c.readGreeting();
        c.sendClientFlags(3);
        const h = Buffer.alloc(16);
        h.write('IHAVEOPT', 0, 'ascii');
        h.writeUInt32BE(7, 8); // NBD_OPT_GO
        h.writeUInt32BE(100, 12);
        c.write(Buffer.concat([h, garbage(10)]));
      }],
      ['option announcing 4 GiB of data', async (c) => {
        await c.readGreeting();
        c.sendClientFlags(3);
        const h = Buffer.alloc(16);
        h.write('IHAVEOPT', 0, 'ascii');
        h.writeUInt32BE(7, 8);
        h.writeUInt32BE(0xffffffff, 12);
        c.write(Buffer.concat([h, garbage(1000)]));
      }],
      ['garbage option stream', async (c) => (await c.readGreeting(), c.sendClientFlags(3), c.write(garbage(2000)))],
      ['write announcing 1 MiB, 1000 bytes sent', async (c) => {
        await afterExport(c);
        c.write(RawNbd.request(NBD_CMD_WRITE, 1n, BigInt(prng.int(1000)) * 4096n, MiB));
        c.write(garbage(1000));
      }],
      ['half a request header', async (c) => (await afterExport(c), c.write(RawNbd.request(NBD_CMD_READ, 2n, 0n, 4096).subarray(0, 10)))],
      ['16 pipelined 1 MiB reads then gone', async (c) => {
        await afterExport(c);
        for (let i = 0; i < 16; i++) c.write(RawNbd.request(NBD_CMD_READ, BigInt(i), BigInt(i) * BigInt(MiB), MiB));
      }],
      ['garbage in transmission', async (c) => (await afterExport(c), c.write(garbage(1 + prng.int(8192))))],
    ];

    let rounds = 0;
    const t0 = Date.now();
    while (Date.now() - t0 < (STEADY_SECONDS - 1) * 1000) {
      rounds++;
      for (const [name, abuse] of abuses) {
        const c = await RawNbd.connect(port);
        try {
          await abuse(c);
          await sleep(prng.int(3));
        } catch (err) {
          // The server may close first (that is fine); anything else is a test bug.
          if (!c.isClosed) throw new Error(`abuse "${name}" failed: ${(err as Error).message}`);
        } finally {
          if (prng.chance(0.5)) c.reset();
          else c.end();
        }
      }
      assert.ok(fx.daemon.alive, `daemon died during abuse round ${rounds}:\n${fx.describe()}`);
    }

    const s = await steady;
    assert.ok(s.code === 0 && s.stdout.includes('OK steady'), `the well-behaved client failed during abuse:\n${describeRun(s)}\n${fx.describe()}`);
    console.log(`abuse: ${rounds} rounds x ${abuses.length} abusive connections; ${s.stdout.trim().split('\n').pop()}`);
    assert.ok(fx.daemon.alive, fx.describe());

    // Every abusive connection must be closed by the server side too.
    const deadline = Date.now() + SOCKET_SETTLE_MS_MAX;
    let now = socketCount(pid);
    while (now > baseline && Date.now() < deadline) {
      await sleep(250);
      now = socketCount(pid);
    }
    assert.ok(now <= baseline, `daemon holds ${now} sockets, ${baseline} before the abuse: leaked connections`);

    // And it still serves new clients.
    mustSucceed(await run('nbdinfo', [fx.uri('vol0')], { timeoutMs: SCRIPT_TIMEOUT_MS }), 'nbdinfo after abuse', () => fx.describe());
    assert.doesNotMatch(fx.daemon.stderr, /unexpected failure|TypeError|RangeError|ERR_ASSERTION/, `the daemon logged an internal error:\n${fx.daemon.describe(60)}`);
  });
});
