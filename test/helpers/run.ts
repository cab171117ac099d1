// Runs external programs (nbdinfo, nbdcopy, qemu-img, qemu-io, fio, nbdsh, the
// tessera CLI) for the conformance tests, with a hard timeout, and captures
// stdout, stderr, exit code and duration so that a failing assertion can say
// exactly what the tool printed.
//
// Invariants: a command never outlives its timeout (it is SIGKILLed, and the
// result says timedOut); captured output is bounded (OUTPUT_BYTES_MAX per stream,
// keeping the tail, which is where tools print their errors); nothing here
// throws for a non-zero exit — callers assert on the result (see mustSucceed).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/** Per stream; beyond this the oldest output is dropped. */
const OUTPUT_BYTES_MAX = 4 * 1024 * 1024;
/** Lines of output quoted in failure messages. */
const FAILURE_TAIL_LINES = 40;

export interface RunOptions {
  timeoutMs: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Written to the child's stdin, which is then closed. */
  input?: string | Buffer;
  /** Called with each chunk of stdout as it arrives (e.g. to watch progress lines). */
  onStdout?: (chunk: string) => void;
}

export interface RunResult {
  command: string;
  /** Exit status; null when the process was killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  durationMs: number;
  timedOut: boolean;
}

/** A bounded, tail-keeping text accumulator. */
class TailBuffer {
  private parts: string[] = [];
  private bytes = 0;

  push(s: string): void {
    this.parts.push(s);
    this.bytes += s.length;
    while (this.bytes > OUTPUT_BYTES_MAX && this.parts.length > 1) {
      this.bytes -= this.parts.shift()!.length;
    }
  }

  text(): string {
    return this.parts.join('');
  }
}

export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

export function run(cmd: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  const command = [cmd, ...args].map(shellQuote).join(' ');
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out = new TailBuffer();
    const err = new TailBuffer();
    let timedOut = false;
    let settled = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (s: string) => {
      out.push(s);
      opts.onStdout?.(s);
    });
    child.stderr.on('data', (s: string) => err.push(s));
    child.stdin.on('error', () => {}); // the child may exit without reading its input
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
    const finish = (code: number | null, signal: NodeJS.Signals | null, spawnError?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({
        command,
        code,
        signal,
        stdout: out.text(),
        stderr: spawnError ? `${err.text()}\nspawn failed: ${spawnError.message}` : err.text(),
        durationMs: performance.now() - t0,
        timedOut,
      });
    };
    child.on('error', (e) => finish(null, null, e));
    child.on('close', (code, signal) => finish(code, signal));
  });
}

export function tail(text: string, lines = FAILURE_TAIL_LINES): string {
  const all = text.trimEnd().split('\n');
  return all.slice(-lines).join('\n');
}

/** A multi-line description of a result for assertion messages. */
export function describe(r: RunResult): string {
  const status = r.timedOut ? `TIMED OUT after ${Math.round(r.durationMs)} ms` : r.signal ? `killed by ${r.signal}` : `exit ${r.code}`;
  return `$ ${r.command}\n=> ${status} in ${Math.round(r.durationMs)} ms\n--- stdout (tail) ---\n${tail(r.stdout)}\n--- stderr (tail) ---\n${tail(r.stderr)}`;
}

/** Throws (with the tool's output) unless the command exited 0 within its timeout. */
export function mustSucceed(r: RunResult, what: string, context?: () => string): RunResult {
  if (r.code !== 0 || r.timedOut) {
    const extra = context ? `\n--- context ---\n${context()}` : '';
    throw new Error(`${what} failed:\n${describe(r)}${extra}`);
  }
  return r;
}

/** True when `cmd` is on PATH (checked once per name). */
const whichCache = new Map<string, boolean>();
export function haveCommand(cmd: string): boolean {
  let ok = whichCache.get(cmd);
  if (ok === undefined) {
    ok = spawnSync('sh', ['-c', `command -v ${shellQuote(cmd)}`], { stdio: 'ignore' }).status === 0;
    whichCache.set(cmd, ok);
  }
  return ok;
}

/** Throws a clear message if a required client tool is missing (scripts/ensure-system-deps.sh installs them). */
export function requireCommands(...cmds: string[]): void {
  const missing = cmds.filter((c) => !haveCommand(c));
  if (missing.length > 0) {
    throw new Error(`missing tools: ${missing.join(', ')} (run: bash scripts/ensure-system-deps.sh)`);
  }
}

let nbdshEnvCache: NodeJS.ProcessEnv | undefined;

/**
 * The environment nbdsh needs. nbdsh is `python3 -m nbd`, using whichever
 * python3 comes first on PATH; a pyenv/venv python3 lacks the Debian
 * python3-libnbd module. If `python3 -c 'import nbd'` fails, put the system
 * python (/usr/bin) first.
 */
export function nbdshEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  if (nbdshEnvCache === undefined) {
    const base = { ...process.env };
    const probe = spawnSync('python3', ['-c', 'import nbd'], { env: base, stdio: 'ignore' });
    if (probe.status !== 0 && existsSync('/usr/bin/python3')) {
      base.PATH = `/usr/bin:${base.PATH ?? ''}`;
    }
    const check = spawnSync('nbdsh', ['-c', 'pass'], { env: base, encoding: 'utf8' });
    if (check.status !== 0) {
      throw new Error(`nbdsh does not work (python3-libnbd missing?): ${check.stderr ?? ''}${check.error?.message ?? ''}`);
    }
    nbdshEnvCache = base;
  }
  return { ...nbdshEnvCache, ...extra };
}

/**
 * Runs a Python script under nbdsh (libnbd's Python shell) without an implicit
 * handle: the script makes its own handles (nbd.NBD()). nbdsh 1.14 takes no
 * script argument, so the script is exec'd via -c. Parameters go in `env`.
 */
export function runNbdshScript(scriptPath: string, env: NodeJS.ProcessEnv, opts: Omit<RunOptions, 'env'>): Promise<RunResult> {
  const code = `__file__ = ${JSON.stringify(scriptPath)}; exec(compile(open(__file__).read(), __file__, 'exec'))`;
  return run('nbdsh', ['-n', '-c', code], { ...opts, env: nbdshEnv(env) });
}

/** Runs Python statements under `nbdsh -u URI` (the implicit handle `h` is connected to URI). */
export function runNbdsh(uri: string, statements: string[], timeoutMs: number): Promise<RunResult> {
  return run('nbdsh', ['-u', uri, ...statements.flatMap((s) => ['-c', s])], { timeoutMs, env: nbdshEnv() });
}
