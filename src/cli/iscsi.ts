// `tessera iscsi target create|list|delete`, `tessera iscsi lun map|unmap` and
// `tessera iscsi target set` (issue 5, SPEC EXP2): iSCSI targets through the
// management API. The default target maps every volume by itself; other
// targets map the volumes given to them. CHAP secrets may come from the
// environment (TESSERA_CHAP_SECRET, TESSERA_CHAP_MUTUAL_SECRET) so they do not
// show in `ps`.
import type { Command } from 'commander';
import type { IscsiChapRequest, IscsiTargetInfo, IscsiTargetListResponse } from '../api/types.js';
import { formatSize } from '../stdx/size.js';
import { UsageError } from './exit.js';
import { formatTable, json } from './format.js';
import type { CliIo } from './io.js';
import { clientFor, type GlobalOptions } from './target.js';

type G = GlobalOptions & { json?: boolean };

interface ChapFlags {
  chapUser?: string;
  chapSecret?: string;
  mutualUser?: string;
  mutualSecret?: string;
}

export function formatTargetList(res: IscsiTargetListResponse): string {
  const portal = `${res.portal.host.includes(':') ? `[${res.portal.host}]` : res.portal.host}:${res.portal.port}`;
  const table = formatTable(
    [{ header: 'TARGET' }, { header: 'LUNS', align: 'right' }, { header: 'INITIATORS' }, { header: 'AUTH' }, { header: 'SESSIONS', align: 'right' }],
    res.targets.map((t) => [t.name + (t.isDefault ? ' (default)' : ''), String(t.luns.length), t.initiators.length === 0 ? 'any' : t.initiators.join(','), authOf(t), String(t.sessions)]),
  );
  const luns = res.targets
    .filter((t) => t.luns.length > 0)
    .map((t) => t.luns.map((l) => `  iscsi://${portal}/${t.name}/${l.lun}  ${l.volume} (${formatSize(l.sizeBytes)})`).join('\n'))
    .join('\n');
  return `portal ${portal}\n${table}${luns ? `\n${luns}\n` : ''}`;
}

function authOf(t: IscsiTargetInfo): string {
  if (t.chap === null) return 'none';
  return t.chap.mutualUser ? `mutual CHAP (${t.chap.user}/${t.chap.mutualUser})` : `CHAP (${t.chap.user})`;
}

/** CHAP flags → request; secrets fall back to the environment. Undefined when no CHAP flag was given. */
export function chapFromFlags(f: ChapFlags, env: NodeJS.ProcessEnv): IscsiChapRequest | undefined {
  const secret = f.chapSecret ?? env.TESSERA_CHAP_SECRET;
  const mutualSecret = f.mutualSecret ?? env.TESSERA_CHAP_MUTUAL_SECRET;
  if (f.chapUser === undefined) {
    if (f.chapSecret !== undefined || f.mutualUser !== undefined || f.mutualSecret !== undefined) throw new UsageError('--chap-secret, --mutual-user and --mutual-secret need --chap-user');
    return undefined;
  }
  if (secret === undefined) throw new UsageError('--chap-user needs --chap-secret (or TESSERA_CHAP_SECRET in the environment)');
  if ((f.mutualUser === undefined) !== (mutualSecret === undefined)) throw new UsageError('mutual CHAP needs both --mutual-user and --mutual-secret (or TESSERA_CHAP_MUTUAL_SECRET)');
  return { user: f.chapUser, secret, ...(f.mutualUser !== undefined ? { mutualUser: f.mutualUser, mutualSecret } : {}) };
}

function listOpt(v: string | undefined): string[] | undefined {
  return v === undefined ? undefined : v.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

function lunOpt(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 16383) throw new UsageError(`--lun must be 0..16383, got ${v}`);
  return n;
}

export function addIscsiCommands(program: Command, { io }: { io: CliIo }): void {
  const iscsi = program
    .command('iscsi')
    .description('iSCSI targets: which volumes are LUNs of which target, who may log in, CHAP')
    .addHelpText(
      'after',
      `
Every volume is a LUN of the default target (iqn.2026-11.io.tessera:default).
Create other targets to choose LUNs, restrict initiators or require CHAP.

Examples:
  $ tessera iscsi target list
  $ tessera iscsi target create iqn.2026-11.com.example:db --initiator iqn.1994-05.com.redhat:host1
  $ tessera iscsi lun map iqn.2026-11.com.example:db vol0 --lun 0
  $ TESSERA_CHAP_SECRET=averylongsecret tessera iscsi target set iqn.2026-11.com.example:db --chap-user host1
  $ iscsi-ls -s iscsi://127.0.0.1:3260`,
    );
  const target = iscsi.command('target').description('create, list, change and delete iSCSI targets');

  target
    .command('list')
    .alias('ls')
    .description('list targets with their LUNs, allowed initiators, authentication and sessions')
    .option('--json', 'print {portal, targets} as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera iscsi target list\n  $ tessera iscsi target list --json')
    .action(async (_o: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      const res = await clientFor(g, io).iscsiTargets();
      io.out(g.json ? json(res) : formatTargetList(res));
    });

  target
    .command('create')
    .description('create a target (no LUNs yet: add them with `tessera iscsi lun map`)')
    .argument('<name>', 'iSCSI name, e.g. iqn.2026-11.com.example:db')
    .option('--alias <text>', 'TargetAlias shown to initiators')
    .option('--initiator <names>', 'comma-separated initiator names allowed to log in (default: any)')
    .option('--chap-user <user>', 'require CHAP with this user name')
    .option('--chap-secret <secret>', 'CHAP secret, 12..255 bytes (or TESSERA_CHAP_SECRET)')
    .option('--mutual-user <user>', 'mutual CHAP: the name the target answers with')
    .option('--mutual-secret <secret>', 'mutual CHAP secret (or TESSERA_CHAP_MUTUAL_SECRET); must differ from --chap-secret')
    .option('--json', 'print the target as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera iscsi target create iqn.2026-11.com.example:db\n  $ tessera iscsi target create iqn.2026-11.com.example:db --initiator iqn.1994-05.com.redhat:host1,iqn.1994-05.com.redhat:host2 --chap-user host --chap-secret averylongsecret')
    .action(async (name: string, o: ChapFlags & { alias?: string; initiator?: string }, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      const chap = chapFromFlags(o, process.env);
      const info = await clientFor(g, io).createIscsiTarget({ name, ...(o.alias !== undefined ? { alias: o.alias } : {}), ...(o.initiator !== undefined ? { initiators: listOpt(o.initiator) } : {}), ...(chap ? { chap } : {}) });
      if (g.json) return io.out(json(info));
      io.out(`created target ${info.name}\nnext: tessera iscsi lun map ${info.name} VOLUME\n`);
    });

  target
    .command('set')
    .description("change a target's allowed initiators or CHAP credentials (the default target too)")
    .argument('<name>', 'target name')
    .option('--initiator <names>', "comma-separated initiator names allowed to log in; '' = any")
    .option('--chap-user <user>', 'require CHAP with this user name')
    .option('--chap-secret <secret>', 'CHAP secret, 12..255 bytes (or TESSERA_CHAP_SECRET)')
    .option('--mutual-user <user>', 'mutual CHAP: the name the target answers with')
    .option('--mutual-secret <secret>', 'mutual CHAP secret (or TESSERA_CHAP_MUTUAL_SECRET)')
    .option('--no-chap', 'turn CHAP off')
    .option('--json', 'print the target as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera iscsi target set iqn.2026-11.io.tessera:default --initiator iqn.1994-05.com.redhat:host1\n  $ tessera iscsi target set iqn.2026-11.com.example:db --chap-user host --chap-secret averylongsecret\n  $ tessera iscsi target set iqn.2026-11.com.example:db --no-chap')
    .action(async (name: string, o: ChapFlags & { initiator?: string; chap?: boolean }, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      const client = clientFor(g, io);
      const chap = chapFromFlags(o, process.env);
      if (o.chap === false && chap !== undefined) throw new UsageError('--no-chap cannot be combined with --chap-user');
      if (o.initiator === undefined && chap === undefined && o.chap !== false) throw new UsageError('nothing to change: give --initiator, --chap-user or --no-chap');
      let info: IscsiTargetInfo | undefined;
      if (o.initiator !== undefined) info = await client.setIscsiInitiators(name, listOpt(o.initiator) ?? []);
      if (chap !== undefined) info = await client.setIscsiChap(name, chap);
      if (o.chap === false) info = await client.setIscsiChap(name, null);
      if (g.json) return io.out(json(info));
      io.out(`target ${name}: initiators ${info!.initiators.length === 0 ? 'any' : info!.initiators.join(',')}, auth ${authOf(info!)}\n`);
    });

  target
    .command('delete')
    .alias('rm')
    .description('delete a target; its sessions are logged out (volumes are kept)')
    .argument('<name>', 'target name')
    .addHelpText('after', '\nExamples:\n  $ tessera iscsi target delete iqn.2026-11.com.example:db')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      await clientFor(g, io).deleteIscsiTarget(name);
      io.out(`deleted target ${name}\n`);
    });

  const lun = iscsi.command('lun').description('map volumes to LUNs of a target');
  lun
    .command('map')
    .description('make a volume a LUN of a target')
    .argument('<target>', 'target name')
    .argument('<volume>', 'volume name')
    .option('--lun <n>', 'LUN number 0..16383 (default: the lowest free one)')
    .option('--json', 'print the target as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera iscsi lun map iqn.2026-11.com.example:db vol0\n  $ tessera iscsi lun map iqn.2026-11.com.example:db logs --lun 5')
    .action(async (t: string, volume: string, o: { lun?: string }, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      const info = await clientFor(g, io).mapIscsiLun(t, { volume, ...(o.lun !== undefined ? { lun: lunOpt(o.lun) } : {}) });
      if (g.json) return io.out(json(info));
      const m = info.luns.find((l) => l.volume === volume);
      io.out(`${volume} is LUN ${m?.lun ?? '?'} of ${t}\n`);
    });
  lun
    .command('unmap')
    .description('remove a LUN from a target (the volume is kept)')
    .argument('<target>', 'target name')
    .argument('<lun>', 'LUN number')
    .option('--json', 'print the target as JSON')
    .addHelpText('after', '\nExamples:\n  $ tessera iscsi lun unmap iqn.2026-11.com.example:db 5')
    .action(async (t: string, n: string, _o: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<G>();
      const info = await clientFor(g, io).unmapIscsiLun(t, lunOpt(n));
      if (g.json) return io.out(json(info));
      io.out(`removed LUN ${n} from ${t}\n`);
    });
}
