// `npm run bench` (iSCSI, issue 5 §7): Tessera's iSCSI target against tgtd
// (Debian tgt, rdwr backing store) exporting a file on the same disk, side by
// side in one run, with fio's libiscsi engine as the client over loopback.
//
//   node dist/bench/iscsi.js                  # text tables on stdout, progress on stderr
//   node dist/bench/iscsi.js --md             # the tables as markdown
//   node dist/bench/iscsi.js --profile DIR    # Tessera only, under node --cpu-prof: one
//                                             # DIR/iscsi-<workload>.cpuprofile per workload + summary
//
// Environment: BENCH_RUNTIME [10] s per job, BENCH_RAMP [2] s, BENCH_ONLY
// (e.g. rr4k-qd32,rw4k-qd32), BENCH_ROUNDS [3] runs per system and workload
// (alternating which system goes first; the median is reported),
// BENCH_ISCSI_SIZE [1G] size of both LUNs (written once, then benchmarked),
// BENCH_DIR [/var/tmp] parent of the scratch dir (must not be tmpfs),
// BENCH_SYSTEMS [tgtd,tessera], BENCH_FIO_ISCSI
// [/opt/fio-libiscsi/bin/fio] fio built with the libiscsi engine, BENCH_URING [0]
// (UV_USE_IO_URING for the daemon), BENCH_QUIET_MAX [3] s to wait before each
// job for the machine to be nearly idle (below BENCH_QUIET_BUSY [40] % of one
// CPU; other agents), BENCH_LOCK [/tmp/bench.lock], BENCH_KEEP=1 keeps the
// scratch dir. Raw fio JSON is kept in /var/tmp/tessera-bench-results/iscsi-<time>/.
//
// Method (see docs/benchmarks.md): tgtd runs in the foreground on a free portal
// port with its own control port (-C; tgtadm -C talks to that instance only, so
// other tgtd instances on the machine are untouched) and exports a sparse file
// of BENCH_ISCSI_SIZE as LUN 1 (its LUN 0 is the controller). Tessera (`tessera
// up`, free NBD and iSCSI ports) starts on a fresh data dir with vol0 of the
// same size, LUN 0 of its default target. Both LUNs are then written once end
// to end over iSCSI (fio libiscsi, sequential 1 MiB, QD8), so reads hit data and
// writes overwrite allocated blocks on both; both back onto the page cache (tgtd
// rdwr = pread/pwrite; Tessera --direct-io off). Never both servers at once:
// every fio run holds the machine-wide bench lock. Each workload runs
// BENCH_ROUNDS times per system, alternating which one goes first (tgtd,
// Tessera, Tessera, tgtd, ...), and the tables report each
// system's median-IOPS run: single runs of the same server vary by up to ~10 %
// on this shared VM, as much as the gaps being measured. The ratio table also
// lists every round's own IOPS ratio. Before every run the page cache's dirty
// data is flushed (sync, not timed): both servers write through the page cache,
// and a run that starts with earlier runs' writeback pending (often the other
// server's) pays for it in dirty-page throttling and disk time, a likely cause
// of sw1m-qd8 swinging between 0.99x and 2.06x in session 11. Server CPU is
// utime+stime of the server PID from /proc/PID/stat (all threads), from the end
// of the ramp to fio's exit, reported per IO.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatSummary, loadProfile, summarize } from './cpuprofile.js';
import {
  capture,
  freePort,
  killAllSync,
  killClients,
  log,
  printHeaderAndExit,
  runBenchMain,
  runFio,
  sleep,
  startServer,
  stopAll,
  stopServer,
  waitQuiet,
  type FioRun,
  type Server,
  workloadsFromEnv,
  checkBenchDisk,
  requireCommands,
  collectProfiles,
} from './harness.js';
import { WORKLOADS, type Workload } from './report.js';
import { parseSize } from '../src/stdx/size.js';
import { DAEMON_NODE_ARGS } from '../src/main/node-flags.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TESSERA_BIN = path.join(REPO, 'bin', 'tessera.js');
const PEER = 'tgtd';
const PEER_IQN = 'iqn.2026-11.io.tessera.bench:tgtd';
const TESSERA_IQN = 'iqn.2026-11.io.tessera:default';
const GiB = 2 ** 30;
/** Pass line for every workload: Tessera's IOPS and MB/s at least this many times tgtd's. */
const TARGET = 1.0;

interface Options {
  md: boolean;
  profileDir?: string;
  runtime: number;
  ramp: number;
  rounds: number;
  sizeBytes: number;
  workloads: Workload[];
  systems: Set<string>;
  parentDir: string;
  fio: string;
  uring: string;
  quietMaxSec: number;
  quietBusyPct: number;
  keep: boolean;
}

function usage(): never {
  return printHeaderAndExit(import.meta.url, 40);
}

function parseOptions(argv: string[]): Options {
  const o: Options = {
    md: false,
    runtime: Number(process.env.BENCH_RUNTIME ?? 10),
    rounds: Number(process.env.BENCH_ROUNDS ?? 3),
    ramp: Number(process.env.BENCH_RAMP ?? 2),
    sizeBytes: parseSize(process.env.BENCH_ISCSI_SIZE ?? '1G'),
    workloads: [...WORKLOADS],
    systems: new Set((process.env.BENCH_SYSTEMS ?? `${PEER},tessera`).split(',').map((s) => s.trim())),
    parentDir: process.env.BENCH_DIR ?? '/var/tmp',
    fio: process.env.BENCH_FIO_ISCSI ?? '/opt/fio-libiscsi/bin/fio',
    uring: process.env.BENCH_URING ?? '0',
    quietMaxSec: Number(process.env.BENCH_QUIET_MAX ?? 3),
    quietBusyPct: Number(process.env.BENCH_QUIET_BUSY ?? 40),
    keep: process.env.BENCH_KEEP === '1',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--md') o.md = true;
    else if (a === '--profile') o.profileDir = path.resolve(argv[++i] ?? usage());
    else if (a === '--help' || a === '-h') usage();
    else throw new Error(`unknown argument ${a} (try --help)`);
  }
  o.workloads = workloadsFromEnv(WORKLOADS);
  if (o.profileDir) o.systems = new Set(['tessera']);
  for (const s of o.systems) if (s !== PEER && s !== 'tessera') throw new Error(`BENCH_SYSTEMS: unknown system ${s}`);
  if (!(o.runtime > 0) || !(o.ramp >= 0)) throw new Error('BENCH_RUNTIME must be > 0 and BENCH_RAMP >= 0');
  if (!(Number.isInteger(o.rounds) && o.rounds >= 1 && o.rounds <= 9)) throw new Error('BENCH_ROUNDS must be an integer from 1 to 9');
  if (o.profileDir) o.rounds = 1;
  if (o.sizeBytes % (1 << 20) !== 0 || o.sizeBytes < 64 << 20 || o.sizeBytes > 4 * GiB) throw new Error('BENCH_ISCSI_SIZE must be a multiple of 1M between 64M and 4G');
  return o;
}

function requireTools(o: Options): void {
  requireCommands(['tgtd', 'tgtadm', 'iscsi-readcapacity16', 'flock', 'truncate']);
  if (!/\blibiscsi\b/.test(capture(o.fio, ['--enghelp']))) throw new Error(`${o.fio} has no libiscsi engine (scripts/build-fio-libiscsi.sh builds it)`);
  // harness.runFio runs `fio` from PATH: put the libiscsi build first.
  process.env.PATH = `${path.dirname(o.fio)}:${process.env.PATH ?? ''}`;
}

function machineFacts(o: Options, disk: string): Record<string, string> {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? 'unknown';
  const git = capture('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']);
  const dirty = capture('git', ['-C', REPO, 'status', '--porcelain', '--', 'src']) ? ' + uncommitted changes in src/' : '';
  return {
    date: new Date().toISOString().slice(0, 10),
    nproc: capture('nproc', []),
    cpu: model,
    memory: `${(os.totalmem() / GiB).toFixed(1)} GiB`,
    kernel: capture('uname', ['-r']),
    node: process.version,
    fio: `${capture(o.fio, ['--version'])} (libiscsi engine, ${o.fio})`,
    tgtd: capture('tgtd', ['-V']),
    libiscsi: capture('dpkg-query', ['-W', '-f=${Version}', 'libiscsi7']),
    disk,
    tessera: `git ${git}${dirty}`,
  };
}

/** fio's filename= for a libiscsi URL: ':' must be escaped (fio splits filenames on ':'). */
function fioFilename(url: string): string {
  return url.replace(/:/g, '\\:');
}

function fioArgs(o: Options, w: Workload, url: string): string[] {
  return [
    `--name=${w.name}`,
    '--ioengine=libiscsi',
    `--filename=${fioFilename(url)}`,
    `--rw=${w.rw}`,
    `--bs=${w.bs}`,
    `--iodepth=${w.qd}`,
    '--numjobs=1',
    `--size=${o.sizeBytes}`,
    '--time_based',
    `--runtime=${o.runtime}`,
    `--ramp_time=${o.ramp}`,
    '--norandommap',
    '--randrepeat=0',
    '--percentile_list=50:99:99.9',
  ];
}

interface Result {
  system: string;
  workload: string;
  error?: string;
  iops: number;
  /** decimal MB/s */
  mbps: number;
  /** completion latency (fio clat) */
  latMeanUs: number;
  latP99Us: number;
  serverCpuPct: number;
  /** server CPU microseconds per IO (utime+stime of all its threads / IOs) */
  cpuUsPerIo: number;
  fioCpuPct: number;
  otherCpuPct: number;
}

interface Row {
  workload: Workload;
  /** The median-IOPS run of each system (see medianRun). */
  peer?: Result;
  tessera?: Result;
  /** Every round, in order: round i ran both systems back to back. */
  peerRuns: Result[];
  tesseraRuns: Result[];
}

/** The run with the median IOPS (the lower middle one for an even count); a failed run wins, so errors show. */
function medianRun(runs: Result[]): Result | undefined {
  const failed = runs.find((r) => r.error !== undefined);
  if (failed !== undefined || runs.length === 0) return failed;
  const sorted = [...runs].sort((a, b) => a.iops - b.iops);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

/** Each round's own Tessera/tgtd IOPS ratio (rounds where both ran without error). */
function roundRatios(r: Row): number[] {
  const out: number[] = [];
  for (let i = 0; i < Math.min(r.peerRuns.length, r.tesseraRuns.length); i++) {
    const p = r.peerRuns[i];
    const t = r.tesseraRuns[i];
    if (!p.error && !t.error) out.push(t.iops / p.iops);
  }
  return out;
}

function toResult(system: string, workload: string, run: FioRun): Result {
  const empty: Result = { system, workload, iops: NaN, mbps: NaN, latMeanUs: NaN, latP99Us: NaN, serverCpuPct: NaN, cpuUsPerIo: NaN, fioCpuPct: NaN, otherCpuPct: NaN };
  if (!run.json) return { ...empty, error: run.error ?? 'fio failed' };
  const job = run.json.jobs[0];
  const d = job.read.io_bytes > 0 ? job.read : job.write;
  if (!(d.io_bytes > 0)) return { ...empty, error: 'no IO completed' };
  const clat = d.clat_ns ?? d.lat_ns;
  const p99 = clat.percentile?.['99.000000'] ?? d.lat_ns.percentile?.['99.000000'] ?? NaN;
  // CPU as a rate over the sampled window, divided by fio's IO rate.
  const cpuRate = run.windowSec > 0 ? run.serverCpuSec / run.windowSec : NaN;
  return {
    system,
    workload,
    iops: d.iops,
    mbps: d.bw_bytes / 1e6,
    latMeanUs: clat.mean / 1000,
    latP99Us: p99 / 1000,
    serverCpuPct: cpuRate * 100,
    cpuUsPerIo: (cpuRate / d.iops) * 1e6,
    fioCpuPct: job.usr_cpu + job.sys_cpu,
    otherCpuPct: run.windowSec > 0 ? Math.max(0, (100 * run.machineCpuSec) / run.windowSec - cpuRate * 100 - (job.usr_cpu + job.sys_cpu)) : NaN,
  };
}

// ---------------------------------------------------------------- tables

const f0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : '-');
const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '-');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '-');

function table(hdr: string[], rows: string[][], md: boolean, rightFrom = 2): string {
  if (md) {
    const align = hdr.map((_, i) => (i >= rightFrom ? '---:' : '---'));
    return [`| ${hdr.join(' | ')} |`, `|${align.join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
  }
  const w = hdr.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]): string => r.map((c, i) => (i >= rightFrom ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  ').trimEnd();
  return [line(hdr), ...rows.map(line)].join('\n');
}

function resultsTable(rows: Row[], md: boolean): string {
  const hdr = ['workload', 'system', 'IOPS', 'MB/s', 'lat mean us', 'lat p99 us', 'server CPU %', 'CPU us/IO', 'fio CPU %', 'other CPU %'];
  const out: string[][] = [];
  for (const r of rows) {
    for (const res of [r.peer, r.tessera]) {
      if (!res) continue;
      if (res.error) {
        out.push([r.workload.name, res.system, 'ERROR', res.error.slice(0, 60), '', '', '', '', '', '']);
        continue;
      }
      out.push([r.workload.name, res.system, f0(res.iops), f1(res.mbps), f1(res.latMeanUs), f1(res.latP99Us), f0(res.serverCpuPct), f1(res.cpuUsPerIo), f0(res.fioCpuPct), f0(res.otherCpuPct)]);
    }
  }
  return table(hdr, out, md);
}

function ratios(r: Row): { iops: number; mbps: number; lat: number; p99: number; cpu: number } | undefined {
  const p = r.peer;
  const t = r.tessera;
  if (!p || !t || p.error || t.error) return undefined;
  return { iops: t.iops / p.iops, mbps: t.mbps / p.mbps, lat: t.latMeanUs / p.latMeanUs, p99: t.latP99Us / p.latP99Us, cpu: t.cpuUsPerIo / p.cpuUsPerIo };
}

function verdict(r: Row): 'PASS' | 'MISS' | '-' {
  const q = ratios(r);
  if (!q) return '-';
  return q.iops >= TARGET && q.mbps >= TARGET ? 'PASS' : 'MISS';
}

function ratioTable(rows: Row[], md: boolean): string {
  const hdr = ['workload', `target (tessera/${PEER})`, 'IOPS x', 'MB/s x', 'lat mean x', 'lat p99 x', 'CPU/IO x', 'verdict', 'IOPS x per round'];
  const out = rows.map((r) => {
    const q = ratios(r);
    const rounds = roundRatios(r).map(f2).join(' ');
    return [r.workload.name, `IOPS, MB/s >= ${TARGET.toFixed(1)}x`, q ? f2(q.iops) : '-', q ? f2(q.mbps) : '-', q ? f2(q.lat) : '-', q ? f2(q.p99) : '-', q ? f2(q.cpu) : '-', verdict(r), rounds || '-'];
  });
  return table(hdr, out, md);
}

// ---------------------------------------------------------------- servers

interface Target {
  system: string;
  server: Server;
  /** iscsi://host:port/iqn/lun (unescaped) */
  url: string;
  /** tgtd only: its control port (tgtadm -C). */
  controlPort?: number;
}

/** Until the LUN answers READ CAPACITY(16); returns its size in bytes. */
async function waitLun(url: string, server: Server, timeoutMs = 30_000): Promise<number> {
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    if (server.hasExited()) throw new Error(`${server.name} exited (see ${server.logPath})`);
    const r = spawnSync('iscsi-readcapacity16', [url], { encoding: 'utf8', timeout: 10_000 });
    const m = /Total size:\s*(\d+)/.exec(`${r.stdout}`);
    if (r.status === 0 && m) return Number(m[1]);
    last = `${r.stdout}${r.stderr}`.trim().split('\n').slice(-1)[0] ?? '';
    await sleep(200);
  }
  throw new Error(`iSCSI LUN ${url} did not answer within ${timeoutMs} ms (${last})`);
}

function tgtadm(controlPort: number, args: string[]): string {
  const r = spawnSync('tgtadm', ['-C', String(controlPort), '--lld', 'iscsi', ...args], { encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) throw new Error(`tgtadm ${args.join(' ')} failed (${r.status}): ${`${r.stderr}${r.stdout}`.trim()}`);
  return `${r.stdout}`;
}

/** tgtd's control socket files for a control port (left behind when it exits). */
function tgtdSocketFiles(controlPort: number): string[] {
  return ['/run/tgtd', '/var/run/tgtd'].flatMap((d) => [`${d}/socket.${controlPort}`, `${d}/socket.${controlPort}.lock`]);
}

/**
 * A control port no other tgtd on this machine uses: 0 is the default (the
 * system's tgtd, peers.sh); tgtd accepts 0..32767. Derived from the portal
 * port, skipping any whose socket files exist.
 */
function freeControlPort(portalPort: number): number {
  const base = 1000 + (portalPort % 30_000);
  for (let i = 0; i < 1000; i++) {
    const c = 1000 + ((base - 1000 + i) % 31_000);
    if (!tgtdSocketFiles(c).some((f) => fs.existsSync(f))) return c;
  }
  throw new Error('no free tgtd control port');
}

async function startTgtd(img: string, logDir: string): Promise<Target> {
  const port = await freePort();
  const controlPort = freeControlPort(port);
  const server = await startServer(PEER, 'tgtd', ['-f', '-C', String(controlPort), '--iscsi', `portal=127.0.0.1:${port}`], path.join(logDir, 'tgtd.log'));
  const t: Target = { system: PEER, server, url: `iscsi://127.0.0.1:${port}/${PEER_IQN}/1`, controlPort };
  // tgtd creates its control socket shortly after it starts
  const until = Date.now() + 15_000;
  for (;;) {
    if (server.hasExited()) throw new Error(`tgtd exited (see ${server.logPath})`);
    const r = spawnSync('tgtadm', ['-C', String(controlPort), '--lld', 'iscsi', '--mode', 'sys', '--op', 'show'], { encoding: 'utf8' });
    if (r.status === 0) break;
    if (Date.now() > until) throw new Error(`tgtd control port ${controlPort} did not answer (see ${server.logPath})`);
    await sleep(100);
  }
  tgtadm(controlPort, ['--mode', 'target', '--op', 'new', '--tid', '1', '-T', PEER_IQN]);
  tgtadm(controlPort, ['--mode', 'logicalunit', '--op', 'new', '--tid', '1', '--lun', '1', '-b', img]);
  tgtadm(controlPort, ['--mode', 'target', '--op', 'bind', '--tid', '1', '-I', 'ALL']);
  fs.writeFileSync(path.join(logDir, 'tgtd.show'), tgtadm(controlPort, ['--mode', 'target', '--op', 'show']));
  const size = await waitLun(t.url, server);
  log(`tgtd LUN 1: ${size} bytes, control port ${controlPort}`);
  return t;
}

/** tgtd ignores SIGTERM while it has targets: delete them and the system through tgtadm, then stop it by PID. */
async function stopTgtd(t: Target): Promise<void> {
  if (!t.server.hasExited() && t.controlPort !== undefined) {
    for (const args of [
      ['--mode', 'target', '--op', 'delete', '--force', '--tid', '1'],
      ['--mode', 'system', '--op', 'delete'],
    ]) {
      spawnSync('tgtadm', ['-C', String(t.controlPort), '--lld', 'iscsi', ...args], { encoding: 'utf8', timeout: 10_000 });
    }
  }
  await stopServer(t.server, 5_000);
  if (t.controlPort !== undefined) for (const f of tgtdSocketFiles(t.controlPort)) fs.rmSync(f, { force: true });
}

async function startTessera(o: Options, dataDir: string, logDir: string, profileDir?: string): Promise<Target> {
  const nbdPort = await freePort();
  const port = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env, UV_USE_IO_URING: o.uring };
  const nodeArgs = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, ...(process.env.BENCH_PROFILE_FLAGS ?? '').split(' ').filter(Boolean)] : [];
  const args = [
    ...DAEMON_NODE_ARGS, // as `npx tessera up` runs it (the bin's shebang): see src/main/node-flags.ts
    ...nodeArgs,
    TESSERA_BIN,
    'up',
    '--data-dir',
    dataDir,
    '--nbd-port',
    String(nbdPort),
    '--iscsi-port',
    String(port),
    '--device-size',
    String(Math.max(4 * GiB, 2 * o.sizeBytes)),
    '--volume-size',
    String(o.sizeBytes),
    ...(process.env.BENCH_TESSERA_ARGS ?? '').split(' ').filter((a) => a !== ''),
  ];
  const server = await startServer('tessera', process.execPath, args, path.join(logDir, 'tessera.log'), {
    env,
    readyLine: 'tessera: ready',
    readyTimeoutMs: 120_000,
  });
  const url = `iscsi://127.0.0.1:${port}/${TESSERA_IQN}/0`;
  const size = await waitLun(url, server);
  if (size !== o.sizeBytes) throw new Error(`tessera LUN 0 is ${size} bytes, expected ${o.sizeBytes}`);
  return { system: 'tessera', server, url };
}

/** Write the whole LUN once, sequential 1 MiB at QD8 over iSCSI (the same for both systems). */
async function fill(o: Options, t: Target, resDir: string): Promise<void> {
  log(`filling ${t.url} (${o.sizeBytes / GiB} GiB, fio libiscsi sequential 1 MiB write, QD8)`);
  const run = await runFio({
    args: ['--name=prefill', '--ioengine=libiscsi', `--filename=${fioFilename(t.url)}`, `--size=${o.sizeBytes}`, '--rw=write', '--bs=1M', '--iodepth=8'],
    outPath: path.join(resDir, `prefill-${t.system}.json`),
    serverPid: t.server.pid,
    timeoutMs: 1_800_000,
  });
  if (run.error || !run.json) throw new Error(`filling ${t.system}: ${run.error}`);
  const w = run.json.jobs[0].write;
  log(`${t.system} prefill: ${(w.bw_bytes / 1e6).toFixed(0)} MB/s, ${run.serverCpuSec.toFixed(1)} s server CPU`);
}

/** One profiled Tessera run: a daemon of its own, so that each profile holds one workload. Returns the (stopped) target. */
async function runProfiled(o: Options, row: Row, tessera: Target, dataDir: string, work: string, resDir: string, profiles: string[]): Promise<Target> {
  const profileDir = o.profileDir!;
  await stopServer(tessera.server);
  const tmp = path.join(profileDir, `.iscsi-${row.workload.name}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  await quiet(o); // before the profiled daemon starts, so its profile holds no waiting
  const t = await startTessera(o, dataDir, work, tmp);
  row.tesseraRuns.push(await runOne(o, row.workload, t, resDir, 0, false));
  await stopServer(t.server);
  const main = collectProfiles(tmp, path.join(profileDir, `iscsi-${row.workload.name}`));
  if (main !== null) profiles.push(main);
  fs.rmSync(tmp, { recursive: true, force: true });
  return t;
}

async function quiet(o: Options): Promise<void> {
  if (o.quietMaxSec <= 0) return;
  const waited = await waitQuiet(o.quietBusyPct, o.quietMaxSec);
  if (waited > 1.5) log(`waited ${waited.toFixed(0)} s for other load to drop below ${o.quietBusyPct}% of a CPU`);
}

async function runOne(o: Options, w: Workload, t: Target, resDir: string, round: number, waitForQuiet = true): Promise<Result> {
  spawnSync('sync', [], { stdio: 'ignore' }); // see the header: no run pays for an earlier one's writeback
  if (waitForQuiet) await quiet(o);
  log(`${w.name} on ${t.system} (${o.runtime} s + ${o.ramp} s ramp${o.rounds > 1 ? `, round ${round + 1} of ${o.rounds}` : ''})`);
  const tag = o.rounds > 1 ? `.r${round + 1}` : '';
  const run = await runFio({
    args: fioArgs(o, w, t.url),
    outPath: path.join(resDir, `${t.system}-${w.name}${tag}.json`),
    serverPid: t.server.pid,
    rampSec: o.ramp,
    perThread: true,
    timeoutMs: (o.runtime + o.ramp + 120) * 1000,
  });
  if (t.server.hasExited()) run.error = `${t.system} exited during the run (see ${t.server.logPath})`;
  const r = toResult(t.system, w.name, run);
  if (r.error) log(`  ERROR: ${r.error}`);
  else
    log(
      `  ${r.iops.toFixed(0)} IOPS, ${r.mbps.toFixed(1)} MB/s, lat mean ${r.latMeanUs.toFixed(1)} us p99 ${r.latP99Us.toFixed(1)} us, ` +
        `server CPU ${r.serverCpuPct.toFixed(0)}% (${r.cpuUsPerIo.toFixed(1)} us/IO)`,
    );
  if (run.threads?.length) {
    const threads = run.threads
      .slice(0, 6)
      .map(([n, s]) => `${n} ${((100 * s) / run.windowSec).toFixed(0)}%`)
      .join(', ');
    log(`  server threads: ${threads}`);
    fs.writeFileSync(path.join(resDir, `${t.system}-${w.name}${tag}.threads.json`), JSON.stringify({ windowSec: run.windowSec, threads: run.threads, syscalls: run.syscalls }));
  }
  return r;
}

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  requireTools(o);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const resDir = path.join(o.parentDir, 'tessera-bench-results', `iscsi-${stamp}`);
  fs.mkdirSync(resDir, { recursive: true });
  const needBytes = (o.systems.has(PEER) ? o.sizeBytes : 0) + (o.systems.has('tessera') ? o.sizeBytes + GiB : 0);
  const disk = checkBenchDisk(o.parentDir, needBytes);
  const work = fs.mkdtempSync(path.join(o.parentDir, 'tessera-bench-iscsi-'));
  const facts = machineFacts(o, disk);
  log(`scratch dir ${work} on ${disk}; results in ${resDir}`);

  let peer: Target | undefined;
  let tessera: Target | undefined;
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    log(`${sig}: stopping fio and servers`);
    killClients('SIGTERM');
    void (peer ? stopTgtd(peer) : Promise.resolve())
      .then(() => stopAll())
      .finally(() => {
        if (!o.keep) fs.rmSync(work, { recursive: true, force: true });
        process.exit(130);
      });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', killAllSync);

  const rows: Row[] = o.workloads.map((workload) => ({ workload, peerRuns: [], tesseraRuns: [] }));
  const profiles: string[] = [];
  try {
    const dataDir = path.join(work, 'tessera');
    if (o.systems.has(PEER)) {
      const img = path.join(work, 'tgtd.img');
      // sparse, like Tessera's device file; the fill below allocates it over iSCSI
      const r = spawnSync('truncate', ['-s', String(o.sizeBytes), img]);
      if (r.status !== 0) throw new Error(`truncate ${img} failed: ${r.stderr}`);
      peer = await startTgtd(img, work);
      await fill(o, peer, resDir);
    }
    if (o.systems.has('tessera')) {
      tessera = await startTessera(o, dataDir, work);
      await fill(o, tessera, resDir);
    }
    for (const row of rows) {
      for (let round = 0; round < o.rounds && !interrupted; round++) {
        // ABBA order: drift in the machine's speed over a workload falls on both systems.
        const peerFirst = round % 2 === 0;
        if (peer && peerFirst) row.peerRuns.push(await runOne(o, row.workload, peer, resDir, round));
        if (tessera && o.profileDir) tessera = await runProfiled(o, row, tessera, dataDir, work, resDir, profiles);
        else if (tessera && !interrupted) row.tesseraRuns.push(await runOne(o, row.workload, tessera, resDir, round));
        if (peer && !peerFirst && !interrupted) row.peerRuns.push(await runOne(o, row.workload, peer, resDir, round));
      }
      row.peer = medianRun(row.peerRuns);
      row.tessera = medianRun(row.tesseraRuns);
    }
  } finally {
    if (peer) await stopTgtd(peer);
    await stopAll();
    if (!o.keep) fs.rmSync(work, { recursive: true, force: true });
    else log(`kept scratch dir ${work}`);
  }

  const header =
    `Tessera vs ${PEER} ${facts.tgtd}, ${facts.fio.split(' ')[0]} libiscsi engine over loopback, ${o.runtime} s per job after ${o.ramp} s ramp, ` +
    (o.rounds > 1 ? `${o.rounds} rounds per system (alternating order; each row is the median-IOPS round), ` : '') +
    `LUNs of ${o.sizeBytes / GiB} GiB written once before the jobs, numjobs=1; lat = completion latency (clat); CPU = server utime+stime per IO`;
  const out: string[] = [];
  if (o.md) out.push(`_${header}_`, '', resultsTable(rows, true), '', ratioTable(rows, true));
  else out.push(header, '', resultsTable(rows, false), '', ratioTable(rows, false));
  for (const p of profiles) out.push('', formatSummary(summarize(loadProfile(p)), { md: o.md, title: path.basename(p), top: 20 }));
  process.stdout.write(out.join('\n') + '\n');

  const failed = rows.some((r) => r.peer?.error || r.tessera?.error);
  const missed = rows.filter((r) => verdict(r) === 'MISS').map((r) => r.workload.name);
  if (missed.length) log(`targets missed: ${missed.join(', ')}`);
  return failed ? 1 : 0;
}

runBenchMain(main);
