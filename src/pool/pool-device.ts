// A pool of member devices presented as one BlockDevice (docs/raid.md): the
// address space is cut into extents of chunkDataBytes; a container of
// k data + m parity chunks on distinct members holds k consecutive extents,
// striped with rotating parity (geometry.ts). Containers are allocated when
// one of their extents is first written (thin; allocator.ts picks members);
// reads of unallocated space return zeros. Mirrors are containers with k = 1.
//
// IO: a read goes to the data strip's member, and is reconstructed from the
// rest of the row when that member is missing or the read fails (the range is
// then written back: a media error is repaired). A write covering a whole row
// computes parity from the new data; a partial write updates parity by delta
// (read old data and parity, P' = P + d, Q' = Q + g^i d); a row with a missing
// member is updated by reconstruct-write (read every surviving strip range,
// rebuild the missing one, recompute parity, write the survivors). Rows are
// locked while they are updated or reconstructed.
//
// Invariants: a container never has two chunks on one member; a container
// header is on every available chunk of it before any data write to the
// container starts; more than m unavailable positions in a row is ERR_DEVICE_IO
// for IO that needs them (data loss), never garbage. Row updates go through the
// stripe journal first (journal.ts: no write hole). Rebuild restores lost chunks
// and drains a member being removed onto the others (removeMember). Not yet
// here (docs/raid.md): discard, widening narrowed containers, static wear
// levelling. Pure apart from the member BlockDevices it is given.
import type { BlockDevice } from '../device/device.js';
import { SECTOR_BYTES } from '../device/device.js';
import { assert, fail } from '../stdx/assert.js';
import { TesseraError } from '../stdx/errors.js';
import type { Prng } from '../stdx/prng.js';
import { IoStats } from '../stdx/stats.js';
import * as tsCodec from '../raid/parity.js';

export interface ParityCodec {
  encodeParity(data: readonly (Uint8Array | null)[], p: Uint8Array, q?: Uint8Array | null): void;
  reconstruct(blocks: readonly Uint8Array[], dataCount: number, parityCount: number, missing: readonly number[]): void;
}
import { allocateContainer, chooseSacrificial, memberWeights, type MemberState } from './allocator.js';
import { capacityBytes, pieces, positionOf, rowBytes, type ContainerShape, type Piece } from './geometry.js';
import {
  RECORD_BYTES,
  chooseLabel,
  decodeContainer,
  encodeContainer,
  encodeLabel,
  parityCountOf,
  type ContainerRecord,
  type MemberLabel,
  type PoolParams,
  type Protection,
  UNPLACED_UUID,
  MAX_POOL_MEMBERS,
} from './records.js';
import { applyParityDelta } from './stripe.js';
import { JOURNAL_RING_OFFSET, StripeJournal, recoverJournal, writeJournalSuperblocks } from './journal.js';
import { planRebuild, type ContainerHealth } from './rebuild-plan.js';
import { CapacityWatch, DEFAULT_THRESHOLDS, type AlarmLevel, type CapacityThresholds } from './alarms.js';

/** Written over the header of a chunk given back after holding data: it is zeroed before its next use. */
const FREED_HEADER = (() => {
  const b = Buffer.alloc(RECORD_BYTES);
  b.write('TSRFREE1', 0, 'latin1');
  return b;
})();
const ZERO_HEADER = Buffer.alloc(RECORD_BYTES);

function isZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** Tries of a member write that fails with an error other than ERR_DEVICE_IO before the member is failed. */
const WRITE_RETRIES = 3;

/** Rows of one container a rebuild copies at once. */
const REBUILD_ROWS_AT_ONCE = 4;

/** Labels at 0 and 4 KiB; the stripe journal area from 64 KiB; chunks from the next MiB after it. */
const LABEL_COPY_OFFSETS = [0, RECORD_BYTES];
export const JOURNAL_AREA_OFFSET = 64 * 1024;
export const DEFAULT_JOURNAL_BYTES = 64 * 1024 * 1024;

export function firstChunkOffset(journalBytes: number): number {
  const MiB = 1024 * 1024;
  return Math.ceil((JOURNAL_AREA_OFFSET + journalBytes) / MiB) * MiB;
}

export interface PoolFormatOptions {
  protection: Protection;
  /** Data chunks per container for raid5/raid6 (ignored for mirrors). */
  dataCount?: number;
  stripBytes?: number;
  chunkDataBytes?: number;
  /** Rated bytes written over each member's life; default 1 PB. */
  enduranceBytes?: number;
  /** Stripe journal area per member (default 64 MiB). */
  journalBytes?: number;
  /** The members read as zeros (fresh sparse files): new chunks are not zero-filled. Default false. */
  dataZeroed?: boolean;
  newUuid: () => string;
}

export interface PoolOpenOptions {
  rng: Prng;
  newUuid: () => string;
  name?: string;
  /** Clock and sleep for rebuild pacing and progress (default: performance.now and setTimeout). */
  nowMs?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** Capacity alarm thresholds (default 80 % and 95 %) and where alarm changes go (the daemon logs them). */
  thresholds?: CapacityThresholds;
  /**
   * The parity codec: the TypeScript one by default; the daemon passes the
   * WebAssembly SIMD one (io/node/raid-wasm.ts), 10x faster, same contract.
   */
  codec?: ParityCodec;
  onAlarm?: (level: AlarmLevel, usedFraction: number, was: AlarmLevel) => void;
  /**
   * The pool expected (its uuid, as registered by the daemon). With it, a
   * device without a valid label or with another pool's label is left out
   * (reported through onSkip, and not closed) instead of failing the open: a
   * device added to the registry just before a crash, or a disk swapped by
   * hand, must not keep the pool offline.
   */
  expectPoolUuid?: string;
  onSkip?: (device: BlockDevice, reason: string) => void;
}

interface Member {
  index: number;
  uuid: string;
  device: BlockDevice | null;
  label: MemberLabel | null;
  failed: boolean;
  /** Being removed: readable, but gets no new chunks, and a rebuild moves its chunks away. In memory only. */
  draining: boolean;
  usedChunks: Set<number>;
  /** Free chunks that held data once (freed, or a reused device's): zeroed before their next use even on a dataZeroed pool. */
  dirty: Set<number>;
  bytesWritten: number;
}

interface Position {
  member: Member | null;
  chunkIndex: number;
  /** The chunk does not hold this container's current header (never written, or replaced): its data is unknown. */
  stale: boolean;
}

interface Container {
  rec: ContainerRecord;
  shape: ContainerShape;
  positions: Position[];
  /** While a rebuild copies this container: the new chunk of each lost position, and which rows are copied (1). */
  rebuild?: { targets: Map<number, Position>; copied: Uint8Array };
}

export interface RebuildProgress {
  running: boolean;
  containersTotal: number;
  containersDone: number;
  /** Containers whose lost chunks exceed their parity: data lost, not rebuilt. */
  unrecoverable: number;
  bytesTotal: number;
  bytesDone: number;
  startedAtMs: number;
  /** Estimated time to completion at the rate so far; null before the first container. */
  etaMs: number | null;
  /** Containers left degraded because no member had room for a new chunk. */
  noRoom: number;
  /** The container finished last and how many chunks it had lost (logs, risk-order tests). */
  last: { containerId: number; lost: number } | null;
}

export interface RebuildOptions {
  /** Containers rebuilt at once (spreads reads and writes over the members). Default: twice the members in service. */
  parallel?: number;
  /** Share of the time the rebuild may take while user IO is active (0..1]. Default 0.3. */
  busyShare?: number;
  onProgress?: (p: RebuildProgress) => void;
}

function memberStateOf(m: Member): MemberState {
  const total = m.label?.chunkCount ?? 0;
  return {
    index: m.index,
    freeChunks: total - m.usedChunks.size,
    totalChunks: total,
    wear: m.label ? (m.label.bytesWritten + m.bytesWritten) / Math.max(1, m.label.enduranceBytes) : 1,
    usable: m.device !== null && !m.failed && !m.draining,
    domain: m.device?.failureDomain,
  };
}

export class PoolDevice implements BlockDevice {
  readonly sectorBytes = SECTOR_BYTES;
  readonly directIo = false;
  readonly stats = new IoStats();
  readonly path: string;
  private readonly extents = new Map<number, { c: Container; index: number }>();
  private readonly containers = new Map<number, Container>();
  private nextContainerId = 1;
  private sacrificial: number | null = null;
  private readonly rowLocks = new Map<string, Promise<void>>();
  private allocating: Promise<unknown> = Promise.resolve();
  private closed = false;

  private journal!: StripeJournal;
  private labelSequence = 1;

  private constructor(
    readonly name: string,
    private readonly poolUuid: string,
    private readonly params: PoolParams,
    private readonly chunkDataBytes: number,
    private readonly members: Member[],
    private readonly opts: PoolOpenOptions,
  ) {
    this.path = `pool:${name}`;
    this.capacityWatch = new CapacityWatch(opts.thresholds ?? DEFAULT_THRESHOLDS, (level, used, was) => opts.onAlarm?.(level, used, was));
  }

  private readonly capacityWatch: CapacityWatch;

  private get codec(): ParityCodec {
    return this.opts.codec ?? tsCodec;
  }

  /** Chunks in use over the chunks of in-service members (what thin provisioning can still give). */
  capacity(): { usedChunks: number; totalChunks: number; usedFraction: number; alarm: AlarmLevel } {
    let used = 0;
    let total = 0;
    for (const m of this.members) {
      if (!m.device || m.failed || !m.label) continue;
      used += m.usedChunks.size;
      total += m.label.chunkCount;
    }
    const usedFraction = total > 0 ? used / total : 1;
    return { usedChunks: used, totalChunks: total, usedFraction, alarm: this.capacityWatch.update(usedFraction) };
  }

  get sizeBytes(): number {
    return this.params.logicalSizeBytes;
  }

  get thresholds(): CapacityThresholds {
    return this.capacityWatch.thresholds;
  }

  /** Changes the capacity alarm thresholds; an alarm they raise or clear is reported at once. */
  setThresholds(t: CapacityThresholds): void {
    this.capacityWatch.setThresholds(t);
    this.capacity();
  }

  get protection(): Protection {
    return this.params.protection;
  }

  get uuid(): string {
    return this.poolUuid;
  }

  /** Data chunks per full-width container (1 for mirrors). */
  get dataCount(): number {
    return this.params.dataCount;
  }

  get chunkBytes(): number {
    return this.chunkDataBytes;
  }

  /** The device serving member `index` (null when missing). */
  memberDevice(index: number): BlockDevice | null {
    return this.members[index]?.device ?? null;
  }

  /** Writes labels on fresh members (their old contents are ignored). */
  static async format(devices: readonly BlockDevice[], o: PoolFormatOptions): Promise<void> {
    if (devices.length > MAX_POOL_MEMBERS) throw new TesseraError('ERR_INVALID', `a pool has at most ${MAX_POOL_MEMBERS} devices`);
    const m = parityCountOf(o.protection);
    const k = o.protection === 'mirror2' || o.protection === 'mirror3' ? 1 : (o.dataCount ?? 4);
    const stripBytes = o.stripBytes ?? 64 * 1024;
    const chunkDataBytes = o.chunkDataBytes ?? 16 * 1024 * 1024;
    if (devices.length < 1 + m) throw new TesseraError('ERR_INVALID', `${o.protection} needs at least ${1 + m} devices, got ${devices.length}`);
    if (k < 1 || k + m > 32) throw new TesseraError('ERR_INVALID', `stripe width ${k}+${m} must be between 1+${m} and 32 chunks`);
    if (stripBytes % SECTOR_BYTES !== 0 || chunkDataBytes % stripBytes !== 0 || chunkDataBytes % RECORD_BYTES !== 0) {
      throw new TesseraError('ERR_INVALID', `strip size ${stripBytes} must be sector aligned and divide the chunk size ${chunkDataBytes}`);
    }
    const journalBytes = o.journalBytes ?? DEFAULT_JOURNAL_BYTES;
    const maxRecord = 512 + (k + m) * stripBytes;
    if (journalBytes < 8 * maxRecord + JOURNAL_RING_OFFSET || journalBytes % SECTOR_BYTES !== 0) {
      throw new TesseraError('ERR_INVALID', `a journal of ${journalBytes} bytes is too small for ${k}+${m} rows of ${stripBytes}-byte strips (need ${8 * maxRecord + JOURNAL_RING_OFFSET})`);
    }
    const first = firstChunkOffset(journalBytes);
    const counts = devices.map((d) => Math.floor((d.sizeBytes - first) / (RECORD_BYTES + chunkDataBytes)));
    for (const [i, c] of counts.entries()) if (c < 1) throw new TesseraError('ERR_INVALID', `device ${devices[i].path} is too small for one ${chunkDataBytes}-byte chunk`);
    // The address space a pool of full-width containers could fill.
    const total = counts.reduce((a, b) => a + b, 0);
    // Partitions of one device are one failure domain: containers are at most that wide.
    const domains = new Set(devices.map((d, i) => d.failureDomain ?? `#${i}`)).size;
    const width = Math.min(k + m, domains);
    const logicalSizeBytes = Math.floor(total / width) * (width - m) * chunkDataBytes;
    const pool: PoolParams = { protection: o.protection, dataCount: k, stripBytes, logicalSizeBytes, memberCount: devices.length, journalBytes, dataZeroed: o.dataZeroed ?? false };
    const poolUuid = o.newUuid();
    const zero = Buffer.alloc(RECORD_BYTES);
    await Promise.all(
      devices.map(async (d, i) => {
        const b = Buffer.alloc(RECORD_BYTES);
        encodeLabel(
          { sequence: 1, pool, poolUuid, memberUuid: o.newUuid(), memberIndex: i, sizeBytes: d.sizeBytes, chunkDataBytes, chunkCount: counts[i], firstChunkOffset: first, enduranceBytes: o.enduranceBytes ?? 1e15, bytesWritten: 0, failedMembers: [] },
          b,
        );
        // A fresh member must not show an old pool's container headers.
        for (let c = 0; c < counts[i]; c++) await d.write(zero, first + c * (RECORD_BYTES + chunkDataBytes));
        for (const at of LABEL_COPY_OFFSETS) await d.write(b, at);
        await d.flush();
      }),
    );
    await writeJournalSuperblocks([...devices], { areaOffset: JOURNAL_AREA_OFFSET }, { sequence: 1, poolUuid, checkpointSeq: 0, checkpointPos: 0 });
  }

  /**
   * Opens a pool from the member devices present (any order; missing members
   * are fine as long as every container keeps enough chunks to be read).
   * Rebuilds the container map from the chunk headers.
   */
  static async open(devices: readonly BlockDevice[], opts: PoolOpenOptions): Promise<PoolDevice> {
    const labels: MemberLabel[] = [];
    const kept: BlockDevice[] = [];
    for (const d of devices) {
      const copies = await Promise.all(LABEL_COPY_OFFSETS.map(async (at) => {
        const b = Buffer.alloc(RECORD_BYTES);
        await d.read(b, at);
        return b;
      }));
      const l = chooseLabel(copies);
      const problem = typeof l === 'string' ? l : opts.expectPoolUuid !== undefined && l.poolUuid !== opts.expectPoolUuid ? `belongs to another pool (${l.poolUuid})` : null;
      if (problem !== null && opts.expectPoolUuid !== undefined) {
        opts.onSkip?.(d, problem);
        continue;
      }
      if (typeof l === 'string') throw new TesseraError('ERR_FORMAT', `${d.path}: ${l}`);
      labels.push(l);
      kept.push(d);
    }
    devices = kept;
    if (labels.length === 0) throw new TesseraError('ERR_INVALID', 'a pool needs at least one member device');
    const first = labels[0];
    for (const [i, l] of labels.entries()) {
      if (l.poolUuid !== first.poolUuid) throw new TesseraError('ERR_FORMAT', `${devices[i].path} belongs to another pool`);
      const same = (a: PoolParams, b: PoolParams) => a.protection === b.protection && a.dataCount === b.dataCount && a.stripBytes === b.stripBytes && a.journalBytes === b.journalBytes && a.logicalSizeBytes === b.logicalSizeBytes;
      if (!same(l.pool, first.pool) || l.chunkDataBytes !== first.chunkDataBytes) {
        throw new TesseraError('ERR_FORMAT', `${devices[i].path}: pool parameters differ from ${devices[0].path}`);
      }
    }
    // The newest label knows the member count and which members were taken out of service.
    const newest = labels.reduce((a, b) => (b.sequence > a.sequence ? b : a));
    const members: Member[] = Array.from({ length: newest.pool.memberCount }, (_, index) => ({
      index, uuid: '', device: null, label: null, failed: false, draining: false, usedChunks: new Set<number>(), dirty: new Set<number>(), bytesWritten: 0,
    }));
    for (const [i, l] of labels.entries()) {
      const m = members[l.memberIndex];
      if (!m) throw new TesseraError('ERR_FORMAT', `${devices[i].path}: member ${l.memberIndex} outside a pool of ${members.length}`);
      if (m.device) throw new TesseraError('ERR_FORMAT', `two devices claim member ${l.memberIndex}`);
      Object.assign(m, { uuid: l.memberUuid, device: devices[i], label: l });
    }
    for (const f of newest.failedMembers) if (f < members.length) members[f].failed = true;
    const pool = new PoolDevice(opts.name ?? first.poolUuid.slice(0, 8), first.poolUuid, { ...newest.pool }, first.chunkDataBytes, members, opts);
    pool.labelSequence = newest.sequence;
    // A member missing now misses every write from here on: record it as failed,
    // so that its device, if it comes back, is not read (replace and rebuild it).
    const missing = members.filter((m) => !m.device && !m.failed);
    for (const m of missing) m.failed = true;
    if (missing.length > 0) await pool.writeLabels();
    await pool.scanHeaders();
    await pool.replayJournal();
    pool.capacity();
    return pool;
  }

  private chunkOffset(m: Member, chunkIndex: number): number {
    return m.label!.firstChunkOffset + chunkIndex * (RECORD_BYTES + this.chunkDataBytes);
  }

  /** Reads every chunk header of every present member and rebuilds containers and the extent map. */
  private async scanHeaders(): Promise<void> {
    // Per container: the newest record, and every chunk holding a header of it
    // (any generation) at the position it has in that header.
    const seen = new Map<number, { rec: ContainerRecord; holders: Set<string> }>();
    const buf = Buffer.alloc(RECORD_BYTES);
    for (const m of this.members) {
      if (!m.device || !m.label) continue;
      for (let c = 0; c < m.label.chunkCount; c++) {
        await m.device.read(buf, this.chunkOffset(m, c));
        const rec = decodeContainer(buf);
        if (typeof rec === 'string') {
          // Not a container's: a chunk that once held data (a freed marker, a torn or
          // foreign header) must be zeroed before it is used again.
          if (!isZero(buf)) m.dirty.add(c);
          continue;
        }
        const pos = rec.members.findIndex((x) => x.memberUuid === m.uuid && x.chunkIndex === c);
        if (pos < 0) {
          m.dirty.add(c); // a header copied elsewhere: not this chunk's
          continue;
        }
        const s = seen.get(rec.containerId) ?? { rec, holders: new Set<string>() };
        if (rec.generation > s.rec.generation) s.rec = rec;
        s.holders.add(`${m.uuid}:${c}:${pos}`);
        seen.set(rec.containerId, s);
      }
    }
    const byUuid = new Map(this.members.filter((m) => m.uuid).map((m) => [m.uuid, m]));
    /** Chunks to give back: `freed` held data (marked dirty), the others never did. */
    const release: { positions: Position[]; freed: boolean }[] = [];
    const candidates: { rec: ContainerRecord; positions: Position[]; readable: boolean }[] = [];
    for (const { rec, holders } of seen.values()) {
      this.nextContainerId = Math.max(this.nextContainerId, rec.containerId + 1);
      // A chunk with an older generation's header at the same position is still
      // this container's (a rebuild switch adds chunks, it does not move the
      // others); a chunk with no header of it at all is stale.
      const positions: Position[] = rec.members.map((x, i) => {
        const member = byUuid.get(x.memberUuid) ?? null;
        // A chunk index past the member's chunks is never trusted (the header's crc was good, its content is not).
        const outside = member?.label ? x.chunkIndex >= member.label.chunkCount : false;
        return { member: outside ? null : member, chunkIndex: x.chunkIndex, stale: outside || !holders.has(`${x.memberUuid}:${x.chunkIndex}:${i}`) };
      });
      // Data goes into a new container only after its header is durable on every
      // placed chunk: a first-generation container with a chunk of an in-service
      // member lacking it was cut short at creation and never held data. A later
      // generation always holds data: it is kept, its missing chunks stale.
      if (rec.generation === 1 && positions.some((p) => p.member && p.member.device && !p.member.failed && p.stale)) {
        release.push({ positions, freed: false });
        continue;
      }
      // A chunk holding an older header at a position the newest record gives to
      // another chunk was replaced (a rebuild or drain switch cut short before
      // the old chunk was released): free it.
      for (const h of holders) {
        const [uuid, chunk, pos] = h.split(':');
        const now = rec.members[Number(pos)];
        if (now && now.memberUuid === uuid && now.chunkIndex === Number(chunk)) continue;
        const member = byUuid.get(uuid);
        if (member) release.push({ positions: [{ member, chunkIndex: Number(chunk), stale: false }], freed: true });
      }
      const lost = positions.filter((p) => !this.available(p)).length;
      candidates.push({ rec, positions, readable: lost <= rec.parityCount });
    }
    // Claims: readable containers first, newest first within each group. Where
    // two claim an extent (a widen cut short between the new container's claim
    // and the old one's release), the newer holds the complete copy and every
    // later write — unless it cannot be read (torn headers), then the older wins.
    candidates.sort((a, b) => Number(b.readable) - Number(a.readable) || b.rec.containerId - a.rec.containerId);
    for (const { rec, positions } of candidates) {
      if (this.addContainer(rec, positions) === 0) {
        // Owns nothing (all moved by a widen, or a widen's target that never got an extent): free it.
        this.containers.delete(rec.containerId);
        release.push({ positions, freed: true });
      }
    }
    // In use: exactly the chunks that hold the header of a container kept.
    for (const m of this.members) m.usedChunks.clear();
    for (const c of this.containers.values()) for (const p of c.positions) if (p.member && !p.stale) p.member.usedChunks.add(p.chunkIndex);
    let wrote = false;
    for (const { positions, freed } of release) {
      for (const p of positions) {
        // Only a chunk that holds this header is this container's to give back.
        if (p.stale || !p.member?.device || p.member.failed || p.member.usedChunks.has(p.chunkIndex)) continue;
        await p.member.device.write(freed ? FREED_HEADER : ZERO_HEADER, this.chunkOffset(p.member, p.chunkIndex));
        if (freed) p.member.dirty.add(p.chunkIndex);
        wrote = true;
      }
    }
    if (wrote) await Promise.all(this.usableDevices().map((d) => d.flush()));
  }

  private usableDevices(): BlockDevice[] {
    return this.members.filter((m) => m.device && !m.failed).map((m) => m.device!);
  }

  /** m + 1 usable members (lowest indexes) hold the stripe journal's records. */
  private journalDevices(): BlockDevice[] {
    return this.usableDevices().slice(0, parityCountOf(this.params.protection) + 1);
  }

  /** Replays what the journal holds past its checkpoint, makes it durable, and starts the journal after it. */
  private async replayJournal(): Promise<void> {
    const deps = { poolUuid: this.poolUuid, areaOffset: JOURNAL_AREA_OFFSET, areaBytes: this.params.journalBytes };
    const present = this.members.filter((m) => m.device).map((m) => m.device!);
    const r = await recoverJournal(present, deps, (id) => {
      const c = this.containers.get(id);
      return c ? c.positions.length : null;
    });
    let replayed = 0;
    for (const u of r.updates) {
      const c = this.containers.get(u.containerId);
      // Applied to the current layout even across a rebuild's generation change:
      // the record holds the row's contents by role, whatever chunk holds a role now.
      if (!c) continue;
      // The record's crc is good, but its place is checked against the container
      // before anything is written there.
      const rows = this.chunkDataBytes / c.shape.stripBytes;
      if (u.row >= rows || u.stripOffset + u.lengthBytes > c.shape.stripBytes || u.byRole.length !== c.positions.length) {
        this.unreplayable++;
        continue;
      }
      try {
        await this.writeInPlace(c, u.row, u.stripOffset, u.byRole);
        replayed++;
      } catch (err) {
        // A container that lost more chunks than its parity cannot take the record;
        // the rest of the pool still opens (reads of that container fail).
        if (!(err instanceof TesseraError) || err.code !== 'ERR_DEVICE_IO') throw err;
        this.unreplayable++;
      }
    }
    this.replayed = replayed;
    const devices = this.usableDevices();
    await Promise.all(devices.map((d) => d.flush()));
    await writeJournalSuperblocks(devices, deps, { sequence: r.position.sbSequence + 1, poolUuid: this.poolUuid, checkpointSeq: r.lastSeq, checkpointPos: r.position.head });
    this.journal = new StripeJournal(
      { ...deps, journalDevices: () => this.journalDevices(), allDevices: () => this.usableDevices() },
      { nextSeq: r.lastSeq + 1, head: r.position.head, sbSequence: r.position.sbSequence + 1 },
    );
  }

  /** Row updates replayed from the journal at open (tests, logs). */
  replayed = 0;
  /** Journal records that could not be replayed (out of the container's bounds, or the container lost beyond its parity). */
  unreplayable = 0;

  get journalStats(): { records: number; batches: number; checkpoints: number } {
    return this.journal.stats;
  }

  /** Adds a container found at open; resolves with the number of extents it got. */
  private addContainer(rec: ContainerRecord, positions: Position[]): number {
    const c: Container = { rec, positions, shape: { dataCount: rec.dataCount, parityCount: rec.parityCount, stripBytes: rec.stripBytes, chunkDataBytes: this.chunkDataBytes } };
    this.containers.set(rec.containerId, c);
    let won = 0;
    for (let i = 0; i < rec.dataCount; i++) {
      const e = rec.firstExtent + i;
      // Only the extents the container owns; an extent claimed by a newer container stays there.
      if ((rec.ownedMask >>> i) & 1 && !this.extents.has(e)) {
        this.extents.set(e, { c, index: i });
        won++;
      }
    }
    return won;
  }

  // ---------------------------------------------------------------- status

  /** Members, and containers by how many positions they lack (for `pool info` and rebuild). */
  info(): { members: (MemberState & { present: boolean; known: boolean })[]; containers: number; degraded: number[]; usedExtents: number } {
    const degraded = [0, 0, 0];
    for (const c of this.containers.values()) {
      const lost = c.positions.filter((p) => !this.available(p)).length;
      if (lost > 0) degraded[Math.min(lost, 2)]++;
    }
    return { members: this.members.map((m) => ({ ...memberStateOf(m), present: m.device !== null, known: m.uuid !== '' })), containers: this.containers.size, degraded, usedExtents: this.extents.size };
  }

  /**
   * Takes a member out of service (a failed or pulled device): IO continues
   * degraded, and the other members' labels record it, so that a reopen with
   * the device present does not read its stale chunks.
   */
  async failMember(index: number): Promise<void> {
    if (!(Number.isInteger(index) && index >= 0 && index < this.members.length)) throw new TesseraError('ERR_NOT_FOUND', `pool ${this.name} has no member ${index}`);
    this.members[index].failed = true;
    await this.writeLabels();
    this.capacity();
  }

  /**
   * Rewrites every usable member's label (next sequence) with the current
   * member count and failed set. One at a time: two overlapping rewrites could
   * otherwise finish out of order and leave an older state under a newer
   * sequence.
   */
  private writeLabels(): Promise<void> {
    const run = this.labelWrites.then(() => this.writeLabelsNow());
    this.labelWrites = run.catch(() => undefined);
    return run;
  }

  private async writeLabelsNow(): Promise<void> {
    const failedMembers = this.members.filter((m) => m.failed).map((m) => m.index);
    const sequence = ++this.labelSequence;
    await Promise.all(
      this.members.map(async (m) => {
        if (!m.device || m.failed || !m.label) return;
        const label: MemberLabel = { ...m.label, pool: { ...this.params }, sequence, failedMembers, bytesWritten: m.label.bytesWritten + m.bytesWritten };
        const b = Buffer.alloc(RECORD_BYTES);
        encodeLabel(label, b);
        for (const at of LABEL_COPY_OFFSETS) {
          await m.device.write(b, at);
          await m.device.flush();
        }
        m.label = label;
        m.bytesWritten = 0;
      }),
    );
  }

  private available(p: Position): boolean {
    return p.member !== null && p.member.device !== null && !p.member.failed && !p.stale;
  }

  // ---------------------------------------------------------------- IO

  async read(buf: Uint8Array, offsetBytes: number): Promise<void> {
    await this.userIo('read', buf.length, offsetBytes, () =>
      this.forExtents(offsetBytes, buf.length, async (ext, inExt, len, at) => {
        const e = this.extents.get(ext);
        const out = buf.subarray(at, at + len);
        if (!e) {
          out.fill(0);
          return;
        }
        for (const p of pieces(e.c.shape, e.index * this.chunkDataBytes + inExt, len)) await this.readPiece(e.c, p, out.subarray(p.bufOffset, p.bufOffset + p.lengthBytes));
      }),
    );
  }

  async write(buf: Uint8Array, offsetBytes: number): Promise<void> {
    await this.userIo('write', buf.length, offsetBytes, () =>
      this.forExtents(offsetBytes, buf.length, async (ext, inExt, len, at) => {
        const e = this.extents.get(ext) ?? (await this.allocateFor(ext));
        await this.writeRange(e.c, e.index * this.chunkDataBytes + inExt, buf.subarray(at, at + len));
      }),
    );
  }

  /** A user read or write: checked, counted in flight (rebuild pacing) and in the stats. */
  private async userIo(kind: 'read' | 'write', lengthBytes: number, offsetBytes: number, fn: () => Promise<void>): Promise<void> {
    this.checkIo(offsetBytes, lengthBytes);
    this.lastUserIoMs = this.now();
    const t0 = performance.now();
    try {
      await this.tracked(offsetBytes, lengthBytes, async () => {
        this.userInFlight++;
        try {
          await fn();
        } finally {
          this.userInFlight--;
        }
      });
      this.stats[kind].record(lengthBytes, (performance.now() - t0) * 1000);
    } catch (err) {
      this.stats[kind].recordError();
      throw err;
    }
  }

  /**
   * IO on the pool's address space: waits while an extent it touches is being
   * moved (widen), then runs counted as in flight with its extent range, so
   * that a move or a switch can wait for the IO that may still use the old place.
   */
  private async tracked<T>(offsetBytes: number, lengthBytes: number, fn: () => Promise<T>): Promise<T> {
    const first = Math.floor(offsetBytes / this.chunkDataBytes);
    const last = Math.floor((offsetBytes + Math.max(1, lengthBytes) - 1) / this.chunkDataBytes);
    // Gates exist only while a widen moves an extent: the common case skips the scan.
    while (this.gates.size > 0) {
      const waits: Promise<void>[] = [];
      for (const [e, g] of this.gates) if (e >= first && e <= last) waits.push(g);
      if (waits.length === 0) break;
      await Promise.all(waits);
    }
    const run = fn();
    this.inflight.set(run, { first, last });
    try {
      return await run;
    } finally {
      this.inflight.delete(run);
    }
  }

  /** IO in progress with the extents it touches: a chunk given up by a switch is freed only once the IO that may still use it is done. */
  private readonly inflight = new Map<Promise<unknown>, { first: number; last: number }>();
  /** Extents being moved: IO on them waits for these. */
  private readonly gates = new Map<number, Promise<void>>();

  /** Waits for the IO in flight now that touches extent `e` (every extent when undefined). */
  private async drainInflight(e?: number): Promise<void> {
    const waits = [...this.inflight].filter(([, r]) => e === undefined || (r.first <= e && e <= r.last)).map(([pr]) => pr);
    await Promise.allSettled(waits); // their failures are their callers' to report
  }

  async flush(): Promise<void> {
    if (this.closed) throw new TesseraError('ERR_CLOSED', `pool ${this.name} is closed`);
    // A member whose flush fails leaves the pool (its writes may be lost); the
    // flush fails only when that costs some container more than its parity.
    const inService = this.members.filter((m) => m.device && !m.failed);
    await Promise.all(inService.map((m) => this.flushOrFail(m)));
    if (inService.every((m) => !m.failed)) return;
    for (const c of this.containers.values()) {
      const lost = c.positions.filter((p) => !this.available(p)).length;
      if (lost > c.shape.parityCount) throw new TesseraError('ERR_DEVICE_FLUSH', `pool ${this.name}: container ${c.rec.containerId} lost ${lost} of ${c.positions.length} chunks`);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.members.filter((m) => m.device).map((m) => m.device!.close()));
  }

  private checkIo(offsetBytes: number, lengthBytes: number): void {
    if (this.closed) throw new TesseraError('ERR_CLOSED', `pool ${this.name} is closed`);
    if (offsetBytes % SECTOR_BYTES !== 0 || lengthBytes % SECTOR_BYTES !== 0 || offsetBytes < 0 || offsetBytes + lengthBytes > this.sizeBytes) {
      throw new TesseraError('ERR_RANGE', `pool IO ${offsetBytes}+${lengthBytes} misaligned or beyond ${this.sizeBytes}`);
    }
  }

  /** The range cut at extent boundaries: extent, offset in it, length, offset in the caller's buffer. */
  private extentSpans(offsetBytes: number, lengthBytes: number): { ext: number; inExt: number; len: number; at: number }[] {
    const out: { ext: number; inExt: number; len: number; at: number }[] = [];
    for (let pos = offsetBytes, end = offsetBytes + lengthBytes; pos < end; ) {
      const ext = Math.floor(pos / this.chunkDataBytes);
      const inExt = pos - ext * this.chunkDataBytes;
      const len = Math.min(this.chunkDataBytes - inExt, end - pos);
      out.push({ ext, inExt, len, at: pos - offsetBytes });
      pos += len;
    }
    return out;
  }

  private async forExtents(offsetBytes: number, lengthBytes: number, fn: (extent: number, inExtent: number, len: number, bufOffset: number) => Promise<void>): Promise<void> {
    for (const s of this.extentSpans(offsetBytes, lengthBytes)) await fn(s.ext, s.inExt, s.len, s.at);
  }

  /** Allocates the container for an unmapped extent (serialized: one allocation at a time). */
  private allocateFor(ext: number): Promise<{ c: Container; index: number }> {
    const run = this.allocating.then(async () => {
      const existing = this.extents.get(ext);
      if (existing) return existing;
      const k = this.params.dataCount;
      const m = parityCountOf(this.params.protection);
      const states = this.members.map(memberStateOf);
      this.sacrificial = chooseSacrificial(states, this.sacrificial);
      const a = allocateContainer(states, { dataCount: k, parityCount: m }, this.opts.rng, { sacrificial: this.sacrificial, allowDegraded: true });
      // The run of extents: aligned to the container's width, clipped by mapped
      // extents and the end of the address space, always including ext.
      let first = ext - (ext % a.dataCount);
      for (let e = ext - 1; e >= first; e--) if (this.extents.has(e)) first = e + 1;
      await this.placeContainer(a, first);
      return this.extents.get(ext)!;
    });
    this.allocating = run.catch(() => undefined);
    return run;
  }

  /**
   * Creates a container on the allocation's members for the extents from
   * `first` on that nobody owns yet (and that exist): chunks reserved, zeroed if
   * needed, headers durable on every placed chunk, then mapped. Called in the
   * allocation chain.
   */
  private async placeContainer(a: { members: number[]; dataCount: number; parityCount: number }, first: number): Promise<Container> {
    {
      const extentCount = this.params.logicalSizeBytes / this.chunkDataBytes;
      const positions: Position[] = a.members.map((mi) => {
        if (mi < 0) return { member: null, chunkIndex: 0, stale: true }; // unplaced: rebuild places it
        const member = this.members[mi];
        let chunk = 0;
        while (member.usedChunks.has(chunk)) chunk++;
        member.usedChunks.add(chunk);
        return { member, chunkIndex: chunk, stale: false };
      });
      let ownedMask = 0;
      for (let i = 0; i < a.dataCount; i++) if (first + i < extentCount && !this.extents.has(first + i)) ownedMask |= 1 << i;
      const rec: ContainerRecord = {
        containerId: this.nextContainerId++,
        generation: 1,
        firstExtent: first,
        ownedMask: ownedMask >>> 0,
        protection: this.params.protection,
        dataCount: a.dataCount,
        parityCount: a.parityCount,
        stripBytes: this.params.stripBytes,
        members: positions.map((p) => (p.member ? { memberUuid: p.member.uuid, chunkIndex: p.chunkIndex } : { memberUuid: UNPLACED_UUID, chunkIndex: 0 })),
      };
      // Extents of the run that are mapped already (after ext) or past the end stay with their owners.
      const c: Container = { rec, positions, shape: { dataCount: rec.dataCount, parityCount: rec.parityCount, stripBytes: rec.stripBytes, chunkDataBytes: this.chunkDataBytes } };
      const header = Buffer.alloc(RECORD_BYTES);
      encodeContainer(rec, header);
      // Chunks that held data before (freed ones, a reused device's) are zeroed even on a dataZeroed pool.
      await Promise.all(positions.map((p) => (!this.params.dataZeroed || p.member?.dirty.has(p.chunkIndex) ? this.zeroChunk(p) : undefined)));
      for (const p of positions) p.member?.dirty.delete(p.chunkIndex);
      await Promise.all(positions.map((p) => (p.member ? this.writeMember(p, this.chunkOffset(p.member, p.chunkIndex), header) : undefined)));
      // The headers are durable before any data goes in (open relies on it).
      await Promise.all(positions.map((p) => (p.member && this.available(p) ? this.flushOrFail(p.member) : undefined)));
      this.containers.set(rec.containerId, c);
      for (let i = 0; i < rec.dataCount; i++) if ((rec.ownedMask >>> i) & 1) this.extents.set(first + i, { c, index: i });
      this.capacity();
      return c;
    }
  }

  private async zeroChunk(p: Position): Promise<void> {
    if (!p.member || !this.available(p)) return;
    const step = Math.min(this.chunkDataBytes, 1024 * 1024);
    const zero = Buffer.alloc(step);
    for (let off = 0; off < this.chunkDataBytes; off += step) await this.writeMember(p, this.dataOffset(p, off), zero);
  }

  private dataOffset(p: Position, chunkOffsetBytes: number): number {
    return this.chunkOffset(p.member!, p.chunkIndex) + RECORD_BYTES + chunkOffsetBytes;
  }

  /** A write to a member; a failing member is taken out of service (the IO goes on degraded if the row allows). */
  /**
   * A write to a member. A member whose writes fail (ERR_DEVICE_IO, or another
   * error that persists over WRITE_RETRIES tries, such as a partition's ERR_LIMIT)
   * is taken out of service, and that is recorded in the labels before the IO
   * goes on degraded: its chunks now miss a write and must never be read again.
   */
  private async writeMember(p: Position, offsetBytes: number, data: Uint8Array): Promise<void> {
    if (!this.available(p)) return;
    for (let attempt = 0; ; attempt++) {
      try {
        await p.member!.device!.write(data, offsetBytes);
        p.member!.bytesWritten += data.length;
        return;
      } catch (err) {
        if (!(err instanceof TesseraError) || err.code === 'ERR_CLOSED') throw err;
        if (err.code !== 'ERR_DEVICE_IO' && attempt < WRITE_RETRIES) {
          await this.sleep(10 * (attempt + 1));
          continue;
        }
        if (!p.member!.failed) {
          p.member!.failed = true;
          await this.persistFailures();
        }
        return;
      }
    }
  }

  private labelWrites: Promise<void> = Promise.resolve();

  /** Records the failed members in the labels; calls are serialized. */
  private persistFailures(): Promise<void> {
    return this.writeLabels();
  }

  private async withRow<T>(c: Container, row: number, fn: () => Promise<T>): Promise<T> {
    const key = `${c.rec.containerId}:${row}`;
    const prev = this.rowLocks.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const chained = prev.then(() => mine);
    this.rowLocks.set(key, chained);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.rowLocks.get(key) === chained) this.rowLocks.delete(key);
    }
  }

  private async readPiece(c: Container, p: Piece, out: Uint8Array): Promise<void> {
    const pos = c.positions[p.position];
    if (this.available(pos)) {
      try {
        await pos.member!.device!.read(out, this.dataOffset(pos, p.chunkOffset));
        return;
      } catch (err) {
        if (!(err instanceof TesseraError) || err.code !== 'ERR_DEVICE_IO') throw err;
        // Media error: reconstruct, then write the repaired range back below.
      }
    }
    await this.withRow(c, p.row, async () => {
      const strips = await this.readRowRange(c, p.row, p.stripOffset, p.lengthBytes, [p.position]);
      out.set(strips[p.dataIndex]);
      // Repair under the same row lock and through the journal, so that a write
      // to this row cannot land between the reconstruction and the write-back.
      if (this.available(pos)) await this.writeRoles(c, p.row, p.stripOffset, strips.map((s, role) => (role === p.dataIndex ? s : null)));
    });
  }

  /**
   * The range [stripOffset, +len) of every strip of a row, by role (data 0..k-1,
   * then parity), reconstructing the roles whose position is unavailable, fails
   * to read, or is in `distrust`. Caller holds the row lock.
   */
  private async readRowRange(c: Container, row: number, stripOffset: number, len: number, distrust: number[] = []): Promise<Uint8Array[]> {
    const { dataCount: k, parityCount: m } = c.shape;
    const width = k + m;
    const blocks = Array.from({ length: width }, () => new Uint8Array(len));
    const lost: number[] = [];
    await Promise.all(
      blocks.map(async (b, role) => {
        const position = positionOf(c.shape, role, row);
        const pos = c.positions[position];
        if (!this.available(pos) || distrust.includes(position)) {
          lost.push(role);
          return;
        }
        try {
          await pos.member!.device!.read(b, this.dataOffset(pos, row * c.shape.stripBytes + stripOffset));
        } catch (err) {
          if (!(err instanceof TesseraError) || err.code !== 'ERR_DEVICE_IO') throw err;
          lost.push(role);
        }
      }),
    );
    if (lost.length > 0) {
      if (m === 0) throw new TesseraError('ERR_DEVICE_IO', `container ${c.rec.containerId} has no redundancy left for row ${row}`);
      if (k === 1) {
        // Mirror: any surviving copy is the data.
        const good = blocks.findIndex((_, role) => !lost.includes(role));
        if (good < 0) throw new TesseraError('ERR_DEVICE_IO', `all ${width} copies of container ${c.rec.containerId} row ${row} are unavailable`);
        for (const r of lost) blocks[r].set(blocks[good]);
      } else {
        this.codec.reconstruct(blocks, k, m, lost); // ERR_DEVICE_IO when more than m are lost
      }
    }
    return blocks;
  }

  private async writeRange(c: Container, offsetBytes: number, data: Uint8Array): Promise<void> {
    const ps = pieces(c.shape, offsetBytes, data.length);
    const rb = rowBytes(c.shape);
    let i = 0;
    while (i < ps.length) {
      // Group the pieces of one row.
      let j = i;
      while (j < ps.length && ps[j].row === ps[i].row) j++;
      const row = ps[i].row;
      const rowPieces = ps.slice(i, j);
      const covered = rowPieces.reduce((a, p) => a + p.lengthBytes, 0);
      await this.withRow(c, row, () => (covered === rb ? this.writeFullRow(c, row, data, rowPieces) : this.writePartialRow(c, row, data, rowPieces)));
      i = j;
    }
  }

  private async writeFullRow(c: Container, row: number, data: Uint8Array, rowPieces: Piece[]): Promise<void> {
    const { dataCount: k, parityCount: m, stripBytes } = c.shape;
    const strips = rowPieces.map((p) => data.subarray(p.bufOffset, p.bufOffset + p.lengthBytes));
    const parity = Array.from({ length: m }, () => new Uint8Array(stripBytes));
    if (k === 1) for (const p of parity) p.set(strips[0]);
    else this.codec.encodeParity(strips, parity[0], m === 2 ? parity[1] : null);
    await this.writeRoles(c, row, 0, [...strips, ...parity]);
  }

  /**
   * Writes each role's buffer at stripOffset of its strip in the row: first to
   * the stripe journal (durable), then in place.
   */
  private async writeRoles(c: Container, row: number, stripOffset: number, byRole: (Uint8Array | null)[]): Promise<void> {
    const len = byRole.find((b) => b !== null)?.length ?? 0;
    const seq = await this.journal.log({ containerId: c.rec.containerId, generation: c.rec.generation, row, stripOffset, lengthBytes: len, byRole });
    try {
      await this.writeInPlace(c, row, stripOffset, byRole);
    } finally {
      this.journal.applied(seq);
    }
  }

  private async writeInPlace(c: Container, row: number, stripOffset: number, byRole: (Uint8Array | null)[]): Promise<void> {
    // Settle every member write before returning (or failing): none may land after
    // the record is retired.
    const settled = await Promise.allSettled(
      byRole.map((b, role) => {
        const position = positionOf(c.shape, role, row);
        // A row a rebuild has copied already also goes to the new chunk, and
        // still to the old one while it is readable (a drained member): reads
        // and parity deltas use the old chunk until the switch.
        const target = c.rebuild && c.rebuild.copied[row] === 1 ? c.rebuild.targets.get(position) : undefined;
        if (!b) return undefined;
        const at = row * c.shape.stripBytes + stripOffset;
        const writes = [target, c.positions[position]].filter((pos): pos is Position => pos !== undefined && this.available(pos));
        return Promise.all(writes.map((pos) => this.writeMember(pos, this.dataOffset(pos, at), b)));
      }),
    );
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const lost = c.positions.filter((p) => !this.available(p)).length;
    if (lost > c.shape.parityCount) throw new TesseraError('ERR_DEVICE_IO', `container ${c.rec.containerId} lost ${lost} of ${c.positions.length} chunks`);
  }

  private async writePartialRow(c: Container, row: number, data: Uint8Array, rowPieces: Piece[]): Promise<void> {
    const { dataCount: k, parityCount: m } = c.shape;
    for (const p of rowPieces) {
      const newData = data.subarray(p.bufOffset, p.bufOffset + p.lengthBytes);
      if (k === 1) {
        // Mirror: every copy gets the data.
        await this.writeRoles(c, row, p.stripOffset, Array.from({ length: 1 + m }, () => newData));
        continue;
      }
      const rolePositions = Array.from({ length: k + m }, (_, role) => positionOf(c.shape, role, row));
      const healthy = rolePositions.every((position) => this.available(c.positions[position]));
      if (healthy) {
        // Delta: read old data and parity of the range, fold the change into the parity.
        const old = new Uint8Array(p.lengthBytes);
        const parity = Array.from({ length: m }, () => new Uint8Array(p.lengthBytes));
        const offsetOf = (role: number) => {
          const pos = c.positions[rolePositions[role]];
          return { pos, at: this.dataOffset(pos, row * c.shape.stripBytes + p.stripOffset) };
        };
        try {
          await Promise.all([old, ...parity].map((b, i) => {
            const { pos, at } = offsetOf(i === 0 ? p.dataIndex : k + i - 1);
            return pos.member!.device!.read(b, at);
          }));
          applyParityDelta(old, newData, p.dataIndex, parity[0], m === 2 ? parity[1] : null);
          const byRole: (Uint8Array | null)[] = new Array<Uint8Array | null>(k + m).fill(null);
          byRole[p.dataIndex] = newData;
          parity.forEach((b, i) => (byRole[k + i] = b));
          await this.writeRoles(c, row, p.stripOffset, byRole);
          continue;
        } catch (err) {
          if (!(err instanceof TesseraError) || err.code !== 'ERR_DEVICE_IO') throw err;
          // A read failed: fall through to reconstruct-write, which tolerates it.
        }
      }
      // Reconstruct-write: the row's range from every strip (rebuilding what is
      // missing), the new data in, parity recomputed, the survivors written.
      const blocks = await this.readRowRange(c, row, p.stripOffset, p.lengthBytes);
      blocks[p.dataIndex].set(newData);
      this.codec.encodeParity(blocks.slice(0, k), blocks[k], m === 2 ? blocks[k + 1] : null);
      const byRole = blocks.map((b, role) => (role === p.dataIndex || role >= k ? b : null));
      await this.writeRoles(c, row, p.stripOffset, byRole);
    }
  }

  private lastUserIoMs = -Infinity;
  /** Bytes a running rebuild has scheduled on each member (reads and writes): where new chunks go. */
  private readonly rebuildLoad = new Map<number, number>();
  private userInFlight = 0;
  private progress: RebuildProgress | null = null;

  private now(): number {
    return (this.opts.nowMs ?? (() => performance.now()))();
  }

  private sleep(ms: number): Promise<void> {
    return (this.opts.sleep ?? ((t: number) => new Promise<void>((r) => (t <= 0 ? setImmediate(r) : setTimeout(r, t)))))(ms);
  }

  private stopRequested = false;

  /** Makes a running rebuild (or drain) stop soon with ERR_CLOSED, leaving no container mid-copy (shutdown). */
  stopRebuild(): void {
    if (this.progress?.running) this.stopRequested = true;
  }

  /** The running or last rebuild's progress (for `pool info` and `pool rebuild --wait`). */
  rebuildProgress(): RebuildProgress | null {
    return this.progress ? { ...this.progress } : null;
  }

  /** Health of every container, for planning. */
  private health(): ContainerHealth[] {
    return [...this.containers.values()].map((c) => {
      const lost = c.positions.filter((p) => !this.available(p)).length;
      const moving = c.positions.filter((p) => this.moving(p)).length;
      return { containerId: c.rec.containerId, lost, moving, parityCount: c.shape.parityCount, bytes: (lost + moving) * this.chunkDataBytes };
    });
  }

  /** A readable chunk on a member being removed: a rebuild moves it. */
  private moving(p: Position): boolean {
    return this.available(p) && p.member!.draining;
  }

  /** Throws what removeMember(index) would refuse: no such member, a job running, too few devices left. */
  checkRemovable(index: number): void {
    const m = this.members[index];
    if (!m) throw new TesseraError('ERR_NOT_FOUND', `pool ${this.name} has no member ${index}`);
    if (this.progress?.running) throw new TesseraError('ERR_BUSY', `pool ${this.name} is rebuilding; remove the device when it is done`);
    if (m.failed || !m.device) return;
    const others = this.members.filter((x) => x !== m && x.device && !x.failed).length;
    if (others < 1 + parityCountOf(this.params.protection)) {
      throw new TesseraError('ERR_INVALID', `pool ${this.name} would keep ${others} device(s); ${this.params.protection} needs at least ${1 + parityCountOf(this.params.protection)}`);
    }
  }

  /**
   * Gives up the device of a member out of service (failed or removed), so
   * that the caller can close it or use it elsewhere; close() no longer
   * touches it. Returns null when the member has no device.
   */
  detachMember(index: number): BlockDevice | null {
    const m = this.members[index];
    if (!m) throw new TesseraError('ERR_NOT_FOUND', `pool ${this.name} has no member ${index}`);
    if (!m.failed) throw new TesseraError('ERR_BUSY', `member ${index} of pool ${this.name} is in service; fail or remove it first`);
    const d = m.device;
    m.device = null;
    return d;
  }

  /** Containers narrower than the pool's stripe (allocated while too few members had room), healthy ones only. */
  narrowedContainers(): number {
    let n = 0;
    for (const c of this.containers.values()) if (c.shape.dataCount < this.params.dataCount && c.positions.every((p) => this.available(p))) n++;
    return n;
  }

  /** Shapes of the containers, for tests and `pool info`: "k+m" -> count. */
  containerShapes(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const c of this.containers.values()) {
      const key = `${c.shape.dataCount}+${c.shape.parityCount}`;
      out[key] = (out[key] ?? 0) + 1;
    }
    return out;
  }

  /**
   * Widens narrowed containers (SPEC ENG7 "variable stripe width"): once
   * enough members have room, the extents of narrow containers move, run by
   * run (k consecutive extents, k the pool's stripe), into new full-width
   * containers, and a narrow container whose extents have all moved is freed.
   * Less parity per byte stored: a 2+1 container keeps 1 parity chunk per 2
   * data chunks, a 4+1 one per 4.
   *
   * One extent at a time: user IO on it waits (the copy of one chunk's worth),
   * IO on every other extent goes on. The new container first owns only the
   * extents nobody owned (they read as zeros in fresh chunks); an extent is
   * copied, then claimed in a new header generation (durable), then mapped.
   * At open the newest container's claim wins and a container left owning
   * nothing is freed, so a crash at any point leaves every extent with the
   * old copy or the complete new one. Runs as a job (like a rebuild: not both).
   */
  async widen(o: RebuildOptions = {}): Promise<RebuildProgress> {
    if (this.progress?.running) throw new TesseraError('ERR_BUSY', `pool ${this.name} is running a rebuild; widen when it is done`);
    const k = this.params.dataCount;
    const isNarrow = (c: Container): boolean => c.shape.dataCount < k && c.positions.every((p) => this.available(p));
    const runs = new Map<number, number[]>();
    const owned = new Map<Container, number[]>();
    for (const [e, { c }] of this.extents) {
      if (!isNarrow(c)) continue;
      runs.set(Math.floor(e / k), [...(runs.get(Math.floor(e / k)) ?? []), e]);
      owned.set(c, [...(owned.get(c) ?? []), e]);
    }
    // Which runs: those whose k extents are all held by narrow containers (a
    // full-width container for a partly used run would hold more chunks than
    // it frees), and those where a widen cut short left a full-width container
    // (already paid for). Only if the chunks freed cover the new containers:
    // widening must never make a pool use more chunks.
    const resumable = (run: number): boolean => [...this.containers.values()].some((c) => c.rec.firstExtent === run * k && c.shape.dataCount === k && !isNarrow(c));
    const chosen = new Set([...runs.entries()].filter(([run, es]) => es.length === k || resumable(run)).map(([run]) => run));
    const freed = [...owned].filter(([, es]) => es.every((e) => chosen.has(Math.floor(e / k)))).reduce((a, [c]) => a + c.positions.length, 0);
    const cost = [...chosen].filter((run) => !resumable(run)).length * (k + parityCountOf(this.params.protection));
    if (freed < cost) for (const run of [...chosen]) if (!resumable(run)) chosen.delete(run);
    for (const run of [...runs.keys()]) if (!chosen.has(run)) runs.delete(run);
    const order = [...runs.keys()].sort((a, b) => a - b);
    const p: RebuildProgress = {
      running: true, containersTotal: order.length, containersDone: 0, unrecoverable: 0,
      bytesTotal: [...runs.values()].reduce((a, es) => a + es.length * this.chunkDataBytes, 0), bytesDone: 0,
      startedAtMs: this.now(), etaMs: null, noRoom: 0, last: null,
    };
    this.progress = p;
    this.stopRequested = false;
    const busyShare = Math.min(1, Math.max(0.01, o.busyShare ?? 0.3));
    try {
      for (const run of order) {
        // The map may have changed since the plan: move only what narrow containers still own.
        const moving = (runs.get(run) ?? []).filter((e) => { const x = this.extents.get(e); return x !== undefined && isNarrow(x.c); });
        // A full-width container of this run already there (a widen cut short) takes the rest.
        const owners = new Set(Array.from({ length: k }, (_, i) => this.extents.get(run * k + i)?.c).filter((c): c is Container => c !== undefined && !isNarrow(c)));
        const existing = [...owners][0];
        const reusable = owners.size === 1 && existing.rec.firstExtent === run * k && existing.shape.dataCount === k && existing.positions.every((pos) => this.available(pos));
        if (moving.length === 0 || (owners.size > 0 && !reusable)) {
          p.containersDone++;
          continue;
        }
        const wide = reusable ? existing : await this.createWide(run * k);
        if (!wide) {
          p.noRoom = order.length - p.containersDone;
          break;
        }
        for (const e of moving) {
          if (this.stopRequested) throw new TesseraError('ERR_CLOSED', `widening of pool ${this.name} stopped`);
          // A member failed meanwhile: stop, so that the rebuild runs (data stays where it is redundant).
          if (!wide.positions.every((pos) => this.available(pos))) throw new TesseraError('ERR_DEVICE_IO', `widening of pool ${this.name} stopped: a device of container ${wide.rec.containerId} failed`);
          const still = this.extents.get(e);
          if (!still || !isNarrow(still.c)) continue;
          const t0 = this.now();
          try {
            await this.moveExtent(e, wide);
          } catch (err) {
            if (!(err instanceof TesseraError) || err.code !== 'ERR_CHECKSUM') throw err;
            p.unrecoverable++; // left in its narrow container: scrub and repair it there
            continue;
          }
          p.bytesDone += this.chunkDataBytes;
          const elapsed = this.now() - p.startedAtMs;
          p.etaMs = (elapsed * (p.bytesTotal - p.bytesDone)) / p.bytesDone;
          const spent = this.now() - t0;
          if (this.userInFlight > 0 || this.lastUserIoMs >= t0) await this.sleep((spent * (1 - busyShare)) / busyShare);
          else await this.sleep(0);
        }
        p.containersDone++;
        p.last = { containerId: wide.rec.containerId, lost: 0 };
        o.onProgress?.({ ...p });
        await this.freeEmpty(); // their room serves the next runs
      }
    } finally {
      try {
        await this.freeEmpty();
      } finally {
        p.running = false;
        p.etaMs = 0;
        this.capacity();
      }
    }
    return { ...p };
  }

  /** Frees every container that owns no extent (narrow ones emptied by a widen). */
  private async freeEmpty(): Promise<void> {
    const owners = new Set([...this.extents.values()].map((x) => x.c));
    for (const c of [...this.containers.values()]) if (!owners.has(c)) await this.freeContainer(c);
  }

  /** A full-width container at `first` (owning the unowned extents of its run), or null when too few members have room. */
  private createWide(first: number): Promise<Container | null> {
    const run = this.allocating.then(async () => {
      const k = this.params.dataCount;
      const m = parityCountOf(this.params.protection);
      const states = this.members.map(memberStateOf);
      this.sacrificial = chooseSacrificial(states, this.sacrificial);
      let a;
      try {
        a = allocateContainer(states, { dataCount: k, parityCount: m }, this.opts.rng, { sacrificial: this.sacrificial });
      } catch (err) {
        if (err instanceof TesseraError && err.code === 'ERR_NO_SPACE') return null;
        throw err;
      }
      if (a.dataCount < k) return null;
      return this.placeContainer(a, first);
    });
    this.allocating = run.catch(() => undefined);
    return run;
  }

  /** Copies extent `e` into `wide` (its slot there), claims it in a new header generation, maps it; IO on `e` waits meanwhile. */
  private async moveExtent(e: number, wide: Container): Promise<void> {
    let open!: () => void;
    this.gates.set(e, new Promise<void>((r) => (open = r)));
    try {
      await this.drainInflight(e);
      const src = this.extents.get(e)!;
      const slot = e - wide.rec.firstExtent;
      if (!(slot >= 0 && slot < wide.shape.dataCount && !((wide.rec.ownedMask >>> slot) & 1))) fail(`extent ${e} has no free slot in container ${wide.rec.containerId}`);
      const rb = rowBytes(wide.shape);
      const step = rb * Math.max(1, Math.floor((1024 * 1024) / rb));
      const buf = Buffer.alloc(step);
      for (let off = 0; off < this.chunkDataBytes; off += step) {
        const len = Math.min(step, this.chunkDataBytes - off);
        const out = buf.subarray(0, len);
        await this.readVerified(src.c, src.index * this.chunkDataBytes + off, out);
        await this.writeRange(wide, slot * this.chunkDataBytes + off, out);
      }
      // The copy is durable before the claim, and the claim before the map says so.
      await Promise.all(wide.positions.map((pos) => (this.available(pos) ? this.flushOrFail(pos.member!) : undefined)));
      const rec: ContainerRecord = { ...wide.rec, generation: wide.rec.generation + 1, ownedMask: (wide.rec.ownedMask | (1 << slot)) >>> 0 };
      await this.writeHeaders(wide, rec);
      wide.rec = rec;
      this.extents.set(e, { c: wide, index: slot });
    } finally {
      this.gates.delete(e);
      open();
    }
  }

  /** Flushes a member; one whose flush fails is taken out of service (the pool's redundancy covers it). */
  private async flushOrFail(m: Member): Promise<void> {
    try {
      await m.device!.flush();
    } catch (err) {
      if (!(err instanceof TesseraError) || (err.code !== 'ERR_DEVICE_FLUSH' && err.code !== 'ERR_DEVICE_IO')) throw err;
      if (!m.failed) {
        m.failed = true;
        await this.persistFailures();
      }
    }
  }

  /**
   * Reads a container range whole row by whole row, checking each row's
   * parity: the copy must not turn a bad strip that the parity could still
   * repair into good-looking data with fresh parity. ERR_CHECKSUM on a
   * mismatch (the range stays where it is; a scrub and the engine's repair
   * deal with it there).
   */
  private async readVerified(c: Container, offsetBytes: number, out: Uint8Array): Promise<void> {
    const { dataCount: k, parityCount: m, stripBytes } = c.shape;
    const ps = pieces(c.shape, offsetBytes, out.length);
    for (let i = 0; i < ps.length; ) {
      let j = i;
      while (j < ps.length && ps[j].row === ps[i].row) j++;
      const row = ps[i].row;
      const rowPieces = ps.slice(i, j);
      await this.withRow(c, row, async () => {
        const strips = await this.readRowRange(c, row, 0, stripBytes);
        if (c.positions.every((pos) => this.available(pos)) && !this.rowMatches(strips, k, m, stripBytes)) {
          throw new TesseraError('ERR_CHECKSUM', `container ${c.rec.containerId} row ${row}: parity does not match the data`);
        }
        for (const p of rowPieces) out.set(strips[p.dataIndex].subarray(p.stripOffset, p.stripOffset + p.lengthBytes), p.bufOffset);
      });
      i = j;
    }
  }

  /** Mirror copies equal, or P (and Q) recomputed from the data strips equal the stored ones. */
  private rowMatches(strips: Uint8Array[], k: number, m: number, stripBytes: number): boolean {
    if (k === 1) return strips.slice(1).every((s) => Buffer.from(s).equals(Buffer.from(strips[0])));
    const p = new Uint8Array(stripBytes);
    const q = new Uint8Array(stripBytes);
    this.codec.encodeParity(strips.slice(0, k), p, m === 2 ? q : null);
    return Buffer.from(p).equals(Buffer.from(strips[k])) && (m < 2 || Buffer.from(q).equals(Buffer.from(strips[k + 1])));
  }

  /**
   * Writes `rec` as the header of every available chunk of `c`, one chunk at a
   * time, each durable before the next: a power cut tears at most one header,
   * so the container stays readable with its parity. A member that fails to
   * take it is failed. Throws ERR_DEVICE_IO when more chunks than the parity
   * missed it (the claim cannot be relied on; at open the older claim wins).
   */
  private async writeHeaders(c: Container, rec: ContainerRecord): Promise<void> {
    const header = Buffer.alloc(RECORD_BYTES);
    encodeContainer(rec, header);
    for (const pos of c.positions.filter((p) => this.available(p))) {
      try {
        await this.writeMember(pos, this.chunkOffset(pos.member!, pos.chunkIndex), header);
      } catch (err) {
        if (!(err instanceof TesseraError) || err.code !== 'ERR_DEVICE_IO') throw err;
        continue; // writeMember failed the member
      }
      await this.flushOrFail(pos.member!);
    }
    const lost = c.positions.filter((p) => !this.available(p)).length;
    if (lost > rec.parityCount) throw new TesseraError('ERR_DEVICE_IO', `container ${rec.containerId}: its header reached too few chunks (${lost} of ${c.positions.length} missing)`);
  }

  /** A container that owns no extent: once IO that may still use it is done, its headers are cleared and its chunks freed. */
  private async freeContainer(c: Container): Promise<void> {
    await this.drainInflight();
    this.containers.delete(c.rec.containerId);
    const live = c.positions.filter((pos) => this.available(pos));
    await Promise.all(live.map((pos) => this.writeMember(pos, this.chunkOffset(pos.member!, pos.chunkIndex), FREED_HEADER).catch(() => undefined)));
    await Promise.all(live.map((pos) => pos.member!.device!.flush().catch(() => undefined)));
    for (const pos of c.positions) {
      if (!pos.member || pos.stale) continue;
      pos.member.usedChunks.delete(pos.chunkIndex);
      pos.member.dirty.add(pos.chunkIndex);
    }
  }

  /** Containers with a chunk on member `index` (available or not). */
  chunksOn(index: number): number {
    let n = 0;
    for (const c of this.containers.values()) for (const p of c.positions) if (p.member?.index === index) n++;
    return n;
  }

  /**
   * Removes a member without losing redundancy on the way (SPEC ENG8): it is
   * marked draining (no new chunks), a rebuild moves each of its chunks to
   * another member (user writes keep reaching both copies until the switch),
   * then it is taken out of service. A member already failed holds nothing
   * readable: it is taken out at once (rebuild its containers first, or they
   * stay degraded). ERR_NO_SPACE when the others have no room for its chunks
   * (the member then stays in service: add a device first).
   */
  async removeMember(index: number, o: RebuildOptions = {}): Promise<RebuildProgress | null> {
    this.checkRemovable(index);
    const m = this.members[index];
    if (m.failed || !m.device) {
      if (!m.failed) await this.failMember(index);
      return null;
    }
    m.draining = true;
    try {
      const p = await this.rebuild(o);
      const left = this.chunksOn(index);
      if (left > 0) throw new TesseraError('ERR_NO_SPACE', `${left} chunk(s) of ${m.device.path} found no room on the other devices; add a device, then remove this one again`);
      m.failed = true;
      await this.writeLabels();
      return p;
    } finally {
      m.draining = false;
    }
  }

  /**
   * Adds a device as a new member (labels it, clears its chunk headers) and
   * records the new member count in every label. Returns its index.
   */
  /** `opts.dataZeroed`: the device reads as zeros (a new sparse file); otherwise every chunk is zeroed before its first use. */
  async addMember(device: BlockDevice, opts: { enduranceBytes?: number; dataZeroed?: boolean } = {}): Promise<number> {
    if (this.members.length >= MAX_POOL_MEMBERS) throw new TesseraError('ERR_LIMIT', `a pool has at most ${MAX_POOL_MEMBERS} members`);
    const any = this.members.find((m) => m.label)!.label!;
    const count = Math.floor((device.sizeBytes - any.firstChunkOffset) / (RECORD_BYTES + this.chunkDataBytes));
    if (count < 1) throw new TesseraError('ERR_INVALID', `device ${device.path} is too small for one ${this.chunkDataBytes}-byte chunk`);
    const index = this.members.length;
    // Its old chunk headers go first, before the pool counts it; a device that
    // may hold old data gets freed markers, so that its chunks are zeroed before use (also after a restart).
    const zeroed = opts.dataZeroed === true;
    const dirty = new Set<number>();
    for (let c = 0; c < count; c++) {
      await device.write(zeroed ? ZERO_HEADER : FREED_HEADER, any.firstChunkOffset + c * (RECORD_BYTES + this.chunkDataBytes));
      if (!zeroed) dirty.add(c);
    }
    this.params.memberCount = index + 1;
    const label: MemberLabel = {
      ...any,
      pool: { ...this.params },
      memberUuid: this.opts.newUuid(),
      memberIndex: index,
      sizeBytes: device.sizeBytes,
      chunkCount: count,
      enduranceBytes: opts.enduranceBytes ?? any.enduranceBytes,
      bytesWritten: 0,
    };
    this.members.push({ index, uuid: label.memberUuid, device, label, failed: false, draining: false, usedChunks: new Set(), dirty, bytesWritten: 0 });
    try {
      await this.writeLabels();
    } catch (err) {
      // Not added after all: the caller closes the device. Labels already
      // rewritten name one member more; at open it is missing, holds nothing.
      this.members.pop();
      this.params.memberCount = index;
      throw err;
    }
    this.capacity();
    return index;
  }

  /** Takes `index` out of service and adds `device` in its place; run rebuild() to restore redundancy. */
  async replaceMember(index: number, device: BlockDevice): Promise<number> {
    if (!this.members[index]) throw new TesseraError('ERR_NOT_FOUND', `pool ${this.name} has no member ${index}`);
    if (!this.members[index].failed) await this.failMember(index);
    return this.addMember(device);
  }

  /**
   * Restores redundancy: every container with unavailable chunks gets new
   * chunks on other members (allocator, excluding its survivors), filled row by
   * row from the survivors, then switches to them (new generation in every
   * header). Most endangered containers first; several at once; it gives way to
   * user IO (sleeping so that it takes at most busyShare of the time while user
   * IO is active). User writes to rows already copied also reach the new chunks.
   */
  async rebuild(o: RebuildOptions = {}): Promise<RebuildProgress> {
    if (this.progress?.running) throw new TesseraError('ERR_BUSY', `pool ${this.name} is already rebuilding`);
    const plan = planRebuild(this.health());
    const p: RebuildProgress = {
      running: true, containersTotal: plan.order.length, containersDone: 0, unrecoverable: plan.unrecoverable.length,
      bytesTotal: plan.bytes, bytesDone: 0, startedAtMs: this.now(), etaMs: null, noRoom: 0, last: null,
    };
    this.progress = p;
    this.stopRequested = false;
    this.rebuildLoad.clear();
    const queue = [...plan.order];
    const busyShare = Math.min(1, Math.max(0.01, o.busyShare ?? 0.3));
    let aborted = false;
    try {
      const worker = async (): Promise<void> => {
        for (let id = queue.shift(); id !== undefined && !aborted; id = queue.shift()) {
          const c = this.containers.get(id);
          if (!c) continue;
          const lost = c.positions.filter((pos) => !this.available(pos)).length;
          try {
            const short = await this.rebuildContainer(c, busyShare, (bytes) => {
              p.bytesDone += bytes;
              const elapsed = this.now() - p.startedAtMs;
              p.etaMs = p.bytesDone > 0 ? (elapsed * (p.bytesTotal - p.bytesDone)) / p.bytesDone : null;
            });
            if (short > 0) p.noRoom++;
          } catch (err) {
            if (!(err instanceof TesseraError) || err.code !== 'ERR_NO_SPACE') {
              aborted = true;
              throw err;
            }
            p.noRoom++;
          }
          p.containersDone++;
          p.last = { containerId: id, lost };
          o.onProgress?.({ ...p });
        }
      };
      // More members can serve more containers at once: scale with them. On the
      // first failure the other workers stop after their current container, and
      // the rebuild ends only when all have (no container is left mid-copy).
      const parallel = Math.max(1, o.parallel ?? 2 * this.usableDevices().length);
      const results = await Promise.allSettled(Array.from({ length: parallel }, worker));
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    } finally {
      p.running = false;
      p.etaMs = 0;
      this.capacity();
    }
    return { ...p };
  }

  /** Resolves with the number of lost or moving chunks left in place for want of room (0: all done). */
  private async rebuildContainer(c: Container, busyShare: number, onBytes: (n: number) => void): Promise<number> {
    const lost = c.positions.flatMap((pos, i) => (this.available(pos) && !this.moving(pos) ? [] : [i]));
    // Lost chunks before moving ones: when room is short, redundancy comes first.
    lost.sort((x, y) => Number(this.available(c.positions[x])) - Number(this.available(c.positions[y])) || x - y);
    const unavailable = c.positions.filter((pos) => !this.available(pos)).length;
    if (lost.length === 0 || unavailable > c.shape.parityCount) return 0;
    const survivors = new Set(c.positions.filter((pos) => this.available(pos)).map((pos) => pos.member!.index));
    const states = this.members.map(memberStateOf);
    // New chunks avoid the failure domains of the chunks that stay, and each other's
    // (a chunk that moves may go back into its own domain: it leaves it).
    const staying = c.positions.filter((pos) => this.available(pos) && !this.moving(pos)).map((pos) => pos.member!.index);
    const usedDomains = new Set(staying.map((i) => states[i].domain ?? `#${i}`));
    // Rebuild writes go where the rebuild has scheduled the least IO so far (reads
    // from survivors count too), so that every surviving member works evenly; the
    // allocator's weights only break ties.
    const weights = memberWeights(states, this.sacrificial);
    const eligible = states.filter((m, i) => weights[i] > 0 && !survivors.has(m.index) && !usedDomains.has(m.domain ?? `#${m.index}`));
    const load = (i: number) => this.rebuildLoad.get(i) ?? 0;
    eligible.sort((x, y) => load(x.index) - load(y.index) || weights[y.index] - weights[x.index]);
    const chosen: number[] = [];
    for (const m of eligible) {
      const d = m.domain ?? `#${m.index}`;
      if (chosen.length === lost.length || usedDomains.has(d)) continue;
      usedDomains.add(d);
      chosen.push(m.index);
    }
    // With room for fewer new chunks than lost, restore what fits (a RAID6 row back to one lost chunk is safer than two).
    if (chosen.length === 0) throw new TesseraError('ERR_NO_SPACE', `no member in another failure domain has room for a new chunk of container ${c.rec.containerId}`);
    for (const i of survivors) this.rebuildLoad.set(i, load(i) + this.chunkDataBytes);
    for (const i of chosen) this.rebuildLoad.set(i, load(i) + this.chunkDataBytes);
    const a = { members: chosen };
    let short = lost.length;
    const targets = new Map<number, Position>();
    a.members.forEach((mi, i) => {
      const member = this.members[mi];
      let chunk = 0;
      while (member.usedChunks.has(chunk)) chunk++;
      member.usedChunks.add(chunk);
      targets.set(lost[i], { member, chunkIndex: chunk, stale: false });
    });
    const rows = this.chunkDataBytes / c.shape.stripBytes;
    c.rebuild = { targets, copied: new Uint8Array(rows) };
    const copyRow = async (row: number): Promise<void> => {
      await this.withRow(c, row, async () => {
        const strips = await this.readRowRange(c, row, 0, c.shape.stripBytes);
        await Promise.all(
          [...targets].map(([position, target]) => {
            const role = (position - (row % c.positions.length) + c.positions.length) % c.positions.length;
            return this.writeMember(target, this.dataOffset(target, row * c.shape.stripBytes), strips[role]);
          }),
        );
        c.rebuild!.copied[row] = 1;
      });
      onBytes(targets.size * c.shape.stripBytes);
    };
    try {
      // Rows in windows of REBUILD_ROWS_AT_ONCE: each row reads every survivor and
      // writes every new chunk, so a window keeps all of them busy.
      for (let row = 0; row < rows; row += REBUILD_ROWS_AT_ONCE) {
        if (this.stopRequested) throw new TesseraError('ERR_CLOSED', `rebuild of pool ${this.name} stopped`);
        const t0 = this.now();
        await Promise.all(Array.from({ length: Math.min(REBUILD_ROWS_AT_ONCE, rows - row) }, (_, i) => copyRow(row + i)));
        // Give way to user IO: while it is active, rebuild takes at most busyShare of the time.
        const spent = this.now() - t0;
        // User IO is active if some is in flight or some started during this window.
        if (this.userInFlight > 0 || this.lastUserIoMs >= t0) await this.sleep((spent * (1 - busyShare)) / busyShare);
        else await this.sleep(0); // one turn of the event loop: IO that arrives meanwhile gets in
      }
      if ([...targets.values()].some((t) => !this.available(t))) throw new TesseraError('ERR_DEVICE_IO', `rebuild of container ${c.rec.containerId}: a new chunk failed`);
      // Switch: the new chunks join under a new generation, in every header.
      const positions = c.positions.map((pos, i) => targets.get(i) ?? pos);
      const rec: ContainerRecord = {
        ...c.rec,
        generation: c.rec.generation + 1,
        members: positions.map((pos) => (pos.member ? { memberUuid: pos.member.uuid, chunkIndex: pos.chunkIndex } : { memberUuid: UNPLACED_UUID, chunkIndex: 0 })),
      };
      const header = Buffer.alloc(RECORD_BYTES);
      encodeContainer(rec, header);
      // Survivors first (durable), then the new chunks: a cut in between leaves
      // the survivors naming chunks without the header, which open treats as
      // stale chunks of a container that is kept (never as a cut-short creation).
      // One chunk at a time, each durable before the next: a power cut tears at most one header.
      const newOnes = new Set(targets.values());
      for (const pos of [...positions.filter((p) => !newOnes.has(p)), ...newOnes]) {
        if (!this.available(pos)) continue;
        await this.writeMember(pos, this.chunkOffset(pos.member!, pos.chunkIndex), header);
        await pos.member!.device!.flush();
      }
      const replaced = c.positions.filter((pos, i) => targets.has(i) && pos.member);
      c.rec = rec;
      c.positions = positions;
      short = lost.length - targets.size;
      // The replaced chunks are free once user IO that started before the switch
      // (and may still address them) is done. A drained one, still readable,
      // loses its header, so that a later scan does not count it as used.
      await this.drainInflight();
      await Promise.all(
        replaced.map(async (pos) => {
          // A stale position's chunk was never this container's to give back (another may hold it now).
          if (pos.stale) return;
          if (this.available(pos)) await this.writeMember(pos, this.chunkOffset(pos.member!, pos.chunkIndex), FREED_HEADER).catch(() => {});
          pos.member!.usedChunks.delete(pos.chunkIndex);
          pos.member!.dirty.add(pos.chunkIndex);
        }),
      );
    } catch (err) {
      // The new chunks were never switched in: give them back.
      for (const t of targets.values()) {
        t.member!.usedChunks.delete(t.chunkIndex);
        t.member!.dirty.add(t.chunkIndex); // partly copied
      }
      throw err;
    } finally {
      c.rebuild = undefined;
    }
    return short;
  }

  /** How many alternative sources readAlternate offers: the other copies, or P / Q choices. */
  private alternatives(c: Container): number {
    const { dataCount: k, parityCount: m } = c.shape;
    if (k === 1) return m; // another mirror copy each
    return m === 1 ? 1 : 3; // RAID5: rebuild from P; RAID6: from P+Q, from Q (P bad too), from P (Q bad too)
  }

  /** Roles (data strip, and parity per attempt) treated as bad for this alternative. */
  private distrustedRoles(c: Container, dataIndex: number, attempt: number): number[] {
    const { dataCount: k, parityCount: m } = c.shape;
    if (k === 1) return Array.from({ length: 1 + m }, (_, r) => r).filter((r) => r !== attempt + 1);
    if (attempt === 0) return [dataIndex];
    return attempt === 1 ? [dataIndex, k] : [dataIndex, k + 1];
  }

  /** The pieces of a pool range that fall in allocated containers, in order. */
  private mappedPieces(offsetBytes: number, lengthBytes: number): { c: Container; p: Piece; bufOffset: number }[] {
    const out: { c: Container; p: Piece; bufOffset: number }[] = [];
    for (const { ext, inExt, len, at } of this.extentSpans(offsetBytes, lengthBytes)) {
      const e = this.extents.get(ext);
      if (e) for (const p of pieces(e.c.shape, e.index * this.chunkDataBytes + inExt, len)) out.push({ c: e.c, p, bufOffset: at + p.bufOffset });
    }
    return out;
  }

  /**
   * The source of each piece for alternative number `attempt`: 0 = as stored,
   * o >= 1 = the piece rebuilt with distrustedRoles(o - 1). Attempts run
   * through every combination except "all as stored" (a block may span two
   * strips of which only one is bad, and the other's row may have bad parity),
   * so a caller that checks each result finds the good one if there is one.
   * null when attempt is past the last combination.
   */
  private alternativeChoice(ps: { c: Container }[], attempt: number): number[] | null {
    const radix = ps.map(({ c }) => this.alternatives(c) + 1);
    let n = attempt + 1;
    const choice: number[] = [];
    for (const r of radix) {
      choice.push(n % r);
      n = Math.floor(n / r);
    }
    return n === 0 ? choice : null;
  }

  /**
   * BlockDevice.readAlternate: the range as the redundancy says it is — pieces
   * from another mirror copy, or reconstructed from parity treating their data
   * strip (and, for RAID6, P or Q too) as bad. Unallocated space reads as zeros.
   */
  async readAlternate(buf: Uint8Array, offsetBytes: number, attempt: number): Promise<boolean> {
    this.checkIo(offsetBytes, buf.length);
    return this.tracked(offsetBytes, buf.length, () => this.readAlternateNow(buf, offsetBytes, attempt));
  }

  private async readAlternateNow(buf: Uint8Array, offsetBytes: number, attempt: number): Promise<boolean> {
    const ps = this.mappedPieces(offsetBytes, buf.length);
    const choice = this.alternativeChoice(ps, attempt);
    if (choice === null || ps.length === 0) return false;
    buf.fill(0);
    for (const [i, { c, p, bufOffset }] of ps.entries()) {
      const out = buf.subarray(bufOffset, bufOffset + p.lengthBytes);
      if (choice[i] === 0) {
        await this.readPiece(c, p, out);
        continue;
      }
      const distrust = this.distrustedRoles(c, p.dataIndex, choice[i] - 1).map((role) => positionOf(c.shape, role, p.row));
      await this.withRow(c, p.row, async () => {
        const strips = await this.readRowRange(c, p.row, p.stripOffset, p.lengthBytes, distrust);
        out.set(strips[p.dataIndex]);
      });
    }
    return true;
  }

  /** BlockDevice.repairAlternate: rewrites, through the journal, the strips readAlternate(attempt) treated as bad. */
  async repairAlternate(offsetBytes: number, lengthBytes: number, attempt: number): Promise<void> {
    this.checkIo(offsetBytes, lengthBytes);
    return this.tracked(offsetBytes, lengthBytes, () => this.repairAlternateNow(offsetBytes, lengthBytes, attempt));
  }

  private async repairAlternateNow(offsetBytes: number, lengthBytes: number, attempt: number): Promise<void> {
    const ps = this.mappedPieces(offsetBytes, lengthBytes);
    const choice = this.alternativeChoice(ps, attempt);
    if (choice === null) return;
    for (const [i, { c, p }] of ps.entries()) {
      if (choice[i] === 0) continue;
      const roles = this.distrustedRoles(c, p.dataIndex, choice[i] - 1);
      const distrust = roles.map((role) => positionOf(c.shape, role, p.row));
      await this.withRow(c, p.row, async () => {
        const strips = await this.readRowRange(c, p.row, p.stripOffset, p.lengthBytes, distrust);
        await this.writeRoles(c, p.row, p.stripOffset, strips.map((s, role) => (roles.includes(role) ? s : null)));
      });
      this.repairs++;
    }
  }

  /** Strip ranges rewritten by repairAlternate. */
  repairs = 0;

  /**
   * Reads every row of every container and checks its parity (mirror copies
   * equal, P and Q match the data). Rows with a chunk unavailable cannot be
   * checked and are counted apart. Read-only.
   */
  async scrub(): Promise<{ rows: number; unverifiable: number; mismatches: { containerId: number; row: number }[] }> {
    const out = { rows: 0, unverifiable: 0, mismatches: [] as { containerId: number; row: number }[] };
    for (const c of [...this.containers.values()]) {
      const { dataCount: k, parityCount: m, stripBytes } = c.shape;
      // As tracked IO over the container's extents: a widen neither moves nor frees it meanwhile.
      await this.tracked(c.rec.firstExtent * this.chunkDataBytes, k * this.chunkDataBytes, async () => {
        if (!this.containers.has(c.rec.containerId)) return; // freed while waiting
        for (let row = 0; row < this.chunkDataBytes / stripBytes; row++) {
          out.rows++;
          if (c.positions.some((p) => !this.available(p))) {
            out.unverifiable++;
            continue;
          }
          const strips = await this.withRow(c, row, () => this.readRowRange(c, row, 0, stripBytes));
          if (!this.rowMatches(strips, k, m, stripBytes)) out.mismatches.push({ containerId: c.rec.containerId, row });
        }
      });
    }
    return out;
  }

  /** Total capacity of full-width containers, for tests and `pool info`. */
  containerCapacityBytes(): number {
    return capacityBytes({ dataCount: this.params.dataCount, parityCount: parityCountOf(this.params.protection), stripBytes: this.params.stripBytes, chunkDataBytes: this.chunkDataBytes });
  }
}
