// Pure codec of the frames that carry every binary RPC between Tessera daemons
// (SPEC CLU7): an encoder that returns buffers for writev without copying the
// payload, and an incremental decoder fed chunks of any size. No sockets, no
// timers, no clock; the transport (src/io/) owns the connection.
//
// Wire format, version 2. A frame is a fixed 40-byte header, then payloadBytes
// of payload. Every field is little-endian. The version covers the payload
// formats of messages.ts too: version 2 (session 16) is version 1 with the raft
// heartbeat's `retain` field (body 16 -> 24 bytes), the voteResp "removed"
// flag and the vote/voteResp "pre" (pre-vote) flag; a version 1 daemon is
// refused at its first frame ("unsupported frame
// version"), not half-understood.
//
//   offset size field         meaning
//   ------ ---- ------------- ---------------------------------------------------
//        0    4 magic         bytes "TSRP" (54 53 52 50; 0x50525354 as a LE u32)
//        4    1 version       2
//        5    1 kind          1 request, 2 response, 3 one-way
//        6    2 flags         opaque to the codec; meaning is per method
//        8    2 method        opaque to the codec; the method table lives above
//       10    2 reserved      0; receivers reject anything else
//       12    4 reserved2     0; receivers reject anything else
//                             (pads requestId to an 8-byte boundary, header to 40)
//       16    8 requestId     u64, exposed as bigint; a response echoes its request's
//       24    4 status        0 = ok; nonzero only in responses (an error code)
//       28    4 payloadBytes  ≤ the receiver's payloadBytesMax (default 16 MiB + 64 KiB)
//       32    4 payloadCrc    crc32c of the payload bytes (0 for an empty payload)
//       36    4 headerCrc     crc32c of header bytes [0, 36)
//
// Decoder checks, in order: magic, version, headerCrc, kind, reserved fields,
// status (requests and one-way frames carry 0), payloadBytes ≤ the limit. Version
// is checked before headerCrc so that a peer speaking another version is reported
// as such (a future version may lay the header out differently).
//
// Failure policy:
// - Any header check failing is fatal (FrameError, code ERR_PROTOCOL): the frame
//   boundary can no longer be trusted, so the decoder enters a failed state, drops
//   what it holds, ignores later input, and the connection must be closed.
// - A payload whose crc does not match is NOT fatal (FrameError, code
//   ERR_CHECKSUM, reported with the frame's verified header): the headerCrc vouches
//   for payloadBytes, so the next frame starts where the header said, and the
//   caller can fail just that request (or answer it with an error) and go on.
//   The corrupt payload is never handed out.
//
// Invariants:
// - payloadBytes is checked against the limit before any buffer is allocated for
//   it; the decoder allocates only for payloads that span chunks, exactly
//   payloadBytes, through the injected allocator.
// - A payload that arrives inside one chunk is a subarray of that chunk (no copy);
//   fed chunks therefore belong to the decoder and must not be reused by the caller.
//   A frame held long-term pins the chunk it came from; copy it if that matters.
// - Only frames whose headerCrc and payloadCrc both verify are handed to onFrame.
// - Held bytes are bounded: a partial header (< 40 B), a partial payload
//   (≤ payloadBytesMax), and, only while paused, the chunks fed since the pause
//   (≤ pausedQueueBytesMax, an assertion: the caller must stop reading when paused).
// - feed() never throws for any input bytes; failures go to the handler.
import { assert, fail } from '../stdx/assert.js';
import { crc32c, crc32cRange } from '../stdx/crc32c.js';
import { TesseraError } from '../stdx/errors.js';

export const FRAME_MAGIC = 0x50525354; // "TSRP" on the wire
export const FRAME_VERSION = 2;
export const FRAME_HEADER_BYTES = 40;
/** Bytes covered by headerCrc: everything before it. */
export const FRAME_HEADER_CRC_COVERED_BYTES = 36;
/** A 16 MiB data block plus room for the message that carries it. */
export const FRAME_PAYLOAD_BYTES_MAX_DEFAULT = 16 * 1024 * 1024 + 64 * 1024;
/** What a paused decoder may be fed before the caller is considered broken: a socket read is ≤ 64 KiB. */
export const FRAME_PAUSED_QUEUE_BYTES_MAX_DEFAULT = 1024 * 1024;

const U32_MAX = 0xffffffff;
const U64_MAX = (1n << 64n) - 1n;
const EMPTY = Buffer.alloc(0);

export const FrameKind = {
  Request: 1,
  Response: 2,
  OneWay: 3,
} as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

export interface FrameHeader {
  kind: FrameKind;
  flags: number;
  method: number;
  requestId: bigint;
  /** 0 = ok; nonzero only in responses. */
  status: number;
}

export interface Frame extends FrameHeader {
  /** Verified against payloadCrc; a subarray of a fed chunk when it arrived in one. */
  payload: Buffer;
}

export type FrameErrorReason =
  | 'bad-magic'
  | 'bad-version'
  | 'header-crc'
  | 'bad-kind'
  | 'bad-reserved'
  | 'bad-status'
  | 'payload-too-large'
  | 'payload-crc';

/** A frame the decoder refused. `fatal` ⇔ code ERR_PROTOCOL: close the connection. */
export class FrameError extends TesseraError {
  readonly reason: FrameErrorReason;
  readonly fatal: boolean;
  constructor(reason: FrameErrorReason, message: string) {
    const fatal = reason !== 'payload-crc';
    super(fatal ? 'ERR_PROTOCOL' : 'ERR_CHECKSUM', message);
    this.reason = reason;
    this.fatal = fatal;
    this.name = 'FrameError';
  }
}

// ---------------------------------------------------------------------------
// Encoder

function assertHeader(h: FrameHeader): void {
  if (!(h.kind === FrameKind.Request || h.kind === FrameKind.Response || h.kind === FrameKind.OneWay)) fail(`bad frame kind ${h.kind}`);
  if (!(Number.isInteger(h.flags) && h.flags >= 0 && h.flags <= 0xffff)) fail(`flags out of u16 range: ${h.flags}`);
  if (!(Number.isInteger(h.method) && h.method >= 0 && h.method <= 0xffff)) fail(`method out of u16 range: ${h.method}`);
  if (!(h.requestId >= 0n && h.requestId <= U64_MAX)) fail(`requestId out of u64 range: ${h.requestId}`);
  if (!(Number.isInteger(h.status) && h.status >= 0 && h.status <= U32_MAX)) fail(`status out of u32 range: ${h.status}`);
  assert(h.status === 0 || h.kind === FrameKind.Response, 'only responses carry a nonzero status');
}

/** Fills out[at, at+40) with a header for a payload of `payloadBytes` whose crc32c is `payloadCrc`. */
export function writeFrameHeader(out: Buffer, at: number, h: FrameHeader, payloadBytes: number, payloadCrc: number): void {
  assertHeader(h);
  if (!(Number.isInteger(payloadBytes) && payloadBytes >= 0 && payloadBytes <= U32_MAX)) fail(`payloadBytes out of u32 range: ${payloadBytes}`);
  assert(out.length - at >= FRAME_HEADER_BYTES, 'no room for a frame header');
  out.writeUInt32LE(FRAME_MAGIC, at);
  out.writeUInt8(FRAME_VERSION, at + 4);
  out.writeUInt8(h.kind, at + 5);
  out.writeUInt16LE(h.flags, at + 6);
  out.writeUInt16LE(h.method, at + 8);
  out.writeUInt16LE(0, at + 10);
  out.writeUInt32LE(0, at + 12);
  out.writeBigUInt64LE(h.requestId, at + 16);
  out.writeUInt32LE(h.status, at + 24);
  out.writeUInt32LE(payloadBytes, at + 28);
  out.writeUInt32LE(payloadCrc >>> 0, at + 32);
  out.writeUInt32LE(crc32cRange(out, at, at + FRAME_HEADER_CRC_COVERED_BYTES), at + 36);
}

/**
 * A frame as buffers for writev: [header, ...payload parts]. The payload is not
 * copied (a payload given in parts is sent as those parts, e.g. a message header
 * and the data block after it); an empty payload adds no buffer. The caller must
 * not modify the parts until they are written.
 */
export function encodeFrame(
  h: FrameHeader,
  payload: Buffer | readonly Buffer[] = EMPTY,
  payloadBytesMax = FRAME_PAYLOAD_BYTES_MAX_DEFAULT,
): Buffer[] {
  const parts = Buffer.isBuffer(payload) ? [payload] : payload;
  let payloadBytes = 0;
  let payloadCrc = 0;
  const out: Buffer[] = [Buffer.alloc(FRAME_HEADER_BYTES)];
  for (const p of parts) {
    if (p.length === 0) continue;
    payloadBytes += p.length;
    payloadCrc = crc32c(p, payloadCrc); // crc32c chains: crc(a‖b) = crc(b, crc(a))
    out.push(p);
  }
  // Sending more than the peer accepts would make it close the connection: the layer
  // above must split or refuse, so this is a programmer error.
  if (!(payloadBytes <= payloadBytesMax)) fail(`payload of ${payloadBytes} bytes exceeds ${payloadBytesMax}`);
  writeFrameHeader(out[0], 0, h, payloadBytes, payloadCrc);
  return out;
}

// ---------------------------------------------------------------------------
// Decoder

export interface FrameHandler {
  /** A frame whose header and payload crcs verified. */
  onFrame(frame: Frame): void;
  /** The payload failed its crc (error.reason 'payload-crc'); framing holds and decoding continues. */
  onCorruptFrame(header: FrameHeader, error: FrameError): void;
  /** The stream is unusable (error.fatal); the decoder has failed. Close the connection. */
  onFailure(error: FrameError): void;
}

export interface FrameDecoderOptions {
  /** Largest payload accepted; larger is a fatal error before any allocation. */
  payloadBytesMax?: number;
  /** Bound on bytes fed while paused (assertion). */
  pausedQueueBytesMax?: number;
  /** Allocates a buffer for a payload spanning chunks; every byte is overwritten before use. */
  allocate?: (bytes: number) => Buffer;
  /**
   * Chunks are lent for the duration of feed() only (a socket reading into one
   * reused buffer): every payload is copied into an allocate()d buffer, and what a
   * paused decoder still holds of the chunk is copied before feed() returns.
   */
  borrowedChunks?: boolean;
}

const S_HEADER = 0;
const S_PAYLOAD = 1;
const S_FAILED = 2;

/**
 * Byte-level state machine. feed() takes fragments of any size; each complete frame
 * is handed to the handler synchronously. The handler may call pause() from inside a
 * callback; the decoder honours it before the next frame and keeps later bytes until
 * resume().
 */
export class FrameDecoder {
  private state = S_HEADER;
  private readonly payloadBytesMax: number;
  private readonly pausedQueueBytesMax: number;
  private readonly allocate: (bytes: number) => Buffer;
  private readonly borrowedChunks: boolean;
  private readonly scratch = Buffer.alloc(FRAME_HEADER_BYTES);
  private scratchFill = 0;
  private header: FrameHeader | null = null;
  private payloadBytes = 0;
  private payloadCrc = 0;
  private body: Buffer | null = null;
  private bodyFill = 0;
  private queue: Buffer[] = [];
  private queuePos = 0;
  private queuedBytes = 0;
  private paused = false;
  private draining = false;
  private failure: FrameError | null = null;

  constructor(
    private readonly handler: FrameHandler,
    options: FrameDecoderOptions = {},
  ) {
    this.payloadBytesMax = options.payloadBytesMax ?? FRAME_PAYLOAD_BYTES_MAX_DEFAULT;
    this.pausedQueueBytesMax = options.pausedQueueBytesMax ?? FRAME_PAUSED_QUEUE_BYTES_MAX_DEFAULT;
    this.allocate = options.allocate ?? ((bytes) => Buffer.alloc(bytes));
    this.borrowedChunks = options.borrowedChunks ?? false;
    assert(Number.isInteger(this.payloadBytesMax) && this.payloadBytesMax >= 0 && this.payloadBytesMax <= U32_MAX, 'payloadBytesMax must be a u32');
  }

  /** Takes ownership of `chunk`. Returns false when the caller should stop reading (paused or failed). */
  feed(chunk: Buffer): boolean {
    if (this.state === S_FAILED) return false;
    if (chunk.length > 0) {
      this.queue.push(chunk);
      this.queuedBytes += chunk.length;
      if (!(!this.paused || this.queuedBytes - this.queuePos <= this.pausedQueueBytesMax)) fail(`fed ${this.queuedBytes - this.queuePos} bytes while paused`);
      try {
        this.drain();
      } finally {
        if (this.borrowedChunks) this.keepRestOf(chunk); // even if a handler threw
      }
    }
    return !this.paused && this.state !== S_FAILED;
  }

  pause(): void {
    this.paused = true;
  }

  /** A lent chunk still queued (paused mid-chunk) is replaced by a copy of its unread bytes. */
  private keepRestOf(chunk: Buffer): void {
    const i = this.queue.lastIndexOf(chunk);
    if (i < 0) return;
    const from = i === 0 ? this.queuePos : 0;
    this.queue[i] = Buffer.from(chunk.subarray(from));
    if (i === 0) {
      this.queuedBytes -= from;
      this.queuePos = 0;
    }
  }

  resume(): void {
    this.paused = false;
    this.drain();
  }

  isPaused(): boolean {
    return this.paused;
  }

  /** The fatal error, once the decoder has failed; null before. */
  failed(): FrameError | null {
    return this.failure;
  }

  /** Bytes held: fed but unparsed, a partial header, and a partially received payload. */
  heldBytes(): number {
    return this.queuedBytes - this.queuePos + this.scratchFill + (this.body ? this.bodyFill : 0);
  }

  private drain(): void {
    if (this.draining) return; // a handler resumed us from inside the loop below
    this.draining = true;
    try {
      while (!this.paused && this.state !== S_FAILED && this.queue.length > 0) {
        const chunk = this.queue[0];
        const pos = this.state === S_HEADER ? this.stepHeader(chunk, this.queuePos) : this.stepPayload(chunk, this.queuePos);
        if (this.state === S_FAILED) break; // fail() already dropped the queue
        if (pos >= chunk.length) {
          this.queue.shift();
          this.queuedBytes -= chunk.length;
          this.queuePos = 0;
        } else {
          this.queuePos = pos;
        }
      }
    } finally {
      this.draining = false;
    }
  }

  private stepHeader(chunk: Buffer, pos: number): number {
    const availBytes = chunk.length - pos;
    if (this.scratchFill === 0 && availBytes >= FRAME_HEADER_BYTES) {
      this.onHeader(chunk, pos); // whole header in this chunk: parse in place
      return pos + FRAME_HEADER_BYTES;
    }
    const n = Math.min(availBytes, FRAME_HEADER_BYTES - this.scratchFill);
    chunk.copy(this.scratch, this.scratchFill, pos, pos + n);
    this.scratchFill += n;
    if (this.scratchFill === FRAME_HEADER_BYTES) {
      this.scratchFill = 0;
      this.onHeader(this.scratch, 0);
    }
    return pos + n;
  }

  private onHeader(buf: Buffer, at: number): void {
    const magic = buf.readUInt32LE(at);
    if (magic !== FRAME_MAGIC) return this.fail('bad-magic', `bad frame magic 0x${magic.toString(16).padStart(8, '0')}: not a Tessera RPC stream`);
    const headerCrcOk = crc32cRange(buf, at, at + FRAME_HEADER_CRC_COVERED_BYTES) === buf.readUInt32LE(at + 36);
    const version = buf.readUInt8(at + 4);
    if (version !== FRAME_VERSION) {
      return this.fail('bad-version', `unsupported frame version ${version} (this daemon speaks ${FRAME_VERSION}; header crc ${headerCrcOk ? 'ok' : 'bad'})`);
    }
    if (!headerCrcOk) return this.fail('header-crc', 'frame header crc32c mismatch');
    const kind = buf.readUInt8(at + 5);
    if (kind !== FrameKind.Request && kind !== FrameKind.Response && kind !== FrameKind.OneWay) {
      return this.fail('bad-kind', `unknown frame kind ${kind}`);
    }
    if (buf.readUInt16LE(at + 10) !== 0 || buf.readUInt32LE(at + 12) !== 0) return this.fail('bad-reserved', 'reserved header fields are not zero');
    const status = buf.readUInt32LE(at + 24);
    if (status !== 0 && kind !== FrameKind.Response) return this.fail('bad-status', `status ${status} in a frame of kind ${kind}`);
    const payloadBytes = buf.readUInt32LE(at + 28);
    if (payloadBytes > this.payloadBytesMax) {
      return this.fail('payload-too-large', `frame payload of ${payloadBytes} bytes exceeds the limit of ${this.payloadBytesMax}`);
    }
    this.header = {
      kind: kind as FrameKind,
      flags: buf.readUInt16LE(at + 6),
      method: buf.readUInt16LE(at + 8),
      requestId: buf.readBigUInt64LE(at + 16),
      status,
    };
    this.payloadBytes = payloadBytes;
    this.payloadCrc = buf.readUInt32LE(at + 32);
    if (payloadBytes === 0) this.complete(EMPTY);
    else this.state = S_PAYLOAD;
  }

  private stepPayload(chunk: Buffer, pos: number): number {
    const availBytes = chunk.length - pos;
    if (this.body === null) {
      if (availBytes >= this.payloadBytes && !this.borrowedChunks) {
        const end = pos + this.payloadBytes;
        this.complete(chunk.subarray(pos, end)); // whole payload in this chunk: no copy
        return end;
      }
      this.body = this.allocate(this.payloadBytes);
      assert(this.body.length === this.payloadBytes, 'allocator returned a buffer of the wrong size');
      this.bodyFill = 0;
    }
    const body = this.body;
    const n = Math.min(availBytes, body.length - this.bodyFill);
    chunk.copy(body, this.bodyFill, pos, pos + n);
    this.bodyFill += n;
    if (this.bodyFill === body.length) {
      this.body = null;
      this.bodyFill = 0;
      this.complete(body);
    }
    return pos + n;
  }

  /** Hands out one frame (or its corruption) and returns to S_HEADER. */
  private complete(payload: Buffer): void {
    const header = this.header!;
    this.header = null;
    this.state = S_HEADER;
    const crc = crc32c(payload);
    if (crc !== this.payloadCrc) {
      const error = new FrameError(
        'payload-crc',
        `frame payload crc32c mismatch (requestId ${header.requestId}, method ${header.method}, ${payload.length} bytes)`,
      );
      this.handler.onCorruptFrame(header, error);
      return;
    }
    // A plain literal, not a spread of header: one per frame on the OSD hot path.
    this.handler.onFrame({ kind: header.kind, flags: header.flags, method: header.method, requestId: header.requestId, status: header.status, payload });
  }

  private fail(reason: FrameErrorReason, message: string): void {
    const error = new FrameError(reason, message);
    this.state = S_FAILED;
    this.failure = error;
    this.queue = [];
    this.queuePos = 0;
    this.queuedBytes = 0;
    this.scratchFill = 0;
    this.body = null;
    this.bodyFill = 0;
    this.header = null;
    this.handler.onFailure(error);
  }
}
