// `tessera up`: parse the daemon's flags into a config (main/config.ts) and run
// it in the foreground (main/up.ts). Config errors are usage errors (exit 2).
import path from 'node:path';
import type { Command } from 'commander';
import { readConfigFileText } from '../io/node/api-files.js';
import { resolveConfig, type Config, type ConfigInput, type DirectIoMode } from '../main/config.js';
import { IDLE_POLL_US_DEFAULT, IDLE_POLL_US_MAX } from '../gateway/idle-poll.js';
import { loadRealDeps, runUp, type UpDeps } from '../main/up.js';
import { warnMissingNodeArgs } from '../main/node-flags.js';
import { isTesseraError } from '../stdx/errors.js';
import { Logger } from '../stdx/log.js';
import { UsageError } from './exit.js';
import type { CliIo } from './io.js';
import type { GlobalOptions } from './target.js';

interface UpFlags extends GlobalOptions {
  nbdHost?: string;
  nbdPort?: string;
  iscsiHost?: string;
  iscsiPort?: string;
  device?: string;
  deviceSize?: string;
  directIo?: string;
  volumeName?: string;
  volumeSize?: string;
  apiPort?: string;
  idlePollUs?: string;
}

/** Flags → config input; numbers stay NaN when malformed so the schema reports them by flag name. */
export function configFromFlags(f: UpFlags, cwd: string): Config {
  const flags: ConfigInput = {
    dataDir: f.dataDir,
    nbd: { host: f.nbdHost, port: f.nbdPort === undefined ? undefined : Number(f.nbdPort) },
    iscsi: { host: f.iscsiHost, port: parseIscsiPort(f.iscsiPort) },
    api: { socket: f.socket, port: f.apiPort === undefined ? undefined : Number(f.apiPort) },
    device: { path: f.device, sizeBytes: f.deviceSize, directIo: f.directIo as DirectIoMode | undefined },
    defaultVolume: { name: f.volumeName, sizeBytes: f.volumeSize },
    gateway: { idlePollUs: parseIdlePollFlag(f.idlePollUs) },
  };
  try {
    const file = f.config === undefined ? undefined : { path: f.config, text: readConfigFileText(path.resolve(cwd, f.config)) };
    return resolveConfig({ cwd, file, flags });
  } catch (err) {
    if (isTesseraError(err, 'ERR_INVALID')) throw new UsageError(err.message);
    throw err;
  }
}

/** `--idle-poll-us` (up and gateway): digits only, 0..IDLE_POLL_US_MAX; anything else is a usage error naming the flag. */
export function parseIdlePollFlag(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{1,5}$/.test(v.trim()) || Number(v) > IDLE_POLL_US_MAX) {
    throw new UsageError(`--idle-poll-us must be 0-${IDLE_POLL_US_MAX} microseconds (0 = off), got ${JSON.stringify(v)}`);
  }
  return Number(v);
}

/** `--iscsi-port off` (or -1) disables the iSCSI server; malformed stays NaN for the schema. */
export function parseIscsiPort(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  return v === 'off' ? -1 : Number(v);
}

export function addUpCommand(program: Command, ctx: { io: CliIo; setStatus: (s: number) => void; deps?: () => Promise<UpDeps> }): void {
  program
    .command('up')
    .description('start the single-machine daemon in the foreground: local engine, NBD server, management API')
    .option('--nbd-host <host>', 'address the NBD server binds (default 127.0.0.1)')
    .option('--nbd-port <port>', 'NBD TCP port (default 10809; 0 = any free port)')
    .option('--iscsi-host <host>', 'address the iSCSI portal binds (default 127.0.0.1)')
    .option('--iscsi-port <port>', 'iSCSI TCP port (default 3260; 0 = any free port; off = no iSCSI)')
    .option('--device <path>', 'device file or block device (default <data-dir>/dev0.img)')
    .option('--device-size <size>', 'size of a new device file, e.g. 16G (only when formatting; sparse)')
    .option('--direct-io <mode>', 'bypass the page cache with O_DIRECT: off (default: page cache, flushed with fdatasync), on, or auto (on where the file system supports it); with --osds for every OSD device')
    .option('--volume-name <name>', 'name of the volume created on a new device (default vol0)')
    .option('--volume-size <size>', 'size of that volume, e.g. 10G (default 10G)')
    .option('--api-port <port>', 'also serve the API on 127.0.0.1:PORT (writes need <data-dir>/api.token)')
    .option('--idle-poll-us <us>', `after answering a connection's last request, keep polling for its next one this long instead of sleeping: lower latency at queue depth 1 for up to one CPU core while such IO lasts; backs off when it does not pay (default ${IDLE_POLL_US_DEFAULT}; 0 = off, ${IDLE_POLL_US_MAX} at most)`)
    .option('--osds <n>', 'start a replicated single-machine cluster instead: a monitor, N OSD processes (pool size min(3,N), min_size min(2,N); OSDs on ports mon-port+21..) and the gateway')
    .option('--mon-port <port>', 'with --osds: monitor port (default 6780; OSDs use 6801..)')
    .addHelpText(
      'after',
      `
On the first start the device is formatted and the default volume created;
later starts reopen the same device and volumes. Stop with Ctrl-C or SIGTERM.
The line "tessera: ready" is printed once everything listens.

Examples:
  $ tessera up
  $ tessera up --osds 3                       # monitor + 3 OSD processes + gateway, pool size 3
  $ tessera up --data-dir /srv/tessera --nbd-port 10810 --device-size 100G
  $ tessera up --config /etc/tessera.json --nbd-host 0.0.0.0
  $ tessera up --idle-poll-us 0                # never poll: save CPU on a shared host
  $ nbdinfo nbd://127.0.0.1:10809/vol0      # from another shell
  $ iscsi-ls -s iscsi://127.0.0.1:3260       # the default target, every volume a LUN`,
    )
    .action(async (_opts: unknown, cmd: Command) => {
      const flags = cmd.optsWithGlobals<UpFlags & { osds?: string; monPort?: string }>();
      const config = configFromFlags(flags, ctx.io.cwd);
      const log = new Logger('tessera');
      warnMissingNodeArgs(log);
      if (flags.osds !== undefined) {
        const osds = Number(flags.osds);
        if (!Number.isInteger(osds) || osds < 1 || osds > 64) throw new UsageError(`--osds must be an integer in [1, 64], got ${flags.osds}`);
        const monPort = flags.monPort === undefined ? 6780 : Number(flags.monPort);
        if (!Number.isInteger(monPort) || monPort < 1 || monPort > 65535) throw new UsageError(`--mon-port must be a port number, got ${flags.monPort}`);
        if (monPort + 20 + osds > 65535) throw new UsageError(`--mon-port ${monPort} leaves no room for ${osds} OSD ports (mon-port+21..mon-port+${20 + osds} must be <= 65535)`);
        const { runClusterUp } = await import('../main/cluster-up.js');
        ctx.setStatus(
          await runClusterUp(
            { dataDir: config.dataDir, osds, monPort, osdPortBase: monPort + 20, nbd: config.nbd, iscsi: config.iscsi, idlePollUs: config.gateway.idlePollUs, deviceSizeBytes: config.device.sizeBytes, directIo: config.device.directIo, volume: config.defaultVolume },
            { log, out: (line) => ctx.io.out(line + '\n') },
          ),
        );
        return;
      }
      const deps = await (ctx.deps ?? loadRealDeps)();
      ctx.setStatus(await runUp(config, deps, { log, out: (line) => ctx.io.out(line + '\n') }));
    });
}
