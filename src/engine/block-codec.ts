// BlockCodec: where the engine seals and checks the trailers of a run of stored
// blocks (trailer.ts) in one staging buffer. The engine does it in its own thread
// unless it was given a codec that offloads() a run, in which case the codec does
// the same work elsewhere (io/node/block-worker.ts: a worker thread over shared
// memory) while this thread serves other IO. For 1 MiB IOs the crc32c of 256
// blocks is the largest item of the main thread's time (docs/benchmarks.md).
//
// Invariants (every implementation):
// - sealBlocks / checkBlocks give exactly the results of sealBlock / checkBlock
//   applied to blocks i = 0..n-1 at offset i * BLOCK_STRIDE_BYTES with identity
//   (volumeId, objectIndex, firstBlock + i, generation);
// - the caller owns buf until the promise settles and touches it meanwhile in no way;
// - a codec that cannot run (its worker died) still answers, by doing the work here.
import { BLOCK_STRIDE_BYTES } from './layout.js';
import { checkBlock, sealBlock, type BlockCheck } from './trailer.js';

/** The identity of a run of blocks of one object (block i has blockIndex firstBlock + i). */
export interface BlockRun {
  volumeId: number;
  objectIndex: number;
  firstBlock: number;
  generation: number;
}

export interface BlockCodec {
  /** True when this codec would take a run of n blocks in buf elsewhere (else the engine does it inline). */
  offloads(buf: Buffer, n: number): boolean;
  /** Writes the trailers of blocks 0..n-1 of buf. */
  sealBlocks(buf: Buffer, n: number, run: BlockRun): Promise<void>;
  /** The BlockCheck of blocks 0..n-1 of buf, one byte each. */
  checkBlocks(buf: Buffer, n: number, run: BlockRun): Promise<Uint8Array>;
}

/** sealBlock over a run, in this thread. */
export function sealRun(buf: Buffer, n: number, run: BlockRun): void {
  for (let i = 0; i < n; i++) {
    sealBlock(buf, i * BLOCK_STRIDE_BYTES, { volumeId: run.volumeId, objectIndex: run.objectIndex, blockIndex: run.firstBlock + i, generation: run.generation });
  }
}

/** checkBlock over a run, in this thread, into out[0..n). */
export function checkRun(buf: Buffer, n: number, run: BlockRun, out: Uint8Array): void {
  for (let i = 0; i < n; i++) {
    out[i] = checkBlock(buf, i * BLOCK_STRIDE_BYTES, { volumeId: run.volumeId, objectIndex: run.objectIndex, blockIndex: run.firstBlock + i, generation: run.generation }) as BlockCheck;
  }
}
