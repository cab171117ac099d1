// A simulated SegmentStore (src/io/segments.ts) in memory, for seeded crash tests
// of the write-ahead log: it tracks, per segment, which bytes are durable and
// which are only appended, and which creates and removes are durable, and a
// power cut turns that into the state a real machine could reboot with.
//
// Model:
// - Each segment file has `lengthBytes` appended and a durable prefix of
//   `durableBytes`; sync() raises durableBytes to the length at the time it
//   started. Appends only grow a file, so durable data is always a prefix.
// - The directory has a current namespace (name -> file) and a durable one as of
//   the last completed syncDir(). create/remove change only the current one.
// - powerCut(): every name whose entry differs between the two namespaces
//   survives in either state (an unsynced create may vanish with its data, even
//   synced data; an unsynced remove may be undone). Each surviving file keeps its
//   durable prefix exactly; its unsynced tail is dropped, kept whole, cut at a
//   512-byte sector boundary (the last kept sector possibly garbage), or
//   scattered: each tail sector independently new, zero or garbage (disks and
//   page-cache writeback do not persist sectors in order). The sector holding
//   the durable end stays atomic: its durable bytes never change. Garbage is
//   random bytes or a copy of another sector of some segment (a recycled block
//   holding stale log data). The old store dies (its IO fails with ERR_CLOSED)
//   and a new store holding the survivors is returned.
// - Faults: failNextSync / failNextSyncDir (ERR_DEVICE_FLUSH, nothing becomes
//   durable), failNextAppend (ERR_DEVICE_IO after a random prefix of the data was
//   appended, unsynced), flipBit (silent corruption of stored data), jitterTurns
//   (random microtask turns per IO, so a seeded test can cut the power in the
//   middle of an append or a sync). powerCut(how) can force the outcome of the
//   namespace and of the tails, for tests that need one exact case.
// - Recycling (spareSegmentsMax > 0, see io/segments.ts): remove() renames the
//   file to a spare name (`spare-<n>`, not listed) while fewer than the limit are
//   held, and create() renames the oldest spare to the new name. The reused file
//   keeps the bytes of its earlier life as durable "stale" bytes: appends
//   overwrite them, and after a power cut the file is as long as the longer of
//   its stale bytes and its surviving new bytes, with stale bytes wherever no
//   new byte survived (a dropped or cut tail uncovers them, and so does a sector
//   of a scattered tear that "reads zero" in a new file). seal() cuts the
//   stale bytes off and syncs. Renames follow the namespace rules above, so both
//   ends of an unsynced rename may survive: one file under two names (a hard
//   link, as a file system without a journal can leave). Like the real store, the
//   store after a cut unlinks a spare name that shares its file, and remove()
//   unlinks rather than keeps a file that another name still reaches: reusing it
//   would overwrite that name's data.
import { TesseraError } from '../stdx/errors.js';
import { assert, fail } from '../stdx/assert.js';
import type { Prng } from '../stdx/prng.js';
import { SEGMENT_NAME_PATTERN, type Segment, type SegmentStore } from '../io/segments.js';

export const SIM_SECTOR_BYTES = 512;

class SimFile {
  data: Buffer;
  lengthBytes = 0;
  durableBytes = 0;
  /** Durable bytes of the file's earlier life (a recycled file), beyond what this life wrote. */
  stale: Buffer | null = null;

  constructor(initial?: Buffer) {
    this.data = Buffer.alloc(Math.max(4096, initial?.length ?? 0));
    if (initial) {
      initial.copy(this.data);
      this.lengthBytes = initial.length;
      this.durableBytes = initial.length;
    }
  }

  appendBytes(src: Uint8Array): void {
    const need = this.lengthBytes + src.length;
    if (need > this.data.length) {
      const grown = Buffer.alloc(Math.max(need, this.data.length * 2));
      this.data.copy(grown, 0, 0, this.lengthBytes);
      this.data = grown;
    }
    this.data.set(src, this.lengthBytes);
    this.lengthBytes = need;
  }

  /** Reuse: whatever the file holds now (as it would read after a cut with nothing in flight: its durable bytes at least) becomes stale. */
  recycle(): void {
    const old = Buffer.from(this.data.subarray(0, this.lengthBytes));
    this.stale = this.stale && this.stale.length > old.length ? Buffer.concat([old, this.stale.subarray(old.length)]) : old;
    this.lengthBytes = 0;
    this.durableBytes = 0;
  }
}

export interface SimSegmentStoreOptions {
  /** Keep up to this many removed files as spares for create() (recycling). Default 0. */
  spareSegmentsMax?: number;
}

const SPARE_NAME = /^spare-(\d+)$/;

export interface SimSegmentFaults {
  failNextSync: boolean;
  failNextSyncDir: boolean;
  failNextAppend: boolean;
  /** Random extra microtask turns per IO (0..n). */
  jitterTurns: number;
  /**
   * Awaited by every sync() before it takes effect (null: none). A simulation
   * passes a wait in virtual time, so that fdatasync takes time as on a disk and
   * the caller's work overlaps it.
   */
  syncWait: (() => Promise<void>) | null;
}

export interface SimSegmentCounters {
  appends: number;
  syncs: number;
  syncDirs: number;
  creates: number;
  removes: number;
  /** Creates served by a spare file. */
  recycles: number;
}

/** Forces a power cut's random choices (tests that need one exact outcome). */
export interface PowerCutOptions {
  /** Unsynced creates, removes and renames: each undone ('revert'), each kept ('apply'), or either (default). */
  readonly names?: 'revert' | 'apply' | 'random';
  /** 'drop': every unsynced tail is lost (default: dropped, kept or torn at random). */
  readonly tails?: 'drop' | 'random';
}

export interface PowerCutResult {
  store: SimSegmentStore;
  /** Files whose unsynced tail was kept whole / dropped / torn. */
  kept: number;
  dropped: number;
  torn: number;
  /** Names whose unsynced create or remove went the other way than the current namespace says. */
  namesReverted: number;
}

export class SimSegmentStore implements SegmentStore {
  readonly faults: SimSegmentFaults = { failNextSync: false, failNextSyncDir: false, failNextAppend: false, jitterTurns: 0, syncWait: null };
  readonly counters: SimSegmentCounters = { appends: 0, syncs: 0, syncDirs: 0, creates: 0, removes: 0, recycles: 0 };
  private current = new Map<string, SimFile>();
  private durable = new Map<string, SimFile>();
  /** Set by powerCut(): every later IO through this store or its handles fails. */
  dead = false;

  private readonly spareSegmentsMax: number;
  private nextSpareNumber = 1;

  constructor(
    private readonly prng: Prng,
    private readonly options: SimSegmentStoreOptions = {},
  ) {
    this.spareSegmentsMax = options.spareSegmentsMax ?? 0;
  }

  async list(): Promise<string[]> {
    this.checkAlive();
    if (this.faults.jitterTurns > 0) await this.delay();
    this.checkAlive();
    return [...this.current.keys()].filter((n) => !SPARE_NAME.test(n)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** Spare names held now, oldest first. */
  spareNames(): string[] {
    return [...this.current.keys()].filter((n) => SPARE_NAME.test(n)).sort((a, b) => Number(SPARE_NAME.exec(a)![1]) - Number(SPARE_NAME.exec(b)![1]));
  }

  async create(name: string): Promise<Segment> {
    checkName(name);
    this.checkAlive();
    if (this.faults.jitterTurns > 0) await this.delay();
    this.checkAlive();
    if (this.current.has(name)) throw new TesseraError('ERR_EXISTS', `segment ${name} exists`);
    this.counters.creates++;
    const spare = this.spareNames()[0];
    if (spare !== undefined) {
      const file = this.current.get(spare)!;
      this.current.delete(spare);
      this.current.set(name, file);
      file.recycle();
      this.counters.recycles++;
      return new SimSegment(this, name, file);
    }
    const file = new SimFile();
    this.current.set(name, file);
    return new SimSegment(this, name, file);
  }

  async open(name: string): Promise<Segment> {
    checkName(name);
    this.checkAlive();
    if (this.faults.jitterTurns > 0) await this.delay();
    this.checkAlive();
    const file = this.current.get(name);
    if (!file) throw new TesseraError('ERR_NOT_FOUND', `segment ${name} not found`);
    return new SimSegment(this, name, file);
  }

  async remove(name: string): Promise<void> {
    checkName(name);
    this.checkAlive();
    if (this.faults.jitterTurns > 0) await this.delay();
    this.checkAlive();
    const file = this.current.get(name);
    if (!file) return;
    this.current.delete(name);
    this.counters.removes++;
    // A file still reachable by another name (a cut left both ends of a rename) is unlinked, never kept: reusing it would overwrite that name's data.
    if (this.spareNames().length < this.spareSegmentsMax && !this.linked(file)) this.current.set(`spare-${this.nextSpareNumber++}`, file);
  }

  /** True when some name in the current namespace reaches `file`. */
  private linked(file: SimFile): boolean {
    for (const f of this.current.values()) if (f === file) return true;
    return false;
  }

  async syncDir(): Promise<void> {
    this.checkAlive();
    const snapshot = new Map(this.current); // what completed before the call
    if (this.faults.jitterTurns > 0) await this.delay();
    this.checkAlive();
    if (this.faults.failNextSyncDir) {
      this.faults.failNextSyncDir = false;
      throw new TesseraError('ERR_DEVICE_FLUSH', 'simulated directory fsync error');
    }
    this.durable = snapshot;
    this.counters.syncDirs++;
  }

  /** Names present now (current namespace). */
  names(): string[] {
    return [...this.current.keys()].sort();
  }

  sizeBytes(name: string): number {
    return this.fileOf(name).lengthBytes;
  }

  durableSizeBytes(name: string): number {
    return this.fileOf(name).durableBytes;
  }

  /** Bytes of a segment as they stand now (appended, synced or not). */
  contents(name: string): Buffer {
    const f = this.fileOf(name);
    return Buffer.from(f.data.subarray(0, f.lengthBytes));
  }

  /** Silent corruption: flips one bit of stored data (synced or not). */
  flipBit(name: string, offsetBytes: number, bit = 0): void {
    const f = this.fileOf(name);
    if (!(offsetBytes >= 0 && offsetBytes < f.lengthBytes)) fail(`flipBit beyond the end of ${name}`);
    f.data[offsetBytes] ^= 1 << bit;
  }

  /** Simulated power cut: see the header. This store dies; the returned one holds what survived. */
  powerCut(how: PowerCutOptions = {}): PowerCutResult {
    this.checkAlive();
    this.dead = true;
    const result: PowerCutResult = { store: new SimSegmentStore(this.prng, this.options), kept: 0, dropped: 0, torn: 0, namesReverted: 0 };
    result.store.faults.jitterTurns = this.faults.jitterTurns;
    const names = new Set([...this.current.keys(), ...this.durable.keys()]);
    const allFiles = [...new Set([...this.current.values(), ...this.durable.values()])];
    const survivors = new Map<SimFile, SimFile>(); // one outcome per file, whatever names reach it
    for (const name of [...names].sort()) {
      const now = this.current.get(name);
      const was = this.durable.get(name);
      let file: SimFile | undefined = now;
      if (now !== was) {
        // An unsynced create, remove, or remove-then-create: either side may survive.
        if (how.names === 'revert' || (how.names !== 'apply' && this.prng.chance(0.5))) {
          file = was;
          result.namesReverted++;
        }
      }
      if (!file) continue;
      let copy = survivors.get(file);
      if (!copy) {
        copy = new SimFile(this.withStale(file, this.survivingBytes(file, allFiles, result, how.tails === 'drop')));
        survivors.set(file, copy);
      }
      result.store.current.set(name, copy);
      result.store.durable.set(name, copy);
      const spare = SPARE_NAME.exec(name);
      if (spare) result.store.nextSpareNumber = Math.max(result.store.nextSpareNumber, Number(spare[1]) + 1);
    }
    result.store.dropLinkedSpares();
    return result;
  }

  /**
   * As a store opening a directory does: a spare whose file another name also
   * reaches (both ends of an unsynced rename survived, a hard link) is unlinked,
   * so that a later create() cannot overwrite that name's data.
   */
  private dropLinkedSpares(): void {
    const names = new Map<SimFile, number>();
    for (const f of this.current.values()) names.set(f, (names.get(f) ?? 0) + 1);
    for (const spare of this.spareNames()) {
      if (names.get(this.current.get(spare)!)! > 1) {
        names.set(this.current.get(spare)!, names.get(this.current.get(spare)!)! - 1);
        this.current.delete(spare);
        this.durable.delete(spare);
        this.linkedSparesDropped++;
      }
    }
  }

  /** Spares dropped on "open" because another name reached the same file. */
  linkedSparesDropped = 0;

  /** A recycled file's surviving new bytes laid over its stale ones (see the header). */
  private withStale(file: SimFile, fresh: Buffer): Buffer {
    if (!file.stale || file.stale.length <= fresh.length) return fresh;
    const out = Buffer.from(file.stale);
    fresh.copy(out, 0);
    return out;
  }

  private survivingBytes(file: SimFile, allFiles: SimFile[], counts: PowerCutResult, dropTails: boolean): Buffer {
    const durableBytes = file.durableBytes;
    const lengthBytes = file.lengthBytes;
    const out = Buffer.from(file.data.subarray(0, lengthBytes));
    if (lengthBytes === durableBytes) return out;
    const mode = dropTails ? 0 : this.prng.int(4);
    if (mode === 0) {
      counts.dropped++;
      return out.subarray(0, durableBytes);
    }
    if (mode === 1) {
      counts.kept++;
      return out;
    }
    counts.torn++;
    const S = SIM_SECTOR_BYTES;
    const firstBoundary = Math.ceil(durableBytes / S) * S;
    // The surviving length: a sector boundary in the tail, or the whole tail.
    const boundaries = Math.max(0, Math.ceil((lengthBytes - firstBoundary) / S));
    const keptBytes = this.prng.chance(0.3) ? lengthBytes : Math.min(lengthBytes, firstBoundary + S * this.prng.int(boundaries + 1));
    const tornOut = out.subarray(0, Math.max(durableBytes, keptBytes));
    if (mode === 2) {
      // Prefix order: the sectors before the cut are new; the last one may be garbage.
      const lastStart = Math.floor((tornOut.length - 1) / S) * S;
      if (lastStart >= firstBoundary && tornOut.length > lastStart && this.prng.chance(0.5)) this.garbage(tornOut, lastStart, allFiles);
      return tornOut;
    }
    // Scattered: each sector of the tail independently new, zero or garbage.
    for (let s = Math.floor(durableBytes / S) * S; s < tornOut.length; s += S) {
      const r = this.prng.float();
      if (r < 0.5) continue;
      const from = Math.max(s, durableBytes); // the durable bytes of a shared sector never change
      const to = Math.min(s + S, tornOut.length);
      if (r < 0.75 || s < durableBytes) this.unwritten(tornOut, from, to, file.stale);
      else this.garbage(tornOut, s, allFiles);
    }
    return tornOut;
  }

  /**
   * A sector whose new bytes never reached the disk: what the file held there
   * before, i.e. zeros in a new file, the earlier life's bytes in a recycled one
   * (possibly an intact old record in the middle of the tear).
   */
  private unwritten(buf: Buffer, from: number, to: number, stale: Buffer | null): void {
    buf.fill(0, from, to);
    if (stale && from < stale.length) stale.copy(buf, from, from, Math.min(to, stale.length));
  }

  /** Fills the sector at `at` (clipped to the buffer) with random bytes or a stale sector of some file. */
  private garbage(buf: Buffer, at: number, allFiles: SimFile[]): void {
    const end = Math.min(buf.length, at + SIM_SECTOR_BYTES);
    const donor = allFiles[this.prng.int(allFiles.length)];
    if (donor && donor.lengthBytes >= SIM_SECTOR_BYTES && this.prng.chance(0.5)) {
      const from = this.prng.int(Math.floor(donor.lengthBytes / SIM_SECTOR_BYTES)) * SIM_SECTOR_BYTES;
      donor.data.copy(buf, at, from, from + (end - at));
    } else {
      this.prng.fill(buf.subarray(at, end));
    }
  }

  private fileOf(name: string): SimFile {
    const f = this.current.get(name);
    if (!(f)) fail(`no segment ${name}`);
    return f;
  }

  checkAlive(): void {
    if (this.dead) throw new TesseraError('ERR_CLOSED', 'segment store lost power');
  }

  async delay(): Promise<void> {
    if (this.faults.jitterTurns > 0) {
      const turns = this.prng.int(this.faults.jitterTurns + 1);
      for (let i = 0; i < turns; i++) await Promise.resolve();
    }
  }

  /** Used by SimSegment.append on an injected failure: how much of the data still lands. */
  randomPrefixBytes(totalBytes: number): number {
    return this.prng.int(totalBytes + 1);
  }
}

class SimSegment implements Segment {
  private closed = false;
  private appending = false;

  constructor(
    private readonly store: SimSegmentStore,
    readonly name: string,
    private readonly file: SimFile,
  ) {}

  get sizeBytes(): number {
    return this.file.lengthBytes;
  }

  async append(buffers: readonly Uint8Array[]): Promise<void> {
    this.check();
    if (this.sealed) throw new TesseraError('ERR_CLOSED', `segment ${this.name} is sealed`);
    if (!(!this.appending)) fail(`concurrent appends to segment ${this.name}`);
    const data = Buffer.concat(buffers.map((b) => (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength)))); // copy now: the caller may reuse its buffers
    this.appending = true;
    try {
      if (this.store.faults.jitterTurns > 0) await this.store.delay();
      this.check();
      this.store.counters.appends++;
      if (this.store.faults.failNextAppend) {
        this.store.faults.failNextAppend = false;
        this.file.appendBytes(data.subarray(0, this.store.randomPrefixBytes(data.length)));
        throw new TesseraError('ERR_DEVICE_IO', `simulated append error on ${this.name}`);
      }
      this.file.appendBytes(data);
    } finally {
      this.appending = false;
    }
  }

  async sync(): Promise<void> {
    this.check();
    const upToBytes = this.file.lengthBytes; // appends completed before the sync started
    if (this.store.faults.jitterTurns > 0) await this.store.delay();
    if (this.store.faults.syncWait) await this.store.faults.syncWait();
    this.check();
    this.store.counters.syncs++;
    if (this.store.faults.failNextSync) {
      this.store.faults.failNextSync = false;
      throw new TesseraError('ERR_DEVICE_FLUSH', `simulated fdatasync error on ${this.name}`);
    }
    this.file.durableBytes = Math.max(this.file.durableBytes, upToBytes);
  }

  async seal(): Promise<void> {
    this.check();
    if (this.sealed) throw new TesseraError('ERR_CLOSED', `segment ${this.name} is sealed`);
    await this.sync();
    this.sealed = true;
    this.file.stale = null;
  }

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    this.check();
    if (this.store.faults.jitterTurns > 0) await this.store.delay();
    this.check();
    if (offsetBytes < 0 || lengthBytes < 0 || offsetBytes + lengthBytes > this.file.lengthBytes) {
      throw new TesseraError('ERR_RANGE', `read ${this.name} at ${offsetBytes}+${lengthBytes} beyond its end ${this.file.lengthBytes}`);
    }
    return Buffer.from(this.file.data.subarray(offsetBytes, offsetBytes + lengthBytes));
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private sealed = false;

  private check(): void {
    if (this.closed) throw new TesseraError('ERR_CLOSED', `segment ${this.name} is closed`);
    this.store.checkAlive();
  }
}

function checkName(name: string): void {
  if (!(SEGMENT_NAME_PATTERN.test(name))) fail(`bad segment name ${JSON.stringify(name)}`);
}
