// Process and measurement plumbing for the benchmarks (bench/nbd.ts): servers
// started and stopped by their own PID, fio runs under the machine-wide bench
// lock, server CPU read from /proc/PID/stat, and fio's JSON output parsed.
//
// Invariants: every server started here is registered until it has exited, and
// stopAll() (called from finally blocks and from the SIGINT/SIGTERM handlers)
// stops each one by its PID — never by name. CPU is sampled only after the lock
// is held and the ramp has passed, so waiting for other agents' benchmarks and
// fio's warm-up are not charged to the server.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { fileURLToPath } from 'node:url';

export const LOCK_FILE = process.env.BENCH_LOCK ?? '/tmp/bench.lock';

/** --help of a bench script: its leading `//` comment block (the file header), then exit 0. */
export function printHeaderAndExit(moduleUrl: string, maxLines = Infinity): never {
  const lines: string[] = [];
  for (const l of fs.readFileSync(fileURLToPath(moduleUrl), 'utf8').split('\n')) {
    if (!l.startsWith('//') || lines.length >= maxLines) break;
    lines.push(l.replace(/^\/\/ ?/, ''));
  }
  process.stdout.write(lines.join('\n') + '\n');
  process.exit(0);
}

export function log(msg: string): void {
  const t = new Date().toISOString().slice(11, 19);
  process.stderr.write(`[${t}] ${msg}\n`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Output of a short command, trimmed; '' when it fails. */
export function capture(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? `${r.stdout}`.trim() : '';
}

// ---------------------------------------------------------------- servers

export interface Server {
  readonly name: string;
  readonly pid: number;
  readonly logPath: string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  readonly exited: Promise<number | string>;
  hasExited(): boolean;
}

class ServerProcess implements Server {
  private done = false;
  readonly exited: Promise<number | string>;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    readonly logPath: string,
  ) {
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.done = true;
        resolve(code ?? signal ?? 'unknown');
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  hasExited(): boolean {
    return this.done;
  }
}

const running = new Set<ServerProcess>();

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  /** Resolve once this line appears on the server's stdout (else: as soon as it is spawned). */
  readyLine?: string;
  readyTimeoutMs?: number;
}

/** Start a foreground server; its stdout/stderr go to logPath. */
export async function startServer(name: string, cmd: string, args: string[], logPath: string, opts: StartOptions = {}): Promise<Server> {
  const out = fs.openSync(logPath, 'a');
  const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', out] });
  fs.closeSync(out);
  const srv = new ServerProcess(name, child, logPath);
  running.add(srv);
  void srv.exited.then(() => running.delete(srv));
  log(`started ${name} pid=${child.pid}: ${cmd} ${args.join(' ')}`);

  let ready: Promise<void>;
  const wanted = opts.readyLine;
  let seen = '';
  let isReady = false;
  const sink = fs.createWriteStream(logPath, { flags: 'a' });
  if (wanted === undefined) {
    child.stdout!.pipe(sink);
    ready = Promise.resolve();
  } else {
    ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${name} did not print "${wanted}" within ${opts.readyTimeoutMs ?? 60_000} ms (see ${logPath})`)),
        opts.readyTimeoutMs ?? 60_000,
      );
      child.stdout!.on('data', (chunk: Buffer) => {
        sink.write(chunk);
        if (isReady) return;
        seen += chunk.toString('utf8');
        if (seen.split('\n').some((l) => l.trim() === wanted)) {
          isReady = true;
          seen = '';
          clearTimeout(timer);
          resolve();
        } else if (seen.length > 1 << 20) {
          seen = seen.slice(-4096);
        }
      });
      void srv.exited.then((code) => {
        clearTimeout(timer);
        if (!isReady) reject(new Error(`${name} exited (${code}) before it was ready (see ${logPath})`));
      });
    });
  }
  child.once('error', (err) => log(`${name}: ${err.message}`));
  try {
    await ready;
  } catch (err) {
    await stopServer(srv);
    throw err;
  }
  return srv;
}

const stopping = new WeakMap<Server, Promise<void>>();

/** SIGTERM by PID, wait up to graceMs, then SIGKILL. Idempotent. */
export function stopServer(srv: Server, graceMs = 30_000): Promise<void> {
  let p = stopping.get(srv);
  if (!p) {
    p = doStop(srv, graceMs);
    stopping.set(srv, p);
  }
  return p;
}

async function doStop(srv: Server, graceMs: number): Promise<void> {
  if (srv.hasExited()) return;
  try {
    process.kill(srv.pid, 'SIGTERM');
  } catch {
    /* already gone */
  }
  const timeout = sleep(graceMs).then(() => 'timeout' as const);
  const r = await Promise.race([srv.exited, timeout]);
  if (r === 'timeout' && !srv.hasExited()) {
    log(`${srv.name} pid=${srv.pid} ignored SIGTERM for ${graceMs} ms: SIGKILL`);
    try {
      process.kill(srv.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    await srv.exited;
  }
  log(`stopped ${srv.name} pid=${srv.pid} (exit ${await srv.exited})`);
}

/** Runs a benchmark's main(): exits with its status; on a throw, logs it, stops every server and exits 1. */
export function runBenchMain(main: () => Promise<number>): void {
  main().then(
    (code) => process.exit(code),
    (err: Error) => {
      log(`bench failed: ${err.stack ?? err.message}`);
      void stopAll().finally(() => process.exit(1));
    },
  );
}

export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((s) => stopServer(s)));
}

/** Last resort on process exit: SIGKILL whatever is still registered (synchronous). */
export function killAllSync(): void {
  for (const s of running) {
    try {
      process.kill(s.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  killClients('SIGKILL');
}

/** Signal every running fio client: each runs in its own process group (flock, sh, fio). */
export function killClients(signal: NodeJS.Signals): void {
  for (const c of clients) {
    try {
      if (c.pid !== undefined) process.kill(-c.pid, signal);
    } catch {
      /* gone */
    }
  }
}

/** A free TCP port on 127.0.0.1 (the kernel picks; released before return). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Poll with nbdinfo until the export answers. */
export async function waitNbd(uri: string, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const r = spawnSync('nbdinfo', ['--size', uri], { encoding: 'utf8' });
    if (r.status === 0) return;
    await sleep(100);
  }
  throw new Error(`NBD export ${uri} did not answer within ${timeoutMs} ms`);
}

// ---------------------------------------------------------------- /proc

export const CLK_TCK = Number(capture('getconf', ['CLK_TCK'])) || 100;

/** utime+stime (+cutime+cstime) of a process in clock ticks; all threads are included. */
export function cpuTicks(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state): utime = field 14 -> f[11], stime f[12], cutime f[13], cstime f[14]
  return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
}

/** utime+stime of one process in clock ticks (all threads; not its reaped children). Throws if it is gone. */
export function procCpuTicks(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

/** read-/write-family syscalls made by a process so far (/proc/PID/io syscr, syscw); socket writes count, io_uring IO does not. */
export function syscalls(pid: number): { r: number; w: number } {
  try {
    const t = fs.readFileSync(`/proc/${pid}/io`, 'utf8');
    return { r: Number(/syscr: (\d+)/.exec(t)?.[1] ?? NaN), w: Number(/syscw: (\d+)/.exec(t)?.[1] ?? NaN) };
  } catch {
    return { r: NaN, w: NaN };
  }
}

/** Busy ticks of the whole machine (all CPUs) from /proc/stat: user+nice+system+irq+softirq+steal. */
export function machineBusyTicks(): number {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest is already in user)
  return f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
}

/**
 * Other agents share this machine and their compiles are not under the bench
 * lock: wait (at most maxSec) for a 1-second window in which the whole machine,
 * less the processes `except()` names (the system under test), used less than
 * `busyPct` % of one CPU. Returns the seconds waited.
 */
export async function waitQuiet(busyPct: number, maxSec: number, except: () => number[] = () => []): Promise<number> {
  const start = performance.now();
  while ((performance.now() - start) / 1000 < maxSec) {
    const pids = except();
    const a = machineBusyTicks() - sumProcCpuTicks(pids);
    await sleep(1000);
    const pct = ((machineBusyTicks() - sumProcCpuTicks(pids) - a) / CLK_TCK) * 100;
    if (pct < busyPct) break;
  }
  return (performance.now() - start) / 1000;
}

/** utime+stime of the given processes together (clock ticks); one that is gone counts 0. */
export function sumProcCpuTicks(pids: Iterable<number>): number {
  let t = 0;
  for (const p of pids) {
    try {
      t += procCpuTicks(p);
    } catch {
      /* gone */
    }
  }
  return t;
}

/** Direct children of pid (from /proc/PID/task/TID/children); [] once it is gone. */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  let tids: string[] = [];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tids) {
    try {
      for (const c of fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim().split(/\s+/)) if (c) out.push(Number(c));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** pid and all its descendants. */
export function processTree(pid: number): number[] {
  const out: number[] = [];
  const todo = [pid];
  while (todo.length) {
    const p = todo.pop()!;
    out.push(p);
    todo.push(...childPids(p));
  }
  return out;
}

/** Per-thread CPU ticks keyed by "tid comm". */
export function threadTicks(pid: number): Map<string, number> {
  const m = new Map<string, number>();
  let tids: string[] = [];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return m;
  }
  for (const tid of tids) {
    try {
      const s = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const comm = s.slice(s.indexOf('(') + 1, s.lastIndexOf(')'));
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      m.set(`${tid} ${comm}`, Number(f[11]) + Number(f[12]));
    } catch {
      /* thread ended */
    }
  }
  return m;
}

/** Seconds of CPU per thread name between two threadTicks() samples, largest first. */
export function threadCpuByName(a: Map<string, number>, b: Map<string, number>): Array<[string, number]> {
  const by = new Map<string, number>();
  for (const [k, v] of b) {
    const name = k.slice(k.indexOf(' ') + 1);
    by.set(name, (by.get(name) ?? 0) + (v - (a.get(k) ?? 0)) / CLK_TCK);
  }
  return [...by].filter(([, s]) => s > 0).sort((x, y) => y[1] - x[1]);
}

// ---------------------------------------------------------------- fio

const clients = new Set<ChildProcess>();

export interface FioRun {
  /** Parsed fio JSON (undefined if fio failed). */
  json: FioJson | undefined;
  /** Server CPU seconds between the end of the ramp and fio's exit. */
  serverCpuSec: number;
  /** Wall seconds of that same window. */
  windowSec: number;
  /** CPU seconds of the whole machine (every process) in that window. */
  machineCpuSec: number;
  threads?: Array<[string, number]>;
  /** read-/write-family syscalls of the server in the window (perThread runs only). */
  syscalls?: { r: number; w: number };
  /** CPU seconds per PID of FioOptions.groups in the same window (procCpuTicks: utime+stime, no children). */
  groupCpuSec?: Record<string, Map<number, number>>;
  error?: string;
}

export interface FioJson {
  jobs: Array<{
    jobname: string;
    error: number;
    usr_cpu: number;
    sys_cpu: number;
    read: FioDir;
    write: FioDir;
  }>;
}

interface FioDir {
  io_bytes: number;
  bw_bytes: number;
  iops: number;
  runtime: number;
  clat_ns: { mean: number; percentile?: Record<string, number> };
  lat_ns: { mean: number; percentile?: Record<string, number> };
}

export interface FioOptions {
  /** fio arguments (without --output/--output-format). */
  args: string[];
  outPath: string;
  /** Server whose CPU is sampled. */
  serverPid?: number;
  /** Seconds after fio starts before the CPU window opens (fio's ramp_time). */
  rampSec?: number;
  /** Also sample per-thread CPU of the server. */
  perThread?: boolean;
  /** Further processes whose CPU is sampled in the same window, by group name (e.g. osd: [pid, pid, pid]). A process that is gone at either end of the window makes the run an error. */
  groups?: Record<string, number[]>;
  /** Limit once the lock is held. */
  timeoutMs: number;
}

/** Run fio as `flock LOCK fio ...`, sampling the server's CPU once the lock is held and the ramp has passed. */
export function runFio(o: FioOptions): Promise<FioRun> {
  const fioArgs = [...o.args, '--output-format=json', `--output=${o.outPath}`];
  fs.writeFileSync(`${o.outPath}.cmd`, `flock ${LOCK_FILE} fio ${fioArgs.join(' ')}\n`);
  try {
    fs.rmSync(o.outPath, { force: true });
  } catch {
    /* ignore */
  }
  return new Promise((resolve) => {
    // Own process group, so that an interrupt can stop flock and fio together.
    const child = spawn('flock', [LOCK_FILE, 'sh', '-c', 'echo LOCKED; exec "$@"', 'sh', 'fio', ...fioArgs], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    clients.add(child);
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    let c0: number | undefined;
    let m0 = 0;
    let th0: Map<string, number> | undefined;
    let sc0: { r: number; w: number } | undefined;
    let g0: Map<number, number> | undefined;
    let groupErr: string | undefined;
    let t0 = 0;
    let rampTimer: NodeJS.Timeout | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    const sample = (): void => {
      t0 = performance.now();
      m0 = machineBusyTicks();
      if (o.serverPid !== undefined) {
        c0 = cpuTicks(o.serverPid);
        if (o.perThread) {
          th0 = threadTicks(o.serverPid);
          sc0 = syscalls(o.serverPid);
        }
      }
      if (o.groups) {
        g0 = new Map();
        for (const pids of Object.values(o.groups)) {
          for (const pid of pids) {
            try {
              g0.set(pid, procCpuTicks(pid));
            } catch {
              groupErr ??= `process ${pid} was gone when the CPU window opened`;
            }
          }
        }
      }
    };
    let locked = false;
    child.stdout!.on('data', (c: Buffer) => {
      if (locked || !c.toString('utf8').includes('LOCKED')) return;
      locked = true;
      rampTimer = setTimeout(sample, (o.rampSec ?? 0) * 1000);
      killTimer = setTimeout(() => {
        stderr += `\nbench: fio exceeded ${o.timeoutMs} ms, killed`;
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          /* gone */
        }
      }, o.timeoutMs);
    });
    child.once('exit', (code, signal) => {
      clients.delete(child);
      clearTimeout(rampTimer);
      clearTimeout(killTimer);
      const t1 = performance.now();
      let serverCpuSec = 0;
      const machineCpuSec = (machineBusyTicks() - m0) / CLK_TCK;
      let threads: Array<[string, number]> | undefined;
      let sc: { r: number; w: number } | undefined;
      if (o.serverPid !== undefined && c0 !== undefined) {
        try {
          serverCpuSec = (cpuTicks(o.serverPid) - c0) / CLK_TCK;
          if (th0) threads = threadCpuByName(th0, threadTicks(o.serverPid));
          if (sc0) {
            const sc1 = syscalls(o.serverPid);
            sc = { r: sc1.r - sc0.r, w: sc1.w - sc0.w };
          }
        } catch {
          /* server gone: reported as an error below */
        }
      }
      let groupCpuSec: Record<string, Map<number, number>> | undefined;
      if (o.groups && g0) {
        groupCpuSec = {};
        for (const [name, pids] of Object.entries(o.groups)) {
          const m = new Map<number, number>();
          for (const pid of pids) {
            try {
              m.set(pid, (procCpuTicks(pid) - (g0.get(pid) ?? NaN)) / CLK_TCK);
            } catch {
              groupErr ??= `${name} process ${pid} exited during the run`;
            }
          }
          groupCpuSec[name] = m;
        }
      }
      const windowSec = c0 === undefined && !g0 ? 0 : (t1 - t0) / 1000;
      let json: FioJson | undefined;
      let error: string | undefined;
      try {
        const txt = fs.readFileSync(o.outPath, 'utf8');
        json = JSON.parse(txt.slice(txt.indexOf('{'))) as FioJson;
        if (json.jobs[0]?.error) error = `fio job error ${json.jobs[0].error}`;
      } catch (err) {
        error = `no fio JSON (${(err as Error).message})`;
      }
      if (code !== 0) error = `fio exited ${code ?? signal}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`;
      if (!error && groupErr) error = groupErr;
      if (!error && o.groups && !g0) error = 'fio ended before the ramp did: no CPU window';
      if (stderr.trim()) fs.writeFileSync(`${o.outPath}.stderr`, stderr);
      resolve({ json: error ? undefined : json, serverCpuSec, windowSec, machineCpuSec, threads, syscalls: sc, groupCpuSec, error });
    });
  });
}

/** Hypervisor steal and total ticks of the machine (/proc/stat). */
export function stealSample(): { steal: number; total: number } {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
  return { steal: f[7], total: f.reduce((a, b) => a + b, 0) };
}

/**
 * Share of the machine's CPU time the hypervisor took from this VM between two
 * samples: on a shared host it is what the system under test never got (seen:
 * 33 % for minutes), and it differs between the Tessera and the Ceph phase.
 */
export function stealPct(a: { steal: number; total: number }, b: { steal: number; total: number }): string {
  const total = b.total - a.total;
  return total > 0 ? `${((100 * (b.steal - a.steal)) / total).toFixed(1)} % of the CPU time` : 'n/a';
}

/**
 * BENCH_ONLY (comma-separated workload names) applied to a workload list; an
 * unknown name is an error naming the known ones. Without BENCH_ONLY: all.
 */
export function workloadsFromEnv<W extends { name: string }>(all: readonly W[]): W[] {
  const only = process.env.BENCH_ONLY;
  if (!only) return [...all];
  const want = only.split(',').map((s) => s.trim());
  const bad = want.filter((w) => !all.some((x) => x.name === w));
  if (bad.length) throw new Error(`BENCH_ONLY: unknown workload(s) ${bad.join(', ')}; known: ${all.map((w) => w.name).join(', ')}`);
  return all.filter((w) => want.includes(w.name));
}

/** Refuses tmpfs/ramfs (the point is the same real disk for every system) and a disk without room; returns "source (fstype)". */
export function checkBenchDisk(dir: string, needBytes: number): string {
  const r = spawnSync('df', ['--output=fstype,avail,source', '-B1', dir], { encoding: 'utf8' });
  const line = `${r.stdout}`.trim().split('\n')[1] ?? '';
  const [fstype, avail, source] = line.trim().split(/\s+/);
  if (fstype === 'tmpfs' || fstype === 'ramfs') throw new Error(`${dir} is on ${fstype}; set BENCH_DIR to a directory on a real disk`);
  if (Number(avail) < needBytes) throw new Error(`${dir}: only ${avail} bytes free, need ${needBytes}`);
  return `${source} (${fstype})`;
}

/** Throws naming the commands not on PATH (ensure-system-deps.sh installs them). */
export function requireCommands(cmds: string[]): void {
  const missing = cmds.filter((t) => spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0);
  if (missing.length) throw new Error(`missing tools: ${missing.join(', ')} (scripts/ensure-system-deps.sh installs them)`);
}

/**
 * Moves the profiles a `node --cpu-prof --cpu-prof-dir=dir` daemon left in dir:
 * the main thread's (Node names them CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile,
 * thread 0 is the main thread) to `${destBase}.cpuprofile`, each worker thread's
 * (the engine's block worker) to `${destBase}.worker<thread>.cpuprofile`. Returns
 * the main thread's path, or null (logged) when there is none.
 */
export function collectProfiles(dir: string, destBase: string): string | null {
  let main: string | null = null;
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.cpuprofile'))) {
    const thread = f.split('.')[4] ?? '?';
    const dest = thread === '0' ? `${destBase}.cpuprofile` : `${destBase}.worker${thread}.cpuprofile`;
    fs.renameSync(`${dir}/${f}`, dest);
    if (thread === '0') main = dest;
  }
  if (main === null) log(`WARN: no main-thread .cpuprofile in ${dir}`);
  return main;
}
