// Routes of the iSCSI targets (issue 5): list targets, create and delete them,
// map volumes to LUNs, set the initiator ACL and CHAP credentials. Every change
// is a mutation and goes through the API's one mutation queue; the daemon
// persists it in <data-dir>/iscsi.json before answering.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { parseBody } from './body.js';
import { ApiError } from './errors.js';
import type { IscsiAdmin } from './types.js';

const Chap = z.strictObject({
  user: z.string().min(1).max(255),
  secret: z.string().min(1).max(255),
  mutualUser: z.string().min(1).max(255).optional(),
  mutualSecret: z.string().min(1).max(255).optional(),
});
const CreateTargetBody = z.strictObject({
  name: z.string({ error: 'must be a string' }).max(223),
  alias: z.string().max(255).optional(),
  initiators: z.array(z.string().max(223)).max(256).optional(),
  chap: Chap.nullable().optional(),
});
const LunBody = z.strictObject({ volume: z.string({ error: 'must be a string' }).max(64), lun: z.int().min(0).max(16383).optional() });
const InitiatorsBody = z.strictObject({ initiators: z.array(z.string().max(223)).max(256) });
const ChapBody = z.strictObject({ chap: Chap.nullable() });

export function addIscsiRoutes(app: FastifyInstance, iscsi: IscsiAdmin | undefined, mutate: <T>(fn: () => Promise<T>) => Promise<T>): void {
  const admin = (): IscsiAdmin => {
    if (!iscsi) throw new ApiError('ERR_INVALID', 'this daemon serves no iSCSI (started with --iscsi-port off)', 400);
    return iscsi;
  };
  const lunParam = (s: string): number => {
    const n = Number(s);
    if (!/^\d+$/.test(s) || n > 16383) throw new ApiError('ERR_INVALID', `LUN must be 0..16383, got "${s}"`, 400);
    return n;
  };
  app.get('/v1/iscsi/targets', async () => admin().list());
  app.post('/v1/iscsi/targets', async (req, reply) => {
    const b = parseBody(CreateTargetBody, req.body);
    const info = await mutate(() => admin().createTarget(b));
    return reply.code(201).send(info);
  });
  app.delete<{ Params: { name: string } }>('/v1/iscsi/targets/:name', async (req, reply) => {
    await mutate(() => admin().deleteTarget(req.params.name));
    return reply.code(204).send();
  });
  app.post<{ Params: { name: string } }>('/v1/iscsi/targets/:name/luns', async (req) => {
    const b = parseBody(LunBody, req.body);
    return mutate(() => admin().mapLun(req.params.name, b.volume, b.lun));
  });
  app.delete<{ Params: { name: string; lun: string } }>('/v1/iscsi/targets/:name/luns/:lun', async (req) => {
    const lun = lunParam(req.params.lun);
    return mutate(() => admin().unmapLun(req.params.name, lun));
  });
  app.put<{ Params: { name: string } }>('/v1/iscsi/targets/:name/initiators', async (req) => {
    const b = parseBody(InitiatorsBody, req.body);
    return mutate(() => admin().setInitiators(req.params.name, b.initiators));
  });
  app.put<{ Params: { name: string } }>('/v1/iscsi/targets/:name/chap', async (req) => {
    const b = parseBody(ChapBody, req.body);
    return mutate(() => admin().setChap(req.params.name, b.chap));
  });
}
