// The body of the worker thread of block-worker.ts: seals or checks a run of stored
// blocks in memory shared with the engine's thread (copying the run's user data in
// or out when the request names it) and answers with the message's id (and, for a
// check, one BlockCheck byte per block). It touches nothing but the run and data
// it was given; an exception is answered as an error for that id.
import { parentPort } from 'node:worker_threads';
import { checkRun, checkTrailerRun, sealRun, sealTrailerRun, type BlockRun } from '../../engine/block-codec.js';
import { BLOCK_DATA_BYTES, BLOCK_STRIDE_BYTES, BLOCK_TRAILER_BYTES } from '../../engine/layout.js';

/** A request from block-worker.ts (same process, same build: its shape is ours). */
export interface BlockWorkerRequest extends BlockRun {
  id: number;
  /** Strided runs: 0 seal, 1 check; gathered runs (mem holds only the trailers): 2 seal, 3 check. */
  op: BlockWorkerOp;
  mem: SharedArrayBuffer;
  byteOffset: number;
  n: number;
  /** The run's user data (n * 4096 bytes at dataByteOffset), or null. */
  data: SharedArrayBuffer | null;
  dataByteOffset: number;
}

export type BlockWorkerOp = 0 | 1 | 2 | 3;

export type BlockWorkerReply = { id: number; statuses?: Uint8Array } | { id: number; error: string };

const port = parentPort;
if (port === null) throw new Error('block-worker-main.js runs only as a worker thread');
port.on('message', (m: BlockWorkerRequest) => {
  try {
    const gathered = m.op >= 2;
    const buf = Buffer.from(m.mem, m.byteOffset, m.n * (gathered ? BLOCK_TRAILER_BYTES : BLOCK_STRIDE_BYTES));
    const data = m.data === null ? undefined : Buffer.from(m.data, m.dataByteOffset, m.n * BLOCK_DATA_BYTES);
    if (m.op === 0 || m.op === 2) {
      if (m.op === 0) sealRun(buf, m.n, m, data);
      else sealTrailerRun(buf, m.n, m, required(data));
      port.postMessage({ id: m.id } satisfies BlockWorkerReply);
    } else {
      const statuses = new Uint8Array(m.n);
      if (m.op === 1) checkRun(buf, m.n, m, statuses, data);
      else checkTrailerRun(buf, m.n, m, statuses, required(data));
      port.postMessage({ id: m.id, statuses } satisfies BlockWorkerReply, [statuses.buffer]);
    }
  } catch (err) {
    port.postMessage({ id: m.id, error: err instanceof Error ? (err.stack ?? err.message) : String(err) } satisfies BlockWorkerReply);
  }
});

function required(data: Buffer | undefined): Buffer {
  if (data === undefined) throw new Error('a gathered run without its data');
  return data;
}
