// Chunk table: one 64-byte entry per chunk saying which object of which volume
// the chunk holds, and the chunk's allocation generation. Kept in memory whole;
// on disk in two copies, 8 entries per 512-byte sector (sectors are written
// atomically by devices). An entry update rewrites its sector in both copies
// from the in-memory image; `seq` (a global update counter) tells which copy is
// newer when they disagree after a crash. Pure codec + in-memory image.
import { crc32c } from '../stdx/crc32c.js';
import { CHUNK_ENTRY_BYTES } from './layout.js';
import { readU64, writeU64 } from './superblock.js';

export const CHUNK_ENTRY_MAGIC = 0x4b484354; // "TCHK" little-endian
export const ENTRIES_PER_SECTOR = 512 / CHUNK_ENTRY_BYTES;

export const enum ChunkState {
  Free = 0,
  Used = 1,
}

export interface ChunkEntry {
  state: ChunkState;
  volumeId: number;
  objectIndex: number;
  generation: number;
  seq: number;
}

export function encodeChunkEntry(e: ChunkEntry, out: Buffer, offset: number): void {
  out.fill(0, offset, offset + CHUNK_ENTRY_BYTES);
  out.writeUInt32LE(CHUNK_ENTRY_MAGIC, offset);
  out.writeUInt32LE(e.state, offset + 4);
  out.writeUInt32LE(e.volumeId, offset + 8);
  writeU64(out, offset + 16, e.objectIndex);
  writeU64(out, offset + 24, e.generation);
  writeU64(out, offset + 32, e.seq);
  out.writeUInt32LE(crc32c(out.subarray(offset, offset + 60)), offset + 60);
}

/** null = never written (all zero); string = corrupt; entry otherwise. */
export function decodeChunkEntry(buf: Buffer, offset: number): ChunkEntry | null | string {
  const magic = buf.readUInt32LE(offset);
  if (magic === 0 && isZero(buf, offset, CHUNK_ENTRY_BYTES)) return null;
  if (magic !== CHUNK_ENTRY_MAGIC) return 'bad magic';
  if (buf.readUInt32LE(offset + 60) !== crc32c(buf.subarray(offset, offset + 60))) return 'bad checksum';
  const state = buf.readUInt32LE(offset + 4);
  if (state !== ChunkState.Free && state !== ChunkState.Used) return `bad state ${state}`;
  return {
    state,
    volumeId: buf.readUInt32LE(offset + 8),
    objectIndex: readU64(buf, offset + 16),
    generation: readU64(buf, offset + 24),
    seq: readU64(buf, offset + 32),
  };
}

function isZero(buf: Buffer, offset: number, length: number): boolean {
  for (let i = offset; i < offset + length; i++) if (buf[i] !== 0) return false;
  return true;
}
