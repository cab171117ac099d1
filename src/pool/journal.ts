// The pool's stripe journal (docs/raid.md "No write hole"): every row update
// (new data and parity of a byte range) is appended here and made durable on
// m + 1 members before it is written in place; recovery replays what was not
// yet checkpointed, so after a crash every row holds either its old or its new
// contents, with parity to match, even with members missing.
//
// Area layout (at areaOffset of each member): superblock copy A at 0, copy B
// at 4 KiB, the ring from 8 KiB to areaBytes. Records are appended at `head`
// in batches (group commit: one write and one flush per journal member per
// batch); a batch that does not fit before the ring's end goes to offset 0.
// `tail` is where the oldest unretired record starts. A checkpoint waits for
// every appended record's in-place writes, flushes every member, and records
// (checkpointSeq, head) in the superblocks of every member.
//
// Invariants: sequence numbers rise by one per durable record, in ring order, so
// recovery follows them from the checkpoint and stops at the first gap or bad
// crc (a torn batch was never acknowledged, and its in-place writes never
// started); the ring never overwrites an unretired record; a record's in-place
// writes start only after its batch is durable on every journal member.
// Errors: a failed journal write or flush rejects the batch (ERR_DEVICE_IO /
// ERR_DEVICE_FLUSH): the writes waiting on it fail, nothing is written in place.
import type { BlockDevice } from '../device/device.js';
import { assert, fail } from '../stdx/assert.js';
import { TesseraError } from '../stdx/errors.js';
import {
  JOURNAL_SECTOR_BYTES,
  decodeJournalHeader,
  decodeJournalPayload,
  decodeJournalSuperblock,
  encodeJournalRecord,
  encodeJournalSuperblock,
  journalRecordBytes,
  recordBytes,
  type JournalSuperblock,
  type RowUpdate,
} from './journal-format.js';

export const JOURNAL_SB_OFFSETS = [0, 4096];
export const JOURNAL_RING_OFFSET = 8192;

export interface JournalDeps {
  poolUuid: string;
  areaOffset: number;
  areaBytes: number;
  /** Members that get every record: m + 1 usable ones. */
  journalDevices: () => BlockDevice[];
  /** Every usable member: flushed and given the superblock at a checkpoint. */
  allDevices: () => BlockDevice[];
}

interface Pending {
  u: RowUpdate;
  /** Given when its batch is written. */
  seq: number;
  resolve: (this: Pending) => void;
  reject: (err: Error) => void;
}

export interface JournalPosition {
  nextSeq: number;
  head: number;
  sbSequence: number;
}

export class StripeJournal {
  private readonly ringBytes: number;
  private head: number;
  private tail: number;
  private sbSequence: number;
  private lastAppendedSeq: number;
  private pending: Pending[] = [];
  private writing = false;
  private readonly unapplied = new Set<number>();
  private appliedWaiters: (() => void)[] = [];
  /** Records appended, checkpoints taken: for tests and `pool info`. */
  readonly stats = { records: 0, batches: 0, checkpoints: 0 };

  constructor(
    private readonly deps: JournalDeps,
    at: JournalPosition,
  ) {
    this.ringBytes = deps.areaBytes - JOURNAL_RING_OFFSET;
    if (!(this.ringBytes >= 64 * 1024)) fail(`journal ring of ${this.ringBytes} bytes is too small`);
    this.head = at.head;
    this.tail = at.head;
    this.sbSequence = at.sbSequence;
    this.lastAppendedSeq = at.nextSeq - 1;
  }

  /** Largest batch: a quarter of the ring, so that a checkpoint always makes room. */
  get maxBatchBytes(): number {
    return Math.floor(this.ringBytes / 4);
  }

  /**
   * Appends the update; resolves with its sequence number once it is durable on
   * every journal member. Numbers are given when the batch is written and kept
   * only if it became durable: a failed batch leaves no gap (a gap would end
   * recovery early and hide every later record).
   */
  log(u: RowUpdate): Promise<number> {
    if (!(recordBytes(u) <= this.maxBatchBytes)) fail(`a ${recordBytes(u)}-byte journal record exceeds the ring's batch limit ${this.maxBatchBytes}`);
    return new Promise<number>((resolve, reject) => {
      this.pending.push({ u, seq: 0, resolve: function (this: Pending) { resolve(this.seq); }, reject });
      if (!this.writing) {
        this.writing = true;
        queueMicrotask(() => void this.writeLoop());
      }
    });
  }

  /** The in-place writes of record `seq` are done (successfully or not): it may be retired. */
  applied(seq: number): void {
    this.unapplied.delete(seq);
    if (this.unapplied.size === 0) for (const w of this.appliedWaiters.splice(0)) w();
  }

  private async writeLoop(): Promise<void> {
    try {
      while (this.pending.length > 0) {
        let bytes = 0;
        let n = 0;
        while (n < this.pending.length && bytes + recordBytes(this.pending[n].u) <= this.maxBatchBytes) bytes += recordBytes(this.pending[n++].u);
        const batch = this.pending.splice(0, n);
        try {
          await this.appendBatch(batch, bytes);
          for (const p of batch) this.unapplied.add(p.seq);
          for (const p of batch) p.resolve.call(p);
        } catch (err) {
          for (const p of batch) p.reject(err as Error);
        }
      }
    } finally {
      this.writing = false;
    }
  }

  /** Where a batch of `bytes` goes, or null when the ring has no room before a checkpoint. */
  private place(bytes: number): number | null {
    if (this.head >= this.tail) {
      if (this.head + bytes <= this.ringBytes) return this.head;
      return bytes < this.tail ? 0 : null;
    }
    return this.head + bytes < this.tail ? this.head : null;
  }

  private async appendBatch(batch: Pending[], bytes: number): Promise<void> {
    let at = this.place(bytes);
    if (at === null) {
      await this.checkpoint();
      at = this.place(bytes);
      assert(at !== null, 'no journal room after a checkpoint');
    }
    const buf = Buffer.alloc(bytes);
    let off = 0;
    let seq = this.lastAppendedSeq;
    for (const p of batch) {
      p.seq = ++seq;
      encodeJournalRecord(p.u, p.seq, this.deps.poolUuid, buf, off);
      off += recordBytes(p.u);
    }
    const devices = this.deps.journalDevices();
    if (devices.length === 0) throw new TesseraError('ERR_DEVICE_IO', 'no usable member for the stripe journal');
    const where = this.deps.areaOffset + JOURNAL_RING_OFFSET + at;
    await Promise.all(devices.map((d) => d.write(buf, where)));
    await Promise.all(devices.map((d) => d.flush()));
    // Durable: only now do the numbers and the ring space count as used.
    this.lastAppendedSeq = seq;
    this.head = at + bytes;
    this.stats.records += batch.length;
    this.stats.batches++;
  }

  /** Retires every appended record: waits for their in-place writes, flushes all members, moves the checkpoint. */
  async checkpoint(): Promise<void> {
    if (this.unapplied.size > 0) await new Promise<void>((r) => this.appliedWaiters.push(r));
    const devices = this.deps.allDevices();
    await Promise.all(devices.map((d) => d.flush()));
    await writeJournalSuperblocks(devices, this.deps, { sequence: ++this.sbSequence, poolUuid: this.deps.poolUuid, checkpointSeq: this.lastAppendedSeq, checkpointPos: this.head });
    this.tail = this.head;
    this.stats.checkpoints++;
  }
}

/** Writes both superblock copies on every device: copy A everywhere, flush, then copy B, flush (never both torn). */
export async function writeJournalSuperblocks(devices: BlockDevice[], deps: { areaOffset: number }, sb: JournalSuperblock): Promise<void> {
  const b = Buffer.alloc(JOURNAL_SECTOR_BYTES);
  encodeJournalSuperblock(sb, b);
  for (const at of JOURNAL_SB_OFFSETS) {
    await Promise.all(devices.map((d) => d.write(b, deps.areaOffset + at)));
    await Promise.all(devices.map((d) => d.flush()));
  }
}

export interface Recovered {
  /** Updates to replay in place, in sequence order. */
  updates: RowUpdate[];
  /** Where the journal goes on after replay (the caller checkpoints there). */
  position: JournalPosition;
  lastSeq: number;
}

/**
 * Reads the journal of every device given: the newest valid superblock names
 * the checkpoint; records from there, in sequence order, are collected from
 * any device that holds a valid copy, until the first sequence number that no
 * device holds intact. `widthOf` gives a container's width (k + m), or null
 * for an unknown container (its records are skipped).
 */
export async function recoverJournal(devices: BlockDevice[], deps: { poolUuid: string; areaOffset: number; areaBytes: number }, widthOf: (containerId: number) => number | null): Promise<Recovered> {
  let sb: JournalSuperblock | null = null;
  const rings: Buffer[] = [];
  const ringBytes = deps.areaBytes - JOURNAL_RING_OFFSET;
  for (const d of devices) {
    for (const at of JOURNAL_SB_OFFSETS) {
      const b = Buffer.alloc(JOURNAL_SECTOR_BYTES);
      await d.read(b, deps.areaOffset + at);
      const s = decodeJournalSuperblock(b, deps.poolUuid);
      if (s && (!sb || s.sequence > sb.sequence)) sb = s;
    }
    const ring = Buffer.alloc(ringBytes);
    await d.read(ring, deps.areaOffset + JOURNAL_RING_OFFSET);
    rings.push(ring);
  }
  if (!sb) throw new TesseraError('ERR_FORMAT', 'no valid stripe journal superblock on any member');
  const updates: RowUpdate[] = [];
  let seq = sb.checkpointSeq + 1;
  let pos = sb.checkpointPos;
  for (;;) {
    let found: { u: RowUpdate | null; size: number; at: number } | null = null;
    for (const at of pos === 0 ? [0] : [pos, 0]) {
      for (const ring of rings) {
        const h = decodeJournalHeader(ring, at, deps.poolUuid, ringBytes - at);
        if (!h || h.seq !== seq) continue;
        const width = widthOf(h.containerId);
        const u = width === null ? null : decodeJournalPayload(h, ring, at, width);
        if (width !== null && !u) continue; // torn copy: try another device
        found = { u, size: journalRecordBytes(h), at };
        break;
      }
      if (found) break;
    }
    if (!found) break;
    if (found.u) updates.push(found.u);
    pos = found.at + found.size;
    seq++;
  }
  return { updates, lastSeq: seq - 1, position: { nextSeq: seq, head: pos, sbSequence: sb.sequence } };
}
