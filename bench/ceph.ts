// Ceph RBD (pool size 3) baseline for the benchmarks: the same fio workloads as
// `npm run bench` (bench/nbd.ts), run with fio's rbd engine against the image
// rbd3/bench of the single-host cluster that /work/shared/bench/ceph.sh sets up
// (1 mon, 1 mgr, 3 BlueStore OSDs on pre-zeroed 8 GiB files, cephx off).
//
//   node dist/bench/ceph.js                 # setup (idempotent), run, stop the daemons (data kept)
//   node dist/bench/ceph.js --dry-run       # print the fio command lines, touch nothing
//   node dist/bench/ceph.js --md            # the table as markdown
//   node dist/bench/ceph.js --after teardown|stop|keep   # what to do with the cluster afterwards
//   node dist/bench/ceph.js --json FILE     # also write the results as JSON
//
// Environment: BENCH_RUNTIME [15] s per job, BENCH_RAMP [2] s, BENCH_SIZE [2G]
// region of the image (the nbd benchmark's default), BENCH_ONLY regex on
// workload names, BENCH_LOCK [/tmp/bench.lock], BENCH_QUIET_MAX [30] /
// BENCH_QUIET_BUSY [40] (wait for the machine, less our Ceph daemons, to be
// nearly idle), CEPH_SH [../shared/bench/ceph.sh], CEPHBENCH_DIR
// [/tmp/cephbench] (passed through to ceph.sh, as are its other variables).
// Raw fio JSON and command lines go to /var/tmp/tessera-bench-results/ceph-<time>/.
//
// As a module: `runCephBaseline({ runtimeSec, only, log })` returns one
// CephResult per workload; WORKLOADS and fioWorkloadArgs() are the workload
// definitions shared with the Tessera side so that both run identical fio jobs.
//
// CPU: utime+stime of every ceph-osd of this cluster (found by pid file and
// checked against /proc/PID/cmdline, all threads) from the end of fio's ramp to
// fio's exit, under the bench lock; per IO = (CPU / window) x fio's runtime /
// fio's IO count, the same accounting bench/nbd.ts uses for its server.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { CLK_TCK, LOCK_FILE, capture, machineBusyTicks, procCpuTicks, processTree, sumProcCpuTicks, waitQuiet, log as defaultLog, type FioJson } from './harness.js';
import { parseSize } from '../src/stdx/size.js';
import { WORKLOADS, type Workload } from './report.js';
export { WORKLOADS };

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const GiB = 2 ** 30;
const MiB = 2 ** 20;

// ---------------------------------------------------------------- shared workload definitions


/** Defaults of bench/nbd.ts (BENCH_RUNTIME, BENCH_RAMP, BENCH_SIZE). */
export const DEFAULT_RUNTIME_SEC = 15;
export const DEFAULT_RAMP_SEC = 2;
export const DEFAULT_REGION_BYTES = 2 * GiB;

export interface JobParams {
  runtimeSec: number;
  rampSec?: number;
  /** Region of the volume the job addresses (fio --size). */
  sizeBytes?: number;
}

/**
 * The engine-independent fio arguments of one workload, exactly as bench/nbd.ts
 * builds them; append the engine and target (`--ioengine=nbd --uri=...` or
 * `--ioengine=rbd --pool=... --rbdname=...`).
 */
export function fioWorkloadArgs(w: Workload, p: JobParams): string[] {
  return [
    `--name=${w.name}`,
    `--rw=${w.rw}`,
    `--bs=${w.bs}`,
    `--iodepth=${w.qd}`,
    '--numjobs=1',
    `--size=${p.sizeBytes ?? DEFAULT_REGION_BYTES}`,
    '--time_based',
    `--runtime=${p.runtimeSec}`,
    `--ramp_time=${p.rampSec ?? DEFAULT_RAMP_SEC}`,
    '--norandommap',
    '--randrepeat=0',
    '--percentile_list=50:99:99.9',
  ];
}

// ---------------------------------------------------------------- results

export interface CephResult {
  system: 'ceph-rbd3';
  workload: string;
  rw: Workload['rw'];
  bs: string;
  qd: number;
  error?: string;
  iops: number;
  /** MiB/s (2^20 bytes) */
  mibps: number;
  /** MB/s (10^6 bytes), as bench/nbd.ts reports */
  mbps: number;
  /** completion latency (fio clat), as bench/nbd.ts reports */
  latMeanUs: number;
  latP99Us: number;
  /** total latency (fio lat = submission + completion) */
  totLatMeanUs: number;
  /** IOs fio counted (after the ramp) */
  ios: number;
  /** CPU seconds of all ceph-osd processes in the window (end of ramp .. fio exit) */
  osdCpuSec: number;
  windowSec: number;
  /** all OSDs together, % of one CPU */
  osdCpuPct: number;
  /** OSD CPU seconds per IO (rate in the window x fio runtime / IOs) */
  cpuSecPerIo: number;
  /** OSD CPU seconds per GiB transferred (comparable with bench/nbd.ts's CPU s/GiB) */
  cpuSecPerGiB: number;
  /** the client's CPU: fio's process tree incl. librbd's threads, % of one CPU (fio's own usr_cpu+sys_cpu misses librbd's threads) */
  fioCpuPct: number;
  /** mon + mgr CPU in the window, % of one CPU */
  monMgrCpuPct: number;
  /** everything else on the machine in the window (other agents), % of one CPU: noise indicator */
  otherCpuPct: number;
}

export interface CephOptions {
  runtimeSec: number;
  /** Selects workloads by name (WORKLOADS[].name). Default: all. */
  only?: RegExp;
  log: (msg: string) => void;
  rampSec?: number;
  /** fio --size; default 2 GiB (bench/nbd.ts's BENCH_SIZE). At most the image size. */
  sizeBytes?: number;
  /** What to do with the cluster afterwards. Default 'stop' (daemons stopped, data kept for a fast re-setup). */
  after?: 'keep' | 'stop' | 'teardown';
  /** Run `ceph.sh setup` first (default true; it is idempotent and quick when the cluster exists). */
  setup?: boolean;
  /** Path of ceph.sh. Default $CEPH_SH or <repo>/../shared/bench/ceph.sh. */
  cephSh?: string;
  /** Cluster dir (CEPHBENCH_DIR for ceph.sh). Default $CEPHBENCH_DIR or /tmp/cephbench. */
  cephDir?: string;
  pool?: string;
  image?: string;
  /** Where fio JSON and command lines go. Default /var/tmp/tessera-bench-results/ceph-<time>. */
  resultsDir?: string;
  /** Wait up to this long before each job for the machine (less our Ceph daemons) to be below quietBusyPct of one CPU. */
  quietMaxSec?: number;
  quietBusyPct?: number;
  /** Only print the fio command lines (through log); no setup, no fio. */
  dryRun?: boolean;
}

// ---------------------------------------------------------------- cluster plumbing

interface Resolved {
  cephSh: string;
  cephDir: string;
  conf: string;
  pool: string;
  image: string;
  env: NodeJS.ProcessEnv;
}

function resolve(o: CephOptions): Resolved {
  const cephSh = o.cephSh ?? process.env.CEPH_SH ?? path.resolve(REPO, '..', 'shared', 'bench', 'ceph.sh');
  const cephDir = o.cephDir ?? process.env.CEPHBENCH_DIR ?? '/tmp/cephbench';
  const conf = path.join(cephDir, 'ceph.conf');
  // ceph.sh reads these from the environment; BENCH_LOCK is shared with bench/nbd.ts.
  const env: NodeJS.ProcessEnv = { ...process.env, CEPHBENCH_DIR: cephDir, BENCH_LOCK: LOCK_FILE, CEPH_CONF: conf };
  return { cephSh, cephDir, conf, pool: o.pool ?? 'rbd3', image: o.image ?? process.env.IMG ?? 'bench', env };
}

/** Run `ceph.sh SUB`, its stderr lines forwarded to log. */
function cephSh(r: Resolved, sub: string, log: (m: string) => void, timeoutMs = 3_600_000): Promise<void> {
  return new Promise((resolveP, reject) => {
    const child = spawn('bash', [r.cephSh, sub], { env: r.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let tail = '';
    const onData = (c: Buffer): void => {
      const s = c.toString('utf8');
      tail = (tail + s).slice(-4000);
      for (const line of s.split('\n')) if (line.trim()) log(`  ${line.trimEnd()}`);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      if (code === 0) resolveP();
      else reject(new Error(`ceph.sh ${sub} exited ${code ?? sig}: ${tail.trim().split('\n').slice(-3).join(' | ')}`));
    });
  });
}

/** PIDs of our daemons of one kind ('osd', 'mon', 'mgr'): pid files in <dir>/run whose cmdline names our conf. */
export function cephDaemonPids(cephDir: string, kind: 'osd' | 'mon' | 'mgr'): Map<string, number> {
  const m = new Map<string, number>();
  const run = path.join(cephDir, 'run');
  const conf = path.join(cephDir, 'ceph.conf');
  let files: string[] = [];
  try {
    files = fs.readdirSync(run);
  } catch {
    return m;
  }
  for (const f of files) {
    if (!f.startsWith(`${kind}.`) || !f.endsWith('.pid')) continue;
    try {
      const pid = Number(fs.readFileSync(path.join(run, f), 'utf8').trim());
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (cmd.includes(conf)) m.set(f.slice(0, -4), pid);
    } catch {
      /* not running */
    }
  }
  return m;
}

/** Every ceph-osd on the machine (by comm): to notice OSDs that are not ours. */
function allCephOsdPids(): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (fs.readFileSync(`/proc/${d}/comm`, 'utf8').trim() === 'ceph-osd') out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** utime+stime of processes that must exist (a vanished OSD is an error here), clock ticks. */
function sumTicks(pids: Iterable<number>): number {
  let t = 0;
  for (const p of pids) t += procCpuTicks(p);
  return t;
}

// ---------------------------------------------------------------- fio

const fioClients = new Set<ChildProcess>();

/** Stop running fio clients of this module (each is its own process group: flock, sh, fio). */
export function killCephClients(signal: NodeJS.Signals = 'SIGTERM'): void {
  for (const c of fioClients) {
    try {
      if (c.pid !== undefined) process.kill(-c.pid, signal);
    } catch {
      /* gone */
    }
  }
}
process.on('exit', () => killCephClients('SIGKILL'));

export function cephFioArgs(w: Workload, p: JobParams, pool: string, image: string): string[] {
  const [name, ...rest] = fioWorkloadArgs(w, p);
  return [name, '--ioengine=rbd', '--clientname=admin', `--pool=${pool}`, `--rbdname=${image}`, ...rest, '--invalidate=0'];
}

interface Window {
  json?: FioJson;
  error?: string;
  osdCpuSec: number;
  monMgrCpuSec: number;
  machineCpuSec: number;
  windowSec: number;
  /** CPU of the fio process tree (fio + its job process, where librbd's threads run) and the span it was polled over */
  clientCpuSec: number;
  clientSpanSec: number;
}

function runMeasuredFio(r: Resolved, args: string[], outPath: string, rampSec: number, timeoutMs: number): Promise<Window> {
  const fioArgs = [...args, '--output-format=json', `--output=${outPath}`];
  fs.writeFileSync(`${outPath}.cmd`, `CEPH_CONF=${r.conf} flock ${LOCK_FILE} fio ${fioArgs.join(' ')}\n`);
  fs.rmSync(outPath, { force: true });
  return new Promise((resolveP) => {
    const child = spawn('flock', [LOCK_FILE, 'sh', '-c', 'echo LOCKED; exec "$@"', 'sh', 'fio', ...fioArgs], {
      env: r.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    fioClients.add(child);
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    let osds: Map<string, number> | undefined;
    let others: number[] = [];
    let o0 = 0;
    let g0 = 0;
    let m0 = 0;
    let t0 = 0;
    let sampleErr: string | undefined;
    let rampTimer: NodeJS.Timeout | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    let pollTimer: NodeJS.Timeout | undefined;
    // fio's own usr_cpu/sys_cpu count only the job thread, not librbd's messenger
    // threads: poll the fio process tree's utime+stime instead (its last sample
    // is up to 200 ms before fio's exit, so this is a rate over the polled span).
    const first = new Map<number, number>();
    const last = new Map<number, number>();
    let tFirst = 0;
    let tLast = 0;
    const poll = (): void => {
      const now = performance.now();
      for (const p of processTree(child.pid!)) {
        try {
          const t = procCpuTicks(p);
          if (!first.has(p)) first.set(p, tFirst === 0 ? t : 0);
          last.set(p, t);
        } catch {
          /* exited */
        }
      }
      if (tFirst === 0) tFirst = now;
      tLast = now;
    };
    const sample = (): void => {
      poll();
      pollTimer = setInterval(poll, 200);
      osds = cephDaemonPids(r.cephDir, 'osd');
      others = [...cephDaemonPids(r.cephDir, 'mon').values(), ...cephDaemonPids(r.cephDir, 'mgr').values()];
      t0 = performance.now();
      m0 = machineBusyTicks();
      o0 = sumTicks(osds.values());
      g0 = sumProcCpuTicks(others);
    };
    let locked = false;
    child.stdout!.on('data', (c: Buffer) => {
      if (locked || !c.toString('utf8').includes('LOCKED')) return;
      locked = true;
      rampTimer = setTimeout(() => {
        try {
          sample();
        } catch (e) {
          sampleErr = `sampling OSD CPU: ${(e as Error).message}`;
        }
      }, rampSec * 1000);
      killTimer = setTimeout(() => {
        stderr += `\nceph bench: fio exceeded ${timeoutMs} ms, killed`;
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          /* gone */
        }
      }, timeoutMs);
    });
    child.once('exit', (code, signal) => {
      fioClients.delete(child);
      clearTimeout(rampTimer);
      clearTimeout(killTimer);
      clearInterval(pollTimer);
      const t1 = performance.now();
      let client = 0;
      for (const [p, t] of last) client += t - (first.get(p) ?? 0);
      const w: Window = {
        osdCpuSec: NaN,
        monMgrCpuSec: NaN,
        machineCpuSec: NaN,
        windowSec: NaN,
        clientCpuSec: client / CLK_TCK,
        clientSpanSec: (tLast - tFirst) / 1000,
      };
      if (osds && !sampleErr) {
        try {
          const now = cephDaemonPids(r.cephDir, 'osd');
          const same = now.size === osds.size && [...osds].every(([n, p]) => now.get(n) === p);
          if (!same) sampleErr = `OSD set changed during the run (${[...osds.keys()].join(',')} -> ${[...now.keys()].join(',')})`;
          else {
            w.osdCpuSec = (sumTicks(osds.values()) - o0) / CLK_TCK;
            w.monMgrCpuSec = (sumProcCpuTicks(others) - g0) / CLK_TCK;
            w.machineCpuSec = (machineBusyTicks() - m0) / CLK_TCK;
            w.windowSec = (t1 - t0) / 1000;
          }
        } catch (e) {
          sampleErr = `an OSD exited during the run (${(e as Error).message})`;
        }
      }
      try {
        const txt = fs.readFileSync(outPath, 'utf8');
        w.json = JSON.parse(txt.slice(txt.indexOf('{'))) as FioJson;
        if (w.json.jobs[0]?.error) w.error = `fio job error ${w.json.jobs[0].error}`;
      } catch (e) {
        w.error = `no fio JSON (${(e as Error).message})`;
      }
      if (code !== 0) w.error = `fio exited ${code ?? signal}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`;
      else if (!osds && !w.error) w.error = 'fio ended before the ramp did: no CPU window';
      if (!w.error && sampleErr) w.error = sampleErr;
      if (stderr.trim()) fs.writeFileSync(`${outPath}.stderr`, stderr);
      resolveP(w);
    });
  });
}

function toResult(w: Workload, win: Window): CephResult {
  const base: CephResult = {
    system: 'ceph-rbd3',
    workload: w.name,
    rw: w.rw,
    bs: w.bs,
    qd: w.qd,
    iops: NaN,
    mibps: NaN,
    mbps: NaN,
    latMeanUs: NaN,
    latP99Us: NaN,
    totLatMeanUs: NaN,
    ios: NaN,
    osdCpuSec: NaN,
    windowSec: NaN,
    osdCpuPct: NaN,
    cpuSecPerIo: NaN,
    cpuSecPerGiB: NaN,
    fioCpuPct: NaN,
    monMgrCpuPct: NaN,
    otherCpuPct: NaN,
  };
  if (win.error || !win.json) return { ...base, error: win.error ?? 'fio failed' };
  const job = win.json.jobs[0];
  const d = job.read.io_bytes > 0 ? job.read : job.write;
  if (!(d.io_bytes > 0)) return { ...base, error: 'no IO completed' };
  const ios = (d as { total_ios?: number }).total_ios ?? d.io_bytes / parseBs(w.bs);
  const clat = d.clat_ns ?? d.lat_ns;
  const p99 = clat.percentile?.['99.000000'] ?? d.lat_ns.percentile?.['99.000000'] ?? NaN;
  const rate = win.windowSec > 0 ? win.osdCpuSec / win.windowSec : NaN;
  const runtimeSec = d.runtime / 1000;
  const fioCpu = win.clientSpanSec > 1 ? (100 * win.clientCpuSec) / win.clientSpanSec : job.usr_cpu + job.sys_cpu;
  return {
    ...base,
    iops: d.iops,
    mibps: d.bw_bytes / MiB,
    mbps: d.bw_bytes / 1e6,
    latMeanUs: clat.mean / 1000,
    latP99Us: p99 / 1000,
    totLatMeanUs: d.lat_ns.mean / 1000,
    ios,
    osdCpuSec: win.osdCpuSec,
    windowSec: win.windowSec,
    osdCpuPct: rate * 100,
    cpuSecPerIo: (rate * runtimeSec) / ios,
    cpuSecPerGiB: (rate * runtimeSec) / (d.io_bytes / GiB),
    fioCpuPct: fioCpu,
    monMgrCpuPct: win.windowSec > 0 ? (100 * win.monMgrCpuSec) / win.windowSec : NaN,
    otherCpuPct:
      win.windowSec > 0 ? Math.max(0, (100 * (win.machineCpuSec - win.osdCpuSec - win.monMgrCpuSec)) / win.windowSec - fioCpu) : NaN,
  };
}

function parseBs(bs: string): number {
  const m = /^(\d+)([kKmM]?)$/.exec(bs);
  if (!m) throw new Error(`bad bs ${bs}`);
  return Number(m[1]) * (m[2] === '' ? 1 : /k/i.test(m[2]) ? 1024 : MiB);
}

function imageSizeBytes(r: Resolved): number {
  const out = capture('rbd', ['-c', r.conf, 'info', '--format', 'json', `${r.pool}/${r.image}`]);
  try {
    return Number((JSON.parse(out) as { size: number }).size);
  } catch {
    return NaN;
  }
}

// ---------------------------------------------------------------- entry point

/**
 * Set up (ceph.sh setup, idempotent) and run every selected workload with fio's
 * rbd engine against <pool>/<image> (size-3 pool), measuring the OSDs' CPU.
 * Afterwards the daemons are stopped (default), kept, or the cluster torn down.
 * A failed workload yields a result with `error`; a failed setup throws.
 */
export async function runCephBaseline(opts: CephOptions): Promise<CephResult[]> {
  const log = opts.log;
  const r = resolve(opts);
  const rampSec = opts.rampSec ?? DEFAULT_RAMP_SEC;
  const sizeBytes = opts.sizeBytes ?? DEFAULT_REGION_BYTES;
  const p: JobParams = { runtimeSec: opts.runtimeSec, rampSec, sizeBytes };
  if (!(p.runtimeSec > 0) || !(rampSec >= 0)) throw new Error('runtimeSec must be > 0 and rampSec >= 0');
  const only = opts.only ? new RegExp(opts.only.source, opts.only.flags.replace(/[gy]/g, '')) : undefined; // no lastIndex state
  const workloads = WORKLOADS.filter((w) => !only || only.test(w.name));
  if (!workloads.length) throw new Error(`no workload matches ${opts.only}; known: ${WORKLOADS.map((w) => w.name).join(', ')}`);

  if (opts.dryRun) {
    log(`export CEPH_CONF=${r.conf}`);
    log(`bash ${r.cephSh} setup`);
    for (const w of workloads) log(`flock ${LOCK_FILE} fio ${cephFioArgs(w, p, r.pool, r.image).join(' ')} --output-format=json --output=<resultsDir>/${w.name}.json`);
    log(`bash ${r.cephSh} ${opts.after === 'teardown' ? 'teardown' : opts.after === 'keep' ? 'status   # after=keep: daemons left running' : 'stop'}`);
    return [];
  }

  if (!fs.existsSync(r.cephSh)) throw new Error(`ceph.sh not found at ${r.cephSh} (set CEPH_SH)`);
  if (!/\brbd\b/.test(capture('fio', ['--enghelp']))) throw new Error('this fio has no rbd engine (Debian fio links librbd1)');

  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const resDir = opts.resultsDir ?? path.join('/var/tmp', 'tessera-bench-results', `ceph-${stamp}`);
  fs.mkdirSync(resDir, { recursive: true });

  const results: CephResult[] = [];
  try {
    if (opts.setup ?? true) {
      const t0 = performance.now();
      log(`ceph: ${r.cephSh} setup (CEPHBENCH_DIR=${r.cephDir}; first time: packages, 3 x 8 GiB OSD files, 4 GiB prefill per pool)`);
      await cephSh(r, 'setup', log);
      log(`ceph: setup took ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    }
    const osds = cephDaemonPids(r.cephDir, 'osd');
    if (!osds.size) throw new Error(`no running ceph-osd of ${r.conf}`);
    const strangers = allCephOsdPids().filter((pid) => ![...osds.values()].includes(pid));
    if (strangers.length) log(`ceph: WARN ceph-osd processes not of this cluster (not counted): ${strangers.join(' ')}`);
    const img = imageSizeBytes(r);
    if (Number.isFinite(img) && sizeBytes > img) throw new Error(`sizeBytes ${sizeBytes} > image ${r.pool}/${r.image} size ${img}`);
    fs.writeFileSync(
      path.join(resDir, 'env.txt'),
      [capture('ceph', ['--version']), capture('fio', ['--version']), `osds: ${[...osds].map(([n, pid]) => `${n}=${pid}`).join(' ')}`,
        capture('ceph', ['-c', r.conf, '--connect-timeout', '30', '-s']), capture('rbd', ['-c', r.conf, 'info', `${r.pool}/${r.image}`])].join('\n') + '\n',
    );
    log(`ceph: ${osds.size} OSDs (${[...osds].map(([n, pid]) => `${n}=${pid}`).join(' ')}); image ${r.pool}/${r.image} ${(img / GiB).toFixed(1)} GiB; results in ${resDir}`);

    const quietMax = opts.quietMaxSec ?? Number(process.env.BENCH_QUIET_MAX ?? 30);
    const quietBusy = opts.quietBusyPct ?? Number(process.env.BENCH_QUIET_BUSY ?? 40);
    const daemonPids = (): number[] =>
      [...cephDaemonPids(r.cephDir, 'osd').values(), ...cephDaemonPids(r.cephDir, 'mon').values(), ...cephDaemonPids(r.cephDir, 'mgr').values()];
    for (const w of workloads) {
      if (quietMax > 0) {
        const waited = await waitQuiet(quietBusy, quietMax, daemonPids);
        if (waited > 1.5) log(`ceph: waited ${waited.toFixed(0)} s for other load to drop below ${quietBusy}% of a CPU`);
      }
      log(`ceph: ${w.name} on rbd ${r.pool}/${r.image} (${p.runtimeSec} s + ${rampSec} s ramp)`);
      const win = await runMeasuredFio(r, cephFioArgs(w, p, r.pool, r.image), path.join(resDir, `${w.name}.json`), rampSec, (p.runtimeSec + rampSec + 180) * 1000);
      const res = toResult(w, win);
      results.push(res);
      if (res.error) log(`  ERROR: ${res.error}`);
      else
        log(
          `  ${res.iops.toFixed(0)} IOPS, ${res.mibps.toFixed(1)} MiB/s, clat mean ${res.latMeanUs.toFixed(0)} us p99 ${res.latP99Us.toFixed(0)} us, ` +
            `OSD CPU ${res.osdCpuPct.toFixed(0)}% = ${(res.cpuSecPerIo * 1e6).toFixed(0)} us/IO, fio ${res.fioCpuPct.toFixed(0)}%, other ${res.otherCpuPct.toFixed(0)}%`,
        );
    }
    fs.writeFileSync(path.join(resDir, 'results.json'), JSON.stringify(results, null, 2) + '\n');
  } finally {
    killCephClients('SIGTERM');
    const after = opts.after ?? 'stop';
    if (after !== 'keep') {
      log(`ceph: ${after === 'teardown' ? 'teardown (daemons stopped, data dir deleted)' : 'stopping daemons (data kept; next setup restarts them)'}`);
      try {
        await cephSh(r, after, log, 600_000);
      } catch (e) {
        log(`ceph: WARN ${(e as Error).message}`);
      }
    }
  }
  return results;
}

// ---------------------------------------------------------------- tables

const f0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : '-');
const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '-');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '-');

export function cephTable(results: CephResult[], md: boolean): string {
  const hdr = ['workload', 'IOPS', 'MiB/s', 'lat mean us', 'lat p99 us', 'OSD CPU %', 'OSD CPU us/IO', 'OSD CPU s/GiB', 'fio CPU %', 'mon+mgr CPU %', 'other CPU %'];
  const rows = results.map((x) =>
    x.error
      ? [x.workload, 'ERROR', x.error.slice(0, 60), '', '', '', '', '', '', '', '']
      : [x.workload, f0(x.iops), f1(x.mibps), f0(x.latMeanUs), f0(x.latP99Us), f0(x.osdCpuPct), f0(x.cpuSecPerIo * 1e6), f2(x.cpuSecPerGiB), f0(x.fioCpuPct), f0(x.monMgrCpuPct), f0(x.otherCpuPct)],
  );
  if (md) return [`| ${hdr.join(' | ')} |`, `|---|${hdr.slice(1).map(() => '---:').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
  const wd = hdr.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]): string => r.map((c, i) => (i ? c.padStart(wd[i]) : c.padEnd(wd[i]))).join('  ').trimEnd();
  return [line(hdr), ...rows.map(line)].join('\n');
}

// ---------------------------------------------------------------- CLI

async function main(argv: string[]): Promise<number> {
  let md = false;
  let dryRun = false;
  let jsonOut: string | undefined;
  let after: CephOptions['after'] = 'stop';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--md') md = true;
    else if (a === '--dry-run') dryRun = true;
    else if (a === '--json') jsonOut = argv[++i];
    else if (a === '--after') {
      const v = argv[++i];
      if (v !== 'keep' && v !== 'stop' && v !== 'teardown') throw new Error('--after keep|stop|teardown');
      after = v;
    } else if (a === '--help' || a === '-h') {
      const src = fs.readFileSync(fileURLToPath(import.meta.url), 'utf8');
      process.stdout.write(src.split('\n').filter((l) => l.startsWith('//')).slice(0, 22).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
      return 0;
    } else throw new Error(`unknown argument ${a} (try --help)`);
  }
  const runtimeSec = Number(process.env.BENCH_RUNTIME ?? DEFAULT_RUNTIME_SEC);
  const rampSec = Number(process.env.BENCH_RAMP ?? DEFAULT_RAMP_SEC);
  const opts: CephOptions = {
    runtimeSec,
    rampSec,
    sizeBytes: parseSize(process.env.BENCH_SIZE ?? '2G'),
    only: process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY) : undefined,
    log: dryRun ? (m) => process.stdout.write(m + '\n') : defaultLog,
    after,
    dryRun,
  };
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    defaultLog(`${sig}: stopping fio (runCephBaseline's finally stops the daemons)`);
    killCephClients('SIGTERM');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const res = await runCephBaseline(opts);
  if (dryRun) return 0;
  const fioVer = capture('fio', ['--version']);
  const cephVer = capture('ceph', ['--version']).replace(/ \([0-9a-f]{40}\)/, '');
  const header = `Ceph RBD pool size 3 (1 host, 3 BlueStore OSDs), ${cephVer}, ${fioVer} rbd engine, ${runtimeSec} s per job after ${rampSec} s ramp, numjobs=1; lat = completion latency (clat); OSD CPU = utime+stime of all ceph-osd`;
  process.stdout.write(`${md ? `_${header}_` : header}\n\n${cephTable(res, md)}\n`);
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(res, null, 2) + '\n');
  return res.some((x) => x.error) ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(fs.realpathSync(process.argv[1])).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: Error) => {
      defaultLog(`ceph bench failed: ${err.stack ?? err.message}`);
      process.exit(1);
    },
  );
}
