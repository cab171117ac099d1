// Typed client of the management API (api/server.ts), used by the CLI. It talks
// HTTP/JSON over the daemon's unix socket (or 127.0.0.1:PORT) through
// io/node/httpclient.ts.
//
// Invariants: every failure is an ApiError with a stable code — the server's
// code for API errors, ERR_UNREACHABLE when nothing answers (socket missing,
// connection refused, timeout), so the CLI can map codes to exit statuses.
import { httpJson, HttpTransportError, type HttpTarget } from '../io/node/httpclient.js';
import { ApiError, isApiErrorCode } from './errors.js';
import type {
  IscsiChapRequest,
  IscsiTargetInfo,
  IscsiTargetListResponse,
  CreatePoolRequest,
  CreateVolumeRequest,
  DeviceListResponse,
  DeviceRequest,
  PoolInfo,
  PoolListResponse,
  PatchPoolRequest,
  PartitionRequest,
  PartitionResponse,
  PatchVolumeRequest,
  StatsSnapshot,
  StatusResponse,
  VolumeInfo,
  VolumeListResponse,
} from './types.js';

export const API_TIMEOUT_MS_DEFAULT = 30_000;

export interface ApiClientOptions {
  target: HttpTarget;
  /** Bearer token for mutating routes on the TCP listener. */
  token?: string;
  timeoutMs?: number;
}

export class ApiClient {
  constructor(private readonly opts: ApiClientOptions) {}

  /** Where this client connects, for messages. */
  describeTarget(): string {
    const t = this.opts.target;
    return 'socketPath' in t ? t.socketPath : `http://${t.host}:${t.port}`;
  }

  listVolumes(): Promise<VolumeListResponse> {
    return this.call('GET', '/v1/volumes');
  }
  getVolume(name: string): Promise<VolumeInfo> {
    return this.call('GET', `/v1/volumes/${encodeURIComponent(name)}`);
  }
  createVolume(req: CreateVolumeRequest): Promise<VolumeInfo> {
    return this.call('POST', '/v1/volumes', req);
  }
  patchVolume(name: string, req: PatchVolumeRequest): Promise<VolumeInfo> {
    return this.call('PATCH', `/v1/volumes/${encodeURIComponent(name)}`, req);
  }
  async deleteVolume(name: string): Promise<void> {
    await this.call('DELETE', `/v1/volumes/${encodeURIComponent(name)}`);
  }
  devices(): Promise<DeviceListResponse> {
    return this.call('GET', '/v1/devices');
  }
  listPools(): Promise<PoolListResponse> {
    return this.call('GET', '/v1/pools');
  }
  getPool(name: string): Promise<PoolInfo> {
    return this.call('GET', `/v1/pools/${encodeURIComponent(name)}`);
  }
  createPool(req: CreatePoolRequest): Promise<PoolInfo> {
    return this.call('POST', '/v1/pools', req);
  }
  patchPool(name: string, req: PatchPoolRequest): Promise<PoolInfo> {
    return this.call('PATCH', `/v1/pools/${encodeURIComponent(name)}`, req);
  }
  async deletePool(name: string): Promise<void> {
    await this.call('DELETE', `/v1/pools/${encodeURIComponent(name)}`);
  }
  rebuildPool(name: string): Promise<PoolInfo> {
    return this.call('POST', `/v1/pools/${encodeURIComponent(name)}/rebuild`, {});
  }
  addDevice(pool: string, req: DeviceRequest): Promise<PoolInfo> {
    return this.call('POST', `/v1/pools/${encodeURIComponent(pool)}/devices`, req);
  }
  partitionDevice(req: PartitionRequest): Promise<PartitionResponse> {
    return this.call('POST', '/v1/devices/partition', req);
  }
  deviceAction(action: 'fail' | 'remove' | 'replace', req: DeviceRequest): Promise<PoolInfo> {
    return this.call('POST', `/v1/devices/${action}`, req);
  }
  iscsiTargets(): Promise<IscsiTargetListResponse> {
    return this.call('GET', '/v1/iscsi/targets');
  }
  createIscsiTarget(req: { name: string; alias?: string; initiators?: string[]; chap?: IscsiChapRequest | null }): Promise<IscsiTargetInfo> {
    return this.call('POST', '/v1/iscsi/targets', req);
  }
  async deleteIscsiTarget(name: string): Promise<void> {
    await this.call('DELETE', `/v1/iscsi/targets/${encodeURIComponent(name)}`);
  }
  mapIscsiLun(target: string, req: { volume: string; lun?: number }): Promise<IscsiTargetInfo> {
    return this.call('POST', `/v1/iscsi/targets/${encodeURIComponent(target)}/luns`, req);
  }
  unmapIscsiLun(target: string, lun: number): Promise<IscsiTargetInfo> {
    return this.call('DELETE', `/v1/iscsi/targets/${encodeURIComponent(target)}/luns/${lun}`);
  }
  setIscsiInitiators(target: string, initiators: string[]): Promise<IscsiTargetInfo> {
    return this.call('PUT', `/v1/iscsi/targets/${encodeURIComponent(target)}/initiators`, { initiators });
  }
  setIscsiChap(target: string, chap: IscsiChapRequest | null): Promise<IscsiTargetInfo> {
    return this.call('PUT', `/v1/iscsi/targets/${encodeURIComponent(target)}/chap`, { chap });
  }
  stats(): Promise<StatsSnapshot> {
    return this.call('GET', '/v1/stats');
  }
  status(): Promise<StatusResponse> {
    return this.call('GET', '/v1/status');
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.opts.token !== undefined) headers.authorization = `Bearer ${this.opts.token}`;
    let res;
    try {
      res = await httpJson(this.opts.target, method, path, body, { timeoutMs: this.opts.timeoutMs ?? API_TIMEOUT_MS_DEFAULT, headers });
    } catch (err) {
      throw unreachable(this.describeTarget(), err);
    }
    if (res.status >= 200 && res.status < 300) return res.body as T;
    const b = res.body as { code?: unknown; message?: unknown } | undefined;
    const code = isApiErrorCode(b?.code) ? b.code : 'ERR_INTERNAL';
    const message = typeof b?.message === 'string' ? b.message : `HTTP ${res.status} from ${method} ${path}`;
    throw new ApiError(code, message, res.status);
  }
}

function unreachable(where: string, err: unknown): ApiError {
  const code = err instanceof HttpTransportError ? err.code : 'EUNKNOWN';
  const why =
    code === 'ENOENT'
      ? 'no socket there'
      : code === 'ECONNREFUSED'
        ? 'connection refused (a stale socket of a stopped daemon?)'
        : code === 'EACCES'
          ? 'permission denied (the socket belongs to another user)'
          : (err as Error).message;
  return new ApiError('ERR_UNREACHABLE', `cannot reach the tessera daemon at ${where}: ${why}`, 0, { cause: err });
}
