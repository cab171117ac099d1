// Pure iSCSI PDU codec (RFC 7143 §11): an incremental framer for received bytes
// (PduReader), header accessors, decoders and encoders for every PDU the target
// and our test initiator exchange, and framePdu, which lays out a PDU for writing.
// No sockets, no timers, no session state: login.ts and session.ts own those.
//
// Invariants:
// - Wire layout (§11.2): BHS (48) + AHS (TotalAHSLength × 4) + [HeaderDigest 4] +
//   data + zero pad to 4 + [DataDigest 4, only when DataSegmentLength > 0].
//   Digests are CRC32C stored least-significant byte first (RFC 3720 App. B.4
//   vectors; docs/iscsi.md §1); HeaderDigest covers BHS + AHS, DataDigest covers
//   data + padding.
// - Every length from the wire is checked against a limit before we wait for the
//   bytes it announces: TotalAHSLength ≤ maxAhsBytes, DataSegmentLength ≤
//   maxDataSegmentBytes. The HeaderDigest (when negotiated) is verified before
//   any header field is trusted, so a corrupt header is reported as such.
// - After a framing error the reader is poisoned: every later next() rethrows it,
//   because the byte stream can no longer be split into PDUs.
// - InPdu.bhs and .ahs are private copies; .data is a view of the received chunk
//   when the segment lies in one (the hot path: no copy), else a private copy.
//   Received chunks are never modified; callers must not reuse pushed chunks
//   (socket chunks never are) and must not modify .data.
// - Encoders return fresh buffers; they assert (programmer error) on values that
//   do not fit their fields. Decoders throw PduFramingError (ERR_PROTOCOL) only
//   for a malformed AHS; semantic checks belong to the session.
import { assert, fail } from '../../stdx/assert.js';
import { copyBytes } from '../../stdx/shared-copy.js';
import { crc32c, crc32cRange } from '../../stdx/crc32c.js';
import { TesseraError } from '../../stdx/errors.js';
import {
  BHS_BYTES,
  OP_DATA_IN,
  OP_DATA_OUT,
  OP_LOGIN_REQ,
  OP_LOGIN_RESP,
  OP_LOGOUT_REQ,
  OP_LOGOUT_RESP,
  OP_NOP_IN,
  OP_NOP_OUT,
  OP_R2T,
  OP_REJECT,
  OP_SCSI_CMD,
  OP_SCSI_RESP,
  OP_TEXT_REQ,
  OP_TEXT_RESP,
  OP_TMF_REQ,
  OP_TMF_RESP,
  TAG_NONE,
} from './pdu-types.js';
import type {
  DataInFields,
  DataOutPdu,
  DigestSettings,
  InPdu,
  LoginRequestPdu,
  LoginResponseFields,
  LogoutRequestPdu,
  LogoutResponseFields,
  NopInFields,
  NopOutPdu,
  PduHeader,
  R2tFields,
  RejectFields,
  ScsiCommandPdu,
  ScsiResponseFields,
  TextRequestPdu,
  TextResponseFields,
  TmfRequestPdu,
  TmfResponseFields,
} from './pdu-types.js';

/** TotalAHSLength is one byte counting 4-byte words (§11.2.1). */
export const AHS_BYTES_MAX = 255 * 4;
/** DataSegmentLength is 24 bits (§11.2.1). */
export const DATA_SEGMENT_BYTES_MAX = 0xffffff;
export const DIGEST_BYTES = 4;
/** AHSType codes (§11.2.2.1). */
export const AHS_TYPE_EXTENDED_CDB = 1;
export const AHS_TYPE_BIDI_READ_LENGTH = 2;
/** The CDB field inside the SCSI Command BHS (§11.3). */
export const CDB_BHS_BYTES = 16;

const CDB_OFFSET = 32;
const EMPTY = Buffer.alloc(0);
/** Shared zero padding for framePdu: never written to, so sharing is safe. */
const ZERO_PAD = [EMPTY, Buffer.alloc(1), Buffer.alloc(2), Buffer.alloc(3)] as const;

// ---------------------------------------------------------------------------
// Errors

export type PduFramingErrorKind = 'header-digest' | 'too-long' | 'bad-ahs' | 'reserved';

/**
 * A received byte stream that cannot be framed or a malformed AHS. At ERL 0 the
 * session drops the connection (docs/iscsi.md §3); `kind` lets it log why.
 */
export class PduFramingError extends TesseraError {
  readonly kind: PduFramingErrorKind;
  constructor(kind: PduFramingErrorKind, message: string) {
    super('ERR_PROTOCOL', `iSCSI ${kind}: ${message}`);
    this.kind = kind;
    this.name = 'PduFramingError';
  }
}

// ---------------------------------------------------------------------------
// Small helpers

/** Bytes up to the next multiple of 4 (data and AHS padding, §11.2.2.2 / §11.2.4). */
export function pad4(bytes: number): number {
  return (bytes + 3) & ~3;
}

function isU32(v: number): boolean {
  return Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

// The put helpers run several times per PDU: their messages are built only on failure,
// and bytes are stored directly (Buffer's writeUInt*BE validate again, through wrappers).
function putU32(bhs: Buffer, at: number, v: number, name: string): void {
  if (!isU32(v)) fail(`${name} is not a u32: ${v}`);
  bhs[at] = v >>> 24;
  bhs[at + 1] = v >>> 16;
  bhs[at + 2] = v >>> 8;
  bhs[at + 3] = v;
}

function putU16(bhs: Buffer, at: number, v: number, name: string): void {
  if (!(Number.isInteger(v) && v >= 0 && v <= 0xffff)) fail(`${name} is not a u16: ${v}`);
  bhs[at] = v >>> 8;
  bhs[at + 1] = v;
}

function putU8(bhs: Buffer, at: number, v: number, name: string): void {
  if (!(Number.isInteger(v) && v >= 0 && v <= 0xff)) fail(`${name} is not a u8: ${v}`);
  bhs[at] = v;
}

function putDataSegmentBytes(bhs: Buffer, dataSegmentBytes: number): void {
  if (!(Number.isInteger(dataSegmentBytes) && dataSegmentBytes >= 0 && dataSegmentBytes <= DATA_SEGMENT_BYTES_MAX)) {
    fail(`DataSegmentLength out of range: ${dataSegmentBytes}`);
  }
  bhs[5] = dataSegmentBytes >>> 16;
  bhs[6] = (dataSegmentBytes >>> 8) & 0xff;
  bhs[7] = dataSegmentBytes & 0xff;
}

function putSnTrio(bhs: Buffer, f: { statSN: number; expCmdSN: number; maxCmdSN: number }): void {
  putU32(bhs, 24, f.statSN, 'StatSN');
  putU32(bhs, 28, f.expCmdSN, 'ExpCmdSN');
  putU32(bhs, 32, f.maxCmdSN, 'MaxCmdSN');
}

function readSnTrio(bhs: Buffer): { statSN: number; expCmdSN: number; maxCmdSN: number } {
  return { statSN: bhs.readUInt32BE(24), expCmdSN: bhs.readUInt32BE(28), maxCmdSN: bhs.readUInt32BE(32) };
}

/** A fresh zeroed BHS with byte 0 (I bit + opcode) and byte 1 set. */
const u8Fill = Uint8Array.prototype.fill;

function newBhs(opcode: number, immediate: boolean, byte1: number): Buffer {
  // allocUnsafe + fill: a slice of Node's buffer pool instead of a new ArrayBuffer per PDU.
  // Uint8Array's fill: Buffer's re-validates its arguments (a fifth of an encode).
  const bhs = Buffer.allocUnsafe(BHS_BYTES);
  u8Fill.call(bhs, 0);
  bhs[0] = (immediate ? 0x40 : 0) | opcode;
  bhs[1] = byte1;
  return bhs;
}

function bit(cond: boolean, mask: number): number {
  return cond ? mask : 0;
}

function crcLe(value: number): Buffer {
  const b = Buffer.allocUnsafe(DIGEST_BYTES);
  b.writeUInt32LE(value >>> 0, 0);
  return b;
}

// ---------------------------------------------------------------------------
// Header accessors (§11.2.1)

export function readHeader(bhs: Buffer): PduHeader {
  if (!(bhs.length >= BHS_BYTES)) fail(`BHS is ${bhs.length} bytes`);
  return {
    opcode: bhs[0] & 0x3f,
    immediate: (bhs[0] & 0x40) !== 0,
    final: (bhs[1] & 0x80) !== 0,
    totalAhsBytes: bhs[4] * 4,
    dataSegmentBytes: (bhs[5] << 16) | (bhs[6] << 8) | bhs[7],
    itt: bhs.readUInt32BE(16),
  };
}

/**
 * The single-level LUN in the 8-byte LUN field (SAM-5 §4.7): address method 00b
 * (peripheral device, bus 0, LUN in byte 1) or 01b (flat space, 14 bits in bytes
 * 0-1), with the remaining six bytes zero. Anything else (other address methods,
 * a non-zero bus, multi-level LUNs) is -1: the caller answers "LUN not supported".
 */
export function decodeLun(bhs: Buffer, offset = 8): number {
  for (let i = offset + 2; i < offset + 8; i++) if (bhs[i] !== 0) return -1;
  const b0 = bhs[offset];
  const method = b0 >>> 6;
  if (method === 0) return b0 === 0 ? bhs[offset + 1] : -1;
  if (method === 1) return ((b0 & 0x3f) << 8) | bhs[offset + 1];
  return -1;
}

/** Writes `lun` as peripheral (< 256) or flat (256..16383) addressing, like Linux does. */
export function encodeLun(lun: number, out: Buffer, offset: number): void {
  if (!(Number.isInteger(lun) && lun >= 0 && lun <= 0x3fff)) fail(`LUN out of range: ${lun}`);
  for (let i = offset; i < offset + 8; i++) out[i] = 0;
  if (lun < 256) {
    out[offset + 1] = lun;
  } else {
    out[offset] = 0x40 | (lun >>> 8);
    out[offset + 1] = lun & 0xff;
  }
}

// ---------------------------------------------------------------------------
// PduReader: incremental framing of received bytes

/** A FIFO of received chunks; reads copy out of them without concatenating. */
class ChunkQueue {
  private chunks: Buffer[] = [];
  /** Index of the first chunk with unread bytes. */
  private first = 0;
  /** Bytes of chunks[first] already consumed. */
  private firstOffset = 0;
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Copies n bytes that start `skipBytes` past the read position into dst, without consuming. */
  peek(dst: Buffer, dstOffset: number, skipBytes: number, n: number): void {
    assert(skipBytes + n <= this.length, 'peek past the buffered bytes');
    let i = this.first;
    let at = this.firstOffset + skipBytes;
    while (at >= this.chunks[i].length) {
      at -= this.chunks[i].length;
      i++;
    }
    while (n > 0) {
      const chunk = this.chunks[i];
      const take = Math.min(n, chunk.length - at);
      chunk.copy(dst, dstOffset, at, at + take);
      dstOffset += take;
      n -= take;
      at = 0;
      i++;
    }
  }

  /**
   * Consumes n bytes and returns them: a view of the received chunk when they lie
   * in one (no copy: socket chunks are never reused, so the view stays valid),
   * otherwise a fresh copy.
   */
  take(n: number): Buffer {
    const chunk = this.chunks[this.first];
    if (chunk.length - this.firstOffset >= n) {
      const view = chunk.subarray(this.firstOffset, this.firstOffset + n);
      this.length -= n;
      this.firstOffset += n;
      if (this.firstOffset === chunk.length) this.dropFirst();
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    this.read(out, 0, n);
    return out;
  }

  /** Consumes n bytes, copying them into dst (at dstOffset) unless dst is null. */
  read(dst: Buffer | null, dstOffset: number, n: number): void {
    assert(n <= this.length, 'read past the buffered bytes');
    this.length -= n;
    while (n > 0) {
      const chunk = this.chunks[this.first];
      const take = Math.min(n, chunk.length - this.firstOffset);
      if (dst !== null) copyBytes(chunk, this.firstOffset, this.firstOffset + take, dst, dstOffset);
      dstOffset += take;
      n -= take;
      this.firstOffset += take;
      if (this.firstOffset === chunk.length) this.dropFirst();
    }
  }

  private dropFirst(): void {
    this.firstOffset = 0;
    this.first++;
    if (this.first === this.chunks.length) {
      this.chunks.length = 0;
      this.first = 0;
    } else if (this.first >= 64 && this.first * 2 >= this.chunks.length) {
      // Compact now and then so the array does not grow with every chunk ever
      // pushed, without an O(n) shift per chunk.
      this.chunks.splice(0, this.first);
      this.first = 0;
    }
  }
}

/** The PDU at the head of the stream, once its BHS has arrived. */
interface PendingPdu {
  bhs: Buffer;
  ahsBytes: number;
  /** Digest settings latched when the BHS was first seen. */
  headerDigest: boolean;
  dataDigest: boolean;
  /** BHS + AHS + HeaderDigest. */
  headerBytes: number;
  /** Set once the header is verified and within limits. */
  header: PduHeader | null;
  ahs: Buffer | null;
  totalBytes: number;
}

/**
 * Where a PDU's data segment should land: called once the header is checked, with
 * the BHS and the segment's length; returns a buffer of exactly dataBytes to copy
 * the segment into (it becomes InPdu.data), or null to get it the usual way.
 */
export type DataPlacement = (bhs: Buffer, dataBytes: number) => Buffer | null;

export interface PduReaderOptions {
  /** Our declared MaxRecvDataSegmentLength: a longer DataSegmentLength is a protocol error. */
  maxDataSegmentBytes: number;
  /** Largest TotalAHSLength × 4 accepted; default (and maximum) AHS_BYTES_MAX. */
  maxAhsBytes?: number;
}

/**
 * Splits the initiator's byte stream into PDUs. push() buffers everything it is
 * given (the caller applies backpressure: it stops reading the socket while
 * next() returns null with many bytes pending); next() returns one complete PDU
 * or null.
 *
 * Digest settings are latched per PDU when its 48th BHS byte has been seen by
 * next(). The caller switches with setDigests() after sending the final Login
 * Response, before which the initiator may not send a Full Feature Phase PDU, so
 * no byte of such a PDU can have been examined under the login settings.
 */
export class PduReader {
  private readonly queue = new ChunkQueue();
  private maxDataSegmentBytes: number;
  private readonly maxAhsBytes: number;
  private digests: DigestSettings = { header: false, data: false };
  private pending: PendingPdu | null = null;
  private failure: PduFramingError | null = null;
  private readonly scratch = Buffer.alloc(DIGEST_BYTES);
  private placement: DataPlacement | null = null;

  constructor(opts: PduReaderOptions) {
    this.maxDataSegmentBytes = checkedMaxDataSegmentBytes(opts.maxDataSegmentBytes);
    const maxAhsBytes = opts.maxAhsBytes ?? AHS_BYTES_MAX;
    if (!(Number.isInteger(maxAhsBytes) && maxAhsBytes >= 0 && maxAhsBytes <= AHS_BYTES_MAX)) fail(`maxAhsBytes out of range: ${maxAhsBytes}`);
    this.maxAhsBytes = maxAhsBytes;
  }

  /** Changes the DataSegmentLength limit for PDUs whose header is not yet checked (login uses its own). */
  setMaxDataSegmentBytes(n: number): void {
    this.maxDataSegmentBytes = checkedMaxDataSegmentBytes(n);
  }

  /** Applies to the next PDU whose BHS has not been examined yet (see the class comment). */
  setDigests(d: DigestSettings): void {
    this.digests = { header: d.header, data: d.data };
  }

  /**
   * Lets the caller choose where data segments land (Data-Out payloads straight into
   * their task's buffer: one copy from the socket's chunks instead of two).
   */
  setDataPlacement(fn: DataPlacement | null): void {
    this.placement = fn;
  }

  /** Bytes pushed and not yet returned as part of a PDU. */
  get bufferedBytes(): number {
    return this.queue.length;
  }

  /** Appends received bytes; the chunk is referenced, not copied, and must not be modified later. */
  push(chunk: Buffer): void {
    this.queue.push(chunk);
  }

  /** The next complete PDU, or null when more bytes are needed. Throws PduFramingError. */
  next(): InPdu | null {
    if (this.failure !== null) throw this.failure;
    try {
      return this.advance();
    } catch (err) {
      if (err instanceof PduFramingError) this.failure = err;
      throw err;
    }
  }

  private advance(): InPdu | null {
    let p = this.pending;
    if (p === null) {
      if (this.queue.length < BHS_BYTES) return null;
      p = this.begin();
      this.pending = p;
    }
    if (p.header === null) {
      if (this.queue.length < p.headerBytes) return null;
      this.checkHeader(p);
    }
    if (this.queue.length < p.totalBytes) return null;
    return this.finish(p);
  }

  /** Copies the BHS (it becomes InPdu.bhs) and latches the digest settings. */
  private begin(): PendingPdu {
    const bhs = Buffer.allocUnsafe(BHS_BYTES);
    this.queue.peek(bhs, 0, 0, BHS_BYTES);
    // TotalAHSLength is at most 1020 bytes, so waiting for the AHS and the
    // HeaderDigest before trusting it keeps the buffer bounded.
    const ahsBytes = bhs[4] * 4;
    const headerDigest = this.digests.header;
    return {
      bhs,
      ahsBytes,
      headerDigest,
      dataDigest: this.digests.data,
      headerBytes: BHS_BYTES + ahsBytes + (headerDigest ? DIGEST_BYTES : 0),
      header: null,
      ahs: null,
      totalBytes: Infinity,
    };
  }

  /** Verifies the HeaderDigest first, then the reserved bit and the limits. */
  private checkHeader(p: PendingPdu): void {
    if (p.ahsBytes > 0) {
      p.ahs = Buffer.allocUnsafe(p.ahsBytes);
      this.queue.peek(p.ahs, 0, BHS_BYTES, p.ahsBytes);
    }
    if (p.headerDigest) {
      this.queue.peek(this.scratch, 0, BHS_BYTES + p.ahsBytes, DIGEST_BYTES);
      let crc = crc32c(p.bhs);
      if (p.ahs !== null) crc = crc32c(p.ahs, crc);
      const got = this.scratch.readUInt32LE(0);
      if (got !== crc) throw new PduFramingError('header-digest', `HeaderDigest ${hex32(got)}, computed ${hex32(crc)}`);
    }
    // Bit 7 of byte 0 is reserved (§11.2.1); a set bit means we are not looking
    // at a BHS, so framing is lost.
    if ((p.bhs[0] & 0x80) !== 0) throw new PduFramingError('reserved', `reserved bit set in BHS byte 0 (0x${p.bhs[0].toString(16)})`);
    if (p.ahsBytes > this.maxAhsBytes) throw new PduFramingError('too-long', `TotalAHSLength ${p.ahsBytes} bytes exceeds ${this.maxAhsBytes}`);
    const header = readHeader(p.bhs);
    if (header.dataSegmentBytes > this.maxDataSegmentBytes) {
      throw new PduFramingError('too-long', `DataSegmentLength ${header.dataSegmentBytes} exceeds ${this.maxDataSegmentBytes}`);
    }
    const dataBytes = header.dataSegmentBytes;
    p.header = header;
    p.totalBytes = p.headerBytes + pad4(dataBytes) + (p.dataDigest && dataBytes > 0 ? DIGEST_BYTES : 0);
  }

  /** Consumes the whole PDU; the header bytes were already copied by begin/checkHeader. */
  private finish(p: PendingPdu): InPdu {
    const header = p.header;
    assert(header !== null);
    this.pending = null;
    this.queue.read(null, 0, p.headerBytes);
    const dataBytes = header.dataSegmentBytes;
    if (dataBytes === 0) return { header, bhs: p.bhs, ahs: p.ahs, data: EMPTY, dataDigestOk: true };
    const target = this.placement === null ? null : this.placement(p.bhs, dataBytes);
    let data: Buffer;
    if (target === null) data = this.queue.take(dataBytes);
    else {
      if (!(target.length === dataBytes)) fail(`data placement of ${target.length} bytes for a ${dataBytes}-byte segment`);
      this.queue.read(target, 0, dataBytes);
      data = target;
    }
    const padBytes = pad4(dataBytes) - dataBytes;
    // Padding SHOULD be zero but is covered by the digest as received (RFC 7143 §13.1).
    if (padBytes > 0) this.queue.read(this.scratch, 0, padBytes);
    let dataDigestOk = true;
    if (p.dataDigest) {
      let crc = crc32c(data);
      if (padBytes > 0) crc = crc32cRange(this.scratch, 0, padBytes, crc);
      this.queue.read(this.scratch, 0, DIGEST_BYTES);
      dataDigestOk = this.scratch.readUInt32LE(0) === crc;
    }
    return { header, bhs: p.bhs, ahs: p.ahs, data, dataDigestOk };
  }
}

function checkedMaxDataSegmentBytes(n: number): number {
  if (!(Number.isInteger(n) && n >= 0 && n <= DATA_SEGMENT_BYTES_MAX)) fail(`maxDataSegmentBytes out of range: ${n}`);
  return n;
}

function hex32(v: number): string {
  return `0x${(v >>> 0).toString(16).padStart(8, '0')}`;
}

// ---------------------------------------------------------------------------
// Framing for transmission

/**
 * The buffers to write, in order, for one PDU: BHS, AHS, HeaderDigest, data,
 * padding, DataDigest (each only when present). Sets TotalAHSLength and
 * DataSegmentLength in `bhs` (bytes 4-7) from `ahs` and `data`. Padding buffers
 * are shared constants; digest buffers are fresh.
 */
/**
 * framePdu's common case without an array: no AHS, no digests. Sets the lengths in
 * `bhs`, then hands BHS, data and padding to `write` in order; onSent goes with the
 * last of them (the transport calls it once that one, and so all, left).
 */
export function writePlainPdu(bhs: Buffer, data: Buffer | null, write: (b: Buffer, onSent?: () => void) => void, onSent?: () => void): void {
  const dataBytes = data === null ? 0 : data.length;
  bhs[4] = 0;
  putDataSegmentBytes(bhs, dataBytes);
  if (data === null || dataBytes === 0) return write(bhs, onSent);
  write(bhs);
  const padBytes = pad4(dataBytes) - dataBytes;
  if (padBytes === 0) return write(data, onSent);
  write(data);
  write(ZERO_PAD[padBytes], onSent);
}

export function framePdu(bhs: Buffer, ahs: Buffer | null, data: Buffer | null, digests: DigestSettings): Buffer[] {
  if (!(bhs.length === BHS_BYTES)) fail(`BHS is ${bhs.length} bytes`);
  const ahsBytes = ahs === null ? 0 : ahs.length;
  if (!(ahsBytes % 4 === 0 && ahsBytes <= AHS_BYTES_MAX)) fail(`AHS of ${ahsBytes} bytes`);
  const dataBytes = data === null ? 0 : data.length;
  bhs[4] = ahsBytes / 4;
  putDataSegmentBytes(bhs, dataBytes);
  const out: Buffer[] = [bhs];
  if (ahs !== null && ahsBytes > 0) out.push(ahs);
  if (digests.header) {
    let crc = crc32c(bhs);
    if (ahs !== null && ahsBytes > 0) crc = crc32c(ahs, crc);
    out.push(crcLe(crc));
  }
  if (data === null || dataBytes === 0) return out;
  out.push(data);
  const pad = ZERO_PAD[pad4(dataBytes) - dataBytes];
  if (pad.length > 0) out.push(pad);
  if (digests.data) {
    let crc = crc32c(data);
    if (pad.length > 0) crc = crc32c(pad, crc);
    out.push(crcLe(crc));
  }
  return out;
}

/** framePdu as one Buffer (tests, the test initiator). */
export function frameToBuffer(bhs: Buffer, ahs: Buffer | null, data: Buffer | null, digests: DigestSettings): Buffer {
  return Buffer.concat(framePdu(bhs, ahs, data, digests));
}

// ---------------------------------------------------------------------------
// AHS (§11.2.2)

interface ScsiCommandAhs {
  cdbTail: Buffer | null;
  bidiReadLength: number | null;
}

/**
 * Walks the AHS items of a SCSI Command: AHSLength (2 bytes, counting the
 * AHS-specific bytes from byte 3 on), AHSType (1 byte, top two bits reserved),
 * AHS-specific bytes, padded to 4 bytes. Type 1: a reserved byte, then CDB bytes
 * 16 and beyond, so AHSLength = CDB length − 15 and must be ≥ 2 (§11.2.2.3).
 * Type 2: a reserved byte and a 4-byte length, AHSLength = 5 (§11.2.2.4).
 */
function parseScsiCommandAhs(ahs: Buffer): ScsiCommandAhs {
  if (ahs.length % 4 !== 0) throw new PduFramingError('bad-ahs', `AHS of ${ahs.length} bytes is not a whole number of words`);
  let cdbTail: Buffer | null = null;
  let bidiReadLength: number | null = null;
  let at = 0;
  while (at < ahs.length) {
    const ahsLength = ahs.readUInt16BE(at);
    const type = ahs[at + 2];
    const itemBytes = pad4(3 + ahsLength);
    if (itemBytes > ahs.length - at) throw new PduFramingError('bad-ahs', `AHSLength ${ahsLength} at offset ${at} overruns TotalAHSLength`);
    if (type === AHS_TYPE_EXTENDED_CDB) {
      if (cdbTail !== null) throw new PduFramingError('bad-ahs', 'two extended CDB AHS');
      if (ahsLength < 2) throw new PduFramingError('bad-ahs', `extended CDB AHSLength ${ahsLength} < 2`);
      cdbTail = ahs.subarray(at + 4, at + 3 + ahsLength);
    } else if (type === AHS_TYPE_BIDI_READ_LENGTH) {
      if (bidiReadLength !== null) throw new PduFramingError('bad-ahs', 'two bidirectional read length AHS');
      if (ahsLength !== 5) throw new PduFramingError('bad-ahs', `bidirectional read length AHSLength ${ahsLength} != 5`);
      bidiReadLength = ahs.readUInt32BE(at + 4);
    } else {
      throw new PduFramingError('bad-ahs', `unsupported AHSType 0x${type.toString(16)}`);
    }
    at += itemBytes;
  }
  return { cdbTail, bidiReadLength };
}

function buildScsiCommandAhs(cdb: Buffer, bidiReadLength: number | null): Buffer | null {
  const tailBytes = Math.max(0, cdb.length - CDB_BHS_BYTES);
  const cdbItemBytes = tailBytes > 0 ? pad4(4 + tailBytes) : 0;
  const bidiItemBytes = bidiReadLength !== null ? 8 : 0;
  const total = cdbItemBytes + bidiItemBytes;
  if (total === 0) return null;
  if (!(total <= AHS_BYTES_MAX)) fail(`CDB of ${cdb.length} bytes does not fit the AHS`);
  const ahs = Buffer.alloc(total);
  if (cdbItemBytes > 0) {
    ahs.writeUInt16BE(tailBytes + 1, 0);
    ahs[2] = AHS_TYPE_EXTENDED_CDB;
    cdb.copy(ahs, 4, CDB_BHS_BYTES);
  }
  if (bidiReadLength !== null) {
    ahs.writeUInt16BE(5, cdbItemBytes);
    ahs[cdbItemBytes + 2] = AHS_TYPE_BIDI_READ_LENGTH;
    putU32(ahs, cdbItemBytes + 4, bidiReadLength, 'bidiReadLength');
  }
  return ahs;
}

// ---------------------------------------------------------------------------
// Decoders. Each takes an InPdu, or a BHS (plus the AHS where one matters).

type PduSource = InPdu | Buffer;

function bhsOf(src: PduSource, opcode: number): Buffer {
  const bhs = Buffer.isBuffer(src) ? src : src.bhs;
  if (!(bhs.length >= BHS_BYTES)) fail(`BHS is ${bhs.length} bytes`);
  if (!((bhs[0] & 0x3f) === opcode)) fail(`decoder for opcode 0x${opcode.toString(16)} given 0x${(bhs[0] & 0x3f).toString(16)}`);
  return bhs;
}

/** SCSI Command (§11.3): the CDB is BHS bytes 32-47 plus an extended CDB AHS. */
export function decodeScsiCommand(src: PduSource, ahsArg: Buffer | null = null): ScsiCommandPdu {
  const bhs = bhsOf(src, OP_SCSI_CMD);
  const ahs = Buffer.isBuffer(src) ? ahsArg : src.ahs;
  const parsed = ahs === null || ahs.length === 0 ? { cdbTail: null, bidiReadLength: null } : parseScsiCommandAhs(ahs);
  const cdbHead = bhs.subarray(CDB_OFFSET, CDB_OFFSET + CDB_BHS_BYTES);
  const cdb = parsed.cdbTail === null ? Buffer.from(cdbHead) : Buffer.concat([cdbHead, parsed.cdbTail]);
  const b1 = bhs[1];
  return {
    immediate: (bhs[0] & 0x40) !== 0,
    final: (b1 & 0x80) !== 0,
    read: (b1 & 0x40) !== 0,
    write: (b1 & 0x20) !== 0,
    attr: b1 & 0x07,
    lun: decodeLun(bhs),
    itt: bhs.readUInt32BE(16),
    expectedDataTransferLength: bhs.readUInt32BE(20),
    cmdSN: bhs.readUInt32BE(24),
    expStatSN: bhs.readUInt32BE(28),
    cdb,
    bidiReadLength: parsed.bidiReadLength,
  };
}

/** SCSI Data-Out (§11.7). */
export function decodeDataOut(src: PduSource): DataOutPdu {
  const bhs = bhsOf(src, OP_DATA_OUT);
  return {
    final: (bhs[1] & 0x80) !== 0,
    lun: decodeLun(bhs),
    itt: bhs.readUInt32BE(16),
    ttt: bhs.readUInt32BE(20),
    expStatSN: bhs.readUInt32BE(28),
    dataSN: bhs.readUInt32BE(36),
    bufferOffset: bhs.readUInt32BE(40),
  };
}

/** NOP-Out (§11.18). */
export function decodeNopOut(src: PduSource): NopOutPdu {
  const bhs = bhsOf(src, OP_NOP_OUT);
  return {
    immediate: (bhs[0] & 0x40) !== 0,
    lun: decodeLun(bhs),
    itt: bhs.readUInt32BE(16),
    ttt: bhs.readUInt32BE(20),
    cmdSN: bhs.readUInt32BE(24),
    expStatSN: bhs.readUInt32BE(28),
  };
}

/** Task Management Function Request (§11.5). */
export function decodeTmfRequest(src: PduSource): TmfRequestPdu {
  const bhs = bhsOf(src, OP_TMF_REQ);
  return {
    immediate: (bhs[0] & 0x40) !== 0,
    func: bhs[1] & 0x7f,
    lun: decodeLun(bhs),
    itt: bhs.readUInt32BE(16),
    referencedTaskTag: bhs.readUInt32BE(20),
    cmdSN: bhs.readUInt32BE(24),
    expStatSN: bhs.readUInt32BE(28),
    refCmdSN: bhs.readUInt32BE(32),
    expDataSN: bhs.readUInt32BE(36),
  };
}

/** Login Request (§11.12). */
export function decodeLoginRequest(src: PduSource): LoginRequestPdu {
  const bhs = bhsOf(src, OP_LOGIN_REQ);
  const b1 = bhs[1];
  return {
    transit: (b1 & 0x80) !== 0,
    cont: (b1 & 0x40) !== 0,
    csg: (b1 >>> 2) & 0x03,
    nsg: b1 & 0x03,
    versionMax: bhs[2],
    versionMin: bhs[3],
    isid: Buffer.from(bhs.subarray(8, 14)),
    tsih: bhs.readUInt16BE(14),
    itt: bhs.readUInt32BE(16),
    cid: bhs.readUInt16BE(20),
    cmdSN: bhs.readUInt32BE(24),
    expStatSN: bhs.readUInt32BE(28),
  };
}

/** Text Request (§11.10). */
export function decodeTextRequest(src: PduSource): TextRequestPdu {
  const bhs = bhsOf(src, OP_TEXT_REQ);
  return {
    immediate: (bhs[0] & 0x40) !== 0,
    final: (bhs[1] & 0x80) !== 0,
    cont: (bhs[1] & 0x40) !== 0,
    lun: decodeLun(bhs),
    itt: bhs.readUInt32BE(16),
    ttt: bhs.readUInt32BE(20),
    cmdSN: bhs.readUInt32BE(24),
    expStatSN: bhs.readUInt32BE(28),
  };
}

/** Logout Request (§11.14). */
export function decodeLogoutRequest(src: PduSource): LogoutRequestPdu {
  const bhs = bhsOf(src, OP_LOGOUT_REQ);
  return {
    immediate: (bhs[0] & 0x40) !== 0,
    reason: bhs[1] & 0x7f,
    itt: bhs.readUInt32BE(16),
    cid: bhs.readUInt16BE(20),
    cmdSN: bhs.readUInt32BE(24),
    expStatSN: bhs.readUInt32BE(28),
  };
}

/** SCSI Response (§11.4). */
export function decodeScsiResponse(src: PduSource): ScsiResponseFields {
  const bhs = bhsOf(src, OP_SCSI_RESP);
  return {
    itt: bhs.readUInt32BE(16),
    response: bhs[2],
    status: bhs[3],
    overflow: (bhs[1] & 0x04) !== 0,
    underflow: (bhs[1] & 0x02) !== 0,
    residualCount: bhs.readUInt32BE(44),
    expDataSN: bhs.readUInt32BE(36),
    ...readSnTrio(bhs),
  };
}

/** SCSI Data-In (§11.7). */
export function decodeDataIn(src: PduSource): DataInFields {
  const bhs = bhsOf(src, OP_DATA_IN);
  const b1 = bhs[1];
  return {
    final: (b1 & 0x80) !== 0,
    hasStatus: (b1 & 0x01) !== 0,
    status: bhs[3],
    overflow: (b1 & 0x04) !== 0,
    underflow: (b1 & 0x02) !== 0,
    residualCount: bhs.readUInt32BE(44),
    lun: decodeLun(bhs),
    itt: bhs.readUInt32BE(16),
    ttt: bhs.readUInt32BE(20),
    dataSN: bhs.readUInt32BE(36),
    bufferOffset: bhs.readUInt32BE(40),
    ...readSnTrio(bhs),
  };
}

/** Ready To Transfer (§11.8). */
export function decodeR2t(src: PduSource): R2tFields {
  const bhs = bhsOf(src, OP_R2T);
  return {
    lun: decodeLun(bhs),
    itt: bhs.readUInt32BE(16),
    ttt: bhs.readUInt32BE(20),
    r2tSN: bhs.readUInt32BE(36),
    bufferOffset: bhs.readUInt32BE(40),
    desiredDataTransferLength: bhs.readUInt32BE(44),
    ...readSnTrio(bhs),
  };
}

/** NOP-In (§11.19). */
export function decodeNopIn(src: PduSource): NopInFields {
  const bhs = bhsOf(src, OP_NOP_IN);
  return { lun: decodeLun(bhs), itt: bhs.readUInt32BE(16), ttt: bhs.readUInt32BE(20), ...readSnTrio(bhs) };
}

/** Task Management Function Response (§11.6). */
export function decodeTmfResponse(src: PduSource): TmfResponseFields {
  const bhs = bhsOf(src, OP_TMF_RESP);
  return { itt: bhs.readUInt32BE(16), response: bhs[2], ...readSnTrio(bhs) };
}

/** Login Response (§11.13). */
export function decodeLoginResponse(src: PduSource): LoginResponseFields {
  const bhs = bhsOf(src, OP_LOGIN_RESP);
  const b1 = bhs[1];
  return {
    transit: (b1 & 0x80) !== 0,
    cont: (b1 & 0x40) !== 0,
    csg: (b1 >>> 2) & 0x03,
    nsg: b1 & 0x03,
    versionMax: bhs[2],
    versionActive: bhs[3],
    isid: Buffer.from(bhs.subarray(8, 14)),
    tsih: bhs.readUInt16BE(14),
    itt: bhs.readUInt32BE(16),
    statusClass: bhs[36],
    statusDetail: bhs[37],
    ...readSnTrio(bhs),
  };
}

/** Text Response (§11.11). */
export function decodeTextResponse(src: PduSource): TextResponseFields {
  const bhs = bhsOf(src, OP_TEXT_RESP);
  return {
    final: (bhs[1] & 0x80) !== 0,
    cont: (bhs[1] & 0x40) !== 0,
    lun: decodeLun(bhs),
    itt: bhs.readUInt32BE(16),
    ttt: bhs.readUInt32BE(20),
    ...readSnTrio(bhs),
  };
}

/** Logout Response (§11.15). */
export function decodeLogoutResponse(src: PduSource): LogoutResponseFields {
  const bhs = bhsOf(src, OP_LOGOUT_RESP);
  return {
    itt: bhs.readUInt32BE(16),
    response: bhs[2],
    time2Wait: bhs.readUInt16BE(40),
    time2Retain: bhs.readUInt16BE(42),
    ...readSnTrio(bhs),
  };
}

/** Reject (§11.17); the data segment is the rejected BHS. */
export function decodeReject(src: PduSource): RejectFields {
  const bhs = bhsOf(src, OP_REJECT);
  return { reason: bhs[2], dataSN: bhs.readUInt32BE(36), ...readSnTrio(bhs) };
}

// ---------------------------------------------------------------------------
// Encoders for target PDUs. Each returns a fresh 48-byte BHS; framePdu rewrites
// bytes 4-7 from the actual AHS and data.

/** SCSI Response (§11.4). Byte 1 bit 7 is always 1; bidirectional residuals are not used. */
export function encodeScsiResponse(f: ScsiResponseFields, dataSegmentBytes: number): Buffer {
  const bhs = newBhs(OP_SCSI_RESP, false, 0x80 | bit(f.overflow, 0x04) | bit(f.underflow, 0x02));
  assert(!(f.overflow && f.underflow), 'residual overflow and underflow both set');
  putU8(bhs, 2, f.response, 'response');
  putU8(bhs, 3, f.status, 'status');
  putDataSegmentBytes(bhs, dataSegmentBytes);
  putU32(bhs, 16, f.itt, 'ITT');
  putSnTrio(bhs, f);
  putU32(bhs, 36, f.expDataSN, 'ExpDataSN');
  putU32(bhs, 44, f.residualCount, 'residualCount');
  return bhs;
}

/**
 * SCSI Data-In (§11.7). Status, StatSN, the O/U bits and the residual are only
 * meaningful with S, so they are written only then (zero otherwise); S requires F.
 */
export function encodeDataIn(f: DataInFields, dataSegmentBytes: number): Buffer {
  assert(!f.hasStatus || f.final, 'Data-In with S must have F');
  assert(!(f.overflow && f.underflow), 'residual overflow and underflow both set');
  const statusFlags = f.hasStatus ? 0x01 | bit(f.overflow, 0x04) | bit(f.underflow, 0x02) : 0;
  const bhs = newBhs(OP_DATA_IN, false, bit(f.final, 0x80) | statusFlags);
  putDataSegmentBytes(bhs, dataSegmentBytes);
  encodeLun(f.lun, bhs, 8);
  putU32(bhs, 16, f.itt, 'ITT');
  putU32(bhs, 20, f.ttt, 'TTT');
  putU32(bhs, 28, f.expCmdSN, 'ExpCmdSN');
  putU32(bhs, 32, f.maxCmdSN, 'MaxCmdSN');
  putU32(bhs, 36, f.dataSN, 'DataSN');
  putU32(bhs, 40, f.bufferOffset, 'BufferOffset');
  if (f.hasStatus) {
    putU8(bhs, 3, f.status, 'status');
    putU32(bhs, 24, f.statSN, 'StatSN');
    putU32(bhs, 44, f.residualCount, 'residualCount');
  }
  return bhs;
}

/** Ready To Transfer (§11.8): no data segment. */
export function encodeR2t(f: R2tFields): Buffer {
  const bhs = newBhs(OP_R2T, false, 0x80);
  encodeLun(f.lun, bhs, 8);
  putU32(bhs, 16, f.itt, 'ITT');
  putU32(bhs, 20, f.ttt, 'TTT');
  putSnTrio(bhs, f);
  putU32(bhs, 36, f.r2tSN, 'R2TSN');
  putU32(bhs, 40, f.bufferOffset, 'BufferOffset');
  putU32(bhs, 44, f.desiredDataTransferLength, 'DesiredDataTransferLength');
  return bhs;
}

/** NOP-In (§11.19). */
export function encodeNopIn(f: NopInFields, dataSegmentBytes: number): Buffer {
  const bhs = newBhs(OP_NOP_IN, false, 0x80);
  putDataSegmentBytes(bhs, dataSegmentBytes);
  encodeLun(f.lun, bhs, 8);
  putU32(bhs, 16, f.itt, 'ITT');
  putU32(bhs, 20, f.ttt, 'TTT');
  putSnTrio(bhs, f);
  return bhs;
}

/** Task Management Function Response (§11.6). */
export function encodeTmfResponse(f: TmfResponseFields): Buffer {
  const bhs = newBhs(OP_TMF_RESP, false, 0x80);
  putU8(bhs, 2, f.response, 'response');
  putU32(bhs, 16, f.itt, 'ITT');
  putSnTrio(bhs, f);
  return bhs;
}

function loginFlags(f: { transit: boolean; cont: boolean; csg: number; nsg: number }): number {
  if (!(Number.isInteger(f.csg) && f.csg >= 0 && f.csg <= 3)) fail(`CSG ${f.csg}`);
  if (!(Number.isInteger(f.nsg) && f.nsg >= 0 && f.nsg <= 3)) fail(`NSG ${f.nsg}`);
  return bit(f.transit, 0x80) | bit(f.cont, 0x40) | (f.csg << 2) | f.nsg;
}

function putIsid(bhs: Buffer, isid: Buffer): void {
  if (!(isid.length === 6)) fail(`ISID is ${isid.length} bytes`);
  isid.copy(bhs, 8);
}

/** Login Response (§11.13). */
export function encodeLoginResponse(f: LoginResponseFields, dataSegmentBytes: number): Buffer {
  const bhs = newBhs(OP_LOGIN_RESP, false, loginFlags(f));
  putU8(bhs, 2, f.versionMax, 'versionMax');
  putU8(bhs, 3, f.versionActive, 'versionActive');
  putDataSegmentBytes(bhs, dataSegmentBytes);
  putIsid(bhs, f.isid);
  putU16(bhs, 14, f.tsih, 'TSIH');
  putU32(bhs, 16, f.itt, 'ITT');
  putSnTrio(bhs, f);
  putU8(bhs, 36, f.statusClass, 'statusClass');
  putU8(bhs, 37, f.statusDetail, 'statusDetail');
  return bhs;
}

/** Text Response (§11.11). */
export function encodeTextResponse(f: TextResponseFields, dataSegmentBytes: number): Buffer {
  const bhs = newBhs(OP_TEXT_RESP, false, bit(f.final, 0x80) | bit(f.cont, 0x40));
  putDataSegmentBytes(bhs, dataSegmentBytes);
  encodeLun(f.lun, bhs, 8);
  putU32(bhs, 16, f.itt, 'ITT');
  putU32(bhs, 20, f.ttt, 'TTT');
  putSnTrio(bhs, f);
  return bhs;
}

/** Logout Response (§11.15). */
export function encodeLogoutResponse(f: LogoutResponseFields): Buffer {
  const bhs = newBhs(OP_LOGOUT_RESP, false, 0x80);
  putU8(bhs, 2, f.response, 'response');
  putU32(bhs, 16, f.itt, 'ITT');
  putSnTrio(bhs, f);
  putU16(bhs, 40, f.time2Wait, 'Time2Wait');
  putU16(bhs, 42, f.time2Retain, 'Time2Retain');
  return bhs;
}

/** Reject (§11.17): the data segment is the rejected PDU's 48-byte BHS; bytes 16-19 are 0xffffffff. */
export function encodeReject(f: RejectFields, dataSegmentBytes: number): Buffer {
  const bhs = newBhs(OP_REJECT, false, 0x80);
  putU8(bhs, 2, f.reason, 'reason');
  putDataSegmentBytes(bhs, dataSegmentBytes);
  bhs.writeUInt32BE(TAG_NONE, 16);
  putSnTrio(bhs, f);
  putU32(bhs, 36, f.dataSN, 'DataSN');
  return bhs;
}

/** The SCSI Response data segment (§11.4.7): 2-byte big-endian SenseLength, then the sense data. */
export function encodeSenseData(sense: Buffer): Buffer {
  if (!(sense.length <= 0xffff)) fail(`sense data of ${sense.length} bytes`);
  const out = Buffer.allocUnsafe(2 + sense.length);
  out.writeUInt16BE(sense.length, 0);
  sense.copy(out, 2);
  return out;
}

/** The sense data in a SCSI Response data segment (empty when there is none). Throws ERR_PROTOCOL. */
export function decodeSenseData(data: Buffer): Buffer {
  if (data.length === 0) return EMPTY;
  if (data.length < 2) throw new TesseraError('ERR_PROTOCOL', `SCSI Response data segment of ${data.length} byte`);
  const senseBytes = data.readUInt16BE(0);
  if (senseBytes > data.length - 2) throw new TesseraError('ERR_PROTOCOL', `SenseLength ${senseBytes} exceeds the data segment`);
  return Buffer.from(data.subarray(2, 2 + senseBytes));
}

// ---------------------------------------------------------------------------
// Encoders for initiator PDUs (the test initiator and round-trip tests).

/** SCSI Command (§11.3). A CDB over 16 bytes spills into an extended CDB AHS; a shorter one is zero-padded. */
export function encodeScsiCommand(f: ScsiCommandPdu, dataSegmentBytes: number): { bhs: Buffer; ahs: Buffer | null } {
  assert(f.cdb.length >= 1, 'empty CDB');
  if (!(Number.isInteger(f.attr) && f.attr >= 0 && f.attr <= 7)) fail(`task attribute ${f.attr}`);
  const byte1 = bit(f.final, 0x80) | bit(f.read, 0x40) | bit(f.write, 0x20) | f.attr;
  const bhs = newBhs(OP_SCSI_CMD, f.immediate, byte1);
  const ahs = buildScsiCommandAhs(f.cdb, f.bidiReadLength);
  bhs[4] = ahs === null ? 0 : ahs.length / 4;
  putDataSegmentBytes(bhs, dataSegmentBytes);
  encodeLun(f.lun, bhs, 8);
  putU32(bhs, 16, f.itt, 'ITT');
  putU32(bhs, 20, f.expectedDataTransferLength, 'ExpectedDataTransferLength');
  putU32(bhs, 24, f.cmdSN, 'CmdSN');
  putU32(bhs, 28, f.expStatSN, 'ExpStatSN');
  f.cdb.copy(bhs, CDB_OFFSET, 0, Math.min(CDB_BHS_BYTES, f.cdb.length));
  return { bhs, ahs };
}

/** SCSI Data-Out (§11.7). */
export function encodeDataOut(f: DataOutPdu, dataSegmentBytes: number): Buffer {
  const bhs = newBhs(OP_DATA_OUT, false, bit(f.final, 0x80));
  putDataSegmentBytes(bhs, dataSegmentBytes);
  encodeLun(f.lun, bhs, 8);
  putU32(bhs, 16, f.itt, 'ITT');
  putU32(bhs, 20, f.ttt, 'TTT');
  putU32(bhs, 28, f.expStatSN, 'ExpStatSN');
  putU32(bhs, 36, f.dataSN, 'DataSN');
  putU32(bhs, 40, f.bufferOffset, 'BufferOffset');
  return bhs;
}

/** NOP-Out (§11.18). */
export function encodeNopOut(f: NopOutPdu, dataSegmentBytes: number): Buffer {
  const bhs = newBhs(OP_NOP_OUT, f.immediate, 0x80);
  putDataSegmentBytes(bhs, dataSegmentBytes);
  encodeLun(f.lun, bhs, 8);
  putU32(bhs, 16, f.itt, 'ITT');
  putU32(bhs, 20, f.ttt, 'TTT');
  putU32(bhs, 24, f.cmdSN, 'CmdSN');
  putU32(bhs, 28, f.expStatSN, 'ExpStatSN');
  return bhs;
}

/** Task Management Function Request (§11.5): byte 1 is 0x80 | function. */
export function encodeTmfRequest(f: TmfRequestPdu): Buffer {
  if (!(Number.isInteger(f.func) && f.func >= 0 && f.func <= 0x7f)) fail(`TMF function ${f.func}`);
  const bhs = newBhs(OP_TMF_REQ, f.immediate, 0x80 | f.func);
  encodeLun(f.lun, bhs, 8);
  putU32(bhs, 16, f.itt, 'ITT');
  putU32(bhs, 20, f.referencedTaskTag, 'ReferencedTaskTag');
  putU32(bhs, 24, f.cmdSN, 'CmdSN');
  putU32(bhs, 28, f.expStatSN, 'ExpStatSN');
  putU32(bhs, 32, f.refCmdSN, 'RefCmdSN');
  putU32(bhs, 36, f.expDataSN, 'ExpDataSN');
  return bhs;
}

/** Login Request (§11.12): always immediate (byte 0 = 0x43). */
export function encodeLoginRequest(f: LoginRequestPdu, dataSegmentBytes: number): Buffer {
  const bhs = newBhs(OP_LOGIN_REQ, true, loginFlags(f));
  putU8(bhs, 2, f.versionMax, 'versionMax');
  putU8(bhs, 3, f.versionMin, 'versionMin');
  putDataSegmentBytes(bhs, dataSegmentBytes);
  putIsid(bhs, f.isid);
  putU16(bhs, 14, f.tsih, 'TSIH');
  putU32(bhs, 16, f.itt, 'ITT');
  putU16(bhs, 20, f.cid, 'CID');
  putU32(bhs, 24, f.cmdSN, 'CmdSN');
  putU32(bhs, 28, f.expStatSN, 'ExpStatSN');
  return bhs;
}

/** Text Request (§11.10). */
export function encodeTextRequest(f: TextRequestPdu, dataSegmentBytes: number): Buffer {
  const bhs = newBhs(OP_TEXT_REQ, f.immediate, bit(f.final, 0x80) | bit(f.cont, 0x40));
  putDataSegmentBytes(bhs, dataSegmentBytes);
  encodeLun(f.lun, bhs, 8);
  putU32(bhs, 16, f.itt, 'ITT');
  putU32(bhs, 20, f.ttt, 'TTT');
  putU32(bhs, 24, f.cmdSN, 'CmdSN');
  putU32(bhs, 28, f.expStatSN, 'ExpStatSN');
  return bhs;
}

/** Logout Request (§11.14): byte 1 is 0x80 | reason. */
export function encodeLogoutRequest(f: LogoutRequestPdu): Buffer {
  if (!(Number.isInteger(f.reason) && f.reason >= 0 && f.reason <= 0x7f)) fail(`logout reason ${f.reason}`);
  const bhs = newBhs(OP_LOGOUT_REQ, f.immediate, 0x80 | f.reason);
  putU32(bhs, 16, f.itt, 'ITT');
  putU16(bhs, 20, f.cid, 'CID');
  putU32(bhs, 24, f.cmdSN, 'CmdSN');
  putU32(bhs, 28, f.expStatSN, 'ExpStatSN');
  return bhs;
}
