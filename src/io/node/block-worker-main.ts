// The body of the worker thread of block-worker.ts: seals or checks a run of stored
// blocks in memory shared with the engine's thread and answers with the message's
// id (and, for a check, one BlockCheck byte per block). It touches nothing but the
// run it was given; an exception is answered as an error for that id.
import { parentPort } from 'node:worker_threads';
import { checkRun, sealRun, type BlockRun } from '../../engine/block-codec.js';
import { BLOCK_STRIDE_BYTES } from '../../engine/layout.js';

/** A request from block-worker.ts (same process, same build: its shape is ours). */
export interface BlockWorkerRequest extends BlockRun {
  id: number;
  /** 0 seal, 1 check. */
  op: 0 | 1;
  mem: SharedArrayBuffer;
  byteOffset: number;
  n: number;
}

export type BlockWorkerReply = { id: number; statuses?: Uint8Array } | { id: number; error: string };

const port = parentPort;
if (port === null) throw new Error('block-worker-main.js runs only as a worker thread');
port.on('message', (m: BlockWorkerRequest) => {
  try {
    const buf = Buffer.from(m.mem, m.byteOffset, m.n * BLOCK_STRIDE_BYTES);
    if (m.op === 0) {
      sealRun(buf, m.n, m);
      port.postMessage({ id: m.id } satisfies BlockWorkerReply);
    } else {
      const statuses = new Uint8Array(m.n);
      checkRun(buf, m.n, m, statuses);
      port.postMessage({ id: m.id, statuses } satisfies BlockWorkerReply, [statuses.buffer]);
    }
  } catch (err) {
    port.postMessage({ id: m.id, error: err instanceof Error ? (err.stack ?? err.message) : String(err) } satisfies BlockWorkerReply);
  }
});
