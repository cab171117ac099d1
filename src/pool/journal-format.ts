// Records of the pool's stripe journal (docs/raid.md "No write hole"): the
// journal superblock (where replay starts) and the row-update record (the new
// contents of one byte range of every strip of a row that a write changes).
// Pure codecs; every record is sector-aligned and checksummed.
//
// Record layout: a 512-byte header, then for each role in roleMask (ascending)
// lengthBytes of payload. The header carries the pool uuid, so a record left by
// an earlier pool on the same device is never replayed, and the crc of the
// payload, so a torn record is seen as the end of the journal.
import { crc32c } from '../stdx/crc32c.js';
import { readU64, writeU64 } from '../engine/superblock.js';

export const JOURNAL_SECTOR_BYTES = 512;
const SB_MAGIC = 'TSRJSB01';
const REC_MAGIC = 'TSRJREC1';
const HDR_CRC_OFFSET = JOURNAL_SECTOR_BYTES - 4;

export interface JournalSuperblock {
  sequence: number;
  poolUuid: string;
  /** Records with seq <= checkpointSeq are applied and durable in place. */
  checkpointSeq: number;
  /** Ring offset of the record checkpointSeq + 1. */
  checkpointPos: number;
}

export interface RowUpdate {
  containerId: number;
  generation: number;
  row: number;
  stripOffset: number;
  lengthBytes: number;
  /** New contents by role (data 0..k-1, then parity); null roles are unchanged. */
  byRole: (Uint8Array | null)[];
}

export interface JournalRecordHeader {
  seq: number;
  poolUuid: string;
  containerId: number;
  generation: number;
  row: number;
  stripOffset: number;
  lengthBytes: number;
  roleMask: number;
  payloadCrc: number;
}

export function encodeJournalSuperblock(sb: JournalSuperblock, out: Buffer): void {
  out.fill(0, 0, JOURNAL_SECTOR_BYTES);
  out.write(SB_MAGIC, 0, 'latin1');
  writeU64(out, 8, sb.sequence);
  Buffer.from(sb.poolUuid, 'hex').copy(out, 16);
  writeU64(out, 32, sb.checkpointSeq);
  writeU64(out, 40, sb.checkpointPos);
  out.writeUInt32LE(crc32c(out.subarray(0, HDR_CRC_OFFSET)), HDR_CRC_OFFSET);
}

export function decodeJournalSuperblock(buf: Buffer, poolUuid: string): JournalSuperblock | null {
  if (buf.length < JOURNAL_SECTOR_BYTES || buf.toString('latin1', 0, 8) !== SB_MAGIC) return null;
  if (buf.readUInt32LE(HDR_CRC_OFFSET) !== crc32c(buf.subarray(0, HDR_CRC_OFFSET))) return null;
  if (buf.toString('hex', 16, 32) !== poolUuid) return null;
  try {
    return { sequence: readU64(buf, 8), poolUuid, checkpointSeq: readU64(buf, 32), checkpointPos: readU64(buf, 40) };
  } catch {
    return null;
  }
}

function roleCount(mask: number): number {
  let n = 0;
  for (let m = mask >>> 0; m !== 0; m &= m - 1) n++;
  return n;
}

/** Bytes a record of this update takes in the journal. */
export function recordBytes(u: RowUpdate): number {
  return JOURNAL_SECTOR_BYTES + u.byRole.filter((b) => b !== null).length * u.lengthBytes;
}

/** Encodes a record into out at `at` (out must have recordBytes(u) bytes from there). */
export function encodeJournalRecord(u: RowUpdate, seq: number, poolUuid: string, out: Buffer, at: number): void {
  let mask = 0;
  let p = at + JOURNAL_SECTOR_BYTES;
  for (const [role, b] of u.byRole.entries()) {
    if (!b) continue;
    mask |= 1 << role;
    out.set(b, p);
    p += u.lengthBytes;
  }
  const h = out.subarray(at, at + JOURNAL_SECTOR_BYTES);
  h.fill(0);
  h.write(REC_MAGIC, 0, 'latin1');
  writeU64(h, 8, seq);
  Buffer.from(poolUuid, 'hex').copy(h, 16);
  writeU64(h, 32, u.containerId);
  writeU64(h, 40, u.generation);
  h.writeUInt32LE(u.row, 48);
  h.writeUInt32LE(u.stripOffset, 52);
  h.writeUInt32LE(u.lengthBytes, 56);
  h.writeUInt32LE(mask >>> 0, 60);
  h.writeUInt32LE(crc32c(out.subarray(at + JOURNAL_SECTOR_BYTES, p)), 64);
  h.writeUInt32LE(crc32c(h.subarray(0, HDR_CRC_OFFSET)), HDR_CRC_OFFSET);
}

/** The header at buf[at..], if it is a valid record header of this pool; lengths checked against maxBytes. */
export function decodeJournalHeader(buf: Buffer, at: number, poolUuid: string, maxBytes: number): JournalRecordHeader | null {
  if (at + JOURNAL_SECTOR_BYTES > buf.length) return null;
  const h = buf.subarray(at, at + JOURNAL_SECTOR_BYTES);
  if (h.toString('latin1', 0, 8) !== REC_MAGIC || h.readUInt32LE(HDR_CRC_OFFSET) !== crc32c(h.subarray(0, HDR_CRC_OFFSET))) return null;
  if (h.toString('hex', 16, 32) !== poolUuid) return null;
  try {
    const r: JournalRecordHeader = {
      seq: readU64(h, 8),
      poolUuid,
      containerId: readU64(h, 32),
      generation: readU64(h, 40),
      row: h.readUInt32LE(48),
      stripOffset: h.readUInt32LE(52),
      lengthBytes: h.readUInt32LE(56),
      roleMask: h.readUInt32LE(60),
      payloadCrc: h.readUInt32LE(64),
    };
    const total = JOURNAL_SECTOR_BYTES + roleCount(r.roleMask) * r.lengthBytes;
    if (r.lengthBytes === 0 || r.lengthBytes % JOURNAL_SECTOR_BYTES !== 0 || total > maxBytes) return null;
    return r;
  } catch {
    return null;
  }
}

export function journalRecordBytes(h: JournalRecordHeader): number {
  return JOURNAL_SECTOR_BYTES + roleCount(h.roleMask) * h.lengthBytes;
}

/** The update a valid header and its payload describe, or null when the payload fails its crc (torn). */
export function decodeJournalPayload(h: JournalRecordHeader, buf: Buffer, at: number, width: number): RowUpdate | null {
  const start = at + JOURNAL_SECTOR_BYTES;
  const end = at + journalRecordBytes(h);
  if (end > buf.length || crc32c(buf.subarray(start, end)) !== h.payloadCrc) return null;
  const byRole: (Uint8Array | null)[] = [];
  let p = start;
  for (let role = 0; role < width; role++) {
    if (h.roleMask & (1 << role)) {
      byRole.push(Buffer.from(buf.subarray(p, p + h.lengthBytes)));
      p += h.lengthBytes;
    } else byRole.push(null);
  }
  if (width < 32 && h.roleMask >>> width !== 0) return null; // roles beyond the container (>>> 32 would be >>> 0)
  return { containerId: h.containerId, generation: h.generation, row: h.row, stripOffset: h.stripOffset, lengthBytes: h.lengthBytes, byRole };
}
