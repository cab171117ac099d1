// The one Tessera config (SPEC CLU8): embedded defaults, an optional JSON file
// (`--config FILE`), and command-line flags, in that order of precedence
// (flags win). Every source is validated by the same zod schema, and an error
// names the bad field (`nbd.port`) or the flag (`--nbd-port`) and says why.
//
// Invariants of a resolved Config: every path is absolute; paths in a config
// file are relative to the file's directory, paths from flags to the working
// directory; api.socket and device.path default to files inside dataDir; the
// socket path fits a unix socket address (107 bytes on Linux).
// Pure: no IO here (the caller reads the file and passes its text).
import path from 'node:path';
import { z } from 'zod';
import { TesseraError } from '../stdx/errors.js';
import { parseSize } from '../stdx/size.js';
import { IDLE_POLL_US_DEFAULT, IDLE_POLL_US_MAX } from '../gateway/idle-poll.js';
import { VOLUME_NAME_RE } from '../volume/types.js';

export type DirectIoMode = 'auto' | 'on' | 'off';

export interface Config {
  dataDir: string;
  nbd: { host: string; port: number };
  /** iSCSI portal; port null = no iSCSI server. */
  iscsi: { host: string; port: number | null };
  /** port: an optional extra HTTP listener on 127.0.0.1 (undefined = socket only). */
  api: { socket: string; port: number | undefined };
  /** sizeBytes is used only when formatting a new device (a sparse file). */
  device: { path: string; sizeBytes: number; directIo: DirectIoMode };
  defaultVolume: { name: string; sizeBytes: number };
  /** idlePollUs: the NBD/iSCSI gateway polls this long after answering a connection's last request (gateway/idle-poll.ts); 0 = off. */
  gateway: { idlePollUs: number };
}

/** A partial config, as in a file or from flags. Sizes may be "16G" strings. */
export interface ConfigInput {
  dataDir?: string;
  nbd?: { host?: string; port?: number };
  /** port -1 turns the iSCSI server off. */
  iscsi?: { host?: string; port?: number };
  api?: { socket?: string; port?: number };
  device?: { path?: string; sizeBytes?: number | string; directIo?: DirectIoMode };
  defaultVolume?: { name?: string; sizeBytes?: number | string };
  gateway?: { idlePollUs?: number };
}

export const DEFAULTS = {
  dataDir: './tessera-data',
  nbdHost: '127.0.0.1',
  nbdPort: 10809,
  iscsiHost: '127.0.0.1',
  iscsiPort: 3260,
  socketFile: 'tessera.sock',
  pidFile: 'tessera.pid',
  deviceFile: 'dev0.img',
  deviceSizeBytes: 16 * 2 ** 30,
  directIo: 'off' as DirectIoMode,
  volumeName: 'vol0',
  volumeSizeBytes: 10 * 2 ** 30,
  idlePollUs: IDLE_POLL_US_DEFAULT,
} as const;

/** sun_path is 108 bytes on Linux, including the terminating NUL. */
export const UNIX_SOCKET_PATH_BYTES_MAX = 107;
const SECTOR_BYTES = 512;

/** Which flag sets which field, so flag errors name the flag the operator typed. */
export const FLAG_OF_FIELD: Record<string, string> = {
  dataDir: '--data-dir',
  'nbd.host': '--nbd-host',
  'nbd.port': '--nbd-port',
  'iscsi.host': '--iscsi-host',
  'iscsi.port': '--iscsi-port',
  'api.socket': '--socket',
  'api.port': '--api-port',
  'device.path': '--device',
  'device.sizeBytes': '--device-size',
  'device.directIo': '--direct-io',
  'defaultVolume.sizeBytes': '--volume-size',
  'defaultVolume.name': '--volume-name',
  'gateway.idlePollUs': '--idle-poll-us',
};

const sizeField = z.union([z.number(), z.string()]).transform((v, ctx) => {
  let bytes: number;
  try {
    bytes = typeof v === 'number' ? v : parseSize(v);
  } catch (err) {
    ctx.issues.push({ code: 'custom', message: (err as Error).message, input: v });
    return z.NEVER;
  }
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % SECTOR_BYTES !== 0) {
    ctx.issues.push({ code: 'custom', message: `must be a positive multiple of ${SECTOR_BYTES} bytes (got ${v})`, input: v });
    return z.NEVER;
  }
  return bytes;
});

const portField = z.int({ error: 'must be an integer port number' }).min(0, 'must be 0..65535').max(65535, 'must be 0..65535');
const pathField = z.string().min(1, 'must not be empty');
/** Shared with cluster-config.ts (its gateway section). */
export const idlePollUsField = z
  .int({ error: 'must be an integer number of microseconds' })
  .min(0, `must be 0..${IDLE_POLL_US_MAX} (0 = off)`)
  .max(IDLE_POLL_US_MAX, `must be 0..${IDLE_POLL_US_MAX} (0 = off)`);

/** Schema of one source (file or flags): every field optional, unknown fields rejected (typos). */
const InputSchema = z.strictObject({
  dataDir: pathField.optional(),
  nbd: z.strictObject({ host: z.string().regex(/^[^\s/]+$/, 'must be a host name or IP address').optional(), port: portField.optional() }).optional(),
  iscsi: z.strictObject({ host: z.string().regex(/^[^\s/]+$/, 'must be a host name or IP address').optional(), port: z.int({ error: 'must be a port number or "off"' }).min(-1, 'must be 0..65535 or "off"').max(65535, 'must be 0..65535 or "off"').optional() }).optional(),
  api: z.strictObject({ socket: pathField.optional(), port: portField.optional() }).optional(),
  device: z
    .strictObject({
      path: pathField.optional(),
      sizeBytes: sizeField.optional(),
      directIo: z.enum(['auto', 'on', 'off'], { error: 'must be "auto", "on" or "off"' }).optional(),
    })
    .optional(),
  defaultVolume: z
    .strictObject({
      name: z.string().regex(VOLUME_NAME_RE, "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit").optional(),
      sizeBytes: sizeField.optional(),
    })
    .optional(),
  gateway: z.strictObject({ idlePollUs: idlePollUsField.optional() }).optional(),
});

type ParsedInput = z.infer<typeof InputSchema>;

export interface ResolveOptions {
  /** Text of the config file, if any, and its path (for messages and relative paths). */
  file?: { path: string; text: string };
  /** Values from command-line flags; they override the file. */
  flags?: ConfigInput;
  /** Base for relative paths given as flags. */
  cwd: string;
}

/** Defaults < file < flags, validated; throws TesseraError ERR_INVALID naming the bad field. */
export function resolveConfig(opts: ResolveOptions): Config {
  let fromFile: ParsedInput = {};
  let fileDir = opts.cwd;
  if (opts.file) {
    const filePath = path.resolve(opts.cwd, opts.file.path);
    fileDir = path.dirname(filePath);
    let json: unknown;
    try {
      json = JSON.parse(opts.file.text);
    } catch (err) {
      throw new TesseraError('ERR_INVALID', `config file ${opts.file.path}: not valid JSON: ${(err as Error).message}`);
    }
    const label = `config file ${opts.file.path}`;
    fromFile = validate(json, (field) => (field ? `${label}: field "${field}"` : label));
    fromFile = absolutize(fromFile, fileDir);
  }
  const fromFlags = absolutize(
    validate(stripUndefined(opts.flags ?? {}), (field) => FLAG_OF_FIELD[field] ?? `option "${field || '(all)'}"`),
    opts.cwd,
  );

  const dataDir = fromFlags.dataDir ?? fromFile.dataDir ?? path.resolve(opts.cwd, DEFAULTS.dataDir);
  const config: Config = {
    dataDir,
    nbd: {
      host: fromFlags.nbd?.host ?? fromFile.nbd?.host ?? DEFAULTS.nbdHost,
      port: fromFlags.nbd?.port ?? fromFile.nbd?.port ?? DEFAULTS.nbdPort,
    },
    iscsi: {
      host: fromFlags.iscsi?.host ?? fromFile.iscsi?.host ?? DEFAULTS.iscsiHost,
      port: iscsiPort(fromFlags.iscsi?.port ?? fromFile.iscsi?.port ?? DEFAULTS.iscsiPort),
    },
    api: {
      socket: fromFlags.api?.socket ?? fromFile.api?.socket ?? path.join(dataDir, DEFAULTS.socketFile),
      port: fromFlags.api?.port ?? fromFile.api?.port,
    },
    device: {
      path: fromFlags.device?.path ?? fromFile.device?.path ?? path.join(dataDir, DEFAULTS.deviceFile),
      sizeBytes: fromFlags.device?.sizeBytes ?? fromFile.device?.sizeBytes ?? DEFAULTS.deviceSizeBytes,
      directIo: fromFlags.device?.directIo ?? fromFile.device?.directIo ?? DEFAULTS.directIo,
    },
    defaultVolume: {
      name: fromFlags.defaultVolume?.name ?? fromFile.defaultVolume?.name ?? DEFAULTS.volumeName,
      sizeBytes: fromFlags.defaultVolume?.sizeBytes ?? fromFile.defaultVolume?.sizeBytes ?? DEFAULTS.volumeSizeBytes,
    },
    gateway: { idlePollUs: fromFlags.gateway?.idlePollUs ?? fromFile.gateway?.idlePollUs ?? DEFAULTS.idlePollUs },
  };
  const socketBytes = Buffer.byteLength(config.api.socket);
  if (socketBytes > UNIX_SOCKET_PATH_BYTES_MAX) {
    throw new TesseraError(
      'ERR_INVALID',
      `api.socket: path ${config.api.socket} is ${socketBytes} bytes, but a unix socket path may have at most ${UNIX_SOCKET_PATH_BYTES_MAX}; set api.socket (or --socket) to a shorter path`,
    );
  }
  return config;
}

/** Where the PID file of a data dir lives. */
export function pidFilePath(config: Config): string {
  return path.join(config.dataDir, DEFAULTS.pidFile);
}

/** `where(field)` says where a field came from, for messages; field '' is the whole input. */
function validate(value: unknown, where: (field: string) => string): ParsedInput {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TesseraError('ERR_INVALID', `${where('')}: must be a JSON object like {"nbd": {"port": 10809}}`);
  }
  const res = InputSchema.safeParse(value);
  if (res.success) return res.data;
  const lines = res.error.issues.map((issue) => {
    if (issue.code === 'unrecognized_keys') {
      const parent = issue.path.join('.');
      return issue.keys.map((k) => `${where(parent ? `${parent}.${k}` : k)}: unknown field (known fields: ${knownFields(parent).join(', ')})`).join('; ');
    }
    return `${where(issue.path.join('.'))}: ${issue.message}`;
  });
  throw new TesseraError('ERR_INVALID', lines.join('; '));
}

function knownFields(parent: string): string[] {
  const shape = InputSchema.shape as Record<string, unknown>;
  if (!parent) return Object.keys(shape);
  const sub = shape[parent] as { unwrap?: () => { shape?: Record<string, unknown> } } | undefined;
  const inner = sub?.unwrap?.().shape;
  return inner ? Object.keys(inner).map((k) => `${parent}.${k}`) : [];
}

function absolutize(input: ParsedInput, base: string): ParsedInput {
  const abs = (p: string | undefined) => (p === undefined ? undefined : path.resolve(base, p));
  return {
    ...input,
    dataDir: abs(input.dataDir),
    api: input.api && { ...input.api, socket: abs(input.api.socket) },
    device: input.device && { ...input.device, path: abs(input.device.path) },
  };
}

/** Flags not given arrive as undefined; drop them (and empty groups) before validation. */
function stripUndefined(input: ConfigInput): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(input)) {
    if (v === undefined) continue;
    if (typeof v === 'object' && v !== null) {
      const inner = Object.fromEntries(Object.entries(v).filter(([, iv]) => iv !== undefined));
      if (Object.keys(inner).length > 0) out[k] = inner;
    } else out[k] = v;
  }
  return out;
}

/** -1 (flag `--iscsi-port off`) turns the iSCSI server off. */
function iscsiPort(port: number): number | null {
  return port === -1 ? null : port;
}
