// The volume interfaces every gateway (NBD, later iSCSI) and the management API
// see. A gateway knows only `Volume`; the API knows only `VolumeStore`. The local
// engine (engine/store.ts) and the in-memory store (volume/memory.ts) implement them.
//
// Invariants: offsets and lengths are byte counts checked by the caller against
// sizeBytes(); a write resolves only once the data is on the device (and durable
// if `fua`); flush() makes every write that resolved before it durable.
import type { IoStatsSnapshot } from '../stdx/stats.js';

export interface VolumeInfo {
  name: string;
  id: number;
  sizeBytes: number;
  /** Bytes of device space holding this volume's data (allocated objects). */
  usedBytes: number;
  objectSizeBytes: number;
  createdAt: string;
  /** The pool holding the volume (set by a MultiStore: the daemon's stores). */
  pool?: string;
}

export interface Extent {
  lengthBytes: number;
  /** NBD base:allocation semantics: hole = not allocated, zero = reads as zeros. */
  hole: boolean;
  zero: boolean;
}

export interface Volume {
  readonly id: number;
  name(): string;
  sizeBytes(): number;
  /** Fill out[outOffset, outOffset+lengthBytes) with the volume's bytes. */
  read(offsetBytes: number, lengthBytes: number, out: Buffer, outOffset: number): Promise<void>;
  write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void>;
  /**
   * Optional hint: a write of this range will come soon (the OSD knows it a WAL
   * flush before it applies the write). Best effort; returns at once, never throws.
   */
  prefetchWrite?(offsetBytes: number, lengthBytes: number): void;
  flush(): Promise<void>;
  /** Discard: the range reads as zeros afterwards and space is given back where whole objects are freed. */
  trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void>;
  /** Make the range read as zeros; `mayTrim` (NBD: no NO_HOLE flag) lets whole objects be freed. */
  writeZeroes(offsetBytes: number, lengthBytes: number, fua: boolean, mayTrim: boolean): Promise<void>;
  /** Allocation map of [offset, offset+length), merged into runs. */
  blockStatus(offsetBytes: number, lengthBytes: number): Promise<Extent[]>;
  /** Live IO statistics of this volume. */
  stats(): IoStatsSnapshot;
}

export interface DeviceInfo {
  name: string;
  path: string;
  sizeBytes: number;
  chunkSizeBytes: number;
  chunksTotal: number;
  chunksUsed: number;
  directIo: boolean;
  ioErrors: number;
  checksumErrors: number;
  /** Blocks that failed their checksum and were repaired from redundancy (pool devices). */
  repairedBlocks?: number;
  metadataWrites: number;
  dataWrites: number;
  /** The pool this device serves (set by a MultiStore). */
  pool?: string;
}

export interface StatsSnapshot {
  atMs: number;
  devices: Array<{ name: string; stats: IoStatsSnapshot }>;
  volumes: Array<{ name: string; stats: IoStatsSnapshot }>;
}

export interface VolumeStore {
  list(): VolumeInfo[];
  /** Throws ERR_NOT_FOUND. */
  info(name: string): VolumeInfo;
  /** `opts.pool`: stores that hold several pools (MultiStore) put the volume there. */
  create(name: string, sizeBytes: number, opts?: { pool?: string }): Promise<VolumeInfo>;
  /** Shrinking below allocated data throws ERR_SHRINK unless `discardData`. */
  resize(name: string, sizeBytes: number, opts?: { discardData?: boolean }): Promise<VolumeInfo>;
  rename(name: string, newName: string): Promise<VolumeInfo>;
  delete(name: string): Promise<void>;
  /** A live handle; follows rename and resize; its IO fails with ERR_NOT_FOUND after delete. */
  open(name: string): Volume;
  devices(): DeviceInfo[];
  stats(): StatsSnapshot;
  close(): Promise<void>;
}

/** Volume names: what NBD export names and CLI arguments may carry. */
export const VOLUME_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
