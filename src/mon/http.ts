// The monitor's HTTP API (SPEC CLU1): MonApi as JSON over HTTP, served by
// fastify on host:port (loopback unless configured otherwise). client.ts is the
// matching client.
//
// Routes (bodies and answers are JSON; types in api-types.ts / map-types.ts):
//   GET    /v1/map                          → ClusterMap
//   GET    /v1/map/wait?after=E&waitMs=MS   → ClusterMap with epoch > E, or 204 after MS
//   POST   /v1/volumes      {name, sizeBytes, pool?}      → 201 VolumeRecord
//   PATCH  /v1/volumes/:name {sizeBytes?, newName?}       → VolumeRecord
//   DELETE /v1/volumes/:name                              → 204
//   POST   /v1/pools        PoolCreateRequest             → 201 PoolRecord
//   POST   /v1/osds/boot    OsdBootRequest                → {osdId, map}
//   POST   /v1/osds/report  OsdReport                     → 204
//   POST   /v1/osds/:id/out, POST /v1/osds/:id/in         → 204
//   DELETE /v1/osds/:id                                   → 204
//   GET    /v1/status                                     → ClusterStatus
//   GET    /v1/pr/watch?gateway=ID&keys=K1,K2&known=R1,R2&waitMs=MS
//                                   → PrWatchAnswer (long poll; renews the gateway's lease)
//   GET    /v1/pr/:key[?gateway=ID]                        → PrGetAnswer (with ID: follow)
//   POST   /v1/pr/:key/cas  {expectRev, state, op?}       → PrCasAnswer (after propagation)
//   DELETE /v1/pr/gateways/:id                             → 204 (ends that gateway's lease)
//   (persistent reservations: pr-service.ts)
//
// Invariants:
// - Every body is validated by a strict zod schema before the service sees it;
//   bodies are bounded (BODY_BYTES_MAX, REPORT_BODY_BYTES_MAX for reports).
// - Every failure is JSON {code, message} (errors.ts) with a stable code and
//   its HTTP status: 400 invalid, 404 not found, 409 exists/busy/shrink, 429
//   limit, 503 not active (+ activeAddr), 504 timeout, 500 otherwise.
// - With `authToken` set, every route needs `Authorization: Bearer <token>`,
//   compared in constant time.
import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import { z } from 'zod';
import { isTesseraError, TesseraError } from '../stdx/errors.js';
import type { Logger } from '../stdx/log.js';
import { PG_COUNT_MAX, POOL_SIZE_MAX } from '../placement/placement.js';
import { httpStatusOf, MonNotActiveError, type MonErrorBody, type MonErrorCode } from './errors.js';
import { WAIT_MS_MAX, type MonService } from './service.js';
import { PR_FOLLOWS_PER_GATEWAY_MAX, PR_STATE_BYTES_MAX, PR_WAIT_MS_MAX } from './pr-service.js';

/** Bodies other than reports are small JSON objects. */
export const BODY_BYTES_MAX = 64 * 1024;
/** An OSD report lists the PGs it leads; 16 MiB holds ~80k PG entries. */
export const REPORT_BODY_BYTES_MAX = 16 * 1024 * 1024;
/** PG entries in one report. */
export const REPORT_PGS_MAX = 131_072;

const safeInt = z.int().min(0).max(Number.MAX_SAFE_INTEGER);
const osdId = z.int().positive().max(Number.MAX_SAFE_INTEGER);
const shortText = z.string().min(1).max(256);

const VolumeCreateBody = z.strictObject({ name: z.string().max(256), sizeBytes: z.int().positive().max(Number.MAX_SAFE_INTEGER), pool: z.string().max(256).optional() });
const VolumePatchBody = z
  .strictObject({ sizeBytes: z.int().positive().max(Number.MAX_SAFE_INTEGER).optional(), newName: z.string().max(256).optional() })
  .refine((b) => b.sizeBytes !== undefined || b.newName !== undefined, { message: 'nothing to change: give sizeBytes and/or newName' });
const PoolCreateBody = z.strictObject({
  name: z.string().max(256),
  size: z.int().min(1).max(POOL_SIZE_MAX),
  minSize: z.int().min(1).max(POOL_SIZE_MAX),
  pgCount: z.int().min(1).max(PG_COUNT_MAX),
  failureDomain: z.enum(['host', 'osd']).optional(),
  objectSizeBytes: z.int().positive().optional(),
});
const OsdBootBody = z.strictObject({
  uuid: shortText,
  host: shortText,
  addr: shortText,
  port: z.int().min(1).max(65535),
  weight: z.number().min(0).max(1e6),
  capacityBytes: safeInt,
});
const idList = z.array(osdId).max(2 * POOL_SIZE_MAX);
const PgReportBody = z.strictObject({
  poolId: osdId,
  pg: z.int().min(0).max(PG_COUNT_MAX - 1),
  role: z.enum(['leader', 'follower', 'candidate', 'learner', 'joining']),
  term: safeInt,
  leader: safeInt,
  commitIndex: safeInt,
  appliedIndex: safeInt,
  voters: idList,
  learners: idList,
  state: z.enum(['active', 'degraded', 'recovering', 'peering', 'inactive']),
  recoveryBytesLeft: safeInt,
  pgEpoch: safeInt.optional(),
});
const OsdReportBody = z.strictObject({
  osdId,
  uuid: shortText,
  capacityBytes: safeInt,
  usedBytes: safeInt,
  pgs: z.array(PgReportBody).max(REPORT_PGS_MAX),
  repairingReplicas: safeInt.optional(),
});
const WaitQuery = z.strictObject({
  after: z.coerce.number().pipe(safeInt),
  waitMs: z.coerce.number().pipe(z.int().min(0).max(WAIT_MS_MAX)),
});
const OsdIdParams = z.strictObject({ id: z.coerce.number().pipe(osdId) });
/** A PR CAS body: the state (at most PR_STATE_BYTES_MAX of JSON) plus a little. */
export const PR_CAS_BODY_BYTES_MAX = PR_STATE_BYTES_MAX + 4096;
const commaList = z.string().max(16 * 1024).transform((s) => (s === '' ? [] : s.split(',')));
const PrWatchQuery = z.strictObject({
  gateway: z.string().min(1).max(64),
  keys: commaList.pipe(z.array(z.string()).max(PR_FOLLOWS_PER_GATEWAY_MAX)),
  known: commaList.pipe(z.array(z.string().regex(/^[0-9]{1,16}$/, 'revs are decimal integers').transform(Number)).max(PR_FOLLOWS_PER_GATEWAY_MAX)),
  waitMs: z.coerce.number().pipe(z.int().min(0).max(PR_WAIT_MS_MAX)),
});
const PrGetQuery = z.strictObject({ gateway: z.string().min(1).max(64).optional() });
const PrKeyParams = z.strictObject({ key: z.string().min(1).max(64) });
const PrCasBody = z
  .strictObject({ expectRev: safeInt, state: z.unknown(), op: z.string().min(1).max(64).optional() })
  .refine((b) => b.state !== undefined, { message: 'state is required (null for none)' });
const PrGatewayParams = z.strictObject({ id: z.string().min(1).max(64) });

function parse<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const res = schema.safeParse(value ?? {});
  if (res.success) return res.data;
  const msg = res.error.issues
    .slice(0, 5)
    .map((i) => {
      if (i.code === 'unrecognized_keys') return `unknown field(s) ${i.keys.map((k) => `"${k}"`).join(', ')}`;
      const field = i.path.join('.');
      return field ? `field "${field}": ${i.message}` : i.message;
    })
    .join('; ');
  throw new TesseraError('ERR_INVALID', `bad ${what}: ${msg}`);
}

function send(reply: FastifyReply, body: MonErrorBody): FastifyReply {
  return reply.code(httpStatusOf(body.code)).send(body);
}

export interface MonHttpOptions {
  service: MonService;
  /** When set, every request needs `Authorization: Bearer <authToken>`. */
  authToken?: string;
  log?: Logger;
}

/** The fastify app with every route (not listening). */
export function buildMonApp(opts: MonHttpOptions): FastifyInstance {
  const { service } = opts;
  const app = Fastify({ logger: false, bodyLimit: BODY_BYTES_MAX, forceCloseConnections: true, return503OnClosing: true });

  if (opts.authToken !== undefined) {
    const expected = Buffer.from(`Bearer ${opts.authToken}`);
    app.addHook('onRequest', async (req, reply) => {
      const given = Buffer.from(req.headers.authorization ?? '');
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        return send(reply, { code: 'ERR_UNAUTHORIZED', message: 'this monitor needs "Authorization: Bearer <token>"' });
      }
    });
  }

  app.setNotFoundHandler((req, reply) => {
    void send(reply, { code: 'ERR_NO_ROUTE', message: `no route ${req.method} ${req.url}` });
  });

  app.setErrorHandler(async (err: FastifyError | Error, req, reply) => {
    if (err instanceof MonNotActiveError) {
      const activeAddr = err.activeAddr ?? (await service.activeAddr().catch(() => null));
      return send(reply, { code: 'ERR_NOT_ACTIVE', message: err.message, activeAddr });
    }
    if (isTesseraError(err)) return send(reply, { code: err.code, message: err.message });
    const statusCode = (err as FastifyError).statusCode;
    if (statusCode !== undefined && statusCode >= 400 && statusCode < 500) {
      // fastify's own rejections: bad JSON, body too large, wrong content type.
      return reply.code(statusCode).send({ code: statusCode === 413 ? 'ERR_LIMIT' : 'ERR_INVALID', message: err.message } satisfies MonErrorBody);
    }
    if (statusCode === 503) return send(reply, { code: 'ERR_NOT_ACTIVE', message: 'monitor is shutting down', activeAddr: null });
    opts.log?.error(`${req.method} ${req.url} failed: ${err.stack ?? err.message}`);
    const code: MonErrorCode = 'ERR_INTERNAL';
    return send(reply, { code, message: `internal error: ${err.message}` });
  });

  app.get('/v1/map', async () => service.getMap());

  app.get('/v1/map/wait', async (req, reply) => {
    const q = parse(WaitQuery, req.query, 'query');
    // A client that hangs up stops waiting at once (its waiter slot is freed).
    // (The response's 'close' before it was written means the connection went away.)
    const abort = new AbortController();
    const onClose = (): void => {
      if (!reply.raw.writableFinished) abort.abort();
    };
    reply.raw.once('close', onClose);
    try {
      const map = await service.waitMap(q.after, q.waitMs, abort.signal);
      if (map === null) return reply.code(204).send();
      return map;
    } finally {
      reply.raw.off('close', onClose);
    }
  });

  app.post('/v1/volumes', async (req, reply) => {
    const body = parse(VolumeCreateBody, req.body, 'volume create body');
    return reply.code(201).send(await service.createVolume(body));
  });

  app.patch<{ Params: { name: string } }>('/v1/volumes/:name', async (req) => {
    const body = parse(VolumePatchBody, req.body, 'volume patch body');
    return service.patchVolume(req.params.name, body);
  });

  app.delete<{ Params: { name: string } }>('/v1/volumes/:name', async (req, reply) => {
    await service.deleteVolume(req.params.name);
    return reply.code(204).send();
  });

  app.post('/v1/pools', async (req, reply) => {
    const body = parse(PoolCreateBody, req.body, 'pool create body');
    return reply.code(201).send(await service.createPool(body));
  });

  app.post('/v1/osds/boot', async (req) => service.osdBoot(parse(OsdBootBody, req.body, 'OSD boot body')));

  app.post('/v1/osds/report', { bodyLimit: REPORT_BODY_BYTES_MAX }, async (req, reply) => {
    await service.osdReport(parse(OsdReportBody, req.body, 'OSD report body'));
    return reply.code(204).send();
  });

  app.post('/v1/osds/:id/out', async (req, reply) => {
    await service.osdOut(parse(OsdIdParams, req.params, 'OSD id').id);
    return reply.code(204).send();
  });

  app.post('/v1/osds/:id/in', async (req, reply) => {
    await service.osdIn(parse(OsdIdParams, req.params, 'OSD id').id);
    return reply.code(204).send();
  });

  app.delete('/v1/osds/:id', async (req, reply) => {
    await service.osdRm(parse(OsdIdParams, req.params, 'OSD id').id);
    return reply.code(204).send();
  });

  app.get('/v1/status', async () => service.status());

  // ---------- persistent reservations (pr-service.ts) ----------

  app.get('/v1/pr/watch', async (req, reply) => {
    const q = parse(PrWatchQuery, req.query, 'PR watch query');
    if (q.keys.length !== q.known.length) throw new TesseraError('ERR_INVALID', `bad PR watch query: ${q.keys.length} keys but ${q.known.length} known revs`);
    // As with /v1/map/wait: a gateway that hangs up stops waiting at once.
    const abort = new AbortController();
    const onClose = (): void => {
      if (!reply.raw.writableFinished) abort.abort();
    };
    reply.raw.once('close', onClose);
    try {
      const known = q.keys.map((k, i) => [k, q.known[i]] as const);
      return await service.pr.watchKeys(q.gateway, known, q.waitMs, abort.signal);
    } finally {
      reply.raw.off('close', onClose);
    }
  });

  app.get('/v1/pr/:key', async (req) => {
    const { key } = parse(PrKeyParams, req.params, 'PR key');
    const q = parse(PrGetQuery, req.query, 'PR query');
    return service.pr.get(key, q.gateway);
  });

  app.post('/v1/pr/:key/cas', { bodyLimit: PR_CAS_BODY_BYTES_MAX }, async (req) => {
    const { key } = parse(PrKeyParams, req.params, 'PR key');
    const body = parse(PrCasBody, req.body, 'PR compare-and-set body');
    return service.pr.compareAndSet(key, body.expectRev, body.state, body.op);
  });

  app.delete('/v1/pr/gateways/:id', async (req, reply) => {
    service.pr.release(parse(PrGatewayParams, req.params, 'gateway id').id);
    return reply.code(204).send();
  });

  return app;
}

export interface MonHttpServer {
  readonly host: string;
  /** The bound port (the real one when 0 was asked). */
  readonly port: number;
  close(): Promise<void>;
}

/** Builds the app and listens on host:port (default 127.0.0.1). */
export async function listenMonHttp(opts: MonHttpOptions & { host?: string; port: number }): Promise<MonHttpServer> {
  const host = opts.host ?? '127.0.0.1';
  const app = buildMonApp(opts);
  try {
    await app.listen({ host, port: opts.port });
  } catch (err) {
    await app.close().catch(() => undefined);
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') throw new TesseraError('ERR_ADDRESS_IN_USE', `monitor address ${host}:${opts.port} is in use`, { cause: err });
    throw err;
  }
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : opts.port;
  return { host, port, close: () => app.close() };
}
