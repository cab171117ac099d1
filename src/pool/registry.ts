// The daemon's list of disk pools (pools.json in the data dir): which device
// paths each pool is made of, so that `tessera up` reopens them. The members'
// own labels remain the truth about membership (index, failed, pool uuid); the
// registry only says where to look. Pure: parsing, validation and edits; the
// file is read and replaced atomically by io/node/registry-file.ts.
//
// Invariants: pool names are unique, follow VOLUME_NAME_RE and are not the
// reserved default pool's name; a device path belongs to at most one pool;
// paths are absolute.
import path from 'node:path';
import { z } from 'zod';
import { TesseraError } from '../stdx/errors.js';
import { VOLUME_NAME_RE } from '../volume/types.js';

/** The pool of the data dir's own device (the engine of `tessera up`). */
export const DEFAULT_POOL = 'default';
export const REGISTRY_FILE = 'pools.json';
/** More would make the file and the open slow to no purpose. */
export const MAX_POOLS = 64;

export interface PoolEntry {
  name: string;
  /** Of the labels (32 hex digits); a device with another is left out at open. */
  uuid: string;
  devices: string[];
  /** Capacity alarm thresholds (fractions); default 0.8 and 0.95. */
  alarms?: { warning: number; critical: number };
}

export interface Registry {
  version: 1;
  pools: PoolEntry[];
}

const Schema = z.strictObject({
  version: z.literal(1),
  pools: z
    .array(
      z.strictObject({
        name: z.string().regex(VOLUME_NAME_RE),
        uuid: z.string().regex(/^[0-9a-f]{32}$/),
        devices: z.array(z.string().refine((p) => path.isAbsolute(p), 'must be an absolute path')).max(64),
        alarms: z.strictObject({ warning: z.number().gt(0).lt(1), critical: z.number().gt(0).lte(1) }).refine((a) => a.warning < a.critical, 'warning must be below critical').optional(),
      }),
    )
    .max(MAX_POOLS),
});

export function emptyRegistry(): Registry {
  return { version: 1, pools: [] };
}

/** Parses the file's text; ERR_FORMAT naming the problem (the daemon refuses to guess). */
export function parseRegistry(text: string, where: string): Registry {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new TesseraError('ERR_FORMAT', `${where}: not valid JSON: ${(err as Error).message}`);
  }
  const res = Schema.safeParse(json);
  if (!res.success) {
    const i = res.error.issues[0];
    throw new TesseraError('ERR_FORMAT', `${where}: ${i.path.join('.') || '(top)'}: ${i.message}`);
  }
  const reg = res.data as Registry;
  checkRegistry(reg, where);
  return reg;
}

export function formatRegistry(reg: Registry): string {
  return JSON.stringify(reg, null, 2) + '\n';
}

function checkRegistry(reg: Registry, where: string): void {
  const names = new Set<string>();
  const owner = new Map<string, string>();
  for (const p of reg.pools) {
    if (p.name === DEFAULT_POOL || names.has(p.name)) throw new TesseraError('ERR_FORMAT', `${where}: pool name "${p.name}" is reserved or repeated`);
    names.add(p.name);
    for (const d of p.devices) {
      const o = owner.get(d);
      if (o !== undefined) throw new TesseraError('ERR_FORMAT', `${where}: device ${d} is listed in pools ${o} and ${p.name}`);
      owner.set(d, p.name);
    }
  }
}

export function checkPoolName(name: string): void {
  if (!VOLUME_NAME_RE.test(name)) throw new TesseraError('ERR_INVALID', `bad pool name "${name}": 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  if (name === DEFAULT_POOL) throw new TesseraError('ERR_INVALID', `"${DEFAULT_POOL}" is the name of the data dir's own pool`);
}

/** The pool listing a device path, if any. */
export function poolOfDevice(reg: Registry, devicePath: string): PoolEntry | undefined {
  return reg.pools.find((p) => p.devices.includes(devicePath));
}

/** A copy with `entry` added; ERR_EXISTS for a taken name or device. */
export function withPool(reg: Registry, entry: PoolEntry): Registry {
  checkPoolName(entry.name);
  if (reg.pools.some((p) => p.name === entry.name)) throw new TesseraError('ERR_EXISTS', `pool "${entry.name}" already exists`);
  if (reg.pools.length >= MAX_POOLS) throw new TesseraError('ERR_LIMIT', `at most ${MAX_POOLS} pools`);
  for (const d of entry.devices) {
    const o = poolOfDevice(reg, d);
    if (o) throw new TesseraError('ERR_EXISTS', `device ${d} is already in pool ${o.name}`);
  }
  return { version: 1, pools: [...reg.pools, { ...entry, devices: [...entry.devices] }] };
}

/** A copy with pool `name`'s devices replaced by `devices`. */
export function withDevices(reg: Registry, name: string, devices: string[]): Registry {
  const next: Registry = { version: 1, pools: reg.pools.map((p) => (p.name === name ? { ...p, devices: [...devices] } : p)) };
  checkRegistry(next, 'registry');
  return next;
}

/** A copy with pool `name`'s alarm thresholds replaced. */
export function withAlarms(reg: Registry, name: string, alarms: { warning: number; critical: number }): Registry {
  return { version: 1, pools: reg.pools.map((p) => (p.name === name ? { ...p, alarms: { ...alarms } } : p)) };
}

export function withoutPool(reg: Registry, name: string): Registry {
  return { version: 1, pools: reg.pools.filter((p) => p.name !== name) };
}
