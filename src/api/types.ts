// Shapes of the management API's JSON bodies, shared by the server
// (api/server.ts) and the client (api/client.ts) so both sides compile
// against one contract. Sizes are bytes (JS numbers, safe to 8 PiB).
import type { DeviceInfo, StatsSnapshot, VolumeInfo } from '../volume/types.js';

export type { DeviceInfo, StatsSnapshot, VolumeInfo };

export interface VolumeTotals {
  count: number;
  sizeBytes: number;
  usedBytes: number;
}

/** GET /v1/volumes */
export interface VolumeListResponse {
  volumes: VolumeInfo[];
  totals: VolumeTotals;
}

/** GET /v1/devices */
export interface DeviceListResponse {
  devices: DeviceInfo[];
}

/** POST /v1/volumes (sizeBytes may also be a size string such as "10G"). */
export interface CreateVolumeRequest {
  name: string;
  sizeBytes: number | string;
  /** The pool to hold it (default: the data dir's own device). */
  pool?: string;
}

/** PATCH /v1/volumes/:name — at least one of sizeBytes / newName. */
export interface PatchVolumeRequest {
  sizeBytes?: number | string;
  newName?: string;
  /** Allow shrinking below written data (the data past the new end is lost). */
  discardData?: boolean;
}

/** What the daemon wiring (main/up.ts) adds to GET /v1/status. */
export interface DaemonStatus {
  dataDir: string;
  nbd: { host: string; port: number; uris: string[] };
  iscsi?: { host: string; port: number; uris: string[] };
  api: { socket: string; port: number | undefined };
  device: { path: string };
}

/** GET /v1/status */
export interface StatusResponse {
  version: string;
  pid: number;
  startedAt: string;
  uptimeS: number;
  volumes: VolumeTotals;
  devices: {
    count: number;
    sizeBytes: number;
    chunksTotal: number;
    chunksUsed: number;
    ioErrors: number;
    checksumErrors: number;
  };
  daemon?: DaemonStatus;
  /** Disk pools in short (single-machine daemons). */
  pools?: Array<{ name: string; protection: string; state: string; alarm: string; usedFraction: number; job: string | null }>;
}

/** A member device of a pool, as `tessera pool info` shows it. */
export interface PoolMemberInfo {
  index: number;
  /** Device path ('' when the daemon does not know it: a member missing since before this start). */
  path: string;
  /** ok: in service; draining: being removed; failed: out of service, its chunks still to rebuild; out: out of service and empty; missing: not found at start. */
  state: 'ok' | 'draining' | 'failed' | 'out' | 'missing';
  chunksUsed: number;
  chunksTotal: number;
  /** Bytes written relative to the device's rated endurance (0..1+). */
  wear: number;
}

export interface PoolRebuildInfo {
  running: boolean;
  /** What the job does: restore lost chunks, move a removed device's chunks, or widen narrow containers. */
  kind: 'rebuild' | 'drain' | 'widen';
  containersTotal: number;
  containersDone: number;
  unrecoverable: number;
  noRoom: number;
  bytesTotal: number;
  bytesDone: number;
  etaMs: number | null;
  elapsedMs: number;
  /** Set when the last job failed. */
  error?: string;
}

/** GET /v1/pools/:name */
export interface PoolInfo {
  name: string;
  /** none: the data dir's own device (no redundancy). */
  protection: 'none' | 'mirror2' | 'mirror3' | 'raid5' | 'raid6';
  /** online: full redundancy; degraded: some containers lost chunks; offline: could not be opened (see error). */
  state: 'online' | 'degraded' | 'offline';
  error?: string;
  /** Data + parity chunks of a full-width container, e.g. 4+2 (1+1 for mirror2). */
  stripe: { data: number; parity: number };
  chunkBytes: number;
  sizeBytes: number;
  capacity: { usedChunks: number; totalChunks: number; usedFraction: number; alarm: 'ok' | 'warning' | 'critical'; thresholds: AlarmThresholds };
  volumes: number;
  containers: number;
  /** Containers narrower than the stripe (made while devices were short; widened when there is room). */
  narrowed: number;
  /** Containers lacking one chunk, and two or more. */
  degraded: { one: number; more: number };
  repairedBlocks: number;
  members: PoolMemberInfo[];
  rebuild: PoolRebuildInfo | null;
}

/** Used-capacity fractions that raise a pool's warning and critical alarms. */
export interface AlarmThresholds {
  warning: number;
  critical: number;
}

/** GET /v1/pools */
export interface PoolListResponse {
  pools: PoolInfo[];
}

/** POST /v1/pools */
export interface CreatePoolRequest {
  name: string;
  /** Absolute paths of files or block devices; a missing file is created sparse with deviceSizeBytes. */
  devices: string[];
  protection: 'mirror2' | 'mirror3' | 'raid5' | 'raid6';
  /** Data chunks per container (raid5/raid6). */
  stripeWidth?: number;
  deviceSizeBytes?: number | string;
  alarms?: AlarmThresholds;
}

/** PATCH /v1/pools/:name */
export interface PatchPoolRequest {
  alarms: AlarmThresholds;
}

/** POST /v1/pools/:name/devices (add), /v1/devices/fail|remove|replace */
export interface DeviceRequest {
  path: string;
  /** replace: the new device. */
  newPath?: string;
  /** Size of a new sparse file when the path does not exist. */
  deviceSizeBytes?: number | string;
}

/** POST /v1/devices/partition */
export interface PartitionRequest {
  path: string;
  count: number;
  /** Per partition; 0 or absent: unlimited. */
  iopsLimit?: number;
  bandwidthBytesPerSec?: number | string;
  deviceSizeBytes?: number | string;
}

export interface PartitionResponse {
  path: string;
  partitions: Array<{ name: string; path: string; startBytes: number; sizeBytes: number; iopsLimit: number; bandwidthBytesPerSec: number }>;
}

/** What the API needs from the daemon's pools (main/pools.ts). */
export interface PoolAdmin {
  list(): PoolInfo[];
  info(name: string): PoolInfo;
  create(req: { name: string; devices: string[]; protection: CreatePoolRequest['protection']; stripeWidth?: number; deviceSizeBytes?: number; alarms?: AlarmThresholds }): Promise<PoolInfo>;
  setAlarms(name: string, alarms: AlarmThresholds): Promise<PoolInfo>;
  delete(name: string): Promise<void>;
  addDevice(pool: string, path: string, deviceSizeBytes?: number): Promise<PoolInfo>;
  failDevice(path: string): Promise<PoolInfo>;
  replaceDevice(path: string, newPath: string, deviceSizeBytes?: number): Promise<PoolInfo>;
  removeDevice(path: string): Promise<PoolInfo>;
  partition(path: string, o: { count: number; iopsLimit?: number; bandwidthBytesPerSec?: number; deviceSizeBytes?: number }): Promise<PartitionResponse>;
  /** Starts a rebuild unless one runs; returns the pool with its progress. */
  rebuild(name: string): PoolInfo;
}

/** An iSCSI target as `tessera iscsi target list` shows it. */
export interface IscsiTargetInfo {
  name: string;
  alias?: string;
  /** The implicit target that maps every volume. */
  isDefault: boolean;
  luns: Array<{ lun: number; volume: string; sizeBytes: number }>;
  /** Initiators allowed to log in; empty = any. */
  initiators: string[];
  /** CHAP user names (secrets are never shown). */
  chap: { user: string; mutualUser?: string } | null;
  /** Sessions logged in to this target through this gateway. */
  sessions: number;
}

/** GET /v1/iscsi/targets */
export interface IscsiTargetListResponse {
  portal: { host: string; port: number };
  targets: IscsiTargetInfo[];
}

export interface IscsiChapRequest {
  user: string;
  secret: string;
  mutualUser?: string;
  mutualSecret?: string;
}

/** The iSCSI side of the daemon, as the API drives it (main/iscsi.ts). */
export interface IscsiAdmin {
  list(): IscsiTargetListResponse;
  createTarget(req: { name: string; alias?: string; initiators?: string[]; chap?: IscsiChapRequest | null }): Promise<IscsiTargetInfo>;
  /** Ends the target's sessions, then forgets it. */
  deleteTarget(name: string): Promise<void>;
  mapLun(target: string, volume: string, lun?: number): Promise<IscsiTargetInfo>;
  unmapLun(target: string, lun: number): Promise<IscsiTargetInfo>;
  setInitiators(target: string, initiators: string[]): Promise<IscsiTargetInfo>;
  setChap(target: string, chap: IscsiChapRequest | null): Promise<IscsiTargetInfo>;
}
