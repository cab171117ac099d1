// `npm run bench` (disk pools, issue 4 part 9): 4 KiB random writes over NBD on
// a RAID6 pool against a mirror2 pool, and 4 KiB random reads on the RAID6
// pool healthy, with one device failed and with two failed; a plain raw file
// behind qemu-nbd runs the same jobs as the peer (no redundancy: the cost of
// protection). One `tessera up` daemon serves both pools; fio's nbd engine is
// the client; every fio run holds the machine-wide bench lock.
//
//   node dist/bench/pool.js [--md]
//
// Environment: BENCH_RUNTIME [15] s per job, BENCH_RAMP [2] s, BENCH_POOL_SIZE
// [512M] region written first and then benchmarked, BENCH_DIR [/var/tmp]
// scratch parent (a real disk), BENCH_QUIET_MAX [30] s to wait for an idle
// machine before each job.
//
// Layout: raid6 on 5 device files (3+2: every container spans every device,
// so a failed device leaves reads degraded: there is no room to rebuild into),
// mirror2 on 2 files; each file 2 GiB, sparse, all in one scratch dir.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, log, printHeaderAndExit, runBenchMain, runFio, startServer, stopAll, waitNbd, waitQuiet, type FioRun, type Server } from './harness.js';
import { parseSize } from '../src/stdx/size.js';
import { DAEMON_NODE_ARGS } from '../src/main/node-flags.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TESSERA_BIN = path.join(REPO, 'bin', 'tessera.js');

interface Options {
  md: boolean;
  runtime: number;
  ramp: number;
  sizeBytes: number;
  parentDir: string;
  quietMaxSec: number;
}

interface Figures {
  iops: number;
  latMeanUs: number;
  cpuUsPerIo: number;
  error?: string;
}

function parseOptions(argv: string[]): Options {
  const o: Options = {
    md: argv.includes('--md'),
    runtime: Number(process.env.BENCH_RUNTIME ?? 15),
    ramp: Number(process.env.BENCH_RAMP ?? 2),
    sizeBytes: parseSize(process.env.BENCH_POOL_SIZE ?? '512M'),
    parentDir: process.env.BENCH_DIR ?? '/var/tmp',
    quietMaxSec: Number(process.env.BENCH_QUIET_MAX ?? 30),
  };
  if (argv.includes('--help') || argv.includes('-h')) printHeaderAndExit(import.meta.url, 17);
  if (o.sizeBytes % (1 << 20) !== 0 || o.sizeBytes > 2 ** 30) throw new Error('BENCH_POOL_SIZE must be a multiple of 1M and at most 1G');
  return o;
}

function cli(dataDir: string, args: string[]): string {
  const r = spawnSync(process.execPath, [TESSERA_BIN, ...args, '--data-dir', dataDir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tessera ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

async function job(o: Options, name: string, uri: string, rw: string, qd: number, server: Server, resDir: string): Promise<Figures> {
  if (o.quietMaxSec > 0) await waitQuiet(40, o.quietMaxSec);
  log(`${name}: ${rw} 4k QD${qd} (${o.runtime} s + ${o.ramp} s ramp)`);
  const run: FioRun = await runFio({
    args: [`--name=${name}`, '--ioengine=nbd', `--uri=${uri}`, `--rw=${rw}`, '--bs=4k', `--iodepth=${qd}`, `--size=${o.sizeBytes}`, '--time_based', `--runtime=${o.runtime}`, `--ramp_time=${o.ramp}`, '--norandommap', '--randrepeat=0'],
    outPath: path.join(resDir, `${name}.json`),
    serverPid: server.pid,
    rampSec: o.ramp,
    timeoutMs: (o.runtime + o.ramp + 120) * 1000,
  });
  const d = run.json?.jobs[0];
  const dir = d ? (d.read.io_bytes > 0 ? d.read : d.write) : undefined;
  if (!dir || !(dir.io_bytes > 0)) return { iops: NaN, latMeanUs: NaN, cpuUsPerIo: NaN, error: run.error ?? 'no IO' };
  const cpuRate = run.windowSec > 0 ? run.serverCpuSec / run.windowSec : NaN;
  const f = { iops: dir.iops, latMeanUs: dir.clat_ns.mean / 1000, cpuUsPerIo: (cpuRate / dir.iops) * 1e6 };
  log(`  ${f.iops.toFixed(0)} IOPS, mean ${f.latMeanUs.toFixed(0)} us, server CPU ${f.cpuUsPerIo.toFixed(0)} us/IO`);
  return f;
}

async function fill(uri: string, sizeBytes: number, outPath: string): Promise<void> {
  const r = await runFio({ args: ['--name=fill', '--ioengine=nbd', `--uri=${uri}`, '--rw=write', '--bs=1M', '--iodepth=8', `--size=${sizeBytes}`], outPath, timeoutMs: 900_000 });
  if (r.error || !r.json) throw new Error(`filling ${uri}: ${r.error}`);
}

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const resDir = path.join(o.parentDir, 'tessera-bench-results', `pool-${stamp}`);
  fs.mkdirSync(resDir, { recursive: true });
  const work = fs.mkdtempSync(path.join(o.parentDir, 'tessera-bench-pool-'));
  const dataDir = path.join(work, 'data');
  try {
    // Peer: a raw file behind qemu-nbd (no redundancy).
    const raw = path.join(work, 'raw.img');
    spawnSync('fallocate', ['-l', String(o.sizeBytes), raw]);
    const peerPort = await freePort();
    const peer = await startServer('qemu-nbd', 'qemu-nbd', ['-f', 'raw', '-t', '-e', '8', '-x', 'vol', '--bind', '127.0.0.1', '-p', String(peerPort), '--cache=none', '--aio=io_uring', raw], path.join(resDir, 'qemu-nbd.log'));
    const peerUri = `nbd://127.0.0.1:${peerPort}/vol`;
    await waitNbd(peerUri);
    await fill(peerUri, o.sizeBytes, path.join(resDir, 'fill-peer.json'));

    const port = await freePort();
    const server = await startServer('tessera', process.execPath, [...DAEMON_NODE_ARGS, TESSERA_BIN, 'up', '--data-dir', dataDir, '--nbd-port', String(port), '--device-size', '1G', '--volume-size', '64M'], path.join(resDir, 'tessera.log'), {
      readyLine: 'tessera: ready',
      readyTimeoutMs: 120_000,
    });
    const dev = (p: string, n: number) => Array.from({ length: n }, (_, i) => path.join(work, `${p}${i}.img`)).join(',');
    cli(dataDir, ['pool', 'create', 'r6', '--devices', dev('r', 5), '--protection', 'raid6', '--device-size', '2G']);
    cli(dataDir, ['pool', 'create', 'm2', '--devices', dev('m', 2), '--protection', 'mirror2', '--device-size', '2G']);
    cli(dataDir, ['volume', 'create', 'v6', '--size', '1G', '--pool', 'r6']);
    cli(dataDir, ['volume', 'create', 'vm', '--size', '1G', '--pool', 'm2']);
    const uri = (v: string) => `nbd://127.0.0.1:${port}/${v}`;
    await waitNbd(uri('v6'));
    log(`filling ${o.sizeBytes >> 20} MiB of each volume`);
    await fill(uri('v6'), o.sizeBytes, path.join(resDir, 'fill-r6.json'));
    await fill(uri('vm'), o.sizeBytes, path.join(resDir, 'fill-m2.json'));

    const rows: Array<[string, Figures]> = [];
    rows.push(['randwrite QD32, raw file (qemu-nbd)', await job(o, 'peer-rw32', peerUri, 'randwrite', 32, peer, resDir)]);
    rows.push(['randwrite QD32, mirror2', await job(o, 'm2-rw32', uri('vm'), 'randwrite', 32, server, resDir)]);
    rows.push(['randwrite QD32, raid6 3+2', await job(o, 'r6-rw32', uri('v6'), 'randwrite', 32, server, resDir)]);
    rows.push(['randwrite QD1, mirror2', await job(o, 'm2-rw1', uri('vm'), 'randwrite', 1, server, resDir)]);
    rows.push(['randwrite QD1, raid6 3+2', await job(o, 'r6-rw1', uri('v6'), 'randwrite', 1, server, resDir)]);
    rows.push(['randread QD32, raw file (qemu-nbd)', await job(o, 'peer-rr32', peerUri, 'randread', 32, peer, resDir)]);
    rows.push(['randread QD32, raid6 healthy', await job(o, 'r6-rr32', uri('v6'), 'randread', 32, server, resDir)]);
    cli(dataDir, ['device', 'fail', path.join(work, 'r1.img')]);
    rows.push(['randread QD32, raid6 1 device failed', await job(o, 'r6-rr32-d1', uri('v6'), 'randread', 32, server, resDir)]);
    cli(dataDir, ['device', 'fail', path.join(work, 'r3.img')]);
    rows.push(['randread QD32, raid6 2 devices failed', await job(o, 'r6-rr32-d2', uri('v6'), 'randread', 32, server, resDir)]);

    const f = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : '-');
    const sep = o.md ? ' | ' : '  ';
    const line = (cells: string[]) => (o.md ? `| ${cells.join(sep)} |` : cells.join(sep));
    const out = [line(['workload (4 KiB, fio nbd)', 'IOPS', 'mean lat us', 'server CPU us/IO'])];
    if (o.md) out.push('|---|---:|---:|---:|');
    for (const [name, r] of rows) out.push(line([name, f(r.iops), f(r.latMeanUs), f(r.cpuUsPerIo)]) + (r.error ? ` (${r.error})` : ''));
    const get = (k: string) => rows.find(([n]) => n === k)![1];
    const ratio = (a: string, b: string) => (get(a).iops / get(b).iops).toFixed(2);
    out.push('');
    out.push(`ratios: raid6/mirror2 randwrite QD32 IOPS ${ratio('randwrite QD32, raid6 3+2', 'randwrite QD32, mirror2')}; raid6/raw-file randwrite QD32 ${ratio('randwrite QD32, raid6 3+2', 'randwrite QD32, raw file (qemu-nbd)')}`);
    out.push(`degraded/healthy randread QD32 IOPS: 1 failed ${ratio('randread QD32, raid6 1 device failed', 'randread QD32, raid6 healthy')}, 2 failed ${ratio('randread QD32, raid6 2 devices failed', 'randread QD32, raid6 healthy')}`);
    process.stdout.write(out.join('\n') + '\n');
    await stopAll();
    return rows.some(([, r]) => r.error) ? 1 : 0;
  } finally {
    await stopAll();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

runBenchMain(main);
