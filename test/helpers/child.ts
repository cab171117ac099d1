// A daemon under test, spawned by a helper: tracked until it exits (SIGCONT +
// SIGKILL if the test process exits first, so no daemon outlives a failed test),
// the tails of its stdout and stderr kept for failure messages, and stop/kill by
// PID. test/helpers/daemon.ts (`tessera up`) and cluster.ts (mon, OSDs, gateway)
// build on it.
import type { ChildProcess } from 'node:child_process';

/** Bytes of each stream kept per daemon (the tail) for failure messages. */
const OUTPUT_BYTES_MAX = 256 * 1024;

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) {
    try {
      c.kill('SIGCONT');
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

export class TrackedChild {
  private out = '';
  private err = '';
  private exitStatus: ExitStatus | null = null;
  readonly exited: Promise<ExitStatus>;
  /** SIGSTOPped through signal(). */
  stopped = false;

  constructor(readonly child: ChildProcess) {
    live.add(child);
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.exitStatus = { code, signal };
        live.delete(child);
        resolve(this.exitStatus);
      });
    });
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (s: string) => {
      this.out = keepTail(this.out + s);
    });
    child.stderr!.on('data', (s: string) => {
      this.err = keepTail(this.err + s);
    });
  }

  get pid(): number {
    return this.child.pid!;
  }
  get alive(): boolean {
    return this.exitStatus === null;
  }
  get stdout(): string {
    return this.out;
  }
  get stderr(): string {
    return this.err;
  }

  /** "running", "SIGSTOPped" or how it exited (for failure messages). */
  protected stateText(): string {
    if (this.exitStatus === null) return this.stopped ? 'SIGSTOPped' : 'running';
    return `exited (code ${this.exitStatus.code}, signal ${this.exitStatus.signal})`;
  }

  /** Who this is in error messages. */
  protected label(): string {
    return `pid ${this.pid}`;
  }

  signal(sig: NodeJS.Signals): void {
    if (!this.alive) throw new Error(`${this.label()} is not running; cannot send ${sig}`);
    process.kill(this.pid, sig);
    if (sig === 'SIGSTOP') this.stopped = true;
    if (sig === 'SIGCONT') this.stopped = false;
  }

  /** kill -9 by PID: a crash, no shutdown code runs. */
  async kill9(): Promise<ExitStatus> {
    if (this.alive) process.kill(this.pid, 'SIGKILL');
    return this.exited;
  }

  /** SIGCONT (if stopped), SIGTERM, and SIGKILL after graceMs. Resolves with how it exited. */
  async stop(graceMs: number): Promise<ExitStatus & { killed: boolean }> {
    if (!this.alive) return { ...(await this.exited), killed: false };
    try {
      if (this.stopped) this.signal('SIGCONT');
      this.child.kill('SIGTERM');
    } catch {
      // exited meanwhile
    }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.exited.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), graceMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut && this.alive) this.child.kill('SIGKILL');
    return { ...(await this.exited), killed: timedOut };
  }
}

function keepTail(s: string): string {
  return s.length > OUTPUT_BYTES_MAX ? s.slice(-OUTPUT_BYTES_MAX / 2) : s;
}
