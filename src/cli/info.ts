// `tessera status`, `tessera device list` and `tessera iostat`: read-only views
// of the daemon (SPEC MGT1, DEV3) through the management API.
import { InvalidArgumentError, type Command } from 'commander';
import type { DeviceListResponse, StatusResponse } from '../api/types.js';
import { formatSize } from '../stdx/size.js';
import { formatDuration, formatPercent, formatTable, json } from './format.js';
import type { CliIo } from './io.js';
import { IOSTAT_INTERVAL_S_MIN, runIostat } from './iostat.js';
import { clientFor, type GlobalOptions } from './target.js';

export function formatDeviceList(res: DeviceListResponse): string {
  if (res.devices.length === 0) return 'no devices\n';
  return formatTable(
    [
      { header: 'NAME' },
      { header: 'PATH' },
      { header: 'SIZE', align: 'right' },
      { header: 'CHUNK', align: 'right' },
      { header: 'CHUNKS', align: 'right' },
      { header: 'USED', align: 'right' },
      { header: 'USE%', align: 'right' },
      { header: 'DIRECT_IO' },
      { header: 'IO_ERR', align: 'right' },
      { header: 'CSUM_ERR', align: 'right' },
    ],
    res.devices.map((d) => [
      d.name,
      d.path,
      formatSize(d.sizeBytes),
      formatSize(d.chunkSizeBytes),
      `${d.chunksUsed}/${d.chunksTotal}`,
      formatSize(d.chunksUsed * d.chunkSizeBytes),
      formatPercent(d.chunksUsed, d.chunksTotal),
      d.directIo ? 'yes' : 'no',
      String(d.ioErrors),
      String(d.checksumErrors),
    ]),
  );
}

export function formatStatus(s: StatusResponse): string {
  const lines: Array<[string, string]> = [['daemon', `tessera ${s.version}, pid ${s.pid}, up ${formatDuration(s.uptimeS)} (since ${s.startedAt})`]];
  if (s.daemon) {
    lines.push(['data dir', s.daemon.dataDir]);
    lines.push(['nbd', `${s.daemon.nbd.host}:${s.daemon.nbd.port} (${s.daemon.nbd.uris.length} export${s.daemon.nbd.uris.length === 1 ? '' : 's'})`]);
    lines.push(['api', `${s.daemon.api.socket}${s.daemon.api.port !== undefined ? `, http://127.0.0.1:${s.daemon.api.port}` : ''}`]);
  }
  const v = s.volumes;
  lines.push(['volumes', `${v.count}, ${formatSize(v.sizeBytes)} provisioned, ${formatSize(v.usedBytes)} used`]);
  const d = s.devices;
  lines.push([
    'devices',
    d.count === 0
      ? 'none'
      : `${d.count}, ${formatSize(d.sizeBytes)}, chunks ${d.chunksUsed}/${d.chunksTotal} used (${formatPercent(d.chunksUsed, d.chunksTotal)}), ${d.ioErrors} IO errors, ${d.checksumErrors} checksum errors`,
  ]);
  if (s.pools && s.pools.length > 1) {
    // Disk pools besides the data dir's own device: state, alarm and any running job.
    const text = s.pools
      .filter((p) => p.protection !== 'none')
      .map((p) => `${p.name} (${p.protection}, ${p.state}, ${Math.round(p.usedFraction * 100)} % used${p.alarm !== 'ok' ? `, ALARM ${p.alarm}` : ''}${p.job ? `, ${p.job} running` : ''})`)
      .join(', ');
    lines.push(['pools', text]);
  }
  const width = Math.max(...lines.map(([k]) => k.length)) + 1;
  return lines.map(([k, val]) => `${(k + ':').padEnd(width)} ${val}`).join('\n') + '\n';
}

function parseIntervalS(text: string): number {
  const v = Number(text);
  if (!Number.isFinite(v) || v < IOSTAT_INTERVAL_S_MIN) throw new InvalidArgumentError(`interval must be a number of seconds >= ${IOSTAT_INTERVAL_S_MIN}`);
  return v;
}

function parseCount(text: string): number {
  const v = Number(text);
  if (!Number.isSafeInteger(v) || v < 1) throw new InvalidArgumentError('count must be a positive integer');
  return v;
}

export function addInfoCommands(program: Command, { io }: { io: CliIo }): void {
  program
    .command('status')
    .description('show the daemon: version, uptime, NBD endpoint, volumes and devices')
    .option('--json', 'print the status as JSON')
    .option('--monitors <list>', 'show the cluster instead: health, OSDs up/in, PG states, capacity, recovery (monitor addresses host:port,...)')
    .addHelpText('after', '\nExamples:\n  $ tessera status\n  $ tessera status --data-dir /srv/tessera --json\n  $ tessera status --monitors 127.0.0.1:6780')
    .action(async (_opts: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions & { json?: boolean; monitors?: string }>();
      if (g.monitors !== undefined) {
        const { clusterStatus } = await import('./cluster.js');
        await clusterStatus(g, io, g.json === true);
        return;
      }
      const s = await clientFor(g, io).status();
      io.out(g.json ? json(s) : formatStatus(s));
    });

  program
    .command('device')
    .description('devices: list them; add, fail, replace or remove members of disk pools')
    .addHelpText('after', '\nExamples:\n  $ tessera device list\n  $ tessera device add fast /dev/nvme5n1\n  $ tessera device replace /dev/nvme2n1 /dev/nvme6n1 --wait')
    .command('list')
    .alias('ls')
    .description('list devices: size, chunks used, direct IO, error counters')
    .option('--json', 'print {devices} as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera device list\n  $ tessera device list --json')
    .action(async (_opts: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions & { json?: boolean }>();
      const res = await clientFor(g, io).devices();
      io.out(g.json ? json(res) : formatDeviceList(res));
    });

  program
    .command('iostat')
    .description('live IO statistics per device and per volume, like iostat -x')
    .argument('[interval]', 'seconds between reports (default 1)', parseIntervalS)
    .argument('[count]', 'number of reports (default: until interrupted)', parseCount)
    .option('--json', 'print one JSON object per report, one per line')
    .addHelpText(
      'after',
      `
Columns: r/s w/s (requests per second), rMB/s wMB/s (MB = 2^20 bytes),
r_p50 r_p99 w_p50 w_p99 (latency percentiles over the interval), inflight
(requests in progress now), errors (failed requests in the interval).

Examples:
  $ tessera iostat            # every second until Ctrl-C
  $ tessera iostat 5 12       # every 5 s, 12 reports
  $ tessera iostat 1 10 --json`,
    )
    .action(async (intervalS: number | undefined, count: number | undefined, _opts: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions & { json?: boolean }>();
      await runIostat(clientFor(g, io), io, { intervalS: intervalS ?? 1, count, json: g.json === true });
    });
}
