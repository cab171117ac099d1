// DEV1: the block device interface every storage layer sees. A device is a byte
// array addressed by offset, with async positional read/write, flush (make every
// completed write durable) and close. Implementations: io/node/file-device.ts
// (a regular file or a block device path) and device/sim-device.ts (tests).
//
// Invariants: offsets and lengths are multiples of `sectorBytes`; buffers passed
// to a device with `directIo` must come from stdx/buffer-pool.ts (page-aligned).
// A write that resolved is visible to later reads; it is durable only after a
// flush() that started after it resolved. Errors are TesseraErrors:
// ERR_DEVICE_IO for read/write, ERR_DEVICE_FLUSH for flush (fatal to the daemon).
import type { IoStats } from '../stdx/stats.js';

export interface BlockDevice {
  readonly name: string;
  readonly path: string;
  readonly sizeBytes: number;
  readonly sectorBytes: number;
  /** True when IO bypasses the page cache (O_DIRECT): buffers must be aligned. */
  readonly directIo: boolean;
  readonly stats: IoStats;
  /**
   * Devices that fail together (partitions of one disk) share this; a pool
   * never puts two chunks of one container in one domain. Default: a domain of its own.
   */
  readonly failureDomain?: string;
  read(buf: Uint8Array, offsetBytes: number): Promise<void>;
  write(buf: Uint8Array, offsetBytes: number): Promise<void>;
  /**
   * Optional vectored IO: the parts, back to back, are one range at offsetBytes
   * (one preadv/pwritev). Only used when directIo is false (parts need no alignment).
   * The engine gathers a run's data (where the client has it) and its trailers this
   * way, so no thread copies the data between them.
   */
  readParts?(parts: Uint8Array[], offsetBytes: number): Promise<void>;
  writeParts?(parts: Uint8Array[], offsetBytes: number): Promise<void>;
  /**
   * Optional hint, for buffered devices: a write to this range will come soon.
   * Starts reading the pages it covers only in part, so that the write does not
   * read them synchronously (io/node/page-cache.ts). Returns at once; never fails.
   */
  prefetchWrite?(offsetBytes: number, lengthBytes: number): void;
  flush(): Promise<void>;
  close(): Promise<void>;
  /**
   * Devices with redundancy (pools): read the range again from another source
   * (another mirror copy, or reconstruction from parity treating the strips the
   * range came from as bad); each attempt tries a different source. Resolves
   * false when no source is left. The caller checks the result (checksums).
   */
  readAlternate?(buf: Uint8Array, offsetBytes: number, attempt: number): Promise<boolean>;
  /** After readAlternate(attempt) gave valid data: rewrite the bad source from that same alternative. */
  repairAlternate?(offsetBytes: number, lengthBytes: number, attempt: number): Promise<void>;
}

export const SECTOR_BYTES = 512;
