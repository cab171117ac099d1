// Routes of the disk pools (issue 4): list/info/create/delete pools, add,
// fail, replace and remove devices, start a rebuild. Pool changes are
// mutations: they go through the API's one mutation queue, like volume
// changes. Long work (rebuild, drain) runs in the daemon; these routes start
// it and `GET /v1/pools/:name` reports its progress.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { parseBody, sizeBody } from './body.js';
import { ApiError } from './errors.js';
import type { PoolAdmin, PoolListResponse } from './types.js';

const CreatePoolBody = z.strictObject({
  name: z.string({ error: 'must be a string' }),
  devices: z.array(z.string().min(1)).min(1, 'give at least one device').max(64, 'at most 64 devices'),
  protection: z.enum(['mirror2', 'mirror3', 'raid5', 'raid6'], { error: 'must be mirror2, mirror3, raid5 or raid6' }),
  stripeWidth: z.int().min(1).max(30).optional(),
  deviceSizeBytes: sizeBody.optional(),
  alarms: z.strictObject({ warning: z.number().gt(0).lt(1), critical: z.number().gt(0).lte(1) }).optional(),
});
const PatchPoolBody = z.strictObject({ alarms: z.strictObject({ warning: z.number().gt(0).lt(1), critical: z.number().gt(0).lte(1) }) });
const PartitionBody = z.strictObject({
  path: z.string().min(1),
  count: z.int().min(1).max(32),
  iopsLimit: z.int().min(0).optional(),
  bandwidthBytesPerSec: sizeBody.optional(),
  deviceSizeBytes: sizeBody.optional(),
});
const DeviceBody = z.strictObject({ path: z.string().min(1), newPath: z.string().min(1).optional(), deviceSizeBytes: sizeBody.optional() });

export function addPoolRoutes(app: FastifyInstance, pools: PoolAdmin | undefined, mutate: <T>(fn: () => Promise<T>) => Promise<T>): void {
  const admin = (): PoolAdmin => {
    if (!pools) throw new ApiError('ERR_INVALID', 'this daemon has no disk pools (cluster gateways keep volumes on OSDs)', 400);
    return pools;
  };
  app.get('/v1/pools', async (): Promise<PoolListResponse> => ({ pools: admin().list() }));
  app.get<{ Params: { name: string } }>('/v1/pools/:name', async (req) => admin().info(req.params.name));
  app.post('/v1/pools', async (req, reply) => {
    const b = parseBody(CreatePoolBody, req.body);
    const info = await mutate(() => admin().create(b));
    return reply.code(201).send(info);
  });
  app.patch<{ Params: { name: string } }>('/v1/pools/:name', async (req) => {
    const b = parseBody(PatchPoolBody, req.body);
    return mutate(() => admin().setAlarms(req.params.name, b.alarms));
  });
  app.delete<{ Params: { name: string } }>('/v1/pools/:name', async (req, reply) => {
    await mutate(() => admin().delete(req.params.name));
    return reply.code(204).send();
  });
  app.post<{ Params: { name: string } }>('/v1/pools/:name/rebuild', async (req) => mutate(async () => admin().rebuild(req.params.name)));
  app.post<{ Params: { name: string } }>('/v1/pools/:name/devices', async (req) => {
    const b = parseBody(DeviceBody, req.body);
    return mutate(() => admin().addDevice(req.params.name, b.path, b.deviceSizeBytes));
  });
  app.post('/v1/devices/partition', async (req) => {
    const b = parseBody(PartitionBody, req.body);
    return mutate(() => admin().partition(b.path, b));
  });
  app.post<{ Params: { action: string } }>('/v1/devices/:action', async (req) => {
    const b = parseBody(DeviceBody, req.body);
    const a = admin();
    switch (req.params.action) {
      case 'fail':
        return mutate(() => a.failDevice(b.path));
      case 'remove':
        return mutate(() => a.removeDevice(b.path));
      case 'replace':
        if (b.newPath === undefined) throw new ApiError('ERR_INVALID', 'bad request body: replace needs "newPath"', 400);
        return mutate(() => a.replaceDevice(b.path, b.newPath!, b.deviceSizeBytes));
      default:
        throw new ApiError('ERR_NO_ROUTE', `no device action "${req.params.action}" (fail, remove, replace)`, 404);
    }
  });
}
