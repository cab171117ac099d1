// `tessera volume create|list|info|resize|rename|delete` (SPEC VOL1): thin
// volumes through the management API. Sizes are read with parseSize ("1T",
// "512M") and shown with formatSize; `--json` prints the API's objects as is.
//
// Deletion is destructive, so `volume delete` asks for the volume's name on a
// terminal and, when nobody can answer (stdin not a TTY: scripts, CI), refuses
// unless --yes is given (exit 2), like many operator tools.
import type { Command } from 'commander';
import type { ApiClient } from '../api/client.js';
import type { VolumeInfo, VolumeListResponse } from '../api/types.js';
import { formatSize, parseSize } from '../stdx/size.js';
import { UsageError } from './exit.js';
import { formatPercent, formatTable, json } from './format.js';
import type { CliIo } from './io.js';
import { clientFor, type GlobalOptions } from './target.js';

type Ctx = { io: CliIo };

export function formatVolumeList(res: VolumeListResponse): string {
  // The POOL column only when some volume is outside the default pool (single-device daemons look as before).
  const withPool = res.volumes.some((v) => v.pool !== undefined && v.pool !== 'default');
  const rows = res.volumes.map((v) => [v.name, formatSize(v.sizeBytes), formatSize(v.usedBytes), formatPercent(v.usedBytes, v.sizeBytes), ...(withPool ? [v.pool ?? ''] : []), v.createdAt]);
  const t = res.totals;
  rows.push([`total (${t.count} volume${t.count === 1 ? '' : 's'})`, formatSize(t.sizeBytes), formatSize(t.usedBytes), formatPercent(t.usedBytes, t.sizeBytes), ...(withPool ? [''] : []), '']);
  return formatTable([{ header: 'NAME' }, { header: 'SIZE', align: 'right' }, { header: 'USED', align: 'right' }, { header: 'USED%', align: 'right' }, ...(withPool ? [{ header: 'POOL' }] : []), { header: 'CREATED' }], rows);
}

export function formatVolumeInfo(v: VolumeInfo, nbdUri?: string): string {
  const lines: Array<[string, string]> = [
    ['name', v.name],
    ['id', String(v.id)],
    ['size', `${formatSize(v.sizeBytes)} (${v.sizeBytes} bytes)`],
    ['used', `${formatSize(v.usedBytes)} (${v.usedBytes} bytes, ${formatPercent(v.usedBytes, v.sizeBytes)})`],
    ['object size', formatSize(v.objectSizeBytes)],
    ...(v.pool !== undefined ? ([['pool', v.pool]] as Array<[string, string]>) : []),
    ['created', v.createdAt],
  ];
  if (nbdUri) lines.push(['nbd', nbdUri]);
  const width = Math.max(...lines.map(([k]) => k.length)) + 1;
  return lines.map(([k, val]) => `${(k + ':').padEnd(width)} ${val}`).join('\n') + '\n';
}

/** The NBD URI of a volume, if the daemon tells its endpoint (best effort: status may be unavailable). */
async function nbdUriOf(client: ApiClient, name: string): Promise<string | undefined> {
  try {
    const nbd = (await client.status()).daemon?.nbd;
    if (!nbd) return undefined;
    const host = nbd.host.includes(':') ? `[${nbd.host}]` : nbd.host;
    return `nbd://${host}:${nbd.port}/${name}`;
  } catch {
    return undefined;
  }
}

function globals(cmd: Command): GlobalOptions & { json?: boolean } {
  return cmd.optsWithGlobals();
}

export function addVolumeCommands(program: Command, { io }: Ctx): void {
  const volume = program
    .command('volume')
    .description('create, list, resize, rename and delete thin-provisioned volumes')
    .addHelpText(
      'after',
      `
Examples:
  $ tessera volume create data1 --size 1T
  $ tessera volume list
  $ tessera volume resize data1 --size 2T
  $ tessera volume delete data1 --yes`,
    );

  volume
    .command('create')
    .description('create a thin-provisioned volume (no space is used until data is written)')
    .argument('<name>', "volume name: 1-64 letters, digits, '.', '_' or '-'")
    .requiredOption('-s, --size <size>', 'provisioned size, e.g. 10G, 1T, 512M (binary units)')
    .option('-p, --pool <pool>', 'the disk pool to hold it (tessera pool list; default: the data dir\'s own device)')
    .option('--json', 'print the new volume as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera volume create data1 --size 1T\n  $ tessera volume create db --size 200G --pool fast\n  $ tessera volume create scratch -s 512M --json')
    .action(async (name: string, opts: { size: string; pool?: string }, cmd: Command) => {
      const g = globals(cmd);
      const sizeBytes = parseSize(opts.size);
      const client = clientFor(g, io);
      const info = await client.createVolume({ name, sizeBytes, ...(opts.pool !== undefined ? { pool: opts.pool } : {}) });
      if (g.json) return io.out(json(info));
      const uri = await nbdUriOf(client, info.name);
      io.out(`created volume ${info.name}: ${formatSize(info.sizeBytes)}${info.pool && opts.pool ? ` in pool ${info.pool}` : ''}${uri ? `, exported as ${uri}` : ''}\n`);
    });

  volume
    .command('list')
    .alias('ls')
    .description('list volumes with provisioned size and space used, and a total')
    .option('--json', 'print {volumes, totals} as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera volume list\n  $ tessera volume list --json | jq -r ".volumes[].name"')
    .action(async (_opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const res = await clientFor(g, io).listVolumes();
      io.out(g.json ? json(res) : formatVolumeList(res));
    });

  volume
    .command('info')
    .description('show one volume')
    .argument('<name>', 'volume name')
    .option('--json', 'print the volume as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera volume info vol0\n  $ tessera volume info vol0 --json')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const client = clientFor(g, io);
      const info = await client.getVolume(name);
      if (g.json) return io.out(json(info));
      io.out(formatVolumeInfo(info, await nbdUriOf(client, info.name)));
    });

  volume
    .command('resize')
    .description('grow or shrink a volume; shrinking below written data needs --discard-data')
    .argument('<name>', 'volume name')
    .requiredOption('-s, --size <size>', 'new provisioned size, e.g. 2T')
    .option('--discard-data', 'allow shrinking below written data: the data past the new end is lost')
    .option('--json', 'print the resized volume as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera volume resize data1 --size 2T\n  $ tessera volume resize data1 --size 100G --discard-data')
    .action(async (name: string, opts: { size: string; discardData?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const sizeBytes = parseSize(opts.size);
      const client = clientFor(g, io);
      const before = await client.getVolume(name);
      const info = await client.patchVolume(name, { sizeBytes, discardData: opts.discardData === true });
      if (g.json) return io.out(json(info));
      io.out(`resized volume ${info.name}: ${formatSize(before.sizeBytes)} -> ${formatSize(info.sizeBytes)}\n`);
    });

  volume
    .command('rename')
    .description('rename a volume (its NBD export name changes with it)')
    .argument('<old>', 'current name')
    .argument('<new>', 'new name')
    .option('--json', 'print the renamed volume as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera volume rename data1 db-primary')
    .action(async (oldName: string, newName: string, _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const info = await clientFor(g, io).patchVolume(oldName, { newName });
      if (g.json) return io.out(json(info));
      io.out(`renamed volume ${oldName} to ${info.name}\n`);
    });

  volume
    .command('delete')
    .alias('rm')
    .description('delete a volume and all its data (asks on a terminal; needs --yes otherwise)')
    .argument('<name>', 'volume name')
    .option('-y, --yes', 'do not ask for confirmation')
    .option('--json', 'print {deleted: NAME} as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera volume delete scratch          # asks you to type the name\n  $ tessera volume delete scratch --yes    # scripts')
    .action(async (name: string, opts: { yes?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const client = clientFor(g, io);
      if (!opts.yes) {
        if (!io.interactive) throw new UsageError(`refusing to delete volume "${name}" without --yes (no terminal to ask for confirmation)`);
        const info = await client.getVolume(name); // ERR_NOT_FOUND before asking
        const answer = await io.prompt(
          `Delete volume "${name}" (${formatSize(info.sizeBytes)}, ${formatSize(info.usedBytes)} used)? Its data cannot be recovered.\nType the volume name to confirm: `,
        );
        if (answer.trim() !== name) throw new UsageError(`not deleted: the answer did not match "${name}"`);
      }
      await client.deleteVolume(name);
      io.out(g.json ? json({ deleted: name }) : `deleted volume ${name}\n`);
    });
}
