// `npm run bench`: Tessera's NBD export against qemu-nbd, side by side, on the
// same disk, with fio's nbd engine (libnbd) as the client.
//
//   npm run bench                       # text tables on stdout, progress on stderr
//   npm run bench -- --md               # the tables as markdown
//   npm run bench -- --record           # also write a dated section into docs/benchmarks.md
//   npm run bench -- --profile DIR      # Tessera only, under node --cpu-prof: one
//                                       # DIR/<workload>.cpuprofile per workload + summary
//
// Environment: BENCH_RUNTIME [15] s per job, BENCH_RAMP [2] s, BENCH_ONLY
// (e.g. rr4k-qd32,rw4k-qd32), BENCH_SIZE [2G] region written first and then
// benchmarked, BENCH_DIR [/var/tmp] parent of the scratch dir (must not be
// tmpfs), BENCH_SYSTEMS [qemu-nbd,tessera], BENCH_THREADPOOL (UV_THREADPOOL_SIZE
// for the daemon), BENCH_URING [1] (UV_USE_IO_URING for the daemon),
// BENCH_QUIET_MAX [30] s to wait before each job for the machine to be nearly
// idle (below BENCH_QUIET_BUSY [40] % of one CPU; other agents), BENCH_LOCK [/tmp/bench.lock], BENCH_KEEP=1 keeps the scratch
// dir. Raw fio JSON is kept in /var/tmp/tessera-bench-results/<time>/.
//
// Method (see docs/benchmarks.md): qemu-nbd serves a preallocated raw file of
// BENCH_SIZE filled by a sequential O_DIRECT fio write, with --cache=none
// --aio=io_uring; Tessera (`tessera up`, UV_USE_IO_URING=1) starts on a fresh
// data dir and the same region of vol0 is filled with a sequential 1 MiB write
// over NBD, so reads hit allocated data on both. Both servers stay up; for each
// workload the peer runs, then Tessera — never both at once, and every fio run
// holds the machine-wide bench lock. Server CPU is utime+stime of the server
// PID from /proc/PID/stat (all threads), from the end of the ramp to fio's exit.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatSummary, loadProfile, summarize } from './cpuprofile.js';
import {
  printHeaderAndExit,
  runBenchMain,
  capture,
  freePort,
  killAllSync,
  killClients,
  log,
  runFio,
  startServer,
  stopAll,
  stopServer,
  waitNbd,
  waitQuiet,
  type FioRun,
  type Server,
  workloadsFromEnv,
  checkBenchDisk,
  requireCommands,
  collectProfiles,
} from './harness.js';
import { parseSize } from '../src/stdx/size.js';
import { WORKLOADS, ratioTable, recordSection, resultsTable, verdict, type Result, type Row, type Workload } from './report.js';
import { DAEMON_NODE_ARGS } from '../src/main/node-flags.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TESSERA_BIN = path.join(REPO, 'bin', 'tessera.js');
const DOC = path.join(REPO, 'docs', 'benchmarks.md');
const PEER = 'qemu-nbd';
const GiB = 2 ** 30;


interface Options {
  md: boolean;
  record: boolean;
  profileDir?: string;
  runtime: number;
  ramp: number;
  sizeBytes: number;
  workloads: Workload[];
  systems: Set<string>;
  parentDir: string;
  threadpool?: string;
  uring: string;
  quietMaxSec: number;
  quietBusyPct: number;
  keep: boolean;
}

function usage(): never {
  return printHeaderAndExit(import.meta.url, 21);
}

function parseOptions(argv: string[]): Options {
  const o: Options = {
    md: false,
    record: false,
    runtime: Number(process.env.BENCH_RUNTIME ?? 15),
    ramp: Number(process.env.BENCH_RAMP ?? 2),
    sizeBytes: parseSize(process.env.BENCH_SIZE ?? '2G'),
    workloads: [...WORKLOADS],
    systems: new Set((process.env.BENCH_SYSTEMS ?? `${PEER},tessera`).split(',').map((s) => s.trim())),
    parentDir: process.env.BENCH_DIR ?? '/var/tmp',
    threadpool: process.env.BENCH_THREADPOOL || undefined,
    uring: process.env.BENCH_URING ?? '0',
    quietMaxSec: Number(process.env.BENCH_QUIET_MAX ?? 30),
    quietBusyPct: Number(process.env.BENCH_QUIET_BUSY ?? 40),
    keep: process.env.BENCH_KEEP === '1',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--md') o.md = true;
    else if (a === '--record') o.record = true;
    else if (a === '--profile') o.profileDir = path.resolve(argv[++i] ?? usage());
    else if (a === '--help' || a === '-h') usage();
    else throw new Error(`unknown argument ${a} (try --help)`);
  }
  o.workloads = workloadsFromEnv(WORKLOADS);
  if (o.profileDir) o.systems = new Set(['tessera']);
  for (const s of o.systems) if (s !== PEER && s !== 'tessera') throw new Error(`BENCH_SYSTEMS: unknown system ${s}`);
  if (!(o.runtime > 0) || !(o.ramp >= 0)) throw new Error('BENCH_RUNTIME must be > 0 and BENCH_RAMP >= 0');
  if (o.sizeBytes % (1 << 20) !== 0 || o.sizeBytes > 4 * GiB) throw new Error('BENCH_SIZE must be a multiple of 1M and at most 4G (the volume size)');
  return o;
}

function requireTools(): void {
  requireCommands(['fio', 'qemu-nbd', 'nbdinfo', 'flock', 'fallocate']);
  if (!/\bnbd\b/.test(capture('fio', ['--enghelp']))) throw new Error('this fio has no nbd engine');
}

function machineFacts(disk: string): Record<string, string> {
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
    fio: capture('fio', ['--version']),
    'qemu-nbd': capture('qemu-nbd', ['--version']).split('\n')[0] ?? '',
    libnbd: capture('nbdinfo', ['--version']).split('\n')[0] ?? '',
    disk,
    tessera: `git ${git}${dirty}`,
  };
}

function fioArgs(o: Options, w: Workload, uri: string): string[] {
  return [
    `--name=${w.name}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
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

function toResult(system: string, workload: string, run: FioRun): Result {
  const empty: Result = { system, workload, iops: NaN, mbps: NaN, latMeanUs: NaN, latP99Us: NaN, serverCpuPct: NaN, cpuSecPerGiB: NaN, fioCpuPct: NaN, otherCpuPct: NaN };
  if (!run.json) return { ...empty, error: run.error ?? 'fio failed' };
  const job = run.json.jobs[0];
  const d = job.read.io_bytes > 0 ? job.read : job.write;
  if (!(d.io_bytes > 0)) return { ...empty, error: 'no IO completed' };
  const clat = d.clat_ns ?? d.lat_ns;
  const p99 = clat.percentile?.['99.000000'] ?? d.lat_ns.percentile?.['99.000000'] ?? NaN;
  // CPU as a rate over the sampled window, applied to fio's measured runtime:
  // the window and fio's own clock differ by fio's start-up and tear-down.
  const cpuRate = run.windowSec > 0 ? run.serverCpuSec / run.windowSec : NaN;
  const runtimeSec = d.runtime / 1000;
  return {
    system,
    workload,
    iops: d.iops,
    mbps: d.bw_bytes / 1e6,
    latMeanUs: clat.mean / 1000,
    latP99Us: p99 / 1000,
    serverCpuPct: cpuRate * 100,
    cpuSecPerGiB: (cpuRate * runtimeSec) / (d.io_bytes / GiB),
    fioCpuPct: job.usr_cpu + job.sys_cpu,
    otherCpuPct: run.windowSec > 0 ? Math.max(0, (100 * run.machineCpuSec) / run.windowSec - cpuRate * 100 - (job.usr_cpu + job.sys_cpu)) : NaN,
  };
}

interface Target {
  system: string;
  server: Server;
  uri: string;
}

async function startQemuNbd(img: string, logDir: string): Promise<Target> {
  const port = await freePort();
  const server = await startServer(
    PEER,
    'qemu-nbd',
    ['-f', 'raw', '-t', '-e', '8', '-x', 'vol', '--bind', '127.0.0.1', '-p', String(port), '--cache=none', '--aio=io_uring', img],
    path.join(logDir, 'qemu-nbd.log'),
  );
  const uri = `nbd://127.0.0.1:${port}/vol`;
  await waitNbd(uri);
  return { system: PEER, server, uri };
}

async function startTessera(o: Options, dataDir: string, logDir: string, profileDir?: string): Promise<Target> {
  const port = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env, UV_USE_IO_URING: o.uring };
  if (o.threadpool) env.UV_THREADPOOL_SIZE = o.threadpool;
  const nodeArgs = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
  const args = [
    ...DAEMON_NODE_ARGS, // as `npx tessera up` runs it (the bin's shebang): see src/main/node-flags.ts
    ...nodeArgs,
    TESSERA_BIN,
    'up',
    '--data-dir',
    dataDir,
    '--nbd-port',
    String(port),
    '--device-size',
    '8G',
    '--volume-size',
    '4G',
    ...(process.env.BENCH_TESSERA_ARGS ?? '').split(' ').filter((a) => a !== ''),
  ];
  const server = await startServer('tessera', process.execPath, args, path.join(logDir, 'tessera.log'), {
    env,
    readyLine: 'tessera: ready',
    readyTimeoutMs: 120_000,
  });
  const uri = `nbd://127.0.0.1:${port}/vol0`;
  await waitNbd(uri);
  return { system: 'tessera', server, uri };
}

async function fillFile(o: Options, img: string, resDir: string): Promise<void> {
  fs.rmSync(img, { force: true });
  const r = spawnSync('fallocate', ['-l', String(o.sizeBytes), img]);
  if (r.status !== 0) throw new Error(`fallocate ${img} failed: ${r.stderr}`);
  log(`filling ${img} (${o.sizeBytes / GiB} GiB, fio sequential 1 MiB O_DIRECT write)`);
  const run = await runFio({
    args: ['--name=prefill', `--filename=${img}`, `--size=${o.sizeBytes}`, '--rw=write', '--bs=1M', '--iodepth=16', '--ioengine=libaio', '--direct=1'],
    outPath: path.join(resDir, 'prefill-file.json'),
    timeoutMs: 1_800_000,
  });
  if (run.error) throw new Error(`filling ${img}: ${run.error}`);
}

async function fillTessera(o: Options, t: Target, resDir: string): Promise<void> {
  log(`filling ${t.uri} first ${o.sizeBytes / GiB} GiB (fio nbd sequential 1 MiB write, QD8)`);
  const run = await runFio({
    args: ['--name=prefill', '--ioengine=nbd', `--uri=${t.uri}`, `--size=${o.sizeBytes}`, '--rw=write', '--bs=1M', '--iodepth=8'],
    outPath: path.join(resDir, 'prefill-tessera.json'),
    serverPid: t.server.pid,
    timeoutMs: 1_800_000,
  });
  if (run.error || !run.json) throw new Error(`filling tessera: ${run.error}`);
  const w = run.json.jobs[0].write;
  log(`tessera prefill: ${(w.bw_bytes / 1e6).toFixed(0)} MB/s, ${run.serverCpuSec.toFixed(1)} s server CPU`);
}

async function quiet(o: Options): Promise<void> {
  if (o.quietMaxSec <= 0) return;
  const waited = await waitQuiet(o.quietBusyPct, o.quietMaxSec);
  if (waited > 1.5) log(`waited ${waited.toFixed(0)} s for other load to drop below ${o.quietBusyPct}% of a CPU`);
}

async function runOne(o: Options, w: Workload, t: Target, resDir: string, waitForQuiet = true): Promise<Result> {
  if (waitForQuiet) await quiet(o);
  log(`${w.name} on ${t.system} (${o.runtime} s + ${o.ramp} s ramp)`);
  const run = await runFio({
    args: fioArgs(o, w, t.uri),
    outPath: path.join(resDir, `${t.system}-${w.name}.json`),
    serverPid: t.server.pid,
    rampSec: o.ramp,
    perThread: t.system === 'tessera',
    timeoutMs: (o.runtime + o.ramp + 120) * 1000,
  });
  if (t.server.hasExited()) run.error = `${t.system} exited during the run (see ${t.server.logPath})`;
  const r = toResult(t.system, w.name, run);
  if (r.error) log(`  ERROR: ${r.error}`);
  else
    log(
      `  ${r.iops.toFixed(0)} IOPS, ${r.mbps.toFixed(1)} MB/s, lat mean ${r.latMeanUs.toFixed(1)} us p99 ${r.latP99Us.toFixed(1)} us, ` +
        `server CPU ${r.serverCpuPct.toFixed(0)}% (${r.cpuSecPerGiB.toFixed(2)} s/GiB)`,
    );
  if (run.threads?.length) {
    const threads = run.threads
      .slice(0, 6)
      .map(([n, s]) => `${n} ${((100 * s) / run.windowSec).toFixed(0)}%`)
      .join(', ');
    log(`  server threads: ${threads}`);
    if (run.syscalls && run.json && !r.error) {
      // IOs in the same window as the syscall counts: IOPS x window length
      const ios = r.iops * run.windowSec;
      log(`  server read/write-family syscalls per IO: ${(run.syscalls.r / ios).toFixed(2)} / ${(run.syscalls.w / ios).toFixed(2)}`);
    }
    fs.writeFileSync(path.join(resDir, `${t.system}-${w.name}.threads.json`), JSON.stringify({ windowSec: run.windowSec, threads: run.threads, syscalls: run.syscalls }));
  }
  return r;
}

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  requireTools();
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const resDir = path.join(o.parentDir, 'tessera-bench-results', stamp);
  fs.mkdirSync(resDir, { recursive: true });
  const needBytes = (o.systems.has(PEER) ? o.sizeBytes : 0) + (o.systems.has('tessera') ? o.sizeBytes + GiB : 0);
  const disk = checkBenchDisk(o.parentDir, needBytes);
  const work = fs.mkdtempSync(path.join(o.parentDir, 'tessera-bench-'));
  const facts = machineFacts(disk);
  log(`scratch dir ${work} on ${disk}; results in ${resDir}`);

  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    log(`${sig}: stopping fio and servers`);
    killClients('SIGTERM');
    void stopAll().finally(() => {
      if (!o.keep) fs.rmSync(work, { recursive: true, force: true });
      process.exit(130);
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', killAllSync);

  const rows: Row[] = o.workloads.map((workload) => ({ workload }));
  const profiles: string[] = [];
  try {
    let peer: Target | undefined;
    let tessera: Target | undefined;
    const dataDir = path.join(work, 'tessera');
    if (o.systems.has(PEER)) {
      const img = path.join(work, 'peer.img');
      await fillFile(o, img, resDir);
      peer = await startQemuNbd(img, work);
    }
    if (o.systems.has('tessera')) {
      tessera = await startTessera(o, dataDir, work);
      await fillTessera(o, tessera, resDir);
    }
    for (const row of rows) {
      if (interrupted) break;
      if (peer) row.peer = await runOne(o, row.workload, peer, resDir);
      if (tessera && o.profileDir) {
        // one daemon per workload so that each profile holds one workload
        await stopServer(tessera.server);
        const tmp = path.join(o.profileDir, `.${row.workload.name}`);
        fs.rmSync(tmp, { recursive: true, force: true });
        fs.mkdirSync(tmp, { recursive: true });
        await quiet(o); // before the profiled daemon starts, so its profile holds no waiting
        tessera = await startTessera(o, dataDir, work, tmp);
        row.tessera = await runOne(o, row.workload, tessera, resDir, false);
        await stopServer(tessera.server);
        const main = collectProfiles(tmp, path.join(o.profileDir, `${row.workload.name}`));
        if (main !== null) profiles.push(main);
        fs.rmSync(tmp, { recursive: true, force: true });
      } else if (tessera && !interrupted) {
        row.tessera = await runOne(o, row.workload, tessera, resDir);
      }
    }
  } finally {
    await stopAll();
    if (!o.keep) fs.rmSync(work, { recursive: true, force: true });
    else log(`kept scratch dir ${work}`);
  }

  const header =
    `Tessera vs ${PEER}, fio ${facts.fio} nbd engine over loopback, ${o.runtime} s per job after ${o.ramp} s ramp, ` +
    `region ${o.sizeBytes / GiB} GiB, numjobs=1; lat = completion latency (clat); CPU = server utime+stime`;
  const out: string[] = [];
  if (o.md) {
    out.push(`_${header}_`, '', resultsTable(rows, PEER, true), '', ratioTable(rows, PEER, true));
  } else {
    out.push(header, '', resultsTable(rows, PEER, false), '', ratioTable(rows, PEER, false));
  }
  for (const p of profiles) out.push('', formatSummary(summarize(loadProfile(p)), { md: o.md, title: path.basename(p), top: 20 }));
  process.stdout.write(out.join('\n') + '\n');

  if (o.record) {
    const date = facts.date;
    const subset = o.workloads.length < WORKLOADS.length ? ` (subset: ${o.workloads.map((w) => w.name).join(', ')})` : '';
    const body = [
      `### ${date} — Tessera vs ${PEER}, UV_USE_IO_URING=${o.uring}${o.threadpool ? `, UV_THREADPOOL_SIZE=${o.threadpool}` : ''}${subset}`,
      '',
      ...Object.entries(facts).map(([k, v]) => `- ${k}: ${v}`),
      `- settings: runtime ${o.runtime} s, ramp ${o.ramp} s, region ${o.sizeBytes / GiB} GiB, UV_USE_IO_URING=${o.uring}` +
        (o.threadpool ? `, UV_THREADPOOL_SIZE=${o.threadpool}` : '') +
        (o.profileDir ? ', under node --cpu-prof' : ''),
      `- command: \`npm run bench -- --record\`${process.env.BENCH_ONLY ? ` with BENCH_ONLY=${process.env.BENCH_ONLY}` : ''}`,
      '',
      resultsTable(rows, PEER, true),
      '',
      ratioTable(rows, PEER, true),
    ].join('\n');
    const variant = `uring=${o.uring}` + (o.threadpool ? ` pool=${o.threadpool}` : '') + (o.profileDir ? ' profiled' : '') + (subset ? ' subset' : '');
    recordSection(DOC, `${date} ${variant}`, body);
    log(`recorded the ${date} section in ${DOC}`);
  }
  const failed = rows.some((r) => r.peer?.error || r.tessera?.error);
  const missed = rows.filter((r) => verdict(r) === 'MISS').map((r) => r.workload.name);
  if (missed.length) log(`targets missed: ${missed.join(', ')}`);
  return failed ? 1 : 0;
}

runBenchMain(main);
