// The cluster config (SPEC CLU8): one JSON file shared by every daemon of a
// cluster — monitors, OSDs and gateways — plus per-daemon flags that override it
// (`--port`, `--data-dir`, ...). Validated by one zod schema; an error names the
// field (`osd.port`) and says why. Pure: the caller reads the file.
//
// Example (docs/cli.md "Cluster config"):
//   {
//     "cluster": { "monitors": ["10.0.0.1:6780", "10.0.0.2:6780"],
//                  "etcd": ["http://10.0.0.1:2379"],
//                  "defaultPool": { "size": 3, "minSize": 2, "pgCount": 64 } },
//     "osd": { "dataDir": "/srv/tessera/osd", "deviceSizeBytes": "1T" },
//     "gateway": { "nbd": { "host": "0.0.0.0" } }
//   }
// Invariants of a resolved ClusterConfig: paths absolute (relative to the file's
// directory, or to the working directory for flags); at least one monitor
// address; pgCount a power of two; minSize <= size.
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { TesseraError } from '../stdx/errors.js';
import { parseSize } from '../stdx/size.js';
import { DEFAULTS, idlePollUsField } from './config.js';

export interface ClusterConfig {
  monitors: string[];
  /** etcd endpoints; empty = the embedded store in the monitor's data dir. */
  etcd: string[];
  osdDownAfterMs: number;
  osdOutAfterMs: number;
  defaultPool: { name: string; size: number; minSize: number; pgCount: number; failureDomain: 'host' | 'osd' };
  tickMs: number;
  electionTicks: number;
  recoveryBytesPerSec: number;
  /** advertiseHost: where clients on other machines reach this monitor (null: derived from host, see mon/run.ts). */
  mon: { host: string; port: number; dataDir: string; advertiseHost: string | null };
  /** directIo: the OSD's device file with O_DIRECT (see osdDirectIo in osd-daemon.ts). */
  osd: { host: string; port: number; dataDir: string; deviceSizeBytes: number; hostName: string; weight: number; directIo: 'auto' | 'on' | 'off' };
  /** iscsi.port null = no iSCSI; tpgt: this gateway's target portal group tag (give each gateway its own). */
  /** idlePollUs: config.ts Config.gateway.idlePollUs. */
  gateway: { dataDir: string; nbd: { host: string; port: number }; iscsi: { host: string; port: number | null; tpgt: number }; idlePollUs: number };
}

export const CLUSTER_DEFAULTS = {
  monPort: 6780,
  osdPort: 6800,
  osdDirectIo: 'off' as 'auto' | 'on' | 'off',
  osdDownAfterMs: 6_000,
  osdOutAfterMs: 600_000,
  tickMs: 100,
  electionTicks: 10,
  recoveryBytesPerSec: 128 * 1024 * 1024,
  deviceSizeBytes: 16 * 2 ** 30,
} as const;

const portField = z.int({ error: 'must be an integer port number' }).min(0, 'must be 0..65535').max(65535, 'must be 0..65535');
const hostField = z.string().regex(/^[^\s/:]+$/, 'must be a host name or IPv4 address');
const addrField = z.string().regex(/^[^\s/:]+:\d{1,5}$/, 'must be host:port');
const sizeField = z.union([z.number(), z.string()]).transform((v, ctx) => {
  try {
    const n = typeof v === 'number' ? v : parseSize(v);
    if (!Number.isSafeInteger(n) || n <= 0 || n % 512 !== 0) throw new Error(`must be a positive multiple of 512 bytes (got ${v})`);
    return n;
  } catch (err) {
    ctx.issues.push({ code: 'custom', message: (err as Error).message, input: v });
    return z.NEVER;
  }
});
const posInt = z.int().min(1);

const Schema = z.strictObject({
  cluster: z
    .strictObject({
      monitors: z.array(addrField).min(1, 'needs at least one monitor address').optional(),
      etcd: z.array(z.string().regex(/^https?:\/\/[^\s]+$/, 'must be an http(s):// URL')).optional(),
      osdDownAfterMs: z.int().min(1000).max(600_000).optional(),
      osdOutAfterMs: z.int().min(1000).optional(),
      defaultPool: z
        .strictObject({
          name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/).optional(),
          size: z.int().min(1).max(16).optional(),
          minSize: z.int().min(1).max(16).optional(),
          pgCount: posInt.refine((n) => (n & (n - 1)) === 0 && n <= 65536, 'must be a power of two <= 65536').optional(),
          failureDomain: z.enum(['host', 'osd']).optional(),
        })
        .optional(),
      tickMs: z.int().min(10).max(1000).optional(),
      electionTicks: z.int().min(3).max(100).optional(),
      recoveryBytesPerSec: sizeField.optional(),
    })
    .optional(),
  mon: z.strictObject({ host: hostField.optional(), port: portField.optional(), dataDir: z.string().min(1).optional(), advertiseHost: hostField.optional() }).optional(),
  osd: z
    .strictObject({
      host: hostField.optional(),
      port: portField.optional(),
      dataDir: z.string().min(1).optional(),
      deviceSizeBytes: sizeField.optional(),
      hostName: z.string().min(1).max(253).optional(),
      weight: z.number().min(0).max(1e6).optional(),
      directIo: z.enum(['auto', 'on', 'off'], { error: 'must be "auto", "on" or "off"' }).optional(),
    })
    .optional(),
  gateway: z
    .strictObject({
      dataDir: z.string().min(1).optional(),
      nbd: z.strictObject({ host: hostField.optional(), port: portField.optional() }).optional(),
      iscsi: z
        .strictObject({
          host: hostField.optional(),
          port: z.union([portField, z.literal('off')], { error: 'must be a port number or "off"' }).optional(),
          tpgt: z.int({ error: 'must be an integer' }).min(1, 'must be 1..65535').max(65535, 'must be 1..65535').optional(),
        })
        .optional(),
      idlePollUs: idlePollUsField.optional(),
    })
    .optional(),
});

export type ClusterConfigInput = z.input<typeof Schema>;

/**
 * Defaults < file < flags (flags: a partial input of the same shape, relative
 * paths against cwd). Throws TesseraError ERR_INVALID naming the bad field.
 */
export function resolveClusterConfig(opts: { cwd: string; file?: { path: string; text: string }; flags?: ClusterConfigInput }): ClusterConfig {
  let fileIn: z.output<typeof Schema> = {};
  let fileDir = opts.cwd;
  if (opts.file) {
    fileDir = path.dirname(path.resolve(opts.cwd, opts.file.path));
    let json: unknown;
    try {
      json = JSON.parse(opts.file.text);
    } catch (err) {
      throw new TesseraError('ERR_INVALID', `config file ${opts.file.path}: not valid JSON: ${(err as Error).message}`);
    }
    fileIn = parse(json, `config file ${opts.file.path}`);
  }
  const flagIn = parse(dropUndefined(opts.flags ?? {}), 'option');
  const pick = <T>(f: T | undefined, g: T | undefined, d: T): T => (f !== undefined ? f : g !== undefined ? g : d);
  const dirOf = (flag: string | undefined, file: string | undefined, dflt: string) =>
    flag !== undefined ? path.resolve(opts.cwd, flag) : file !== undefined ? path.resolve(fileDir, file) : path.resolve(opts.cwd, dflt);
  const fc = fileIn.cluster ?? {};
  const gc = flagIn.cluster ?? {};
  const monPort = pick(flagIn.mon?.port, fileIn.mon?.port, CLUSTER_DEFAULTS.monPort);
  const monHost = pick(flagIn.mon?.host, fileIn.mon?.host, '127.0.0.1');
  const size = pick(gc.defaultPool?.size, fc.defaultPool?.size, 3);
  const minSize = pick(gc.defaultPool?.minSize, fc.defaultPool?.minSize, Math.min(size, Math.max(1, size - 1)));
  if (minSize > size) throw new TesseraError('ERR_INVALID', `cluster.defaultPool.minSize (${minSize}) must not exceed size (${size})`);
  const cfg: ClusterConfig = {
    monitors: pick(gc.monitors, fc.monitors, [`${monHost}:${monPort}`]),
    etcd: pick(gc.etcd, fc.etcd, []),
    osdDownAfterMs: pick(gc.osdDownAfterMs, fc.osdDownAfterMs, CLUSTER_DEFAULTS.osdDownAfterMs),
    osdOutAfterMs: pick(gc.osdOutAfterMs, fc.osdOutAfterMs, CLUSTER_DEFAULTS.osdOutAfterMs),
    defaultPool: {
      name: pick(gc.defaultPool?.name, fc.defaultPool?.name, 'rbd'),
      size,
      minSize,
      pgCount: pick(gc.defaultPool?.pgCount, fc.defaultPool?.pgCount, 64),
      failureDomain: pick(gc.defaultPool?.failureDomain, fc.defaultPool?.failureDomain, 'host'),
    },
    tickMs: pick(gc.tickMs, fc.tickMs, CLUSTER_DEFAULTS.tickMs),
    electionTicks: pick(gc.electionTicks, fc.electionTicks, CLUSTER_DEFAULTS.electionTicks),
    recoveryBytesPerSec: pick(gc.recoveryBytesPerSec, fc.recoveryBytesPerSec, CLUSTER_DEFAULTS.recoveryBytesPerSec),
    mon: { host: monHost, port: monPort, dataDir: dirOf(flagIn.mon?.dataDir, fileIn.mon?.dataDir, './tessera-mon'), advertiseHost: pick(flagIn.mon?.advertiseHost, fileIn.mon?.advertiseHost, null) },
    osd: {
      host: pick(flagIn.osd?.host, fileIn.osd?.host, '127.0.0.1'),
      port: pick(flagIn.osd?.port, fileIn.osd?.port, CLUSTER_DEFAULTS.osdPort),
      dataDir: dirOf(flagIn.osd?.dataDir, fileIn.osd?.dataDir, './tessera-osd'),
      deviceSizeBytes: pick(flagIn.osd?.deviceSizeBytes, fileIn.osd?.deviceSizeBytes, CLUSTER_DEFAULTS.deviceSizeBytes),
      hostName: pick(flagIn.osd?.hostName, fileIn.osd?.hostName, os.hostname()),
      weight: pick(flagIn.osd?.weight, fileIn.osd?.weight, 1),
      directIo: pick(flagIn.osd?.directIo, fileIn.osd?.directIo, CLUSTER_DEFAULTS.osdDirectIo),
    },
    gateway: {
      dataDir: dirOf(flagIn.gateway?.dataDir, fileIn.gateway?.dataDir, './tessera-gateway'),
      nbd: { host: pick(flagIn.gateway?.nbd?.host, fileIn.gateway?.nbd?.host, '127.0.0.1'), port: pick(flagIn.gateway?.nbd?.port, fileIn.gateway?.nbd?.port, 10809) },
      iscsi: {
        host: pick(flagIn.gateway?.iscsi?.host, fileIn.gateway?.iscsi?.host, '127.0.0.1'),
        port: offToNull(pick<number | 'off'>(flagIn.gateway?.iscsi?.port, fileIn.gateway?.iscsi?.port, 3260)),
        tpgt: pick(flagIn.gateway?.iscsi?.tpgt, fileIn.gateway?.iscsi?.tpgt, 1),
      },
      idlePollUs: pick(flagIn.gateway?.idlePollUs, fileIn.gateway?.idlePollUs, DEFAULTS.idlePollUs),
    },
  };
  return cfg;
}

function parse(value: unknown, label: string): z.output<typeof Schema> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TesseraError('ERR_INVALID', `${label}: must be a JSON object like {"cluster": {"monitors": ["127.0.0.1:6780"]}}`);
  }
  const res = Schema.safeParse(value);
  if (res.success) return res.data;
  const lines = res.error.issues.map((issue) => {
    const field = issue.path.join('.');
    if (issue.code === 'unrecognized_keys') return issue.keys.map((k) => `${label}: field "${field ? `${field}.${k}` : k}": unknown field`).join('; ');
    return `${label}: field "${field}": ${issue.message}`;
  });
  throw new TesseraError('ERR_INVALID', lines.join('; '));
}

function dropUndefined(v: unknown): unknown {
  if (Array.isArray(v) || typeof v !== 'object' || v === null) return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    if (x === undefined) continue;
    const inner = dropUndefined(x);
    if (typeof inner === 'object' && inner !== null && !Array.isArray(inner) && Object.keys(inner).length === 0) continue;
    out[k] = inner;
  }
  return out;
}

function offToNull(port: number | 'off'): number | null {
  return port === 'off' ? null : port;
}
