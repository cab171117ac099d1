// `tessera pool create|list|info|rebuild|delete` and `tessera device
// add|fail|replace|remove` (issue 4, SPEC ENG6-ENG9): disk pools through the
// management API. Device paths are resolved against the CLI's working
// directory before they are sent (the daemon's differs). `--wait` follows a
// rebuild or drain with a progress bar (redrawn in place on a terminal, one
// line per 10 % otherwise) and fails (exit 1) if the job failed or left
// containers unrebuilt.
import path from 'node:path';
import type { Command } from 'commander';
import type { ApiClient } from '../api/client.js';
import type { PoolInfo, PoolListResponse, PoolRebuildInfo } from '../api/types.js';
import { TesseraError } from '../stdx/errors.js';
import { formatSize, parseSize } from '../stdx/size.js';
import { UsageError } from './exit.js';
import { formatDuration, formatPercent, formatTable, json } from './format.js';
import type { CliIo } from './io.js';
import { clientFor, type GlobalOptions } from './target.js';

/** How often --wait asks for progress. */
const WAIT_POLL_MS = 500;
const BAR_WIDTH = 30;

type G = GlobalOptions & { json?: boolean };

export function formatPoolList(res: PoolListResponse): string {
  return formatTable(
    [{ header: 'NAME' }, { header: 'PROTECTION' }, { header: 'STRIPE' }, { header: 'STATE' }, { header: 'DEVICES', align: 'right' }, { header: 'SIZE', align: 'right' }, { header: 'USED%', align: 'right' }, { header: 'ALARM' }, { header: 'VOLUMES', align: 'right' }, { header: 'JOB' }],
    res.pools.map((p) => [
      p.name,
      p.protection,
      p.protection === 'none' ? '-' : `${p.stripe.data}+${p.stripe.parity}`,
      p.state,
      `${p.members.filter((m) => m.state === 'ok' || m.state === 'draining').length}/${p.members.filter((m) => m.state !== 'out').length}`,
      formatSize(p.sizeBytes),
      formatPercent(p.capacity.usedChunks, p.capacity.totalChunks),
      p.capacity.alarm,
      String(p.volumes),
      p.rebuild?.running ? `${p.rebuild.kind} ${formatPercent(p.rebuild.bytesDone, p.rebuild.bytesTotal)}` : '-',
    ]),
  );
}

export function progressBar(done: number, total: number): string {
  const f = total > 0 ? Math.min(1, done / total) : 1;
  const filled = Math.round(f * BAR_WIDTH);
  return `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] ${String(Math.floor(f * 100)).padStart(3)} %`;
}

function jobLine(r: PoolRebuildInfo): string {
  const eta = r.running ? (r.etaMs === null ? ', ETA -' : `, ETA ${formatDuration(r.etaMs / 1000)}`) : '';
  const extra = [r.unrecoverable > 0 ? `${r.unrecoverable} lost beyond parity` : '', r.noRoom > 0 ? `${r.noRoom} without room` : '', r.error ? `failed: ${r.error}` : ''].filter(Boolean).join(', ');
  return `${r.kind} ${progressBar(r.bytesDone, r.bytesTotal)} ${r.containersDone}/${r.containersTotal} containers, ${formatSize(r.bytesDone)}/${formatSize(r.bytesTotal)}${eta}${r.running ? '' : ', done'}${extra ? `; ${extra}` : ''}`;
}

export function formatPoolInfo(p: PoolInfo): string {
  const c = p.capacity;
  const lines: Array<[string, string]> = [
    ['name', p.name],
    ['protection', p.protection === 'none' ? 'none (one device)' : `${p.protection}, ${p.stripe.data}+${p.stripe.parity} chunks of ${formatSize(p.chunkBytes)}`],
    ['state', p.state + (p.error ? `: ${p.error}` : '') + (p.degraded.one + p.degraded.more > 0 ? ` (${p.degraded.one} container(s) lack one chunk, ${p.degraded.more} lack two or more)` : '')],
    ['size', `${formatSize(p.sizeBytes)} of address space, ${p.volumes} volume(s)`],
    ['capacity', `${c.usedChunks}/${c.totalChunks} chunks used (${formatPercent(c.usedChunks, c.totalChunks)}), alarm ${c.alarm} (warning at ${Math.round(c.thresholds.warning * 100)} %, critical at ${Math.round(c.thresholds.critical * 100)} %)`],
  ];
  if (p.protection !== 'none') lines.push(['containers', `${p.containers}${p.narrowed > 0 ? ` (${p.narrowed} narrower than ${p.stripe.data}+${p.stripe.parity}: widened once devices have room)` : ''}, ${p.repairedBlocks} block(s) repaired from redundancy`]);
  if (p.rebuild) lines.push(['rebuild', jobLine(p.rebuild)]);
  const width = Math.max(...lines.map(([k]) => k.length)) + 1;
  const head = lines.map(([k, v]) => `${(k + ':').padEnd(width)} ${v}`).join('\n') + '\n\n';
  const table = formatTable(
    [{ header: 'MEMBER', align: 'right' }, { header: 'PATH' }, { header: 'STATE' }, { header: 'CHUNKS', align: 'right' }, { header: 'USE%', align: 'right' }, { header: 'WEAR', align: 'right' }],
    p.members.map((m) => [String(m.index), m.path || '-', m.state, `${m.chunksUsed}/${m.chunksTotal}`, formatPercent(m.chunksUsed, m.chunksTotal), `${(m.wear * 100).toFixed(m.wear < 0.1 ? 3 : 1)}%`]),
  );
  return head + table;
}

/** Polls the pool until its job ends, drawing progress; returns the final info. Throws if the job failed. */
export async function waitForJob(client: ApiClient, name: string, io: CliIo, quiet: boolean): Promise<PoolInfo> {
  let lastDecile = -1;
  for (;;) {
    const p = await client.getPool(name);
    const r = p.rebuild;
    if (!quiet && r) {
      if (io.interactive) io.err(`\r${jobLine(r)}\x1b[K`);
      else {
        const decile = Math.floor((10 * r.bytesDone) / Math.max(1, r.bytesTotal));
        if (decile !== lastDecile || !r.running) io.err(`${jobLine(r)}\n`);
        lastDecile = decile;
      }
    }
    if (!r || !r.running) {
      if (!quiet && io.interactive) io.err('\n');
      if (r?.error) throw new TesseraError('ERR_DEVICE_IO', `${r.kind} of pool ${name} failed: ${r.error}`);
      if (r && (r.unrecoverable > 0 || r.noRoom > 0)) {
        throw new TesseraError('ERR_NO_SPACE', `${r.kind} of pool ${name} left ${r.noRoom} container(s) without a device with room and ${r.unrecoverable} lost beyond their parity (add a device: tessera device add ${name} PATH)`);
      }
      return p;
    }
    await io.sleepMs(WAIT_POLL_MS);
  }
}

/** "80,95" (percent) -> thresholds as fractions. */
export function parseAlarmAt(text: string): { warning: number; critical: number } {
  const parts = text.split(',').map((s) => Number(s.trim().replace(/%$/, '')));
  if (parts.length !== 2 || parts.some((p) => !Number.isFinite(p)) || !(parts[0] > 0 && parts[0] < parts[1] && parts[1] <= 100)) {
    throw new UsageError(`--alarm-at must be WARNING,CRITICAL percentages with 0 < WARNING < CRITICAL <= 100, e.g. 80,95 (got ${text})`);
  }
  return { warning: parts[0] / 100, critical: parts[1] / 100 };
}

function sizeOpt(text: string | undefined): number | undefined {
  return text === undefined ? undefined : parseSize(text);
}

function parseStripeWidth(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const v = Number(text);
  if (!Number.isInteger(v) || v < 1 || v > 30) throw new UsageError(`--stripe-width must be an integer in [1, 30], got ${text}`);
  return v;
}

const PROTECTIONS = ['mirror2', 'mirror3', 'raid5', 'raid6'] as const;

export function addPoolCommands(program: Command, { io }: { io: CliIo }): void {
  const abs = (p: string): string => path.resolve(io.cwd, p);
  const pool = program
    .command('pool')
    .description('disk pools: several devices of this machine with mirror, RAID5 or RAID6 protection')
    .addHelpText(
      'after',
      `
Examples:
  $ tessera pool create fast --devices /dev/nvme1n1,/dev/nvme2n1,/dev/nvme3n1,/dev/nvme4n1 --protection raid5
  $ tessera pool create lab --devices a.img,b.img,c.img,d.img,e.img,f.img --protection raid6 --device-size 8G
  $ tessera volume create db --size 100G --pool fast
  $ tessera pool info fast
  $ tessera pool rebuild fast --wait`,
    );

  pool
    .command('create')
    .description('make a pool of devices; their old contents are overwritten')
    .argument('<name>', "pool name: 1-64 letters, digits, '.', '_' or '-'")
    .requiredOption('-d, --devices <paths>', 'comma-separated files or block devices (files that do not exist are created with --device-size)')
    .requiredOption('--protection <kind>', `${PROTECTIONS.join(', ')}`)
    .option('--stripe-width <k>', 'data chunks per container for raid5/raid6 (default: devices - parity - 1, at least 2, at most 8)')
    .option('--device-size <size>', 'size of each device file to create, e.g. 8G (sparse)')
    .option('--alarm-at <pcts>', 'used-capacity alarms: WARNING,CRITICAL percent (default 80,95)')
    .option('--json', 'print the new pool as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera pool create fast --devices /dev/nvme1n1,/dev/nvme2n1,/dev/nvme3n1 --protection raid5\n  $ tessera pool create m --devices /srv/a.img,/srv/b.img --protection mirror2 --device-size 4G')
    .action(async (name: string, opts: { devices: string; protection: string; stripeWidth?: string; deviceSize?: string; alarmAt?: string }, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      if (!(PROTECTIONS as readonly string[]).includes(opts.protection)) throw new UsageError(`--protection must be one of ${PROTECTIONS.join(', ')}, got ${opts.protection}`);
      const devices = opts.devices.split(',').map((s) => s.trim()).filter((s) => s !== '').map(abs);
      if (devices.length === 0) throw new UsageError('--devices needs at least one path');
      const info = await clientFor(g, io).createPool({
        name,
        devices,
        protection: opts.protection as (typeof PROTECTIONS)[number],
        ...(opts.stripeWidth !== undefined ? { stripeWidth: parseStripeWidth(opts.stripeWidth) } : {}),
        ...(opts.deviceSize !== undefined ? { deviceSizeBytes: sizeOpt(opts.deviceSize) } : {}),
        ...(opts.alarmAt !== undefined ? { alarms: parseAlarmAt(opts.alarmAt) } : {}),
      });
      if (g.json) return io.out(json(info));
      io.out(`created pool ${info.name}: ${info.protection} ${info.stripe.data}+${info.stripe.parity} on ${info.members.length} devices, ${formatSize(info.sizeBytes)}\n`);
      io.out(`next: tessera volume create NAME --size 10G --pool ${info.name}\n`);
    });

  pool
    .command('list')
    .alias('ls')
    .description('list pools: protection, state, devices in service, capacity, alarm, running job')
    .option('--json', 'print {pools} as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera pool list\n  $ tessera pool list --json')
    .action(async (_opts: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      const res = await clientFor(g, io).listPools();
      io.out(g.json ? json(res) : formatPoolList(res));
    });

  pool
    .command('info')
    .description('show a pool: protection state, capacity and alarm, rebuild progress and ETA, and each device with its wear')
    .argument('<name>', 'pool name')
    .option('--json', 'print the pool as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera pool info fast\n  $ tessera pool info fast --json')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      const p = await clientFor(g, io).getPool(name);
      io.out(g.json ? json(p) : formatPoolInfo(p));
    });

  pool
    .command('set')
    .description('change a pool setting: its used-capacity alarm thresholds')
    .argument('<name>', 'pool name')
    .requiredOption('--alarm-at <pcts>', 'WARNING,CRITICAL percent, e.g. 70,90')
    .option('--json', 'print the pool as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera pool set fast --alarm-at 70,90')
    .action(async (name: string, opts: { alarmAt: string }, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      const p = await clientFor(g, io).patchPool(name, { alarms: parseAlarmAt(opts.alarmAt) });
      io.out(g.json ? json(p) : `pool ${p.name}: alarms at ${Math.round(p.capacity.thresholds.warning * 100)} % and ${Math.round(p.capacity.thresholds.critical * 100)} %; now ${p.capacity.alarm} (${formatPercent(p.capacity.usedChunks, p.capacity.totalChunks)} used)\n`);
    });

  pool
    .command('rebuild')
    .description('restore redundancy now (the daemon also starts it by itself after a failure); --wait shows a progress bar')
    .argument('<name>', 'pool name')
    .option('-w, --wait', 'wait until it is done, with a progress bar; exit 1 if it failed or left containers degraded')
    .option('--json', 'print the pool as JSON (at the end with --wait)')
    .addHelpText('after', '\nExamples:\n  $ tessera pool rebuild fast --wait\n  $ tessera pool rebuild fast && tessera pool info fast')
    .action(async (name: string, opts: { wait?: boolean }, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      const client = clientFor(g, io);
      let p = await client.rebuildPool(name);
      if (opts.wait) p = await waitForJob(client, name, io, g.json === true);
      io.out(g.json ? json(p) : `pool ${p.name}: ${p.state}${p.rebuild && !opts.wait ? `; ${jobLine(p.rebuild)}` : ''}\n`);
    });

  pool
    .command('delete')
    .alias('rm')
    .description('forget an empty pool (its devices are free again; delete its volumes first)')
    .argument('<name>', 'pool name')
    .option('-y, --yes', 'do not ask for confirmation')
    .addHelpText('after', '\nExamples:\n  $ tessera pool delete lab --yes')
    .action(async (name: string, opts: { yes?: boolean }, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      const client = clientFor(g, io);
      if (!opts.yes) {
        if (!io.interactive) throw new UsageError(`refusing to delete pool "${name}" without --yes (no terminal to ask for confirmation)`);
        const answer = await io.prompt(`Delete pool "${name}"? Type the pool name to confirm: `);
        if (answer.trim() !== name) throw new UsageError(`not deleted: the answer did not match "${name}"`);
      }
      await client.deletePool(name);
      io.out(g.json ? json({ deleted: name }) : `deleted pool ${name}\n`);
    });

  const device = program.commands.find((c) => c.name() === 'device');
  if (!device) throw new Error('the device command must be registered before the pool commands');
  const done = (g: G, p: PoolInfo, what: string): void => io.out(g.json ? json(p) : `${what}; pool ${p.name} is ${p.state}${p.rebuild?.running ? ` (${p.rebuild.kind} running: tessera pool info ${p.name})` : ''}\n`);

  device
    .command('add')
    .description('add a device to a pool (new containers use it; a waiting rebuild starts)')
    .argument('<pool>', 'pool name')
    .argument('<device>', 'file or block device')
    .option('--size <size>', 'create the file with this size if it does not exist (sparse)')
    .option('--json', 'print the pool as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera device add fast /dev/nvme5n1\n  $ tessera device add lab g.img --size 8G')
    .action(async (poolName: string, dev: string, opts: { size?: string }, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      const p = await clientFor(g, io).addDevice(poolName, { path: abs(dev), ...(opts.size !== undefined ? { deviceSizeBytes: sizeOpt(opts.size) } : {}) });
      done(g, p, `added ${abs(dev)}`);
    });

  device
    .command('partition')
    .description('split a device into N equal partitions (p1..pN), each usable as a pool member as DEV#pK, each with its own IO limits')
    .argument('<device>', 'file or block device (not in a pool)')
    .requiredOption('-n, --count <n>', 'number of partitions (1-32)')
    .option('--iops <n>', 'IO operations per second allowed to each partition (default unlimited)')
    .option('--bandwidth <size>', 'bytes per second allowed to each partition, e.g. 200M (default unlimited)')
    .option('--size <size>', 'create the file with this size if it does not exist (sparse)')
    .option('--json', 'print the partitions as JSON')
    .addHelpText(
      'after',
      `
A pool never puts two chunks of one container on partitions of one device, so
losing the device loses no more than one chunk of each container.

Examples:
  $ tessera device partition /dev/nvme0n1 --count 4 --iops 20000
  $ tessera pool create p --devices /dev/nvme0n1#p1,/dev/nvme1n1#p1,/dev/nvme2n1#p1 --protection raid5`,
    )
    .action(async (dev: string, opts: { count: string; iops?: string; bandwidth?: string; size?: string }, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      const count = Number(opts.count);
      if (!Number.isInteger(count) || count < 1 || count > 32) throw new UsageError(`--count must be an integer in [1, 32], got ${opts.count}`);
      const iops = opts.iops === undefined ? undefined : Number(opts.iops);
      if (iops !== undefined && !(Number.isInteger(iops) && iops >= 0)) throw new UsageError(`--iops must be a non-negative integer, got ${opts.iops}`);
      const res = await clientFor(g, io).partitionDevice({
        path: abs(dev),
        count,
        ...(iops !== undefined ? { iopsLimit: iops } : {}),
        ...(opts.bandwidth !== undefined ? { bandwidthBytesPerSec: sizeOpt(opts.bandwidth) } : {}),
        ...(opts.size !== undefined ? { deviceSizeBytes: sizeOpt(opts.size) } : {}),
      });
      if (g.json) return io.out(json(res));
      io.out(
        formatTable(
          [{ header: 'PARTITION' }, { header: 'SIZE', align: 'right' }, { header: 'IOPS', align: 'right' }, { header: 'BANDWIDTH', align: 'right' }],
          res.partitions.map((p) => [p.path, formatSize(p.sizeBytes), p.iopsLimit ? String(p.iopsLimit) : 'unlimited', p.bandwidthBytesPerSec ? `${formatSize(p.bandwidthBytesPerSec)}/s` : 'unlimited']),
        ),
      );
    });

  device
    .command('fail')
    .description('take a device out of service as if it failed (tests, or a device you distrust); the pool rebuilds onto the others')
    .argument('<device>', 'a pool member')
    .option('--json', 'print the pool as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera device fail /dev/nvme2n1')
    .action(async (dev: string, _opts: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      done(g, await clientFor(g, io).deviceAction('fail', { path: abs(dev) }), `failed ${abs(dev)}`);
    });

  device
    .command('replace')
    .description('replace a pool member by a new device and rebuild onto it')
    .argument('<old>', 'the member to replace (failed or not)')
    .argument('<new>', 'the new file or block device')
    .option('--size <size>', 'create the new file with this size if it does not exist (sparse)')
    .option('-w, --wait', 'wait for the rebuild, with a progress bar')
    .option('--json', 'print the pool as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera device replace /dev/nvme2n1 /dev/nvme6n1 --wait')
    .action(async (oldDev: string, newDev: string, opts: { size?: string; wait?: boolean }, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      const client = clientFor(g, io);
      let p = await client.deviceAction('replace', { path: abs(oldDev), newPath: abs(newDev), ...(opts.size !== undefined ? { deviceSizeBytes: sizeOpt(opts.size) } : {}) });
      if (opts.wait) p = await waitForJob(client, p.name, io, g.json === true);
      done(g, p, `replaced ${abs(oldDev)} by ${abs(newDev)}`);
    });

  device
    .command('remove')
    .alias('rm')
    .description('remove a device from its pool: its chunks move to the other devices first, so redundancy is kept')
    .argument('<device>', 'a pool member')
    .option('-w, --wait', 'wait until its chunks have moved, with a progress bar')
    .option('--json', 'print the pool as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera device remove /dev/nvme3n1 --wait')
    .action(async (dev: string, opts: { wait?: boolean }, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      const client = clientFor(g, io);
      let p = await client.deviceAction('remove', { path: abs(dev) });
      if (opts.wait) p = await waitForJob(client, p.name, io, g.json === true);
      done(g, p, opts.wait ? `removed ${abs(dev)}` : `removing ${abs(dev)}`);
    });
}
