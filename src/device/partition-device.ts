// DEV4: one partition of a device as a BlockDevice of its own (usable as a
// pool member), with its IOPS and bandwidth limits enforced before each IO by
// token buckets (the partition's share of the IO scheduler). Also reads and
// writes a device's partition table (partition-table.ts).
//
// Invariants: IO never leaves the partition's byte range (ERR_RANGE); limits
// serve IOs in arrival order; at most MAX_WAITING IOs wait for their turn, more
// are refused with ERR_LIMIT (backpressure instead of an unbounded queue).
// flush() and close() are not limited; close() leaves the parent open (it is
// shared by its partitions). Pure apart from the parent device; time comes
// from the injected clock.
import type { BlockDevice } from './device.js';
import { IoStats } from '../stdx/stats.js';
import { TesseraError } from '../stdx/errors.js';
import { TokenBucket } from '../stdx/token-bucket.js';
import { PARTITION_TABLE_BYTES, PARTITION_TABLE_COPIES, choosePartitionTable, encodePartitionTable, type PartitionEntry, type PartitionTable } from './partition-table.js';

export const MAX_WAITING = 4096;

export interface LimitClock {
  nowMs(): number;
  sleep(ms: number): Promise<void>;
}

export class PartitionDevice implements BlockDevice {
  readonly stats = new IoStats();
  readonly name: string;
  readonly path: string;
  private readonly iops: TokenBucket | null;
  private readonly bandwidth: TokenBucket | null;
  private waiting = 0;
  private closed = false;

  constructor(
    private readonly parent: BlockDevice,
    readonly entry: PartitionEntry,
    private readonly clock: LimitClock,
    /** Called once by close() (e.g. to close the parent when its last partition closes). */
    private readonly release?: () => Promise<void>,
  ) {
    this.name = `${parent.name}:${entry.name}`;
    this.path = `${parent.path}#${entry.name}`;
    // A burst of 1/10 s worth of IO (at least one IO / 1 MiB) keeps limits smooth.
    this.iops = entry.iopsLimit > 0 ? new TokenBucket(entry.iopsLimit, Math.max(1, entry.iopsLimit / 10)) : null;
    this.bandwidth = entry.bandwidthBytesPerSec > 0 ? new TokenBucket(entry.bandwidthBytesPerSec, Math.max(1024 * 1024, entry.bandwidthBytesPerSec / 10)) : null;
  }

  get sizeBytes(): number {
    return this.entry.sizeBytes;
  }

  get sectorBytes(): number {
    return this.parent.sectorBytes;
  }

  get directIo(): boolean {
    return this.parent.directIo;
  }

  private async admit(lengthBytes: number, offsetBytes: number): Promise<void> {
    if (this.closed) throw new TesseraError('ERR_CLOSED', `partition ${this.name} is closed`);
    if (offsetBytes < 0 || offsetBytes + lengthBytes > this.entry.sizeBytes) {
      throw new TesseraError('ERR_RANGE', `IO ${offsetBytes}+${lengthBytes} outside partition ${this.name} (${this.entry.sizeBytes} bytes)`);
    }
    if (!this.iops && !this.bandwidth) return;
    // Refused before taking tokens: a refused IO must not slow the ones that wait.
    if (this.waiting >= MAX_WAITING) throw new TesseraError('ERR_LIMIT', `partition ${this.name}: ${MAX_WAITING} IOs already wait for the IO limit`);
    const now = this.clock.nowMs();
    const waitMs = Math.max(this.iops?.take(1, now) ?? 0, this.bandwidth?.take(lengthBytes, now) ?? 0);
    if (waitMs <= 0) return;
    this.waiting++;
    try {
      await this.clock.sleep(waitMs);
    } finally {
      this.waiting--;
    }
  }

  async read(buf: Uint8Array, offsetBytes: number): Promise<void> {
    await this.admit(buf.length, offsetBytes);
    const t0 = this.clock.nowMs();
    await this.parent.read(buf, this.entry.startBytes + offsetBytes);
    this.stats.read.record(buf.length, (this.clock.nowMs() - t0) * 1000);
  }

  async write(buf: Uint8Array, offsetBytes: number): Promise<void> {
    await this.admit(buf.length, offsetBytes);
    const t0 = this.clock.nowMs();
    await this.parent.write(buf, this.entry.startBytes + offsetBytes);
    this.stats.write.record(buf.length, (this.clock.nowMs() - t0) * 1000);
  }

  flush(): Promise<void> {
    if (this.closed) return Promise.reject(new TesseraError('ERR_CLOSED', `partition ${this.name} is closed`));
    return this.parent.flush();
  }

  /** Partitions of one device fail together. */
  get failureDomain(): string {
    return this.parent.failureDomain ?? this.parent.path;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.release?.();
  }
}

/** Writes both copies of the table (copy A, flush, copy B, flush: never both torn). */
export async function writePartitionTable(device: BlockDevice, table: PartitionTable): Promise<void> {
  const b = Buffer.alloc(PARTITION_TABLE_BYTES);
  encodePartitionTable(table, device.sizeBytes, b);
  for (const at of PARTITION_TABLE_COPIES) {
    await device.write(b, at);
    await device.flush();
  }
}

export async function readPartitionTable(device: BlockDevice): Promise<PartitionTable> {
  const copies = await Promise.all(
    PARTITION_TABLE_COPIES.map(async (at) => {
      const b = Buffer.alloc(PARTITION_TABLE_BYTES);
      await device.read(b, at);
      return b;
    }),
  );
  return choosePartitionTable(copies, device.sizeBytes);
}

/** The partitions of a device as BlockDevices (limits from the table). */
export async function openPartitions(device: BlockDevice, clock: LimitClock): Promise<PartitionDevice[]> {
  const t = await readPartitionTable(device);
  return t.entries.map((e) => new PartitionDevice(device, e, clock));
}
