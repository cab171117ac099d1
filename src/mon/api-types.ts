// What daemons and the client library ask of the monitor. The HTTP client
// (src/mon/client.ts) implements MonApi against the active monitor (it tries
// every configured monitor address and follows the active one); tests and the
// simulation implement it in memory.
import type { ClusterMap, OsdReport, PoolRecord, VolumeRecord } from './map-types.js';

export interface OsdBootRequest {
  uuid: string;
  host: string;
  addr: string;
  port: number;
  weight: number;
  capacityBytes: number;
}

export interface PoolCreateRequest {
  name: string;
  size: number;
  minSize: number;
  pgCount: number;
  failureDomain?: 'host' | 'osd';
  /** Power of two in [64 KiB, 64 MiB]; default 4 MiB (map.ts OBJECT_SIZE_BYTES_DEFAULT). */
  objectSizeBytes?: number;
}

export interface ClusterStatus {
  fsid: string;
  epoch: number;
  /** HEALTH_OK, HEALTH_WARN (degraded/recovering/down OSDs), HEALTH_ERR (inactive PGs). */
  health: 'HEALTH_OK' | 'HEALTH_WARN' | 'HEALTH_ERR';
  /** Human-readable reasons for a health other than OK. */
  checks: string[];
  monitors: { id: string; active: boolean }[];
  /** leaderPgs: PGs whose raft leader this OSD is (by the freshest reports). */
  osds: { id: number; host: string; addr: string; port: number; up: boolean; in: boolean; capacityBytes: number; usedBytes: number; leaderPgs: number }[];
  /** Count of PGs per state (PgReport.state), plus 'unknown' for PGs no OSD reported. */
  pgStates: Record<string, number>;
  capacity: { totalBytes: number; usedBytes: number };
  recovery: { pgsRecovering: number; bytesLeft: number };
  /** PG replicas on up OSDs still repairing a raft log the WAL found damaged (OsdReport.repairingReplicas). */
  replicasRepairing: number;
  pools: { id: number; name: string; size: number; minSize: number; pgCount: number }[];
  volumes: number;
}

export interface MonApi {
  /** The current map of the active monitor. */
  getMap(): Promise<ClusterMap>;
  /** Long poll: a map with epoch > afterEpoch, or null when none came within waitMs. */
  waitMap(afterEpoch: number, waitMs: number): Promise<ClusterMap | null>;
  createVolume(req: { name: string; sizeBytes: number; pool?: string }): Promise<VolumeRecord>;
  resizeVolume(name: string, sizeBytes: number): Promise<VolumeRecord>;
  renameVolume(name: string, newName: string): Promise<VolumeRecord>;
  deleteVolume(name: string): Promise<void>;
  createPool(req: PoolCreateRequest): Promise<PoolRecord>;
  /** Registers (or re-registers, same uuid → same id) an OSD and marks it up. */
  osdBoot(req: OsdBootRequest): Promise<{ osdId: number; map: ClusterMap }>;
  /** Heartbeat with PG states; keeps the OSD up. */
  osdReport(report: OsdReport): Promise<void>;
  osdOut(osdId: number): Promise<void>;
  osdIn(osdId: number): Promise<void>;
  /** Removes an OSD that is out (and holds no PG); ERR_BUSY otherwise. */
  osdRm(osdId: number): Promise<void>;
  status(): Promise<ClusterStatus>;
}

// ---------- persistent reservations (pr-service.ts; gateway/scsi/pr-store-cluster.ts) ----------

/** One volume's PR record on the wire: the same shape as gateway/scsi/types.ts PrRecord. */
export interface PrRecordWire {
  /** 0 = never written (state null); +1 on every successful compare-and-set. */
  rev: number;
  /** Opaque JSON owned by gateway/scsi/pr.ts. */
  state: unknown;
}

/** GET /v1/pr/:key[?gateway=ID]: the record, and the monitor's gateway lease. */
export interface PrGetAnswer extends PrRecordWire {
  leaseMs: number;
}

/** GET /v1/pr/watch: the followed records newer than the gateway acknowledged (possibly none). */
export interface PrWatchAnswer {
  /** The lease this monitor grants per request; the gateway measures its validity with it. */
  leaseMs: number;
  records: Array<PrRecordWire & { key: string }>;
}

/** POST /v1/pr/:key/cas. */
export interface PrCasRequest {
  expectRev: number;
  state: unknown;
  /** Unique id of this operation: a retry of an applied CAS answers ok instead of a conflict. */
  op?: string;
}

export type PrCasAnswer = { ok: true; rev: number } | { ok: false; current: PrRecordWire };
