// Per-block register check for the cluster simulation (issue 3 §7): every write
// stores a unique tag in its block; a read must return either the latest write
// acknowledged before the read began or a write concurrent with the read —
// never a lost, stale, torn or garbage block.
//
// For a read R returning the tag of write W (or the initial zeros, W = none):
//   - W must have been invoked before R returned (no values from the future);
//   - no write W2 of the same block may lie strictly between them in real time:
//     W acknowledged before W2 was invoked, and W2 acknowledged before R was
//     invoked (then W was overwritten before R began: a stale read);
//   - for the initial value: no write of the block was acknowledged before R began;
//   - a block whose bytes are not a well-formed tag block (torn or garbage) is a
//     violation by itself.
// A write whose outcome is unknown (timed out, failed) has ackMs = Infinity: it
// may take effect at any time after its invocation.
export interface WriteOp {
  tag: number;
  invokeMs: number;
  ackMs: number;
}

export interface ReadOp {
  /** 0 = the block read as zeros (never written). */
  tag: number;
  invokeMs: number;
  returnMs: number;
}

export class BlockHistory {
  readonly writes = new Map<number, WriteOp>();
  readonly reads: ReadOp[] = [];

  addWrite(tag: number, invokeMs: number): WriteOp {
    const w = { tag, invokeMs, ackMs: Infinity };
    this.writes.set(tag, w);
    return w;
  }

  /** Returns a description of the violation, or null. */
  checkRead(r: ReadOp): string | null {
    const ws = [...this.writes.values()];
    if (r.tag === 0) {
      const acked = ws.find((w) => w.ackMs < r.invokeMs);
      return acked ? `read at ${r.invokeMs.toFixed(3)}ms returned zeros but tag ${acked.tag} was acknowledged at ${acked.ackMs.toFixed(3)}ms` : null;
    }
    const w = this.writes.get(r.tag);
    if (!w) return `read returned tag ${r.tag} that no write of this block carried`;
    if (w.invokeMs > r.returnMs) return `read returned tag ${r.tag} before its write was invoked`;
    for (const w2 of ws) {
      if (w2 === w) continue;
      if (w.ackMs < w2.invokeMs && w2.ackMs < r.invokeMs) {
        return `stale read: tag ${r.tag} (acked ${w.ackMs.toFixed(3)}ms) was overwritten by tag ${w2.tag} (invoked ${w2.invokeMs.toFixed(3)}ms, acked ${w2.ackMs.toFixed(3)}ms) before the read began at ${r.invokeMs.toFixed(3)}ms`;
      }
    }
    return null;
  }
}

/** Block content for a tag: the tag and the block number repeated, so torn and misplaced blocks are detected. */
export function fillTagBlock(buf: Buffer, block: number, tag: number): void {
  for (let i = 0; i < buf.length; i += 8) {
    buf.writeUInt32LE(tag, i);
    buf.writeUInt32LE(block, i + 4);
  }
}

/** The tag of a block's content: 0 for all zeros, -1 for anything that is not a whole tag block of this block number. */
export function readTagBlock(buf: Buffer, block: number): number {
  const tag = buf.readUInt32LE(0);
  if (tag === 0) return buf.every((b) => b === 0) ? 0 : -1;
  for (let i = 0; i < buf.length; i += 8) {
    if (buf.readUInt32LE(i) !== tag || buf.readUInt32LE(i + 4) !== block) return -1;
  }
  return tag;
}
