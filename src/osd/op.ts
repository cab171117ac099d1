// The state-machine commands a PG's raft log carries (entry type 'normal'), as
// bytes: pure codec, no IO. The WAL record around an entry carries its crc32c,
// and inter-OSD frames carry their own, so no checksum is repeated here.
//
// Layout (little-endian), 24-byte header then payload:
//   0  u8  kind      1 write, 2 zero (may free space), 3 zero (keep allocated)
//   1  u8  reserved  0
//   2  u16 reserved  0
//   4  u32 volumeId
//   8  u32 offset low    } offsetBytes = high * 2^32 + low (< 2^53)
//  12  u32 offset high   }
//  16  u32 lengthBytes   write: payload length; zero: range length
//  20  u32 reserved  0
//  24  ... write payload (lengthBytes bytes)
// An empty entry (length 0) is raft's no-op of a new leader and carries no op.
// Invariants: decode() validates every field against the entry length before
// use; offsets and lengths are multiples of 512 and within IO_BYTES_MAX.
import { TesseraError } from '../stdx/errors.js';
import { IO_BYTES_MAX } from './proto.js';

export const OP_HEADER_BYTES = 24;
export const OpKind = { Write: 1, ZeroTrim: 2, ZeroKeep: 3 } as const;
export type OpKind = (typeof OpKind)[keyof typeof OpKind];

export interface Op {
  kind: OpKind;
  volumeId: number;
  offsetBytes: number;
  lengthBytes: number;
  /** Write only: a view into the entry bytes (no copy). */
  data: Buffer | null;
}

const TWO32 = 2 ** 32;

/*
 * encodeOp gives every op a buffer of its own (for a 4 KiB write, 4,120 bytes: an
 * ArrayBuffer each, over Node's pooling limit). Not slab regions, on purpose: an
 * entry stays in its PG's raft log until compaction, and a PG written rarely keeps
 * its last keepMinEntries (64) entries for as long as it stays quiet. In a slab
 * shared with every other PG's writes, each of those would keep its whole slab
 * alive: 64 PGs x 64 entries x 256 KiB is 1 GiB pinned by 16 MiB of data
 * (session 19 review of a slab version).
 */

export function encodeOp(kind: OpKind, volumeId: number, offsetBytes: number, lengthBytes: number, data: Buffer | null): Buffer {
  const out = Buffer.allocUnsafe(OP_HEADER_BYTES + (data ? data.length : 0));
  out.writeUInt8(kind, 0);
  out.writeUInt8(0, 1);
  out.writeUInt16LE(0, 2);
  out.writeUInt32LE(volumeId, 4);
  out.writeUInt32LE(offsetBytes % TWO32, 8);
  out.writeUInt32LE(Math.floor(offsetBytes / TWO32), 12);
  out.writeUInt32LE(lengthBytes, 16);
  out.writeUInt32LE(0, 20);
  if (data) data.copy(out, OP_HEADER_BYTES);
  return out;
}

/** Where an op lands: see peekOpTarget. */
export interface OpTarget {
  volumeId: number;
  offsetBytes: number;
  lengthBytes: number;
}

/**
 * The range an op's bytes target, read from its header without decoding the op
 * (no allocation: out is the caller's). False for an empty entry, an unknown
 * kind, an offset beyond 2^53 and a length of 0 or over IO_BYTES_MAX; unlike
 * decodeOp it checks neither sector alignment nor the payload's length. For
 * hints only (the OSD's page-cache advice before apply): decodeOp stays the
 * check before any apply.
 */
export function peekOpTarget(bytes: Uint8Array, out: OpTarget): boolean {
  if (bytes.length < OP_HEADER_BYTES) return false;
  const kind = bytes[0];
  if (kind !== OpKind.Write && kind !== OpKind.ZeroTrim && kind !== OpKind.ZeroKeep) return false;
  const high = u32le(bytes, 12);
  const lengthBytes = u32le(bytes, 16);
  if (high >= 2 ** 21 || lengthBytes === 0 || lengthBytes > IO_BYTES_MAX) return false;
  out.volumeId = u32le(bytes, 4);
  out.offsetBytes = high * TWO32 + u32le(bytes, 8);
  out.lengthBytes = lengthBytes;
  return true;
}

function u32le(b: Uint8Array, at: number): number {
  return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
}

/** null for an empty (no-op) entry; throws ERR_FORMAT for bytes that are not an op. */
export function decodeOp(bytes: Uint8Array): Op | null {
  if (bytes.length === 0) return null;
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  if (b.length < OP_HEADER_BYTES) throw new TesseraError('ERR_FORMAT', `op of ${b.length} bytes is shorter than its header`);
  const kind = b.readUInt8(0);
  if (kind !== OpKind.Write && kind !== OpKind.ZeroTrim && kind !== OpKind.ZeroKeep) throw new TesseraError('ERR_FORMAT', `unknown op kind ${kind}`);
  const volumeId = b.readUInt32LE(4);
  const high = b.readUInt32LE(12);
  if (high >= 2 ** 21) throw new TesseraError('ERR_FORMAT', 'op offset beyond 2^53');
  const offsetBytes = high * TWO32 + b.readUInt32LE(8);
  const lengthBytes = b.readUInt32LE(16);
  if (offsetBytes % 512 !== 0 || lengthBytes % 512 !== 0 || lengthBytes === 0 || lengthBytes > IO_BYTES_MAX) {
    throw new TesseraError('ERR_FORMAT', `op range ${offsetBytes}+${lengthBytes} not sector-aligned or too long`);
  }
  if (kind === OpKind.Write) {
    if (b.length !== OP_HEADER_BYTES + lengthBytes) throw new TesseraError('ERR_FORMAT', `write op of ${b.length} bytes declares ${lengthBytes} bytes of data`);
    return { kind, volumeId, offsetBytes, lengthBytes, data: b.subarray(OP_HEADER_BYTES) };
  }
  if (b.length !== OP_HEADER_BYTES) throw new TesseraError('ERR_FORMAT', 'zero op carries a payload');
  return { kind, volumeId, offsetBytes, lengthBytes, data: null };
}
