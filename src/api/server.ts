// The management API (SPEC MGT2, VOL1): volumes, devices, stats and status over
// HTTP/JSON, served by fastify on the daemon's unix socket and, optionally, on
// 127.0.0.1:PORT. The CLI (`tessera volume ...`, `iostat`, `status`) uses it.
//
// Invariants:
// - Every failure is JSON {code, message} with the status from api/errors.ts.
// - Mutations (create/resize/rename/delete) run one at a time, in arrival
//   order, through a bounded queue: a PATCH that resizes then renames cannot
//   interleave with a DELETE of the same volume.
// - Access control: the unix socket is chmod 0600 (only its owner can connect);
//   on the TCP listener, mutating routes need `Authorization: Bearer <token>`
//   (compared in constant time), reads are open to local processes.
import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { z } from 'zod';
import { isTesseraError } from '../stdx/errors.js';
import type { Logger } from '../stdx/log.js';
import { VOLUME_NAME_RE, type VolumeStore } from '../volume/types.js';
import { chmodPrivate } from '../io/node/api-files.js';
import { ApiError, HTTP_STATUS_OF_CODE, type ApiErrorBody, type ApiErrorCode } from './errors.js';
import { parseBody, sizeBody } from './body.js';
import { addPoolRoutes } from './pool-routes.js';
import { addIscsiRoutes } from './iscsi-routes.js';
import type { DaemonStatus, DeviceListResponse, IscsiAdmin, PoolAdmin, StatusResponse, VolumeListResponse, VolumeTotals } from './types.js';
import { TESSERA_VERSION } from '../main/version.js';

/** Request bodies are tiny JSON objects. */
const BODY_BYTES_MAX = 64 * 1024;
/** Mutations waiting for their turn; beyond this the API answers ERR_LIMIT (429). */
const MUTATIONS_QUEUED_MAX = 64;

export interface ApiOptions {
  store: VolumeStore;
  /** The daemon's disk pools (absent on cluster gateways). */
  pools?: PoolAdmin;
  /** iSCSI targets (absent when the daemon serves no iSCSI). */
  iscsi?: IscsiAdmin;
  log?: Logger;
  /** Daemon details for GET /v1/status (data dir, NBD endpoint). */
  status?: () => DaemonStatus | undefined;
  /** Wall clock (ms), injectable for tests. */
  nowMs?: () => number;
}

const CreateBody = z.strictObject({ name: z.string({ error: 'must be a string' }), sizeBytes: sizeBody, pool: z.string({ error: 'must be a string' }).optional() });
const PatchBody = z
  .strictObject({ sizeBytes: sizeBody.optional(), newName: z.string({ error: 'must be a string' }).optional(), discardData: z.boolean({ error: 'must be true or false' }).optional() })
  .refine((b) => b.sizeBytes !== undefined || b.newName !== undefined, { message: 'nothing to change: give sizeBytes and/or newName' });

/** Serializes mutations; bounded so a flood of requests cannot grow memory without limit. */
class MutationQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private queued = 0;
  run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.queued >= MUTATIONS_QUEUED_MAX) {
      return Promise.reject(new ApiError('ERR_LIMIT', `too many volume operations in progress (${MUTATIONS_QUEUED_MAX}); retry later`, 429));
    }
    this.queued++;
    const result = this.tail.then(fn);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result.finally(() => {
      this.queued--;
    });
  }
}

/**
 * Build the fastify app with every route (not listening). `writeToken`, when
 * set, is required as a bearer token on POST/PATCH/DELETE.
 */
export function buildApi(opts: ApiOptions & { writeToken?: string }): FastifyInstance {
  const { store } = opts;
  const nowMs = opts.nowMs ?? (() => Date.now());
  const startedAtMs = nowMs();
  const queue = new MutationQueue();
  const app = Fastify({ logger: false, bodyLimit: BODY_BYTES_MAX, forceCloseConnections: true, return503OnClosing: true });

  if (opts.writeToken !== undefined) {
    const expected = Buffer.from(`Bearer ${opts.writeToken}`);
    app.addHook('onRequest', async (req: FastifyRequest) => {
      if (req.method === 'GET' || req.method === 'HEAD') return;
      const given = Buffer.from(req.headers.authorization ?? '');
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        throw new ApiError('ERR_UNAUTHORIZED', 'this route needs "Authorization: Bearer <token>" (the token is in <dataDir>/api.token)', 401);
      }
    });
  }

  app.setNotFoundHandler((req, reply) => {
    void sendError(reply, 'ERR_NO_ROUTE', `no route ${req.method} ${req.url}`);
  });

  app.setErrorHandler((err: FastifyError | Error, req, reply) => {
    if (err instanceof ApiError) return sendError(reply, err.code, err.message);
    if (isTesseraError(err)) return sendError(reply, err.code, err.message);
    const statusCode = (err as FastifyError).statusCode;
    if (statusCode !== undefined && statusCode >= 400 && statusCode < 500) {
      // fastify's own rejections: bad JSON, body too large, wrong content type
      return sendError(reply, 'ERR_INVALID', err.message, statusCode);
    }
    opts.log?.error(`${req.method} ${req.url} failed: ${err.stack ?? err.message}`);
    return sendError(reply, 'ERR_INTERNAL', `internal error: ${err.message}`);
  });

  const totals = (): VolumeTotals => {
    const t: VolumeTotals = { count: 0, sizeBytes: 0, usedBytes: 0 };
    for (const v of store.list()) {
      t.count++;
      t.sizeBytes += v.sizeBytes;
      t.usedBytes += v.usedBytes;
    }
    return t;
  };

  app.get('/v1/volumes', async (): Promise<VolumeListResponse> => {
    const volumes = store.list();
    return { volumes, totals: totals() };
  });

  app.get<{ Params: { name: string } }>('/v1/volumes/:name', async (req) => store.info(req.params.name));

  app.post('/v1/volumes', async (req, reply) => {
    const body = parseBody(CreateBody, req.body);
    if (body.pool !== undefined && !opts.pools) throw new ApiError('ERR_INVALID', 'this daemon has no disk pools: leave out "pool"', 400);
    const info = await queue.run(() => store.create(body.name, body.sizeBytes, body.pool === undefined ? undefined : { pool: body.pool }));
    opts.log?.info(`created volume ${info.name} (${info.sizeBytes} bytes)${info.pool ? ` in pool ${info.pool}` : ''}`);
    return reply.code(201).send(info);
  });

  app.patch<{ Params: { name: string } }>('/v1/volumes/:name', async (req) => {
    const body = parseBody(PatchBody, req.body);
    const name = req.params.name;
    return queue.run(async () => {
      store.info(name); // ERR_NOT_FOUND before anything changes
      // The rename is checked up front so that a resize is never applied when the rename would then fail.
      if (body.newName !== undefined && !VOLUME_NAME_RE.test(body.newName)) {
        throw new ApiError('ERR_INVALID', `bad volume name "${body.newName}": 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit`, 400);
      }
      if (body.newName !== undefined && body.newName !== name && store.list().some((v) => v.name === body.newName)) {
        throw new ApiError('ERR_EXISTS', `volume "${body.newName}" already exists`, 409);
      }
      let info = store.info(name);
      if (body.sizeBytes !== undefined && body.sizeBytes !== info.sizeBytes) {
        info = await store.resize(name, body.sizeBytes, { discardData: body.discardData === true });
        opts.log?.info(`resized volume ${name} to ${info.sizeBytes} bytes`);
      }
      if (body.newName !== undefined && body.newName !== name) {
        info = await store.rename(name, body.newName);
        opts.log?.info(`renamed volume ${name} to ${info.name}`);
      }
      return info;
    });
  });

  app.delete<{ Params: { name: string } }>('/v1/volumes/:name', async (req, reply) => {
    const name = req.params.name;
    await queue.run(() => store.delete(name));
    opts.log?.info(`deleted volume ${name}`);
    return reply.code(204).send();
  });

  addPoolRoutes(app, opts.pools, (fn) => queue.run(fn));
  addIscsiRoutes(app, opts.iscsi, (fn) => queue.run(fn));

  app.get('/v1/devices', async (): Promise<DeviceListResponse> => ({ devices: store.devices() }));

  app.get('/v1/stats', async () => store.stats());

  app.get('/v1/status', async (): Promise<StatusResponse> => {
    const devices = store.devices();
    const now = nowMs();
    return {
      version: TESSERA_VERSION,
      pid: process.pid,
      startedAt: new Date(startedAtMs).toISOString(),
      uptimeS: Math.max(0, Math.round((now - startedAtMs) / 1000)),
      volumes: totals(),
      devices: {
        count: devices.length,
        sizeBytes: sum(devices.map((d) => d.sizeBytes)),
        chunksTotal: sum(devices.map((d) => d.chunksTotal)),
        chunksUsed: sum(devices.map((d) => d.chunksUsed)),
        ioErrors: sum(devices.map((d) => d.ioErrors)),
        checksumErrors: sum(devices.map((d) => d.checksumErrors)),
      },
      daemon: opts.status?.(),
      ...(opts.pools
        ? {
            pools: opts.pools.list().map((p) => ({
              name: p.name,
              protection: p.protection,
              state: p.state,
              alarm: p.capacity.alarm,
              usedFraction: p.capacity.usedFraction,
              job: p.rebuild?.running ? p.rebuild.kind : null,
            })),
          }
        : {}),
    };
  });

  return app;
}

function sendError(reply: FastifyReply, code: ApiErrorCode, message: string, status?: number): FastifyReply {
  const body: ApiErrorBody = { code, message };
  return reply.code(status ?? HTTP_STATUS_OF_CODE[code]).send(body);
}

function sum(values: number[]): number {
  let s = 0;
  for (const v of values) s += v;
  return s;
}

/** The running API: one app on the unix socket, and one on 127.0.0.1 if a port was asked for. */
export class ApiServer {
  private constructor(
    private readonly apps: FastifyInstance[],
    readonly socketPath: string,
    /** The bound TCP port (the real one when 0 was asked), or undefined. */
    readonly tcpPort: number | undefined,
  ) {}

  /**
   * Listen on `socketPath` (the caller removes a stale socket file first) and,
   * if `tcp` is given, on 127.0.0.1:tcp.port with `tcp.token` guarding writes.
   */
  static async start(opts: ApiOptions & { socketPath: string; tcp?: { port: number; token: string } }): Promise<ApiServer> {
    const apps: FastifyInstance[] = [];
    try {
      const unixApp = buildApi(opts);
      apps.push(unixApp);
      await unixApp.listen({ path: opts.socketPath });
      await chmodPrivate(opts.socketPath);
      let tcpPort: number | undefined;
      if (opts.tcp) {
        const tcpApp = buildApi({ ...opts, writeToken: opts.tcp.token });
        apps.push(tcpApp);
        await tcpApp.listen({ host: '127.0.0.1', port: opts.tcp.port });
        const addr = tcpApp.server.address();
        tcpPort = typeof addr === 'object' && addr !== null ? addr.port : opts.tcp.port;
      }
      return new ApiServer(apps, opts.socketPath, tcpPort);
    } catch (err) {
      await Promise.allSettled(apps.map((a) => a.close()));
      throw err;
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.apps.map((a) => a.close()));
  }
}
