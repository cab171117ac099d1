// DEV2: a simulated device for tests, in memory, with injectable faults:
// read/write errors at chosen ranges or at a rate, flush errors, silent bit flips,
// added latency, and a power cut that drops or tears writes not yet flushed.
//
// Model: `current` is what reads see; `durable` is what survives a power cut.
// Each completed write is appended to `unsynced` (offset + copy); flush() copies
// every write completed before it into `durable`. powerCut() then applies each
// unsynced write to `durable` whole, not at all, or torn at sector granularity
// (a random subset of its 512-byte sectors), chosen by the seeded PRNG, and makes
// `current` equal to the result. Sectors themselves are atomic, as on real disks.
import { TesseraError } from '../stdx/errors.js';
import { IoStats } from '../stdx/stats.js';
import { assert, fail } from '../stdx/assert.js';
import type { Prng } from '../stdx/prng.js';
import type { BlockDevice } from './device.js';
import { SECTOR_BYTES } from './device.js';

interface Range {
  offsetBytes: number;
  lengthBytes: number;
}

export interface SimFaults {
  readErrors: Range[];
  writeErrors: Range[];
  readErrorRate: number;
  writeErrorRate: number;
  flushError: boolean;
  latencyMs: number;
  /** Random extra microtask turns per IO (0..n): reorders completions of concurrent IOs deterministically. */
  jitterTurns: number;
  /** Awaited by every flush() before it takes effect (null: none): a simulation passes a wait in virtual time. */
  flushWait: (() => Promise<void>) | null;
}

export class SimDevice implements BlockDevice {
  readonly sectorBytes = SECTOR_BYTES;
  readonly directIo = false;
  readonly stats = new IoStats();
  readonly faults: SimFaults = { readErrors: [], writeErrors: [], readErrorRate: 0, writeErrorRate: 0, flushError: false, latencyMs: 0, jitterTurns: 0, flushWait: null };
  private current: Buffer;
  private durable: Buffer;
  private unsynced: Array<{ offsetBytes: number; data: Buffer; seq: number }> = [];
  private writeSeq = 0;
  private closed = false;
  writesIssued = 0;
  /** prefetchWrite hints received (nothing else happens: there is no page cache here). */
  prefetchWrites = 0;

  constructor(
    readonly sizeBytes: number,
    private readonly prng: Prng,
    readonly name = 'sim0',
    readonly path = 'sim://0',
  ) {
    assert(sizeBytes % SECTOR_BYTES === 0, 'sim device size must be sector aligned');
    this.current = Buffer.alloc(sizeBytes);
    this.durable = Buffer.alloc(sizeBytes);
  }

  async read(buf: Uint8Array, offsetBytes: number): Promise<void> {
    this.check(offsetBytes, buf.length);
    await this.delay();
    if (this.hits(this.faults.readErrors, offsetBytes, buf.length) || this.prng.chance(this.faults.readErrorRate)) {
      this.stats.read.recordError();
      throw new TesseraError('ERR_DEVICE_IO', `simulated read error at ${offsetBytes}+${buf.length}`);
    }
    this.current.copy(buf, 0, offsetBytes, offsetBytes + buf.length);
    this.stats.read.record(buf.length, 0);
  }

  async write(buf: Uint8Array, offsetBytes: number): Promise<void> {
    this.check(offsetBytes, buf.length);
    this.writesIssued++;
    const data = Buffer.from(buf); // copy now: the caller may reuse its buffer after we resolve
    await this.delay();
    if (this.closed) throw new TesseraError('ERR_CLOSED', 'device closed (power cut)');
    if (this.hits(this.faults.writeErrors, offsetBytes, buf.length) || this.prng.chance(this.faults.writeErrorRate)) {
      this.stats.write.recordError();
      throw new TesseraError('ERR_DEVICE_IO', `simulated write error at ${offsetBytes}+${buf.length}`);
    }
    data.copy(this.current, offsetBytes);
    this.unsynced.push({ offsetBytes, data, seq: ++this.writeSeq });
    this.stats.write.record(buf.length, 0);
  }

  /** Vectored read: exactly read() of the parts' concatenation (same faults), scattered. */
  async readParts(parts: Uint8Array[], offsetBytes: number): Promise<void> {
    const all = Buffer.alloc(parts.reduce((n, p) => n + p.length, 0));
    await this.read(all, offsetBytes);
    let at = 0;
    for (const p of parts) {
      p.set(all.subarray(at, at + p.length));
      at += p.length;
    }
  }

  /**
   * Vectored write: write() of the parts' concatenation (same faults, same tearing at
   * a power cut), taken only after the device's latency, as a real device reads the
   * caller's memory while the IO runs: a caller that changes or reuses a part before
   * the write settled stores the changed bytes here too, so tests see it.
   */
  async writeParts(parts: Uint8Array[], offsetBytes: number): Promise<void> {
    await Promise.resolve();
    await this.delay();
    await this.write(Buffer.concat(parts), offsetBytes);
  }

  async flush(): Promise<void> {
    if (this.closed) throw new TesseraError('ERR_CLOSED', 'device closed');
    const upTo = this.writeSeq; // writes completed before the flush started
    await this.delay();
    if (this.faults.flushWait) await this.faults.flushWait();
    if (this.closed) throw new TesseraError('ERR_CLOSED', 'device closed (power cut)');
    if (this.faults.flushError) {
      this.stats.flush.recordError();
      throw new TesseraError('ERR_DEVICE_FLUSH', 'simulated flush error');
    }
    const rest: typeof this.unsynced = [];
    for (const w of this.unsynced) {
      if (w.seq <= upTo) w.data.copy(this.durable, w.offsetBytes);
      else rest.push(w);
    }
    this.unsynced = rest;
    this.stats.flush.record(0, 0);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /**
   * Simulated power cut: unsynced writes are kept, dropped or torn at sector
   * granularity. This device dies (its IO fails with ERR_CLOSED, so work still in
   * flight from the old process cannot touch the new state) and a new device
   * holding what survived is returned, as if the machine had rebooted.
   */
  powerCut(): { device: SimDevice; kept: number; dropped: number; torn: number } {
    const counts = { kept: 0, dropped: 0, torn: 0 };
    const survived = Buffer.from(this.durable);
    for (const w of this.unsynced) {
      const r = this.prng.int(3);
      if (r === 0) {
        counts.dropped++;
        continue;
      }
      if (r === 1 || w.data.length === SECTOR_BYTES) {
        w.data.copy(survived, w.offsetBytes);
        counts.kept++;
        continue;
      }
      counts.torn++;
      for (let s = 0; s < w.data.length; s += SECTOR_BYTES) {
        if (this.prng.chance(0.5)) w.data.copy(survived, w.offsetBytes + s, s, s + SECTOR_BYTES);
      }
    }
    this.closed = true;
    this.unsynced = [];
    const device = new SimDevice(this.sizeBytes, this.prng, this.name, this.path);
    survived.copy(device.durable);
    survived.copy(device.current);
    return { device, ...counts };
  }

  /** Silent corruption: flip one bit in both the current and durable images. */
  flipBit(offsetBytes: number, bit = 0): void {
    this.current[offsetBytes] ^= 1 << bit;
    this.durable[offsetBytes] ^= 1 << bit;
  }

  /** Reopen after a clean close (everything written stays). */
  reopen(): void {
    this.closed = false;
  }

  /** Corrupt `lengthBytes` at an offset with random bytes in both images (a latent media error). */
  scribble(offsetBytes: number, lengthBytes: number): void {
    const junk = Buffer.alloc(lengthBytes);
    this.prng.fill(junk);
    junk.copy(this.current, offsetBytes);
    junk.copy(this.durable, offsetBytes);
  }

  get unsyncedWrites(): number {
    return this.unsynced.length;
  }

  /** BlockDevice.prefetchWrite: counted; a range the engine could never write is a bug. */
  prefetchWrite(offsetBytes: number, lengthBytes: number): void {
    if (this.closed) return;
    if (!(offsetBytes % SECTOR_BYTES === 0 && lengthBytes % SECTOR_BYTES === 0 && lengthBytes > 0 && offsetBytes >= 0 && offsetBytes + lengthBytes <= this.sizeBytes)) {
      fail(`prefetchWrite of ${offsetBytes}+${lengthBytes} on a ${this.sizeBytes}-byte device`);
    }
    this.prefetchWrites++;
  }

  private check(offsetBytes: number, lengthBytes: number): void {
    if (this.closed) throw new TesseraError('ERR_CLOSED', 'device closed');
    if (!(offsetBytes % SECTOR_BYTES === 0 && lengthBytes % SECTOR_BYTES === 0)) fail(`unaligned IO ${offsetBytes}+${lengthBytes}`);
    if (offsetBytes < 0 || offsetBytes + lengthBytes > this.sizeBytes) {
      throw new TesseraError('ERR_RANGE', `IO ${offsetBytes}+${lengthBytes} beyond device end ${this.sizeBytes}`);
    }
  }

  private hits(ranges: Range[], offsetBytes: number, lengthBytes: number): boolean {
    for (const r of ranges) {
      if (offsetBytes < r.offsetBytes + r.lengthBytes && r.offsetBytes < offsetBytes + lengthBytes) return true;
    }
    return false;
  }

  private async delay(): Promise<void> {
    if (this.faults.jitterTurns > 0) {
      const turns = this.prng.int(this.faults.jitterTurns + 1);
      for (let i = 0; i < turns; i++) await Promise.resolve();
    }
    if (this.faults.latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, this.faults.latencyMs));
  }
}
