// One NBD connection as a state machine: greeting → option haggling → transmission
// → (draining) → closed. Pure logic: bytes come in through onData(), go out through
// a `Connection`, and data lives behind a `VolumeStore`; no sockets, no timers.
//
// Invariants:
// - Requests run concurrently (replies may be out of order, as proto.md
//   "Transmission" allows) but at most `inFlightRequestsMax` at once and at most
//   about `bufferedBytesMax` (+ one maximal payload) of write payloads and read
//   buffers held; beyond that we stop reading the socket (backpressure), and also
//   while the transport's write buffer is full.
// - Every request gets exactly one reply (except NBD_CMD_DISC, which has none),
//   unless the connection closed first; execute() never rejects.
// - Nothing a client sends can throw out of onData(): protocol violations close
//   this connection only; volume failures become NBD errors.
// - After close, in-flight work still settles (so whenIdle() resolves) but its
//   replies are dropped, and no further input is parsed.
// - quietHooks (idle polling): busy() when the in-flight count goes 0 -> 1,
//   quiet(stayOpen) when it goes 1 -> 0, exactly one quiet per busy, also
//   after a close (stayOpen false unless still in transmission).
import { isTesseraError } from '../../stdx/errors.js';
import type { Volume, VolumeStore } from '../../volume/types.js';
import type { SharedBudget } from './budget.js';
import { VOLUME_NAME_RE } from '../../volume/types.js';
import {
  NbdDecoder,
  encodeBlockStatus,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoDescription,
  encodeInfoExport,
  encodeInfoName,
  encodeMetaContext,
  encodeNoneChunk,
  encodeOptionAck,
  encodeOptionError,
  encodeRepServer,
  encodeServerGreeting,
  encodeSimpleReply,
  parseExportName,
  parseInfoRequest,
  parseMetaContextRequest,
  writeOffsetDataHeader,
  writeSimpleReplyHeader,
} from './codec.js';
import type { BlockDescriptor, BodyAllocator, DecodeFailure, DecoderHandler, NbdRequest } from './codec.js';
import * as C from './constants.js';

import type { Connection, LogFn } from '../transport.js';
import type { QuietHooks } from '../idle-poll.js';
import { LARGE_BUFFER_BYTES, largeReadBuffers, writePayloadBuffers } from '../buffers.js';
import { Slab } from '../../stdx/slab.js';
export type { Connection, LogFn, LogLevel } from '../transport.js';

export interface SessionOptions {
  store: VolumeStore;
  log?: LogFn;
  /** For log lines, e.g. the peer address. */
  label?: string;
  defaultExportName?: string;
  inFlightRequestsMax?: number;
  bufferedBytesMax?: number;
  /** Server-wide bound on buffered bytes across connections (see budget.ts). */
  sharedBudget?: SharedBudget;
  /** In-flight count 0 -> 1 and 1 -> 0, for the server's idle polling (gateway/idle-poll.ts). */
  quietHooks?: QuietHooks;
}

export type SessionPhase = 'greeting' | 'options' | 'transmission' | 'draining' | 'closed';

interface Rejection {
  errno: number;
  message: string;
}

const HANDSHAKE_FLAGS = C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES;
const BASE_TRANSMISSION_FLAGS =
  C.NBD_FLAG_HAS_FLAGS |
  C.NBD_FLAG_SEND_FLUSH |
  C.NBD_FLAG_SEND_FUA |
  C.NBD_FLAG_SEND_TRIM |
  C.NBD_FLAG_SEND_WRITE_ZEROES |
  C.NBD_FLAG_SEND_FAST_ZERO |
  C.NBD_FLAG_CAN_MULTI_CONN |
  C.NBD_FLAG_SEND_CACHE;

/** proto.md "Command flags": which flags each command accepts. FUA is valid on every command. */
function allowedFlags(type: number, structured: boolean): number {
  switch (type) {
    case C.NBD_CMD_READ:
      return C.NBD_CMD_FLAG_FUA | (structured ? C.NBD_CMD_FLAG_DF : 0);
    case C.NBD_CMD_WRITE_ZEROES:
      return C.NBD_CMD_FLAG_FUA | C.NBD_CMD_FLAG_NO_HOLE | C.NBD_CMD_FLAG_FAST_ZERO;
    case C.NBD_CMD_BLOCK_STATUS:
      return C.NBD_CMD_FLAG_FUA | C.NBD_CMD_FLAG_REQ_ONE;
    default:
      return C.NBD_CMD_FLAG_FUA;
  }
}

/** Small bodies (option data, writes under LARGE_BUFFER_BYTES) copied out of socket chunks. */
const bodySlab = new Slab(256 * 1024, 32 * 1024);

/**
 * The decoder's body buffers: a large write payload comes from the gateways' shared
 * recycled buffers (given back once the volume wrote it, see execute), a small body
 * from a slab, so that neither costs an ArrayBuffer of its own.
 */
const allocateBody: BodyAllocator = (bytes, writePayload) =>
  writePayload && bytes >= LARGE_BUFFER_BYTES ? writePayloadBuffers.take(bytes) : bytes <= bodySlab.pieceBytesMax ? bodySlab.take(bytes) : Buffer.allocUnsafe(bytes);

/**
 * Maps a failure from the volume to an NBD error ("Error values"). Non-Tessera errors
 * are programmer errors: reported so the caller logs them, answered with EIO.
 */
export function errnoForError(err: unknown): { errno: number; unexpected: boolean } {
  if (!isTesseraError(err)) return { errno: C.NBD_EIO, unexpected: true };
  switch (err.code) {
    case 'ERR_NO_SPACE':
    case 'ERR_LIMIT': // proto.md: EDQUOT/EFBIG map to ENOSPC
      return { errno: C.NBD_ENOSPC, unexpected: false };
    case 'ERR_RANGE':
    case 'ERR_INVALID':
      return { errno: C.NBD_EINVAL, unexpected: false };
    case 'ERR_NOT_FOUND': // the volume was deleted under us
    case 'ERR_CLOSED':
      // ESHUTDOWN makes the client disconnect softly ("Terminating the transmission phase").
      return { errno: C.NBD_ESHUTDOWN, unexpected: false };
    default: // ERR_DEVICE_IO, ERR_CHECKSUM, ERR_DEVICE_FLUSH, ERR_TIMEOUT, ...
      return { errno: C.NBD_EIO, unexpected: false };
  }
}

export class NbdSession implements DecoderHandler {
  private phase: SessionPhase = 'greeting';
  private readonly decoder: NbdDecoder;
  private readonly log: LogFn;
  private readonly label: string;
  private readonly defaultExportName: string;
  private readonly inFlightRequestsMax: number;
  private readonly bufferedBytesMax: number;

  // Negotiated state.
  private noZeroes = false;
  private structuredReplies = false;
  /** Canonical export name that NBD_OPT_SET_META_CONTEXT last selected base:allocation for. */
  private metaContextExport: string | null = null;
  private metaContextActive = false;
  private blockSizeAgreed = false;
  private volume: Volume | null = null;
  private transmissionFlags = 0;

  // Flow control.
  private inFlightRequests = 0;
  private bufferedBytes = 0;
  private writeBlocked = false;
  private readingPaused = false;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly conn: Connection,
    private readonly opts: SessionOptions,
  ) {
    this.log = opts.log ?? (() => {});
    this.label = opts.label ?? 'nbd';
    this.defaultExportName = opts.defaultExportName ?? C.DEFAULT_EXPORT_NAME;
    this.inFlightRequestsMax = opts.inFlightRequestsMax ?? C.IN_FLIGHT_REQUESTS_MAX;
    this.bufferedBytesMax = opts.bufferedBytesMax ?? C.BUFFERED_BYTES_MAX;
    this.decoder = new NbdDecoder(this, { borrowedChunks: conn.borrowsReads === true, allocateBody });
  }

  // --- Transport events -----------------------------------------------------

  /** Sends the server greeting ("Newstyle negotiation"). */
  start(): void {
    this.send(encodeServerGreeting(HANDSHAKE_FLAGS));
  }

  onData(chunk: Buffer): void {
    if (this.phase === 'closed') return;
    this.decoder.feed(chunk);
  }

  onDrain(): void {
    this.writeBlocked = false;
    this.updateBackpressure();
  }

  /** The transport is gone (peer hung up, reset, or our close completed). */
  onClose(): void {
    if (this.phase !== 'closed') this.phase = 'closed';
    this.opts.sharedBudget?.forget(this.onBudgetRoom);
    this.decoder.stop();
    this.notifyIdle();
  }

  /** Server shutdown: negotiation ends now; transmission finishes in-flight requests then closes. */
  shutdown(): void {
    if (this.phase === 'transmission') this.beginDrain();
    else if (this.phase !== 'draining') this.closeNow();
  }

  /** Resolves once the connection is closed and every in-flight request has settled. */
  whenIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Still in the handshake (greeting or option haggling): the server's negotiation timeout applies. */
  negotiating(): boolean {
    return this.phase === 'greeting' || this.phase === 'options';
  }

  state(): SessionPhase {
    return this.phase;
  }

  inFlight(): number {
    return this.inFlightRequests;
  }

  heldBytes(): number {
    return this.bufferedBytes + this.decoder.heldBytes();
  }

  isReadingPaused(): boolean {
    return this.readingPaused;
  }

  // --- Decoder events: handshake and options --------------------------------

  onClientFlags(flags: number): void {
    // "Client flags": the server MUST drop the connection on an unknown flag.
    if ((flags & ~C.NBD_CLIENT_FLAGS_KNOWN) !== 0) {
      this.log('warn', `${this.label}: unknown client flags 0x${flags.toString(16)}; closing`);
      this.closeNow();
      return;
    }
    this.noZeroes = (flags & C.NBD_FLAG_C_NO_ZEROES) !== 0;
    this.phase = 'options';
  }

  onOption(option: number, data: Buffer): void {
    if (this.phase !== 'options') return;
    switch (option) {
      case C.NBD_OPT_EXPORT_NAME:
        return this.optExportName(data);
      case C.NBD_OPT_ABORT:
        // "NBD_OPT_ABORT": reply ACK (data, if any, ignored), then the session ends.
        this.send(encodeOptionAck(option));
        return this.closeNow();
      case C.NBD_OPT_LIST:
        return this.optList(data);
      case C.NBD_OPT_STARTTLS:
        // "NOTLS mode": we do not support STARTTLS at all, so ERR_UNSUP.
        return this.optError(option, C.NBD_REP_ERR_UNSUP, 'TLS is not configured on this server');
      case C.NBD_OPT_INFO:
      case C.NBD_OPT_GO:
        return this.optInfoOrGo(option, data);
      case C.NBD_OPT_STRUCTURED_REPLY:
        return this.optStructuredReply(data);
      case C.NBD_OPT_LIST_META_CONTEXT:
      case C.NBD_OPT_SET_META_CONTEXT:
        return this.optMetaContext(option, data);
      default:
        // "Baseline": unknown options get ERR_UNSUP and we keep parsing.
        return this.optError(option, C.NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
    }
  }

  onDecodeFailure(kind: DecodeFailure, option: number, lengthBytes: number): void {
    if (kind === 'option-too-large') {
      this.optError(option, C.NBD_REP_ERR_TOO_BIG, `option data of ${lengthBytes} bytes exceeds ${C.OPTION_DATA_BYTES_MAX}`);
    }
    this.log('warn', `${this.label}: ${kind}; closing`);
    this.closeNow();
  }

  private optError(option: number, errorType: number, message: string): void {
    this.send(encodeOptionError(option, errorType, message));
  }

  /** Empty name → the default export ("NBD_OPT_EXPORT_NAME"); null when there is no such volume. */
  private resolveExport(name: string): string | null {
    const wanted = name === '' ? this.defaultExportName : name;
    if (!VOLUME_NAME_RE.test(wanted)) return null;
    try {
      return this.opts.store.info(wanted).name;
    } catch {
      return null;
    }
  }

  private openExport(canonical: string): Volume | null {
    try {
      return this.opts.store.open(canonical);
    } catch (err) {
      this.log('warn', `${this.label}: cannot open export "${canonical}": ${String(err)}`);
      return null;
    }
  }

  private optExportName(data: Buffer): void {
    // "NBD_OPT_EXPORT_NAME" cannot report errors: on any failure the server MUST terminate.
    const parsed = parseExportName(data);
    const canonical = parsed.ok ? this.resolveExport(parsed.value) : null;
    const volume = canonical === null ? null : this.openExport(canonical);
    if (canonical === null || volume === null) {
      this.log('warn', `${this.label}: NBD_OPT_EXPORT_NAME for an unknown export; closing`);
      this.closeNow();
      return;
    }
    this.enterTransmission(canonical, volume, false);
    this.send(encodeExportNameReply(volume.sizeBytes(), this.transmissionFlags, this.noZeroes));
  }

  private optList(data: Buffer): void {
    if (data.length !== 0) return this.optError(C.NBD_OPT_LIST, C.NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
    for (const v of this.opts.store.list()) this.send(encodeRepServer(C.NBD_OPT_LIST, v.name));
    this.send(encodeOptionAck(C.NBD_OPT_LIST));
  }

  private optStructuredReply(data: Buffer): void {
    if (data.length !== 0) {
      return this.optError(C.NBD_OPT_STRUCTURED_REPLY, C.NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
    }
    this.structuredReplies = true;
    this.send(encodeOptionAck(C.NBD_OPT_STRUCTURED_REPLY));
  }

  private optInfoOrGo(option: number, data: Buffer): void {
    const parsed = parseInfoRequest(data);
    if (!parsed.ok) return this.optError(option, C.NBD_REP_ERR_INVALID, parsed.message);
    const { name, infoTypes } = parsed.value;
    const canonical = this.resolveExport(name);
    if (canonical === null) return this.optError(option, C.NBD_REP_ERR_UNKNOWN, `no export named "${name}"`);
    // Only GO opens a handle; INFO just describes the export.
    const volume = option === C.NBD_OPT_GO ? this.openExport(canonical) : null;
    if (option === C.NBD_OPT_GO && volume === null) return this.optError(option, C.NBD_REP_ERR_UNKNOWN, `export "${canonical}" is not available`);
    const sizeBytes = volume !== null ? volume.sizeBytes() : this.opts.store.info(canonical).sizeBytes;
    this.send(encodeInfoExport(option, sizeBytes, this.flagsForTransmission()));
    if (infoTypes.includes(C.NBD_INFO_NAME) || name !== canonical) this.send(encodeInfoName(option, canonical));
    if (infoTypes.includes(C.NBD_INFO_DESCRIPTION)) this.send(encodeInfoDescription(option, `Tessera volume ${canonical}`));
    // Sent even unrequested ("NBD_REP_INFO": the server MAY send info not asked for).
    this.send(encodeInfoBlockSize(option, C.BLOCK_SIZE_MIN_BYTES, C.BLOCK_SIZE_PREFERRED_BYTES, C.PAYLOAD_BYTES_MAX));
    this.send(encodeOptionAck(option));
    if (volume !== null) {
      // "NBD_INFO_BLOCK_SIZE": only a GO that asked for block sizes commits the client to them.
      this.enterTransmission(canonical, volume, infoTypes.includes(C.NBD_INFO_BLOCK_SIZE));
    }
  }

  private optMetaContext(option: number, data: Buffer): void {
    const isSet = option === C.NBD_OPT_SET_META_CONTEXT;
    // "NBD_OPT_SET_META_CONTEXT" replaces the selection even when it fails.
    if (isSet) this.metaContextExport = null;
    if (isSet && !this.structuredReplies) {
      return this.optError(option, C.NBD_REP_ERR_INVALID, 'negotiate NBD_OPT_STRUCTURED_REPLY first');
    }
    const parsed = parseMetaContextRequest(data);
    if (!parsed.ok) return this.optError(option, C.NBD_REP_ERR_INVALID, parsed.message);
    const { exportName, queries } = parsed.value;
    const canonical = this.resolveExport(exportName);
    if (canonical === null) return this.optError(option, C.NBD_REP_ERR_UNKNOWN, `no export named "${exportName}"`);
    if (queries.some((q) => !q.includes(':'))) {
      return this.optError(option, C.NBD_REP_ERR_INVALID, 'a query must start with a namespace and a colon');
    }
    // "The base: metadata namespace": "base:" is a wildcard for LIST only, unknown
    // leaves and namespaces are ignored; zero queries list everything / select nothing.
    const matches = isSet
      ? queries.includes(C.META_CONTEXT_BASE_ALLOCATION)
      : queries.length === 0 || queries.some((q) => q === 'base:' || q === C.META_CONTEXT_BASE_ALLOCATION);
    if (matches) {
      const id = isSet ? C.META_CONTEXT_ID_BASE_ALLOCATION : 0; // LIST ids are reserved, SHOULD be 0
      this.send(encodeMetaContext(option, id, C.META_CONTEXT_BASE_ALLOCATION));
      if (isSet) this.metaContextExport = canonical;
    }
    this.send(encodeOptionAck(option));
  }

  private flagsForTransmission(): number {
    // "Transmission flags": SEND_DF MUST be clear unless structured replies were negotiated.
    return BASE_TRANSMISSION_FLAGS | (this.structuredReplies ? C.NBD_FLAG_SEND_DF : 0);
  }

  private enterTransmission(canonical: string, volume: Volume, blockSizeAgreed: boolean): void {
    this.volume = volume;
    this.transmissionFlags = this.flagsForTransmission();
    this.blockSizeAgreed = blockSizeAgreed;
    // "Metadata querying": contexts count only if set for the export actually chosen.
    this.metaContextActive = this.structuredReplies && this.metaContextExport === canonical;
    this.phase = 'transmission';
    this.decoder.enterTransmission();
    this.log('info', `${this.label}: exporting "${canonical}"`);
  }

  // --- Decoder events: transmission ----------------------------------------

  onRequest(request: NbdRequest): void {
    if (this.phase !== 'transmission') return; // after DISC or close, input is ignored
    if (request.type === C.NBD_CMD_DISC) return this.beginDrain();
    const costBytes = this.costOf(request);
    if (++this.inFlightRequests === 1) this.opts.quietHooks?.busy();
    this.bufferedBytes += costBytes;
    this.opts.sharedBudget?.take(costBytes);
    this.updateBackpressure();
    void this.execute(request, costBytes);
  }

  /** Bytes this request holds until it is answered: its write payload or its read buffer. */
  private costOf(request: NbdRequest): number {
    if (request.data !== null) return request.data.length;
    if (request.type === C.NBD_CMD_READ && request.lengthBytes <= C.PAYLOAD_BYTES_MAX) return request.lengthBytes;
    return 0;
  }

  private async execute(request: NbdRequest, costBytes: number): Promise<void> {
    try {
      const rejection = this.validate(request);
      if (rejection !== null) this.replyError(request, rejection.errno, rejection.message);
      else await this.dispatch(request);
      // The volume wrote it (a failed write may leave a backend holding it: dropped instead).
      if (request.data !== null && writePayloadBuffers.owns(request.data)) writePayloadBuffers.give(request.data);
    } catch (err) {
      const { errno, unexpected } = errnoForError(err);
      if (unexpected) this.log('error', `${this.label}: unexpected failure in command ${request.type}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      this.replyError(request, errno, err instanceof Error ? err.message : 'internal error');
    } finally {
      this.inFlightRequests--;
      this.bufferedBytes -= costBytes;
      this.opts.sharedBudget?.give(costBytes);
      this.updateBackpressure();
      if (this.inFlightRequests === 0) {
        this.opts.quietHooks?.quiet(this.phase === 'transmission');
        if (this.phase === 'draining') this.closeNow();
      }
      this.notifyIdle();
    }
  }

  /** Checks a request against proto.md before touching the volume; null when it may run. */
  private validate(request: NbdRequest): Rejection | null {
    const { type, flags, lengthBytes } = request;
    if (type > C.NBD_CMD_BLOCK_STATUS || type === C.NBD_CMD_DISC) {
      return { errno: C.NBD_EINVAL, message: `unknown command ${type}` }; // "Error values": unknown command
    }
    if ((flags & ~allowedFlags(type, this.structuredReplies)) !== 0) {
      return { errno: C.NBD_EINVAL, message: `flags 0x${flags.toString(16)} are not valid for command ${type}` };
    }
    if (request.payloadSkipped) {
      return { errno: C.NBD_EINVAL, message: `write of ${lengthBytes} bytes exceeds the maximum payload ${C.PAYLOAD_BYTES_MAX}` };
    }
    if (type === C.NBD_CMD_FLUSH) return null; // offset and length are reserved
    if (type === C.NBD_CMD_READ && lengthBytes > C.PAYLOAD_BYTES_MAX) {
      // "NBD_CMD_READ": with DF, EOVERFLOW says "too large to send unfragmented".
      const errno = (flags & C.NBD_CMD_FLAG_DF) !== 0 ? C.NBD_EOVERFLOW : C.NBD_EINVAL;
      return { errno, message: `read of ${lengthBytes} bytes exceeds the maximum payload ${C.PAYLOAD_BYTES_MAX}` };
    }
    const sizeBytes = this.volume!.sizeBytes();
    if (!request.offsetSafe || request.offsetBytes + lengthBytes > sizeBytes) {
      // "Error values": ENOSPC for writes past the end, EINVAL for everything else.
      const errno = type === C.NBD_CMD_WRITE || type === C.NBD_CMD_WRITE_ZEROES ? C.NBD_ENOSPC : C.NBD_EINVAL;
      return { errno, message: `range ${request.offset}+${lengthBytes} is beyond the export size ${sizeBytes}` };
    }
    if (type === C.NBD_CMD_BLOCK_STATUS) return this.validateBlockStatus(request);
    if (this.blockSizeAgreed && (request.offsetBytes % C.BLOCK_SIZE_MIN_BYTES !== 0 || lengthBytes % C.BLOCK_SIZE_MIN_BYTES !== 0)) {
      // "Size constraints": only a client that agreed to our minimum block size is held to it.
      return { errno: C.NBD_EINVAL, message: `range ${request.offset}+${lengthBytes} is not aligned to ${C.BLOCK_SIZE_MIN_BYTES} bytes` };
    }
    return null;
  }

  private validateBlockStatus(request: NbdRequest): Rejection | null {
    if (!this.metaContextActive) {
      return { errno: C.NBD_EINVAL, message: 'no metadata context was selected with NBD_OPT_SET_META_CONTEXT' };
    }
    if (request.lengthBytes === 0) return { errno: C.NBD_EINVAL, message: 'block status of 0 bytes' };
    return null;
  }

  private async dispatch(request: NbdRequest): Promise<void> {
    const volume = this.volume!;
    const fua = (request.flags & C.NBD_CMD_FLAG_FUA) !== 0;
    switch (request.type) {
      case C.NBD_CMD_READ:
        return this.read(volume, request);
      case C.NBD_CMD_WRITE:
        await volume.write(request.offsetBytes, request.data!, fua);
        break;
      case C.NBD_CMD_FLUSH:
        await volume.flush();
        break;
      case C.NBD_CMD_TRIM:
        await volume.trim(request.offsetBytes, request.lengthBytes, fua);
        break;
      case C.NBD_CMD_WRITE_ZEROES:
        // NO_HOLE forbids freeing space. FAST_ZERO needs nothing: our zeroing frees or
        // marks, never writes zeros slowly, so it is always faster than a write.
        await volume.writeZeroes(request.offsetBytes, request.lengthBytes, fua, (request.flags & C.NBD_CMD_FLAG_NO_HOLE) === 0);
        break;
      case C.NBD_CMD_CACHE:
        break; // a hint; nothing to prefetch into (range already checked)
      case C.NBD_CMD_BLOCK_STATUS:
        return this.blockStatus(volume, request);
    }
    this.send(encodeSimpleReply(0, request.cookie));
  }

  /**
   * One buffer per reply: header, then the volume reads straight into it. Uninitialized:
   * Volume.read fills every byte of the range or throws, and a reply whose read threw
   * is never sent, so no uninitialised memory leaves the process. A large one comes
   * from the gateways' shared recycled buffers and goes back once the socket sent it.
   */
  private async read(volume: Volume, request: NbdRequest): Promise<void> {
    const lengthBytes = request.lengthBytes;
    if (this.structuredReplies && lengthBytes === 0) return this.send(encodeNoneChunk(request.cookie)); // OFFSET_DATA needs ≥ 1 byte
    const headerBytes = this.structuredReplies ? C.OFFSET_DATA_HEADER_BYTES : C.SIMPLE_REPLY_HEADER_BYTES;
    const large = lengthBytes >= LARGE_BUFFER_BYTES;
    const out = large ? largeReadBuffers.take(headerBytes + lengthBytes) : Buffer.allocUnsafe(headerBytes + lengthBytes);
    // DONE on the data chunk is safe: the whole read completes before the chunk is sent.
    if (this.structuredReplies) writeOffsetDataHeader(out, 0, C.NBD_REPLY_FLAG_DONE, request.cookie, request.offsetBytes, lengthBytes);
    else writeSimpleReplyHeader(out, 0, 0, request.cookie);
    // A read that throws drops out to the GC (a backend may still write into it).
    if (lengthBytes > 0) await volume.read(request.offsetBytes, lengthBytes, out, headerBytes);
    this.send(out, large ? () => largeReadBuffers.give(out) : undefined);
  }

  private async blockStatus(volume: Volume, request: NbdRequest): Promise<void> {
    const reqOne = (request.flags & C.NBD_CMD_FLAG_REQ_ONE) !== 0;
    // The length is a hint ("Metadata querying"): look at a bounded window only.
    const queryBytes = Math.min(request.lengthBytes, C.BLOCK_STATUS_QUERY_BYTES_MAX);
    const extents = await volume.blockStatus(request.offsetBytes, queryBytes);
    const descriptorsMax = reqOne ? 1 : C.BLOCK_STATUS_DESCRIPTORS_MAX;
    const descriptors: BlockDescriptor[] = [];
    for (const e of extents) {
      if (descriptors.length >= descriptorsMax) break;
      if (e.lengthBytes <= 0) continue;
      descriptors.push({ lengthBytes: e.lengthBytes, statusFlags: (e.hole ? C.NBD_STATE_HOLE : 0) | (e.zero ? C.NBD_STATE_ZERO : 0) });
    }
    // At least one descriptor MUST be returned; status 0 ("unknown") is always safe.
    if (descriptors.length === 0) descriptors.push({ lengthBytes: queryBytes, statusFlags: 0 });
    if (reqOne && descriptors[0].lengthBytes > request.lengthBytes) descriptors[0].lengthBytes = request.lengthBytes;
    this.send(encodeBlockStatus(C.NBD_REPLY_FLAG_DONE, request.cookie, C.META_CONTEXT_ID_BASE_ALLOCATION, descriptors));
  }

  /** With structured replies errors go in an ERROR chunk (it carries a message); else a simple reply. */
  private replyError(request: NbdRequest, errno: number, message: string): void {
    if (this.structuredReplies) this.send(encodeErrorChunk(C.NBD_REPLY_FLAG_DONE, request.cookie, errno, message));
    else this.send(encodeSimpleReply(errno, request.cookie));
  }

  // --- Output, flow control, closing ---------------------------------------

  /** onSent: called once the transport is done with buf (sent, or the connection gone). */
  private send(buf: Buffer, onSent?: () => void): void {
    if (this.phase === 'closed') {
      onSent?.();
      return;
    }
    if (!this.conn.write(buf, onSent)) {
      this.writeBlocked = true;
      this.updateBackpressure();
    }
  }

  private readonly onBudgetRoom = (): void => this.updateBackpressure();

  private updateBackpressure(): void {
    if (this.phase === 'closed') return;
    const budget = this.opts.sharedBudget;
    const budgetSpent = budget !== undefined && budget.exhausted();
    if (budgetSpent) budget.waitForRoom(this.onBudgetRoom);
    const mustPause = this.inFlightRequests >= this.inFlightRequestsMax || this.bufferedBytes >= this.bufferedBytesMax || this.writeBlocked || budgetSpent;
    if (mustPause && !this.readingPaused) {
      this.readingPaused = true;
      this.decoder.pause();
      this.conn.pauseReading();
    } else if (!mustPause && this.readingPaused) {
      this.readingPaused = false;
      this.conn.resumeReading();
      this.decoder.resume(); // may deliver held requests, re-entering here
    }
  }

  /** NBD_CMD_DISC or server shutdown: read nothing more, answer what is in flight, then close. */
  private beginDrain(): void {
    this.phase = 'draining';
    this.decoder.stop();
    if (this.inFlightRequests === 0) this.closeNow();
  }

  private closeNow(): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.decoder.stop();
    this.conn.close();
    this.notifyIdle();
  }

  private isIdle(): boolean {
    return this.phase === 'closed' && this.inFlightRequests === 0;
  }

  private notifyIdle(): void {
    if (!this.isIdle() || this.idleWaiters.length === 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
