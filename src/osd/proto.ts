// The messages between gateways (client library) and OSDs, and between OSDs
// (SPEC CLU6, CLU7). Plain data types only: the byte codec is src/rpc/messages.ts,
// the transport src/io/node/rpc.ts, and the simulated network in test/sim/ moves
// these objects directly.
//
// Invariants:
// - Every request names its PG and the PG epoch the sender's map holds
//   (`pgEpoch`); an OSD refuses a request whose pgEpoch differs from its own
//   (STALE_EPOCH, with its epoch) so a client or peer with an old map can
//   neither write through an old acting set nor be served by a fenced leader.
// - Offsets and lengths are bytes, multiples of 512 (sector), within one object
//   (objectSizeBytes of the pool); the client splits larger requests.
// - Raft envelopes are one-way and may be lost, duplicated or reordered by the
//   network: raft tolerates it. Everything else is request/response.
import type { Message } from '../raft/types.js';

/** Frame `method` numbers: stable wire values. */
export const Method = {
  Read: 1,
  Write: 2,
  Zero: 3,
  BlockStatus: 4,
  /** One-way: every raft message from one OSD to another gathered in one event-loop pass (merged heartbeats). */
  RaftBatch: 10,
  /** Request: one chunk of a PG snapshot from leader to follower (or learner). */
  SnapshotChunk: 11,
} as const;
export type Method = (typeof Method)[keyof typeof Method];

/** Response status codes (frame `status`); 0 is OK. Stable wire values. */
export const Status = {
  Ok: 0,
  /** This OSD is not the PG's raft leader; leaderHint names the leader it knows (0 = unknown). */
  NotLeader: 1,
  /** The request's pgEpoch differs from the OSD's; pgEpoch carries the OSD's. */
  StaleEpoch: 2,
  /** The PG has no replica here or is not serving yet (peering, installing a snapshot). */
  NotReady: 3,
  /** Offset/length outside limits, misaligned, or crossing an object. */
  Range: 4,
  /** The device failed the IO. */
  Io: 5,
  /** Stored data failed its checksum and could not be repaired. */
  Checksum: 6,
  /** Too many requests in flight on this OSD/PG: retry later (backpressure). */
  Busy: 7,
  /** A request the OSD cannot decode or does not know. */
  Invalid: 8,
  /** No space left for new objects. */
  NoSpace: 9,
} as const;
export type Status = (typeof Status)[keyof typeof Status];

export interface PgRef {
  poolId: number;
  pg: number;
  /** The PG epoch of the sender's cluster map (see ClusterMap.pgs[].epoch). */
  pgEpoch: number;
}

export interface ReadRequest extends PgRef {
  method: typeof Method.Read;
  volumeId: number;
  offsetBytes: number;
  lengthBytes: number;
}

export interface WriteRequest extends PgRef {
  method: typeof Method.Write;
  volumeId: number;
  offsetBytes: number;
  /** Length is data.length. */
  data: Buffer;
}

export interface ZeroRequest extends PgRef {
  method: typeof Method.Zero;
  volumeId: number;
  offsetBytes: number;
  lengthBytes: number;
  /** true: space may be freed (trim, NBD WRITE_ZEROES without NO_HOLE); false: allocate zeros. */
  mayTrim: boolean;
}

export interface BlockStatusRequest extends PgRef {
  method: typeof Method.BlockStatus;
  volumeId: number;
  offsetBytes: number;
  lengthBytes: number;
}

export type ClientRequest = ReadRequest | WriteRequest | ZeroRequest | BlockStatusRequest;

export interface ExtentWire {
  lengthBytes: number;
  hole: boolean;
  zero: boolean;
}

export interface OkResponse {
  status: typeof Status.Ok;
  /** Read: exactly lengthBytes. */
  data?: Buffer;
  /** BlockStatus. */
  extents?: ExtentWire[];
  /**
   * Read, optional: gives data's buffer back to the transport for reuse. A caller
   * that copied the data out and keeps no view of it calls this once; one that does
   * not just lets the buffer be collected.
   */
  release?: () => void;
}

export interface ErrorResponse {
  status: Exclude<Status, typeof Status.Ok>;
  /** NotLeader: the leader's OSD id, 0 if unknown. */
  leaderHint?: number;
  /** StaleEpoch: the OSD's pgEpoch. */
  pgEpoch?: number;
  message: string;
}

export type ClientResponse = OkResponse | ErrorResponse;

/** One raft message of one PG. `msg.from`/`msg.to` are OSD ids. */
export interface RaftEnvelope {
  poolId: number;
  pg: number;
  pgEpoch: number;
  msg: Message;
}

/** Method.RaftBatch payload. */
export interface RaftBatch {
  fromOsd: number;
  envelopes: RaftEnvelope[];
}

/**
 * Method.SnapshotChunk: a run of a PG's object data, in order. The first chunk
 * (seq 0) tells the receiver to drop the PG's current data; `done` marks the
 * last, after which the receiver steps `snap` into its raft node.
 */
export interface SnapshotChunk extends PgRef {
  fromOsd: number;
  /** Identifies one transfer (leader term and snapshot index are not unique across retries). */
  transferId: number;
  seq: number;
  done: boolean;
  /** Extents of object data; zero-length list allowed (e.g. an empty PG). */
  items: SnapshotItem[];
  /**
   * In the last chunk: the raft message to step once everything is installed.
   * Also in the first (seq 0), so that the receiver refuses a snapshot it would
   * not install before it drops anything. Never in another.
   */
  snap?: Message & { type: 'snap' };
}

/**
 * One extent of a snapshot chunk: `data` to write at offsetBytes, or, with
 * `zeroBytes`, a range that holds no data on the sender (an object it does not
 * have): the receiver makes it read as zeros and frees what it can, so a copy
 * never allocates space for data the sender does not store.
 */
export type SnapshotItem = SnapshotDataItem | SnapshotZeroItem;

export interface SnapshotDataItem {
  volumeId: number;
  offsetBytes: number;
  data: Buffer;
  zeroBytes?: undefined;
}

export interface SnapshotZeroItem {
  volumeId: number;
  offsetBytes: number;
  zeroBytes: number;
  data?: undefined;
}

/** Largest data of one Read/Write request: one object of the largest object size. */
export const IO_BYTES_MAX = 4 * 1024 * 1024;
/** Largest total data of one SnapshotChunk (zero items carry none); also the largest zero item. */
export const SNAPSHOT_CHUNK_BYTES_MAX = 4 * 1024 * 1024;
/** Most items in one SnapshotChunk (zero items cost no data bytes, so the count needs its own bound). */
export const SNAPSHOT_CHUNK_ITEMS_MAX = 4096;
/** Largest number of envelopes in one RaftBatch. */
export const RAFT_BATCH_ENVELOPES_MAX = 65536;
