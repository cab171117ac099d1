// BlockCodec: where the engine seals and checks the trailers of a run of stored
// blocks (trailer.ts) in one staging buffer. The engine does it in its own thread
// unless it was given a codec that offloads() a run, in which case the codec does
// the same work elsewhere (io/node/block-worker.ts: a worker thread over shared
// memory) while this thread serves other IO. For 1 MiB IOs the crc32c of 256
// blocks is the largest item of the main thread's time (docs/benchmarks.md).
//
// Two layouts. Strided: block i's data and trailer lie together at i * 4608 in one
// staging buffer (what one device IO of the run holds). Gathered: the run's data
// stays where the client has it (n * 4096 bytes) and only the trailers (n * 512
// bytes, back to back) are in a staging buffer; the device then reads or writes
// both with one vectored IO, and no thread copies the data at all.
//
// A strided run may also name its user data (`data`: n * 4096 contiguous bytes, block i at
// i * 4096): sealing then first copies each block in, and checking copies each
// valid block out (and zero-fills each unwritten one). The engine passes it for
// whole-block IO on shared memory, so a 1 MiB IO's copy between the client's
// buffer and the staging buffer runs where the checksums run, not on the event loop.
//
// Invariants (every implementation):
// - sealBlocks / checkBlocks give exactly the results of sealBlock / checkBlock
//   applied to blocks i = 0..n-1 at offset i * BLOCK_STRIDE_BYTES with identity
//   (volumeId, objectIndex, firstBlock + i, generation), after (seal) or followed
//   by (check) the copy of `data` described above; a corrupt block's data bytes
//   are left untouched;
// - the caller owns buf (and data) until the promise settles and touches them meanwhile in no way;
// - a codec that cannot run (its worker died) still answers, by doing the work here.
import { fail } from '../stdx/assert.js';
import { BLOCK_DATA_BYTES, BLOCK_STRIDE_BYTES, BLOCK_TRAILER_BYTES } from './layout.js';
import { crc32cBlocks } from '../stdx/crc32c.js';
import { copyBytes } from '../stdx/shared-copy.js';
import { BlockCheck, checkTrailerCrc, writeTrailer, type BlockIdentity } from './trailer.js';

/** The identity of a run of blocks of one object (block i has blockIndex firstBlock + i). */
export interface BlockRun {
  volumeId: number;
  objectIndex: number;
  firstBlock: number;
  generation: number;
}

export interface BlockCodec {
  /**
   * True when this codec would take a run of n blocks in buf (and data, if given)
   * elsewhere; else the engine does it inline.
   */
  offloads(buf: Buffer, n: number, data?: Buffer): boolean;
  /** Copies data (if given) into blocks 0..n-1 of buf, then writes their trailers. */
  sealBlocks(buf: Buffer, n: number, run: BlockRun, data?: Buffer): Promise<void>;
  /** The BlockCheck of blocks 0..n-1 of buf, one byte each; with data, valid blocks copied out and unwritten ones zeroed. */
  checkBlocks(buf: Buffer, n: number, run: BlockRun, data?: Buffer): Promise<Uint8Array>;
  /** Gathered layout: writes the n trailers of data's blocks into trailers. */
  sealTrailers(trailers: Buffer, n: number, run: BlockRun, data: Buffer): Promise<void>;
  /** Gathered layout: the BlockCheck of each block, one byte each; unwritten blocks' data zeroed. */
  checkTrailers(trailers: Buffer, n: number, run: BlockRun, data: Buffer): Promise<Uint8Array>;
}

/** sealBlock over a run, in this thread, after copying data (if given) in. */
export function sealRun(buf: Buffer, n: number, run: BlockRun, data?: Buffer): void {
  if (data !== undefined) {
    checkDataBytes(data, n);
    for (let i = 0; i < n; i++) copyBytes(data, i * BLOCK_DATA_BYTES, (i + 1) * BLOCK_DATA_BYTES, buf, i * BLOCK_STRIDE_BYTES);
  }
  const crcs = dataCrcs(buf, BLOCK_STRIDE_BYTES, n);
  for (let i = 0; i < n; i++) writeTrailer(buf, i * BLOCK_STRIDE_BYTES + BLOCK_DATA_BYTES, blockId(run, i), crcs[i]);
}

/** checkBlock over a run, in this thread, into out[0..n); with data, valid blocks are copied out and unwritten ones zeroed. */
export function checkRun(buf: Buffer, n: number, run: BlockRun, out: Uint8Array, data?: Buffer): void {
  if (data !== undefined) checkDataBytes(data, n);
  const crcs = dataCrcs(buf, BLOCK_STRIDE_BYTES, n);
  for (let i = 0; i < n; i++) {
    const bo = i * BLOCK_STRIDE_BYTES;
    const check = checkTrailerCrc(buf, bo + BLOCK_DATA_BYTES, blockId(run, i), crcs[i]);
    out[i] = check;
    if (data === undefined) continue;
    if (check === BlockCheck.Valid) copyBytes(buf, bo, bo + BLOCK_DATA_BYTES, data, i * BLOCK_DATA_BYTES);
    else if (check === BlockCheck.Unwritten) data.fill(0, i * BLOCK_DATA_BYTES, (i + 1) * BLOCK_DATA_BYTES);
  }
}

/** Trailers of a gathered run, in this thread. */
export function sealTrailerRun(trailers: Buffer, n: number, run: BlockRun, data: Buffer): void {
  checkDataBytes(data, n);
  checkTrailerBytes(trailers, n);
  const crcs = dataCrcs(data, BLOCK_DATA_BYTES, n);
  for (let i = 0; i < n; i++) writeTrailer(trailers, i * BLOCK_TRAILER_BYTES, blockId(run, i), crcs[i]);
}

/** Checks of a gathered run, in this thread, into out[0..n); unwritten blocks' data is zeroed. */
export function checkTrailerRun(trailers: Buffer, n: number, run: BlockRun, out: Uint8Array, data: Buffer): void {
  checkDataBytes(data, n);
  checkTrailerBytes(trailers, n);
  const crcs = dataCrcs(data, BLOCK_DATA_BYTES, n);
  for (let i = 0; i < n; i++) {
    const check = checkTrailerCrc(trailers, i * BLOCK_TRAILER_BYTES, blockId(run, i), crcs[i]);
    out[i] = check;
    if (check === BlockCheck.Unwritten) data.fill(0, i * BLOCK_DATA_BYTES, (i + 1) * BLOCK_DATA_BYTES);
  }
}

let crcScratch = new Uint32Array(256);

/** The crc32c of the data of blocks 0..n-1 (at strideBytes apart), in one call; valid until the next call. */
function dataCrcs(buf: Buffer, strideBytes: number, n: number): Uint32Array {
  if (crcScratch.length < n) crcScratch = new Uint32Array(n);
  crc32cBlocks(buf, 0, BLOCK_DATA_BYTES, strideBytes, n, crcScratch);
  return crcScratch;
}

function blockId(run: BlockRun, i: number): BlockIdentity {
  return { volumeId: run.volumeId, objectIndex: run.objectIndex, blockIndex: run.firstBlock + i, generation: run.generation };
}

function checkTrailerBytes(trailers: Buffer, n: number): void {
  if (trailers.length !== n * BLOCK_TRAILER_BYTES) fail(`${trailers.length} trailer bytes for ${n} blocks`);
}

function checkDataBytes(data: Buffer, n: number): void {
  if (data.length !== n * BLOCK_DATA_BYTES) fail(`run data of ${data.length} bytes for ${n} blocks`);
}
