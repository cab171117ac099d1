// ReadIndex bookkeeping of a leader (Raft thesis §6.4): linearizable reads
// without writing to the log.
//
// A read registered with ctx goes through:
//   waiting  — the leader has not yet committed an entry of its current term, so
//              its commit index may be behind entries committed by earlier
//              leaders (§6.4 step 1); no read index is recorded yet;
//   pending  — read index = the leader's commit index once it has; heartbeats
//              carrying ctx were sent; released once a quorum of voters answered
//              a heartbeat with ctx' >= ctx (step 2: proves no newer leader had
//              been elected when the heartbeat left, i.e. after the read arrived);
//   released — handed out as ReadState {ctx, index}; the driver serves the read
//              once its state machine applied `index` (steps 3-4).
//
// Invariants: ctx values are strictly increasing in registration order, so the
// queue is sorted by ctx and a heartbeat answer for ctx confirms every read with
// a smaller ctx too; everything is dropped when leadership is lost (reads are then
// never answered: the driver times them out or fails them on a role change).
// The queue is bounded by READS_PENDING_MAX (the caller checks count()).
import { assert } from '../stdx/assert.js';
import { quorumSize } from './progress.js';
import type { ReadState } from './types.js';

/** Reads registered and not yet released, per leader. */
export const READS_PENDING_MAX = 4096;

interface PendingRead {
  readonly ctx: number;
  /** The read index; -1 while waiting for the first commit of the leader's term. */
  index: number;
}

export class ReadIndexQueue {
  private readonly reads: PendingRead[] = [];
  /** Per peer: the highest ctx it echoed in a heartbeat answer during this leadership. */
  private readonly acked = new Map<number, number>();

  count(): number {
    return this.reads.length;
  }

  /** Register a read; index -1 means "wait for a current-term commit". */
  add(ctx: number, index: number): void {
    assert(this.reads.length < READS_PENDING_MAX, 'read queue overflow');
    const last = this.reads[this.reads.length - 1];
    assert(last === undefined || ctx > last.ctx, 'read ctx not increasing');
    this.reads.push({ ctx, index });
  }

  /** The leader committed in its term: waiting reads get index commit. Returns the highest ctx that got one (0 if none). */
  assignWaiting(commit: number): number {
    let ctx = 0;
    for (const r of this.reads) {
      if (r.index < 0) {
        r.index = commit;
        ctx = r.ctx;
      }
    }
    return ctx;
  }

  /** Highest ctx of a read with an index, to piggyback on periodic heartbeats (0 if none). */
  highestPendingCtx(): number {
    for (let k = this.reads.length - 1; k >= 0; k--) if (this.reads[k].index >= 0) return this.reads[k].ctx;
    return 0;
  }

  ack(peer: number, ctx: number): void {
    if (ctx > (this.acked.get(peer) ?? 0)) this.acked.set(peer, ctx);
  }

  /** Pop, in ctx order, every read confirmed by a quorum of voters (self counts without a heartbeat). */
  release(self: number, voters: readonly number[]): ReadState[] {
    const out: ReadState[] = [];
    const q = quorumSize(voters.length);
    while (this.reads.length > 0) {
      const r = this.reads[0];
      if (r.index < 0) break;
      let n = 0;
      for (const v of voters) if (v === self || (this.acked.get(v) ?? 0) >= r.ctx) n++;
      if (n < q) break;
      this.reads.shift();
      out.push({ ctx: r.ctx, index: r.index });
    }
    return out;
  }

  reset(): void {
    this.reads.length = 0;
    this.acked.clear();
  }
}
