// The `tessera` CLI end to end against a management API on a temp unix socket
// backed by MemoryVolumeStore: outputs and exit statuses (0 ok, 1 operational,
// 2 usage, 3 daemon unreachable). Most runs are in-process through runCli();
// a few run `node bin/tessera.js` as a child to check the real process status.
import { spawnSync } from 'node:child_process';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApiServer } from '../api/server.js';
import { MemoryVolumeStore } from '../volume/memory.js';
import type { CliIo } from './io.js';
import { runCli } from './main.js';
import { run as runProcess } from '../../test/helpers/run.js';

const GiB = 2 ** 30;
const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/tessera.js');

let dir: string;
let socketPath: string;
let store: MemoryVolumeStore;
let server: ApiServer;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'tessera-cli-'));
  socketPath = path.join(dir, 'tessera.sock'); // = the default socket of --data-dir DIR
  store = new MemoryVolumeStore();
  server = await ApiServer.start({
    store,
    socketPath,
    status: () => ({ dataDir: dir, nbd: { host: '127.0.0.1', port: 10809, uris: store.list().map((v) => `nbd://127.0.0.1:10809/${v.name}`) }, api: { socket: socketPath, port: undefined }, device: { path: path.join(dir, 'dev0.img') } }),
  });
});

after(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

interface Run {
  status: number;
  out: string;
  err: string;
}

async function cli(args: string[], opts: { env?: Record<string, string>; interactive?: boolean; answer?: string; cwd?: string } = {}): Promise<Run> {
  let out = '';
  let err = '';
  const io: CliIo = {
    out: (t) => (out += t),
    err: (t) => (err += t),
    env: opts.env ?? {},
    cwd: opts.cwd ?? '/nonexistent-cwd',
    interactive: opts.interactive ?? false,
    prompt: async (q) => {
      err += q;
      return opts.answer ?? '';
    },
    sleepMs: (ms) => new Promise((r) => setTimeout(r, ms)),
    nowMs: () => Date.now(),
  };
  const status = await runCli(args, io);
  return { status, out, err };
}

/** With the socket given as --socket. */
const t = (...args: string[]) => cli([...args, '--socket', socketPath]);

test('volume create / list / info, text and --json', async () => {
  let r = await t('volume', 'create', 'data1', '--size', '1T');
  assert.equal(r.status, 0, r.err);
  assert.equal(r.out, 'created volume data1: 1.00 TiB, exported as nbd://127.0.0.1:10809/data1\n');

  r = await t('volume', 'create', 'small', '-s', '512M', '--json');
  assert.equal(r.status, 0, r.err);
  assert.equal(JSON.parse(r.out).sizeBytes, 512 * 2 ** 20);
  await store.open('small').write(0, Buffer.alloc(8192, 7), false);

  r = await t('volume', 'list');
  assert.equal(r.status, 0, r.err);
  const lines = r.out.trimEnd().split('\n');
  assert.match(lines[0], /^NAME\s+SIZE\s+USED\s+USED%\s+CREATED$/);
  assert.match(lines[1], /^data1\s+1\.00 TiB\s+0 B\s+0%\s+\d{4}-/);
  assert.match(lines[2], /^small\s+512 MiB\s+64\.0 KiB\s+0\.0%/);
  assert.match(lines[3], /^total \(2 volumes\)\s+1\.00 TiB\s+64\.0 KiB/);

  r = await t('volume', 'list', '--json');
  const listed = JSON.parse(r.out);
  assert.deepEqual(
    listed.volumes.map((v: { name: string }) => v.name),
    ['data1', 'small'],
  );
  assert.equal(listed.totals.sizeBytes, 2 ** 40 + 512 * 2 ** 20);

  r = await t('volume', 'info', 'small');
  assert.equal(r.status, 0, r.err);
  assert.match(r.out, /^name:\s+small$/m);
  assert.match(r.out, /^size:\s+512 MiB \(536870912 bytes\)$/m);
  assert.match(r.out, /^nbd:\s+nbd:\/\/127\.0\.0\.1:10809\/small$/m);
  r = await t('volume', 'info', 'small', '--json');
  assert.equal(JSON.parse(r.out).usedBytes, 65536);
});

test('operational errors exit 1 with the message and a hint', async () => {
  await store.create('taken', GiB);
  let r = await t('volume', 'info', 'ghost');
  assert.equal(r.status, 1);
  assert.equal(r.out, '');
  assert.match(r.err, /^tessera: error: no volume named "ghost" \[ERR_NOT_FOUND\]\nhint: see `tessera volume list`/);

  r = await t('volume', 'create', 'x', '--size', '10X');
  assert.equal(r.status, 1);
  assert.match(r.err, /bad size "10X"/);

  r = await t('volume', 'create', 'x', '--size', '1000');
  assert.equal(r.status, 1);
  assert.match(r.err, /multiple of 512 bytes \[ERR_INVALID\]/);

  r = await t('volume', 'create', 'taken', '--size', '1G');
  assert.equal(r.status, 1);
  assert.match(r.err, /volume "taken" already exists \[ERR_EXISTS\]/);

  r = await t('volume', 'create', 'bad/name', '--size', '1G');
  assert.equal(r.status, 1);
  assert.match(r.err, /bad volume name/);
});

test('resize: grow, shrink below data refused, --discard-data', async () => {
  await store.create('rs', 4 * GiB);
  await store.open('rs').write(3 * GiB, Buffer.alloc(4096, 1), false);
  let r = await t('volume', 'resize', 'rs', '--size', '8G');
  assert.equal(r.status, 0, r.err);
  assert.equal(r.out, 'resized volume rs: 4.00 GiB -> 8.00 GiB\n');

  r = await t('volume', 'resize', 'rs', '--size', '1G');
  assert.equal(r.status, 1);
  assert.match(r.err, /\[ERR_SHRINK\]\nhint: .*--discard-data/);
  assert.equal(store.info('rs').sizeBytes, 8 * GiB);

  r = await t('volume', 'resize', 'rs', '--size', '1G', '--discard-data', '--json');
  assert.equal(r.status, 0, r.err);
  assert.equal(JSON.parse(r.out).sizeBytes, GiB);

  r = await t('volume', 'resize', 'ghost', '--size', '1G');
  assert.equal(r.status, 1);
  assert.match(r.err, /ERR_NOT_FOUND/);
});

test('rename', async () => {
  await store.create('old', GiB);
  await store.create('other', GiB);
  let r = await t('volume', 'rename', 'old', 'new');
  assert.equal(r.status, 0, r.err);
  assert.equal(r.out, 'renamed volume old to new\n');
  assert.equal(store.info('new').sizeBytes, GiB);
  r = await t('volume', 'rename', 'new', 'other');
  assert.equal(r.status, 1);
  assert.match(r.err, /ERR_EXISTS/);
  r = await t('volume', 'rename', 'nothere', 'x');
  assert.equal(r.status, 1);
});

test('delete: --yes, refusal without a terminal, typed confirmation', async () => {
  await store.create('d1', GiB);
  let r = await t('volume', 'delete', 'd1');
  assert.equal(r.status, 2);
  assert.match(r.err, /refusing to delete volume "d1" without --yes/);
  assert.ok(store.list().some((v) => v.name === 'd1'));

  r = await cli(['volume', 'delete', 'd1', '--socket', socketPath], { interactive: true, answer: 'y' });
  assert.equal(r.status, 2);
  assert.match(r.err, /Type the volume name to confirm: [^]*not deleted/);
  assert.ok(store.list().some((v) => v.name === 'd1'));

  r = await cli(['volume', 'delete', 'd1', '--socket', socketPath], { interactive: true, answer: 'd1\n' });
  assert.equal(r.status, 0, r.err);
  assert.equal(r.out, 'deleted volume d1\n');

  await store.create('d2', GiB);
  r = await t('volume', 'rm', 'd2', '--yes', '--json');
  assert.equal(r.status, 0, r.err);
  assert.deepEqual(JSON.parse(r.out), { deleted: 'd2' });

  r = await t('volume', 'delete', 'd2', '--yes');
  assert.equal(r.status, 1);
  assert.match(r.err, /ERR_NOT_FOUND/);
});

test('device list, status, iostat', async () => {
  let r = await t('device', 'list');
  assert.equal(r.status, 0, r.err);
  assert.equal(r.out, 'no devices\n');
  r = await t('device', 'list', '--json');
  assert.deepEqual(JSON.parse(r.out), { devices: [] });

  r = await t('status');
  assert.equal(r.status, 0, r.err);
  assert.match(r.out, /^daemon:\s+tessera 0\.1\.0, pid \d+, up \d+s/m);
  assert.match(r.out, /^nbd:\s+127\.0\.0\.1:10809 \(\d+ exports?\)$/m);
  assert.match(r.out, /^volumes:\s+\d+, .* provisioned, .* used$/m);
  r = await t('status', '--json');
  assert.equal(JSON.parse(r.out).daemon.api.socket, socketPath);

  r = await t('iostat', '0.1', '2', '--json');
  assert.equal(r.status, 0, r.err);
  const ticks = r.out.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(ticks.length, 2);
  assert.ok(Array.isArray(ticks[0].volumes));
});

test('finding the daemon: --data-dir, TESSERA_SOCKET, --config; flags beat the environment', async () => {
  let r = await cli(['volume', 'list', '--data-dir', dir]);
  assert.equal(r.status, 0, r.err);
  r = await cli(['volume', 'list'], { env: { TESSERA_SOCKET: socketPath } });
  assert.equal(r.status, 0, r.err);
  r = await cli(['volume', 'list', '--data-dir', '/nonexistent'], { env: { TESSERA_SOCKET: socketPath } });
  assert.equal(r.status, 3);
  r = await cli(['volume', 'list'], { cwd: dir }); // ./tessera-data/tessera.sock does not exist there
  assert.equal(r.status, 3);
  assert.match(r.err, /cannot reach the tessera daemon at .*tessera-data\/tessera\.sock: no socket there\nhint: is the daemon running\? Start it with `tessera up`/);
});

test('usage errors exit 2; --help exits 0 with examples', async () => {
  let r = await t('volume', 'create', 'x');
  assert.equal(r.status, 2);
  assert.match(r.err, /required option '-s, --size <size>' not specified/);
  r = await t('volume', 'list', '--bogus');
  assert.equal(r.status, 2);
  assert.match(r.err, /unknown option '--bogus'/);
  r = await t('frobnicate');
  assert.equal(r.status, 2);
  r = await t('iostat', 'fast');
  assert.equal(r.status, 2);
  r = await t('volume', 'info');
  assert.equal(r.status, 2);
  r = await cli([]);
  assert.equal(r.status, 2);
  r = await cli(['volume', 'resize', '--help']);
  assert.equal(r.status, 0);
  assert.match(r.out, /Examples:\n {2}\$ tessera volume resize data1 --size 2T/);
  r = await cli(['--version']);
  assert.equal(r.status, 0);
  assert.equal(r.out, '0.1.0\n');
});

/** Async (not spawnSync): the API server lives in this process's event loop. */
/** The CLI as a child process (shared runner: bounded output, timeout). */
async function run(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const r = await runProcess(process.execPath, [BIN, ...args], { timeoutMs: 60_000, env: { ...process.env, TESSERA_SOCKET: '' } });
  return { status: r.code, stdout: r.stdout, stderr: r.stderr };
}

test('as a child process: real exit statuses 0, 1, 2, 3', async () => {
  let r = await run('volume', 'list', '--socket', socketPath);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^NAME/);
  r = await run('volume', 'info', 'ghost', '--socket', socketPath);
  assert.equal(r.status, 1);
  r = await run('volume', 'list', '--nope');
  assert.equal(r.status, 2);
  r = await run('status', '--socket', path.join(dir, 'missing.sock'));
  assert.equal(r.status, 3);
  assert.match(r.stderr, /tessera up/);
});

test('cluster commands: bad flags are usage errors naming the flag; an unreachable monitor exits 3', async () => {
  let r = await cli(['up', '--osds', '0'], { cwd: '/tmp' });
  assert.equal(r.status, 2, r.err);
  assert.match(r.err, /--osds must be an integer in \[1, 64\], got 0/);
  r = await cli(['up', '--osds', '3', '--mon-port', 'x'], { cwd: '/tmp' });
  assert.equal(r.status, 2, r.err);
  assert.match(r.err, /--mon-port must be a port number/);
  r = await cli(['osd', '--osd-port', 'abc', '--monitors', '127.0.0.1:1'], { cwd: '/tmp' });
  assert.equal(r.status, 2, r.err);
  assert.match(r.err, /--osd-port must be a port number 0-65535, got "abc"/);
  r = await cli(['gateway', '--nbd-port', '70000', '--monitors', '127.0.0.1:1'], { cwd: '/tmp' });
  assert.equal(r.status, 2, r.err);
  assert.match(r.err, /--nbd-port must be a port number/);
  r = await cli(['gateway', '--idle-poll-us', 'fast', '--monitors', '127.0.0.1:1'], { cwd: '/tmp' });
  assert.equal(r.status, 2, r.err);
  assert.match(r.err, /--idle-poll-us must be 0-10000 microseconds \(0 = off\), got "fast"/);
  for (const bad of ['20000', '', '1e3', '0x64']) {
    r = await cli(['up', '--idle-poll-us', bad], { cwd: '/tmp' });
    assert.equal(r.status, 2, r.err);
    assert.match(r.err, /--idle-poll-us must be 0-10000 microseconds \(0 = off\), got /, bad);
  }
  r = await cli(['up', '--osds', '3', '--mon-port', '65530'], { cwd: '/tmp' });
  assert.equal(r.status, 2, r.err);
  assert.match(r.err, /leaves no room for 3 OSD ports/);
  r = await cli(['osd', 'out', 'abc', '--monitors', '127.0.0.1:1'], { cwd: '/tmp' });
  assert.equal(r.status, 2, r.err);
  assert.match(r.err, /bad OSD id "abc"/);
  r = await cli(['osd', 'out', '1', '--monitors', 'nohostport'], { cwd: '/tmp' });
  assert.equal(r.status, 2, r.err);
  assert.match(r.err, /cluster\.monitors\.0.*host:port/);
  r = await cli(['status', '--monitors', '127.0.0.1:1'], { cwd: '/tmp' });
  assert.notEqual(r.status, 0);
  assert.match(r.err, /tessera: error:/);
});

test('a reader that closes stdout early (tessera up --help | true) ends the CLI quietly, no EPIPE stack trace', () => {
  const bin = new URL('../../../bin/tessera.js', import.meta.url).pathname;
  const r = spawnSync('bash', ['-c', `set -o pipefail; "${process.execPath}" "${bin}" up --help | true; echo "status \${PIPESTATUS[0]}" >&2`], { encoding: 'utf8', timeout: 30_000 });
  assert.doesNotMatch(r.stderr, /EPIPE|Unhandled 'error' event/, r.stderr);
  assert.match(r.stderr, /status 0/);
});

test('up --osds: an OSD that cannot start fails the command, and every child it started is stopped (none orphaned)', async () => {
  const { freePort } = await import('../mon/etcd-harness.js');
  const net = await import('node:net');
  let monPort = 0;
  for (let i = 0; i < 20 && monPort === 0; i++) {
    const p = await freePort();
    if (p + 23 <= 65535) monPort = p;
  }
  // osd.2's port is taken: that OSD exits before it is ready.
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(monPort + 22, '127.0.0.1', () => r()));
  const dataDir = mkdtempSync(path.join(tmpdir(), 'tessera-up-fail-'));
  try {
    const bin = new URL('../../../bin/tessera.js', import.meta.url).pathname;
    const r = spawnSync(process.execPath, [bin, 'up', '--osds', '3', '--mon-port', String(monPort), '--nbd-port', '0', '--iscsi-port', 'off', '--data-dir', dataDir], { encoding: 'utf8', timeout: 90_000 });
    assert.notEqual(r.status, 0, r.stderr);
    assert.match(r.stderr, /osd\.2 exited .* before it was ready/);
    await new Promise((res) => setTimeout(res, 500));
    const left = spawnSync('pgrep', ['-f', dataDir], { encoding: 'utf8' }).stdout.trim();
    assert.equal(left, '', `children left running: ${left}`);
  } finally {
    blocker.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('cluster commands as a process: an unreachable monitor is an error with exit status 3, never a silent 0', () => {
  // Reproducer: the monitor client's retry backoff used unref'd timers, so the
  // process ended mid-retry with status 0 and no output.
  const bin = new URL('../../../bin/tessera.js', import.meta.url).pathname;
  for (const args of [['status', '--monitors', '127.0.0.1:1'], ['osd', 'out', '1', '--monitors', '127.0.0.1:1']]) {
    const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 3, `${args.join(' ')}: status ${r.status}, stderr ${r.stderr}`);
    assert.match(r.stderr, /tessera: error:/);
  }
});

test('pool and device commands: bad flags are usage errors (exit 2) naming the flag, before the daemon is asked', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['pool', 'create', 'p', '--devices', '/a,/b', '--protection', 'raid9'], /--protection must be one of mirror2, mirror3, raid5, raid6/],
    [['pool', 'create', 'p', '--devices', '/a,/b,/c', '--protection', 'raid5', '--stripe-width', '0'], /--stripe-width must be an integer/],
    [['pool', 'create', 'p', '--devices', ' , ', '--protection', 'raid5'], /--devices needs at least one path/],
    [['pool', 'create', 'p', '--devices', '/a,/b', '--protection', 'mirror2', '--alarm-at', '95,80'], /--alarm-at must be WARNING,CRITICAL/],
    [['pool', 'set', 'p', '--alarm-at', '80'], /--alarm-at must be WARNING,CRITICAL/],
    [['pool', 'delete', 'p'], /refusing to delete pool "p" without --yes/],
    [['device', 'partition', '/d', '--count', '0'], /--count must be an integer in \[1, 32\]/],
    [['device', 'partition', '/d', '--count', '2', '--iops', '-5'], /--iops must be a non-negative integer/],
    [['device', 'add', 'p'], /missing required argument/],
  ];
  for (const [args, msg] of cases) {
    // The socket does not exist: a usage error must come before any attempt to reach it (which would be exit 3).
    const r = await cli([...args, '--socket', '/nonexistent/tessera.sock']);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.err}`);
    assert.match(r.err, msg, args.join(' '));
  }
});
