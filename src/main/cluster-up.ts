// The cluster daemons' entry points, wiring only: monitor, gateway, and the
// `tessera up --osds N` supervisor that runs a whole single-machine cluster —
// a monitor and N OSD processes (children, each with its own data dir and
// device file) and the gateway (NBD + management API) in this process.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClusterVolumeStore } from '../client/volume-store.js';
import { ensureDir, pathExists, writePrivateFile } from '../io/node/api-files.js';
import { nodeClock } from '../io/node/clock.js';
import { RpcOsdTransport } from '../io/node/osd-rpc.js';
import { MonClient } from '../mon/client.js';
import { startMonitor, type RunningMonitor } from '../mon/run.js';
import { isTesseraError } from '../stdx/errors.js';
import { formatSize } from '../stdx/size.js';
import type { Logger } from '../stdx/log.js';
import type { ClusterConfig, ClusterConfigInput } from './cluster-config.js';
import { resolveConfig, type Config } from './config.js';
import { loadRealDeps, runUp, type UpIo } from './up.js';
import { DAEMON_NODE_ARGS } from './node-flags.js';

export const MON_READY_PREFIX = 'tessera-mon: ready';

export async function runMonitor(cfg: ClusterConfig, id: string, log: Logger): Promise<RunningMonitor> {
  await ensureDir(cfg.mon.dataDir);
  return startMonitor({
    id,
    host: cfg.mon.host,
    port: cfg.mon.port,
    advertiseHost: cfg.mon.advertiseHost ?? undefined,
    dataDir: cfg.etcd.length === 0 ? cfg.mon.dataDir : undefined,
    etcdEndpoints: cfg.etcd.length > 0 ? cfg.etcd : undefined,
    osdDownAfterMs: cfg.osdDownAfterMs,
    osdOutAfterMs: cfg.osdOutAfterMs,
    initialPool: { ...cfg.defaultPool },
    log,
  });
}

/**
 * The gateway: the single-machine daemon's NBD server and management API on a
 * ClusterVolumeStore. `createDefault` creates the default volume when the
 * cluster has none and this gateway never did (marker file in its data dir).
 */
/** The single-machine daemon config of a cluster gateway: its part of the cluster config. */
export function gatewayDaemonConfig(cfg: ClusterConfig, cwd: string): Config {
  const iscsiCfg = cfg.gateway.iscsi;
  return resolveConfig({
    cwd,
    flags: { dataDir: cfg.gateway.dataDir, nbd: cfg.gateway.nbd, iscsi: { host: iscsiCfg.host, port: iscsiCfg.port ?? -1 }, gateway: { idlePollUs: cfg.gateway.idlePollUs } },
  });
}

export async function runGateway(cfg: ClusterConfig, io: UpIo, opts: { createDefault: boolean; volume?: { name: string; sizeBytes: number } }): Promise<number> {
  const iscsiCfg = cfg.gateway.iscsi;
  const config = gatewayDaemonConfig(cfg, process.cwd());
  if (opts.volume) config.defaultVolume = opts.volume;
  const real = await loadRealDeps();
  const marker = path.join(cfg.gateway.dataDir, 'default-volume.created');
  return runUp(
    config,
    {
      startNbd: real.startNbd,
      // iSCSI with the reservations kept by the monitor, so every gateway exporting a
      // volume enforces the same persistent reservations (issue 5, SPEC VOL5).
      startIscsi: async (opts) => {
        const { IscsiService } = await import('./iscsi.js');
        const { ClusterPrStore } = await import('../gateway/scsi/pr-store-cluster.js');
        const fsid = (await new MonClient({ addrs: cfg.monitors }).getMap()).fsid;
        const prStore = new ClusterPrStore({ monitors: cfg.monitors, log: io.log.child('pr') });
        return IscsiService.start({ dataDir: opts.dataDir, host: opts.host, port: opts.port, tpgt: iscsiCfg.tpgt, store: opts.store, log: opts.log, prStore, clusterId: fsid, idlePoll: opts.idlePoll });
      },
      openStore: async () => {
        const mon = new MonClient({ addrs: cfg.monitors });
        const store = await ClusterVolumeStore.open({ mon, transport: new RpcOsdTransport(), clock: nodeClock });
        if (opts.createDefault && store.list().length === 0 && !(await pathExists(marker))) {
          // Create first, then mark: a failed create (no pool yet, a timeout) is retried
          // by the next start instead of being remembered as done.
          const vol = config.defaultVolume;
          try {
            await store.create(vol.name, vol.sizeBytes);
            io.log.info(`created default volume ${vol.name} (${formatSize(vol.sizeBytes)})`);
          } catch (err) {
            if (!isTesseraError(err, 'ERR_EXISTS')) {
              await store.close().catch(() => undefined);
              throw err;
            }
          }
          await ensureDir(cfg.gateway.dataDir);
          await writePrivateFile(marker, new Date().toISOString() + '\n');
        }
        return { store, created: false };
      },
    },
    io,
  );
}

function tesseraBin(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/tessera.js');
}

/**
 * Extra Node flags for the children, from TESSERA_CHILD_NODE_ARGS (space
 * separated), e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile the OSDs:
 * Node refuses such flags in NODE_OPTIONS.
 */
function childNodeArgs(): string[] {
  return (process.env.TESSERA_CHILD_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
}

/** V8 flags for the spawned daemons: see node-flags.ts. */
export { DAEMON_NODE_ARGS };

/** A child's start-up deadline: a daemon that never prints its ready line is a failed start. */
export const CHILD_READY_TIMEOUT_MS = 60_000;

/**
 * Spawns a child daemon. `child` is returned at once, so the caller can always
 * stop it; `ready` resolves once it printed its ready line, and rejects if it
 * exits or stays silent for CHILD_READY_TIMEOUT_MS.
 */
function startChild(args: string[], readyPrefix: string, log: Logger, name: string): { child: ChildProcess; ready: Promise<ChildProcess> } {
  const child = spawn(process.execPath, [...DAEMON_NODE_ARGS, ...childNodeArgs(), tesseraBin(), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const ready = new Promise<ChildProcess>((resolve, reject) => {
    let buf = '';
    let done = false;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      reject(new Error(`${name} printed no ready line within ${CHILD_READY_TIMEOUT_MS / 1000} s`));
    }, CHILD_READY_TIMEOUT_MS);
    child.stdout?.on('data', (d: Buffer) => {
      if (done) {
        // Nothing but the ready line is expected; anything else (e.g. Node's
        // --trace-gc through TESSERA_CHILD_NODE_ARGS) goes to the log.
        for (const line of d.toString().split('\n')) if (line.trim()) log.info(`${name}: ${line}`);
        return;
      }
      buf += d.toString();
      if (buf.includes(readyPrefix)) {
        done = true;
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.stderr?.on('data', (d: Buffer) => {
      for (const line of d.toString().split('\n')) if (line.trim()) log.info(`${name}: ${line}`);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (!done) {
        done = true;
        reject(new Error(`${name} exited (${signal ?? code}) before it was ready`));
      } else log.warn(`${name} exited (${signal ?? code})`);
    });
  });
  ready.catch(() => undefined); // awaited by the caller; never an unhandled rejection
  return { child, ready };
}

export interface ClusterUpOptions {
  dataDir: string;
  osds: number;
  monPort: number;
  osdPortBase: number;
  nbd: { host: string; port: number };
  /** The gateway's iSCSI portal (port null = none). */
  iscsi: { host: string; port: number | null };
  /** The gateway's idle polling window (config.ts gateway.idlePollUs). */
  idlePollUs: number;
  deviceSizeBytes: number;
  /** The OSDs' device files with O_DIRECT (`up --direct-io`). */
  directIo: 'auto' | 'on' | 'off';
  volume: { name: string; sizeBytes: number };
}

/** The cluster config file `up --osds N` writes for its daemons (relative paths: against the file's directory, o.dataDir). */
export function clusterUpConfigFile(o: ClusterUpOptions): ClusterConfigInput {
  const size = Math.min(3, o.osds);
  return {
    cluster: {
      monitors: [`127.0.0.1:${o.monPort}`],
      defaultPool: { size, minSize: Math.min(size, 2), pgCount: 64, failureDomain: 'osd' },
    },
    mon: { port: o.monPort, dataDir: 'mon' },
    osd: { deviceSizeBytes: o.deviceSizeBytes, directIo: o.directIo },
    gateway: { dataDir: 'gateway', nbd: o.nbd, iscsi: { host: o.iscsi.host, port: o.iscsi.port ?? 'off' }, idlePollUs: o.idlePollUs },
  };
}

/** `tessera up --osds N`: monitor + N OSD children + the gateway here; stops them all on SIGINT/SIGTERM. */
export async function runClusterUp(o: ClusterUpOptions, io: UpIo): Promise<number> {
  const log = io.log;
  await ensureDir(o.dataDir);
  const configPath = path.join(o.dataDir, 'cluster.json');
  const shared = clusterUpConfigFile(o);
  await writePrivateFile(configPath, JSON.stringify(shared, null, 2) + '\n');
  const children: ChildProcess[] = [];
  const stopChildren = () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  };
  try {
    const mon = startChild(['mon', '--config', configPath], MON_READY_PREFIX, log, 'mon');
    children.push(mon.child);
    await mon.ready;
    const osdStarts: Promise<ChildProcess>[] = [];
    for (let i = 1; i <= o.osds; i++) {
      const osd = startChild(['osd', '--config', configPath, '--osd-data-dir', path.join(o.dataDir, `osd.${i}`), '--osd-port', String(o.osdPortBase + i)], 'tessera-osd: ready', log, `osd.${i}`);
      children.push(osd.child); // stopped in finally whatever happens to the others
      osdStarts.push(osd.ready);
    }
    const started = await Promise.allSettled(osdStarts);
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    io.out(`cluster: monitor 127.0.0.1:${o.monPort}, ${o.osds} OSDs, config ${configPath}`);
    const { resolveClusterConfig } = await import('./cluster-config.js');
    const { readFileSync } = await import('node:fs');
    const cfg = resolveClusterConfig({ cwd: o.dataDir, file: { path: configPath, text: readFileSync(configPath, 'utf8') } });
    const status = await runGateway(cfg, io, { createDefault: true, volume: o.volume });
    return status;
  } finally {
    stopChildren();
  }
}
