// The leader's view of one follower (etcd's Progress) and the quorum arithmetic.
//
// States:
// - probe: we do not know where the follower's log matches ours; send one
//   AppendEntries at a time (probeSent pauses until an answer or a heartbeat
//   response) and walk `next` back on rejects (§5.3, with a term hint).
// - replicate: the follower matched at `match`; stream entries optimistically,
//   advancing `next` as we send, bounded by `inflights` (a bounded queue of the
//   last index of each unacknowledged AppendEntries).
// - snapshot: the follower needs entries we compacted away (§7); a MsgSnap for
//   `pendingSnapshot` is out and nothing else is sent until the follower
//   acknowledges it (an appResp) or the driver reports the transfer's outcome.
// Invariants: 0 <= match < next; inflights never holds more than its capacity;
// pendingSnapshot > 0 exactly in snapshot state.
import { assert } from '../stdx/assert.js';

/** A bounded FIFO of the last entry index carried by each in-flight AppendEntries. */
export class Inflights {
  private readonly lastIndexes: number[] = [];
  constructor(readonly capacity: number) {
    assert(Number.isInteger(capacity) && capacity >= 1, 'maxInflightMsgs must be >= 1');
  }
  count(): number {
    return this.lastIndexes.length;
  }
  full(): boolean {
    return this.lastIndexes.length >= this.capacity;
  }
  add(lastIndex: number): void {
    assert(!this.full(), 'inflights overflow');
    assert(this.lastIndexes.length === 0 || lastIndex > this.lastIndexes[this.lastIndexes.length - 1], 'inflights out of order');
    this.lastIndexes.push(lastIndex);
  }
  /** The follower acknowledged up to index: every message ending at or below it has landed. */
  freeLE(index: number): void {
    let k = 0;
    while (k < this.lastIndexes.length && this.lastIndexes[k] <= index) k++;
    if (k > 0) this.lastIndexes.splice(0, k);
  }
  /** A heartbeat answer while full: assume the oldest message is lost so the flow cannot stall forever. */
  freeFirstOne(): void {
    this.lastIndexes.shift();
  }
  reset(): void {
    this.lastIndexes.length = 0;
  }
}

export type ProgressState = 'probe' | 'replicate' | 'snapshot';

export class Progress {
  match = 0;
  next: number;
  state: ProgressState = 'probe';
  /** probe state: an AppendEntries is out and unanswered. */
  probeSent = false;
  /** snapshot state: the index of the snapshot in flight; 0 otherwise. */
  pendingSnapshot = 0;
  /** Heard from this peer since the last check-quorum round. */
  recentActive = false;
  readonly inflights: Inflights;

  constructor(next: number, maxInflightMsgs: number) {
    this.next = next;
    this.inflights = new Inflights(maxInflightMsgs);
  }

  isPaused(): boolean {
    switch (this.state) {
      case 'probe':
        return this.probeSent;
      case 'replicate':
        return this.inflights.full();
      default:
        return true;
    }
  }

  /** Leaving snapshot state probes right after the snapshot (if one was installed, the follower holds it). */
  becomeProbe(): void {
    this.next = this.state === 'snapshot' ? Math.max(this.match + 1, this.pendingSnapshot + 1) : this.match + 1;
    this.state = 'probe';
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflights.reset();
  }

  becomeReplicate(): void {
    this.state = 'replicate';
    this.next = this.match + 1;
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflights.reset();
  }

  becomeSnapshot(snapshotIndex: number): void {
    assert(snapshotIndex > 0, 'snapshot at index 0');
    this.state = 'snapshot';
    this.pendingSnapshot = snapshotIndex;
    this.probeSent = false;
    this.inflights.reset();
  }

  /**
   * The follower says it lost (or never had) the entries we think it holds
   * (log damage, or a node joining without a base): forget match and probe from
   * where its log may still match.
   */
  resetTo(next: number): void {
    this.match = 0;
    this.state = 'probe';
    this.next = Math.max(1, next);
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflights.reset();
  }

  /** A successful AppendEntries answer at index; returns whether match moved. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /**
   * A reject of the AppendEntries whose prevLogIndex was `rejected`; matchHint is
   * the highest index that may still match. Returns false for stale rejects
   * (duplicated or reordered answers), which must be ignored.
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === 'snapshot') return false; // the snapshot decides where the follower resumes
    if (this.state === 'replicate') {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.probeSent = false;
    return true;
  }

  /** Record an AppendEntries sent with `count` entries ending at lastIndex. */
  sentEntries(lastIndex: number, count: number): void {
    assert(this.state !== 'snapshot', 'AppendEntries sent to a peer awaiting a snapshot');
    if (this.state === 'replicate') {
      if (count > 0) {
        this.next = lastIndex + 1;
        this.inflights.add(lastIndex);
      }
    } else {
      this.probeSent = true;
    }
  }
}

export function quorumSize(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

/** The highest index held by a quorum of the given match indexes. */
export function quorumMatchIndex(matches: number[]): number {
  const sorted = matches.slice().sort((a, b) => b - a);
  return sorted[quorumSize(sorted.length) - 1];
}
