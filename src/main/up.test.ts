// `tessera up`: in-process on MemoryVolumeStore with a fake NBD server (start,
// ready banner, default volume only on format, restart, PID-file and socket
// refusal, rollback of a failed start, signal shutdown), then end to end as a
// real child process with the real engine, NBD server and clients (nbdinfo,
// qemu-io), restarted on the same data dir.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EventEmitter } from 'node:events';
import { MemoryVolumeStore } from '../volume/memory.js';
import { Logger } from '../stdx/log.js';
import { ApiClient } from '../api/client.js';
import { resolveConfig, type Config } from './config.js';
import { Daemon, READY_LINE, runUp, type IscsiHandle, type SignalSource, type UpDeps } from './up.js';
import { IdlePoll } from '../gateway/idle-poll.js';
import { run as runProcess } from '../../test/helpers/run.js';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/tessera.js');

function fakeDeps(disks = new Map<string, MemoryVolumeStore>(), failNbd = false): UpDeps & { closed: string[] } {
  const closed: string[] = [];
  return {
    closed,
    openStore: async ({ devicePath }) => {
      let store = disks.get(devicePath);
      const created = store === undefined;
      if (!store) {
        store = new MemoryVolumeStore();
        disks.set(devicePath, store);
      }
      const s = store;
      const origClose = s.close.bind(s);
      s.close = async () => {
        closed.push('store');
        await origClose();
      };
      return { store: s, created };
    },
    startNbd: async ({ host, port }) => {
      if (failNbd) throw new Error('port in use (injected)');
      return { host, port: port || 40000, connectionCount: () => 0, close: async () => void closed.push('nbd') };
    },
  };
}

function quietIo(lines: string[] = []) {
  return { log: new Logger('test', { sink: () => {} }), out: (l: string) => lines.push(l) };
}

function tempConfig(extra: Parameters<typeof resolveConfig>[0]['flags'] = {}): Config {
  const dir = mkdtempSync(path.join(tmpdir(), 'tessera-up-'));
  return resolveConfig({ cwd: dir, flags: { dataDir: dir, nbd: { port: 0 }, ...extra } });
}

test('start prints the URIs, a how-to and the ready line; vol0 only on the start that formats', async () => {
  const config = tempConfig({ defaultVolume: { sizeBytes: '1G' } });
  const disks = new Map<string, MemoryVolumeStore>();
  try {
    const lines: string[] = [];
    const d1 = await Daemon.start(config, fakeDeps(disks), quietIo(lines));
    d1.printReady();
    assert.equal(lines.at(-1), READY_LINE);
    assert.ok(lines.includes('  nbd://127.0.0.1:40000/vol0  (1.00 GiB)'), lines.join('\n'));
    assert.ok(lines.includes('  nbdinfo nbd://127.0.0.1:40000/vol0'));
    assert.ok(lines.includes('  qemu-img info nbd://127.0.0.1:40000/vol0'));
    assert.ok(lines.includes(`  tessera volume list --data-dir ${config.dataDir}`));
    assert.equal(readFileSync(path.join(config.dataDir, 'tessera.pid'), 'utf8').trim(), String(process.pid));
    const client = new ApiClient({ target: { socketPath: config.api.socket } });
    await client.createVolume({ name: 'extra', sizeBytes: 4096 });
    await client.deleteVolume('vol0');
    const st = await client.status();
    assert.equal(st.daemon?.nbd.port, 40000);
    assert.equal(await d1.stop(), true);
    assert.equal(existsSync(path.join(config.dataDir, 'tessera.pid')), false);
    assert.equal(existsSync(config.api.socket), false);

    // restart: same device, no new vol0 (it was deleted), extra still there
    const d2 = await Daemon.start(config, fakeDeps(disks), quietIo());
    assert.deepEqual(
      disks.get(config.device.path)!.list().map((v) => v.name),
      ['extra'],
    );
    await d2.stop();
  } finally {
    rmSync(config.dataDir, { recursive: true, force: true });
  }
});

test('a second daemon on the same data dir, or on a live socket, is refused; a stale PID file is replaced', async () => {
  const config = tempConfig();
  try {
    const d1 = await Daemon.start(config, fakeDeps(), quietIo());
    await assert.rejects(Daemon.start(config, fakeDeps(), quietIo()), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'ERR_BUSY');
      assert.match(e.message, new RegExp(`already running on data dir .* \\(pid ${process.pid}`));
      return true;
    });
    // another data dir but the same API socket
    const other = resolveConfig({ cwd: config.dataDir, flags: { dataDir: path.join(config.dataDir, 'b'), api: { socket: config.api.socket } } });
    await assert.rejects(Daemon.start(other, fakeDeps(), quietIo()), /another tessera daemon \(pid \d+\) is serving the API socket/);
    assert.equal(existsSync(path.join(other.dataDir, 'tessera.pid')), false, 'refused start cleans its PID file');
    await d1.stop();

    // PID file of a process that has exited, and a leftover socket file: both stale
    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    writeFileSync(path.join(config.dataDir, 'tessera.pid'), `${dead}\n`);
    writeFileSync(config.api.socket, '');
    const d2 = await Daemon.start(config, fakeDeps(), quietIo());
    assert.equal(readFileSync(path.join(config.dataDir, 'tessera.pid'), 'utf8').trim(), String(process.pid));
    await d2.stop();
  } finally {
    rmSync(config.dataDir, { recursive: true, force: true });
  }
});

test('the NBD and iSCSI servers share one idle poller with the configured window (gateway.idlePollUs); its stats are logged at stop', async () => {
  for (const idlePollUs of [100, 0, 750]) {
    const config = tempConfig({ gateway: { idlePollUs } });
    try {
      const seen: Array<IdlePoll | undefined> = [];
      const deps = fakeDeps();
      const startNbd = deps.startNbd;
      deps.startNbd = (opts) => {
        seen.push(opts.idlePoll);
        return startNbd(opts);
      };
      deps.startIscsi = async (opts) => {
        seen.push(opts.idlePoll);
        return { host: opts.host, port: 40001, connectionCount: () => 0, close: async () => {} } as unknown as IscsiHandle;
      };
      const logLines: string[] = [];
      const d = await Daemon.start(config, deps, { log: new Logger('test', { sink: (l) => logLines.push(l) }), out: () => {} });
      seen[0]?.busy();
      seen[0]?.quiet(true); // one window, still open at stop
      await d.stop();
      const summary = logLines.filter((l) => l.includes('gateway idle polling'));
      assert.equal(summary.length, 1, logLines.join(''));
      if (idlePollUs === 0) assert.match(summary[0], /gateway idle polling: off/);
      else assert.match(summary[0], new RegExp(`gateway idle polling \\(${idlePollUs} us\\): 1 windows, 0 caught a request, [01] missed, 0 pokes skipped`)); // the window may close during stop()
      assert.equal(seen.length, 2);
      assert.ok(seen[0] instanceof IdlePoll);
      assert.equal(seen[0], seen[1], 'one poller per process');
      assert.equal(seen[0]!.windowUs, idlePollUs);
    } finally {
      rmSync(config.dataDir, { recursive: true, force: true });
    }
  }
});

test('a failed start undoes what started', async () => {
  const config = tempConfig();
  try {
    const deps = fakeDeps(new Map(), true);
    await assert.rejects(Daemon.start(config, deps, quietIo()), /port in use/);
    assert.deepEqual(deps.closed, ['store']);
    assert.equal(existsSync(path.join(config.dataDir, 'tessera.pid')), false);
  } finally {
    rmSync(config.dataDir, { recursive: true, force: true });
  }
});

test('runUp: SIGTERM stops everything and resolves 0', async () => {
  const config = tempConfig({ api: { port: 0 } });
  try {
    const signals = new EventEmitter();
    const lines: string[] = [];
    const deps = fakeDeps();
    const done = runUp(config, deps, quietIo(lines), signals as unknown as SignalSource);
    while (!lines.includes(READY_LINE)) await new Promise((r) => setTimeout(r, 10));
    assert.ok(existsSync(path.join(config.dataDir, 'api.token')));
    assert.ok(lines.some((l) => /http:\/\/127\.0\.0\.1:\d+ \(writes need the bearer token/.test(l)));
    signals.emit('SIGTERM');
    assert.equal(await done, 0);
    assert.deepEqual(deps.closed, ['nbd', 'store']);
    for (const f of ['tessera.pid', 'tessera.sock', 'api.token']) assert.equal(existsSync(path.join(config.dataDir, f)), false, f);
    assert.equal(signals.listenerCount('SIGTERM'), 0);
  } finally {
    rmSync(config.dataDir, { recursive: true, force: true });
  }
});

// ---- end to end: real engine, real NBD server, real clients ----

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

interface Daemonproc {
  child: ChildProcessWithoutNullStreams;
  out: () => string;
  err: () => string;
  exited: Promise<number | null>;
}

async function startDaemon(args: string[]): Promise<Daemonproc> {
  const child = spawn(process.execPath, [BIN, 'up', ...args], { env: { ...process.env, TESSERA_SOCKET: '' } });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const deadline = Date.now() + 20_000;
  while (!out.includes(READY_LINE)) {
    if (child.exitCode !== null) throw new Error(`tessera up exited ${child.exitCode}:\n${out}\n${err}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`tessera up not ready in 20 s:\n${out}\n${err}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, out: () => out, err: () => err, exited };
}

/** A command as a child process (shared runner: bounded output, timeout). */
async function runCmd(cmd: string, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const r = await runProcess(cmd, args, { timeoutMs: 60_000, env: { ...process.env, TESSERA_SOCKET: '' } });
  return { status: r.code, stdout: r.stdout, stderr: r.stderr };
}

const tessera = (...args: string[]) => runCmd(process.execPath, [BIN, ...args]);
// nbdinfo is a required test client (npm test installs it): without it this test fails, never skips.

test('e2e: tessera up as a process, nbdinfo, volume create/list, SIGTERM, restart keeps volumes and data', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tessera-e2e-'));
  const port = await freePort();
  const args = ['--data-dir', dir, '--nbd-port', String(port), '--iscsi-port', 'off', '--device-size', '1G', '--volume-size', '256M'];
  let d: Daemonproc | undefined;
  try {
    d = await startDaemon(args);
    assert.match(d.out(), new RegExp(`^  nbd://127\\.0\\.0\\.1:${port}/vol0  \\(256 MiB\\)$`, 'm'));
    const uri = `nbd://127.0.0.1:${port}/vol0`;
    const info = await runCmd('nbdinfo', [uri]);
    assert.equal(info.status, 0, info.stderr);
    assert.match(info.stdout, /export-size: 268435456/);

    const w = await runCmd('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 1M 1M', uri]);
    assert.equal(w.status, 0, w.stderr);
    let r = await tessera('volume', 'create', 'data1', '--size', '2G', '--data-dir', dir);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`exported as nbd://127\\.0\\.0\\.1:${port}/data1`));
    r = await tessera('volume', 'list', '--data-dir', dir);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^data1\s+2\.00 GiB/m);
    assert.match(r.stdout, /^vol0\s+256 MiB/m);

    // a second `up` on the same dir is refused while the first runs
    r = await tessera('up', ...args);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /already running on data dir/);

    d.child.kill('SIGTERM');
    assert.equal(await d.exited, 0, d.err());
    assert.match(d.err(), /stopped/);
    for (const f of ['tessera.pid', 'tessera.sock']) assert.equal(existsSync(path.join(dir, f)), false, f);
    r = await tessera('volume', 'list', '--data-dir', dir);
    assert.equal(r.status, 3);

    d = await startDaemon(args);
    r = await tessera('volume', 'list', '--json', '--data-dir', dir);
    assert.equal(r.status, 0, r.stderr);
    const names = (JSON.parse(r.stdout) as { volumes: Array<{ name: string }> }).volumes.map((v) => v.name).sort();
    assert.deepEqual(names, ['data1', 'vol0']);
    // The data written before the restart reads back (qemu-io is a required test client).
    const rd = await runCmd('qemu-io', ['-f', 'raw', '-c', 'read -P 0xab 1M 1M', `nbd://127.0.0.1:${port}/vol0`]);
    assert.equal(rd.status, 0, rd.stderr);
    assert.doesNotMatch(rd.stdout, /Pattern verification failed/);
    r = await tessera('iostat', '0.2', '1', '--data-dir', dir);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^DEVICE\s+r\/s/m);
    assert.match(r.stdout, /^VOLUME\s+r\/s/m);

    d.child.kill('SIGINT');
    assert.equal(await d.exited, 0, d.err());
  } finally {
    if (d && d.child.exitCode === null) d.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
