// Volume table: the list of volumes (id, name, size) and the next volume id,
// stored as checksummed JSON in two copies, both rewritten on every change (rare:
// create, resize, rename, delete), each copy flushed before the next is written.
// On open the valid copy with the highest sequence wins and the other is repaired.
// Pure codec.
import { crc32c } from '../stdx/crc32c.js';
import { TesseraError } from '../stdx/errors.js';
import { VOLTABLE_SLOT_BYTES } from './layout.js';
import { readU64, writeU64 } from './superblock.js';

export const VOLTABLE_MAGIC = 'TSVOLTBL';
const HEADER_BYTES = 24;
export const MAX_VOLUMES = 1024;

export interface VolumeRecord {
  id: number;
  name: string;
  sizeBytes: number;
  createdAt: string;
}

export interface VolumeTable {
  sequence: number;
  nextVolumeId: number;
  volumes: VolumeRecord[];
}

/** Encode into a sector-aligned buffer (header + JSON); throws ERR_LIMIT when it does not fit a slot. */
export function encodeVolumeTable(t: VolumeTable): Buffer {
  const json = Buffer.from(JSON.stringify({ nextVolumeId: t.nextVolumeId, volumes: t.volumes }), 'utf8');
  const total = Math.ceil((HEADER_BYTES + json.length) / 512) * 512;
  if (total > VOLTABLE_SLOT_BYTES) throw new TesseraError('ERR_LIMIT', 'volume table is full');
  const out = Buffer.alloc(total);
  out.write(VOLTABLE_MAGIC, 0, 'latin1');
  writeU64(out, 8, t.sequence);
  out.writeUInt32LE(json.length, 16);
  json.copy(out, HEADER_BYTES);
  out.writeUInt32LE(crc32c(json), 20);
  return out;
}

export function decodeVolumeTable(buf: Buffer): VolumeTable | string {
  if (buf.toString('latin1', 0, 8) !== VOLTABLE_MAGIC) return 'bad magic';
  const len = buf.readUInt32LE(16);
  if (len > buf.length - HEADER_BYTES) return `bad length ${len}`;
  const json = buf.subarray(HEADER_BYTES, HEADER_BYTES + len);
  if (crc32c(json) !== buf.readUInt32LE(20)) return 'bad checksum';
  let parsed: unknown;
  try {
    parsed = JSON.parse(json.toString('utf8'));
  } catch {
    return 'bad JSON';
  }
  const p = parsed as { nextVolumeId?: unknown; volumes?: unknown };
  if (typeof p.nextVolumeId !== 'number' || !Array.isArray(p.volumes)) return 'bad structure';
  for (const v of p.volumes as VolumeRecord[]) {
    if (typeof v.id !== 'number' || typeof v.name !== 'string' || typeof v.sizeBytes !== 'number' || typeof v.createdAt !== 'string') return 'bad volume record';
  }
  return { sequence: readU64(buf, 8), nextVolumeId: p.nextVolumeId, volumes: p.volumes as VolumeRecord[] };
}

/** Bytes to read to decode a slot's header first (then the whole slot). */
export const VOLTABLE_HEADER_BYTES = HEADER_BYTES;
