// Cluster commands (SPEC CLU1, CLU5, CLU8, MGT1): the daemons `tessera mon`,
// `tessera osd`, `tessera gateway` (each reading the shared cluster config),
// and the operator commands `tessera osd out|in|rm ID` and the cluster view of
// `tessera status --monitors ADDR` — clients of the active monitor.
import { IDLE_POLL_US_DEFAULT } from '../gateway/idle-poll.js';
import { parseIdlePollFlag } from './up.js';
import path from 'node:path';
import type { Command } from 'commander';
import type { ClusterStatus } from '../mon/api-types.js';
import { readConfigFileText } from '../io/node/api-files.js';
import { resolveClusterConfig, type ClusterConfig, type ClusterConfigInput } from '../main/cluster-config.js';
import { warnMissingNodeArgs } from '../main/node-flags.js';
import { isTesseraError } from '../stdx/errors.js';
import { Logger } from '../stdx/log.js';
import { formatSize } from '../stdx/size.js';
import { UnreachableError, UsageError } from './exit.js';
import type { CliIo } from './io.js';

interface DaemonFlags {
  config?: string;
  monitors?: string;
  etcd?: string;
  monPort?: string;
  monDataDir?: string;
  monHost?: string;
  osdHost?: string;
  id?: string;
  osdPort?: string;
  osdDataDir?: string;
  deviceSize?: string;
  hostName?: string;
  nbdPort?: string;
  nbdHost?: string;
  iscsiPort?: string;
  iscsiHost?: string;
  iscsiTpgt?: string;
  gatewayDataDir?: string;
  idlePollUs?: string;
}

/** A port flag: digits only, so that "--osd-port abc" names the flag, not the config field. */
function portFlag(flag: string, s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  if (!/^\d{1,5}$/.test(s.trim()) || Number(s) > 65535) throw new UsageError(`${flag} must be a port number 0-65535, got ${JSON.stringify(s)}`);
  return Number(s);
}
function tpgtFlag(s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  if (!/^\d{1,5}$/.test(s.trim()) || Number(s) < 1 || Number(s) > 65535) throw new UsageError(`--iscsi-tpgt must be 1-65535, got ${JSON.stringify(s)}`);
  return Number(s);
}
const list = (s: string | undefined) => (s === undefined ? undefined : s.split(',').map((x) => x.trim()).filter(Boolean));

export function clusterConfigFromFlags(f: DaemonFlags, cwd: string): ClusterConfig {
  const flags: ClusterConfigInput = {
    cluster: { monitors: list(f.monitors), etcd: list(f.etcd) },
    mon: { host: f.monHost, port: portFlag('--mon-port', f.monPort), dataDir: f.monDataDir },
    osd: { host: f.osdHost, port: portFlag('--osd-port', f.osdPort), dataDir: f.osdDataDir, deviceSizeBytes: f.deviceSize, hostName: f.hostName },
    gateway: {
      dataDir: f.gatewayDataDir,
      nbd: { port: portFlag('--nbd-port', f.nbdPort), host: f.nbdHost },
      iscsi: { port: f.iscsiPort === 'off' ? 'off' : portFlag('--iscsi-port', f.iscsiPort), host: f.iscsiHost, tpgt: tpgtFlag(f.iscsiTpgt) },
      idlePollUs: parseIdlePollFlag(f.idlePollUs),
    },
  };
  try {
    const file = f.config === undefined ? undefined : { path: f.config, text: readConfigFileText(path.resolve(cwd, f.config)) };
    return resolveClusterConfig({ cwd, file, flags });
  } catch (err) {
    if (isTesseraError(err, 'ERR_INVALID')) throw new UsageError(err.message);
    throw err;
  }
}

/** Resolves when SIGINT/SIGTERM arrives. */
function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    const on = () => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve();
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

export function addClusterCommands(program: Command, { io, setStatus }: { io: CliIo; setStatus: (s: number) => void }): void {
  program
    .command('mon')
    .description('run a monitor: the cluster map on the embedded store (default) or etcd (--etcd)')
    .option('--monitors <list>', 'monitor addresses host:port,... (overrides cluster.monitors)')
    .option('--etcd <urls>', 'etcd endpoints http://host:port,...: several monitors share it, one is active')
    .option('--mon-host <addr>', 'address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)')
    .option('--mon-port <port>', 'port to listen on (default 6780)')
    .option('--mon-data-dir <dir>', 'embedded store directory (default ./tessera-mon)')
    .option('--id <id>', 'monitor id (default mon-<port>)')
    .addHelpText('after', '\nExamples:\n  $ tessera mon --config /etc/tessera/cluster.json\n  $ tessera mon --etcd http://10.0.0.1:2379 --mon-port 6781 --id b')
    .action(async (_o: unknown, cmd: Command) => {
      const f = cmd.optsWithGlobals<DaemonFlags>();
      const cfg = clusterConfigFromFlags(f, io.cwd);
      const log = new Logger('mon');
      warnMissingNodeArgs(log);
      const { runMonitor, MON_READY_PREFIX } = await import('../main/cluster-up.js');
      const mon = await runMonitor(cfg, f.id ?? `mon-${cfg.mon.port}`, log);
      io.out(`${MON_READY_PREFIX} ${mon.addr} (${cfg.etcd.length > 0 ? `etcd ${cfg.etcd.join(',')}` : `embedded store in ${cfg.mon.dataDir}`})\n`);
      await untilSignal();
      await mon.close();
      setStatus(0);
    });

  const osd = program.command('osd').description('run an OSD, or manage OSDs (out, in, rm)');
  osd
    .command('run', { isDefault: true })
    .description('run an OSD daemon: its device file, WAL and PG replicas in --osd-data-dir')
    .option('--monitors <list>', 'monitor addresses host:port,...')
    .option('--osd-host <addr>', 'address to listen on and register with the monitor: one the other machines reach (default 127.0.0.1)')
    .option('--osd-port <port>', 'RPC port (default 6800; 0 = any free port)')
    .option('--osd-data-dir <dir>', 'data directory (default ./tessera-osd)')
    .option('--device-size <size>', 'size of a new device file, e.g. 100G (sparse; only when formatting)')
    .option('--host-name <name>', 'failure-domain host name (default: this machine)')
    .addHelpText('after', '\nExamples:\n  $ tessera osd --config /etc/tessera/cluster.json --osd-data-dir /srv/osd.1 --osd-port 6801')
    .action(async (_o: unknown, cmd: Command) => {
      const f = cmd.optsWithGlobals<DaemonFlags>();
      const cfg = clusterConfigFromFlags(f, io.cwd);
      const log = new Logger('osd');
      warnMissingNodeArgs(log);
      const { runOsd, OSD_READY_PREFIX } = await import('../main/osd-daemon.js');
      const running = await runOsd(cfg, log, () => process.exit(1));
      io.out(`${OSD_READY_PREFIX} osd.${running.id} ${cfg.osd.host}:${running.port}\n`);
      await untilSignal();
      await running.stop();
      setStatus(0);
    });
  for (const [verb, what] of [
    ['out', 'take an OSD out of data placement: its PGs are re-replicated elsewhere'],
    ['in', 'put an OSD back into data placement'],
    ['rm', 'remove an OSD that is out and holds no PG'],
  ] as const) {
    osd
      .command(`${verb} <id>`)
      .description(what)
      .option('--monitors <list>', 'monitor addresses host:port,...')
      .addHelpText('after', `\nExamples:\n  $ tessera osd ${verb} 3 --monitors 127.0.0.1:6780`)
      .action(async (id: string, _o: unknown, cmd: Command) => {
        const f = cmd.optsWithGlobals<DaemonFlags>();
        const osdId = Number(id);
        if (!Number.isSafeInteger(osdId) || osdId < 1) throw new UsageError(`bad OSD id "${id}"`);
        const mon = await monClient(f, io);
        await mon.call((c) => (verb === 'out' ? c.osdOut(osdId) : verb === 'in' ? c.osdIn(osdId) : c.osdRm(osdId)));
        io.out(`osd.${osdId}: ${verb}\n`);
      });
  }

  program
    .command('gateway')
    .description('run a gateway: NBD export and management API of the cluster volumes')
    .option('--monitors <list>', 'monitor addresses host:port,...')
    .option('--nbd-port <port>', 'NBD port (default 10809)')
    .option('--nbd-host <host>', 'NBD address (default 127.0.0.1)')
    .option('--iscsi-port <port>', 'iSCSI port (default 3260; off = no iSCSI)')
    .option('--iscsi-host <host>', 'iSCSI address (default 127.0.0.1)')
    .option('--iscsi-tpgt <n>', 'target portal group tag of this gateway, 1-65535 (default 1; give each gateway of a cluster its own)')
    .option('--gateway-data-dir <dir>', 'gateway data directory: API socket, PID file, iscsi.json (default ./tessera-gateway)')
    .option('--idle-poll-us <us>', `after answering a connection's last request, poll for its next one this long instead of sleeping (lower latency at queue depth 1 for up to one CPU core; backs off when it does not pay; default ${IDLE_POLL_US_DEFAULT}, 0 = off)`)
    .addHelpText('after', '\nExamples:\n  $ tessera gateway --config /etc/tessera/cluster.json\n  $ tessera gateway --config cluster.json --iscsi-port 3261 --iscsi-tpgt 2 --nbd-port 10810 --gateway-data-dir gw2\n  $ nbdinfo nbd://127.0.0.1:10809/vol0\n  $ iscsi-ls -s iscsi://127.0.0.1:3260')
    .action(async (_o: unknown, cmd: Command) => {
      const f = cmd.optsWithGlobals<DaemonFlags>();
      const cfg = clusterConfigFromFlags(f, io.cwd);
      const { runGateway } = await import('../main/cluster-up.js');
      const log = new Logger('gateway');
      warnMissingNodeArgs(log);
      setStatus(await runGateway(cfg, { log, out: (l) => io.out(l + '\n') }, { createDefault: false }));
    });
}

async function monClient(f: DaemonFlags, io: CliIo) {
  const cfg = clusterConfigFromFlags(f, io.cwd);
  const { MonClient, MonUnavailableError } = await import('../mon/client.js');
  const { refClock } = await import('../io/node/clock.js');
  // refClock: a retry backoff must keep this process alive until the command ends.
  const client = new MonClient({ addrs: cfg.monitors, attemptsMax: 4, clock: refClock });
  return { call: <T>(fn: (c: InstanceType<typeof MonClient>) => Promise<T>): Promise<T> => monCall(client, cfg.monitors, fn, MonUnavailableError) };
}

/** Runs fn; "no monitor answered" becomes an UnreachableError (exit status 3) naming the addresses. */
async function monCall<C, T>(client: C, addrs: readonly string[], fn: (c: C) => Promise<T>, unavailable: new (m: string) => Error): Promise<T> {
  try {
    return await fn(client);
  } catch (err) {
    if (err instanceof unavailable) {
      throw new UnreachableError(err.message, `is a monitor running at ${addrs.join(', ')}? Point to it with --monitors HOST:PORT or cluster.monitors in --config`);
    }
    throw err;
  }
}

/** `tessera status --monitors ...`: the cluster view. */
export async function clusterStatus(f: DaemonFlags, io: CliIo, asJson: boolean): Promise<void> {
  const mon = await monClient(f, io);
  const s = await mon.call((c) => c.status());
  io.out(asJson ? JSON.stringify(s, null, 2) + '\n' : formatClusterStatus(s));
}

export function formatClusterStatus(s: ClusterStatus): string {
  const up = s.osds.filter((o) => o.up).length;
  const inn = s.osds.filter((o) => o.in).length;
  const lines = [
    `cluster ${s.fsid} (map epoch ${s.epoch})`,
    `health:   ${s.health}${s.checks.length > 0 ? '\n' + s.checks.map((c) => `          ${c}`).join('\n') : ''}`,
    `monitors: ${s.monitors.map((m) => `${m.id}${m.active ? ' (active)' : ''}`).join(', ')}`,
    `osds:     ${s.osds.length} total, ${up} up, ${inn} in`,
    `pgs:      ${Object.entries(s.pgStates).map(([k, v]) => `${v} ${k}`).join(', ')}`,
    `capacity: ${formatSize(s.capacity.usedBytes)} used of ${formatSize(s.capacity.totalBytes)}`,
    `recovery: ${s.recovery.pgsRecovering} PG(s) recovering, ${formatSize(s.recovery.bytesLeft)} left`,
    `pools:    ${s.pools.map((p) => `${p.name} (size ${p.size}, min_size ${p.minSize}, ${p.pgCount} PGs)`).join('; ')}`,
    `volumes:  ${s.volumes}`,
    '',
    'OSD  HOST             ADDRESS               UP    IN    LEADS  USED / CAPACITY',
    ...s.osds.map(
      (o) =>
        `${String(o.id).padEnd(4)} ${o.host.padEnd(16)} ${`${o.addr}:${o.port}`.padEnd(21)} ${(o.up ? 'up' : 'down').padEnd(5)} ${(o.in ? 'in' : 'out').padEnd(5)} ${String(o.leaderPgs).padStart(5)}  ${formatSize(o.usedBytes)} / ${formatSize(o.capacityBytes)}`,
    ),
  ];
  return lines.join('\n') + '\n';
}
