// DEV4: a device split into partitions by an on-disk table. The table is one
// 4 KiB record kept in two copies (at 0 and 4 KiB of the device): magic,
// version, sequence, entry count, the entries, crc32c. Each entry names a
// partition, gives its byte range and its IO limits (IOPS and bytes per
// second, 0 = unlimited). Partitions start at PARTITION_ALIGN_BYTES or later,
// are aligned to it, and never overlap. Pure codec and validation.
//
// Invariants: decode checks the crc, then every count and range against the
// record and the device before returning anything; the newer valid copy wins.
import { crc32c } from '../stdx/crc32c.js';
import { TesseraError } from '../stdx/errors.js';
import { readU64, writeU64 } from '../engine/superblock.js';

export const PARTITION_TABLE_BYTES = 4096;
export const PARTITION_TABLE_COPIES = [0, 4096];
export const PARTITION_ALIGN_BYTES = 1024 * 1024;
export const MAX_PARTITIONS = 32;
const MAGIC = 'TSRPART1';
const VERSION = 1;
const HEADER_BYTES = 64;
const ENTRY_BYTES = 96;
const NAME_BYTES = 32;
const CRC_OFFSET = PARTITION_TABLE_BYTES - 4;
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$/;

export interface PartitionEntry {
  name: string;
  startBytes: number;
  sizeBytes: number;
  /** IO operations per second; 0: unlimited. */
  iopsLimit: number;
  /** Bytes per second; 0: unlimited. */
  bandwidthBytesPerSec: number;
}

export interface PartitionTable {
  sequence: number;
  entries: PartitionEntry[];
}

/** Throws ERR_INVALID naming the first problem: bad name, misaligned or overlapping range, too many. */
export function validatePartitions(entries: readonly PartitionEntry[], deviceSizeBytes: number): void {
  if (entries.length > MAX_PARTITIONS) throw new TesseraError('ERR_INVALID', `at most ${MAX_PARTITIONS} partitions, not ${entries.length}`);
  const names = new Set<string>();
  for (const e of entries) {
    if (!NAME_PATTERN.test(e.name)) throw new TesseraError('ERR_INVALID', `partition name ${JSON.stringify(e.name)}: letters, digits, '.', '_' or '-', at most 32`);
    if (names.has(e.name)) throw new TesseraError('ERR_INVALID', `two partitions are named ${e.name}`);
    names.add(e.name);
    if (e.startBytes < PARTITION_ALIGN_BYTES || e.startBytes % PARTITION_ALIGN_BYTES !== 0 || e.sizeBytes <= 0 || e.sizeBytes % PARTITION_ALIGN_BYTES !== 0) {
      throw new TesseraError('ERR_INVALID', `partition ${e.name}: start and size must be multiples of 1 MiB, starting at 1 MiB or later`);
    }
    if (e.startBytes + e.sizeBytes > deviceSizeBytes) throw new TesseraError('ERR_INVALID', `partition ${e.name} ends past the device (${deviceSizeBytes} bytes)`);
    if (!(Number.isInteger(e.iopsLimit) && e.iopsLimit >= 0 && e.iopsLimit < 2 ** 32)) throw new TesseraError('ERR_INVALID', `partition ${e.name}: bad IOPS limit ${e.iopsLimit}`);
    if (!(Number.isSafeInteger(e.bandwidthBytesPerSec) && e.bandwidthBytesPerSec >= 0)) throw new TesseraError('ERR_INVALID', `partition ${e.name}: bad bandwidth limit ${e.bandwidthBytesPerSec}`);
  }
  const sorted = [...entries].sort((a, b) => a.startBytes - b.startBytes);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].startBytes < sorted[i - 1].startBytes + sorted[i - 1].sizeBytes) {
      throw new TesseraError('ERR_INVALID', `partitions ${sorted[i - 1].name} and ${sorted[i].name} overlap`);
    }
  }
}

export function encodePartitionTable(t: PartitionTable, deviceSizeBytes: number, out: Buffer): void {
  validatePartitions(t.entries, deviceSizeBytes);
  out.fill(0, 0, PARTITION_TABLE_BYTES);
  out.write(MAGIC, 0, 'latin1');
  out.writeUInt32LE(VERSION, 8);
  out.writeUInt32LE(t.entries.length, 12);
  writeU64(out, 16, t.sequence);
  writeU64(out, 24, deviceSizeBytes);
  t.entries.forEach((e, i) => {
    const at = HEADER_BYTES + i * ENTRY_BYTES;
    out.write(e.name, at, NAME_BYTES, 'utf8');
    writeU64(out, at + 32, e.startBytes);
    writeU64(out, at + 40, e.sizeBytes);
    out.writeUInt32LE(e.iopsLimit, at + 48);
    writeU64(out, at + 56, e.bandwidthBytesPerSec);
  });
  out.writeUInt32LE(crc32c(out.subarray(0, CRC_OFFSET)), CRC_OFFSET);
}

/** One copy, or why it is not valid (a string). */
export function decodePartitionTable(buf: Buffer, deviceSizeBytes: number): PartitionTable | string {
  if (buf.length < PARTITION_TABLE_BYTES) return 'short partition table';
  if (buf.toString('latin1', 0, 8) !== MAGIC) return 'bad magic';
  if (buf.readUInt32LE(CRC_OFFSET) !== crc32c(buf.subarray(0, CRC_OFFSET))) return 'bad checksum';
  if (buf.readUInt32LE(8) !== VERSION) return `unsupported partition table version ${buf.readUInt32LE(8)}`;
  const count = buf.readUInt32LE(12);
  if (count > MAX_PARTITIONS) return `entry count ${count} exceeds ${MAX_PARTITIONS}`;
  try {
    const recorded = readU64(buf, 24);
    if (recorded > deviceSizeBytes) return `table written for a ${recorded}-byte device; this one has ${deviceSizeBytes}`;
    const entries: PartitionEntry[] = [];
    for (let i = 0; i < count; i++) {
      const at = HEADER_BYTES + i * ENTRY_BYTES;
      const raw = buf.subarray(at, at + NAME_BYTES);
      const nul = raw.indexOf(0);
      entries.push({
        name: raw.toString('utf8', 0, nul < 0 ? NAME_BYTES : nul),
        startBytes: readU64(buf, at + 32),
        sizeBytes: readU64(buf, at + 40),
        iopsLimit: buf.readUInt32LE(at + 48),
        bandwidthBytesPerSec: readU64(buf, at + 56),
      });
    }
    validatePartitions(entries, deviceSizeBytes);
    return { sequence: readU64(buf, 16), entries };
  } catch (err) {
    return (err as Error).message;
  }
}

/** The newer valid copy; ERR_FORMAT naming each copy's problem when none is valid. */
export function choosePartitionTable(copies: Buffer[], deviceSizeBytes: number): PartitionTable {
  let best: PartitionTable | null = null;
  const why: string[] = [];
  for (const c of copies) {
    const t = decodePartitionTable(c, deviceSizeBytes);
    if (typeof t === 'string') why.push(t);
    else if (!best || t.sequence > best.sequence) best = t;
  }
  if (!best) throw new TesseraError('ERR_FORMAT', `no valid partition table (${why.join(', ')})`);
  return best;
}
