// The cluster map (SPEC CLU1): hosts/OSDs, pools, PG acting sets and volumes,
// versioned by `epoch`. The active monitor is the only writer; OSDs, gateways
// and clients hold a copy and follow newer epochs. Plain data (JSON-safe), so
// it is stored as one value in the MetaStore and served as JSON by the monitor.
//
// Invariants:
// - epoch increases by one with every change the monitor commits.
// - pgs[poolId][k].pg === k; pgs[poolId].length === pool.pgCount.
// - A PG's `epoch` is the map epoch at which its acting set last changed (or its
//   pool was created); it only grows. Requests and raft messages carry it
//   (osd/proto.ts) and are refused on mismatch.
// - osds[].id are positive (they are raft node ids); ids are never reused.
// - Volume ids are positive and never reused; names are unique.
// - Nothing per-IO (statistics, PG progress) lives here: those are reported to
//   the monitor's memory only (OsdReport) — see SPEC CLU1 on etcd load.

export interface OsdRecord {
  id: number;
  /** Identity of the OSD's data dir; a boot with the same uuid gets the same id. */
  uuid: string;
  /** Failure-domain host name. */
  host: string;
  /** RPC listen address. */
  addr: string;
  port: number;
  /** Placement weight (1 = one unit; 0 holds nothing). */
  weight: number;
  /** Heartbeats arrive. */
  up: boolean;
  /** Part of data placement. */
  in: boolean;
  /** Set by `tessera osd out`: stays out until `osd in`, whatever its heartbeats. */
  outByOperator?: boolean;
  capacityBytes: number;
}

export interface PoolRecord {
  id: number;
  name: string;
  type: 'replicated';
  /** Replicas per PG. */
  size: number;
  /** Fewer healthy replicas than this: the PG stops accepting writes (raft quorum gives ceil((size+1)/2)). */
  minSize: number;
  /** Power of two. */
  pgCount: number;
  failureDomain: 'host' | 'osd';
  objectSizeBytes: number;
  createdEpoch: number;
}

export interface PgRecord {
  pg: number;
  /** Target acting set, primary (preferred leader) first. */
  osds: number[];
  /** Map epoch of the last change of `osds`. */
  epoch: number;
}

export interface VolumeRecord {
  id: number;
  name: string;
  poolId: number;
  sizeBytes: number;
  createdAt: string;
}

export interface ClusterMap {
  fsid: string;
  epoch: number;
  osds: OsdRecord[];
  pools: PoolRecord[];
  /** Keyed by pool id (decimal string, JSON object key). */
  pgs: Record<string, PgRecord[]>;
  volumes: VolumeRecord[];
  nextOsdId: number;
  nextPoolId: number;
  nextVolumeId: number;
}

/** What a PG replica reports to the monitor with each OSD heartbeat. */
export interface PgReport {
  poolId: number;
  pg: number;
  role: 'leader' | 'follower' | 'candidate' | 'learner' | 'joining';
  term: number;
  leader: number;
  commitIndex: number;
  appliedIndex: number;
  voters: number[];
  learners: number[];
  /**
   * active: a leader with all target replicas in its config and caught up;
   * degraded: serving, but fewer caught-up replicas than the pool size;
   * recovering: a learner is being caught up (snapshot or log);
   * peering: no leader known; inactive: below quorum.
   */
  state: 'active' | 'degraded' | 'recovering' | 'peering' | 'inactive';
  /** Leader only: bytes still to send to catching-up replicas (estimate). */
  recoveryBytesLeft: number;
  /**
   * The PG epoch of the map the OSD held when it reported. A report about an
   * older epoch than the monitor's map describes the PG before its last change
   * (new or removed OSDs), so its state is not taken at face value.
   */
  pgEpoch?: number;
}

export interface OsdReport {
  osdId: number;
  uuid: string;
  capacityBytes: number;
  usedBytes: number;
  /** Only PGs this OSD leads, plus any it cannot find a leader for. */
  pgs: PgReport[];
  /**
   * PG replicas here whose raft log the WAL found damaged and that no leader has
   * re-replicated yet: until then they do not campaign and vote only for logs that
   * hold what they may have acknowledged (or not at all). Absent: 0.
   */
  repairingReplicas?: number;
}
