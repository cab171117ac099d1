// The data path of the client library (SPEC CLU6): volume byte ranges →
// objects (pool.objectSizeBytes) → PGs (objectToPg) → the PG's raft leader,
// with transparent retries, an overall deadline per operation, per-block write
// ordering and bounded in-flight requests.
//
// An operation (read, write, zero, blockStatus) is cut at object boundaries into
// pieces; each piece is one request to an OSD (an unaligned write or zero is a
// short sequence: read the partial edge sectors, then write them merged), sent
// to the PG's leader hint with the PG epoch of the held map. Per response:
//   Ok          → done (the answering OSD becomes the PG's leader hint)
//   NotLeader   → resend at once to the hinted leader (at most redirectsMax
//                 times in a row, then back off); without a usable hint, try
//                 the next OSD of the acting set after a backoff
//   StaleEpoch  → the OSD is ahead: wait for a map with its epoch, resend;
//                 the OSD is behind: back off and resend
//   NotReady (no replica, peering, or the OSD's map is behind ours),
//   transport ERR_TIMEOUT/ERR_CLOSED → next OSD of the acting set (up OSDs
//                 first) after a backoff
//   Busy, transport ERR_PROTOCOL/ERR_CHECKSUM/ERR_LIMIT → same OSD after a
//                 backoff (the OSD is there; it or the wire is the problem)
//   Range/Io/Checksum/NoSpace/Invalid → final: ERR_RANGE, ERR_DEVICE_IO,
//                 ERR_CHECKSUM, ERR_NO_SPACE, ERR_INVALID
// Backoff doubles from retryBackoffMsMin to retryBackoffMsMax with jitter.
//
// Invariants:
// - Ordering: writes and zeroes register their (sector-rounded) piece ranges in
//   an OrderTable when submitted; a piece is sent only after every earlier
//   overlapping piece has finished, and a piece finishes only once its last
//   request has settled (a response, or the transport's own timeout). So at
//   most one request per block range of this client is ever outstanding, and a
//   retried write (which may apply twice) can never land after a later write.
//   Reads and blockStatus are not ordered: a read concurrent with a write may
//   see either; a read issued after a write resolved sees it (the OSD leader
//   serves committed data).
// - Deadline: every request timeout and backoff is clipped to the operation's
//   deadline (opTimeoutMs after submission), after which it fails ERR_TIMEOUT
//   naming the last failure. A piece that waits for an earlier overlapping
//   piece or for a slot is checked when it gets to run, so the wait adds at
//   most the earlier piece's own remaining time.
// - Bounded: at most inFlightRequestsMax pieces hold a send slot; at most
//   inFlightRequestsMax + waitingRequestsMax pieces are admitted in all (an
//   operation that would exceed it fails ERR_LIMIT before anything is sent).
//   Reads and blockStatus longer than WINDOW_PIECES objects run in sequential
//   windows, so their length does not count against the bound.
// - An operation settles once all its pieces have settled; after one piece
//   fails, its not-yet-sent pieces are skipped. So a read never writes into
//   the caller's buffer after its promise settled.
// - No timers or clocks except the injected Clock; jitter from a seeded Prng.
//
// The hot path (aligned IO, leader known) allocates per piece one object, one
// request object and the transport's promise; per operation one promise. No
// async functions or promise chains per request.
import type { Clock, TimerHandle } from '../io/clock.js';
import type { PgRecord } from '../mon/map-types.js';
import type { ClientRequest, ClientResponse, ExtentWire } from '../osd/proto.js';
import { Method, Status } from '../osd/proto.js';
import { objectToPg } from '../placement/placement.js';
import { assert, fail } from '../stdx/assert.js';
import { TesseraError, isTesseraError, type ErrorCode } from '../stdx/errors.js';
import { Prng } from '../stdx/prng.js';
import type { IoStats, OpStats } from '../stdx/stats.js';
import { Fifo } from './fifo.js';
import type { ClientLogFn, MapCache } from './map-cache.js';
import { OrderTable, type OrderEntry } from './order.js';
import type { OsdTransport } from './transport.js';
import { copyBytes } from '../stdx/shared-copy.js';

export const OP_TIMEOUT_MS_DEFAULT = 60_000;
export const REQUEST_TIMEOUT_MS_DEFAULT = 5_000;
export const IN_FLIGHT_REQUESTS_MAX_DEFAULT = 256;
export const WAITING_REQUESTS_MAX_DEFAULT = 16_384;
export const RETRY_BACKOFF_MS_MIN_DEFAULT = 5;
export const RETRY_BACKOFF_MS_MAX_DEFAULT = 1_000;
/** Immediate NotLeader redirects of one request before it backs off (two OSDs naming each other must not spin). */
export const REDIRECTS_MAX_DEFAULT = 4;
/** Reads and blockStatus spanning more objects than this run in sequential windows of this many objects. */
export const WINDOW_PIECES = 1024;
/** OSD requests are in whole sectors. */
export const SECTOR_BYTES = 512;
/** An unaligned zero up to this size is sent as one write of zeros merged with its edge sectors. */
export const RMW_ZERO_INLINE_BYTES = 64 * 1024;

/** The fields of a VolumeRecord the data path needs. */
export interface VolumeRef {
  id: number;
  poolId: number;
}

export interface ClusterClientOptions {
  maps: MapCache;
  transport: OsdTransport;
  clock: Clock;
  /** Overall deadline of one operation, retries included. */
  opTimeoutMs?: number;
  /** Timeout of one request to one OSD (clipped to what is left of the deadline). */
  requestTimeoutMs?: number;
  /** Requests (pieces) holding a send slot at once. */
  inFlightRequestsMax?: number;
  /** Requests admitted beyond those in flight (waiting for a slot or an earlier overlapping write). */
  waitingRequestsMax?: number;
  retryBackoffMsMin?: number;
  retryBackoffMsMax?: number;
  redirectsMax?: number;
  /** Seed of the backoff jitter. */
  seed?: number;
  log?: ClientLogFn;
}

/** Counters for tests and metrics. */
export interface ClientCounters {
  /** Pieces holding a send slot now. */
  inFlight: number;
  /** Pieces admitted and not yet finished (in flight, waiting for a slot or an overlapping write, backing off). */
  pending: number;
  /** Largest inFlight seen. */
  inFlightPeak: number;
  requestsSent: number;
  retries: number;
  redirects: number;
  staleEpochs: number;
  transportFailures: number;
  /** Operations failed with ERR_LIMIT at admission. */
  rejectedLimit: number;
}

const K_READ = 0;
const K_WRITE = 1;
const K_ZERO = 2;
const K_STATUS = 3;
type Kind = typeof K_READ | typeof K_WRITE | typeof K_ZERO | typeof K_STATUS;
const KIND_NAMES = ['read', 'write', 'zero', 'blockStatus'] as const;

// Stages of an unaligned write or zero piece (Piece.plan).
const S_READ_HEAD = 1;
const S_READ_TAIL = 2;
const S_WRITE_ALL = 3;
const S_WRITE_HEAD = 4;
const S_WRITE_TAIL = 5;
const S_ZERO_MID = 6;

class Op {
  piecesLeft = 0;
  error: Error | null = null;
  out: Buffer | null = null;
  outOffset = 0;
  data: Buffer | null = null;
  mayTrim = false;
  pieces: Piece[] | null = null;
  stats: IoStats | null = null;
  resolve: (value: never) => void = noop;
  reject: (err: Error) => void = noop;

  constructor(
    readonly kind: Kind,
    readonly volumeId: number,
    readonly poolId: number,
    readonly offsetBytes: number,
    readonly lengthBytes: number,
    readonly objectSizeBytes: number,
    readonly startMs: number,
    readonly deadlineMs: number,
  ) {}
}

class Piece implements OrderEntry {
  // The user's range [startBytes, endBytes) in the volume, inside one object.
  // Order range: the same, rounded out to sectors (what is actually written).
  orderStartBytes: number;
  orderEndBytes: number;
  blockers = 0;
  dependents: OrderEntry[] | null = null;
  ordered = false;
  holdsSlot = false;

  /** Stages of an unaligned write/zero; null: one request. */
  plan: number[] | null = null;
  planIndex = 0;
  head: Buffer | null = null;
  tail: Buffer | null = null;

  // The request to send (current stage).
  method: number = Method.Read;
  reqOffsetBytes = 0;
  reqLengthBytes = 0;
  reqData: Buffer | null = null;
  reqMayTrim = false;

  // Routing and retry state.
  target = 0;
  targetPg = -1;
  targetPgEpoch = -1;
  sentTo = 0;
  sentPg = 0;
  sentPgEpoch = 0;
  attempts = 0;
  redirects = 0;
  lastReason = '';
  timer: TimerHandle | null = null;

  extents: ExtentWire[] | null = null;

  constructor(
    readonly op: Op,
    readonly objectIndex: number,
    readonly startBytes: number,
    readonly endBytes: number,
  ) {
    this.orderStartBytes = startBytes - (startBytes % SECTOR_BYTES);
    this.orderEndBytes = endBytes + ((SECTOR_BYTES - (endBytes % SECTOR_BYTES)) % SECTOR_BYTES);
  }
}

function noop(): void {}

export class ClusterClient {
  private readonly maps: MapCache;
  private readonly transport: OsdTransport;
  private readonly clock: Clock;
  private readonly opTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private readonly inFlightMax: number;
  private readonly pendingMax: number;
  private readonly backoffMsMin: number;
  private readonly backoffMsMax: number;
  private readonly redirectsMax: number;
  private readonly prng: Prng;

  private readonly order = new OrderTable<Piece>();
  private readonly ready = new Fifo<Piece>();
  private readonly backingOff = new Set<Piece>();
  private readonly makeReady = (p: Piece): void => this.ready.push(p);
  private inFlight = 0;
  private pending = 0;
  private pumping = false;
  private closed = false;
  private drained: (() => void) | null = null;
  private readonly c: ClientCounters = {
    inFlight: 0,
    pending: 0,
    inFlightPeak: 0,
    requestsSent: 0,
    retries: 0,
    redirects: 0,
    staleEpochs: 0,
    transportFailures: 0,
    rejectedLimit: 0,
  };

  constructor(opts: ClusterClientOptions) {
    this.maps = opts.maps;
    this.transport = opts.transport;
    this.clock = opts.clock;
    this.opTimeoutMs = opts.opTimeoutMs ?? OP_TIMEOUT_MS_DEFAULT;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS_DEFAULT;
    this.inFlightMax = opts.inFlightRequestsMax ?? IN_FLIGHT_REQUESTS_MAX_DEFAULT;
    this.pendingMax = this.inFlightMax + (opts.waitingRequestsMax ?? WAITING_REQUESTS_MAX_DEFAULT);
    this.backoffMsMin = opts.retryBackoffMsMin ?? RETRY_BACKOFF_MS_MIN_DEFAULT;
    this.backoffMsMax = Math.max(this.backoffMsMin, opts.retryBackoffMsMax ?? RETRY_BACKOFF_MS_MAX_DEFAULT);
    this.redirectsMax = opts.redirectsMax ?? REDIRECTS_MAX_DEFAULT;
    this.prng = new Prng(opts.seed ?? 0x7e55e7a);
    assert(Number.isInteger(this.inFlightMax) && this.inFlightMax >= 1, 'inFlightRequestsMax must be a positive integer');
    assert(Number.isInteger(this.pendingMax) && this.pendingMax >= this.inFlightMax, 'waitingRequestsMax must be a non-negative integer');
    assert(this.opTimeoutMs > 0 && this.requestTimeoutMs > 0, 'timeouts must be positive');
  }

  counters(): ClientCounters {
    this.c.inFlight = this.inFlight;
    this.c.pending = this.pending;
    return { ...this.c };
  }

  /** Fills out[outOffset, outOffset + lengthBytes) with the volume's bytes at offsetBytes. */
  read(vol: VolumeRef, offsetBytes: number, lengthBytes: number, out: Buffer, outOffset = 0, stats?: IoStats): Promise<void> {
    const bad = checkRange(offsetBytes, lengthBytes);
    if (bad !== null) return Promise.reject(bad);
    if (!Number.isSafeInteger(outOffset) || outOffset < 0 || outOffset + lengthBytes > out.length) {
      return Promise.reject(new TesseraError('ERR_RANGE', `read of ${lengthBytes} bytes does not fit the buffer of ${out.length} bytes at ${outOffset}`));
    }
    return this.windowed(K_READ, vol, offsetBytes, lengthBytes, (op) => {
      op.out = out;
      op.outOffset = outOffset + (op.offsetBytes - offsetBytes);
    }, stats) as Promise<void>;
  }

  /** Writes data at offsetBytes; resolves once every piece is committed by its PG. */
  write(vol: VolumeRef, offsetBytes: number, data: Buffer, stats?: IoStats): Promise<void> {
    const bad = checkRange(offsetBytes, data.length);
    if (bad !== null) return Promise.reject(bad);
    if (data.length === 0) return Promise.resolve();
    return this.start(K_WRITE, vol, offsetBytes, data.length, stats, (op) => {
      op.data = data;
    }) as Promise<void>;
  }

  /** Makes [offsetBytes, +lengthBytes) read as zeros; mayTrim lets OSDs free whole objects. */
  zero(vol: VolumeRef, offsetBytes: number, lengthBytes: number, mayTrim: boolean, stats?: IoStats): Promise<void> {
    const bad = checkRange(offsetBytes, lengthBytes);
    if (bad !== null) return Promise.reject(bad);
    if (lengthBytes === 0) return Promise.resolve();
    return this.start(K_ZERO, vol, offsetBytes, lengthBytes, stats, (op) => {
      op.mayTrim = mayTrim;
    }) as Promise<void>;
  }

  /** Allocation map of the range, as the OSDs report it per object, merged into runs. */
  blockStatus(vol: VolumeRef, offsetBytes: number, lengthBytes: number): Promise<ExtentWire[]> {
    const bad = checkRange(offsetBytes, lengthBytes);
    if (bad !== null) return Promise.reject(bad);
    return this.windowed(K_STATUS, vol, offsetBytes, lengthBytes, noop) as Promise<ExtentWire[]>;
  }

  /**
   * Fails queued and backing-off requests with ERR_CLOSED and resolves once every
   * request already sent has settled. New operations fail with ERR_CLOSED.
   */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      for (const p of [...this.backingOff]) {
        p.timer?.cancel();
        p.timer = null;
        this.backingOff.delete(p);
        this.finish(p, closedError());
      }
      this.pump(); // sends nothing: every piece it takes finishes with ERR_CLOSED
      for (let p = this.ready.shift(); p !== undefined; p = this.ready.shift()) this.finish(p, closedError());
    }
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const prev = this.drained;
      this.drained = () => {
        prev?.();
        resolve();
      };
    });
  }

  // ------------------------------------------------------------ admission

  /** Reads and blockStatus: sequential windows of WINDOW_PIECES objects, merged. */
  private windowed(kind: Kind, vol: VolumeRef, offsetBytes: number, lengthBytes: number, setup: (op: Op) => void, stats?: IoStats): Promise<unknown> {
    const pool = this.maps.pool(vol.poolId);
    if (pool === undefined) return Promise.reject(notFound(vol));
    const windowBytes = WINDOW_PIECES * pool.objectSizeBytes;
    const firstObj = Math.floor(offsetBytes / pool.objectSizeBytes);
    const endBytes = offsetBytes + lengthBytes;
    const windowEnd = (firstObj + WINDOW_PIECES) * pool.objectSizeBytes;
    if (endBytes <= windowEnd) return this.start(kind, vol, offsetBytes, lengthBytes, stats, setup);
    return this.windowedSlow(kind, vol, offsetBytes, lengthBytes, windowEnd, windowBytes, setup, stats);
  }

  private async windowedSlow(
    kind: Kind,
    vol: VolumeRef,
    offsetBytes: number,
    lengthBytes: number,
    firstWindowEnd: number,
    windowBytes: number,
    setup: (op: Op) => void,
    stats?: IoStats,
  ): Promise<unknown> {
    const endBytes = offsetBytes + lengthBytes;
    const extents: ExtentWire[] = [];
    let pos = offsetBytes;
    let windowEnd = firstWindowEnd;
    while (pos < endBytes) {
      const len = Math.min(windowEnd, endBytes) - pos;
      const r = await this.start(kind, vol, pos, len, stats, setup);
      if (kind === K_STATUS) for (const e of r as ExtentWire[]) pushExtent(extents, e.lengthBytes, e.hole, e.zero);
      pos += len;
      windowEnd += windowBytes;
    }
    return kind === K_STATUS ? extents : undefined;
  }

  private start(kind: Kind, vol: VolumeRef, offsetBytes: number, lengthBytes: number, stats: IoStats | undefined, setup: (op: Op) => void): Promise<unknown> {
    if (this.closed) return Promise.reject(closedError());
    const pool = this.maps.pool(vol.poolId);
    if (pool === undefined || this.maps.volume(vol.id) === undefined) return Promise.reject(notFound(vol));
    const objBytes = pool.objectSizeBytes;
    const now = this.clock.nowMs();
    const op = new Op(kind, vol.id, vol.poolId, offsetBytes, lengthBytes, objBytes, now, now + this.opTimeoutMs);
    setup(op);
    if (lengthBytes === 0) return Promise.resolve(kind === K_STATUS ? [] : undefined);
    const firstObj = Math.floor(offsetBytes / objBytes);
    const lastObj = Math.floor((offsetBytes + lengthBytes - 1) / objBytes);
    const n = lastObj - firstObj + 1;
    if (this.pending + n > this.pendingMax) {
      this.c.rejectedLimit++;
      return Promise.reject(
        new TesseraError('ERR_LIMIT', `${KIND_NAMES[kind]} of ${n} object(s) exceeds the client's bound of ${this.pendingMax} admitted requests (${this.pending} pending)`),
      );
    }
    const promise = new Promise<unknown>((resolve, reject) => {
      op.resolve = resolve as (v: never) => void;
      op.reject = reject;
    });
    if (stats !== undefined) {
      op.stats = stats;
      stats.inFlight++;
    }
    op.piecesLeft = n;
    this.pending += n;
    if (kind === K_STATUS) op.pieces = [];
    const ordered = kind === K_WRITE || kind === K_ZERO;
    for (let obj = firstObj; obj <= lastObj; obj++) {
      const s = Math.max(offsetBytes, obj * objBytes);
      const e = Math.min(offsetBytes + lengthBytes, (obj + 1) * objBytes);
      const p = new Piece(op, obj, s, e);
      this.plan(p);
      if (op.pieces !== null) op.pieces.push(p);
      if (ordered) {
        p.ordered = true;
        if (this.order.add(op.volumeId, obj, p)) this.ready.push(p);
      } else {
        this.ready.push(p);
      }
    }
    this.pump();
    return promise;
  }

  /** Sets the first request of a piece (and the stage plan of an unaligned write/zero). */
  private plan(p: Piece): void {
    const op = p.op;
    const s = p.startBytes;
    const e = p.endBytes;
    const as = p.orderStartBytes;
    const ae = p.orderEndBytes;
    if (op.kind === K_READ || op.kind === K_STATUS) {
      p.method = op.kind === K_READ ? Method.Read : Method.BlockStatus;
      p.reqOffsetBytes = as;
      p.reqLengthBytes = ae - as;
      return;
    }
    if (s === as && e === ae) {
      if (op.kind === K_WRITE) {
        p.method = Method.Write;
        const from = s - op.offsetBytes;
        p.reqData = op.data!.subarray(from, from + (e - s));
      } else {
        p.method = Method.Zero;
        p.reqMayTrim = op.mayTrim;
      }
      p.reqOffsetBytes = s;
      p.reqLengthBytes = e - s;
      return;
    }
    // Unaligned: read the partial edge sectors, then write them merged.
    const headPartial = s !== as;
    const tailPartial = e !== ae;
    const plan: number[] = [];
    if (headPartial) plan.push(S_READ_HEAD);
    if (tailPartial && !(headPartial && ae - as === SECTOR_BYTES)) plan.push(S_READ_TAIL);
    if (op.kind === K_WRITE || ae - as <= RMW_ZERO_INLINE_BYTES) {
      plan.push(S_WRITE_ALL);
    } else {
      if (headPartial) plan.push(S_WRITE_HEAD);
      if (tailPartial) plan.push(S_WRITE_TAIL);
      plan.push(S_ZERO_MID);
    }
    p.plan = plan;
    this.setStage(p);
  }

  private setStage(p: Piece): void {
    const as = p.orderStartBytes;
    const ae = p.orderEndBytes;
    const op = p.op;
    p.reqData = null;
    p.reqMayTrim = false;
    switch (p.plan![p.planIndex]) {
      case S_READ_HEAD:
        p.method = Method.Read;
        p.reqOffsetBytes = as;
        p.reqLengthBytes = SECTOR_BYTES;
        return;
      case S_READ_TAIL:
        p.method = Method.Read;
        p.reqOffsetBytes = ae - SECTOR_BYTES;
        p.reqLengthBytes = SECTOR_BYTES;
        return;
      case S_WRITE_ALL: {
        const buf = Buffer.alloc(ae - as);
        if (p.head !== null) p.head.copy(buf, 0);
        if (p.tail !== null) p.tail.copy(buf, buf.length - SECTOR_BYTES);
        if (op.kind === K_WRITE) {
          const from = p.startBytes - op.offsetBytes;
          copyBytes(op.data!, from, from + (p.endBytes - p.startBytes), buf, p.startBytes - as);
        } else {
          buf.fill(0, p.startBytes - as, p.endBytes - as);
        }
        p.method = Method.Write;
        p.reqOffsetBytes = as;
        p.reqLengthBytes = buf.length;
        p.reqData = buf;
        return;
      }
      case S_WRITE_HEAD: {
        const buf = p.head!;
        buf.fill(0, p.startBytes - as, SECTOR_BYTES);
        p.method = Method.Write;
        p.reqOffsetBytes = as;
        p.reqLengthBytes = SECTOR_BYTES;
        p.reqData = buf;
        return;
      }
      case S_WRITE_TAIL: {
        const buf = p.tail!;
        buf.fill(0, 0, p.endBytes - (ae - SECTOR_BYTES));
        p.method = Method.Write;
        p.reqOffsetBytes = ae - SECTOR_BYTES;
        p.reqLengthBytes = SECTOR_BYTES;
        p.reqData = buf;
        return;
      }
      case S_ZERO_MID: {
        const ms = p.startBytes === as ? as : as + SECTOR_BYTES;
        const me = p.endBytes === ae ? ae : ae - SECTOR_BYTES;
        p.method = Method.Zero;
        p.reqOffsetBytes = ms;
        p.reqLengthBytes = me - ms;
        p.reqMayTrim = op.mayTrim;
        return;
      }
      default:
        fail(`bad piece stage ${p.plan![p.planIndex]}`);
    }
  }

  // ------------------------------------------------------------ sending

  /** Hands send slots to ready pieces in FIFO order. Re-entrant calls return at once; the outer loop continues. */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.inFlight < this.inFlightMax) {
        const p = this.ready.shift();
        if (p === undefined) break;
        p.holdsSlot = true;
        this.inFlight++;
        if (this.inFlight > this.c.inFlightPeak) this.c.inFlightPeak = this.inFlight;
        this.send(p);
      }
    } finally {
      this.pumping = false;
    }
  }

  private send(p: Piece): void {
    const op = p.op;
    if (this.closed) return this.finish(p, closedError());
    if (op.error !== null) return this.finish(p, null); // another piece failed: skip
    const now = this.clock.nowMs();
    if (now >= op.deadlineMs) return this.finish(p, this.timeoutError(p));
    const maps = this.maps;
    if (maps.volume(op.volumeId) === undefined) return this.finish(p, new TesseraError('ERR_NOT_FOUND', `volume ${op.volumeId} is not in the cluster map (deleted)`));
    const pool = maps.pool(op.poolId);
    if (pool === undefined) return this.finish(p, new TesseraError('ERR_NOT_FOUND', `pool ${op.poolId} is not in the cluster map`));
    if (pool.objectSizeBytes !== op.objectSizeBytes) {
      return this.finish(p, new TesseraError('ERR_INVALID', `pool ${op.poolId} changed its object size from ${op.objectSizeBytes} to ${pool.objectSizeBytes}`));
    }
    const pg = objectToPg(pool.id, op.volumeId, p.objectIndex, pool.pgCount);
    const rec = maps.pgRecord(pool.id, pg);
    if (rec === undefined || rec.osds.length === 0) {
      p.lastReason = `PG ${pool.id}.${pg} has no OSD in map epoch ${maps.epoch}`;
      return this.retryLater(p);
    }
    let osdId = p.target !== 0 && p.targetPg === pg && p.targetPgEpoch === rec.epoch ? p.target : maps.leaderHint(pool.id, pg);
    let osd = maps.osd(osdId);
    if (osd === undefined) {
      // A hint or acting-set entry without an OSD record: try the others.
      p.sentTo = osdId;
      p.sentPg = pg;
      p.sentPgEpoch = rec.epoch;
      this.rotate(p, osdId);
      osdId = p.target;
      osd = maps.osd(osdId);
      if (osd === undefined) {
        p.lastReason = `no OSD of PG ${pool.id}.${pg} is in map epoch ${maps.epoch}`;
        return this.retryLater(p);
      }
    }
    p.sentTo = osdId;
    p.sentPg = pg;
    p.sentPgEpoch = rec.epoch;
    const req = buildRequest(p, pool.id, pg, rec.epoch);
    const timeoutMs = Math.min(this.requestTimeoutMs, op.deadlineMs - now);
    this.c.requestsSent++;
    let promise: Promise<ClientResponse>;
    try {
      promise = this.transport.request(osd, req, timeoutMs);
    } catch (err) {
      return this.onFailure(p, err);
    }
    promise.then(
      (resp) => this.onResponse(p, resp),
      (err: unknown) => this.onFailure(p, err),
    );
  }

  private onResponse(p: Piece, resp: ClientResponse): void {
    try {
      this.handleResponse(p, resp);
    } catch (err) {
      // A bug in this file: fail the piece rather than leave its op hanging.
      this.finish(p, err instanceof Error ? err : new Error(String(err)));
    } finally {
      // Read data was copied out (absorb) and nothing here keeps a view of it.
      if (resp.status === Status.Ok) resp.release?.();
    }
  }

  private handleResponse(p: Piece, resp: ClientResponse): void {
    const op = p.op;
    const maps = this.maps;
    switch (resp.status) {
      case Status.Ok: {
        if (maps.leaderHint(op.poolId, p.sentPg) !== p.sentTo) maps.noteLeader(op.poolId, p.sentPg, p.sentPgEpoch, p.sentTo);
        const err = this.absorb(p, resp.data, resp.extents);
        if (err !== null) return this.finish(p, err);
        if (p.plan !== null && ++p.planIndex < p.plan.length) {
          this.setStage(p);
          p.attempts = 0;
          p.redirects = 0;
          return this.send(p);
        }
        return this.finish(p, null);
      }
      case Status.NotLeader: {
        const hint = resp.leaderHint ?? 0;
        p.lastReason = `OSD ${p.sentTo}: not the leader of PG ${op.poolId}.${p.sentPg} (hint ${hint})`;
        if (hint !== 0 && hint !== p.sentTo && maps.osd(hint) !== undefined) {
          this.c.redirects++;
          p.target = hint;
          p.targetPg = p.sentPg;
          p.targetPgEpoch = p.sentPgEpoch;
          maps.noteLeader(op.poolId, p.sentPg, p.sentPgEpoch, hint);
          if (++p.redirects <= this.redirectsMax) return this.send(p);
          return this.retryLater(p);
        }
        this.rotate(p, p.sentTo);
        return this.retryLater(p);
      }
      case Status.StaleEpoch: {
        this.c.staleEpochs++;
        const osdEpoch = resp.pgEpoch ?? 0;
        p.lastReason = `OSD ${p.sentTo}: PG ${op.poolId}.${p.sentPg} is at epoch ${osdEpoch}, we sent ${p.sentPgEpoch}`;
        if (osdEpoch > p.sentPgEpoch) return this.awaitEpoch(p, osdEpoch);
        return this.retryLater(p); // the OSD has not seen our map yet
      }
      case Status.NotReady:
        p.lastReason = `OSD ${p.sentTo}: PG ${op.poolId}.${p.sentPg} not ready: ${resp.message}`;
        this.rotate(p, p.sentTo);
        return this.retryLater(p);
      case Status.Busy:
        p.lastReason = `OSD ${p.sentTo}: busy: ${resp.message}`;
        return this.retryLater(p);
      case Status.Range:
        return this.finish(p, this.osdError('ERR_RANGE', p, resp.message));
      case Status.Io:
        return this.finish(p, this.osdError('ERR_DEVICE_IO', p, resp.message));
      case Status.Checksum:
        return this.finish(p, this.osdError('ERR_CHECKSUM', p, resp.message));
      case Status.NoSpace:
        return this.finish(p, this.osdError('ERR_NO_SPACE', p, resp.message));
      case Status.Invalid:
        return this.finish(p, this.osdError('ERR_INVALID', p, resp.message));
      default:
        return this.finish(p, this.osdError('ERR_PROTOCOL', p, `unknown status ${(resp as { status: number }).status}`));
    }
  }

  /** Takes in a successful response of the piece's current stage; returns an error if the response is malformed. */
  private absorb(p: Piece, data: Buffer | undefined, extents: ExtentWire[] | undefined): Error | null {
    const op = p.op;
    if (p.method === Method.Read) {
      if (data === undefined || data.length !== p.reqLengthBytes) {
        return this.osdError('ERR_PROTOCOL', p, `read of ${p.reqLengthBytes} bytes answered with ${data?.length ?? 'no'} bytes`);
      }
      if (p.plan !== null) {
        const stage = p.plan[p.planIndex];
        if (stage === S_READ_HEAD) p.head = Buffer.from(data);
        else p.tail = Buffer.from(data);
        return null;
      }
      const from = p.startBytes - p.orderStartBytes;
      // copyBytes: op.out may be shared memory (the iSCSI gateway's large read buffers).
      copyBytes(data, from, from + (p.endBytes - p.startBytes), op.out!, op.outOffset + (p.startBytes - op.offsetBytes));
      return null;
    }
    if (p.method === Method.BlockStatus) {
      if (extents === undefined) return this.osdError('ERR_PROTOCOL', p, 'blockStatus answered without extents');
      let total = 0;
      for (const e of extents) {
        if (!Number.isSafeInteger(e.lengthBytes) || e.lengthBytes <= 0) return this.osdError('ERR_PROTOCOL', p, `blockStatus extent of ${e.lengthBytes} bytes`);
        total += e.lengthBytes;
      }
      if (total !== p.reqLengthBytes) return this.osdError('ERR_PROTOCOL', p, `blockStatus of ${p.reqLengthBytes} bytes answered with ${total} bytes of extents`);
      p.extents = trimExtents(extents, p.startBytes - p.orderStartBytes, p.orderEndBytes - p.endBytes);
      return null;
    }
    return null;
  }

  /** The OSD knows a newer PG epoch: wait for a map that has it, then resend. */
  private awaitEpoch(p: Piece, epoch: number): void {
    const leftMs = p.op.deadlineMs - this.clock.nowMs();
    if (leftMs <= 0) return this.finish(p, this.timeoutError(p));
    this.maps.refresh(epoch, leftMs).then(
      () => {
        this.c.retries++;
        this.send(p);
      },
      (err: unknown) => {
        if (this.closed || isTesseraError(err, 'ERR_CLOSED')) return this.finish(p, closedError());
        p.lastReason += `; map refresh: ${String(err)}`;
        if (isTesseraError(err, 'ERR_TIMEOUT')) return this.finish(p, this.timeoutError(p));
        this.retryLater(p);
      },
    );
  }

  /**
   * A transport rejection. ERR_TIMEOUT / ERR_CLOSED: the OSD may be gone, try
   * the next one. ERR_PROTOCOL / ERR_CHECKSUM (a reply damaged on the wire; the
   * request may have run) and ERR_LIMIT (the transport's own queue is full):
   * the OSD is fine, retry it after a backoff. Anything else is a bug.
   */
  private onFailure(p: Piece, err: unknown): void {
    if (!isTesseraError(err)) return this.finish(p, err instanceof Error ? err : new Error(String(err)));
    switch (err.code) {
      case 'ERR_TIMEOUT':
      case 'ERR_CLOSED':
        this.c.transportFailures++;
        p.lastReason = `OSD ${p.sentTo}: ${err.message}`;
        this.rotate(p, p.sentTo);
        return this.retryLater(p);
      case 'ERR_PROTOCOL':
      case 'ERR_CHECKSUM':
      case 'ERR_LIMIT':
        this.c.transportFailures++;
        p.lastReason = `OSD ${p.sentTo}: ${err.message}`;
        return this.retryLater(p);
      default:
        return this.finish(p, err);
    }
  }

  /**
   * Points the piece at the next OSD of the PG's acting set after `failed`,
   * preferring OSDs the map has up; moves the shared leader hint too if it
   * named `failed`, so other requests do not each wait out the same timeout.
   */
  private rotate(p: Piece, failed: number): void {
    const poolId = p.op.poolId;
    const rec: PgRecord | undefined = this.maps.pgRecord(poolId, p.sentPg);
    if (rec === undefined || rec.epoch !== p.sentPgEpoch || rec.osds.length === 0) return; // the map moved: fresh routing on resend
    const osds = rec.osds;
    const n = osds.length;
    const i = osds.indexOf(failed);
    let choice = 0;
    for (let k = 1; k <= n; k++) {
      const c = osds[(((i + k) % n) + n) % n];
      if (c !== failed && this.maps.osd(c)?.up === true) {
        choice = c;
        break;
      }
    }
    if (choice === 0) choice = osds[(((i + 1) % n) + n) % n];
    p.target = choice;
    p.targetPg = p.sentPg;
    p.targetPgEpoch = rec.epoch;
    if (this.maps.leaderHint(poolId, p.sentPg) === failed) this.maps.noteLeader(poolId, p.sentPg, rec.epoch, choice);
  }

  private retryLater(p: Piece): void {
    if (this.closed) return this.finish(p, closedError());
    const leftMs = p.op.deadlineMs - this.clock.nowMs();
    if (leftMs <= 0) return this.finish(p, this.timeoutError(p));
    const full = Math.min(this.backoffMsMax, this.backoffMsMin * 2 ** Math.min(p.attempts, 30));
    p.attempts++;
    const delayMs = Math.min(leftMs, full / 2 + this.prng.float() * (full / 2));
    this.c.retries++;
    this.backingOff.add(p);
    p.timer = this.clock.setTimer(delayMs, () => {
      p.timer = null;
      this.backingOff.delete(p);
      p.redirects = 0;
      this.send(p);
    });
  }

  // ------------------------------------------------------------ completion

  /** A piece is done (err null: success or skipped). Releases its slot and order entry, settles the op when last. */
  private finish(p: Piece, err: Error | null): void {
    if (p.holdsSlot) {
      p.holdsSlot = false;
      this.inFlight--;
    }
    if (p.ordered) {
      p.ordered = false;
      this.order.remove(p.op.volumeId, p.objectIndex, p, this.makeReady);
    }
    this.pending--;
    const op = p.op;
    if (err !== null && op.error === null) op.error = err;
    if (--op.piecesLeft === 0) this.complete(op);
    this.pump();
    if (this.pending === 0 && this.drained !== null) {
      const d = this.drained;
      this.drained = null;
      d();
    }
  }

  private complete(op: Op): void {
    const st = op.stats;
    if (st !== null) {
      st.inFlight--;
      const which: OpStats | null = op.kind === K_READ ? st.read : op.kind === K_WRITE ? st.write : op.kind === K_ZERO ? st.discard : null;
      if (which !== null) {
        if (op.error !== null) which.recordError();
        else which.record(op.lengthBytes, (this.clock.nowMs() - op.startMs) * 1000);
      }
    }
    if (op.error !== null) return op.reject(op.error);
    if (op.kind !== K_STATUS) return op.resolve(undefined as never);
    const out: ExtentWire[] = [];
    for (const p of op.pieces!) for (const e of p.extents!) pushExtent(out, e.lengthBytes, e.hole, e.zero);
    op.resolve(out as never);
  }

  private timeoutError(p: Piece): TesseraError {
    const op = p.op;
    const last = p.lastReason === '' ? '' : `; last: ${p.lastReason}`;
    return new TesseraError(
      'ERR_TIMEOUT',
      `${KIND_NAMES[op.kind]} of volume ${op.volumeId} at ${op.offsetBytes}+${op.lengthBytes} did not complete within ${this.opTimeoutMs} ms${last}`,
    );
  }

  private osdError(code: ErrorCode, p: Piece, message: string): TesseraError {
    const op = p.op;
    return new TesseraError(code, `${KIND_NAMES[op.kind]} of volume ${op.volumeId} at ${p.reqOffsetBytes}+${p.reqLengthBytes} on OSD ${p.sentTo}: ${message}`);
  }
}

function buildRequest(p: Piece, poolId: number, pg: number, pgEpoch: number): ClientRequest {
  const volumeId = p.op.volumeId;
  switch (p.method) {
    case Method.Read:
      return { method: Method.Read, poolId, pg, pgEpoch, volumeId, offsetBytes: p.reqOffsetBytes, lengthBytes: p.reqLengthBytes };
    case Method.Write:
      return { method: Method.Write, poolId, pg, pgEpoch, volumeId, offsetBytes: p.reqOffsetBytes, data: p.reqData! };
    case Method.Zero:
      return { method: Method.Zero, poolId, pg, pgEpoch, volumeId, offsetBytes: p.reqOffsetBytes, lengthBytes: p.reqLengthBytes, mayTrim: p.reqMayTrim };
    default:
      return { method: Method.BlockStatus, poolId, pg, pgEpoch, volumeId, offsetBytes: p.reqOffsetBytes, lengthBytes: p.reqLengthBytes };
  }
}

function checkRange(offsetBytes: number, lengthBytes: number): TesseraError | null {
  if (!Number.isSafeInteger(offsetBytes) || !Number.isSafeInteger(lengthBytes) || offsetBytes < 0 || lengthBytes < 0 || !Number.isSafeInteger(offsetBytes + lengthBytes)) {
    return new TesseraError('ERR_RANGE', `bad range ${offsetBytes}+${lengthBytes}`);
  }
  return null;
}

/** Appends a run, merging it into the last one when both have the same flags. */
export function pushExtent(out: ExtentWire[], lengthBytes: number, hole: boolean, zero: boolean): void {
  if (lengthBytes <= 0) return;
  const last = out[out.length - 1];
  if (last !== undefined && last.hole === hole && last.zero === zero) last.lengthBytes += lengthBytes;
  else out.push({ lengthBytes, hole, zero });
}

/** Drops headBytes from the front and tailBytes from the back of a run list (for sector-rounded requests). */
function trimExtents(extents: ExtentWire[], headBytes: number, tailBytes: number): ExtentWire[] {
  let total = 0;
  for (const e of extents) total += e.lengthBytes;
  const keepEnd = total - tailBytes;
  const out: ExtentWire[] = [];
  let pos = 0;
  for (const e of extents) {
    const s = Math.max(pos, headBytes);
    const end = Math.min(pos + e.lengthBytes, keepEnd);
    if (end > s) pushExtent(out, end - s, e.hole, e.zero);
    pos += e.lengthBytes;
  }
  return out;
}

function closedError(): TesseraError {
  return new TesseraError('ERR_CLOSED', 'the cluster client is closed');
}

function notFound(vol: VolumeRef): TesseraError {
  return new TesseraError('ERR_NOT_FOUND', `volume ${vol.id} (pool ${vol.poolId}) is not in the cluster map`);
}
