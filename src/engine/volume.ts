// The data path of one volume on the local engine: read, write, flush, trim,
// write-zeroes and block status, cut into per-object pieces of at most
// MAX_IO_BLOCKS blocks. Each piece is one device IO of whole stored blocks
// (4096 data + 512 trailer): staged (copied through a buffer that holds both), or,
// for runs of GATHER_MIN_BLOCKS+ whole blocks on a device with vectored IO, gathered
// (the data stays in the caller's buffer, only the trailers are staged); partial
// blocks at a piece's ends are read, merged and rewritten under a per-block lock so
// concurrent sub-block writes never undo each other.
//
// The staging buffers may be shared memory (the block worker's), where a copy at
// unequal alignment is V8's byte loop: copies to and from them use copyBytes.
//
// Invariants: a block is returned only after its trailer and data checksum
// verify (else ERR_CHECKSUM); blocks of unallocated objects and blocks not written
// in the chunk's current generation read as zeros; a chunk is held (refcount)
// for the duration of every IO that uses it.
import { TesseraError } from '../stdx/errors.js';
import { copyBytes } from '../stdx/shared-copy.js';
import type { IoStatsSnapshot } from '../stdx/stats.js';
import type { Extent, Volume } from '../volume/types.js';
import type { LocalEngine, VolumeState } from './engine.js';
import { MAX_IO_BLOCKS } from './engine.js';
import { checkTrailerRun, sealTrailerRun } from './block-codec.js';
import { BLOCK_DATA_BYTES, BLOCK_STRIDE_BYTES, BLOCK_TRAILER_BYTES, chunkOffset } from './layout.js';
import { BlockCheck, checkBlock, sealBlock, type BlockIdentity } from './trailer.js';

/**
 * Runs of at least this many whole blocks go to the device as one vectored IO of the
 * caller's data and a staging buffer of trailers (no copy); shorter ones are staged
 * (copied) so that a small IO keeps the device's synchronous fast path.
 */
const GATHER_MIN_BLOCKS = 16;

/** Re-reads of a block that failed its checksum before it counts as corrupt (see fromRedundancy). */
const TORN_READ_RETRIES = 3;

export class LocalVolume implements Volume {
  readonly id: number;
  /** Per-block locks for read-modify-write: key = objectIndex * blocksPerObject + block. */
  private readonly rmwLocks = new Map<number, Promise<void>>();

  constructor(
    private readonly engine: LocalEngine,
    private readonly state: VolumeState,
  ) {
    this.id = state.id;
  }

  name(): string {
    return this.live().name;
  }

  sizeBytes(): number {
    return this.live().sizeBytes;
  }

  stats(): IoStatsSnapshot {
    return this.state.stats.snapshot();
  }

  // ---------------------------------------------------------------- read

  async read(offsetBytes: number, lengthBytes: number, out: Buffer, outOffset: number): Promise<void> {
    const v = this.begin(offsetBytes, lengthBytes);
    const t0 = performance.now();
    v.stats.inFlight++;
    try {
      await this.forPieces(offsetBytes, lengthBytes, (obj, inObj, len, done) => this.readPiece(v, obj, inObj, len, out, outOffset + done));
      v.stats.read.record(lengthBytes, (performance.now() - t0) * 1000);
    } catch (err) {
      v.stats.read.recordError();
      throw err;
    } finally {
      v.stats.inFlight--;
    }
  }

  private async readPiece(v: VolumeState, obj: number, inObj: number, len: number, out: Buffer, at: number): Promise<void> {
    const chunk = v.objects.get(obj);
    if (chunk === undefined) {
      out.fill(0, at, at + len);
      return;
    }
    const first = Math.floor(inObj / BLOCK_DATA_BYTES);
    const last = Math.floor((inObj + len - 1) / BLOCK_DATA_BYTES);
    const n = last - first + 1;
    const e = this.engine;
    if (inObj % BLOCK_DATA_BYTES === 0 && len % BLOCK_DATA_BYTES === 0 && this.gathers(n, out)) {
      return this.readGathered(v, obj, chunk, first, n, out.subarray(at, at + len));
    }
    e.holdChunk(chunk);
    const buf = await e.pool.acquire(n * BLOCK_STRIDE_BYTES);
    try {
      await e.device.read(buf, chunkOffset(e.layout, chunk) + first * BLOCK_STRIDE_BYTES);
      const gen = e.chunkGeneration(chunk);
      // A large run is checked by the engine's codec (another thread); a small one here.
      // When the piece is whole blocks, the codec also copies valid blocks out (and
      // zeroes unwritten ones): only corrupt blocks are left to the loop below.
      const aligned = inObj % BLOCK_DATA_BYTES === 0 && len % BLOCK_DATA_BYTES === 0;
      const whole = aligned ? out.subarray(at, at + len) : undefined;
      // With private data (out not shared) the codec still checks; this thread copies.
      const movesData = whole !== undefined && e.codec !== null && e.codec.offloads(buf, n, whole);
      const codec = e.codec !== null && (movesData || e.codec.offloads(buf, n)) ? e.codec : null;
      const checks = codec !== null ? await codec.checkBlocks(buf, n, { volumeId: v.id, objectIndex: obj, firstBlock: first, generation: gen }, movesData ? whole : undefined) : null;
      const copied = movesData;
      let pos = inObj;
      let dst = at;
      for (let i = 0; i < n; i++) {
        const block = first + i;
        const blockStart = block * BLOCK_DATA_BYTES;
        const from = pos - blockStart;
        const take = Math.min(BLOCK_DATA_BYTES - from, inObj + len - pos);
        const bo = i * BLOCK_STRIDE_BYTES;
        let check = checks !== null ? (checks[i] as BlockCheck) : checkBlock(buf, bo, { volumeId: v.id, objectIndex: obj, blockIndex: block, generation: gen });
        if (copied && check !== BlockCheck.Corrupt) {
          pos += take;
          dst += take;
          continue;
        }
        if (check === BlockCheck.Corrupt) {
          const devOffset = chunkOffset(e.layout, chunk) + (first + i) * BLOCK_STRIDE_BYTES;
          check = await this.fromRedundancy(buf, bo, devOffset, { volumeId: v.id, objectIndex: obj, blockIndex: block, generation: gen });
        }
        if (check === BlockCheck.Valid) copyBytes(buf, bo + from, bo + from + take, out, dst);
        else if (check === BlockCheck.Unwritten) out.fill(0, dst, dst + take);
        else {
          e.checksumErrors++;
          throw new TesseraError('ERR_CHECKSUM', `checksum mismatch in volume "${v.name}" at byte ${obj * e.layout.objectSizeBytes + blockStart}`);
        }
        pos += take;
        dst += take;
      }
    } finally {
      e.pool.release(buf);
      e.releaseChunk(chunk);
    }
  }

  /**
   * Whether a run of n whole blocks of data goes to the device as one vectored IO of
   * data and trailers. With a codec (a block worker), only data in shared memory
   * does: the worker can checksum it in place. Private data is better staged there:
   * copying it into the shared staging buffer costs this thread less than its
   * checksums would (measured: ~100 against ~250-550 us per MiB).
   */
  private gathers(n: number, data: Buffer): boolean {
    const e = this.engine;
    const d = e.device;
    if (n < GATHER_MIN_BLOCKS || d.directIo || d.readParts === undefined || d.writeParts === undefined) return false;
    return e.codec === null || data.buffer instanceof SharedArrayBuffer;
  }

  /**
   * Reads n whole blocks straight into out (their data) and a staging buffer (their
   * trailers) with one vectored read, then checks them (in the codec's thread when it
   * takes the run). A block that fails its check is read again on its own, from
   * redundancy if need be (fromRedundancy), before the read fails. On failure out
   * holds unverified bytes: callers never use out of a failed read.
   */
  private async readGathered(v: VolumeState, obj: number, chunk: number, first: number, n: number, out: Buffer): Promise<void> {
    const e = this.engine;
    e.holdChunk(chunk);
    const trailers = await e.pool.acquire(n * BLOCK_TRAILER_BYTES);
    try {
      const base = chunkOffset(e.layout, chunk) + first * BLOCK_STRIDE_BYTES;
      await e.device.readParts!(gatherParts(out, trailers, n), base);
      const run = { volumeId: v.id, objectIndex: obj, firstBlock: first, generation: e.chunkGeneration(chunk) };
      let checks: Uint8Array;
      if (e.codec !== null && e.codec.offloads(trailers, n, out)) checks = await e.codec.checkTrailers(trailers, n, run, out);
      else checkTrailerRun(trailers, n, run, (checks = new Uint8Array(n)), out);
      for (let i = 0; i < n; i++) {
        if (checks[i] !== BlockCheck.Corrupt) continue;
        await this.repairInto(v, obj, base + i * BLOCK_STRIDE_BYTES, { ...run, blockIndex: first + i }, out, i * BLOCK_DATA_BYTES);
      }
    } finally {
      e.pool.release(trailers);
      e.releaseChunk(chunk);
    }
  }

  /** A block of a gathered read failed its check: its data from another read or source into out[at], or ERR_CHECKSUM. */
  private async repairInto(v: VolumeState, obj: number, devOffset: number, id: BlockIdentity, out: Buffer, at: number): Promise<void> {
    const e = this.engine;
    // Not from the pool: this IO already holds its trailers buffer, and many corrupt
    // blocks at once must not wait on each other for budget (review, session 9).
    const one = Buffer.alloc(BLOCK_STRIDE_BYTES);
    const check = await this.fromRedundancy(one, 0, devOffset, id);
    if (check === BlockCheck.Valid) copyBytes(one, 0, BLOCK_DATA_BYTES, out, at);
    else if (check === BlockCheck.Unwritten) out.fill(0, at, at + BLOCK_DATA_BYTES);
    else {
      e.checksumErrors++;
      throw new TesseraError('ERR_CHECKSUM', `checksum mismatch in volume "${v.name}" at byte ${obj * e.layout.objectSizeBytes + id.blockIndex * BLOCK_DATA_BYTES}`);
    }
  }

  // ---------------------------------------------------------------- write

  async write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void> {
    const v = this.begin(offsetBytes, data.length);
    const t0 = performance.now();
    v.stats.inFlight++;
    try {
      await this.forPieces(offsetBytes, data.length, (obj, inObj, len, done) => this.writePiece(v, obj, inObj, len, data, done));
      if (fua) await this.engine.flush();
      v.stats.write.record(data.length, (performance.now() - t0) * 1000);
    } catch (err) {
      v.stats.write.recordError();
      throw err;
    } finally {
      v.stats.inFlight--;
    }
  }

  /**
   * Volume.prefetchWrite: for each object of the range that already has a chunk,
   * tells the device which stored blocks the write will cover (their pages covered
   * in part are read ahead, BlockDevice.prefetchWrite). An object without a chunk is
   * skipped: its chunk is chosen by the write. A range outside the volume, or a
   * deleted volume, advises nothing (the write itself will fail).
   */
  prefetchWrite(offsetBytes: number, lengthBytes: number): void {
    const e = this.engine;
    const device = e.device;
    if (device.prefetchWrite === undefined) return;
    const v = e.volumeById(this.id);
    if (!v || !Number.isSafeInteger(offsetBytes) || !Number.isSafeInteger(lengthBytes) || offsetBytes < 0 || lengthBytes <= 0 || offsetBytes + lengthBytes > v.sizeBytes) return;
    const objectBytes = e.layout.objectSizeBytes;
    const end = offsetBytes + lengthBytes;
    for (let pos = offsetBytes; pos < end; ) {
      const obj = Math.floor(pos / objectBytes);
      const inObj = pos - obj * objectBytes;
      const len = Math.min(objectBytes - inObj, end - pos);
      const chunk = v.objects.get(obj);
      if (chunk !== undefined) {
        const first = Math.floor(inObj / BLOCK_DATA_BYTES);
        const last = Math.floor((inObj + len - 1) / BLOCK_DATA_BYTES);
        device.prefetchWrite(chunkOffset(e.layout, chunk) + first * BLOCK_STRIDE_BYTES, (last - first + 1) * BLOCK_STRIDE_BYTES);
      }
      pos += len;
    }
  }

  /** Write data[src, src+len) (or zeros when data is null) at byte inObj of object obj. */
  private async writePiece(v: VolumeState, obj: number, inObj: number, len: number, data: Buffer | null, src: number): Promise<void> {
    const e = this.engine;
    const chunk = await e.ensureChunk(v, obj);
    const first = Math.floor(inObj / BLOCK_DATA_BYTES);
    const last = Math.floor((inObj + len - 1) / BLOCK_DATA_BYTES);
    const n = last - first + 1;
    const headPartial = inObj % BLOCK_DATA_BYTES !== 0;
    const tailPartial = (inObj + len) % BLOCK_DATA_BYTES !== 0;
    const bpo = e.layout.blocksPerObject;
    const lockKeys: number[] = [];
    if (headPartial || tailPartial || this.rmwLocks.size > 0) {
      for (let b = first; b <= last; b++) lockKeys.push(obj * bpo + b);
    }
    const unlock = lockKeys.length > 0 ? await this.lockBlocks(lockKeys, headPartial || tailPartial) : null;
    if (data !== null && !headPartial && !tailPartial && this.gathers(n, data)) {
      try {
        return await this.writeGathered(v, obj, chunk, first, n, data.subarray(src, src + len));
      } finally {
        unlock?.();
      }
    }
    e.holdChunk(chunk);
    const buf = await e.pool.acquire(n * BLOCK_STRIDE_BYTES);
    try {
      const gen = e.chunkGeneration(chunk);
      const base = chunkOffset(e.layout, chunk) + first * BLOCK_STRIDE_BYTES;
      if (headPartial) await this.loadBlock(v, obj, chunk, gen, first, buf, 0, base);
      if (tailPartial && (last !== first || !headPartial)) {
        await this.loadBlock(v, obj, chunk, gen, last, buf, (n - 1) * BLOCK_STRIDE_BYTES, base + (n - 1) * BLOCK_STRIDE_BYTES);
      }
      // A large run is sealed by the engine's codec (another thread); when the piece is
      // whole blocks, the codec copies the data in too (off the event loop).
      const whole = data !== null && !headPartial && !tailPartial ? data.subarray(src, src + len) : undefined;
      // With private data the codec still seals; this thread copies (the loop below).
      const movesData = whole !== undefined && e.codec !== null && e.codec.offloads(buf, n, whole);
      const codec = e.codec !== null && (movesData || e.codec.offloads(buf, n)) ? e.codec : null;
      if (codec !== null && movesData) {
        await codec.sealBlocks(buf, n, { volumeId: v.id, objectIndex: obj, firstBlock: first, generation: gen }, whole);
        await e.device.write(buf, base);
        e.dataWrites++;
        return;
      }
      let pos = inObj;
      let from = src;
      for (let i = 0; i < n; i++) {
        const block = first + i;
        const blockStart = block * BLOCK_DATA_BYTES;
        const at = pos - blockStart;
        const take = Math.min(BLOCK_DATA_BYTES - at, inObj + len - pos);
        const bo = i * BLOCK_STRIDE_BYTES;
        if (data) copyBytes(data, from, from + take, buf, bo + at);
        else buf.fill(0, bo + at, bo + at + take);
        if (codec === null) sealBlock(buf, bo, { volumeId: v.id, objectIndex: obj, blockIndex: block, generation: gen });
        pos += take;
        from += take;
      }
      if (codec !== null) await codec.sealBlocks(buf, n, { volumeId: v.id, objectIndex: obj, firstBlock: first, generation: gen });
      await e.device.write(buf, base);
      e.dataWrites++;
    } finally {
      e.pool.release(buf);
      e.releaseChunk(chunk);
      unlock?.();
    }
  }

  /**
   * Writes n whole blocks from data (where the caller has it) and their trailers
   * (sealed in the codec's thread when it takes the run) with one vectored write:
   * nothing copies the data. The caller keeps data unchanged until write() settles,
   * as for any write: the checksums are taken before the device reads the bytes, so a
   * change in between would store a block that fails its check (the staged path
   * would store a consistent mix). The gateways hand over buffers they no longer touch.
   */
  private async writeGathered(v: VolumeState, obj: number, chunk: number, first: number, n: number, data: Buffer): Promise<void> {
    const e = this.engine;
    e.holdChunk(chunk);
    const trailers = await e.pool.acquire(n * BLOCK_TRAILER_BYTES);
    try {
      const run = { volumeId: v.id, objectIndex: obj, firstBlock: first, generation: e.chunkGeneration(chunk) };
      if (e.codec !== null && e.codec.offloads(trailers, n, data)) await e.codec.sealTrailers(trailers, n, run, data);
      else sealTrailerRun(trailers, n, run, data);
      await e.device.writeParts!(gatherParts(data, trailers, n), chunkOffset(e.layout, chunk) + first * BLOCK_STRIDE_BYTES);
      e.dataWrites++;
    } finally {
      e.pool.release(trailers);
      e.releaseChunk(chunk);
    }
  }

  /** Read one stored block into buf at bo for a read-modify-write; unwritten blocks become zeros. */
  private async loadBlock(v: VolumeState, obj: number, chunk: number, gen: number, block: number, buf: Buffer, bo: number, deviceOffset: number): Promise<void> {
    const e = this.engine;
    const view = buf.subarray(bo, bo + BLOCK_STRIDE_BYTES);
    await e.device.read(view, deviceOffset);
    let check = checkBlock(buf, bo, { volumeId: v.id, objectIndex: obj, blockIndex: block, generation: gen });
    if (check === BlockCheck.Corrupt) check = await this.fromRedundancy(buf, bo, deviceOffset, { volumeId: v.id, objectIndex: obj, blockIndex: block, generation: gen });
    if (check === BlockCheck.Unwritten) buf.fill(0, bo, bo + BLOCK_DATA_BYTES);
    else if (check === BlockCheck.Corrupt) {
      e.checksumErrors++;
      throw new TesseraError('ERR_CHECKSUM', `checksum mismatch in volume "${v.name}" at byte ${obj * e.layout.objectSizeBytes + block * BLOCK_DATA_BYTES} (partial write refused)`);
    }
  }

  /**
   * A block failed its checksum: first read it again (it may have been caught
   * mid-write), then, on a device with redundancy (a pool), try each
   * alternative source; the first that passes the check replaces the block in
   * buf and is written back over the bad source (repair). Returns the block's
   * new check (still Corrupt when no source is good: the read fails).
   */
  private async fromRedundancy(buf: Buffer, bo: number, devOffset: number, id: BlockIdentity): Promise<BlockCheck> {
    const e = this.engine;
    const dev = e.device;
    const alt = Buffer.alloc(BLOCK_STRIDE_BYTES);
    // A read that raced a write of other bytes of the same block (a partial write
    // rewrites the whole block) can see it half written: read it again first.
    // Reproducer: fsx phase 2 once got EIO this way (engine.test.ts "torn read").
    for (let retry = 0; retry < TORN_READ_RETRIES; retry++) {
      await new Promise((r) => setTimeout(r, retry));
      await dev.read(alt, devOffset);
      const check = checkBlock(alt, 0, id);
      if (check !== BlockCheck.Corrupt) {
        alt.copy(buf, bo);
        return check;
      }
    }
    if (!dev.readAlternate) return BlockCheck.Corrupt;
    for (let attempt = 0; ; attempt++) {
      try {
        if (!(await dev.readAlternate(alt, devOffset, attempt))) break;
      } catch (err) {
        // This source cannot be read (e.g. a copy on a failed member): try the next.
        if (err instanceof TesseraError && err.code === 'ERR_DEVICE_IO') continue;
        throw err;
      }
      const check = checkBlock(alt, 0, id);
      if (check === BlockCheck.Corrupt) continue;
      alt.copy(buf, bo);
      // The read has good data now; a repair that fails is retried by the next read.
      try {
        await dev.repairAlternate?.(devOffset, BLOCK_STRIDE_BYTES, attempt);
        e.repairedBlocks++;
      } catch (err) {
        e.log('warn', `repairing the block at device byte ${devOffset} failed: ${(err as Error).message}`);
      }
      return check;
    }
    return BlockCheck.Corrupt;
  }

  /**
   * Wait for earlier locks on these blocks; if `exclusive`, hold them until unlock().
   * Full-block writes only wait (they must not overtake a read-modify-write in progress).
   */
  private async lockBlocks(keys: number[], exclusive: boolean): Promise<(() => void) | null> {
    for (;;) {
      const busy = keys.map((k) => this.rmwLocks.get(k)).filter((p): p is Promise<void> => p !== undefined);
      if (busy.length === 0) break;
      await Promise.all(busy);
    }
    if (!exclusive) return null;
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    for (const k of keys) this.rmwLocks.set(k, held);
    return () => {
      for (const k of keys) if (this.rmwLocks.get(k) === held) this.rmwLocks.delete(k);
      release();
    };
  }

  // ---------------------------------------------------------------- flush, trim, zeroes

  async flush(): Promise<void> {
    const v = this.live();
    this.engine.checkUsable();
    const t0 = performance.now();
    try {
      await this.engine.flush();
      v.stats.flush.record(0, (performance.now() - t0) * 1000);
    } catch (err) {
      v.stats.flush.recordError();
      throw err;
    }
  }

  trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    return this.writeZeroes(offsetBytes, lengthBytes, fua, true);
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number, fua: boolean, mayTrim: boolean): Promise<void> {
    const v = this.begin(offsetBytes, lengthBytes);
    const t0 = performance.now();
    const objBytes = this.engine.layout.objectSizeBytes;
    v.stats.inFlight++;
    try {
      await this.forPieces(
        offsetBytes,
        lengthBytes,
        async (obj, inObj, len) => {
          if (len === objBytes && mayTrim) return this.engine.freeObject(v, obj);
          if (!v.objects.has(obj) && mayTrim) return; // already reads as zeros
          await this.forPieces(obj * objBytes + inObj, len, (o, io, l) => this.writePiece(v, o, io, l, null, 0));
        },
        objBytes,
      );
      if (fua) await this.engine.flush();
      v.stats.discard.record(lengthBytes, (performance.now() - t0) * 1000);
    } catch (err) {
      v.stats.discard.recordError();
      throw err;
    } finally {
      v.stats.inFlight--;
    }
  }

  async blockStatus(offsetBytes: number, lengthBytes: number): Promise<Extent[]> {
    const v = this.begin(offsetBytes, lengthBytes);
    const objBytes = this.engine.layout.objectSizeBytes;
    const out: Extent[] = [];
    let pos = offsetBytes;
    const end = offsetBytes + lengthBytes;
    while (pos < end) {
      const obj = Math.floor(pos / objBytes);
      const len = Math.min((obj + 1) * objBytes, end) - pos;
      const hole = !v.objects.has(obj);
      const last = out[out.length - 1];
      if (last && last.hole === hole) last.lengthBytes += len;
      else out.push({ lengthBytes: len, hole, zero: hole });
      pos += len;
    }
    return out;
  }

  // ---------------------------------------------------------------- helpers

  private live(): VolumeState {
    const v = this.engine.volumeById(this.id);
    if (!v) throw new TesseraError('ERR_NOT_FOUND', `volume "${this.state.name}" was deleted`);
    return v;
  }

  private begin(offsetBytes: number, lengthBytes: number): VolumeState {
    this.engine.checkUsable();
    const v = this.live();
    if (!Number.isSafeInteger(offsetBytes) || !Number.isSafeInteger(lengthBytes) || offsetBytes < 0 || lengthBytes < 0 || offsetBytes + lengthBytes > v.sizeBytes) {
      throw new TesseraError('ERR_RANGE', `range ${offsetBytes}+${lengthBytes} is outside volume "${v.name}" (${v.sizeBytes} bytes)`);
    }
    return v;
  }

  /**
   * Run fn for each piece: within one object and at most MAX_IO_BLOCKS blocks.
   * One piece (the common small IO) is awaited directly; several run concurrently,
   * and the IO settles only once every piece settled, then with the first failure:
   * a piece still running after its IO failed would copy into a read buffer its
   * caller already reused, or land a write after the initiator's retry of it was
   * acknowledged (review, session 8).
   */
  private forPieces(
    offsetBytes: number,
    lengthBytes: number,
    fn: (obj: number, inObj: number, len: number, done: number) => Promise<void>,
    pieceBytes = MAX_IO_BLOCKS * BLOCK_DATA_BYTES,
  ): Promise<void> {
    const objBytes = this.engine.layout.objectSizeBytes;
    const maxPieceBytes = Math.min(objBytes, pieceBytes);
    let done = 0;
    let first: Promise<void> | null = null;
    let rest: Promise<void>[] | null = null;
    while (done < lengthBytes) {
      const pos = offsetBytes + done;
      const obj = Math.floor(pos / objBytes);
      const inObj = pos - obj * objBytes;
      // Cut at object ends and at maxPieceBytes boundaries inside the object.
      const limit = Math.min(objBytes, (Math.floor(inObj / maxPieceBytes) + 1) * maxPieceBytes);
      const len = Math.min(limit - inObj, lengthBytes - done);
      const p = fn(obj, inObj, len, done);
      if (!first) first = p;
      else (rest ??= [first]).push(p);
      done += len;
    }
    if (!first) return Promise.resolve();
    return rest ? Promise.allSettled(rest).then(firstFailure) : first;
  }
}

/** The 2n parts of a gathered run: block i's data, then its trailer, for i = 0..n-1. */
function gatherParts(data: Buffer, trailers: Buffer, n: number): Uint8Array[] {
  const parts = new Array<Uint8Array>(2 * n);
  for (let i = 0; i < n; i++) {
    parts[2 * i] = new Uint8Array(data.buffer, data.byteOffset + i * BLOCK_DATA_BYTES, BLOCK_DATA_BYTES);
    parts[2 * i + 1] = new Uint8Array(trailers.buffer, trailers.byteOffset + i * BLOCK_TRAILER_BYTES, BLOCK_TRAILER_BYTES);
  }
  return parts;
}

/** Throws the reason of the first rejected piece, if any. */
function firstFailure(settled: PromiseSettledResult<void>[]): void {
  for (const r of settled) if (r.status === 'rejected') throw r.reason;
}
