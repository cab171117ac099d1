// `npm run bench` (second part): a 3-replica Tessera cluster (`tessera up
// --osds 3`: monitor + 3 OSD processes + the NBD gateway) against Ceph RBD with
// pool size 3 on the same machine, the same fio workloads, in one run (issue 3 §8).
//
//   node dist/bench/cluster.js              # Tessera, then Ceph; tables on stdout, progress on stderr
//   node dist/bench/cluster.js --md         # the tables as markdown
//   node dist/bench/cluster.js --record     # also write a dated section into docs/benchmarks.md
//   node dist/bench/cluster.js --json FILE  # also write every result as JSON
//   node dist/bench/cluster.js --dry-run    # print what would run, start nothing
//
// Environment: BENCH_SYSTEMS [tessera,ceph] (one side only: =tessera or =ceph;
// Ceph's setup takes minutes the first time), BENCH_RUNTIME [15] s per job,
// BENCH_RAMP [10] s (JIT warm-up, see parseOptions), BENCH_ONLY (e.g. rw4k-qd32,rw4k-qd1), BENCH_SIZE [2G] region
// written first and then benchmarked (at most 4G: vol0 and the Ceph image are
// 4 GiB), BENCH_DIR [/var/tmp] parent of the scratch dir (not tmpfs),
// BENCH_DEVICE_SIZE [16G] sparse device file per OSD, BENCH_URING [0]
// (UV_USE_IO_URING for the cluster's processes), BENCH_TESSERA_ARGS (extra
// `tessera up` flags), BENCH_QUIET_MAX [30] / BENCH_QUIET_BUSY [40] (wait before
// each job for the machine, less the cluster under test, to be nearly idle),
// BENCH_LOCK [/tmp/bench.lock], BENCH_KEEP=1 keeps the scratch dir,
// BENCH_CEPH_AFTER [stop] keep|stop|teardown, ceph.ts's CEPH_SH / CEPHBENCH_DIR,
// BENCH_DOC [docs/benchmarks.md] the file --record writes. `npm run bench` runs
// bench/nbd.js and then this with the same arguments and environment: --md and
// --record apply to both; --profile and BENCH_SYSTEMS=qemu-nbd skip this part.
// Raw fio JSON is kept in /var/tmp/tessera-bench-results/cluster-<time>/.
//
// Order: all Tessera workloads (cluster started on a fresh data dir, the region
// of vol0 filled with a sequential 1 MiB QD8 write over NBD, then each workload),
// the cluster stopped, then all Ceph workloads (bench/ceph.ts runCephBaseline:
// setup, run, daemons stopped). Only one system's daemons run at any time, so
// neither side's idle daemons are charged to the other; the price is that the
// two sides are minutes apart on a shared, noisy machine.
//
// CPU (both sides the same accounting): utime+stime from /proc/PID/stat, all
// threads, of every OSD process together, from the end of fio's ramp to fio's
// exit, under the bench lock; per IO = (CPU / window) x fio's runtime / fio's IO
// count. Tessera also reports its gateway (the `up` process: NBD server and
// replication client) and monitor; Ceph's client side (librbd) runs inside fio.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { killCephClients, runCephBaseline, type CephResult, fioWorkloadArgs } from './ceph.js';
import {
  printHeaderAndExit,
  runBenchMain,
  childPids,
  waitQuiet,
  capture,
  freePort,
  killAllSync,
  killClients,
  log,
  runFio,
  sleep,
  startServer,
  stopAll,
  stopServer,
  waitNbd,
  stealSample,
  stealPct,
  type Server,
  workloadsFromEnv,
  checkBenchDisk,
  requireCommands,
} from './harness.js';
import { parseSize } from '../src/stdx/size.js';
import { WORKLOADS, type FioFigures, type Workload } from './report.js';
import { DAEMON_NODE_ARGS } from '../src/main/node-flags.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TESSERA_BIN = path.join(REPO, 'bin', 'tessera.js');
const DOC = process.env.BENCH_DOC ?? path.join(REPO, 'docs', 'benchmarks.md');
const DOC_HEADING = '## Replicated cluster vs Ceph';
const GiB = 2 ** 30;
const VOLUME_BYTES = 4 * GiB;
const OSDS = 3;
const CLUSTER_RAMP_SEC_DEFAULT = 10;
const SYSTEMS = ['tessera', 'ceph'] as const;
type System = (typeof SYSTEMS)[number];

// ---------------------------------------------------------------- targets (issue 3 §8), Tessera / Ceph

type Metric = 'iops' | 'lat' | 'osdCpu';
interface Target {
  metric: Metric;
  /** iops: ratio >= bound; lat, osdCpu: ratio <= bound */
  bound: number;
}
const TARGETS: Record<string, Target[]> = {
  'rw4k-qd32': [
    { metric: 'iops', bound: 5 },
    { metric: 'osdCpu', bound: 0.2 },
  ],
  'rw4k-qd1': [{ metric: 'lat', bound: 0.2 }],
};

function targetText(t: Target): string {
  if (t.metric === 'iops') return `IOPS >= ${t.bound}x`;
  if (t.metric === 'lat') return `mean lat <= ${t.bound}x`;
  return `OSD CPU/IO <= ${t.bound}x`;
}

// ---------------------------------------------------------------- results

export interface SideResult extends FioFigures {
  system: System;
  ios: number;
  windowSec: number;
  /** all OSD processes together, % of one CPU */
  osdCpuPct: number;
  osdCpuSecPerIo: number;
  osdCpuSecPerGiB: number;
  /** each OSD, % of one CPU (Tessera: osd.1..3 in start order; Ceph: not split) */
  perOsdCpuPct?: number[];
  /** Tessera: the gateway (`up` process); Ceph: none (librbd runs in fio, see clientCpuPct) */
  gatewayCpuPct: number;
  gatewayCpuSecPerIo: number;
  /** Tessera: monitor; Ceph: mon + mgr */
  monCpuPct: number;
  /** fio (Ceph: fio's process tree, which includes librbd's threads) */
  clientCpuPct: number;
  /** everything else on the machine in the window (other agents): noise indicator */
  otherCpuPct: number;
}

interface Row {
  workload: Workload;
  tessera?: SideResult;
  ceph?: SideResult;
}

interface Ratios {
  iops: number;
  lat: number;
  p99: number;
  osdCpu: number;
}

function ratios(r: Row): Ratios | undefined {
  const t = r.tessera;
  const c = r.ceph;
  if (!t || !c || t.error || c.error) return undefined;
  return { iops: t.iops / c.iops, lat: t.latMeanUs / c.latMeanUs, p99: t.latP99Us / c.latP99Us, osdCpu: t.osdCpuSecPerIo / c.osdCpuSecPerIo };
}

function verdict(r: Row): 'PASS' | 'MISS' | '-' {
  const targets = TARGETS[r.workload.name];
  const q = ratios(r);
  if (!targets || !q) return '-';
  const ok = targets.every((t) => (t.metric === 'iops' ? q.iops >= t.bound : q[t.metric] <= t.bound));
  return ok ? 'PASS' : 'MISS';
}

function fromCeph(c: CephResult): SideResult {
  return {
    system: 'ceph',
    workload: c.workload,
    error: c.error,
    iops: c.iops,
    mbps: c.mbps,
    latMeanUs: c.latMeanUs,
    latP99Us: c.latP99Us,
    ios: c.ios,
    windowSec: c.windowSec,
    osdCpuPct: c.osdCpuPct,
    osdCpuSecPerIo: c.cpuSecPerIo,
    osdCpuSecPerGiB: c.cpuSecPerGiB,
    gatewayCpuPct: NaN,
    gatewayCpuSecPerIo: NaN,
    monCpuPct: c.monMgrCpuPct,
    clientCpuPct: c.fioCpuPct,
    otherCpuPct: c.otherCpuPct,
  };
}

// ---------------------------------------------------------------- tables

const f0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : '-');
const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '-');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '-');
const us = (sec: number): string => f0(sec * 1e6);

/** Columns from `rightFrom` on are right-aligned, except those in `left`. */
function table(hdr: string[], rows: string[][], md: boolean, rightFrom: number, left: number[] = []): string {
  const right = (i: number): boolean => i >= rightFrom && !left.includes(i);
  if (md) {
    const align = hdr.map((_, i) => (right(i) ? '---:' : '---'));
    return [`| ${hdr.join(' | ')} |`, `|${align.join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
  }
  const w = hdr.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]): string => r.map((c, i) => (right(i) ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  ').trimEnd();
  return [line(hdr), ...rows.map(line)].join('\n');
}

/** Per workload, Tessera next to Ceph: IOPS, mean latency, OSD CPU per IO, the ratios and the targets. */
function comparisonTable(rows: Row[], md: boolean): string {
  const hdr = ['workload', 'tessera IOPS', 'ceph IOPS', 'IOPS x', 'tessera lat us', 'ceph lat us', 'lat x', 'tessera OSD CPU us/IO', 'ceph OSD CPU us/IO', 'CPU/IO x', 'target (tessera/ceph)', 'verdict'];
  const out = rows.map((r) => {
    const t = r.tessera && !r.tessera.error ? r.tessera : undefined;
    const c = r.ceph && !r.ceph.error ? r.ceph : undefined;
    const q = ratios(r);
    const targets = TARGETS[r.workload.name];
    return [
      r.workload.name,
      t ? f0(t.iops) : r.tessera ? 'ERROR' : '-',
      c ? f0(c.iops) : r.ceph ? 'ERROR' : '-',
      q ? f2(q.iops) : '-',
      t ? f0(t.latMeanUs) : '-',
      c ? f0(c.latMeanUs) : '-',
      q ? f2(q.lat) : '-',
      t ? us(t.osdCpuSecPerIo) : '-',
      c ? us(c.osdCpuSecPerIo) : '-',
      q ? f2(q.osdCpu) : '-',
      targets ? targets.map(targetText).join(', ') : '-',
      verdict(r),
    ];
  });
  return table(hdr, out, md, 1, [10, 11]);
}

/** Every figure of every run, one line per system and workload. */
function detailTable(rows: Row[], md: boolean): string {
  const hdr = ['workload', 'system', 'IOPS', 'MB/s', 'lat mean us', 'lat p99 us', 'OSD CPU %', 'per OSD %', 'OSD CPU us/IO', 'OSD CPU s/GiB', 'gw CPU %', 'gw CPU us/IO', 'mon CPU %', 'client CPU %', 'other CPU %'];
  const out: string[][] = [];
  for (const r of rows) {
    for (const x of [r.tessera, r.ceph]) {
      if (!x) continue;
      if (x.error) {
        out.push([r.workload.name, x.system, 'ERROR', x.error.slice(0, 80), '', '', '', '', '', '', '', '', '', '', '']);
        continue;
      }
      out.push([
        r.workload.name,
        x.system,
        f0(x.iops),
        f1(x.mbps),
        f0(x.latMeanUs),
        f0(x.latP99Us),
        f0(x.osdCpuPct),
        x.perOsdCpuPct ? x.perOsdCpuPct.map(f0).join('/') : '-',
        us(x.osdCpuSecPerIo),
        f2(x.osdCpuSecPerGiB),
        f0(x.gatewayCpuPct),
        us(x.gatewayCpuSecPerIo),
        f0(x.monCpuPct),
        f0(x.clientCpuPct),
        f0(x.otherCpuPct),
      ]);
    }
  }
  return table(hdr, out, md, 2);
}

// ---------------------------------------------------------------- options

interface Options {
  md: boolean;
  record: boolean;
  dryRun: boolean;
  jsonPath?: string;
  runtime: number;
  ramp: number;
  sizeBytes: number;
  deviceSize: string;
  workloads: Workload[];
  systems: Set<System>;
  /** nothing to do here (npm run bench passes nbd.js's arguments and BENCH_SYSTEMS on): the reason */
  skip?: string;
  parentDir: string;
  uring: string;
  quietMaxSec: number;
  quietBusyPct: number;
  keep: boolean;
  cephAfter: 'keep' | 'stop' | 'teardown';
  extraArgs: string[];
}

function usage(): never {
  return printHeaderAndExit(import.meta.url);
}

function parseOptions(argv: string[]): Options {
  const after = process.env.BENCH_CEPH_AFTER ?? 'stop';
  if (after !== 'keep' && after !== 'stop' && after !== 'teardown') throw new Error('BENCH_CEPH_AFTER must be keep, stop or teardown');
  const o: Options = {
    md: false,
    record: false,
    dryRun: false,
    runtime: Number(process.env.BENCH_RUNTIME ?? 15),
    // 10 s, not bench/nbd.ts's 2 s: a freshly started Node daemon runs its write path
    // interpreted or baseline-compiled for several seconds (TurboFan compiles on the
    // same two cores), and measured cold, 4 KiB QD1 writes showed half the IOPS of a
    // warm run. Both systems get the same ramp; fio does not count IO in it.
    ramp: Number(process.env.BENCH_RAMP ?? CLUSTER_RAMP_SEC_DEFAULT),
    sizeBytes: parseSize(process.env.BENCH_SIZE ?? '2G'),
    deviceSize: process.env.BENCH_DEVICE_SIZE ?? '16G',
    workloads: [...WORKLOADS],
    systems: new Set(),
    parentDir: process.env.BENCH_DIR ?? '/var/tmp',
    uring: process.env.BENCH_URING ?? '0',
    quietMaxSec: Number(process.env.BENCH_QUIET_MAX ?? 30),
    quietBusyPct: Number(process.env.BENCH_QUIET_BUSY ?? 40),
    keep: process.env.BENCH_KEEP === '1',
    cephAfter: after,
    extraArgs: (process.env.BENCH_TESSERA_ARGS ?? '').split(' ').filter((a) => a !== ''),
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--md') o.md = true;
    else if (a === '--record') o.record = true;
    else if (a === '--dry-run') o.dryRun = true;
    else if (a === '--json') {
      const p = argv[++i];
      if (!p) throw new Error('--json needs a file name');
      o.jsonPath = path.resolve(p);
    } else if (a === '--profile') {
      i++;
      o.skip = '--profile is bench/nbd.js\'s (Tessera single-node profiles)';
    } else if (a === '--help' || a === '-h') usage();
    else throw new Error(`unknown argument ${a} (try --help)`);
  }
  for (const s of (process.env.BENCH_SYSTEMS ?? SYSTEMS.join(',')).split(',').map((x) => x.trim()).filter(Boolean)) {
    if (s === 'qemu-nbd') continue; // bench/nbd.js's peer, same variable
    if (!(SYSTEMS as readonly string[]).includes(s)) throw new Error(`BENCH_SYSTEMS: unknown system ${s} (known: ${SYSTEMS.join(', ')})`);
    o.systems.add(s as System);
  }
  if (!o.systems.size) o.skip ??= `BENCH_SYSTEMS=${process.env.BENCH_SYSTEMS ?? ''} names neither tessera nor ceph`;
  o.workloads = workloadsFromEnv(WORKLOADS);
  if (!(o.runtime > 0) || !(o.ramp >= 0)) throw new Error('BENCH_RUNTIME must be > 0 and BENCH_RAMP >= 0');
  if (o.sizeBytes % (1 << 20) !== 0 || o.sizeBytes <= 0 || o.sizeBytes > VOLUME_BYTES) throw new Error('BENCH_SIZE must be a multiple of 1M and at most 4G (vol0 and the Ceph image size)');
  if (parseSize(o.deviceSize) < o.sizeBytes + GiB) throw new Error(`BENCH_DEVICE_SIZE ${o.deviceSize} is too small for BENCH_SIZE plus 1 GiB`);
  return o;
}

function requireTools(o: Options): void {
  requireCommands(['fio', 'flock', 'df', ...(o.systems.has('tessera') ? ['nbdinfo'] : [])]);
  if (o.systems.has('tessera') && !/\bnbd\b/.test(capture('fio', ['--enghelp']))) throw new Error('this fio has no nbd engine');
}

function machineFacts(o: Options, disk: string): Record<string, string> {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? 'unknown';
  const git = capture('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']);
  const dirty = capture('git', ['-C', REPO, 'status', '--porcelain', '--', 'src']) ? ' + uncommitted changes in src/' : '';
  const facts: Record<string, string> = {
    date: new Date().toISOString().slice(0, 10),
    nproc: capture('nproc', []),
    cpu: model,
    memory: `${(os.totalmem() / GiB).toFixed(1)} GiB`,
    kernel: capture('uname', ['-r']),
    disk: `${o.parentDir} on ${disk}`,
    node: process.version,
    fio: capture('fio', ['--version']),
  };
  if (o.systems.has('tessera')) {
    facts.libnbd = capture('nbdinfo', ['--version']).split('\n')[0] ?? '';
    facts.tessera = `git ${git}${dirty}`;
  }
  if (o.systems.has('ceph')) facts.ceph = cephVersion() || '(not installed yet)';
  return facts;
}

/** `ceph --version` without the commit hash; empty when Ceph is not installed. */
function cephVersion(): string {
  return capture('ceph', ['--version']).replace(/ \([0-9a-f]{40}\)/, '');
}

// ---------------------------------------------------------------- the Tessera cluster

interface ProcRef {
  pid: number;
  /** /proc/PID/stat starttime: tells this process from a later one with the same PID */
  start: string;
  name: string;
}

interface Cluster {
  up: Server;
  uri: string;
  osds: ProcRef[];
  mon: ProcRef;
}

/** Processes the benchmark must stop (the `up` process's children), so that exit handlers can reach them. */
const clusterChildren: ProcRef[] = [];

function startTime(pid: number): string | undefined {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function alive(p: ProcRef): boolean {
  return startTime(p.pid) === p.start;
}

function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}


function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A monitor port P with P+21..P+OSDS free as well (`tessera up --osds` puts OSD i on P+20+i). */
async function freeMonPort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const p = await freePort();
    if (p + 20 + OSDS > 65535) continue;
    let ok = true;
    for (let i = 1; i <= OSDS && ok; i++) ok = await portFree(p + 20 + i);
    if (ok) return p;
  }
  throw new Error('no free monitor port with free OSD ports after it');
}

function upArgs(o: Options, dataDir: string, monPort: number, nbdPort: number): string[] {
  return [
    ...DAEMON_NODE_ARGS, // as `npx tessera up` runs it (the bin's shebang): see src/main/node-flags.ts
    TESSERA_BIN,
    'up',
    '--osds',
    String(OSDS),
    '--mon-port',
    String(monPort),
    '--nbd-port',
    String(nbdPort),
    '--data-dir',
    dataDir,
    '--device-size',
    o.deviceSize,
    '--volume-size',
    `${VOLUME_BYTES / GiB}G`,
    ...o.extraArgs,
  ];
}

async function startCluster(o: Options, dataDir: string, logDir: string): Promise<Cluster> {
  const monPort = await freeMonPort();
  const nbdPort = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env, UV_USE_IO_URING: o.uring };
  const up = await startServer('tessera-up', process.execPath, upArgs(o, dataDir, monPort, nbdPort), path.join(logDir, 'tessera-up.log'), {
    env,
    readyLine: 'tessera: ready',
    readyTimeoutMs: 180_000,
  });
  // Register the children before anything else can fail, so that stopCluster reaches them.
  const osds: ProcRef[] = [];
  let mon: ProcRef | undefined;
  for (const pid of childPids(up.pid)) {
    const cmd = cmdline(pid);
    const start = startTime(pid);
    if (start === undefined) continue;
    const m = / osd .*--osd-data-dir (\S+)/.exec(cmd);
    if (m) {
      const ref = { pid, start, name: path.basename(m[1]) };
      osds.push(ref);
      clusterChildren.push(ref);
    } else if (/ mon /.test(cmd)) {
      mon = { pid, start, name: 'mon' };
      clusterChildren.push(mon);
    }
  }
  osds.sort((a, b) => a.name.localeCompare(b.name));
  const uri = `nbd://127.0.0.1:${nbdPort}/vol0`;
  const cluster = { up, uri, osds, mon: mon ?? { pid: -1, start: '', name: 'mon' } };
  if (osds.length !== OSDS || !mon) {
    await stopCluster(cluster);
    throw new Error(`expected ${OSDS} OSD children and a monitor of pid ${up.pid}, found OSDs [${osds.map((x) => x.pid).join(' ')}], mon ${mon?.pid ?? 'none'}`);
  }
  log(`cluster: up pid=${up.pid} (gateway), mon pid=${mon.pid}, ${osds.map((x) => `${x.name} pid=${x.pid}`).join(', ')}; ${uri}`);
  await waitNbd(uri, 60_000);
  return cluster;
}

const clusterStops = new WeakMap<Cluster, Promise<void>>();

/** SIGTERM the `up` process (it stops its children), then make sure no child survived: SIGTERM / SIGKILL by PID. Idempotent. */
function stopCluster(c: Cluster): Promise<void> {
  let p = clusterStops.get(c);
  if (!p) {
    p = doStopCluster(c);
    clusterStops.set(c, p);
  }
  return p;
}

async function doStopCluster(c: Cluster): Promise<void> {
  await stopServer(c.up);
  const kids = [...c.osds, c.mon].filter((p) => p.pid > 0);
  const until = Date.now() + 15_000;
  while (kids.some(alive) && Date.now() < until) await sleep(100);
  let survivors = kids.filter(alive);
  if (survivors.length) {
    log(`WARN: ${survivors.map((p) => `${p.name} pid=${p.pid}`).join(', ')} survived the up process: SIGTERM`);
    for (const p of survivors) signal(p, 'SIGTERM');
    const until2 = Date.now() + 15_000;
    while (survivors.some(alive) && Date.now() < until2) await sleep(100);
    survivors = survivors.filter(alive);
    for (const p of survivors) {
      log(`WARN: ${p.name} pid=${p.pid} ignored SIGTERM: SIGKILL`);
      signal(p, 'SIGKILL');
    }
  }
  for (const p of kids) {
    const i = clusterChildren.indexOf(p);
    if (i >= 0 && !alive(p)) clusterChildren.splice(i, 1);
  }
  const left = kids.filter(alive);
  if (left.length) log(`ERROR: still running after SIGKILL: ${left.map((p) => `${p.name} pid=${p.pid}`).join(', ')}`);
  else log(`cluster stopped: no OSD or monitor process of it is left (${kids.map((p) => p.pid).join(' ')})`);
}

function signal(p: ProcRef, sig: NodeJS.Signals): void {
  if (!alive(p)) return;
  try {
    process.kill(p.pid, sig);
  } catch {
    /* gone */
  }
}

function fillArgs(uri: string, sizeBytes: number): string[] {
  return ['--name=prefill', '--ioengine=nbd', `--uri=${uri}`, `--size=${sizeBytes}`, '--rw=write', '--bs=1M', '--iodepth=8'];
}

function tesseraFioArgs(o: Options, w: Workload, uri: string): string[] {
  const [name, ...rest] = fioWorkloadArgs(w, { runtimeSec: o.runtime, rampSec: o.ramp, sizeBytes: o.sizeBytes });
  return [name, '--ioengine=nbd', `--uri=${uri}`, ...rest];
}

async function fillCluster(o: Options, c: Cluster, resDir: string): Promise<void> {
  log(`filling ${c.uri} first ${(o.sizeBytes / GiB).toFixed(2)} GiB (fio nbd sequential 1 MiB write, QD8)`);
  const t0 = performance.now();
  const run = await runFio({ args: fillArgs(c.uri, o.sizeBytes), outPath: path.join(resDir, 'prefill-tessera.json'), timeoutMs: 3_600_000 });
  if (run.error || !run.json) throw new Error(`filling tessera: ${run.error}`);
  const w = run.json.jobs[0].write;
  log(`tessera prefill: ${(w.bw_bytes / 1e6).toFixed(0)} MB/s (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  // The OSDs write their devices through the page cache: the fill leaves GiBs dirty,
  // and their writeback (kernel threads, the disk) would land in the first jobs'
  // measurements (seen: "other" CPU 72 % and 6 ms fsyncs in rw4k-qd1). Ceph's
  // BlueStore writes its data directly and has no such backlog. Flush it first.
  const t1 = performance.now();
  spawnSync('sync', [], { stdio: 'ignore' });
  log(`flushed the page cache's dirty data after the fill (${((performance.now() - t1) / 1000).toFixed(0)} s)`);
}


function parseBs(bs: string): number {
  const m = /^(\d+)([kKmM]?)$/.exec(bs);
  if (!m) throw new Error(`bad bs ${bs}`);
  return Number(m[1]) * (m[2] === '' ? 1 : /k/i.test(m[2]) ? 1024 : 2 ** 20);
}

async function runTesseraWorkload(o: Options, w: Workload, c: Cluster, resDir: string): Promise<SideResult> {
  const empty: SideResult = {
    system: 'tessera',
    workload: w.name,
    iops: NaN,
    mbps: NaN,
    latMeanUs: NaN,
    latP99Us: NaN,
    ios: NaN,
    windowSec: NaN,
    osdCpuPct: NaN,
    osdCpuSecPerIo: NaN,
    osdCpuSecPerGiB: NaN,
    gatewayCpuPct: NaN,
    gatewayCpuSecPerIo: NaN,
    monCpuPct: NaN,
    clientCpuPct: NaN,
    otherCpuPct: NaN,
  };
  const clusterPids = [c.up.pid, c.mon.pid, ...c.osds.map((x) => x.pid)];
  if (o.quietMaxSec > 0) {
    const waited = await waitQuiet(o.quietBusyPct, o.quietMaxSec, () => clusterPids);
    if (waited > 1.5) log(`waited ${waited.toFixed(0)} s for other load to drop below ${o.quietBusyPct}% of a CPU`);
  }
  log(`${w.name} on tessera (${o.runtime} s + ${o.ramp} s ramp)`);
  const run = await runFio({
    args: tesseraFioArgs(o, w, c.uri),
    outPath: path.join(resDir, `tessera-${w.name}.json`),
    serverPid: c.up.pid,
    perThread: true,
    groups: { osd: c.osds.map((x) => x.pid), gateway: [c.up.pid], mon: [c.mon.pid] },
    rampSec: o.ramp,
    timeoutMs: (o.runtime + o.ramp + 180) * 1000,
  });
  if (c.up.hasExited()) run.error = `the up process exited during the run (see ${c.up.logPath})`;
  const dead = c.osds.filter((x) => !alive(x));
  if (dead.length && !run.error) run.error = `${dead.map((x) => x.name).join(', ')} exited during the run (see ${c.up.logPath})`;
  if (run.error || !run.json || !run.groupCpuSec) {
    const r = { ...empty, error: run.error ?? 'fio failed' };
    log(`  ERROR: ${r.error}`);
    return r;
  }
  const job = run.json.jobs[0];
  const d = job.read.io_bytes > 0 ? job.read : job.write;
  if (!(d.io_bytes > 0)) return { ...empty, error: 'no IO completed' };
  const ios = (d as { total_ios?: number }).total_ios ?? d.io_bytes / parseBs(w.bs);
  const clat = d.clat_ns ?? d.lat_ns;
  const p99 = clat.percentile?.['99.000000'] ?? d.lat_ns.percentile?.['99.000000'] ?? NaN;
  const win = run.windowSec;
  const runtimeSec = d.runtime / 1000;
  const sum = (m: Map<number, number> | undefined): number => [...(m ?? new Map<number, number>()).values()].reduce((a, b) => a + b, 0);
  const osdSec = sum(run.groupCpuSec.osd);
  const gwSec = sum(run.groupCpuSec.gateway);
  const monSec = sum(run.groupCpuSec.mon);
  // CPU as a rate over the sampled window, applied to fio's measured runtime
  // (the window and fio's clock differ by fio's start-up and tear-down).
  const perIo = (sec: number): number => (win > 0 ? ((sec / win) * runtimeSec) / ios : NaN);
  const pct = (sec: number): number => (win > 0 ? (100 * sec) / win : NaN);
  const fioPct = job.usr_cpu + job.sys_cpu;
  const r: SideResult = {
    ...empty,
    iops: d.iops,
    mbps: d.bw_bytes / 1e6,
    latMeanUs: clat.mean / 1000,
    latP99Us: p99 / 1000,
    ios,
    windowSec: win,
    osdCpuPct: pct(osdSec),
    osdCpuSecPerIo: perIo(osdSec),
    osdCpuSecPerGiB: win > 0 ? ((osdSec / win) * runtimeSec) / (d.io_bytes / GiB) : NaN,
    perOsdCpuPct: c.osds.map((x) => pct(run.groupCpuSec!.osd.get(x.pid) ?? NaN)),
    gatewayCpuPct: pct(gwSec),
    gatewayCpuSecPerIo: perIo(gwSec),
    monCpuPct: pct(monSec),
    clientCpuPct: fioPct,
    otherCpuPct: win > 0 ? Math.max(0, pct(run.machineCpuSec) - pct(osdSec + gwSec + monSec) - fioPct) : NaN,
  };
  log(
    `  ${r.iops.toFixed(0)} IOPS, ${r.mbps.toFixed(1)} MB/s, clat mean ${r.latMeanUs.toFixed(0)} us p99 ${r.latP99Us.toFixed(0)} us, ` +
      `OSD CPU ${r.osdCpuPct.toFixed(0)}% (${r.perOsdCpuPct!.map(f0).join('/')}) = ${us(r.osdCpuSecPerIo)} us/IO, ` +
      `gateway ${r.gatewayCpuPct.toFixed(0)}% = ${us(r.gatewayCpuSecPerIo)} us/IO, mon ${r.monCpuPct.toFixed(0)}%, fio ${fioPct.toFixed(0)}%, other ${r.otherCpuPct.toFixed(0)}%`,
  );
  if (run.threads?.length) {
    log(`  gateway threads: ${run.threads.slice(0, 6).map(([n, s]) => `${n} ${((100 * s) / win).toFixed(0)}%`).join(', ')}`);
  }
  return r;
}

async function runTessera(o: Options, rows: Row[], work: string, resDir: string, state: { cluster?: Cluster; interrupted: boolean }): Promise<void> {
  const cluster = await startCluster(o, path.join(work, 'tessera'), work);
  state.cluster = cluster;
  try {
    await fillCluster(o, cluster, resDir);
    for (const row of rows) {
      if (state.interrupted) break;
      row.tessera = await runTesseraWorkload(o, row.workload, cluster, resDir);
      if (cluster.up.hasExited()) {
        log('the up process is gone: skipping the remaining Tessera workloads');
        break;
      }
    }
  } finally {
    await stopCluster(cluster);
    state.cluster = undefined;
  }
}

// ---------------------------------------------------------------- record

const BEGIN = (tag: string): string => `<!-- bench:cluster ${tag} begin -->`;
const END = (tag: string): string => `<!-- bench:cluster ${tag} end -->`;

/** Insert or replace the section `tag` under DOC_HEADING (created at the end of the file if missing). */
function recordSection(docPath: string, tag: string, body: string): void {
  let doc = fs.existsSync(docPath) ? fs.readFileSync(docPath, 'utf8') : '# Benchmarks\n';
  const section = `${BEGIN(tag)}\n${body.trim()}\n${END(tag)}`;
  const b = doc.indexOf(BEGIN(tag));
  const e = doc.indexOf(END(tag));
  if (b >= 0 && e > b) {
    doc = doc.slice(0, b) + section + doc.slice(e + END(tag).length);
  } else {
    let h = doc.indexOf(`\n${DOC_HEADING}\n`);
    if (h < 0) {
      doc = `${doc.trimEnd()}\n\n${DOC_HEADING}\n\nMeasured by \`node dist/bench/cluster.js\` (part of \`npm run bench\`): see the header of bench/cluster.ts.\n`;
      h = doc.indexOf(`\n${DOC_HEADING}\n`);
    }
    // end of that heading's part: the next heading of the same or a higher level, or the end of the file
    const after = h + DOC_HEADING.length + 2;
    const next = doc.slice(after).search(/^#{1,2} /m);
    const at = next < 0 ? doc.length : after + next;
    doc = `${doc.slice(0, at).trimEnd()}\n\n${section}\n${next < 0 ? '' : '\n'}${doc.slice(at)}`;
  }
  fs.writeFileSync(docPath, doc.endsWith('\n') ? doc : doc + '\n');
}

// ---------------------------------------------------------------- main

function dryRun(o: Options): Promise<void> {
  const out = (s: string): void => void process.stdout.write(s + '\n');
  out(`# workloads: ${o.workloads.map((w) => w.name).join(', ')}; runtime ${o.runtime} s, ramp ${o.ramp} s, region ${o.sizeBytes} bytes`);
  if (o.systems.has('tessera')) {
    const d = path.join(o.parentDir, 'tessera-bench-XXXXXX', 'tessera');
    out('# tessera (each fio under the bench lock; CPU of the OSD children, the up process and the monitor sampled from /proc)');
    out(`UV_USE_IO_URING=${o.uring} ${process.execPath} ${upArgs(o, d, 0, 0).join(' ').replace('--mon-port 0', '--mon-port MONPORT').replace('--nbd-port 0', '--nbd-port NBDPORT')}   # until "tessera: ready"`);
    const uri = 'nbd://127.0.0.1:NBDPORT/vol0';
    out(`flock ${process.env.BENCH_LOCK ?? '/tmp/bench.lock'} fio ${fillArgs(uri, o.sizeBytes).join(' ')}`);
    for (const w of o.workloads) out(`flock ${process.env.BENCH_LOCK ?? '/tmp/bench.lock'} fio ${tesseraFioArgs(o, w, uri).join(' ')} --output-format=json --output=<results>/tessera-${w.name}.json`);
    out('kill -TERM <up pid>   # it stops the monitor and the OSDs; survivors are stopped by PID');
  }
  if (o.systems.has('ceph')) {
    out('# ceph (bench/ceph.ts runCephBaseline)');
    return runCephBaseline({ ...cephOptions(o, '<results>/ceph'), dryRun: true, log: out }).then(() => undefined);
  }
  return Promise.resolve();
}

function cephOptions(o: Options, resultsDir: string): Parameters<typeof runCephBaseline>[0] {
  const names = o.workloads.map((w) => w.name.replace(/[^a-z0-9-]/gi, ''));
  return {
    runtimeSec: o.runtime,
    rampSec: o.ramp,
    sizeBytes: o.sizeBytes,
    only: new RegExp(`^(?:${names.join('|')})$`),
    log,
    after: o.cephAfter,
    resultsDir,
    quietMaxSec: o.quietMaxSec,
    quietBusyPct: o.quietBusyPct,
  };
}

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  if (o.skip) {
    log(`cluster benchmark skipped: ${o.skip}`);
    return 0;
  }
  if (o.dryRun) {
    await dryRun(o);
    return 0;
  }
  requireTools(o);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const resDir = path.join('/var/tmp', 'tessera-bench-results', `cluster-${stamp}`);
  fs.mkdirSync(resDir, { recursive: true });
  // each OSD holds a full replica of the region, plus room for its log and metadata
  const disk = checkBenchDisk(o.parentDir, o.systems.has('tessera') ? OSDS * (o.sizeBytes + GiB) : 0);
  const facts = machineFacts(o, disk);
  const work = fs.mkdtempSync(path.join(o.parentDir, 'tessera-bench-'));
  log(`cluster benchmark: ${[...o.systems].join(' then ')}; scratch dir ${work} on ${disk}; results in ${resDir}`);

  const state: { cluster?: Cluster; interrupted: boolean; phase: 'tessera' | 'ceph' | 'done' } = { interrupted: false, phase: 'tessera' };
  let cephKiller: NodeJS.Timeout | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (state.interrupted) return;
    state.interrupted = true;
    log(`${sig}: stopping fio and the cluster under test`);
    killClients('SIGTERM');
    if (state.phase === 'ceph') {
      // runCephBaseline has no abort: keep killing its fio runs until it returns; its finally stops the daemons.
      killCephClients('SIGTERM');
      cephKiller = setInterval(() => killCephClients('SIGTERM'), 200);
      return;
    }
    const c = state.cluster;
    void (c ? stopCluster(c) : Promise.resolve())
      .then(() => stopAll())
      .finally(() => {
        if (!o.keep) fs.rmSync(work, { recursive: true, force: true });
        process.exit(130);
      });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', () => {
    killAllSync();
    for (const p of clusterChildren) signal(p, 'SIGKILL');
  });

  const rows: Row[] = o.workloads.map((workload) => ({ workload }));
  let cephError: string | undefined;
  try {
    if (o.systems.has('tessera')) {
      const s0 = stealSample();
      await runTessera(o, rows, work, resDir, state);
      facts['steal during tessera'] = stealPct(s0, stealSample());
    }
    if (o.systems.has('ceph') && !state.interrupted) {
      state.phase = 'ceph';
      const s0 = stealSample();
      try {
        const res = await runCephBaseline(cephOptions(o, path.join(resDir, 'ceph')));
        facts['steal during ceph'] = stealPct(s0, stealSample());
        // ceph.sh installs the packages on first use: the version is known only now.
        facts.ceph = cephVersion() || facts.ceph;
        for (const c of res) {
          const row = rows.find((r) => r.workload.name === c.workload);
          if (row) row.ceph = fromCeph(c);
        }
      } catch (e) {
        cephError = (e as Error).message;
        log(`ceph baseline failed: ${cephError}`);
        for (const row of rows) row.ceph ??= { ...fromCeph({ workload: row.workload.name } as CephResult), error: `ceph: ${cephError}` };
      } finally {
        clearInterval(cephKiller);
      }
    }
  } finally {
    state.phase = 'done';
    if (state.cluster) await stopCluster(state.cluster);
    await stopAll();
    if (!o.keep) fs.rmSync(work, { recursive: true, force: true });
    else log(`kept scratch dir ${work}`);
  }
  if (state.interrupted) return 130;

  const header =
    `Tessera \`up --osds 3\` (pool size 3, vol0 over NBD, fio nbd engine) vs Ceph RBD pool size 3 (3 BlueStore OSDs, fio rbd engine), ` +
    `same host; ${o.runtime} s per job after ${o.ramp} s ramp, region ${(o.sizeBytes / GiB).toFixed(2)} GiB, numjobs=1; ` +
    `lat = completion latency (clat); OSD CPU = utime+stime of all OSD processes per IO; gw = Tessera's gateway (the up process); ` +
    `client = fio (for Ceph incl. librbd)${o.systems.size === 2 ? '; all Tessera jobs ran first, then all Ceph jobs' : ''}`;
  const text = [o.md ? `_${header}_` : header, '', comparisonTable(rows, o.md), '', detailTable(rows, o.md)].join('\n');
  process.stdout.write(text + '\n');

  if (o.jsonPath) {
    const json = {
      facts,
      settings: { runtimeSec: o.runtime, rampSec: o.ramp, sizeBytes: o.sizeBytes, deviceSize: o.deviceSize, uring: o.uring, systems: [...o.systems], tesseraArgs: o.extraArgs },
      rows: rows.map((r) => ({ workload: r.workload.name, tessera: r.tessera, ceph: r.ceph, ratios: ratios(r), targets: TARGETS[r.workload.name], verdict: verdict(r) })),
    };
    fs.writeFileSync(o.jsonPath, JSON.stringify(json, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n');
    log(`wrote ${o.jsonPath}`);
  }
  if (o.record) {
    const subset = o.workloads.length < WORKLOADS.length ? ` (subset: ${o.workloads.map((w) => w.name).join(', ')})` : '';
    const sides = o.systems.size === 2 ? 'Tessera 3 OSDs vs Ceph size 3' : `${[...o.systems][0]} only`;
    const body = [
      `### ${facts.date} — ${sides}${subset}`,
      '',
      ...Object.entries(facts).map(([k, v]) => `- ${k}: ${v}`),
      `- settings: runtime ${o.runtime} s, ramp ${o.ramp} s, region ${(o.sizeBytes / GiB).toFixed(2)} GiB, OSD device ${o.deviceSize}, UV_USE_IO_URING=${o.uring}` +
        (o.extraArgs.length ? `, tessera up ${o.extraArgs.join(' ')}` : ''),
      `- command: \`node dist/bench/cluster.js --record\`${process.env.BENCH_ONLY ? ` with BENCH_ONLY=${process.env.BENCH_ONLY}` : ''}${process.env.BENCH_SYSTEMS ? ` BENCH_SYSTEMS=${process.env.BENCH_SYSTEMS}` : ''}`,
      '',
      `_${header}_`,
      '',
      comparisonTable(rows, true),
      '',
      detailTable(rows, true),
    ].join('\n');
    const tag = `${facts.date}${subset ? ' subset' : ''}${o.systems.size === 2 ? '' : ` ${[...o.systems][0]}`}`;
    recordSection(DOC, tag, body);
    log(`recorded the ${tag} section in ${DOC}`);
  }
  const missed = rows.filter((r) => verdict(r) === 'MISS').map((r) => r.workload.name);
  if (missed.length) log(`targets missed: ${missed.join(', ')}`);
  const failed = rows.some((r) => r.tessera?.error || r.ceph?.error);
  return failed ? 1 : 0;
}

runBenchMain(main);
