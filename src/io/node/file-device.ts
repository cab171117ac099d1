// DEV1 on Node: a device backed by a regular file or a block device path, opened
// once, with positional reads/writes through libuv (io_uring when the process runs
// with UV_USE_IO_URING=1) and fdatasync for flush. O_DIRECT is used when the file
// system accepts it (buffers must then come from stdx/buffer-pool.ts); 'auto'
// falls back to buffered IO when the probe read fails with EINVAL.
//
// Invariants: one fd per device for its lifetime; every error is mapped to a
// TesseraError (ERR_DEVICE_IO / ERR_DEVICE_FLUSH) and counted in `stats`.
import * as fs from 'node:fs';
import { basename, dirname } from 'node:path';
import { fail } from '../../stdx/assert.js';
import { TesseraError } from '../../stdx/errors.js';
import { IoStats } from '../../stdx/stats.js';
import { alignedBuffer } from '../../stdx/buffer-pool.js';
import type { BlockDevice } from '../../device/device.js';
import { SECTOR_BYTES } from '../../device/device.js';
import { BLOCK_STRIDE_BYTES } from '../../engine/layout.js';
import { SyncGate } from '../sync-gate.js';
import { adviseWritePages, type PageAdviceCounters } from './page-cache.js';

export type DirectIoMode = 'auto' | 'on' | 'off';
/**
 * Which small buffered writes run synchronously on the calling thread (see
 * FileDevice): 'first-per-turn' sends the others of a turn to the thread pool,
 * overlapping their copy with this thread's work; 'all' saves the pool's hand-off
 * (futex wake-ups, a context switch each way). The engine's devices use 'all'
 * (engine/store.ts): since large writes are split (WRITE_PIECE_BYTES), a 4 KiB
 * write into the page cache costs ~4 us, and 'all' doubled 4 KiB random writes at
 * QD32 over iSCSI on one machine (~37k to 70-79k IOPS, 29 to 13-15 us of CPU per
 * write, session 11); OSDs sharing a host's cores used it before that.
 */
export type InlineWrites = 'first-per-turn' | 'all';

/** A synchronous IO slower than this most likely waited for the disk (page-cache miss, dirty throttling). */
const SYNC_SLOW_US = 150;
/** After slow synchronous IOs closed a gate, use the thread pool for this long before trying again. */
const SYNC_BACKOFF_MS = 250;
/** Reads: slow synchronous reads tolerated (decaying by one per 32 fast ones) before backing off. */
const SYNC_READ_SLOW_BUDGET = 4;
/** Writes: slow synchronous writes may hold the event loop for this share of each window... */
const SYNC_WRITE_STALL_FRACTION = 0.2;
/** ...of this length (see io/sync-gate.ts). */
const SYNC_WRITE_WINDOW_MS = 100;
/** Larger IOs always go to the thread pool: copying them would hold the event loop too long. */
const SYNC_IO_BYTES_MAX = 64 * 1024;
/** Parts of one readParts/writeParts: Linux's IOV_MAX. */
const IOV_PARTS_MAX = 1024;
/**
 * Buffered writes larger than this reach the kernel as several pwritev calls, cut
 * every WRITE_PIECE_BYTES from the write's start. A write allocates page-cache
 * folios as large as itself (Linux 6.x, ext4), and every later small write into a
 * large folio pays for the folio's size: ext4 walks each of its blocks
 * (ext4_block_write_begin). Measured here (session 11), a random 4,608-byte pwrite
 * costs 16 us in a file written with 1 MiB writes, 5.6 us after 256 KiB writes,
 * 3.8 us after 64 KiB, 1.9 us after 4 KiB. Random 4 KiB writes over data first
 * written sequentially (an image copied in, then used) is the common case of a VM
 * disk. Issued together, 128 KiB pieces kept the throughput of 1 MiB writes over
 * iSCSI (1,554 against 1,546 IOPS) for ~4 % more CPU.
 *
 * The size is a whole number of stored blocks (28 x 4,608 bytes), and the engine's
 * large writes start at a block and hold whole blocks, so every cut falls between
 * two blocks: each block, data and trailer, still reaches the kernel in one call.
 * Whole-block writes to the same block may run concurrently (range-lock.ts), and a
 * cut inside a block would let another write land between the two halves, leaving
 * a block that fails its checksum for good (review, session 11).
 */
export const WRITE_PIECE_BYTES = 28 * BLOCK_STRIDE_BYTES;

/** One pwritev of a split write: its parts and where they go. */
export interface WritePiece {
  parts: Uint8Array[];
  offsetBytes: number;
}

/**
 * parts (written from offsetBytes on) as consecutive pieces of exactly pieceBytes
 * each, the last one possibly shorter; a part that crosses a cut is cut into views
 * (no copy). A piece holds a contiguous run of the parts, so never more of them
 * than the write itself. Empty parts are dropped.
 */
export function splitWrite(parts: readonly Uint8Array[], offsetBytes: number, pieceBytes: number): WritePiece[] {
  if (!(Number.isInteger(pieceBytes) && pieceBytes > 0)) fail(`splitWrite: pieceBytes ${pieceBytes}`);
  const pieces: WritePiece[] = [];
  let cur: WritePiece = { parts: [], offsetBytes };
  let curBytes = 0;
  for (const part of parts) {
    let from = 0;
    while (from < part.length) {
      if (curBytes === pieceBytes) {
        pieces.push(cur);
        cur = { parts: [], offsetBytes: cur.offsetBytes + curBytes };
        curBytes = 0;
      }
      const take = Math.min(part.length - from, pieceBytes - curBytes);
      cur.parts.push(from === 0 && take === part.length ? part : part.subarray(from, from + take));
      curBytes += take;
      from += take;
    }
  }
  if (cur.parts.length > 0) pieces.push(cur);
  return pieces;
}

export class FileDevice implements BlockDevice {
  readonly sectorBytes = SECTOR_BYTES;
  readonly stats = new IoStats();
  private closed = false;
  /**
   * Page-cache fast path for reads (buffered devices only). A 4 KiB pread that hits
   * the page cache costs ~3 us as a direct syscall but ~10 us of main-thread CPU
   * through libuv's thread pool (queueing, futex wake-ups, completion callback),
   * so small IOs are issued synchronously while they stay fast. A synchronous IO
   * that had to wait for the disk blocks the event loop, so slow ones switch this
   * device's reads or writes back to the thread pool for SYNC_BACKOFF_MS: a few
   * slow reads in a row, or writes that held the loop for a fifth of the time
   * (io/sync-gate.ts says why the two differ).
   * Writes go synchronous only when no other device IO is in flight (queue depth
   * 1: it saves the pool's round trip, ~20 us here); under load they use the pool,
   * which overlaps the copy into the page cache with the main thread's network
   * work; with inlineWrites 'all' they stay synchronous (see InlineWrites).
   * A 4 KiB write costs ~6 us of kernel time into small page-cache folios but ~25 us
   * into a large folio (one left by a large sequential write: ext4 walks every
   * block of the folio on each write; Linux 6.18 here, session 10), which is why large
   * writes are split (WRITE_PIECE_BYTES).
   */
  /** Whether small reads / writes may run synchronously (see above). */
  readonly readGate = new SyncGate({ policy: 'count', slowUs: SYNC_SLOW_US, backoffMs: SYNC_BACKOFF_MS, slowBudget: SYNC_READ_SLOW_BUDGET });
  readonly writeGate = new SyncGate({ policy: 'stall', slowUs: SYNC_SLOW_US, backoffMs: SYNC_BACKOFF_MS, windowMs: SYNC_WRITE_WINDOW_MS, stallBudgetFraction: SYNC_WRITE_STALL_FRACTION });
  private syncWroteThisTurn = false;
  private readonly endTurn = (): void => {
    this.syncWroteThisTurn = false;
  };
  syncIos = 0;
  asyncIos = 0;
  /** pwritev calls made for writes split into WRITE_PIECE_BYTES pieces (tests; see splitWrite). */
  splitWriteCalls = 0;
  /** Page-cache advice given by prefetchWrite. */
  readonly pageAdvice: PageAdviceCounters = { calls: 0, errors: 0 };

  private constructor(
    readonly name: string,
    readonly path: string,
    readonly sizeBytes: number,
    readonly directIo: boolean,
    private readonly fd: number,
    readonly inlineWrites: InlineWrites = 'first-per-turn',
  ) {}

  /** Open an existing device file or block device. */
  static async open(path: string, mode: DirectIoMode = 'auto', name = basename(path), inlineWrites: InlineWrites = 'first-per-turn'): Promise<FileDevice> {
    const st = await fs.promises.stat(path).catch((err: NodeJS.ErrnoException) => {
      throw new TesseraError('ERR_NOT_FOUND', `device ${path}: ${err.code ?? err.message}`);
    });
    let sizeBytes: number;
    if (st.isBlockDevice()) sizeBytes = await blockDeviceSizeBytes(path);
    else if (st.isFile()) sizeBytes = st.size;
    else throw new TesseraError('ERR_INVALID', `device ${path} is neither a regular file nor a block device`);
    sizeBytes -= sizeBytes % SECTOR_BYTES;
    const flags = fs.constants.O_RDWR;
    if (mode !== 'off') {
      const fd = await openFd(path, flags | fs.constants.O_DIRECT).catch(() => -1);
      if (fd >= 0 && (await probeDirect(fd))) return new FileDevice(name, path, sizeBytes, true, fd, inlineWrites);
      if (fd >= 0) fs.closeSync(fd);
      if (mode === 'on') throw new TesseraError('ERR_INVALID', `device ${path}: the file system does not support O_DIRECT`);
    }
    const fd = await openFd(path, flags);
    return new FileDevice(name, path, sizeBytes, false, fd, inlineWrites);
  }

  /** Create a sparse regular file of `sizeBytes` (fails if it exists). */
  static async create(path: string, sizeBytes: number): Promise<void> {
    const fh = await fs.promises.open(path, 'wx', 0o600).catch((err: NodeJS.ErrnoException) => {
      throw new TesseraError(err.code === 'EEXIST' ? 'ERR_EXISTS' : 'ERR_DEVICE_IO', `cannot create device ${path}: ${err.code ?? err.message}`);
    });
    try {
      await fh.truncate(sizeBytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  /** Atomically move a fully written file into place (rename, then fsync the directory). */
  static async commitFile(tmpPath: string, path: string): Promise<void> {
    await fs.promises.rename(tmpPath, path);
    const dir = await fs.promises.open(dirname(path), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }

  static async remove(path: string): Promise<void> {
    await fs.promises.rm(path, { force: true });
  }

  static async exists(path: string): Promise<boolean> {
    return fs.promises.stat(path).then(
      () => true,
      () => false,
    );
  }

  read(buf: Uint8Array, offsetBytes: number): Promise<void> {
    if (this.syncAllowed(this.readGate, buf.length)) return this.readSync(buf, offsetBytes);
    this.asyncIos++;
    const t0 = performance.now(); // one clock for every path (no BigInt per IO)
    this.stats.inFlight++;
    return new Promise((resolve, reject) => {
      fs.read(this.fd, buf, 0, buf.length, offsetBytes, (err, bytesRead) => {
        this.stats.inFlight--;
        if (err || bytesRead !== buf.length) {
          this.stats.read.recordError();
          reject(new TesseraError('ERR_DEVICE_IO', `read ${this.path} at ${offsetBytes}+${buf.length}: ${err ? err.code : `short read ${bytesRead}`}`));
          return;
        }
        this.stats.read.record(buf.length, (performance.now() - t0) * 1000);
        resolve();
      });
    });
  }

  write(buf: Uint8Array, offsetBytes: number): Promise<void> {
    if (!this.directIo && buf.length > WRITE_PIECE_BYTES) return this.vectored('write', [buf], offsetBytes);
    if ((this.inlineWrites === 'all' || (this.stats.inFlight === 0 && !this.syncWroteThisTurn)) && this.syncAllowed(this.writeGate, buf.length)) {
      // A synchronous write never counts as in flight, so "queue depth 1" also means:
      // the first write of this event-loop turn. Commands that arrived together (one
      // socket read at QD32) send their other writes to the pool, overlapping the
      // kernel's copy with this thread's work.
      this.syncWroteThisTurn = true;
      setImmediate(this.endTurn);
      return this.writeSync(buf, offsetBytes);
    }
    this.asyncIos++;
    const t0 = performance.now(); // one clock for every path (no BigInt per IO)
    this.stats.inFlight++;
    return new Promise((resolve, reject) => {
      fs.write(this.fd, buf, 0, buf.length, offsetBytes, (err, written) => {
        this.stats.inFlight--;
        if (err || written !== buf.length) {
          this.stats.write.recordError();
          reject(new TesseraError('ERR_DEVICE_IO', `write ${this.path} at ${offsetBytes}+${buf.length}: ${err ? err.code : `short write ${written}`}`));
          return;
        }
        this.stats.write.record(buf.length, (performance.now() - t0) * 1000);
        resolve();
      });
    });
  }

  /** See BlockDevice.prefetchWrite; O_DIRECT writes never read pages, so nothing to do there. */
  prefetchWrite(offsetBytes: number, lengthBytes: number): void {
    // After close the fd number may belong to another file: advise nothing.
    if (!this.directIo && !this.closed) adviseWritePages(this.fd, offsetBytes, lengthBytes, this.pageAdvice);
  }

  readParts(parts: Uint8Array[], offsetBytes: number): Promise<void> {
    return this.vectored('read', parts, offsetBytes);
  }

  writeParts(parts: Uint8Array[], offsetBytes: number): Promise<void> {
    return this.vectored('write', parts, offsetBytes);
  }

  /**
   * One preadv/pwritev on the thread pool; a large buffered write as one pwritev per
   * WRITE_PIECE_BYTES, all issued at once (one after the other cost ~15 % of the
   * throughput of 1 MiB writes: a pool round trip each). It settles once every piece
   * did, so no piece is in flight when the caller reuses its buffers. A short transfer
   * is an IO error like any other.
   */
  private vectored(op: 'read' | 'write', parts: Uint8Array[], offsetBytes: number): Promise<void> {
    if (!(parts.length > 0 && parts.length <= IOV_PARTS_MAX)) fail(`${op}Parts with ${parts.length} parts`);
    let lengthBytes = 0;
    for (const p of parts) lengthBytes += p.length;
    this.asyncIos++;
    const t0 = performance.now();
    const stats = op === 'read' ? this.stats.read : this.stats.write;
    const pieces = op === 'write' && !this.directIo && lengthBytes > WRITE_PIECE_BYTES ? splitWrite(parts, offsetBytes, WRITE_PIECE_BYTES) : [{ parts, offsetBytes }];
    this.stats.inFlight++;
    return new Promise((resolve, reject) => {
      let pending = pieces.length;
      let failure: string | null = null;
      const settle = (): void => {
        this.stats.inFlight--;
        if (failure !== null) {
          stats.recordError();
          reject(new TesseraError('ERR_DEVICE_IO', `${op} ${this.path} at ${offsetBytes}+${lengthBytes}: ${failure}`));
          return;
        }
        stats.record(lengthBytes, (performance.now() - t0) * 1000);
        resolve();
      };
      for (const piece of pieces) {
        let expected = 0;
        for (const p of piece.parts) expected += p.length;
        const done = (err: NodeJS.ErrnoException | null, n: number): void => {
          if ((err || n !== expected) && failure === null) {
            const where = pieces.length > 1 ? ` (piece at ${piece.offsetBytes}+${expected})` : '';
            failure = `${err ? (err.code ?? err.message) : `short ${op} ${n}`}${where}`;
          }
          if (--pending === 0) settle();
        };
        if (pieces.length > 1) this.splitWriteCalls++;
        try {
          if (op === 'read') fs.readv(this.fd, piece.parts, piece.offsetBytes, done);
          else fs.writev(this.fd, piece.parts, piece.offsetBytes, done);
        } catch (err) {
          // Refused before it was queued (bad arguments): this piece is done, failed;
          // the promise still waits for the pieces already on their way.
          done(err as NodeJS.ErrnoException, 0);
        }
      }
    });
  }

  private syncAllowed(gate: SyncGate, lengthBytes: number): boolean {
    return !this.directIo && lengthBytes <= SYNC_IO_BYTES_MAX && gate.allowed(performance.now());
  }

  private readSync(buf: Uint8Array, offsetBytes: number): Promise<void> {
    const t0 = performance.now();
    let n: number;
    try {
      n = fs.readSync(this.fd, buf, 0, buf.length, offsetBytes);
    } catch (err) {
      this.stats.read.recordError();
      return Promise.reject(new TesseraError('ERR_DEVICE_IO', `read ${this.path} at ${offsetBytes}+${buf.length}: ${(err as NodeJS.ErrnoException).code}`));
    }
    const t1 = performance.now();
    const us = (t1 - t0) * 1000;
    this.syncIos++;
    this.readGate.note(us, t1);
    if (n !== buf.length) {
      this.stats.read.recordError();
      return Promise.reject(new TesseraError('ERR_DEVICE_IO', `read ${this.path} at ${offsetBytes}+${buf.length}: short read ${n}`));
    }
    this.stats.read.record(buf.length, us);
    return Promise.resolve();
  }

  private writeSync(buf: Uint8Array, offsetBytes: number): Promise<void> {
    const t0 = performance.now();
    let n: number;
    try {
      n = fs.writeSync(this.fd, buf, 0, buf.length, offsetBytes);
    } catch (err) {
      this.stats.write.recordError();
      return Promise.reject(new TesseraError('ERR_DEVICE_IO', `write ${this.path} at ${offsetBytes}+${buf.length}: ${(err as NodeJS.ErrnoException).code}`));
    }
    const t1 = performance.now();
    const us = (t1 - t0) * 1000;
    this.syncIos++;
    this.writeGate.note(us, t1);
    if (n !== buf.length) {
      this.stats.write.recordError();
      return Promise.reject(new TesseraError('ERR_DEVICE_IO', `write ${this.path} at ${offsetBytes}+${buf.length}: short write ${n}`));
    }
    this.stats.write.record(buf.length, us);
    return Promise.resolve();
  }

  flush(): Promise<void> {
    const t0 = performance.now(); // one clock for every path (no BigInt per IO)
    return new Promise((resolve, reject) => {
      fs.fdatasync(this.fd, (err) => {
        if (err) {
          this.stats.flush.recordError();
          reject(new TesseraError('ERR_DEVICE_FLUSH', `fdatasync ${this.path}: ${err.code}`));
          return;
        }
        this.stats.flush.record(0, (performance.now() - t0) * 1000);
        resolve();
      });
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve) => fs.close(this.fd, () => resolve()));
  }
}

function openFd(path: string, flags: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.open(path, flags, (err, fd) => {
      if (err) reject(new TesseraError('ERR_DEVICE_IO', `open ${path}: ${err.code}`));
      else resolve(fd);
    });
  });
}

/** O_DIRECT can open yet fail on first IO (e.g. tmpfs, some overlay setups): try one aligned read. */
function probeDirect(fd: number): Promise<boolean> {
  const buf = alignedBuffer(4096);
  return new Promise((resolve) => {
    fs.read(fd, buf, 0, buf.length, 0, (err) => resolve(!err));
  });
}

/** Block devices report size 0 in stat: read it from sysfs (512-byte sectors). */
async function blockDeviceSizeBytes(path: string): Promise<number> {
  const real = await fs.promises.realpath(path);
  const sectors = await fs.promises.readFile(`/sys/class/block/${basename(real)}/size`, 'utf8').catch(() => {
    throw new TesseraError('ERR_INVALID', `cannot read the size of block device ${path} from sysfs`);
  });
  return Number(sectors.trim()) * 512;
}
