// A durable, append-only key-value log on one local file: the disk side of the
// monitor's embedded metadata store (src/mon/embedded-store.ts).
//
// Format: text lines `<crc32c as 8 hex digits> <json>\n`, where json is
// `{"rev":"<n>","ops":[{"k":key,"r":"<rev>","v":"<base64>"}, ...]}` (no "v": delete).
// "rev" is the highest revision the line covers, so the counter survives even when
// every key has been deleted. Each group commit is ONE line, so the only torn
// unit a crash can leave is the last line.
//
// Invariants:
// - append() resolves only after its ops are written and fdatasync'ed. Concurrent
//   appends are grouped: while one write+fsync is in flight, new ops queue and go
//   out together in the next one (group commit).
// - On open, a last line without its newline or failing its checksum is a torn
//   tail: it is dropped and the file truncated to the last good line. A bad line
//   anywhere else is corruption: ERR_FORMAT, never silently skipped.
// - Compaction writes the caller's snapshot (which must include every op handed
//   to append() so far) to `<path>.tmp`, fsyncs it, renames it over the log and
//   fsyncs the directory, so a crash leaves either the old or the new file whole.
// - An fsync or write failure poisons the log: every pending and later append
//   rejects with ERR_DEVICE_FLUSH (what reached the disk is unknown; reopen).
import * as fs from 'node:fs/promises';
import { dirname } from 'node:path';
import { TesseraError } from '../../stdx/errors.js';
import { crc32c } from '../../stdx/crc32c.js';
import { assert, fail } from '../../stdx/assert.js';

export interface KvOp {
  key: string;
  revision: bigint;
  /** null deletes the key. */
  value: Buffer | null;
}

export interface KvSnapshot {
  revision: bigint;
  entries: Iterable<{ key: string; revision: bigint; value: Buffer }>;
}

export interface KvLogOptions {
  /** Compact once the log has grown by this many bytes since the last compaction... */
  compactMinBytes?: number;
  /** ...and is this many times larger than the last snapshot. */
  compactRatio?: number;
  /** Called (inside the commit loop) to get the state to compact to. */
  snapshot: () => KvSnapshot;
}

export interface KvLogOpenResult {
  log: KvLog;
  /** Every op in the file, in order (snapshot entries first, as puts). */
  ops: KvOp[];
  /** Highest revision the file records. */
  revision: bigint;
  /** Bytes of torn tail dropped on open (0 after a clean shutdown). */
  tornTailBytes: number;
}

/** Largest log file accepted on open: the monitor's metadata is small; a bigger file is not ours. */
export const KVLOG_FILE_BYTES_MAX = 1024 * 1024 * 1024;
const SNAPSHOT_OPS_PER_LINE = 1024;
const COMPACT_MIN_BYTES_DEFAULT = 4 * 1024 * 1024;
const COMPACT_RATIO_DEFAULT = 4;
/** Ops per group-commit line; keeps one line's JSON well under V8's string limit. */
const COMMIT_OPS_MAX = 4096;

interface Pending {
  ops: KvOp[];
  resolve: () => void;
  reject: (err: Error) => void;
}

export class KvLog {
  private queue: Pending[] = [];
  private flushing = false;
  private failure: TesseraError | null = null;
  private closed = false;
  private bytesSinceCompact = 0;
  private idleWaiters: Array<() => void> = [];

  private constructor(
    private readonly path: string,
    private fh: fs.FileHandle,
    private fileBytes: number,
    private snapshotBytes: number,
    private readonly options: KvLogOptions,
  ) {}

  static async open(path: string, options: KvLogOptions): Promise<KvLogOpenResult> {
    let data: Buffer;
    try {
      const st = await fs.stat(path);
      if (st.size > KVLOG_FILE_BYTES_MAX) throw new TesseraError('ERR_FORMAT', `${path}: ${st.size} bytes exceeds the log limit`);
      data = await fs.readFile(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw wrapIo(err, `read ${path}`);
      data = Buffer.alloc(0);
    }
    const parsed = parseLog(data, path);
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(path, 'a+');
      if (parsed.goodBytes < data.length) {
        // Drop the torn tail durably before appending after it.
        await fh.truncate(parsed.goodBytes);
        await fh.datasync();
      }
      if (data.length === 0) await fsyncDir(path); // the file is new: make its name durable
    } catch (err) {
      throw wrapIo(err, `open ${path}`);
    }
    const log = new KvLog(path, fh, parsed.goodBytes, parsed.goodBytes, options);
    return { log, ops: parsed.ops, revision: parsed.revision, tornTailBytes: data.length - parsed.goodBytes };
  }

  /** Makes ops durable; resolves after their fsync. Ops must be in increasing revision order across calls. */
  append(ops: KvOp[]): Promise<void> {
    if (this.closed) return Promise.reject(new TesseraError('ERR_CLOSED', 'kvlog is closed'));
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.queue.push({ ops, resolve, reject });
      if (!this.flushing) void this.flushLoop();
    });
  }

  /** Waits for pending appends, then closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.flushing) await new Promise<void>((r) => this.idleWaiters.push(r));
    await this.fh.close().catch(() => undefined);
  }

  private async flushLoop(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length > 0 && !this.failure) {
        const batch = this.queue;
        this.queue = [];
        try {
          if (this.shouldCompact()) await this.compact();
          else await this.writeBatch(batch);
          for (const p of batch) p.resolve();
        } catch (err) {
          this.failure = wrapIo(err, `commit to ${this.path}`, 'ERR_DEVICE_FLUSH');
          for (const p of batch) p.reject(this.failure);
        }
      }
      if (this.failure) for (const p of this.queue.splice(0)) p.reject(this.failure);
    } finally {
      this.flushing = false;
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private shouldCompact(): boolean {
    const minBytes = this.options.compactMinBytes ?? COMPACT_MIN_BYTES_DEFAULT;
    const ratio = this.options.compactRatio ?? COMPACT_RATIO_DEFAULT;
    return this.bytesSinceCompact >= minBytes && this.fileBytes >= ratio * this.snapshotBytes;
  }

  private async writeBatch(batch: Pending[]): Promise<void> {
    const ops = batch.flatMap((p) => p.ops);
    const lines: Buffer[] = [];
    for (let i = 0; i < ops.length; i += COMMIT_OPS_MAX) {
      const chunk = ops.slice(i, i + COMMIT_OPS_MAX);
      lines.push(encodeLine(chunk[chunk.length - 1].revision, chunk));
    }
    const buf = Buffer.concat(lines);
    // The fd is O_APPEND; a short write surfaces as an error from write(), and
    // a partial line left behind is exactly the torn tail open() drops.
    let written = 0;
    while (written < buf.length) {
      const { bytesWritten } = await this.fh.write(buf, written, buf.length - written);
      written += bytesWritten;
    }
    await this.fh.datasync();
    this.fileBytes += buf.length;
    this.bytesSinceCompact += buf.length;
  }

  /** Rewrites the log as the caller's snapshot, which covers every op appended so far (including this batch). */
  private async compact(): Promise<void> {
    const snap = this.options.snapshot();
    const lines: Buffer[] = [];
    let chunk: KvOp[] = [];
    for (const e of snap.entries) {
      chunk.push({ key: e.key, revision: e.revision, value: e.value });
      if (chunk.length === SNAPSHOT_OPS_PER_LINE) {
        lines.push(encodeLine(snap.revision, chunk));
        chunk = [];
      }
    }
    lines.push(encodeLine(snap.revision, chunk)); // always at least one line: it carries the revision
    const buf = Buffer.concat(lines);
    const tmp = `${this.path}.tmp`;
    const th = await fs.open(tmp, 'w');
    try {
      await th.writeFile(buf);
      await th.datasync();
    } finally {
      await th.close();
    }
    await fs.rename(tmp, this.path);
    await fsyncDir(this.path);
    const old = this.fh;
    this.fh = await fs.open(this.path, 'a');
    await old.close();
    this.fileBytes = buf.length;
    this.snapshotBytes = buf.length;
    this.bytesSinceCompact = 0;
  }
}

function encodeLine(revision: bigint, ops: KvOp[]): Buffer {
  const json = JSON.stringify({
    rev: revision.toString(),
    ops: ops.map((o) => (o.value === null ? { k: o.key, r: o.revision.toString() } : { k: o.key, r: o.revision.toString(), v: o.value.toString('base64') })),
  });
  const body = Buffer.from(json, 'utf8');
  const head = Buffer.from(crc32c(body).toString(16).padStart(8, '0') + ' ', 'latin1');
  return Buffer.concat([head, body, Buffer.from('\n')]);
}

interface Parsed {
  ops: KvOp[];
  revision: bigint;
  goodBytes: number;
}

/** Parses the whole file; see the header for which bad lines are torn tails and which are corruption. */
export function parseLog(data: Buffer, name: string): Parsed {
  const ops: KvOp[] = [];
  let revision = 0n;
  let pos = 0;
  let lineNo = 0;
  while (pos < data.length) {
    lineNo++;
    const nl = data.indexOf(0x0a, pos);
    if (nl < 0) break; // no newline: the last write was torn
    const isLast = nl === data.length - 1;
    const line = decodeLine(data.subarray(pos, nl));
    if (line === null) {
      if (isLast) break; // complete length but bad checksum: torn (sectors written out of order)
      throw new TesseraError('ERR_FORMAT', `${name}: line ${lineNo} (byte ${pos}) fails its checksum and is not the last; the log is corrupt`);
    }
    if (!(line.revision >= revision)) fail(`${name}: line ${lineNo} revision went backwards`);
    revision = line.revision;
    ops.push(...line.ops);
    pos = nl + 1;
  }
  return { ops, revision, goodBytes: pos };
}

function decodeLine(line: Buffer): { revision: bigint; ops: KvOp[] } | null {
  if (line.length < 10 || line[8] !== 0x20) return null;
  const crcText = line.subarray(0, 8).toString('latin1');
  if (!/^[0-9a-f]{8}$/.test(crcText)) return null;
  const body = line.subarray(9);
  if (crc32c(body) !== parseInt(crcText, 16)) return null;
  // A line whose checksum matches was written by us; a schema error is a bug, so it throws.
  const obj = JSON.parse(body.toString('utf8')) as { rev: string; ops: Array<{ k: string; r: string; v?: string }> };
  const revision = BigInt(obj.rev);
  return {
    revision,
    ops: obj.ops.map((o) => ({ key: o.k, revision: BigInt(o.r), value: o.v === undefined ? null : Buffer.from(o.v, 'base64') })),
  };
}

async function fsyncDir(path: string): Promise<void> {
  const dh = await fs.open(dirname(path), 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

function wrapIo(err: unknown, what: string, code: 'ERR_DEVICE_IO' | 'ERR_DEVICE_FLUSH' = 'ERR_DEVICE_IO'): TesseraError {
  if (err instanceof TesseraError) return err;
  return new TesseraError(code, `${what}: ${(err as Error).message}`, { cause: err });
}
