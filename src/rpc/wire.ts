// Byte-level helpers shared by the RPC message codecs (messages.ts, raft-codec.ts):
// a writer that lays small fields into one pre-sized buffer and passes bulk data
// through as its own part (for writev, no copy), and a bounded reader whose every
// read is checked against the end of the payload and reports a protocol error
// instead of throwing a RangeError or reading past the end. Pure: no IO.
//
// Conventions of the wire:
// - Integers are little-endian. A "u64" carries a JS safe integer: the writer asserts
//   0 <= v <= 2^53 - 1 and the reader refuses a larger value (ERR_PROTOCOL), so no
//   bigint is needed on the hot path and no precision is ever lost.
// - Reserved fields are zero; the reader refuses anything else, so each value has
//   exactly one encoding and decode→encode reproduces the bytes.
//
// Invariants:
// - PartsWriter takes exactly one head buffer (every non-bulk byte plus the caller's
//   headroom) and asserts, at finish(), that it filled it exactly. Heads of up to
//   HEAD_SLAB_PIECE_BYTES_MAX come from a zero-filled 64 KiB slab, each region handed
//   out once and never reused (so it is still zero): allocating an ArrayBuffer per
//   message cost more than the rest of encoding a 4 KiB write. A held head pins its
//   slab (64 KiB) until it is collected.
// - Data of at most INLINE_DATA_BYTES_MAX bytes is copied into the head (a separate
//   iovec and a native crc call cost more than copying a few bytes); larger data is a
//   part of its own, the caller's Buffer (or a view of its Uint8Array) as-is.
// - PayloadReader never reads outside [start, end) of the buffer it was given.
import { assert, fail } from '../stdx/assert.js';
import { TesseraError } from '../stdx/errors.js';

/** Data up to this size is copied into the head buffer instead of becoming a part. */
export const INLINE_DATA_BYTES_MAX = 128;

const U32_MAX = 0xffffffff;
const TWO_POW_32 = 0x100000000;
/** The high word of a safe integer is at most 2^21 - 1. */
const SAFE_HIGH_WORD_MAX = 0x1fffff;
const EMPTY = Buffer.alloc(0);
const HEAD_SLAB_BYTES = 64 * 1024;
const HEAD_SLAB_PIECE_BYTES_MAX = 2048;
let headSlab: Buffer = EMPTY;
let headSlabUsedBytes = 0;

/** A zero-filled buffer of `bytes` for a message head: a fresh region of the current slab when small. */
export function allocHead(bytes: number): Buffer {
  if (bytes === 0) return EMPTY;
  if (bytes > HEAD_SLAB_PIECE_BYTES_MAX) return Buffer.alloc(bytes);
  if (headSlabUsedBytes + bytes > headSlab.length) {
    headSlab = Buffer.alloc(HEAD_SLAB_BYTES);
    headSlabUsedBytes = 0;
  }
  const head = headSlab.subarray(headSlabUsedBytes, headSlabUsedBytes + bytes);
  headSlabUsedBytes = (headSlabUsedBytes + bytes + 7) & ~7; // keep regions 8-byte aligned
  return head;
}

export function protocolError(message: string): TesseraError {
  return new TesseraError('ERR_PROTOCOL', message);
}

/** Encoders: a problem found by a shared check is a programmer error. */
export function assertNoProblem(problem: string | null): void {
  assert(problem === null, problem ?? '');
}

/** Decoders: a problem found by a shared check is the peer's: ERR_PROTOCOL. */
export function refuse(problem: string | null): void {
  if (problem !== null) throw protocolError(problem);
}

export function isSafeU64(v: number): boolean {
  return Number.isSafeInteger(v) && v >= 0;
}

/** Node (OSD) ids are positive: 0 is raft's NONE. */
export function isNodeId(v: number): boolean {
  return Number.isSafeInteger(v) && v > 0;
}

export function isU32(v: number): boolean {
  return Number.isInteger(v) && v >= 0 && v <= U32_MAX;
}

/** Bytes of `dataBytes` of data that land in the head (inlined) rather than in a part of their own. */
export function inlinedBytes(dataBytes: number): number {
  return dataBytes <= INLINE_DATA_BYTES_MAX ? dataBytes : 0;
}

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

export class PartsWriter {
  private readonly head: Buffer;
  private pos: number;
  private partStart = 0;
  private readonly parts: Buffer[] = [];

  /** `headBytes` counts every byte written with the field methods and inlined data; `headroomBytes` are left zero at the front of the first part. */
  constructor(headBytes: number, headroomBytes: number) {
    if (!(Number.isInteger(headroomBytes) && headroomBytes >= 0)) fail(`bad headroom ${headroomBytes}`);
    this.head = allocHead(headBytes + headroomBytes);
    this.pos = headroomBytes;
  }

  u8(v: number): void {
    if (!(Number.isInteger(v) && v >= 0 && v <= 0xff)) fail(`u8 out of range: ${v}`);
    this.head[this.pos++] = v;
  }

  u16(v: number): void {
    if (!(Number.isInteger(v) && v >= 0 && v <= 0xffff)) fail(`u16 out of range: ${v}`);
    this.head.writeUInt16LE(v, this.pos);
    this.pos += 2;
  }

  u32(v: number): void {
    if (!(isU32(v))) fail(`u32 out of range: ${v}`);
    this.head.writeUInt32LE(v, this.pos);
    this.pos += 4;
  }

  u64(v: number): void {
    if (!(isSafeU64(v))) fail(`u64 field is not a non-negative safe integer: ${v}`);
    this.head.writeUInt32LE(v >>> 0, this.pos); // ToUint32 is v mod 2^32 for any safe integer
    this.head.writeUInt32LE(Math.floor(v / TWO_POW_32), this.pos + 4);
    this.pos += 8;
  }

  zeros(n: number): void {
    this.pos += n; // the head is zero-filled at allocation
  }

  /** Appends data: copied into the head if small, else passed through as its own part. */
  data(data: Uint8Array): void {
    if (data.length <= INLINE_DATA_BYTES_MAX) {
      this.head.set(data, this.pos);
      this.pos += data.length;
      return;
    }
    if (this.pos > this.partStart) this.parts.push(this.head.subarray(this.partStart, this.pos));
    this.partStart = this.pos;
    this.parts.push(asBuffer(data));
  }

  finish(): Buffer[] {
    if (!(this.pos === this.head.length)) fail(`encoder sized its head at ${this.head.length} bytes but wrote ${this.pos}`);
    if (this.pos > this.partStart) this.parts.push(this.head.subarray(this.partStart, this.pos));
    return this.parts;
  }
}

/** Sequential reads from buf[0, buf.length), each bounds-checked; errors name `context`. */
export class PayloadReader {
  pos = 0;
  private end: number;

  constructor(
    private readonly buf: Buffer,
    private readonly context: string,
  ) {
    this.end = buf.length;
  }

  remaining(): number {
    return this.end - this.pos;
  }

  fail(message: string): never {
    throw protocolError(`${this.context}: ${message}`);
  }

  private need(n: number, field: string): void {
    if (n > this.end - this.pos) this.fail(`truncated at ${field} (offset ${this.pos}, needs ${n} bytes, ${this.end - this.pos} left)`);
  }

  u8(field: string): number {
    this.need(1, field);
    return this.buf[this.pos++];
  }

  u16(field: string): number {
    this.need(2, field);
    const v = this.buf.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }

  u32(field: string): number {
    this.need(4, field);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  u64(field: string): number {
    this.need(8, field);
    const low = this.buf.readUInt32LE(this.pos);
    const high = this.buf.readUInt32LE(this.pos + 4);
    if (high > SAFE_HIGH_WORD_MAX) this.fail(`${field} exceeds 2^53 - 1 (high word 0x${high.toString(16)})`);
    this.pos += 8;
    return high * TWO_POW_32 + low;
  }

  /** Skips n bytes that must be zero. */
  zeros(n: number, field: string): void {
    this.need(n, field);
    for (let i = 0; i < n; i++) if (this.buf[this.pos + i] !== 0) this.fail(`${field} is not zero`);
    this.pos += n;
  }

  /** A view of the next n bytes (no copy), after checking n against what is left. */
  bytes(n: number, field: string): Buffer {
    this.need(n, field);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  /** Runs `read` with the end lowered to pos + n, and requires it to consume exactly n bytes. */
  within<T>(n: number, field: string, read: () => T): T {
    this.need(n, field);
    const savedEnd = this.end;
    const limit = this.pos + n;
    this.end = limit;
    const v = read();
    if (this.pos !== limit) this.fail(`${field}: ${limit - this.pos} bytes left unread of ${n}`);
    this.end = savedEnd;
    return v;
  }

  /** Requires every byte to have been consumed. */
  done(): void {
    if (this.pos !== this.end) this.fail(`${this.end - this.pos} trailing bytes`);
  }
}
