// iSCSI target configuration: which targets exist, which volume is which LUN of
// a target, which initiators may log in, and CHAP credentials (SPEC EXP2). Pure:
// parse/validate/format and edit; main/iscsi.ts keeps it in `<data-dir>/iscsi.json`.
//
// Invariants:
// - Target names are valid iSCSI names (iqn./eui./naa., RFC 7143 §4.2.7.?), unique.
// - LUNs are 0..16383 (single-level flat addressing), unique per target; a LUN
//   refers to a volume by id, so a rename keeps the mapping.
// - The default target is implicit: it maps every volume, and the LUN each
//   volume got is remembered here so LUNs stay stable across restarts and deletes.
// - CHAP secrets are 12..255 bytes; a mutual secret must differ from the forward one.
import { z } from 'zod';
import { TesseraError } from '../../stdx/errors.js';

export const DEFAULT_TARGET_NAME = 'iqn.2026-11.io.tessera:default';
export const ISCSI_CONFIG_FILE = 'iscsi.json';
export const TARGETS_MAX = 256;
export const LUNS_PER_TARGET_MAX = 1024;
export const LUN_MAX = 16383;
export const INITIATORS_PER_TARGET_MAX = 256;
export const CHAP_SECRET_BYTES_MIN = 12;
export const CHAP_SECRET_BYTES_MAX = 255;

export interface ChapCredentials {
  user: string;
  secret: string;
  /** Mutual CHAP: the target proves itself with these. */
  mutualUser?: string;
  mutualSecret?: string;
}

export interface LunMapping {
  lun: number;
  volumeId: number;
}

export interface TargetConfig {
  name: string;
  alias?: string;
  luns: LunMapping[];
  /** Initiator names allowed to log in; empty = any initiator. */
  initiators: string[];
  chap: ChapCredentials | null;
}

export interface IscsiConfig {
  version: 1;
  /** LUNs the default target gave to volumes (by id). */
  defaultLuns: LunMapping[];
  /**
   * The default target hands out LUNs upwards from here, so a deleted volume's LUN
   * is not given to a new volume while initiators may still cache it (wraps at LUN_MAX).
   */
  defaultNextLun?: number;
  /** CHAP for the default target (null: no authentication). */
  defaultChap: ChapCredentials | null;
  /** Initiators allowed on the default target; empty = any. */
  defaultInitiators: string[];
  targets: TargetConfig[];
}

const ISCSI_NAME_RE = /^(iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*(:[^\s,]+)?|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16}([0-9A-Fa-f]{16})?)$/;
const ISCSI_NAME_BYTES_MAX = 223;

/** Throws ERR_INVALID unless `name` is an iSCSI name (RFC 7143 §4.2.7.1?; 223 bytes at most). */
export function checkIscsiName(name: string, what: string): void {
  if (Buffer.byteLength(name) > ISCSI_NAME_BYTES_MAX || !ISCSI_NAME_RE.test(name)) {
    throw new TesseraError('ERR_INVALID', `${what} "${name}" is not an iSCSI name (iqn.YYYY-MM.reversed.domain[:id], eui.<16 hex>, naa.<16 or 32 hex>)`);
  }
}

export function checkChap(c: ChapCredentials, what: string): void {
  for (const [label, s] of [['secret', c.secret], ['mutual secret', c.mutualSecret]] as const) {
    if (s === undefined) continue;
    const n = Buffer.byteLength(s);
    if (n < CHAP_SECRET_BYTES_MIN) throw new TesseraError('ERR_INVALID', `${what}: CHAP ${label} is ${n} bytes; at least ${CHAP_SECRET_BYTES_MIN} are required (RFC 7143 §12.1.3: 96 bits)`);
    if (n > CHAP_SECRET_BYTES_MAX) throw new TesseraError('ERR_INVALID', `${what}: CHAP ${label} is ${n} bytes; at most ${CHAP_SECRET_BYTES_MAX}`);
  }
  if (c.user.length === 0 || c.user.length > 255) throw new TesseraError('ERR_INVALID', `${what}: CHAP user must be 1..255 characters`);
  if ((c.mutualUser === undefined) !== (c.mutualSecret === undefined)) throw new TesseraError('ERR_INVALID', `${what}: mutual CHAP needs both a user and a secret`);
  if (c.mutualUser !== undefined && (c.mutualUser.length === 0 || c.mutualUser.length > 255)) throw new TesseraError('ERR_INVALID', `${what}: mutual CHAP user must be 1..255 characters`);
  if (c.mutualSecret !== undefined && c.mutualSecret === c.secret) throw new TesseraError('ERR_INVALID', `${what}: the mutual CHAP secret must differ from the initiator's secret`);
}

function checkLun(lun: number): void {
  if (!Number.isInteger(lun) || lun < 0 || lun > LUN_MAX) throw new TesseraError('ERR_INVALID', `LUN ${lun} is outside 0..${LUN_MAX}`);
}

export function emptyIscsiConfig(): IscsiConfig {
  return { version: 1, defaultLuns: [], defaultChap: null, defaultInitiators: [], targets: [] };
}

const Chap = z.object({ user: z.string(), secret: z.string(), mutualUser: z.string().optional(), mutualSecret: z.string().optional() }).strict();
const Lun = z.object({ lun: z.number().int(), volumeId: z.number().int().nonnegative() }).strict();
const FileSchema = z
  .object({
    version: z.literal(1),
    defaultLuns: z.array(Lun).max(1 << 20),
    defaultNextLun: z.number().int().min(0).max(LUN_MAX + 1).optional(),
    defaultChap: Chap.nullable(),
    defaultInitiators: z.array(z.string()).max(INITIATORS_PER_TARGET_MAX),
    targets: z.array(z.object({ name: z.string(), alias: z.string().max(255).optional(), luns: z.array(Lun).max(LUNS_PER_TARGET_MAX), initiators: z.array(z.string()).max(INITIATORS_PER_TARGET_MAX), chap: Chap.nullable() }).strict()).max(TARGETS_MAX),
  })
  .strict();

/** Parses and validates iscsi.json; `where` names the file in errors (ERR_FORMAT). */
export function parseIscsiConfig(text: string, where: string): IscsiConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new TesseraError('ERR_FORMAT', `${where}: not JSON: ${(err as Error).message}`);
  }
  const r = FileSchema.safeParse(raw);
  if (!r.success) throw new TesseraError('ERR_FORMAT', `${where}: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  const cfg = r.data as IscsiConfig;
  try {
    validate(cfg);
  } catch (err) {
    throw new TesseraError('ERR_FORMAT', `${where}: ${(err as Error).message}`);
  }
  return cfg;
}

export function formatIscsiConfig(cfg: IscsiConfig): string {
  return JSON.stringify(cfg, null, 2) + '\n';
}

function validate(cfg: IscsiConfig): void {
  const names = new Set<string>([DEFAULT_TARGET_NAME]);
  checkLuns(cfg.defaultLuns, DEFAULT_TARGET_NAME);
  if (cfg.defaultChap !== null) checkChap(cfg.defaultChap, DEFAULT_TARGET_NAME);
  for (const i of cfg.defaultInitiators) checkIscsiName(i, 'initiator');
  for (const t of cfg.targets) {
    checkIscsiName(t.name, 'target');
    if (names.has(t.name)) throw new TesseraError('ERR_INVALID', `target ${t.name} is listed twice`);
    names.add(t.name);
    checkLuns(t.luns, t.name);
    for (const i of t.initiators) checkIscsiName(i, 'initiator');
    if (t.chap !== null) checkChap(t.chap, t.name);
  }
}

function checkLuns(luns: LunMapping[], target: string): void {
  const seen = new Set<number>();
  for (const m of luns) {
    checkLun(m.lun);
    if (seen.has(m.lun)) throw new TesseraError('ERR_INVALID', `${target}: LUN ${m.lun} is mapped twice`);
    seen.add(m.lun);
  }
}

// ---- edits (each returns a new config; the caller persists it) ----

export interface CreateTargetRequest {
  name: string;
  alias?: string;
  initiators?: string[];
  chap?: ChapCredentials | null;
}

export function createTarget(cfg: IscsiConfig, req: CreateTargetRequest): IscsiConfig {
  checkIscsiName(req.name, 'target');
  if (req.name === DEFAULT_TARGET_NAME || cfg.targets.some((t) => t.name === req.name)) throw new TesseraError('ERR_EXISTS', `target ${req.name} already exists`);
  if (cfg.targets.length >= TARGETS_MAX) throw new TesseraError('ERR_LIMIT', `at most ${TARGETS_MAX} targets`);
  const initiators = dedupe(req.initiators ?? []);
  for (const i of initiators) checkIscsiName(i, 'initiator');
  if (initiators.length > INITIATORS_PER_TARGET_MAX) throw new TesseraError('ERR_LIMIT', `at most ${INITIATORS_PER_TARGET_MAX} initiators per target`);
  if (req.chap) checkChap(req.chap, req.name);
  const t: TargetConfig = { name: req.name, luns: [], initiators, chap: req.chap ?? null };
  if (req.alias !== undefined) t.alias = req.alias;
  return { ...cfg, targets: [...cfg.targets, t] };
}

export function deleteTarget(cfg: IscsiConfig, name: string): IscsiConfig {
  if (name === DEFAULT_TARGET_NAME) throw new TesseraError('ERR_INVALID', `the default target ${name} cannot be deleted (it exports every volume)`);
  if (!cfg.targets.some((t) => t.name === name)) throw new TesseraError('ERR_NOT_FOUND', `no target ${name}`);
  return { ...cfg, targets: cfg.targets.filter((t) => t.name !== name) };
}

/** Maps a volume to a LUN of a target (`lun` omitted: the lowest free one). */
export function mapLun(cfg: IscsiConfig, target: string, volumeId: number, lun?: number): { cfg: IscsiConfig; lun: number } {
  const t = findTarget(cfg, target);
  if (t.luns.some((m) => m.volumeId === volumeId)) throw new TesseraError('ERR_EXISTS', `the volume is already a LUN of ${target}`);
  if (t.luns.length >= LUNS_PER_TARGET_MAX) throw new TesseraError('ERR_LIMIT', `at most ${LUNS_PER_TARGET_MAX} LUNs per target`);
  const chosen = lun ?? lowestFreeLun(t.luns);
  checkLun(chosen);
  if (t.luns.some((m) => m.lun === chosen)) throw new TesseraError('ERR_EXISTS', `LUN ${chosen} of ${target} is taken`);
  return { cfg: replaceTarget(cfg, { ...t, luns: [...t.luns, { lun: chosen, volumeId }].sort((a, b) => a.lun - b.lun) }), lun: chosen };
}

export function unmapLun(cfg: IscsiConfig, target: string, lun: number): IscsiConfig {
  const t = findTarget(cfg, target);
  if (!t.luns.some((m) => m.lun === lun)) throw new TesseraError('ERR_NOT_FOUND', `${target} has no LUN ${lun}`);
  return replaceTarget(cfg, { ...t, luns: t.luns.filter((m) => m.lun !== lun) });
}

export function setInitiators(cfg: IscsiConfig, target: string, initiators: string[]): IscsiConfig {
  const list = dedupe(initiators);
  for (const i of list) checkIscsiName(i, 'initiator');
  if (list.length > INITIATORS_PER_TARGET_MAX) throw new TesseraError('ERR_LIMIT', `at most ${INITIATORS_PER_TARGET_MAX} initiators per target`);
  if (target === DEFAULT_TARGET_NAME) return { ...cfg, defaultInitiators: list };
  return replaceTarget(cfg, { ...findTarget(cfg, target), initiators: list });
}

export function setChap(cfg: IscsiConfig, target: string, chap: ChapCredentials | null): IscsiConfig {
  if (chap !== null) checkChap(chap, target);
  if (target === DEFAULT_TARGET_NAME) return { ...cfg, defaultChap: chap };
  return replaceTarget(cfg, { ...findTarget(cfg, target), chap });
}

/**
 * The default target's LUNs for the volumes that exist now: volumes keep the LUN
 * they had; new ones get the next LUN upwards (a deleted volume's LUN is not
 * reused until the numbers wrap); mappings of deleted volumes are dropped.
 * `changed` says whether to persist.
 */
export function syncDefaultLuns(cfg: IscsiConfig, volumeIds: number[]): { cfg: IscsiConfig; changed: boolean } {
  const alive = new Set(volumeIds);
  const kept = cfg.defaultLuns.filter((m) => alive.has(m.volumeId));
  const have = new Set(kept.map((m) => m.volumeId));
  const luns = [...kept];
  let next = cfg.defaultNextLun ?? (luns.length === 0 ? 0 : Math.max(...luns.map((m) => m.lun)) + 1);
  const used = new Set(luns.map((m) => m.lun));
  for (const id of [...volumeIds].sort((a, b) => a - b)) {
    if (have.has(id)) continue;
    // Upwards from `next`; past LUN_MAX, the lowest free one (every LUN was used once).
    let lun = next;
    while (lun <= LUN_MAX && used.has(lun)) lun++;
    if (lun > LUN_MAX) lun = lowestFreeLun(luns);
    if (lun > LUN_MAX) break; // more volumes than LUNs: the rest are reachable through other targets only
    luns.push({ lun, volumeId: id });
    used.add(lun);
    next = lun + 1;
  }
  luns.sort((a, b) => a.lun - b.lun);
  const changed = next !== cfg.defaultNextLun || luns.length !== cfg.defaultLuns.length || luns.some((m, i) => cfg.defaultLuns[i]?.lun !== m.lun || cfg.defaultLuns[i]?.volumeId !== m.volumeId);
  return { cfg: changed ? { ...cfg, defaultLuns: luns, defaultNextLun: next } : cfg, changed };
}

export function findTarget(cfg: IscsiConfig, name: string): TargetConfig {
  const t = cfg.targets.find((x) => x.name === name);
  if (t === undefined) throw new TesseraError('ERR_NOT_FOUND', name === DEFAULT_TARGET_NAME ? `the default target maps every volume by itself; create a target for explicit LUNs` : `no target ${name}`);
  return t;
}

function replaceTarget(cfg: IscsiConfig, t: TargetConfig): IscsiConfig {
  return { ...cfg, targets: cfg.targets.map((x) => (x.name === t.name ? t : x)) };
}

function lowestFreeLun(luns: LunMapping[]): number {
  const used = new Set(luns.map((m) => m.lun));
  let lun = 0;
  while (used.has(lun)) lun++;
  return lun;
}

function dedupe(xs: string[]): string[] {
  return [...new Set(xs)];
}
