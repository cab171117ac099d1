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
}
