// Test helper (not a test file): a real etcd server on free loopback ports with
// a temporary data dir, for the monitor's etcd tests. Stopped by PID (SIGTERM,
// then SIGKILL after 5 s); its data dir is removed. etcd is a required test
// server (scripts/ensure-system-deps.sh installs Debian etcd-server): without it
// the tests fail, never skip.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EtcdStore } from './etcd-store.js';

/**
 * A free loopback TCP port for a test server. Picked below the kernel's
 * ephemeral range (32768-60999 here): a port the OS hands out for port 0 can be
 * taken, between a daemon's kill and its restart on the same port, by the
 * source port of any outgoing connection on the machine (seen: a restarted
 * `tessera up` failed with EADDRINUSE while a cluster test ran alongside).
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = FREE_PORT_MIN + Math.floor(Math.random() * (FREE_PORT_MAX - FREE_PORT_MIN + 1));
    if (await canBind(port)) return port;
  }
  throw new Error(`no free port in [${FREE_PORT_MIN}, ${FREE_PORT_MAX}] after 200 tries`);
}

const FREE_PORT_MIN = 20_000;
const FREE_PORT_MAX = 32_000;

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen({ host: '127.0.0.1', port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

function findEtcd(): string {
  for (const p of ['/usr/bin/etcd', '/usr/local/bin/etcd']) if (existsSync(p)) return p;
  const r = spawnSync('sh', ['-c', 'command -v etcd'], { encoding: 'utf8' });
  if (r.status === 0) return r.stdout.trim();
  throw new Error('etcd is not installed: run scripts/ensure-system-deps.sh (Debian etcd-server)');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface TestEtcd {
  endpoint: string;
  pid: number;
  /** False once the etcd process exited (tests assert it did not die under them). */
  alive(): boolean;
  stop(): Promise<void>;
}

export async function startTestEtcd(): Promise<TestEtcd> {
  const bin = findEtcd();
  const dir = mkdtempSync(join(tmpdir(), 'tessera-mon-etcd-'));
  const endpoint = `http://127.0.0.1:${await freePort()}`;
  const peer = `http://127.0.0.1:${await freePort()}`;
  // prettier-ignore
  const proc = spawn(bin, [
    '--name', 't', '--data-dir', join(dir, 'data'),
    '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `t=${peer}`,
    '--logger', 'zap', '--log-outputs', join(dir, 'etcd.log'),
  ], { stdio: 'ignore' });
  const stop = async (): Promise<void> => {
    try {
      if (proc.pid !== undefined && proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        process.kill(proc.pid, 'SIGTERM');
        await Promise.race([exited, sleep(5000)]);
        if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid, 'SIGKILL');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  let lastErr: unknown;
  for (let i = 0; i < 100; i++) {
    try {
      const s = await EtcdStore.connect({ endpoints: [endpoint], requestTimeoutMs: 1000 });
      await s.close();
      return { endpoint, pid: proc.pid ?? 0, alive: () => proc.exitCode === null && proc.signalCode === null, stop };
    } catch (err) {
      lastErr = err;
      await sleep(100);
    }
  }
  await stop();
  throw new Error(`etcd did not come up: ${String(lastErr)}`);
}
