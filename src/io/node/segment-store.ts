// SegmentStore on a local directory (node:fs): one regular file per segment,
// appended with positional writev at the file's end and made durable with
// fdatasync; the directory is fsync'ed to make creates and removes durable.
// The contract is src/io/segments.ts.
//
// Invariants:
// - One fd per open segment; `sizeBytes` is the file size at open plus every
//   byte appended through this handle (the caller is the only writer).
// - Every OS error becomes a TesseraError: fdatasync/fsync failures are
//   ERR_DEVICE_FLUSH (fatal: after a failed fsync Linux may already have dropped
//   the dirty pages, so retrying could report success for lost data), append
//   failures ERR_DEVICE_IO (ERR_NO_SPACE for ENOSPC), and a failed append
//   poisons its handle: the file's end is then unknown, so later appends and
//   syncs on it fail with the same error.
// - Names are validated against SEGMENT_NAME_PATTERN (no path traversal).
// - `blockingIo`: append (writev) runs on the calling thread instead of libuv's
//   thread pool: into the page cache it takes microseconds, and the hand-off
//   to a pool thread costs more CPU than the write (docs/ARCHITECTURE.md
//   "Replication"). `syncInline` also runs fdatasync on the calling thread:
//   cheapest in CPU, but the event loop then stands still for the whole
//   flush (0.1 ms alone, several ms when other processes flush the same disk).
//   `syncInlineBytesMax` makes that choice per flush: inline only when at most
//   that many bytes were appended since the previous flush. The OSD appends
//   inline and uses 16 KiB: a lightly loaded WAL (one 4 KiB write per flush, QD1)
//   flushes inline, which is faster per write (3-replica QD1: ~1.0 ms mean against
//   ~1.26 ms on the pool); a busy one (about ten writes per flush at QD32) flushes
//   on the pool and keeps receiving, replicating and applying meanwhile (QD32:
//   ~3.2k against ~2.7k writes/s). Measured in session 8, docs/benchmarks.md.
//   `syncInlineQuietUs` adds a second condition: inline only when the store's
//   previous flush ended at least that long ago. A quiet log (QD1: one write
//   every few hundred us) has nothing else to do while it blocks; a busy one
//   (QD32, flushes back to back) would stall every peer and client waiting on
//   this loop, even for a small batch (session 18: with batches of 1-3 records
//   flushed inline, each OSD loop stood still 12-15 % of the time at QD32).
// - `spareSegmentsMax` (recycling, see io/segments.ts): remove() renames up to
//   that many files to `spare-<n>` instead of unlinking them, and create()
//   renames a spare to the new name. A spare is never listed; create() checks
//   that the new name is free first (rename would replace it). One writer per
//   directory, so the check and the rename do not race. A file with more than
//   one link is never kept or reused: a crash in the middle of an unsynced
//   rename can leave both names (ext4 without a journal), and reusing the file
//   would overwrite the other name's data. openDir() unlinks such spare names.
// - Block-padded appends into old bytes: an append whose end falls inside a
//   file block that still holds bytes of the file's earlier life (a recycled
//   file) also writes zeros from its end to that block's end (`st_blksize`).
//   A buffered write that covers only part of a block the page cache does not
//   hold makes the kernel read the block from the disk first, synchronously;
//   a spare's old blocks are rarely cached (written long ago, and this
//   machine kind's host also pages cold page cache out), so without the pad
//   nearly every WAL batch waited for one disk read inside pwritev: 4,192-byte
//   appends plus fdatasync took 134-141 us against 87-89 us padded, and in a
//   3-OSD cluster at QD1 the WAL's pwritev took 112 us at the median
//   (docs/benchmarks.md, session 20). The zeros lie beyond sizeBytes, where a
//   recycled file's old bytes were: a reopen after a crash reads them as it
//   reads a torn tail's zero sectors, and seal() cuts them off. A fresh file's
//   blocks past its end are new (nothing to read), so it is never padded.
import * as fs from 'node:fs';
import { join } from 'node:path';
import { TesseraError } from '../../stdx/errors.js';
import { assert, fail } from '../../stdx/assert.js';
import { SEGMENT_NAME_PATTERN, type Segment, type SegmentStore } from '../segments.js';

export interface NodeSegmentStoreOptions {
  /** Append on the calling thread (see the header). Default false. */
  blockingIo?: boolean;
  /** With blockingIo, fdatasync on the calling thread too (see the header). Default false. */
  syncInline?: boolean;
  /** With blockingIo: fdatasync on the calling thread when at most this many bytes were appended since the last one (see the header). */
  syncInlineBytesMax?: number;
  /** With syncInlineBytesMax: ...and only when the previous flush of this store ended at least this long ago (see the header). Default 0. */
  syncInlineQuietUs?: number;
  /** Clock for syncInlineQuietUs (tests); default performance.now. */
  nowMs?: () => number;
  /** Keep up to this many removed segments' files for reuse by create() (see the header). Default 0. */
  spareSegmentsMax?: number;
}

/** Where each flush runs (see the header); shared by a store and its segments. */
interface SyncPolicy {
  readonly blockingIo: boolean;
  /** Largest appended-since-last-flush byte count flushed on the calling thread (-1: never). */
  readonly inlineBytesMax: number;
  readonly inlineQuietMs: number;
  readonly nowMs: () => number;
  /** When the store's last flush ended (-Infinity: none yet). */
  lastSyncEndMs: number;
  poolSyncsInFlight: number;
}

/** Names of spare files (recycling); never listed, never valid segment names for callers. */
const SPARE_NAME = /^spare-(\d{1,15})$/;

export class NodeSegmentStore implements SegmentStore {
  private readonly policy: SyncPolicy;
  private readonly spareSegmentsMax: number;
  /** Spare file numbers, oldest first. */
  private readonly spares: number[] = [];
  private nextSpareNumber = 1;
  /** Creates served by a spare (counter for tests and stats). */
  recycledCreates = 0;

  constructor(
    readonly dirPath: string,
    options: NodeSegmentStoreOptions = {},
  ) {
    const blockingIo = options.blockingIo ?? false;
    const quietUs = options.syncInlineQuietUs ?? 0;
    if (!(Number.isFinite(quietUs) && quietUs >= 0)) fail(`syncInlineQuietUs ${quietUs} must be a non-negative number`);
    this.policy = {
      blockingIo,
      inlineBytesMax: !blockingIo ? -1 : options.syncInline === true ? Infinity : (options.syncInlineBytesMax ?? -1),
      inlineQuietMs: quietUs / 1000,
      nowMs: options.nowMs ?? (() => performance.now()),
      lastSyncEndMs: -Infinity,
      poolSyncsInFlight: 0,
    };
    this.spareSegmentsMax = options.spareSegmentsMax ?? 0;
    if (!(Number.isSafeInteger(this.spareSegmentsMax) && this.spareSegmentsMax >= 0)) fail(`spareSegmentsMax ${this.spareSegmentsMax} must be a non-negative integer`);
  }

  /** Creates the directory (and parents) if needed, and finds the spares a previous process left. */
  static async openDir(dirPath: string, options: NodeSegmentStoreOptions = {}): Promise<NodeSegmentStore> {
    await fs.promises.mkdir(dirPath, { recursive: true, mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      throw new TesseraError('ERR_DEVICE_IO', `mkdir ${dirPath}: ${err.code ?? err.message}`);
    });
    const store = new NodeSegmentStore(dirPath, options);
    const numbers = (await store.readNames()).map((n) => SPARE_NAME.exec(n)).filter((m) => m !== null).map((m) => Number(m[1]));
    numbers.sort((a, b) => a - b);
    store.nextSpareNumber = numbers.length === 0 ? 1 : numbers[numbers.length - 1] + 1;
    for (const n of numbers) {
      const sparePath = join(dirPath, `spare-${n}`);
      // Beyond the limit (it may have been lowered, to 0 to turn recycling off), or another
      // name reaches the same file (see the header): unlinked, never reused.
      if (store.spares.length < store.spareSegmentsMax && (await linkCount(sparePath)) === 1) store.spares.push(n);
      else await unlink(sparePath);
    }
    return store;
  }

  /** Spare files held now (recycling). */
  get spareCount(): number {
    return this.spares.length;
  }

  async list(): Promise<string[]> {
    return (await this.readNames()).filter((n) => !SPARE_NAME.test(n)).sort(compareNames);
  }

  private async readNames(): Promise<string[]> {
    let dirents: fs.Dirent[];
    try {
      dirents = await fs.promises.readdir(this.dirPath, { withFileTypes: true });
    } catch (err) {
      throw new TesseraError('ERR_DEVICE_IO', `readdir ${this.dirPath}: ${(err as NodeJS.ErrnoException).code}`);
    }
    return dirents.filter((d) => d.isFile() && SEGMENT_NAME_PATTERN.test(d.name)).map((d) => d.name);
  }

  async create(name: string): Promise<Segment> {
    const path = this.pathOf(name);
    const recycled = await this.takeSpare(name, path);
    if (recycled) return recycled;
    const fd = await openFd(path, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, (code) =>
      code === 'EEXIST' ? 'ERR_EXISTS' : 'ERR_DEVICE_IO',
    );
    return new NodeSegment(name, path, fd, 0, 0, blockBytesOf(fd), this.policy);
  }

  /** create() on a spare file: null when there is none (or it vanished). */
  private async takeSpare(name: string, path: string): Promise<Segment | null> {
    while (this.spares.length > 0) {
      const exists = await fs.promises.lstat(path).then(
        () => true,
        (err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') return false;
          throw new TesseraError('ERR_DEVICE_IO', `lstat ${path}: ${err.code}`);
        },
      );
      if (exists) throw new TesseraError('ERR_EXISTS', `open ${path}: EEXIST`);
      const spare = this.spares.shift()!;
      const sparePath = join(this.dirPath, `spare-${spare}`);
      const renamed = await fs.promises.rename(sparePath, path).then(
        () => true,
        (err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') return false; // removed behind our back: try the next one
          throw new TesseraError('ERR_DEVICE_IO', `rename ${sparePath} to ${path}: ${err.code}`);
        },
      );
      if (!renamed) continue;
      const fd = await openFd(path, fs.constants.O_RDWR, () => 'ERR_DEVICE_IO');
      const fileBytes = sizeOrClose(fd, path);
      this.recycledCreates++;
      return new NodeSegment(name, path, fd, 0, fileBytes, blockBytesOf(fd), this.policy);
    }
    return null;
  }

  async open(name: string): Promise<Segment> {
    const path = this.pathOf(name);
    const fd = await openFd(path, fs.constants.O_RDWR, (code) => (code === 'ENOENT' ? 'ERR_NOT_FOUND' : 'ERR_DEVICE_IO'));
    const sizeBytes = sizeOrClose(fd, path);
    return new NodeSegment(name, path, fd, sizeBytes, sizeBytes, blockBytesOf(fd), this.policy);
  }

  async remove(name: string): Promise<void> {
    const path = this.pathOf(name);
    if (this.spares.length < this.spareSegmentsMax && (await linkCount(path)) === 1) {
      const spare = this.nextSpareNumber++;
      const kept = await fs.promises.rename(path, join(this.dirPath, `spare-${spare}`)).then(
        () => true,
        (err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') return false;
          throw new TesseraError('ERR_DEVICE_IO', `rename ${path} to a spare: ${err.code}`);
        },
      );
      if (kept) this.spares.push(spare);
      return;
    }
    await unlink(path);
  }

  async syncDir(): Promise<void> {
    const fd = await openFd(this.dirPath, fs.constants.O_RDONLY, () => 'ERR_DEVICE_FLUSH');
    try {
      await new Promise<void>((resolve, reject) => {
        fs.fsync(fd, (err) => (err ? reject(new TesseraError('ERR_DEVICE_FLUSH', `fsync directory ${this.dirPath}: ${err.code}`)) : resolve()));
      });
    } finally {
      fs.close(fd, () => undefined);
    }
  }

  private pathOf(name: string): string {
    if (!(SEGMENT_NAME_PATTERN.test(name)) || SPARE_NAME.test(name)) fail(`bad segment name ${JSON.stringify(name)}`);
    return join(this.dirPath, name);
  }
}

class NodeSegment implements Segment {
  private closed = false;
  /** Set by a failed append: the file's end is unknown from then on. */
  private failure: TesseraError | null = null;
  private appending = false;

  constructor(
    readonly name: string,
    private readonly path: string,
    private readonly fd: number,
    public sizeBytes: number,
    /** The file's size: above sizeBytes while a recycled file holds bytes of its earlier life (or an append's pad). */
    private fileBytes: number,
    /** The file system's block (st_blksize): the unit of the pad (see the header). */
    private readonly blockBytes: number,
    private readonly policy: SyncPolicy,
  ) {}

  /** Appends so far that carried a pad (tests, stats). */
  paddedAppends = 0;

  private sealed = false;

  append(buffers: readonly Uint8Array[]): Promise<void> {
    const err = this.unusable();
    if (err) return Promise.reject(err);
    if (!(!this.appending)) fail(`concurrent appends to segment ${this.name}`);
    let totalBytes = 0;
    for (const b of buffers) totalBytes += b.length;
    if (totalBytes === 0) return Promise.resolve();
    this.appending = true;
    const offsetBytes = this.sizeBytes;
    const endBytes = offsetBytes + totalBytes;
    const padBytes = padAfter(endBytes, this.fileBytes, this.blockBytes);
    const writeBytes = totalBytes + padBytes;
    const iov = padBytes === 0 ? buffers : [...buffers, zeroBlock(this.blockBytes).subarray(0, padBytes)];
    if (padBytes > 0) this.paddedAppends++;
    const done = (werr: NodeJS.ErrnoException | null, written: number): TesseraError | null => {
      this.appending = false;
      if (werr || written !== writeBytes) {
        const code = werr?.code === 'ENOSPC' ? 'ERR_NO_SPACE' : 'ERR_DEVICE_IO';
        this.failure = new TesseraError(code, `append to ${this.path} at ${offsetBytes}+${writeBytes}: ${werr ? werr.code : `short write ${written}`}`);
        return this.failure;
      }
      this.sizeBytes = endBytes;
      if (endBytes + padBytes > this.fileBytes) this.fileBytes = endBytes + padBytes;
      return null;
    };
    if (this.policy.blockingIo) {
      let failure: TesseraError | null;
      try {
        failure = done(null, writevAllSync(this.fd, iov, offsetBytes));
      } catch (err) {
        failure = done(err as NodeJS.ErrnoException, 0);
      }
      return failure ? Promise.reject(failure) : Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      // libuv loops over partial writes and IOV_MAX chunks; a short total means an error.
      fs.writev(this.fd, iov as Uint8Array[], offsetBytes, (werr, written) => {
        const failure = done(werr, written);
        if (failure) reject(failure);
        else resolve();
      });
    });
  }

  /** Inline syncs and pool syncs so far (see syncInlineBytesMax). */
  inlineSyncs = 0;
  poolSyncs = 0;
  /** sizeBytes when the previous sync started. */
  private syncedSizeBytes = -1;

  sync(): Promise<void> {
    const err = this.unusable();
    if (err) return Promise.reject(err);
    const newBytes = this.syncedSizeBytes < 0 ? this.sizeBytes : this.sizeBytes - this.syncedSizeBytes;
    this.syncedSizeBytes = this.sizeBytes;
    if (this.syncsInline(newBytes)) {
      this.inlineSyncs++;
      try {
        fs.fdatasyncSync(this.fd);
      } catch (serr) {
        return Promise.reject(new TesseraError('ERR_DEVICE_FLUSH', `fdatasync ${this.path}: ${(serr as NodeJS.ErrnoException).code}`));
      } finally {
        this.policy.lastSyncEndMs = this.policy.nowMs();
      }
      return Promise.resolve();
    }
    this.poolSyncs++;
    return this.poolSync();
  }

  /** See the header: small, and the store quiet (no flush in flight, the last one ended long enough ago). */
  private syncsInline(newBytes: number): boolean {
    const p = this.policy;
    if (!(newBytes <= p.inlineBytesMax)) return false;
    if (p.inlineQuietMs === 0) return true;
    return p.poolSyncsInFlight === 0 && p.nowMs() - p.lastSyncEndMs >= p.inlineQuietMs;
  }

  private poolSync(): Promise<void> {
    const p = this.policy;
    p.poolSyncsInFlight++;
    return new Promise((resolve, reject) => {
      fs.fdatasync(this.fd, (serr) => {
        p.poolSyncsInFlight--;
        p.lastSyncEndMs = p.nowMs();
        if (serr) reject(new TesseraError('ERR_DEVICE_FLUSH', `fdatasync ${this.path}: ${serr.code}`));
        else resolve();
      });
    });
  }

  async seal(): Promise<void> {
    const err = this.unusable();
    if (err) throw err;
    if (!(!this.appending)) fail(`seal of segment ${this.name} during an append`);
    this.sealed = true;
    if (this.fileBytes > this.sizeBytes) {
      await new Promise<void>((resolve, reject) => {
        fs.ftruncate(this.fd, this.sizeBytes, (terr) => {
          if (terr) reject(new TesseraError('ERR_DEVICE_IO', `ftruncate ${this.path} to ${this.sizeBytes}: ${terr.code}`));
          else resolve();
        });
      });
      this.fileBytes = this.sizeBytes;
    }
    await this.poolSync();
  }

  read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    if (this.closed) return Promise.reject(new TesseraError('ERR_CLOSED', `segment ${this.name} is closed`));
    if (offsetBytes < 0 || lengthBytes < 0 || offsetBytes + lengthBytes > this.sizeBytes) {
      return Promise.reject(new TesseraError('ERR_RANGE', `read ${this.path} at ${offsetBytes}+${lengthBytes} beyond its end ${this.sizeBytes}`));
    }
    const buf = Buffer.alloc(lengthBytes);
    if (lengthBytes === 0) return Promise.resolve(buf);
    return new Promise((resolve, reject) => {
      fs.read(this.fd, buf, 0, lengthBytes, offsetBytes, (rerr, bytesRead) => {
        if (rerr || bytesRead !== lengthBytes) {
          reject(new TesseraError('ERR_DEVICE_IO', `read ${this.path} at ${offsetBytes}+${lengthBytes}: ${rerr ? rerr.code : `short read ${bytesRead}`}`));
        } else resolve(buf);
      });
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve) => fs.close(this.fd, () => resolve()));
  }

  private unusable(): TesseraError | null {
    if (this.closed) return new TesseraError('ERR_CLOSED', `segment ${this.name} is closed`);
    if (this.sealed && this.failure === null) return new TesseraError('ERR_CLOSED', `segment ${this.name} is sealed`);
    return this.failure;
  }
}

function openFd(path: string, flags: number, codeOf: (errno: string | undefined) => 'ERR_EXISTS' | 'ERR_NOT_FOUND' | 'ERR_DEVICE_IO' | 'ERR_DEVICE_FLUSH'): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.open(path, flags, 0o600, (err, fd) => {
      if (err) reject(new TesseraError(codeOf(err.code), `open ${path}: ${err.code}`));
      else resolve(fd);
    });
  });
}

/** fstat size of an fd just opened; on failure the fd is closed and ERR_DEVICE_IO thrown. */
function sizeOrClose(fd: number, path: string): number {
  try {
    return fs.fstatSync(fd).size;
  } catch (err) {
    fs.closeSync(fd);
    throw new TesseraError('ERR_DEVICE_IO', `fstat ${path}: ${(err as NodeJS.ErrnoException).code}`);
  }
}

/** Block size used when st_blksize is not a power of two in [512, 64 KiB]. */
const DEFAULT_BLOCK_BYTES = 4096;

/** The file system's preferred IO block (st_blksize), the unit in which a partial write makes the kernel read. */
function blockBytesOf(fd: number): number {
  let blk = DEFAULT_BLOCK_BYTES;
  try {
    blk = fs.fstatSync(fd).blksize;
  } catch {
    // The size was read from the same fd a moment ago; a failure here only costs the pad its precision.
  }
  return blk >= 512 && blk <= 65536 && (blk & (blk - 1)) === 0 ? blk : DEFAULT_BLOCK_BYTES;
}

/**
 * Zeros to write after an append ending at endBytes (see the header): up to the
 * end of its block when the file holds older bytes past endBytes (endBytes <
 * fileBytes: a recycled file's earlier life, or an earlier pad), else none.
 */
export function padAfter(endBytes: number, fileBytes: number, blockBytes: number): number {
  const inBlock = endBytes % blockBytes;
  if (inBlock === 0 || endBytes >= fileBytes) return 0;
  return blockBytes - inBlock;
}

const zeroBlocks = new Map<number, Buffer>();
/** A shared, never written, zero-filled buffer of blockBytes (the pad's source). */
function zeroBlock(blockBytes: number): Buffer {
  let z = zeroBlocks.get(blockBytes);
  if (!z) zeroBlocks.set(blockBytes, (z = Buffer.alloc(blockBytes)));
  return z;
}

/** The file's link count, 0 when it does not exist. */
async function linkCount(path: string): Promise<number> {
  return fs.promises.lstat(path).then(
    (st) => st.nlink,
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return 0;
      throw new TesseraError('ERR_DEVICE_IO', `lstat ${path}: ${err.code}`);
    },
  );
}

async function unlink(path: string): Promise<void> {
  await fs.promises.rm(path, { force: true }).catch((err: NodeJS.ErrnoException) => {
    throw new TesseraError('ERR_DEVICE_IO', `remove ${path}: ${err.code ?? err.message}`);
  });
}

function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** IOV_MAX on Linux: writev takes at most this many buffers per call. */
const IOV_MAX = 1024;

/** Positional writev of every byte, looping over partial writes and IOV_MAX (fs.writevSync does neither). */
function writevAllSync(fd: number, buffers: readonly Uint8Array[], offsetBytes: number): number {
  let total = 0;
  let i = 0;
  let skip = 0; // bytes of buffers[i] already written
  while (i < buffers.length) {
    const batch: Uint8Array[] = [];
    for (let k = i; k < buffers.length && batch.length < IOV_MAX; k++) batch.push(k === i && skip > 0 ? buffers[k].subarray(skip) : buffers[k]);
    let n = fs.writevSync(fd, batch, offsetBytes + total);
    if (n <= 0) return total; // a short total is reported by the caller
    total += n;
    while (i < buffers.length && n > 0) {
      const left = buffers[i].length - skip;
      if (n >= left) {
        n -= left;
        i++;
        skip = 0;
      } else {
        skip += n;
        n = 0;
      }
    }
    while (i < buffers.length && buffers[i].length === 0) i++;
  }
  return total;
}
