// MonClient: MonApi over HTTP against a set of monitors ("host:port" each), for
// OSDs, gateways, the CLI and tests. It follows the active monitor: calls go to
// the last monitor that answered; on a connection failure or a 503 (standby,
// shutting down) it tries the active monitor the 503 names, then the others,
// backing off once every known address has failed since the last pause.
//
// Invariants:
// - Every request has a timeout (requestTimeoutMs; long polls waitMs more) and
//   every call makes at most attemptsMax requests: then ERR_TIMEOUT.
// - A mutation that is not idempotent (volume create/rename/delete, pool
//   create, OSD rm) is retried only when the request surely did not reach a
//   monitor's logic (connection refused, or a 503); when the outcome is unknown
//   (timeout, reset mid-request) the call fails with ERR_TIMEOUT saying so,
//   never silently repeats a create.
// - Server errors keep their stable code (ERR_NOT_FOUND, ERR_EXISTS, ERR_BUSY,
//   ERR_INVALID, ...) as TesseraErrors (MonRemoteError); answers are validated
//   (maps by the map schema) and a malformed one is ERR_PROTOCOL.
// - Learned addresses (from 503 hints) are bounded (ADDRS_MAX).
import { parseHostPort } from '../stdx/host-port.js';
import { z } from 'zod';
import { TesseraError, type ErrorCode } from '../stdx/errors.js';
import type { Clock } from '../io/clock.js';
import { nodeClock } from '../io/node/clock.js';
import { httpJson, HttpTransportError, type HttpJsonResponse } from '../io/node/httpclient.js';
import type { ClusterMap, OsdReport, PoolRecord, VolumeRecord } from './map-types.js';
import type { ClusterStatus, MonApi, OsdBootRequest, PoolCreateRequest, PrCasAnswer, PrCasRequest, PrGetAnswer, PrRecordWire, PrWatchAnswer } from './api-types.js';
import { parseClusterMap, PoolRecordSchema, VolumeRecordSchema } from './map.js';
import { isErrorCode, type MonErrorBody } from './errors.js';

export const REQUEST_TIMEOUT_MS_DEFAULT = 5000;
/** With the default backoff this spans about 15 s: longer than an election TTL. */
export const ATTEMPTS_MAX_DEFAULT = 24;
export const RETRY_DELAY_MS_DEFAULT = 100;
export const RETRY_DELAY_MS_MAX = 1000;
/** Configured plus learned monitor addresses. */
export const ADDRS_MAX = 32;

/** Transport failures after which the request surely never reached the monitor's logic. */
const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'EAI_AGAIN']);

export interface MonClientOptions {
  /** Monitor API addresses, "host:port" or "[v6]:port". */
  addrs: string[];
  requestTimeoutMs?: number;
  attemptsMax?: number;
  /** First pause once every address failed; doubles up to RETRY_DELAY_MS_MAX. */
  retryDelayMs?: number;
  authToken?: string;
  clock?: Clock;
}

/** An error answered by a monitor: its stable code, plus the wire code and HTTP status. */
export class MonRemoteError extends TesseraError {
  constructor(
    code: ErrorCode,
    message: string,
    readonly remoteCode: string,
    readonly httpStatus: number,
  ) {
    super(code, message);
    this.name = 'MonRemoteError';
  }
}

export function parseMonAddr(addr: string): { host: string; port: number } {
  return parseHostPort(addr, 'monitor address');
}

interface CallOptions {
  idempotent: boolean;
  timeoutMs?: number;
}

const PoolAnswer = PoolRecordSchema;
const VolumeAnswer = VolumeRecordSchema;
const BootAnswer = z.object({ osdId: z.int().positive(), map: z.unknown() });
const PrRev = z.int().min(0).max(Number.MAX_SAFE_INTEGER);
const hasState = (v: { state?: unknown }): boolean => v.state !== undefined;
const PrRecordAnswer = z.object({ rev: PrRev, state: z.unknown() }).refine(hasState, { message: 'PR record without state' });
const PrGetAnswerSchema = z.object({ rev: PrRev, state: z.unknown(), leaseMs: z.int().positive() }).refine(hasState, { message: 'PR record without state' });
const PrWatchAnswerSchema = z.object({
  leaseMs: z.int().positive(),
  records: z.array(z.object({ key: z.string(), rev: PrRev, state: z.unknown() }).refine(hasState, { message: 'PR record without state' })),
});
const PrCasAnswerSchema = z.union([z.object({ ok: z.literal(true), rev: PrRev }), z.object({ ok: z.literal(false), current: PrRecordAnswer })]);
const StatusAnswer = z.looseObject({ fsid: z.string(), epoch: z.int(), health: z.enum(['HEALTH_OK', 'HEALTH_WARN', 'HEALTH_ERR']), checks: z.array(z.string()) });

export class MonClient implements MonApi {
  private readonly addrs: string[];
  private readonly requestTimeoutMs: number;
  private readonly attemptsMax: number;
  private readonly retryDelayMs: number;
  private readonly headers: Record<string, string>;
  private readonly clock: Clock;
  private active: string | null = null;

  constructor(opts: MonClientOptions) {
    if (!Array.isArray(opts.addrs) || opts.addrs.length === 0) throw new TesseraError('ERR_INVALID', 'MonClient needs at least one monitor address');
    for (const a of opts.addrs) parseMonAddr(a);
    this.addrs = [...new Set(opts.addrs)].slice(0, ADDRS_MAX);
    this.requestTimeoutMs = opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS_DEFAULT;
    this.attemptsMax = opts.attemptsMax ?? ATTEMPTS_MAX_DEFAULT;
    this.retryDelayMs = opts.retryDelayMs ?? RETRY_DELAY_MS_DEFAULT;
    if (!(this.attemptsMax >= 1)) throw new TesseraError('ERR_INVALID', 'attemptsMax must be at least 1');
    this.headers = opts.authToken !== undefined ? { authorization: `Bearer ${opts.authToken}` } : {};
    this.clock = opts.clock ?? nodeClock;
  }

  /** The monitor that answered last (null before the first answer). */
  activeAddr(): string | null {
    return this.active;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.clock.setTimer(ms, resolve));
  }

  private learn(addr: string): boolean {
    try {
      parseMonAddr(addr);
    } catch {
      return false;
    }
    if (!this.addrs.includes(addr)) {
      if (this.addrs.length >= ADDRS_MAX) return false;
      this.addrs.push(addr);
    }
    return true;
  }

  private async call(method: string, path: string, body: unknown, opts: CallOptions): Promise<HttpJsonResponse & { addr: string }> {
    const timeoutMs = opts.timeoutMs ?? this.requestTimeoutMs;
    let cursor = Math.max(0, this.active === null ? 0 : this.addrs.indexOf(this.active));
    let hint: string | null = null;
    let delayMs = this.retryDelayMs;
    let triedSincePause = new Set<string>();
    const failures: string[] = [];
    for (let attempt = 0; attempt < this.attemptsMax; attempt++) {
      let addr: string;
      if (hint !== null) {
        addr = hint;
        hint = null;
      } else {
        addr = this.addrs[cursor % this.addrs.length];
        cursor++;
      }
      if (triedSincePause.has(addr)) {
        await this.sleep(delayMs);
        delayMs = Math.min(2 * delayMs, RETRY_DELAY_MS_MAX);
        triedSincePause = new Set();
      }
      triedSincePause.add(addr);
      let res: HttpJsonResponse;
      try {
        res = await httpJson(parseMonAddr(addr), method, path, body, { timeoutMs, headers: this.headers });
      } catch (err) {
        if (!(err instanceof HttpTransportError)) throw err;
        if (this.active === addr) this.active = null;
        if (!opts.idempotent && !NOT_SENT_CODES.has(err.code)) {
          throw new TesseraError('ERR_TIMEOUT', `${method} ${path} at monitor ${addr}: ${err.message}; the outcome is unknown (not retried)`, { cause: err });
        }
        failures.push(`${addr}: ${err.code}`);
        continue;
      }
      if (res.status === 503) {
        if (this.active === addr) this.active = null;
        const b = res.body as Partial<MonErrorBody> | undefined;
        const hinted = typeof b?.activeAddr === 'string' ? b.activeAddr : null;
        if (hinted !== null && hinted !== addr && this.learn(hinted)) hint = hinted;
        failures.push(`${addr}: ${b?.code ?? 'HTTP 503'}${hinted ? ` (active: ${hinted})` : ''}`);
        continue;
      }
      this.active = addr;
      if (res.status >= 400) throw remoteError(method, path, addr, res);
      return { ...res, addr };
    }
    throw new MonUnavailableError(`${method} ${path}: no active monitor answered in ${this.attemptsMax} attempts (${failures.slice(-4).join('; ')})`);
  }

  // ---------- MonApi ----------

  async getMap(): Promise<ClusterMap> {
    const res = await this.call('GET', '/v1/map', undefined, { idempotent: true });
    return answerMap(res.body, res.addr);
  }

  async waitMap(afterEpoch: number, waitMs: number): Promise<ClusterMap | null> {
    const path = `/v1/map/wait?after=${encodeURIComponent(String(afterEpoch))}&waitMs=${encodeURIComponent(String(waitMs))}`;
    const res = await this.call('GET', path, undefined, { idempotent: true, timeoutMs: waitMs + this.requestTimeoutMs });
    if (res.status === 204) return null;
    return answerMap(res.body, res.addr);
  }

  async createVolume(req: { name: string; sizeBytes: number; pool?: string }): Promise<VolumeRecord> {
    const res = await this.call('POST', '/v1/volumes', req, { idempotent: false });
    return answer(VolumeAnswer, res.body, res.addr);
  }

  async resizeVolume(name: string, sizeBytes: number): Promise<VolumeRecord> {
    const res = await this.call('PATCH', `/v1/volumes/${encodeURIComponent(name)}`, { sizeBytes }, { idempotent: true });
    return answer(VolumeAnswer, res.body, res.addr);
  }

  async renameVolume(name: string, newName: string): Promise<VolumeRecord> {
    const res = await this.call('PATCH', `/v1/volumes/${encodeURIComponent(name)}`, { newName }, { idempotent: false });
    return answer(VolumeAnswer, res.body, res.addr);
  }

  async deleteVolume(name: string): Promise<void> {
    await this.call('DELETE', `/v1/volumes/${encodeURIComponent(name)}`, undefined, { idempotent: false });
  }

  async createPool(req: PoolCreateRequest): Promise<PoolRecord> {
    const res = await this.call('POST', '/v1/pools', req, { idempotent: false });
    return answer(PoolAnswer, res.body, res.addr);
  }

  async osdBoot(req: OsdBootRequest): Promise<{ osdId: number; map: ClusterMap }> {
    const res = await this.call('POST', '/v1/osds/boot', req, { idempotent: true });
    const b = answer(BootAnswer, res.body, res.addr);
    return { osdId: b.osdId, map: answerMap(b.map, res.addr) };
  }

  async osdReport(report: OsdReport): Promise<void> {
    await this.call('POST', '/v1/osds/report', report, { idempotent: true });
  }

  async osdOut(osdId: number): Promise<void> {
    await this.call('POST', `/v1/osds/${encodeURIComponent(String(osdId))}/out`, undefined, { idempotent: true });
  }

  async osdIn(osdId: number): Promise<void> {
    await this.call('POST', `/v1/osds/${encodeURIComponent(String(osdId))}/in`, undefined, { idempotent: true });
  }

  async osdRm(osdId: number): Promise<void> {
    await this.call('DELETE', `/v1/osds/${encodeURIComponent(String(osdId))}`, undefined, { idempotent: false });
  }

  // ---------- persistent reservations (pr-service.ts) ----------

  /** A PR record; with gatewayId the monitor renews that gateway's lease and makes it follow key. */
  async prGet(key: string, gatewayId?: string): Promise<PrGetAnswer> {
    const q = gatewayId === undefined ? '' : `?gateway=${encodeURIComponent(gatewayId)}`;
    const res = await this.call('GET', `/v1/pr/${encodeURIComponent(key)}${q}`, undefined, { idempotent: true });
    return answer(PrGetAnswerSchema, res.body, res.addr) as PrGetAnswer;
  }

  /** A gateway's long poll (renews its lease, acknowledges `known`); timeoutMs per request, default waitMs + requestTimeoutMs. */
  async prWatch(gatewayId: string, known: ReadonlyArray<readonly [string, number]>, waitMs: number, timeoutMs?: number): Promise<PrWatchAnswer> {
    const keys = known.map(([k]) => encodeURIComponent(k)).join(',');
    const revs = known.map(([, r]) => String(r)).join(',');
    const path = `/v1/pr/watch?gateway=${encodeURIComponent(gatewayId)}&keys=${keys}&known=${revs}&waitMs=${encodeURIComponent(String(waitMs))}`;
    const res = await this.call('GET', path, undefined, { idempotent: true, timeoutMs: timeoutMs ?? waitMs + this.requestTimeoutMs });
    return answer(PrWatchAnswerSchema, res.body, res.addr) as PrWatchAnswer;
  }

  /**
   * Compare-and-set of a PR record; answered after the monitor propagated it. Retried
   * like an idempotent call only when req.op is set (the monitor recognizes a retry).
   */
  async prCompareAndSet(key: string, req: PrCasRequest, timeoutMs?: number): Promise<PrCasAnswer> {
    const res = await this.call('POST', `/v1/pr/${encodeURIComponent(key)}/cas`, req, { idempotent: req.op !== undefined, timeoutMs });
    const a = answer(PrCasAnswerSchema, res.body, res.addr);
    return a.ok ? { ok: true, rev: a.rev } : { ok: false, current: a.current as PrRecordWire };
  }

  /** Ends a gateway's PR lease (it is closing). */
  async prRelease(gatewayId: string, timeoutMs?: number): Promise<void> {
    await this.call('DELETE', `/v1/pr/gateways/${encodeURIComponent(gatewayId)}`, undefined, { idempotent: true, timeoutMs });
  }

  async status(): Promise<ClusterStatus> {
    const res = await this.call('GET', '/v1/status', undefined, { idempotent: true });
    answer(StatusAnswer, res.body, res.addr);
    return res.body as ClusterStatus;
  }
}

function remoteError(method: string, path: string, addr: string, res: HttpJsonResponse): MonRemoteError {
  const b = res.body as Partial<MonErrorBody> | undefined;
  const remoteCode = typeof b?.code === 'string' ? b.code : `HTTP ${res.status}`;
  const code: ErrorCode = isErrorCode(remoteCode) ? remoteCode : 'ERR_PROTOCOL';
  const message = typeof b?.message === 'string' ? b.message : `HTTP ${res.status}`;
  return new MonRemoteError(code, `monitor ${addr}: ${method} ${path}: ${message}`, remoteCode, res.status);
}

function answer<T>(schema: z.ZodType<T>, body: unknown, addr: string): T {
  const res = schema.safeParse(body);
  if (res.success) return res.data;
  throw new TesseraError('ERR_PROTOCOL', `monitor ${addr} sent a malformed answer: ${res.error.issues[0]?.message ?? 'invalid'}`);
}

function answerMap(body: unknown, addr: string): ClusterMap {
  try {
    return parseClusterMap(body, `map from monitor ${addr}`);
  } catch (err) {
    throw new TesseraError('ERR_PROTOCOL', (err as Error).message, { cause: err });
  }
}

/** No monitor answered as active within the client's attempts (code ERR_TIMEOUT; a CLI reports it as unreachable). */
export class MonUnavailableError extends TesseraError {
  constructor(message: string) {
    super('ERR_TIMEOUT', message);
    this.name = 'MonUnavailableError';
  }
}
