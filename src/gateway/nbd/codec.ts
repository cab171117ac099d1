// Pure NBD codec: encoders for everything the server sends (handshake, option
// replies, simple replies, structured reply chunks), parsers for option payloads,
// and an incremental decoder for everything the client sends. No sockets, no
// timers; the session (session.ts) owns all state beyond byte framing.
//
// Invariants:
// - Every length read from the wire is checked against a named limit before any
//   buffer is allocated for it (option data ≤ OPTION_DATA_BYTES_MAX, write payload
//   ≤ PAYLOAD_BYTES_MAX; larger write payloads are skipped, never buffered).
// - The decoder never reads past a declared length, copies only headers that
//   straddle chunk boundaries and payload bodies, and emits each message exactly once.
// - Encoders produce exactly the bytes doc/proto.md describes; the golden tests in
//   codec.test.ts pin them.
import { assert, fail } from '../../stdx/assert.js';
import { copyBytes } from '../../stdx/shared-copy.js';
import {
  CLIENT_FLAGS_BYTES,
  EXPORT_NAME_REPLY_ZEROES_BYTES,
  NBD_CMD_WRITE,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_MAGIC,
  NBD_OPTS_MAGIC,
  NBD_REP_ACK,
  NBD_REP_INFO,
  NBD_REP_MAGIC,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  OFFSET_BYTES_MAX,
  OFFSET_DATA_HEADER_BYTES,
  OPTION_DATA_BYTES_MAX,
  OPTION_HEADER_BYTES,
  OPTION_REPLY_HEADER_BYTES,
  PAYLOAD_BYTES_MAX,
  REQUEST_HEADER_BYTES,
  SERVER_GREETING_BYTES,
  SIMPLE_REPLY_HEADER_BYTES,
  STRING_BYTES_MAX,
  STRUCTURED_REPLY_HEADER_BYTES,
  ERROR_MESSAGE_BYTES_MAX,
} from './constants.js';

const EMPTY = Buffer.alloc(0);
const TWO_POW_32 = 2 ** 32;
const OPTS_MAGIC_HI = Number(NBD_OPTS_MAGIC >> 32n);
const OPTS_MAGIC_LO = Number(NBD_OPTS_MAGIC & 0xffffffffn);

/** Writes a non-negative safe integer as an unsigned 64-bit big-endian field without a bigint. */
function writeU64(out: Buffer, at: number, value: number): void {
  if (!(Number.isSafeInteger(value) && value >= 0)) fail(`u64 field out of range: ${value}`);
  out.writeUInt32BE(Math.floor(value / TWO_POW_32), at);
  out.writeUInt32BE(value % TWO_POW_32, at + 4);
}

// ---------------------------------------------------------------------------
// Handshake ("Newstyle negotiation", "Fixed newstyle negotiation")

/** S: NBDMAGIC, IHAVEOPT, 16-bit handshake flags. */
export function encodeServerGreeting(handshakeFlags: number): Buffer {
  const out = Buffer.alloc(SERVER_GREETING_BYTES);
  out.writeBigUInt64BE(NBD_MAGIC, 0);
  out.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  out.writeUInt16BE(handshakeFlags, 16);
  return out;
}

/** Reply to NBD_OPT_EXPORT_NAME: size, transmission flags, and 124 zeroes unless NO_ZEROES was agreed. */
export function encodeExportNameReply(sizeBytes: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const out = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_REPLY_ZEROES_BYTES));
  writeU64(out, 0, sizeBytes);
  out.writeUInt16BE(transmissionFlags, 8);
  return out;
}

// ---------------------------------------------------------------------------
// Option replies ("Fixed newstyle negotiation", "Option reply types")

/** An option reply with its header filled and `payloadBytes` zeroed bytes after it for the caller. */
function optionReply(option: number, replyType: number, payloadBytes: number): Buffer {
  const out = Buffer.alloc(OPTION_REPLY_HEADER_BYTES + payloadBytes);
  out.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  out.writeUInt32BE(option >>> 0, 8);
  out.writeUInt32BE(replyType >>> 0, 12);
  out.writeUInt32BE(payloadBytes, 16);
  return out;
}

export function encodeOptionReply(option: number, replyType: number, payload: Buffer = EMPTY): Buffer {
  const out = optionReply(option, replyType, payload.length);
  payload.copy(out, OPTION_REPLY_HEADER_BYTES);
  return out;
}

export function encodeOptionAck(option: number): Buffer {
  return optionReply(option, NBD_REP_ACK, 0);
}

/** An error reply (type has bit 31 set) with an optional human-readable message. */
export function encodeOptionError(option: number, errorType: number, message = ''): Buffer {
  return encodeOptionReply(option, errorType, Buffer.from(truncateUtf8(message, STRING_BYTES_MAX), 'utf8'));
}

/** NBD_REP_SERVER: 32-bit name length, name, then optional description text. */
export function encodeRepServer(option: number, name: string, description = ''): Buffer {
  const nameBytes = Buffer.byteLength(name, 'utf8');
  const descBytes = Buffer.byteLength(description, 'utf8');
  const out = optionReply(option, NBD_REP_SERVER, 4 + nameBytes + descBytes);
  out.writeUInt32BE(nameBytes, OPTION_REPLY_HEADER_BYTES);
  out.write(name, OPTION_REPLY_HEADER_BYTES + 4, 'utf8');
  out.write(description, OPTION_REPLY_HEADER_BYTES + 4 + nameBytes, 'utf8');
  return out;
}

/** NBD_REP_INFO / NBD_INFO_EXPORT: length 12 = type, 64-bit size, 16-bit transmission flags. */
export function encodeInfoExport(option: number, sizeBytes: number, transmissionFlags: number): Buffer {
  const out = optionReply(option, NBD_REP_INFO, 12);
  out.writeUInt16BE(NBD_INFO_EXPORT, OPTION_REPLY_HEADER_BYTES);
  writeU64(out, OPTION_REPLY_HEADER_BYTES + 2, sizeBytes);
  out.writeUInt16BE(transmissionFlags, OPTION_REPLY_HEADER_BYTES + 10);
  return out;
}

function encodeInfoString(option: number, infoType: number, text: string): Buffer {
  const textBytes = Buffer.byteLength(text, 'utf8');
  const out = optionReply(option, NBD_REP_INFO, 2 + textBytes);
  out.writeUInt16BE(infoType, OPTION_REPLY_HEADER_BYTES);
  out.write(text, OPTION_REPLY_HEADER_BYTES + 2, 'utf8');
  return out;
}

export function encodeInfoName(option: number, name: string): Buffer {
  return encodeInfoString(option, NBD_INFO_NAME, name);
}

export function encodeInfoDescription(option: number, description: string): Buffer {
  return encodeInfoString(option, NBD_INFO_DESCRIPTION, description);
}

/** NBD_REP_INFO / NBD_INFO_BLOCK_SIZE: length 14 = type, minimum, preferred, maximum payload. */
export function encodeInfoBlockSize(option: number, minimumBytes: number, preferredBytes: number, payloadMaxBytes: number): Buffer {
  const out = optionReply(option, NBD_REP_INFO, 14);
  out.writeUInt16BE(NBD_INFO_BLOCK_SIZE, OPTION_REPLY_HEADER_BYTES);
  out.writeUInt32BE(minimumBytes, OPTION_REPLY_HEADER_BYTES + 2);
  out.writeUInt32BE(preferredBytes, OPTION_REPLY_HEADER_BYTES + 6);
  out.writeUInt32BE(payloadMaxBytes, OPTION_REPLY_HEADER_BYTES + 10);
  return out;
}

/** NBD_REP_META_CONTEXT: 32-bit context id, then the context name. */
export function encodeMetaContext(option: number, contextId: number, name: string): Buffer {
  const nameBytes = Buffer.byteLength(name, 'utf8');
  const out = optionReply(option, NBD_REP_META_CONTEXT, 4 + nameBytes);
  out.writeUInt32BE(contextId, OPTION_REPLY_HEADER_BYTES);
  out.write(name, OPTION_REPLY_HEADER_BYTES + 4, 'utf8');
  return out;
}

// ---------------------------------------------------------------------------
// Transmission replies ("Simple reply message", "Structured reply chunk message",
// "Structured reply types"). `write*` variants fill a caller-owned buffer so a
// READ reply is one allocation: header, then the volume reads straight after it.

export function writeSimpleReplyHeader(out: Buffer, at: number, errno: number, cookie: bigint): void {
  out.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, at);
  out.writeUInt32BE(errno, at + 4);
  out.writeBigUInt64BE(cookie, at + 8);
}

export function encodeSimpleReply(errno: number, cookie: bigint): Buffer {
  const out = Buffer.alloc(SIMPLE_REPLY_HEADER_BYTES);
  writeSimpleReplyHeader(out, 0, errno, cookie);
  return out;
}

export function writeStructuredHeader(out: Buffer, at: number, flags: number, type: number, cookie: bigint, payloadBytes: number): void {
  out.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, at);
  out.writeUInt16BE(flags, at + 4);
  out.writeUInt16BE(type, at + 6);
  out.writeBigUInt64BE(cookie, at + 8);
  out.writeUInt32BE(payloadBytes, at + 16);
}

/** OFFSET_DATA chunk header plus its 64-bit offset; `dataBytes` of data follow at at+28. */
export function writeOffsetDataHeader(out: Buffer, at: number, flags: number, cookie: bigint, offsetBytes: number, dataBytes: number): void {
  writeStructuredHeader(out, at, flags, NBD_REPLY_TYPE_OFFSET_DATA, cookie, 8 + dataBytes);
  writeU64(out, at + STRUCTURED_REPLY_HEADER_BYTES, offsetBytes);
}

export function encodeOffsetData(flags: number, cookie: bigint, offsetBytes: number, data: Buffer): Buffer {
  const out = Buffer.alloc(OFFSET_DATA_HEADER_BYTES + data.length);
  writeOffsetDataHeader(out, 0, flags, cookie, offsetBytes, data.length);
  data.copy(out, OFFSET_DATA_HEADER_BYTES);
  return out;
}

export function encodeOffsetHole(flags: number, cookie: bigint, offsetBytes: number, holeBytes: number): Buffer {
  assert(holeBytes > 0 && holeBytes < TWO_POW_32, 'hole size must be a nonzero u32');
  const out = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES + 12);
  writeStructuredHeader(out, 0, flags, NBD_REPLY_TYPE_OFFSET_HOLE, cookie, 12);
  writeU64(out, STRUCTURED_REPLY_HEADER_BYTES, offsetBytes);
  out.writeUInt32BE(holeBytes, STRUCTURED_REPLY_HEADER_BYTES + 8);
  return out;
}

export interface BlockDescriptor {
  lengthBytes: number;
  statusFlags: number;
}

/** BLOCK_STATUS chunk: context id then (length, status) descriptors; at least one descriptor. */
export function encodeBlockStatus(flags: number, cookie: bigint, contextId: number, descriptors: readonly BlockDescriptor[]): Buffer {
  assert(descriptors.length > 0, 'block status needs at least one descriptor');
  const payloadBytes = 4 + 8 * descriptors.length;
  const out = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES + payloadBytes);
  writeStructuredHeader(out, 0, flags, NBD_REPLY_TYPE_BLOCK_STATUS, cookie, payloadBytes);
  out.writeUInt32BE(contextId, STRUCTURED_REPLY_HEADER_BYTES);
  let at = STRUCTURED_REPLY_HEADER_BYTES + 4;
  for (const d of descriptors) {
    assert(d.lengthBytes > 0 && d.lengthBytes < TWO_POW_32, 'descriptor length must be a nonzero u32');
    out.writeUInt32BE(d.lengthBytes, at);
    out.writeUInt32BE(d.statusFlags, at + 4);
    at += 8;
  }
  return out;
}

/** ERROR chunk: 32-bit errno (nonzero), 16-bit message length, message. Always final here. */
export function encodeErrorChunk(flags: number, cookie: bigint, errno: number, message = ''): Buffer {
  assert(errno !== 0, 'error chunk needs a nonzero errno');
  const text = truncateUtf8(message, ERROR_MESSAGE_BYTES_MAX);
  const textBytes = Buffer.byteLength(text, 'utf8');
  const out = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES + 6 + textBytes);
  writeStructuredHeader(out, 0, flags, NBD_REPLY_TYPE_ERROR, cookie, 6 + textBytes);
  out.writeUInt32BE(errno, STRUCTURED_REPLY_HEADER_BYTES);
  out.writeUInt16BE(textBytes, STRUCTURED_REPLY_HEADER_BYTES + 4);
  out.write(text, STRUCTURED_REPLY_HEADER_BYTES + 6, 'utf8');
  return out;
}

/** NONE chunk: length 0, always with NBD_REPLY_FLAG_DONE. */
export function encodeNoneChunk(cookie: bigint): Buffer {
  const out = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES);
  writeStructuredHeader(out, 0, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, cookie, 0);
  return out;
}

/** Cuts a string to at most `maxBytes` of UTF-8 without splitting a code point. */
export function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text, 'utf8') <= maxBytes) return text;
  let out = '';
  let bytes = 0;
  for (const ch of text) {
    const n = Buffer.byteLength(ch, 'utf8');
    if (bytes + n > maxBytes) break;
    out += ch;
    bytes += n;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Option payload parsers ("NBD_OPT_INFO and NBD_OPT_GO", "NBD_OPT_LIST_META_CONTEXT",
// "NBD_OPT_SET_META_CONTEXT"). They return a value or a message for NBD_REP_ERR_INVALID.

export type OptionParse<T> = { ok: true; value: T } | { ok: false; message: string };

export interface InfoRequest {
  name: string;
  infoTypes: number[];
}

export interface MetaContextRequest {
  exportName: string;
  queries: string[];
}

function invalid<T>(message: string): OptionParse<T> {
  return { ok: false, message };
}

/** NBD_OPT_EXPORT_NAME data is the bare name. */
export function parseExportName(data: Buffer): OptionParse<string> {
  if (data.length > STRING_BYTES_MAX) return invalid(`export name of ${data.length} bytes exceeds ${STRING_BYTES_MAX}`);
  return { ok: true, value: data.toString('utf8') };
}

/** Data: u32 name length, name, u16 count, count × u16 info types — exactly, nothing after. */
export function parseInfoRequest(data: Buffer): OptionParse<InfoRequest> {
  if (data.length < 6) return invalid(`option data of ${data.length} bytes is shorter than 6`);
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > data.length - 6) return invalid(`name length ${nameBytes} exceeds the option data`);
  if (nameBytes > STRING_BYTES_MAX) return invalid(`export name of ${nameBytes} bytes exceeds ${STRING_BYTES_MAX}`);
  const name = data.toString('utf8', 4, 4 + nameBytes);
  const count = data.readUInt16BE(4 + nameBytes);
  if (data.length !== 4 + nameBytes + 2 + 2 * count) return invalid(`${count} information requests do not match the option length ${data.length}`);
  const infoTypes: number[] = [];
  for (let i = 0; i < count; i++) infoTypes.push(data.readUInt16BE(6 + nameBytes + 2 * i));
  return { ok: true, value: { name, infoTypes } };
}

/** Reads a u32-length-prefixed string at `at`; null if it runs past the data or the string limit. */
function readLengthString(data: Buffer, at: number): { text: string; next: number } | null {
  if (at + 4 > data.length) return null;
  const lengthBytes = data.readUInt32BE(at);
  if (lengthBytes > STRING_BYTES_MAX || lengthBytes > data.length - at - 4) return null;
  return { text: data.toString('utf8', at + 4, at + 4 + lengthBytes), next: at + 4 + lengthBytes };
}

/** Data: u32 name length, name, u32 query count, count × (u32 length, query) — exactly. */
export function parseMetaContextRequest(data: Buffer): OptionParse<MetaContextRequest> {
  const name = readLengthString(data, 0);
  if (!name) return invalid('export name runs past the option data or exceeds 4096 bytes');
  if (name.next + 4 > data.length) return invalid('missing query count');
  const count = data.readUInt32BE(name.next);
  // Each query takes at least 4 bytes: bound the loop by the data before trusting count.
  if (count > (data.length - name.next - 4) / 4) return invalid(`query count ${count} exceeds the option data`);
  const queries: string[] = [];
  let at = name.next + 4;
  for (let i = 0; i < count; i++) {
    const q = readLengthString(data, at);
    if (!q) return invalid(`query ${i} runs past the option data or exceeds 4096 bytes`);
    queries.push(q.text);
    at = q.next;
  }
  if (at !== data.length) return invalid(`${data.length - at} trailing bytes after the queries`);
  return { ok: true, value: { exportName: name.text, queries } };
}

// ---------------------------------------------------------------------------
// Incremental decoder of client bytes ("Newstyle negotiation", "Request message").

export interface NbdRequest {
  flags: number;
  type: number;
  /** Opaque; echoed in every reply chunk. */
  cookie: bigint;
  /** The wire value, exact. */
  offset: bigint;
  /** Equal to `offset` when `offsetSafe`; meaningless otherwise. */
  offsetBytes: number;
  /** offset ≤ 2^53, so offsetBytes is exact. */
  offsetSafe: boolean;
  lengthBytes: number;
  /** NBD_CMD_WRITE payload (length `lengthBytes`); null for other commands or when skipped. */
  data: Buffer | null;
  /** A WRITE whose length exceeded PAYLOAD_BYTES_MAX: its payload is being discarded unread. */
  payloadSkipped: boolean;
}

export type DecodeFailure = 'bad-option-magic' | 'bad-request-magic' | 'option-too-large';

export interface DecoderHandler {
  onClientFlags(flags: number): void;
  onOption(option: number, data: Buffer): void;
  onRequest(request: NbdRequest): void;
  /** The stream is unusable; the decoder has stopped. `option`/`lengthBytes` describe option-too-large. */
  onDecodeFailure(kind: DecodeFailure, option: number, lengthBytes: number): void;
}

const S_CLIENT_FLAGS = 0;
const S_OPTION_HEADER = 1;
const S_OPTION_DATA = 2;
const S_REQUEST_HEADER = 3;
const S_REQUEST_PAYLOAD = 4;
const S_REQUEST_SKIP = 5;
const S_STOPPED = 6;

/**
 * Where a body (option data or a write payload) is copied to: `bytes` uninitialized
 * bytes, every one overwritten before the body is handed out. The session decides
 * (recycled buffers for large writes, a slab for small bodies).
 */
export type BodyAllocator = (bytes: number, writePayload: boolean) => Buffer;

export interface NbdDecoderOptions {
  /**
   * A chunk is lent for the duration of feed() only (the socket reads into one
   * reused buffer, io/node/tcp.ts borrowReads): bodies are always copied out, and
   * what a paused decoder still holds of the chunk is copied before feed() returns.
   */
  borrowedChunks?: boolean;
  allocateBody?: BodyAllocator;
}

const allocateUnpooled: BodyAllocator = (bytes) => Buffer.allocUnsafe(bytes);

/**
 * Byte-level state machine. feed() takes fragments of any size; each complete message
 * is handed to the handler synchronously. The handler may call pause(), stop() or
 * enterTransmission() from inside a callback; the decoder honours it before the next
 * message. While paused, fed bytes are kept (the caller also stops reading the socket,
 * so that is at most one socket chunk).
 */
export class NbdDecoder {
  private state = S_CLIENT_FLAGS;
  private readonly scratch = Buffer.alloc(REQUEST_HEADER_BYTES);
  private scratchFill = 0;
  private body: Buffer | null = null;
  private bodyFill = 0;
  /** Length of the option data or write payload being received (body is allocated lazily). */
  private bodyBytes = 0;
  private skipRemainingBytes = 0;
  private pendingOption = 0;
  private pendingRequest: NbdRequest | null = null;
  private queue: Buffer[] = [];
  private queuePos = 0;
  private paused = false;
  private draining = false;

  private readonly borrowedChunks: boolean;
  private readonly allocateBody: BodyAllocator;

  constructor(
    private readonly handler: DecoderHandler,
    options: NbdDecoderOptions = {},
  ) {
    this.borrowedChunks = options.borrowedChunks ?? false;
    this.allocateBody = options.allocateBody ?? allocateUnpooled;
  }

  feed(chunk: Buffer): void {
    if (this.state === S_STOPPED || chunk.length === 0) return;
    this.queue.push(chunk);
    try {
      this.drain();
    } finally {
      if (this.borrowedChunks) this.keepRestOf(chunk); // even if a handler threw
    }
  }

  /** A lent chunk still queued (paused mid-chunk) is replaced by a copy of its unread bytes. */
  private keepRestOf(chunk: Buffer): void {
    const i = this.queue.lastIndexOf(chunk);
    if (i < 0) return;
    this.queue[i] = Buffer.from(chunk.subarray(i === 0 ? this.queuePos : 0));
    if (i === 0) this.queuePos = 0;
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.drain();
  }

  isPaused(): boolean {
    return this.paused;
  }

  /** After a successful NBD_OPT_GO / NBD_OPT_EXPORT_NAME: what follows are requests. */
  enterTransmission(): void {
    if (!(this.state === S_OPTION_HEADER)) fail(`enterTransmission in decoder state ${this.state}`);
    this.state = S_REQUEST_HEADER;
  }

  /** Drops everything buffered; later feeds are ignored. */
  stop(): void {
    this.state = S_STOPPED;
    this.queue = [];
    this.queuePos = 0;
    this.body = null;
    this.pendingRequest = null;
  }

  isStopped(): boolean {
    return this.state === S_STOPPED;
  }

  /** Bytes held: fed but unparsed, plus a partially received body. */
  heldBytes(): number {
    let n = -this.queuePos + (this.body ? this.bodyFill : 0);
    for (const c of this.queue) n += c.length;
    return n;
  }

  private drain(): void {
    if (this.draining) return; // a handler resumed us from inside the loop below
    this.draining = true;
    try {
      while (!this.paused && this.state !== S_STOPPED && this.queue.length > 0) {
        const chunk = this.queue[0];
        const pos = this.step(chunk, this.queuePos);
        if (this.state === S_STOPPED) break; // stop() already cleared the queue
        if (pos >= chunk.length) {
          this.queue.shift();
          this.queuePos = 0;
        } else {
          this.queuePos = pos;
        }
      }
    } finally {
      this.draining = false;
    }
  }

  /** Consumes bytes for the current state; returns the new position. At most one message completes per call. */
  private step(chunk: Buffer, pos: number): number {
    switch (this.state) {
      case S_CLIENT_FLAGS:
        return this.stepHeader(chunk, pos, CLIENT_FLAGS_BYTES);
      case S_OPTION_HEADER:
        return this.stepHeader(chunk, pos, OPTION_HEADER_BYTES);
      case S_REQUEST_HEADER:
        return this.stepHeader(chunk, pos, REQUEST_HEADER_BYTES);
      case S_OPTION_DATA:
      case S_REQUEST_PAYLOAD:
        return this.stepBody(chunk, pos);
      case S_REQUEST_SKIP:
        return this.stepSkip(chunk, pos);
      default:
        return chunk.length;
    }
  }

  private stepHeader(chunk: Buffer, pos: number, needBytes: number): number {
    const availBytes = chunk.length - pos;
    if (this.scratchFill === 0 && availBytes >= needBytes) {
      this.onHeader(chunk, pos); // whole header in this chunk: parse in place
      return pos + needBytes;
    }
    const n = Math.min(availBytes, needBytes - this.scratchFill);
    chunk.copy(this.scratch, this.scratchFill, pos, pos + n);
    this.scratchFill += n;
    if (this.scratchFill === needBytes) {
      this.scratchFill = 0;
      this.onHeader(this.scratch, 0);
    }
    return pos + n;
  }

  private onHeader(buf: Buffer, at: number): void {
    if (this.state === S_CLIENT_FLAGS) {
      const flags = buf.readUInt32BE(at);
      this.state = S_OPTION_HEADER;
      this.handler.onClientFlags(flags);
    } else if (this.state === S_OPTION_HEADER) {
      this.onOptionHeader(buf, at);
    } else {
      this.onRequestHeader(buf, at);
    }
  }

  private onOptionHeader(buf: Buffer, at: number): void {
    if (buf.readUInt32BE(at) !== OPTS_MAGIC_HI || buf.readUInt32BE(at + 4) !== OPTS_MAGIC_LO) {
      return this.fail('bad-option-magic', 0, 0);
    }
    const option = buf.readUInt32BE(at + 8);
    const lengthBytes = buf.readUInt32BE(at + 12);
    if (lengthBytes > OPTION_DATA_BYTES_MAX) return this.fail('option-too-large', option, lengthBytes);
    if (lengthBytes === 0) {
      this.handler.onOption(option, EMPTY);
      return;
    }
    this.pendingOption = option;
    this.body = null;
    this.bodyBytes = lengthBytes;
    this.bodyFill = 0;
    this.state = S_OPTION_DATA;
  }

  private onRequestHeader(buf: Buffer, at: number): void {
    if (buf.readUInt32BE(at) !== NBD_REQUEST_MAGIC) return this.fail('bad-request-magic', 0, 0);
    const offsetHi = buf.readUInt32BE(at + 16);
    const offsetLo = buf.readUInt32BE(at + 20);
    const offsetBytes = offsetHi * TWO_POW_32 + offsetLo; // exact while offsetHi ≤ 2^21
    const request: NbdRequest = {
      flags: buf.readUInt16BE(at + 4),
      type: buf.readUInt16BE(at + 6),
      cookie: buf.readBigUInt64BE(at + 8),
      offset: buf.readBigUInt64BE(at + 16),
      offsetBytes,
      offsetSafe: offsetHi < 2 ** 21 || (offsetHi === 2 ** 21 && offsetLo === 0),
      lengthBytes: buf.readUInt32BE(at + 24),
      data: null,
      payloadSkipped: false,
    };
    assert(!request.offsetSafe || offsetBytes <= OFFSET_BYTES_MAX, 'offset decode');
    if (request.type !== NBD_CMD_WRITE) {
      this.handler.onRequest(request);
    } else if (request.lengthBytes > PAYLOAD_BYTES_MAX) {
      // Never buffer an oversized payload: stream it away and let the session answer EINVAL.
      request.payloadSkipped = true;
      this.skipRemainingBytes = request.lengthBytes;
      this.state = S_REQUEST_SKIP;
      this.handler.onRequest(request);
    } else if (request.lengthBytes === 0) {
      request.data = EMPTY;
      this.handler.onRequest(request);
    } else {
      this.pendingRequest = request;
      this.body = null;
      this.bodyBytes = request.lengthBytes;
      this.bodyFill = 0;
      this.state = S_REQUEST_PAYLOAD;
    }
  }

  private stepBody(chunk: Buffer, pos: number): number {
    if (this.body === null) {
      if (chunk.length - pos >= this.bodyBytes && !this.borrowedChunks) {
        // The whole body is inside this chunk: hand out a view, no allocation, no copy.
        // Owned socket chunks are fresh memory that nothing writes to after delivery.
        const view = chunk.subarray(pos, pos + this.bodyBytes);
        this.deliverBody(view);
        return pos + view.length;
      }
      // Uninitialized: every byte is copied in below before the body is handed out.
      this.body = this.allocateBody(this.bodyBytes, this.state === S_REQUEST_PAYLOAD);
      if (!(this.body.length === this.bodyBytes)) fail(`body allocator returned ${this.body.length} bytes for ${this.bodyBytes}`);
    }
    const body = this.body;
    const n = Math.min(chunk.length - pos, body.length - this.bodyFill);
    copyBytes(chunk, pos, pos + n, body, this.bodyFill);
    this.bodyFill += n;
    if (this.bodyFill === body.length) this.deliverBody(body);
    return pos + n;
  }

  private deliverBody(body: Buffer): void {
    this.body = null;
    this.bodyFill = 0;
    this.bodyBytes = 0;
    if (this.state === S_OPTION_DATA) {
      this.state = S_OPTION_HEADER;
      this.handler.onOption(this.pendingOption, body);
    } else {
      const request = this.pendingRequest!;
      this.pendingRequest = null;
      request.data = body;
      this.state = S_REQUEST_HEADER;
      this.handler.onRequest(request);
    }
  }

  private stepSkip(chunk: Buffer, pos: number): number {
    const n = Math.min(chunk.length - pos, this.skipRemainingBytes);
    this.skipRemainingBytes -= n;
    if (this.skipRemainingBytes === 0) this.state = S_REQUEST_HEADER;
    return pos + n;
  }

  private fail(kind: DecodeFailure, option: number, lengthBytes: number): void {
    this.stop();
    this.handler.onDecodeFailure(kind, option, lengthBytes);
  }
}
