// LocalPrStore: the PrStore (gateway/scsi/types.ts) of the single-machine daemon,
// where one gateway process is the only one exporting a volume. Records are kept in
// memory and persisted one file per key, `<dataDir>/pr/<key>.json`, replaced
// atomically with fsyncs (io/node/pr-file.ts) before compareAndSet resolves: a PR
// OUT is durable before its GOOD.
//
// File format (one line of JSON): {"v":1,"key":"<key>","rev":N,"crc32c":C,"state":S}
// where C is the crc32c of JSON.stringify(S). A file that does not parse, names
// another key, or fails its checksum stops load() with ERR_FORMAT naming the file:
// a damaged reservation is never silently dropped (the operator decides).
//
// Invariants:
// - One LocalPrStore per data dir (the daemon's PID file guarantees one process);
//   compare-and-sets of one key run one at a time (a promise chain per key).
// - current(key) is 'unavailable' until load(key) resolved; then always a record.
// - A failed write (ERR_DEVICE_IO / ERR_DEVICE_FLUSH) leaves the memory at the old
//   record, and fails the store: what is on disk is unknown, so every later call
//   gets that error and current() is 'unavailable' (the daemon treats
//   ERR_DEVICE_FLUSH as fatal anyway).
// - Listeners get every newer record, own writes included, after it is durable.
// - Only io/node touches the file system; tests inject PrFileIo.
import path from 'node:path';
import { KeyedListeners } from '../../stdx/keyed-listeners.js';
import { KeyedLock } from '../../stdx/key-lock.js';
import { crc32c } from '../../stdx/crc32c.js';
import { TesseraError } from '../../stdx/errors.js';
import { ensurePrDir, readPrFile, replacePrFile } from '../../io/node/pr-file.js';
import type { PrCasResult, PrRecord, PrStore } from './types.js';

/** The subdirectory of the data dir holding the records. */
export const PR_DIR = 'pr';
/** JSON bytes of one state (the cluster's limit too, mon/pr-service.ts). */
export const PR_STATE_BYTES_MAX = 64 * 1024;
/** Canonical decimal volume ids: safe as file names. Same rule as mon/pr-service.ts. */
const PR_KEY_RE = /^(0|[1-9][0-9]{0,15})$/;
const FILE_VERSION = 1;

/** The file operations the store needs (io/node/pr-file.ts by default). */
export interface PrFileIo {
  readFile(filePath: string): Promise<string | undefined>;
  replaceFile(filePath: string, text: string): Promise<void>;
  ensureDir(dir: string): Promise<void>;
}

export const nodePrFileIo: PrFileIo = { readFile: readPrFile, replaceFile: replacePrFile, ensureDir: ensurePrDir };

export interface LocalPrStoreOptions {
  /** The daemon's data dir; records go to `<dataDir>/pr/`. */
  dataDir: string;
  io?: PrFileIo;
}

function checkKey(key: unknown): asserts key is string {
  if (typeof key !== 'string' || !PR_KEY_RE.test(key)) throw new TesseraError('ERR_INVALID', `PR key must be a volume id (decimal, no leading zeros), got ${JSON.stringify(key)}`);
}

function stateText(state: unknown): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(state);
  } catch (err) {
    throw new TesseraError('ERR_INVALID', `PR state is not JSON-serializable: ${(err as Error).message}`);
  }
  if (text === undefined) throw new TesseraError('ERR_INVALID', 'PR state must be a JSON value');
  const bytes = Buffer.byteLength(text);
  if (bytes > PR_STATE_BYTES_MAX) throw new TesseraError('ERR_LIMIT', `PR state is ${bytes} bytes of JSON, limit ${PR_STATE_BYTES_MAX}`);
  return text;
}

const crcOf = (text: string): number => crc32c(Buffer.from(text, 'utf8'));

export function encodePrFile(key: string, rev: number, stateJson: string): string {
  return `{"v":${FILE_VERSION},"key":${JSON.stringify(key)},"rev":${rev},"crc32c":${crcOf(stateJson)},"state":${stateJson}}\n`;
}

export function decodePrFile(filePath: string, key: string, text: string): PrRecord {
  const bad = (why: string, cause?: unknown): TesseraError =>
    new TesseraError('ERR_FORMAT', `PR record file ${filePath} is damaged (${why}); it holds volume ${key}'s persistent reservations: restore or remove it by hand`, { cause });
  let v: { v?: unknown; key?: unknown; rev?: unknown; crc32c?: unknown; state?: unknown };
  try {
    v = JSON.parse(text) as typeof v;
  } catch (err) {
    throw bad('not JSON', err);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad('not a JSON object');
  if (v.v !== FILE_VERSION) throw bad(`format version ${JSON.stringify(v.v)}, expected ${FILE_VERSION}`);
  if (v.key !== key) throw bad(`it names key ${JSON.stringify(v.key)}`);
  if (typeof v.rev !== 'number' || !Number.isSafeInteger(v.rev) || v.rev < 1) throw bad(`rev ${JSON.stringify(v.rev)}`);
  if (!('state' in v)) throw bad('no state');
  if (v.crc32c !== crcOf(JSON.stringify(v.state))) throw bad('checksum mismatch');
  return { rev: v.rev, state: v.state };
}

export class LocalPrStore implements PrStore {
  private readonly dir: string;
  private readonly io: PrFileIo;
  private readonly records = new Map<string, PrRecord>();
  private readonly loads = new Map<string, Promise<PrRecord>>();
  private readonly locks = new KeyedLock();
  private readonly listeners = new KeyedListeners<PrRecord>();
  private dirReady: Promise<void> | null = null;
  private failed: TesseraError | null = null;
  private closed = false;

  constructor(opts: LocalPrStoreOptions) {
    this.dir = path.join(opts.dataDir, PR_DIR);
    this.io = opts.io ?? nodePrFileIo;
  }

  /** The file of a key (for messages and tests). */
  fileOf(key: string): string {
    checkKey(key);
    return path.join(this.dir, `${key}.json`);
  }

  current(key: string): PrRecord | 'unavailable' {
    if (this.closed || this.failed !== null) return 'unavailable';
    return this.records.get(key) ?? 'unavailable';
  }

  async load(key: string): Promise<PrRecord> {
    checkKey(key);
    this.checkUsable();
    const have = this.records.get(key);
    if (have !== undefined) return have;
    let p = this.loads.get(key);
    if (p === undefined) {
      const loadP = this.readRecord(key);
      p = loadP;
      this.loads.set(key, loadP);
      const forget = (): void => {
        if (this.loads.get(key) === loadP) this.loads.delete(key);
      };
      loadP.then(forget, forget);
    }
    const rec = await p;
    // A compareAndSet may have stored a newer record meanwhile: never go back.
    const now = this.records.get(key);
    if (now !== undefined && now.rev >= rec.rev) return now;
    this.records.set(key, rec);
    return rec;
  }

  async compareAndSet(key: string, expectRev: number, state: unknown): Promise<PrCasResult> {
    checkKey(key);
    if (!Number.isSafeInteger(expectRev) || expectRev < 0) throw new TesseraError('ERR_INVALID', `expectRev must be a non-negative integer, got ${expectRev}`);
    const json = stateText(state);
    this.checkUsable();
    return this.locks.run(key, async () => {
      this.checkUsable();
      const cur = await this.load(key);
      if (cur.rev !== expectRev) return { ok: false, current: cur };
      const rev = expectRev + 1;
      this.dirReady ??= this.io.ensureDir(this.dir);
      try {
        await this.dirReady;
        await this.io.replaceFile(this.fileOf(key), encodePrFile(key, rev, json));
      } catch (err) {
        this.dirReady = null;
        const e = err instanceof TesseraError ? err : new TesseraError('ERR_DEVICE_IO', `writing ${this.fileOf(key)} failed: ${(err as Error).message}`, { cause: err });
        this.failed ??= e;
        throw e;
      }
      const rec: PrRecord = { rev, state: JSON.parse(json) as unknown };
      this.records.set(key, rec);
      this.notify(key, rec);
      return { ok: true, rev };
    });
  }

  subscribe(key: string, listener: (rec: PrRecord) => void): () => void {
    return this.listeners.add(key, listener);
  }

  /** Waits for writes in progress; later calls fail with ERR_CLOSED. */
  async close(): Promise<void> {
    this.closed = true;
    await this.locks.idle();
  }

  private checkUsable(): void {
    if (this.closed) throw new TesseraError('ERR_CLOSED', 'PR store closed');
    if (this.failed !== null) throw this.failed;
  }

  private async readRecord(key: string): Promise<PrRecord> {
    const file = this.fileOf(key);
    const text = await this.io.readFile(file);
    return text === undefined ? { rev: 0, state: null } : decodePrFile(file, key, text);
  }

  private notify(key: string, rec: PrRecord): void {
    // A listener's bug must not undo a durable write; the gate's listeners do not throw.
    this.listeners.emit(key, rec);
  }

}
