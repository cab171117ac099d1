// The local engine on one device (ENG1-ENG5): superblock, volume table, chunk
// table, chunk allocation, object map, and the volume data path. It sees only the
// BlockDevice interface, so the same code runs on a file and on the simulated
// device of the crash tests.
//
// Invariants:
// - A volume is cut into objects of objectSizeBytes; an allocated object lives in
//   one chunk; an unallocated object reads as zeros.
// - A chunk's generation is unique forever (reserved in the superblock before
//   use); a block is served only if its trailer carries the chunk's generation,
//   so data of earlier allocations never leaks into a new one.
// - Overwriting an allocated object writes data (with its trailer) and nothing
//   else: metadata is written only on allocation, free, and volume changes.
// - A write resolves after its data and any metadata it needed are written;
//   flush() (group commit) makes everything resolved before it durable.
// - A freed chunk is reused only when no IO that looked it up is in flight.
// - A flush failure is fatal: the engine refuses all further IO.
import { randomBytes } from 'node:crypto';
import type { BlockDevice } from '../device/device.js';
import { assert } from '../stdx/assert.js';
import { BufferPool } from '../stdx/buffer-pool.js';
import type { BlockCodec } from './block-codec.js';
import { TesseraError } from '../stdx/errors.js';
import { IoStats } from '../stdx/stats.js';
import type { DeviceInfo, StatsSnapshot, VolumeInfo, VolumeStore, Volume } from '../volume/types.js';
import { checkName, checkSize } from '../volume/memory.js';
import { ChunkState, decodeChunkEntry, encodeChunkEntry, type ChunkEntry } from './chunktable.js';
import {
  BLOCK_DATA_BYTES,
  BLOCK_STRIDE_BYTES,
  CHUNK_ENTRY_BYTES,
  DEFAULT_OBJECT_BYTES,
  SUPERBLOCK_BYTES,
  SUPERBLOCK_COPIES,
  VOLTABLE_COPIES,
  VOLTABLE_OFFSET,
  VOLTABLE_SLOT_BYTES,
  chunkOffset,
  computeLayout,
  type Layout,
} from './layout.js';
import { chooseSuperblock, encodeSuperblock, type Superblock } from './superblock.js';
import { TableWriter } from './table-writer.js';
import { decodeVolumeTable, encodeVolumeTable, MAX_VOLUMES, VOLTABLE_HEADER_BYTES, type VolumeRecord } from './voltable.js';
import { LocalVolume } from './volume.js';

/** Generations reserved per superblock write. */
const GEN_RESERVE_STEP = 4096;
/** Largest device IO the data path issues (blocks): bounds staging buffers. */
export const MAX_IO_BLOCKS = 256;

export type LogFn = (level: 'info' | 'warn' | 'error', msg: string) => void;

export interface FormatOptions {
  objectSizeBytes?: number;
  /** The device reads as zeros everywhere (a fresh sparse file). */
  dataZeroed: boolean;
  bufferPool?: BufferPool;
}

export interface OpenOptions {
  log?: LogFn;
  /** Called once when the engine hits a fatal error (flush failure). */
  onFatal?: (err: Error) => void;
  bufferPool?: BufferPool;
  /** Seals and checks large runs of blocks elsewhere (a worker thread); default: in this thread. */
  blockCodec?: BlockCodec;
}

export interface VolumeState extends VolumeRecord {
  objects: Map<number, number>; // objectIndex -> chunk
  stats: IoStats;
}

export class LocalEngine implements VolumeStore {
  readonly layout: Layout;
  readonly pool: BufferPool;
  readonly codec: BlockCodec | null;
  private sb: Superblock;
  private readonly tableImage: Buffer;
  private readonly tableWriter: TableWriter;
  // Chunk table in memory, one slot per chunk.
  private readonly chunkState: Uint8Array;
  private readonly chunkVolume: Uint32Array;
  private readonly chunkObject: Float64Array;
  private readonly chunkGen: Float64Array;
  private readonly chunkRefs: Uint32Array;
  private readonly freeWhenIdle: Uint8Array;
  private freeChunks: number[] = [];
  private metaSeq = 1;
  private nextGen: number;
  private genReservation: Promise<void> | null = null;
  private readonly volumes = new Map<number, VolumeState>();
  private readonly byName = new Map<string, number>();
  private nextVolumeId = 1;
  private volTableSeq = 0;
  private readonly allocating = new Map<string, Promise<number>>();
  private mgmtChain: Promise<unknown> = Promise.resolve();
  private flushInFlight: Promise<void> | null = null;
  private flushQueued: Promise<void> | null = null;
  private fatal: Error | null = null;
  private closed = false;
  readonly log: LogFn;
  private readonly onFatal?: (err: Error) => void;
  dataWrites = 0;
  checksumErrors = 0;
  /** Blocks that failed their checksum and were repaired from the device's redundancy (pools). */
  repairedBlocks = 0;
  ioErrors = 0;

  private constructor(
    readonly device: BlockDevice,
    sb: Superblock,
    opts: OpenOptions,
  ) {
    this.sb = sb;
    this.layout = computeLayout(sb.deviceSizeBytes, sb.objectSizeBytes);
    assert(this.layout.chunkCount === sb.chunkCount && this.layout.dataOffset === sb.dataOffset, 'superblock layout mismatch');
    this.pool = opts.bufferPool ?? new BufferPool();
    this.codec = opts.blockCodec ?? null;
    this.log = opts.log ?? (() => {});
    this.onFatal = opts.onFatal;
    const n = this.layout.chunkCount;
    this.tableImage = Buffer.alloc(this.layout.chunkTableBytes);
    this.tableWriter = new TableWriter(device, this.pool, this.tableImage, [this.layout.chunkTableOffset, this.layout.chunkTableOffset + this.layout.chunkTableBytes]);
    this.chunkState = new Uint8Array(n);
    this.chunkVolume = new Uint32Array(n);
    this.chunkObject = new Float64Array(n);
    this.chunkGen = new Float64Array(n);
    this.chunkRefs = new Uint32Array(n);
    this.freeWhenIdle = new Uint8Array(n);
    this.nextGen = sb.genReserved;
  }

  // ---------------------------------------------------------------- format/open

  /** Write a fresh, empty Tessera format on the device (destroys its contents). */
  static async format(device: BlockDevice, opts: FormatOptions): Promise<void> {
    const objectSizeBytes = opts.objectSizeBytes ?? DEFAULT_OBJECT_BYTES;
    const layout = computeLayout(device.sizeBytes, objectSizeBytes);
    const sb: Superblock = {
      sequence: 1,
      deviceUuid: randomBytes(16).toString('hex'),
      deviceSizeBytes: device.sizeBytes,
      objectSizeBytes,
      chunkCount: layout.chunkCount,
      chunkTableOffset: layout.chunkTableOffset,
      chunkTableBytes: layout.chunkTableBytes,
      dataOffset: layout.dataOffset,
      genReserved: 1,
      dataZeroed: opts.dataZeroed,
    };
    const pool = opts.bufferPool ?? new BufferPool(64 * 1024 * 1024);
    if (!opts.dataZeroed) {
      // The chunk table must start all-zero (never-used entries).
      const zero = await pool.acquire(1024 * 1024);
      zero.fill(0);
      const end = layout.chunkTableOffset + 2 * layout.chunkTableBytes;
      for (let off = layout.chunkTableOffset; off < end; off += zero.length) {
        await device.write(zero.subarray(0, Math.min(zero.length, end - off)), off);
      }
      pool.release(zero);
    }
    const vt = encodeVolumeTable({ sequence: 1, nextVolumeId: 1, volumes: [] });
    const vtBuf = await pool.acquire(vt.length);
    vt.copy(vtBuf);
    for (let c = 0; c < VOLTABLE_COPIES; c++) await device.write(vtBuf, VOLTABLE_OFFSET + c * VOLTABLE_SLOT_BYTES);
    pool.release(vtBuf);
    await device.flush();
    await writeSuperblockCopies(device, pool, sb);
  }

  static async open(device: BlockDevice, opts: OpenOptions = {}): Promise<LocalEngine> {
    const pool = opts.bufferPool ?? new BufferPool();
    const copies: Buffer[] = [];
    const buf = await pool.acquire(SUPERBLOCK_BYTES);
    for (let c = 0; c < SUPERBLOCK_COPIES; c++) {
      try {
        await device.read(buf, c * SUPERBLOCK_BYTES);
        copies.push(Buffer.from(buf));
      } catch {
        copies.push(Buffer.alloc(SUPERBLOCK_BYTES));
      }
    }
    pool.release(buf);
    const { sb, staleCopies } = chooseSuperblock(copies);
    if (sb.deviceSizeBytes > device.sizeBytes) {
      throw new TesseraError('ERR_FORMAT', `device ${device.path} is ${device.sizeBytes} bytes but was formatted with ${sb.deviceSizeBytes}`);
    }
    const engine = new LocalEngine(device, sb, { ...opts, bufferPool: pool });
    if (staleCopies.length > 0) engine.log('warn', `superblock copies ${staleCopies.join(',')} were stale or damaged; rewriting them`);
    await engine.loadVolumeTable();
    await engine.loadChunkTable();
    // Skip every generation that may have been handed out before this open.
    await engine.reserveGenerations();
    return engine;
  }

  private async loadVolumeTable(): Promise<void> {
    const slot = await this.pool.acquire(VOLTABLE_SLOT_BYTES);
    const found: Array<ReturnType<typeof decodeVolumeTable>> = [];
    try {
      for (let c = 0; c < VOLTABLE_COPIES; c++) {
        try {
          await this.device.read(slot, VOLTABLE_OFFSET + c * VOLTABLE_SLOT_BYTES);
          found.push(decodeVolumeTable(Buffer.from(slot)));
        } catch (err) {
          found.push(`unreadable: ${(err as Error).message}`);
        }
      }
    } finally {
      this.pool.release(slot);
    }
    let best: Exclude<(typeof found)[number], string> | undefined;
    for (const f of found) if (typeof f !== 'string' && (!best || f.sequence > best.sequence)) best = f;
    if (!best) throw new TesseraError('ERR_FORMAT', `no valid volume table copy (${found.join('; ')})`);
    this.volTableSeq = best.sequence;
    this.nextVolumeId = best.nextVolumeId;
    for (const v of best.volumes) {
      this.volumes.set(v.id, { ...v, objects: new Map(), stats: new IoStats() });
      this.byName.set(v.name, v.id);
    }
    const stale = found.some((f) => typeof f === 'string' || f.sequence !== best!.sequence);
    if (stale) {
      this.log('warn', 'a volume table copy was stale or damaged; rewriting both copies');
      await this.persistVolumeTable();
    }
  }

  private async loadChunkTable(): Promise<void> {
    const { chunkTableOffset, chunkTableBytes, chunkCount } = this.layout;
    const copyA = Buffer.alloc(chunkTableBytes);
    const copyB = Buffer.alloc(chunkTableBytes);
    await this.readRegion(copyA, chunkTableOffset);
    await this.readRegion(copyB, chunkTableOffset + chunkTableBytes);
    const repairSectors = new Set<number>();
    let maxGen = 0;
    const claims = new Map<string, number>(); // "vol:obj" -> chunk
    for (let c = 0; c < chunkCount; c++) {
      const off = c * CHUNK_ENTRY_BYTES;
      const a = decodeChunkEntry(copyA, off);
      const b = decodeChunkEntry(copyB, off);
      let e: ChunkEntry | null;
      if (typeof a === 'string' && typeof b === 'string') {
        throw new TesseraError('ERR_FORMAT', `chunk table entry ${c} is damaged in both copies (${a}; ${b})`);
      } else if (typeof a === 'string') e = b as ChunkEntry | null;
      else if (typeof b === 'string') e = a;
      else if (a && b) e = a.seq >= b.seq ? a : b;
      else e = a ?? b;
      if (typeof a === 'string' || typeof b === 'string' || !sameEntry(a, b)) repairSectors.add(Math.floor(off / 512));
      if (!e) {
        this.chunkState[c] = ChunkState.Free;
        continue;
      }
      this.metaSeq = Math.max(this.metaSeq, e.seq + 1);
      maxGen = Math.max(maxGen, e.generation);
      this.chunkGen[c] = e.generation;
      this.chunkVolume[c] = e.volumeId;
      this.chunkObject[c] = e.objectIndex;
      this.chunkState[c] = e.state;
      encodeChunkEntry(e, this.tableImage, off);
      if (e.state !== ChunkState.Used) continue;
      const vol = this.volumes.get(e.volumeId);
      const objectLimit = vol ? Math.ceil(vol.sizeBytes / this.layout.objectSizeBytes) : 0;
      if (!vol || e.objectIndex >= objectLimit) {
        this.setEntry(c, ChunkState.Free, e.volumeId, e.objectIndex, e.generation); // orphan of a delete/shrink cut short
        repairSectors.add(Math.floor(off / 512));
        continue;
      }
      const key = `${e.volumeId}:${e.objectIndex}`;
      const other = claims.get(key);
      if (other !== undefined) {
        // Two chunks claim one object (a free and a re-allocation raced a crash): the newer generation wins.
        const loser = this.chunkGen[other] > e.generation ? c : other;
        const winner = loser === c ? other : c;
        this.setEntry(loser, ChunkState.Free, e.volumeId, e.objectIndex, this.chunkGen[loser]);
        repairSectors.add(Math.floor((loser * CHUNK_ENTRY_BYTES) / 512));
        claims.set(key, winner);
        vol.objects.set(e.objectIndex, winner);
        continue;
      }
      claims.set(key, c);
      vol.objects.set(e.objectIndex, c);
    }
    for (let c = chunkCount - 1; c >= 0; c--) if (this.chunkState[c] === ChunkState.Free) this.freeChunks.push(c);
    if (maxGen >= this.sb.genReserved) {
      throw new TesseraError('ERR_FORMAT', `chunk generation ${maxGen} is beyond the superblock's reservation ${this.sb.genReserved}`);
    }
    if (repairSectors.size > 0) {
      this.log('warn', `repairing ${repairSectors.size} chunk table sector(s) whose copies disagreed`);
      await Promise.all([...repairSectors].map((s) => this.tableWriter.write(s)));
      await this.flushDevice();
    }
  }

  private async readRegion(out: Buffer, offset: number): Promise<void> {
    const step = 1024 * 1024;
    const buf = await this.pool.acquire(step);
    try {
      for (let done = 0; done < out.length; done += step) {
        const len = Math.min(step, out.length - done);
        await this.device.read(buf.subarray(0, len), offset + done);
        buf.copy(out, done, 0, len);
      }
    } finally {
      this.pool.release(buf);
    }
  }

  // ---------------------------------------------------------------- metadata

  private setEntry(chunk: number, state: ChunkState, volumeId: number, objectIndex: number, generation: number): number {
    this.chunkState[chunk] = state;
    this.chunkVolume[chunk] = volumeId;
    this.chunkObject[chunk] = objectIndex;
    this.chunkGen[chunk] = generation;
    const off = chunk * CHUNK_ENTRY_BYTES;
    encodeChunkEntry({ state, volumeId, objectIndex, generation, seq: this.metaSeq++ }, this.tableImage, off);
    return Math.floor(off / 512);
  }

  private async reserveGenerations(): Promise<void> {
    if (this.genReservation) return this.genReservation;
    this.genReservation = (async () => {
      const next: Superblock = { ...this.sb, sequence: this.sb.sequence + 1, genReserved: this.sb.genReserved + GEN_RESERVE_STEP };
      try {
        await writeSuperblockCopies(this.device, this.pool, next);
      } catch (err) {
        if (err instanceof TesseraError && err.code === 'ERR_DEVICE_FLUSH') this.setFatal(err);
        throw err;
      }
      this.sb = next;
      this.tableWriter.metadataWrites += SUPERBLOCK_COPIES;
    })().finally(() => {
      this.genReservation = null;
    });
    return this.genReservation;
  }

  private async takeGeneration(): Promise<number> {
    while (this.nextGen >= this.sb.genReserved) await this.reserveGenerations();
    return this.nextGen++;
  }

  /** The chunk of an object, allocating one if needed (metadata written before it resolves). */
  async ensureChunk(vol: VolumeState, objectIndex: number): Promise<number> {
    const existing = vol.objects.get(objectIndex);
    if (existing !== undefined) return existing;
    const key = `${vol.id}:${objectIndex}`;
    const pending = this.allocating.get(key);
    if (pending) return pending;
    const p = this.allocate(vol, objectIndex).finally(() => this.allocating.delete(key));
    this.allocating.set(key, p);
    return p;
  }

  private async allocate(vol: VolumeState, objectIndex: number): Promise<number> {
    const chunk = this.freeChunks.pop();
    if (chunk === undefined) throw new TesseraError('ERR_NO_SPACE', `no free space on device ${this.device.name}`);
    try {
      if (!this.sb.dataZeroed && this.chunkGen[chunk] === 0) await this.zeroChunk(chunk);
      const gen = await this.takeGeneration();
      if (!this.volumes.has(vol.id)) throw new TesseraError('ERR_NOT_FOUND', `volume "${vol.name}" was deleted`);
      const sector = this.setEntry(chunk, ChunkState.Used, vol.id, objectIndex, gen);
      vol.objects.set(objectIndex, chunk);
      await this.tableWriter.write(sector);
      return chunk;
    } catch (err) {
      if (vol.objects.get(objectIndex) === chunk) vol.objects.delete(objectIndex);
      if (this.chunkState[chunk] !== ChunkState.Used) this.freeChunks.push(chunk);
      throw err;
    }
  }

  private async zeroChunk(chunk: number): Promise<void> {
    const step = MAX_IO_BLOCKS * BLOCK_STRIDE_BYTES;
    const buf = await this.pool.acquire(step);
    buf.fill(0);
    try {
      const base = chunkOffset(this.layout, chunk);
      for (let done = 0; done < this.layout.chunkStrideBytes; done += step) {
        await this.device.write(buf.subarray(0, Math.min(step, this.layout.chunkStrideBytes - done)), base + done);
      }
    } finally {
      this.pool.release(buf);
    }
  }

  /** Free an object's chunk; the chunk is reused once no IO holds it. */
  async freeObject(vol: VolumeState, objectIndex: number): Promise<void> {
    const chunk = vol.objects.get(objectIndex);
    if (chunk === undefined) return;
    vol.objects.delete(objectIndex);
    const sector = this.setEntry(chunk, ChunkState.Free, vol.id, objectIndex, this.chunkGen[chunk]);
    if (this.chunkRefs[chunk] === 0) this.freeChunks.push(chunk);
    else this.freeWhenIdle[chunk] = 1;
    await this.tableWriter.write(sector);
  }

  holdChunk(chunk: number): void {
    this.chunkRefs[chunk]++;
  }

  releaseChunk(chunk: number): void {
    assert(this.chunkRefs[chunk] > 0, 'chunk released more than held');
    if (--this.chunkRefs[chunk] === 0 && this.freeWhenIdle[chunk] === 1) {
      this.freeWhenIdle[chunk] = 0;
      this.freeChunks.push(chunk);
    }
  }

  chunkGeneration(chunk: number): number {
    return this.chunkGen[chunk];
  }

  private async persistVolumeTable(): Promise<void> {
    const records: VolumeRecord[] = [...this.volumes.values()].map((v) => ({ id: v.id, name: v.name, sizeBytes: v.sizeBytes, createdAt: v.createdAt }));
    const encoded = encodeVolumeTable({ sequence: this.volTableSeq + 1, nextVolumeId: this.nextVolumeId, volumes: records });
    const buf = await this.pool.acquire(encoded.length);
    try {
      encoded.copy(buf);
      // Copy by copy, each flushed, so a crash leaves at least one complete copy.
      for (let c = 0; c < VOLTABLE_COPIES; c++) {
        await this.device.write(buf, VOLTABLE_OFFSET + c * VOLTABLE_SLOT_BYTES);
        this.tableWriter.metadataWrites++;
        await this.flushDevice();
      }
      this.volTableSeq++;
    } finally {
      this.pool.release(buf);
    }
  }

  // ---------------------------------------------------------------- flush

  /** Group commit: callers that arrive while a flush runs share the next one. */
  flush(): Promise<void> {
    if (this.fatal) return Promise.reject(this.fatal);
    if (!this.flushInFlight) return this.startFlush();
    if (!this.flushQueued) {
      this.flushQueued = this.flushInFlight
        .catch(() => {})
        .then(() => {
          this.flushQueued = null;
          return this.startFlush();
        });
    }
    return this.flushQueued;
  }

  private startFlush(): Promise<void> {
    if (this.fatal) return Promise.reject(this.fatal);
    const p: Promise<void> = this.flushDevice().finally(() => {
      if (this.flushInFlight === p) this.flushInFlight = null;
    });
    this.flushInFlight = p;
    return p;
  }

  private async flushDevice(): Promise<void> {
    try {
      await this.device.flush();
    } catch (err) {
      // An fsync error leaves the page cache state unknown: nothing written since the
      // last good flush can be trusted, so the engine stops serving (GUIDE: fatal).
      const e = err instanceof TesseraError ? err : new TesseraError('ERR_DEVICE_FLUSH', String(err));
      this.setFatal(e);
      throw e;
    }
  }

  private setFatal(err: Error): void {
    if (this.fatal) return;
    this.fatal = err;
    this.log('error', `fatal: ${err.message}`);
    this.onFatal?.(err);
  }

  checkUsable(): void {
    if (this.fatal) throw new TesseraError('ERR_DEVICE_FLUSH', `engine stopped after a fatal error: ${this.fatal.message}`);
    if (this.closed) throw new TesseraError('ERR_CLOSED', 'engine is closed');
  }

  // ---------------------------------------------------------------- VolumeStore

  private mgmt<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.mgmtChain.then(() => {
      this.checkUsable();
      return fn();
    });
    this.mgmtChain = run.catch(() => {});
    return run;
  }

  list(): VolumeInfo[] {
    return [...this.volumes.values()].sort((a, b) => a.name.localeCompare(b.name)).map((v) => this.toInfo(v));
  }

  info(name: string): VolumeInfo {
    return this.toInfo(this.volumeByName(name));
  }

  create(name: string, sizeBytes: number): Promise<VolumeInfo> {
    return this.mgmt(async () => {
      checkName(name);
      checkSize(sizeBytes);
      if (this.byName.has(name)) throw new TesseraError('ERR_EXISTS', `volume "${name}" already exists`);
      if (this.volumes.size >= MAX_VOLUMES) throw new TesseraError('ERR_LIMIT', `at most ${MAX_VOLUMES} volumes per device`);
      const v: VolumeState = { id: this.nextVolumeId++, name, sizeBytes, createdAt: new Date().toISOString(), objects: new Map(), stats: new IoStats() };
      this.volumes.set(v.id, v);
      this.byName.set(name, v.id);
      try {
        await this.persistVolumeTable();
      } catch (err) {
        this.volumes.delete(v.id);
        this.byName.delete(name);
        throw err;
      }
      return this.toInfo(v);
    });
  }

  resize(name: string, sizeBytes: number, opts: { discardData?: boolean } = {}): Promise<VolumeInfo> {
    return this.mgmt(async () => {
      checkSize(sizeBytes);
      const v = this.volumeByName(name);
      if (sizeBytes < v.sizeBytes) {
        const objBytes = this.layout.objectSizeBytes;
        const boundary = Math.floor(sizeBytes / objBytes); // first object that is cut or dropped
        const affected = [...v.objects.keys()].filter((o) => o >= boundary && o * objBytes + objBytes > sizeBytes);
        if (affected.length > 0 && !opts.discardData) {
          throw new TesseraError('ERR_SHRINK', `volume "${name}" holds data beyond ${sizeBytes} bytes; pass discardData to drop it`);
        }
        // Data beyond the new end must not reappear if the volume grows again.
        if (v.objects.has(boundary) && sizeBytes % objBytes !== 0) {
          const end = Math.min((boundary + 1) * objBytes, v.sizeBytes);
          await new LocalVolume(this, v).writeZeroes(sizeBytes, end - sizeBytes, false, false);
        }
        await this.persistSize(v, sizeBytes);
        await Promise.all(affected.filter((o) => o * objBytes >= sizeBytes).map((o) => this.freeObject(v, o)));
      } else {
        await this.persistSize(v, sizeBytes);
      }
      return this.toInfo(v);
    });
  }

  /** Set a volume's size in memory and in the volume table; memory is restored if the write fails. */
  private async persistSize(v: VolumeState, sizeBytes: number): Promise<void> {
    const old = v.sizeBytes;
    v.sizeBytes = sizeBytes;
    try {
      await this.persistVolumeTable();
    } catch (err) {
      v.sizeBytes = old;
      throw err;
    }
  }

  rename(name: string, newName: string): Promise<VolumeInfo> {
    return this.mgmt(async () => {
      checkName(newName);
      const v = this.volumeByName(name);
      if (name === newName) return this.toInfo(v);
      if (this.byName.has(newName)) throw new TesseraError('ERR_EXISTS', `volume "${newName}" already exists`);
      v.name = newName;
      this.byName.delete(name);
      this.byName.set(newName, v.id);
      try {
        await this.persistVolumeTable();
      } catch (err) {
        v.name = name;
        this.byName.delete(newName);
        this.byName.set(name, v.id);
        throw err;
      }
      return this.toInfo(v);
    });
  }

  delete(name: string): Promise<void> {
    return this.mgmt(async () => {
      const v = this.volumeByName(name);
      this.volumes.delete(v.id);
      this.byName.delete(name);
      try {
        await this.persistVolumeTable();
      } catch (err) {
        this.volumes.set(v.id, v);
        this.byName.set(name, v.id);
        throw err;
      }
      // The volume is gone once the table is durable; its chunks are freed now, and
      // any left behind by a crash are collected at the next open (orphans).
      await Promise.all([...v.objects.keys()].map((o) => this.freeObject(v, o)));
      await this.flushDevice();
    });
  }

  open(name: string): Volume {
    return new LocalVolume(this, this.volumeByName(name));
  }

  /** The live state of a volume by id, or undefined once deleted. */
  volumeById(id: number): VolumeState | undefined {
    return this.volumes.get(id);
  }

  devices(): DeviceInfo[] {
    return [
      {
        name: this.device.name,
        path: this.device.path,
        sizeBytes: this.device.sizeBytes,
        chunkSizeBytes: this.layout.objectSizeBytes,
        chunksTotal: this.layout.chunkCount,
        chunksUsed: this.layout.chunkCount - this.freeChunks.length,
        directIo: this.device.directIo,
        ioErrors: this.device.stats.read.errors + this.device.stats.write.errors + this.device.stats.flush.errors,
        checksumErrors: this.checksumErrors,
        repairedBlocks: this.repairedBlocks,
        metadataWrites: this.tableWriter.metadataWrites,
        dataWrites: this.dataWrites,
      },
    ];
  }

  get metadataWrites(): number {
    return this.tableWriter.metadataWrites;
  }

  stats(): StatsSnapshot {
    return {
      atMs: Date.now(),
      devices: [{ name: this.device.name, stats: this.device.stats.snapshot() }],
      volumes: [...this.volumes.values()].map((v) => ({ name: v.name, stats: v.stats.snapshot() })),
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.mgmtChain;
    if (!this.fatal) await this.flushDevice().catch(() => {});
    this.closed = true;
    await this.device.close();
  }

  private volumeByName(name: string): VolumeState {
    const id = this.byName.get(name);
    const v = id === undefined ? undefined : this.volumes.get(id);
    if (!v) throw new TesseraError('ERR_NOT_FOUND', `no volume named "${name}"`);
    return v;
  }

  private toInfo(v: VolumeState): VolumeInfo {
    return {
      name: v.name,
      id: v.id,
      sizeBytes: v.sizeBytes,
      usedBytes: v.objects.size * this.layout.objectSizeBytes,
      objectSizeBytes: this.layout.objectSizeBytes,
      createdAt: v.createdAt,
    };
  }
}

function sameEntry(a: ChunkEntry | null, b: ChunkEntry | null): boolean {
  if (a === null || b === null) return a === b;
  return a.state === b.state && a.volumeId === b.volumeId && a.objectIndex === b.objectIndex && a.generation === b.generation && a.seq === b.seq;
}

/** Both superblock copies, in order, each flushed before the next is written. */
async function writeSuperblockCopies(device: BlockDevice, pool: BufferPool, sb: Superblock): Promise<void> {
  const buf = await pool.acquire(SUPERBLOCK_BYTES);
  try {
    encodeSuperblock(sb, buf);
    for (let c = 0; c < SUPERBLOCK_COPIES; c++) {
      await device.write(buf, c * SUPERBLOCK_BYTES);
      await device.flush();
    }
  } finally {
    pool.release(buf);
  }
}

export { BLOCK_DATA_BYTES };
