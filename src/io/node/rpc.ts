// TCP transport of the binary RPC between Tessera daemons (SPEC CLU7): frames
// (src/rpc/frame.ts) over TCP, a server whose handler replies when it likes, a
// pipelined client per remote address, and a pool of clients keyed by "host:port".
// The codecs stay pure in src/rpc/; this file owns sockets, timers and limits.
//
// Wire: a stream of frames each way. The client sends requests (kind 1, a fresh
// u64 requestId each, never reused by that client) and one-way frames (kind 3,
// requestId 0); the server answers each request with one response (kind 2) that
// echoes its requestId and method, in any order. A request whose payload fails
// its crc is answered with Status.Invalid (an ErrorResponse body from
// messages.ts) and the connection goes on, as does one whose handler throws a
// TesseraError (a payload its decoder refused); any fatal frame error (bad magic,
// header crc, oversized length, a frame of the wrong kind, a reused requestId)
// closes the connection.
//
// Invariants and limits (every queue is bounded):
// - Server, per connection: at most requestsInFlightPerConnectionMax requests
//   handed to the handler and not yet answered; at that bound, or while more than
//   outputBytesPerConnectionMax reply bytes wait in the socket, it stops reading
//   (TCP backpressure reaches the client). The decoder holds at most the rest of
//   one socket read while paused.
// - Client: at most requestsInFlightMax requests on the wire; beyond, callers wait
//   in a queue, and at most requestsInFlightMax + waitQueueMax requests are pending
//   in all (then ERR_LIMIT). Requests also wait (do not go on the wire) while the
//   connection is being made or more than outputBytesMax bytes are unsent.
// - Every request settles exactly once: response, ERR_TIMEOUT (its own timer, a
//   late response is dropped and counted), ERR_CHECKSUM (corrupt response), or
//   ERR_CLOSED. A request on a connection that drops fails with ERR_CLOSED at once
//   and is never resent: whether to retry is the caller's decision (a write may
//   have been applied).
// - Reconnection: after an established connection drops it reconnects at once; a
//   failed attempt (or a connection that drops within connectionStableMs) backs off
//   reconnectDelayMsMin·2^n capped at reconnectDelayMsMax. While backing off,
//   requests fail fast with ERR_CLOSED and one-way frames are dropped (counted):
//   raft tolerates loss and the caller retries requests.
// - TCP_NODELAY on every socket; writes of one event-loop pass leave corked in one
//   writev (TcpConnection in tcp.ts).
// - Every connection reads into the process's one lent buffer (net `onread`,
//   tcp.ts lentReads; servers through TcpListenOptions.borrowReads), so the decoder
//   copies every payload out (FrameDecoder borrowedChunks): small ones into a
//   shared slab; large responses into responsePayloadBuffers, which the consumer
//   may give back (OkResponse.release); large requests into fresh buffers (an OSD
//   keeps a write as a raft entry).
// - Payload buffers are handed to the socket as they are (no copy); a caller must
//   not modify them until the request settles. With `headroom`, parts[0] begins with
//   FRAME_HEADROOM_BYTES reserved for the frame header (no allocation per frame).
import { parseHostPort as parseHostPortOf } from '../../stdx/host-port.js';
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import { assert, fail } from '../../stdx/assert.js';
import { TesseraError } from '../../stdx/errors.js';
import { BufferRecycler } from '../../stdx/buffer-recycler.js';
import { Slab } from '../../stdx/slab.js';
import { FRAME_PAYLOAD_BYTES_MAX_DEFAULT, FrameDecoder, FrameKind } from '../../rpc/frame.js';
import type { Frame, FrameError, FrameHeader } from '../../rpc/frame.js';
import { FRAME_HEADROOM_BYTES, framePayload } from '../../rpc/headroom.js';
import { encodeClientResponse } from '../../rpc/messages.js';
import { Status } from '../../osd/proto.js';
import { TcpConnection, TcpListener, lentReads } from './tcp.js';
import type { TcpLogFn } from './tcp.js';

export { FRAME_HEADROOM_BYTES };

const KEEPALIVE_INITIAL_DELAY_MS = 30_000;
/** Payloads up to PAYLOAD_PIECE_BYTES_MAX read from a lent socket buffer are copied into regions of PAYLOAD_SLAB_BYTES slabs. */
export const PAYLOAD_SLAB_BYTES = 256 * 1024;
export const PAYLOAD_PIECE_BYTES_MAX = 16 * 1024;
const payloadSlab = new Slab(PAYLOAD_SLAB_BYTES, PAYLOAD_PIECE_BYTES_MAX);

/**
 * Response payloads over payloadSlab.pieceBytesMax (read results): the consumer
 * gives one back once it copied the data out (OkResponse.release, osd-rpc.ts), so
 * 1 MiB reads reuse a few buffers instead of a fresh ArrayBuffer each.
 */
export const responsePayloadBuffers = new BufferRecycler(32 * 1024 * 1024, 32 * 1024);

/**
 * Buffers for payloads read from a lent socket buffer (every byte is overwritten):
 * small ones are regions of a shared slab, so that a frame costs no ArrayBuffer;
 * large ones come from `large`.
 */
function slabOr(large: (bytes: number) => Buffer): (bytes: number) => Buffer {
  return (bytes) => (bytes > payloadSlab.pieceBytesMax ? large(bytes) : payloadSlab.take(bytes));
}

/** Responses: large read results are given back by their consumer. */
const allocResponsePayload = slabOr((bytes) => responsePayloadBuffers.take(bytes));
/** Requests: a large write becomes a raft entry the OSD keeps until compaction, so it is never given back. */
const allocRequestPayload = slabOr((bytes) => Buffer.allocUnsafeSlow(bytes));

const CLOSE_LINGER_MS = 5_000;
const EMPTY_PARTS: readonly Buffer[] = [];

export interface RpcSendOptions {
  /** Frame flags (u16), opaque to the transport. */
  flags?: number;
  /** parts[0] begins with FRAME_HEADROOM_BYTES reserved bytes (see the encoders' headroomBytes). */
  headroom?: boolean;
}

function partsOf(payload: readonly Buffer[] | Buffer): readonly Buffer[] {
  return Buffer.isBuffer(payload) ? [payload] : payload;
}

function payloadBytesOf(parts: readonly Buffer[], headroom: boolean): number {
  let n = headroom ? -FRAME_HEADROOM_BYTES : 0;
  for (const p of parts) n += p.length;
  return n;
}

// ---------------------------------------------------------------------------
// Server

export interface RpcServerOptions {
  /** Requests handed to the handler and not yet replied, per connection; beyond it the connection stops reading. */
  requestsInFlightPerConnectionMax?: number;
  /** Unsent reply bytes per connection above which it stops reading. */
  outputBytesPerConnectionMax?: number;
  payloadBytesMax?: number;
  keepAliveInitialDelayMs?: number;
  /** How long a connection closed for a protocol error may linger before it is destroyed. */
  closeLingerMs?: number;
  log?: TcpLogFn;
}

/** Called for every request and one-way frame; a request must be answered with conn.reply() (now or later). */
export type RpcHandler = (conn: RpcServerConnection, frame: Frame) => void;

export interface RpcServerStats {
  connectionsAccepted: number;
  requests: number;
  oneWayFrames: number;
  /** Requests whose payload failed its crc: answered with Status.Invalid. */
  corruptRequests: number;
  /** One-way frames whose payload failed its crc: dropped. */
  corruptOneWayFrames: number;
  /** Connections closed for a fatal protocol error. */
  protocolErrors: number;
  /** TesseraErrors thrown by the handler (e.g. a payload its decoder refused): the request answered with Status.Invalid, a one-way frame dropped. */
  handlerErrors: number;
}

export class RpcServerConnection {
  readonly remoteLabel: string;
  /** requestId → method of the requests the handler has not answered yet. */
  private readonly inFlight = new Map<bigint, number>();
  private readonly decoder: FrameDecoder;
  private outputFull = false;
  private closed = false;
  private resumeScheduled = false;

  constructor(
    private readonly tcp: TcpConnection,
    private readonly handler: RpcHandler,
    private readonly stats: RpcServerStats,
    private readonly requestsInFlightMax: number,
    private readonly payloadBytesMax: number,
    private readonly log: TcpLogFn,
  ) {
    this.remoteLabel = tcp.remoteLabel;
    this.decoder = new FrameDecoder(
      {
        onFrame: (frame) => this.onFrame(frame),
        onCorruptFrame: (header, error) => this.onCorruptFrame(header, error),
        onFailure: (error) => this.fatal(error.message),
      },
      { payloadBytesMax, borrowedChunks: true, allocate: allocRequestPayload },
    );
  }

  /** For the server: starts reading. */
  start(onClosed: () => void): void {
    this.tcp.attach({
      onData: (chunk) => {
        if (!this.decoder.feed(chunk)) this.tcp.pauseReading();
      },
      onDrain: () => {
        this.outputFull = false;
        this.updateReading();
      },
      onClose: () => {
        this.closed = true;
        this.inFlight.clear();
        onClosed();
      },
    });
  }

  /**
   * Answers request `requestId` (once). Returns false if the connection is gone (the
   * reply is dropped). Replying to a request that is not in flight is a programmer error.
   */
  reply(requestId: bigint, status: number, payload: readonly Buffer[] | Buffer = EMPTY_PARTS, options: RpcSendOptions = {}): boolean {
    if (this.closed) return false;
    const method = this.inFlight.get(requestId);
    if (!(method !== undefined)) fail(`reply to request ${requestId}, which is not in flight on ${this.remoteLabel}`);
    this.inFlight.delete(requestId);
    this.send({ kind: FrameKind.Response, flags: options.flags ?? 0, method, requestId, status }, partsOf(payload), options.headroom ?? false);
    this.updateReading();
    return true;
  }

  requestsInFlight(): number {
    return this.inFlight.size;
  }

  isClosed(): boolean {
    return this.closed;
  }

  /** Flushes what is queued and closes; requests not yet answered are dropped (the client fails them with ERR_CLOSED). */
  close(): void {
    this.closed = true;
    this.inFlight.clear();
    this.stopReading();
    this.tcp.close();
  }

  private send(h: FrameHeader, parts: readonly Buffer[], headroom: boolean): void {
    const framed = framePayload(h, parts, headroom, this.payloadBytesMax);
    for (const p of framed) {
      if (!this.tcp.write(p)) this.outputFull = true;
    }
    if (this.outputFull) this.stopReading();
  }

  private onFrame(frame: Frame): void {
    if (this.closed) return; // frames still held after a fatal error are not delivered
    if (frame.kind === FrameKind.OneWay) {
      this.stats.oneWayFrames++;
      this.deliver(frame);
      return;
    }
    if (frame.kind !== FrameKind.Request) return this.fatal(`a frame of kind ${frame.kind} sent to a server`);
    if (this.inFlight.has(frame.requestId)) return this.fatal(`request id ${frame.requestId} reused while in flight`);
    this.stats.requests++;
    this.inFlight.set(frame.requestId, frame.method);
    if (this.inFlight.size >= this.requestsInFlightMax) this.stopReading();
    this.deliver(frame);
  }

  /**
   * Runs the handler. An operating error it throws (a TesseraError, e.g. ERR_PROTOCOL
   * from a message decoder) must not take the daemon down: the request is answered
   * with Status.Invalid (unless the handler already replied), a one-way frame is
   * dropped, and the connection goes on. Anything else is a programmer error and
   * propagates (crash).
   */
  private deliver(frame: Frame): void {
    try {
      this.handler(this, frame);
    } catch (err) {
      if (!(err instanceof TesseraError)) throw err;
      this.stats.handlerErrors++;
      this.log('warn', `rpc ${this.remoteLabel}: handler of method ${frame.method} failed: ${err.code}: ${err.message}`);
      if (frame.kind !== FrameKind.Request || this.closed || !this.inFlight.has(frame.requestId)) return;
      const resp = encodeClientResponse(frame.method, { status: Status.Invalid, message: `${err.code}: ${err.message}` }, FRAME_HEADROOM_BYTES);
      this.reply(frame.requestId, resp.status, resp.parts, { headroom: true });
    }
  }

  private onCorruptFrame(header: FrameHeader, error: FrameError): void {
    if (this.closed) return;
    if (header.kind === FrameKind.OneWay) {
      this.stats.corruptOneWayFrames++;
      return;
    }
    if (header.kind !== FrameKind.Request) return this.fatal(`a frame of kind ${header.kind} sent to a server`);
    this.stats.corruptRequests++;
    // Framing still holds (the header crc vouched for the length): fail this request only.
    const resp = encodeClientResponse(header.method, { status: Status.Invalid, message: `request payload corrupted in transit: ${error.message}` }, FRAME_HEADROOM_BYTES);
    this.send({ kind: FrameKind.Response, flags: 0, method: header.method, requestId: header.requestId, status: resp.status }, resp.parts, true);
  }

  private fatal(message: string): void {
    if (this.closed) return;
    this.stats.protocolErrors++;
    this.log('warn', `rpc ${this.remoteLabel}: ${message}; closing the connection`);
    this.closed = true; // no more frames from this stream are trusted; pending replies are dropped
    this.inFlight.clear();
    this.stopReading();
    this.tcp.close(); // FIN after what is queued; destroyed after closeLingerMs at most
  }

  private stopReading(): void {
    this.decoder.pause();
    this.tcp.pauseReading();
  }

  private updateReading(): void {
    if (this.closed || this.resumeScheduled || !this.decoder.isPaused()) return;
    if (this.inFlight.size >= this.requestsInFlightMax || this.outputFull) return;
    // Deferred so that frames are never handed to the handler from inside its own reply() call.
    this.resumeScheduled = true;
    setImmediate(() => {
      this.resumeScheduled = false;
      if (this.closed || this.inFlight.size >= this.requestsInFlightMax || this.outputFull) return;
      this.decoder.resume(); // may deliver held frames and pause again
      if (!this.decoder.isPaused()) this.tcp.resumeReading();
    });
  }
}

export class RpcServer {
  readonly stats: RpcServerStats = { connectionsAccepted: 0, requests: 0, oneWayFrames: 0, corruptRequests: 0, corruptOneWayFrames: 0, protocolErrors: 0, handlerErrors: 0 };
  private listener: TcpListener | null = null;
  private readonly connections = new Set<RpcServerConnection>();
  private readonly requestsInFlightMax: number;
  private readonly outputBytesMax: number;
  private readonly payloadBytesMax: number;
  private readonly log: TcpLogFn;

  constructor(
    private readonly handler: RpcHandler,
    private readonly options: RpcServerOptions = {},
  ) {
    this.requestsInFlightMax = options.requestsInFlightPerConnectionMax ?? 256;
    this.outputBytesMax = options.outputBytesPerConnectionMax ?? 8 * 1024 * 1024;
    this.payloadBytesMax = options.payloadBytesMax ?? FRAME_PAYLOAD_BYTES_MAX_DEFAULT;
    this.log = options.log ?? (() => {});
    assert(Number.isInteger(this.requestsInFlightMax) && this.requestsInFlightMax >= 1, 'requestsInFlightPerConnectionMax must be >= 1');
  }

  /** Listens (port 0: an ephemeral port) and returns the bound port. ERR_ADDRESS_IN_USE if taken. */
  async listen(host: string, port: number): Promise<number> {
    assert(this.listener === null, 'RpcServer.listen called twice');
    this.listener = await TcpListener.listen({
      host,
      port,
      log: this.log,
      keepAliveInitialDelayMs: this.options.keepAliveInitialDelayMs ?? KEEPALIVE_INITIAL_DELAY_MS,
      writeBufferBytesMax: this.outputBytesMax,
      closeLingerMs: this.options.closeLingerMs ?? CLOSE_LINGER_MS,
      borrowReads: true,
      onConnection: (tcp) => {
        this.stats.connectionsAccepted++;
        const conn = new RpcServerConnection(tcp, this.handler, this.stats, this.requestsInFlightMax, this.payloadBytesMax, this.log);
        this.connections.add(conn);
        conn.start(() => this.connections.delete(conn));
      },
    });
    return this.listener.port;
  }

  get port(): number {
    assert(this.listener !== null, 'RpcServer is not listening');
    return this.listener.port;
  }

  /** Open sockets (including ones closing after a protocol error). */
  connectionCount(): number {
    return this.listener?.connectionCount() ?? 0;
  }

  /** Stops listening and destroys every connection; replies after this are dropped. */
  async close(): Promise<void> {
    if (this.listener === null) return;
    await this.listener.close();
  }
}

// ---------------------------------------------------------------------------
// Client

export interface RpcClientOptions {
  /** Requests on the wire awaiting a response. */
  requestsInFlightMax?: number;
  /** Requests waiting for an in-flight slot (or for the connection): request() rejects with ERR_LIMIT once requestsInFlightMax + waitQueueMax requests are pending. */
  waitQueueMax?: number;
  /** Unsent bytes above which requests wait and one-way frames are dropped. */
  outputBytesMax?: number;
  connectTimeoutMs?: number;
  reconnectDelayMsMin?: number;
  reconnectDelayMsMax?: number;
  /** A connection that stayed up this long resets the backoff and is re-established at once when it drops. */
  connectionStableMs?: number;
  payloadBytesMax?: number;
  keepAliveInitialDelayMs?: number;
  log?: TcpLogFn;
}

export interface RpcResponse {
  status: number;
  flags: number;
  /** Verified against the frame crc; a copy out of the socket buffer (large ones from responsePayloadBuffers). */
  payload: Buffer;
}

export type RpcClientState = 'connecting' | 'connected' | 'backoff' | 'closed';

export interface RpcClientStats {
  requestsSent: number;
  responses: number;
  timeouts: number;
  /** Responses that arrived after their request timed out: dropped. */
  lateResponses: number;
  corruptResponses: number;
  /** Requests failed with ERR_CLOSED because their connection dropped (in flight) or never came up (waiting). */
  requestsFailedClosed: number;
  oneWaySent: number;
  /** One-way frames dropped: not connected, or output over its bound. */
  oneWayDropped: number;
  connects: number;
  connectFailures: number;
  protocolErrors: number;
}

interface PendingRequest {
  readonly requestId: bigint;
  readonly method: number;
  readonly flags: number;
  payload: readonly Buffer[];
  readonly headroom: boolean;
  timer: NodeJS.Timeout | null;
  readonly resolve: (r: RpcResponse) => void;
  readonly reject: (e: Error) => void;
}

export class RpcClient {
  readonly address: string;
  readonly stats: RpcClientStats = {
    requestsSent: 0,
    responses: 0,
    timeouts: 0,
    lateResponses: 0,
    corruptResponses: 0,
    requestsFailedClosed: 0,
    oneWaySent: 0,
    oneWayDropped: 0,
    connects: 0,
    connectFailures: 0,
    protocolErrors: 0,
  };
  private stateValue: RpcClientState = 'connecting';
  private socket: net.Socket | null = null;
  private tcp: TcpConnection | null = null;
  private outputFull = false;
  private nextRequestId = 1n;
  private readonly inFlight = new Map<bigint, PendingRequest>();
  /** Insertion-ordered: the first is the oldest; deletion on timeout is O(1). */
  private readonly waiting = new Set<PendingRequest>();
  private failures = 0;
  private connectedAtMs = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private closedPromise: Promise<void> | null = null;
  private resolveClosed: (() => void) | null = null;
  private readonly requestsInFlightMax: number;
  private readonly waitQueueMax: number;
  private readonly outputBytesMax: number;
  private readonly connectTimeoutMs: number;
  private readonly reconnectDelayMsMin: number;
  private readonly reconnectDelayMsMax: number;
  private readonly connectionStableMs: number;
  private readonly payloadBytesMax: number;
  private readonly keepAliveInitialDelayMs: number;
  private readonly log: TcpLogFn;

  constructor(
    readonly host: string,
    readonly port: number,
    options: RpcClientOptions = {},
  ) {
    this.address = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    this.requestsInFlightMax = options.requestsInFlightMax ?? 64;
    this.waitQueueMax = options.waitQueueMax ?? 1024;
    this.outputBytesMax = options.outputBytesMax ?? 8 * 1024 * 1024;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 3000;
    this.reconnectDelayMsMin = options.reconnectDelayMsMin ?? 50;
    this.reconnectDelayMsMax = options.reconnectDelayMsMax ?? 5000;
    this.connectionStableMs = options.connectionStableMs ?? 1000;
    this.payloadBytesMax = options.payloadBytesMax ?? FRAME_PAYLOAD_BYTES_MAX_DEFAULT;
    this.keepAliveInitialDelayMs = options.keepAliveInitialDelayMs ?? KEEPALIVE_INITIAL_DELAY_MS;
    this.log = options.log ?? (() => {});
    if (!(Number.isInteger(port) && port > 0 && port <= 0xffff)) fail(`bad port ${port}`);
    assert(Number.isInteger(this.requestsInFlightMax) && this.requestsInFlightMax >= 1, 'requestsInFlightMax must be >= 1');
    assert(Number.isInteger(this.waitQueueMax) && this.waitQueueMax >= 0, 'waitQueueMax must be >= 0');
    assert(this.reconnectDelayMsMin > 0 && this.reconnectDelayMsMax >= this.reconnectDelayMsMin, 'bad reconnect delays');
    this.connect();
  }

  get state(): RpcClientState {
    return this.stateValue;
  }

  requestsInFlight(): number {
    return this.inFlight.size;
  }

  requestsWaiting(): number {
    return this.waiting.size;
  }

  /**
   * Sends a request and resolves with the response (any status), or rejects with
   * ERR_TIMEOUT, ERR_CLOSED, ERR_LIMIT (wait queue full) or ERR_CHECKSUM.
   */
  request(method: number, payload: readonly Buffer[] | Buffer, timeoutMs: number, options: RpcSendOptions = {}): Promise<RpcResponse> {
    if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) fail(`bad timeout ${timeoutMs}`);
    const parts = partsOf(payload);
    const headroom = options.headroom ?? false;
    assert(!headroom || (parts.length > 0 && parts[0].length >= FRAME_HEADROOM_BYTES), 'headroom requested but parts[0] has none');
    if (!(payloadBytesOf(parts, headroom) <= this.payloadBytesMax)) fail(`request payload exceeds ${this.payloadBytesMax} bytes: split it`);
    if (this.stateValue === 'closed') return Promise.reject(new TesseraError('ERR_CLOSED', `rpc client ${this.address} is closed`));
    if (this.stateValue === 'backoff') {
      this.stats.requestsFailedClosed++;
      return Promise.reject(new TesseraError('ERR_CLOSED', `not connected to ${this.address} (reconnecting)`));
    }
    const sendNow = this.canSend() && this.waiting.size === 0;
    // Requests waiting for the connection may use the in-flight slots it will have: the
    // bound is on everything pending, so it does not depend on connection timing.
    if (!sendNow && this.inFlight.size + this.waiting.size >= this.requestsInFlightMax + this.waitQueueMax) {
      return Promise.reject(new TesseraError('ERR_LIMIT', `rpc ${this.address}: ${this.inFlight.size} requests in flight and ${this.waiting.size} waiting`));
    }
    return new Promise<RpcResponse>((resolve, reject) => {
      const p: PendingRequest = { requestId: this.nextRequestId++, method, flags: options.flags ?? 0, payload: parts, headroom, timer: null, resolve, reject };
      p.timer = setTimeout(() => this.expire(p, timeoutMs), timeoutMs);
      if (sendNow) this.send(p);
      else this.waiting.add(p);
    });
  }

  /** The peer is known to be back (e.g. the cluster map says so): end a backoff and connect now. */
  retryNow(): void {
    if (this.stateValue !== 'backoff') return;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.failures = 0;
    this.connect();
  }

  /** Puts what this turn queued on this connection onto the wire now. */
  flush(): void {
    this.tcp?.flush();
  }

  /** Sends a one-way frame if connected and under the output bound; otherwise drops it (counted) and returns false. */
  sendOneWay(method: number, payload: readonly Buffer[] | Buffer, options: RpcSendOptions = {}): boolean {
    const parts = partsOf(payload);
    const headroom = options.headroom ?? false;
    const tcp = this.tcp;
    if (this.stateValue !== 'connected' || tcp === null || this.outputFull) {
      this.stats.oneWayDropped++;
      return false;
    }
    const framed = framePayload({ kind: FrameKind.OneWay, flags: options.flags ?? 0, method, requestId: 0n, status: 0 }, parts, headroom, this.payloadBytesMax);
    for (const p of framed) if (!tcp.write(p)) this.outputFull = true;
    this.stats.oneWaySent++;
    return true;
  }

  /** Fails everything pending with ERR_CLOSED, stops reconnecting, and resolves once the socket is closed. */
  close(): Promise<void> {
    if (this.closedPromise !== null) return this.closedPromise;
    this.stateValue = 'closed';
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.failAll(`rpc client ${this.address} closed`);
    const socket = this.socket;
    if (socket === null) {
      this.closedPromise = Promise.resolve();
    } else {
      this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
      socket.destroy();
    }
    return this.closedPromise;
  }

  // ---- connection ------------------------------------------------------------

  private connect(): void {
    this.stateValue = 'connecting';
    this.reconnectTimer = null;
    // Responses are read into the lent buffer (onread) instead of a fresh ArrayBuffer per
    // socket read: 1 MiB read results arrived as ~16 such buffers, and that churn kept
    // the gateway in major GCs (half its CPU at 1 MiB reads, session 10). Reading starts
    // at 'connect'; should bytes come earlier, the connection is dropped.
    let conn: TcpConnection | null = null;
    const socket = net.connect({
      host: this.host,
      port: this.port,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: this.keepAliveInitialDelayMs,
      onread: lentReads((chunk) => (conn !== null ? conn.deliverBorrowed(chunk) : socket.destroy(new Error('data before connect')))),
    });
    this.socket = socket;
    let established = false;
    let lastError: Error | null = null;
    const connectTimer = setTimeout(() => socket.destroy(new Error(`connect timed out after ${this.connectTimeoutMs} ms`)), this.connectTimeoutMs);
    socket.on('error', (err) => {
      lastError = err;
    });
    socket.once('connect', () => {
      clearTimeout(connectTimer);
      if (this.socket !== socket || this.stateValue === 'closed') return;
      established = true;
      this.connectedAtMs = performance.now();
      this.stats.connects++;
      socket.setNoDelay(true);
      const tcp = new TcpConnection(socket, this.outputBytesMax, CLOSE_LINGER_MS, true);
      conn = tcp;
      const decoder = new FrameDecoder(
        {
          onFrame: (frame) => this.onFrame(frame, socket),
          onCorruptFrame: (header, error) => {
            if (!socket.destroyed) this.onCorruptFrame(header, error);
          },
          onFailure: (error) => this.protocolFailure(socket, error.message),
        },
        { payloadBytesMax: this.payloadBytesMax, borrowedChunks: true, allocate: allocResponsePayload },
      );
      tcp.attach({
        onData: (chunk) => decoder.feed(chunk),
        onDrain: () => {
          this.outputFull = false;
          this.pump();
        },
        onClose: () => {},
      });
      this.tcp = tcp;
      this.outputFull = false;
      this.stateValue = 'connected';
      if (this.failures > 0) this.log('info', `rpc ${this.address}: reconnected`);
      this.pump();
    });
    socket.once('close', () => {
      clearTimeout(connectTimer);
      this.onSocketClosed(socket, established, lastError);
    });
  }

  private onSocketClosed(socket: net.Socket, established: boolean, cause: Error | null): void {
    if (this.socket !== socket) return;
    this.socket = null;
    this.tcp = null;
    this.outputFull = false;
    const why = cause ? `: ${cause.message}` : '';
    // Requests on the wire may or may not have been executed: fail them, never resend.
    for (const p of this.inFlight.values()) this.settleClosed(p, `connection to ${this.address} closed with the request in flight${why}`);
    this.inFlight.clear();
    if (this.stateValue === 'closed') {
      this.resolveClosed?.();
      return;
    }
    if (established && performance.now() - this.connectedAtMs >= this.connectionStableMs) {
      this.failures = 0;
      this.log('warn', `rpc ${this.address}: connection closed${why}; reconnecting`);
      this.connect();
      return;
    }
    if (!established) this.stats.connectFailures++;
    if (this.failures === 0) this.log('warn', `rpc ${this.address}: ${established ? 'connection dropped' : 'cannot connect'}${why}; backing off`);
    const delayMs = Math.min(this.reconnectDelayMsMax, this.reconnectDelayMsMin * 2 ** Math.min(this.failures, 30));
    this.failures++;
    this.stateValue = 'backoff';
    for (const p of this.waiting) this.settleClosed(p, `cannot connect to ${this.address}${why}`);
    this.waiting.clear();
    this.reconnectTimer = setTimeout(() => this.connect(), delayMs);
    this.reconnectTimer.unref(); // an idle client alone does not keep the process alive
  }

  private protocolFailure(socket: net.Socket, message: string): void {
    this.stats.protocolErrors++;
    this.log('warn', `rpc ${this.address}: ${message}; dropping the connection`);
    socket.destroy();
  }

  // ---- requests ----------------------------------------------------------------

  private canSend(): boolean {
    return this.stateValue === 'connected' && !this.outputFull && this.inFlight.size < this.requestsInFlightMax;
  }

  private send(p: PendingRequest): void {
    const tcp = this.tcp;
    assert(tcp !== null, 'send without a connection');
    const framed = framePayload({ kind: FrameKind.Request, flags: p.flags, method: p.method, requestId: p.requestId, status: 0 }, p.payload, p.headroom, this.payloadBytesMax);
    p.payload = EMPTY_PARTS; // the socket holds them now
    this.inFlight.set(p.requestId, p);
    this.stats.requestsSent++;
    for (const part of framed) if (!tcp.write(part)) this.outputFull = true;
  }

  private pump(): void {
    while (this.waiting.size > 0 && this.canSend()) {
      const p = this.waiting.values().next().value as PendingRequest;
      this.waiting.delete(p);
      this.send(p);
    }
  }

  private onFrame(frame: Frame, socket: net.Socket): void {
    if (socket.destroyed) return; // frames still held after a protocol failure are not delivered
    if (frame.kind !== FrameKind.Response) return this.protocolFailure(socket, `a frame of kind ${frame.kind} from a server`);
    const p = this.inFlight.get(frame.requestId);
    if (p === undefined) {
      this.stats.lateResponses++;
      return;
    }
    this.inFlight.delete(frame.requestId);
    this.stats.responses++;
    clearTimeout(p.timer!);
    p.resolve({ status: frame.status, flags: frame.flags, payload: frame.payload });
    this.pump();
  }

  private onCorruptFrame(header: FrameHeader, error: FrameError): void {
    const p = header.kind === FrameKind.Response ? this.inFlight.get(header.requestId) : undefined;
    if (p === undefined) return; // late, or a one-way frame: nothing to fail
    this.inFlight.delete(header.requestId);
    this.stats.corruptResponses++;
    clearTimeout(p.timer!);
    p.reject(error); // ERR_CHECKSUM: the request may have been executed
    this.pump();
  }

  private expire(p: PendingRequest, timeoutMs: number): void {
    const inFlight = this.inFlight.get(p.requestId) === p;
    if (inFlight) this.inFlight.delete(p.requestId);
    else if (!this.waiting.delete(p)) return;
    this.stats.timeouts++;
    p.reject(new TesseraError('ERR_TIMEOUT', `rpc ${this.address} method ${p.method}: no response within ${timeoutMs} ms${inFlight ? '' : ' (never sent: waiting for a slot)'}`));
    this.pump();
  }

  private settleClosed(p: PendingRequest, message: string): void {
    clearTimeout(p.timer!);
    this.stats.requestsFailedClosed++;
    p.reject(new TesseraError('ERR_CLOSED', message));
  }

  private failAll(message: string): void {
    for (const p of this.inFlight.values()) this.settleClosed(p, message);
    this.inFlight.clear();
    for (const p of this.waiting) this.settleClosed(p, message);
    this.waiting.clear();
  }
}

// ---------------------------------------------------------------------------
// Pool

/** "host:port" or "[ipv6]:port" → parts; ERR_INVALID otherwise (stdx/host-port.ts). */
export function parseHostPort(address: string): { host: string; port: number } {
  return parseHostPortOf(address, 'RPC address');
}

/** One client per remote address, created on first use and kept (reconnecting) until removed or closed. */
export class RpcPool {
  private readonly clients = new Map<string, RpcClient>();
  private closed = false;

  constructor(
    private readonly options: RpcClientOptions = {},
    private readonly clientsMax = 4096,
  ) {}

  /** The client for `address` ("host:port"); ERR_LIMIT beyond clientsMax, ERR_CLOSED after close(). */
  get(address: string): RpcClient {
    const existing = this.clients.get(address);
    if (existing !== undefined) return existing;
    if (this.closed) throw new TesseraError('ERR_CLOSED', 'rpc pool is closed');
    const { host, port } = parseHostPort(address);
    if (this.clients.size >= this.clientsMax) throw new TesseraError('ERR_LIMIT', `rpc pool holds ${this.clients.size} clients`);
    const client = new RpcClient(host, port, this.options);
    this.clients.set(address, client);
    return client;
  }

  size(): number {
    return this.clients.size;
  }

  /** Ends the backoff of the client for `address`, if there is one (RpcClient.retryNow). */
  retryNow(address: string): void {
    this.clients.get(address)?.retryNow();
  }

  /** Sends what every client wrote in this turn now (see TcpConnection.flush). */
  flush(): void {
    for (const c of this.clients.values()) c.flush();
  }

  async remove(address: string): Promise<void> {
    const client = this.clients.get(address);
    if (client === undefined) return;
    this.clients.delete(address);
    await client.close();
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.clients.values()];
    this.clients.clear();
    await Promise.all(all.map((c) => c.close()));
  }
}
