// Real `tessera up` daemons for the conformance tests: each one a child process
// (`node bin/tessera.js up`) on 127.0.0.1, a free port and a fresh temp data dir.
// A test file starts one DaemonFixture, reuses it across its tests, and disposes
// of it in an after() hook; crash tests kill -9 it and restart it on the same dir.
//
// Invariants:
// - start() resolves only after the daemon printed READY_LINE on stdout, and
//   rejects (with the daemon's stderr tail) if it exits first or takes longer
//   than readyTimeoutMs; a daemon that failed to start is killed.
// - Every child is tracked until it exits; if the test process itself exits,
//   the survivors are SIGKILLed, so a failing test never leaks a daemon.
// - dispose() always stops the daemon (SIGTERM, then SIGKILL after a grace
//   period) and removes the temp dir, even after a failure.
import { TrackedChild, type ExitStatus } from './child.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, tail, type RunResult } from './run.js';
import { freePort } from '../../src/mon/etcd-harness.js';

/** The repository root: this file runs as dist/test/helpers/daemon.js. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const TESSERA_BIN = path.join(REPO_ROOT, 'bin', 'tessera.js');
/** Where the conformance tests' Python scripts live (sources are not copied to dist/). */
export const CONFORMANCE_DIR = path.join(REPO_ROOT, 'test', 'conformance');

export const READY_LINE = 'tessera: ready';
const READY_TIMEOUT_MS_DEFAULT = 30_000;
const STOP_GRACE_MS_DEFAULT = 40_000;
const CLI_TIMEOUT_MS_DEFAULT = 20_000;
const START_ATTEMPTS_MAX = 3;

/** A TCP port that was free a moment ago (bind port 0 on 127.0.0.1, read it, close). */
/** One implementation for every test: src/mon/etcd-harness.ts (ports below the ephemeral range). */
export { freePort };

export async function makeTempDir(prefix = 'tessera-conf-'): Promise<string> {
  return mkdtemp(path.join(tmpdir(), prefix));
}

export interface DaemonOptions {
  dataDir: string;
  port: number;
  /** Size of a new device file (only used when formatting). */
  deviceSize?: string;
  /** Size of vol0 (only used when formatting). */
  volumeSize?: string;
  readyTimeoutMs?: number;
  /** iSCSI portal port; default 'off' (3260 would collide between tests running in parallel). */
  iscsiPort?: number | 'off';
  extraArgs?: string[];
}

export type { ExitStatus };

/** One running `tessera up` process. */
export class DaemonProcess extends TrackedChild {
  private constructor(
    child: ChildProcess,
    readonly opts: DaemonOptions,
  ) {
    super(child);
  }

  get port(): number {
    return this.opts.port;
  }

  get dataDir(): string {
    return this.opts.dataDir;
  }

  uri(volume = 'vol0'): string {
    return `nbd://127.0.0.1:${this.port}/${volume}`;
  }

  /** A block of text for failure messages: pid, state and the stderr tail. */
  describe(lines = 30): string {
    return `tessera daemon pid ${this.pid} on port ${this.port}, data dir ${this.dataDir}: ${this.stateText()}\n--- daemon stderr (tail) ---\n${tail(this.stderr, lines)}`;
  }

  /** Spawns `tessera up` and waits for READY_LINE. */
  static async start(opts: DaemonOptions): Promise<DaemonProcess> {
    const args = [
      TESSERA_BIN,
      'up',
      '--data-dir',
      opts.dataDir,
      '--nbd-host',
      '127.0.0.1',
      '--nbd-port',
      String(opts.port),
      '--device-size',
      opts.deviceSize ?? '4G',
      '--volume-size',
      opts.volumeSize ?? '10G',
      '--iscsi-port',
      String(opts.iscsiPort ?? 'off'),
      ...(opts.extraArgs ?? []),
    ];
    const child = spawn(process.execPath, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
    const d = new DaemonProcess(child, opts);
    const timeoutMs = opts.readyTimeoutMs ?? READY_TIMEOUT_MS_DEFAULT;
    const ready = await new Promise<'ready' | 'exited' | 'timeout' | 'error'>((resolve) => {
      let buffered = '';
      const timer = setTimeout(() => resolve('timeout'), timeoutMs);
      child.stdout!.on('data', (s: string) => {
        buffered += s;
        if (buffered.split('\n').some((l) => l.trim() === READY_LINE)) {
          clearTimeout(timer);
          resolve('ready');
        }
      });
      child.on('error', () => {
        clearTimeout(timer);
        resolve('error');
      });
      void d.exited.then(() => {
        clearTimeout(timer);
        resolve('exited');
      });
    });
    if (ready !== 'ready') {
      if (d.alive) {
        child.kill('SIGKILL');
        await d.exited;
      }
      throw new DaemonStartError(
        `tessera up did not become ready (${ready === 'timeout' ? `no "${READY_LINE}" within ${timeoutMs} ms` : ready}):\n$ node ${args.join(' ')}\n--- stdout ---\n${tail(d.stdout)}\n${d.describe()}`,
        /EADDRINUSE|address already in use/i.test(d.stderr),
      );
    }
    if (!d.stdout.includes(`127.0.0.1:${opts.port}/`)) {
      await d.kill();
      throw new Error(`tessera up became ready but does not print an NBD URI on port ${opts.port}:\n${d.stdout}`);
    }
    return d;
  }

  /** SIGTERM and wait for exit; SIGKILL after graceMs. Resolves with how it exited. */
  override stop(graceMs = STOP_GRACE_MS_DEFAULT): Promise<ExitStatus & { killed: boolean }> {
    return super.stop(graceMs);
  }

  /** kill -9 by PID (a crash: no shutdown code runs). */
  kill(): Promise<ExitStatus> {
    return this.kill9();
  }
}

export class DaemonStartError extends Error {
  constructor(
    message: string,
    readonly portInUse: boolean,
  ) {
    super(message);
    this.name = 'DaemonStartError';
  }
}

export interface FixtureOptions {
  deviceSize?: string;
  volumeSize?: string;
  readyTimeoutMs?: number;
  /** Serve iSCSI on a free port too (kept across restarts, like the NBD port). */
  iscsi?: boolean;
}

/**
 * A temp data dir plus the daemon serving it. The port stays the same across
 * restarts, so NBD URIs taken before a crash are valid after it.
 */
export class DaemonFixture {
  private current: DaemonProcess | null = null;
  private port = 0;
  /** The iSCSI portal's port (0 until started; only with opts.iscsi). */
  iscsiPort = 0;

  private constructor(
    readonly dataDir: string,
    private readonly opts: FixtureOptions,
  ) {}

  static async create(opts: FixtureOptions = {}): Promise<DaemonFixture> {
    const fx = new DaemonFixture(await makeTempDir(), opts);
    try {
      await fx.start();
    } catch (err) {
      await fx.dispose();
      throw err;
    }
    return fx;
  }

  get daemon(): DaemonProcess {
    if (this.current === null) throw new Error('no daemon is running in this fixture');
    return this.current;
  }

  uri(volume = 'vol0'): string {
    return this.daemon.uri(volume);
  }

  /** The bare server URI, for nbdinfo --list. */
  serverUri(): string {
    return `nbd://127.0.0.1:${this.daemon.port}`;
  }

  describe(): string {
    return this.current === null ? `no daemon running (data dir ${this.dataDir})` : this.current.describe();
  }

  /** Starts a daemon on this data dir (retrying on another port if the first one was taken). */
  async start(): Promise<DaemonProcess> {
    if (this.current?.alive) throw new Error('daemon already running');
    for (let attempt = 1; ; attempt++) {
      const port = this.port !== 0 ? this.port : await freePort();
      const iscsiPort = !this.opts.iscsi ? 0 : this.iscsiPort !== 0 ? this.iscsiPort : await freePort();
      try {
        this.current = await DaemonProcess.start({
          dataDir: this.dataDir,
          port,
          deviceSize: this.opts.deviceSize,
          volumeSize: this.opts.volumeSize,
          readyTimeoutMs: this.opts.readyTimeoutMs,
          iscsiPort: this.opts.iscsi ? iscsiPort : 'off',
        });
        this.port = port;
        this.iscsiPort = iscsiPort;
        return this.current;
      } catch (err) {
        const retry = err instanceof DaemonStartError && err.portInUse && attempt < START_ATTEMPTS_MAX;
        if (!retry) throw err;
        // A restart keeps its port (URIs stay valid): give the old socket a moment to go.
        if (this.port !== 0) await new Promise((r) => setTimeout(r, 500 * attempt));
      }
    }
  }

  /** kill -9 then start again on the same dir and port. */
  async crashAndRestart(): Promise<{ killed: ExitStatus; daemon: DaemonProcess }> {
    const killed = await this.daemon.kill();
    const daemon = await this.start();
    return { killed, daemon };
  }

  /** Runs `tessera ARGS --data-dir DIR` against this fixture's daemon. */
  cli(args: string[], timeoutMs = CLI_TIMEOUT_MS_DEFAULT): Promise<RunResult> {
    return run(process.execPath, [TESSERA_BIN, ...args, '--data-dir', this.dataDir], { timeoutMs, cwd: REPO_ROOT });
  }

  /** Stops the daemon (SIGTERM, SIGKILL if it hangs) and removes the data dir. Never throws. */
  async dispose(): Promise<ExitStatus & { killed: boolean } | null> {
    let status: (ExitStatus & { killed: boolean }) | null = null;
    try {
      if (this.current !== null) status = await this.current.stop();
    } catch {
      // best effort
    }
    this.current = null;
    await rm(this.dataDir, { recursive: true, force: true, maxRetries: 3 }).catch(() => {});
    return status;
  }
}
