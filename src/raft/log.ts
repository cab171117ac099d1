// The in-memory view of one raft log: entries already in stable storage (given at
// construction) followed by entries appended since and not yet persisted
// ("unstable"). No snapshots yet, so the log always starts at index 1.
//
// Invariants (asserted):
// - entries are contiguous: entries[k].index === k + 1; terms never decrease.
// - applied <= committed <= lastIndex; committed entries are never truncated or
//   replaced (Raft §5.4: State Machine Safety depends on it).
// - stableIndex <= lastIndex: entries at or below it are in the driver's storage;
//   everything above is returned by unstableEntries() until stableTo() confirms it.
// - committed entries are handed out for applying only once persisted locally.
import { assert } from '../stdx/assert.js';
import { type Entry, entryBytes } from './types.js';

export class RaftLog {
  /** entries[k] has index k + 1. */
  private readonly entries: Entry[];
  /** Highest index known to be in stable storage. */
  private stableIndex: number;
  /** Highest index known committed (§5.3). */
  committed: number;
  /** Highest index handed to the state machine and acknowledged by advance(). */
  applied = 0;

  constructor(stable: readonly Entry[], commit: number) {
    for (let k = 0; k < stable.length; k++) {
      assert(stable[k].index === k + 1, `stored entry ${k} has index ${stable[k].index}, want ${k + 1}`);
      assert(k === 0 || stable[k].term >= stable[k - 1].term, `stored entry ${k + 1} has a lower term than its predecessor`);
    }
    this.entries = stable.slice();
    this.stableIndex = stable.length;
    assert(commit >= 0 && commit <= this.entries.length, `stored commit ${commit} beyond stored log ${stable.length}`);
    this.committed = commit;
  }

  lastIndex(): number {
    return this.entries.length;
  }

  lastTerm(): number {
    return this.entries.length === 0 ? 0 : this.entries[this.entries.length - 1].term;
  }

  /** Term of the entry at index, 0 for index 0, undefined beyond the log. */
  term(index: number): number | undefined {
    if (index === 0) return 0;
    if (index < 0 || index > this.entries.length) return undefined;
    return this.entries[index - 1].term;
  }

  entryAt(index: number): Entry | undefined {
    return index >= 1 && index <= this.entries.length ? this.entries[index - 1] : undefined;
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** §5.4.1: is a log ending at (lastIndex, lastTerm) at least as up-to-date as ours? */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const myTerm = this.lastTerm();
    return lastTerm > myTerm || (lastTerm === myTerm && lastIndex >= this.lastIndex());
  }

  /** Leader-side append of new entries at the end of the log. */
  append(ents: readonly Entry[]): void {
    for (const e of ents) {
      assert(e.index === this.entries.length + 1, `append at ${e.index} leaves a gap after ${this.entries.length}`);
      assert(e.term >= this.lastTerm(), 'append with a lower term');
      this.entries.push(e);
    }
  }

  /**
   * Follower-side AppendEntries (§5.3): if our log holds (prevIndex, prevTerm),
   * keep matching entries, truncate from the first conflicting one, append the rest
   * and commit up to min(commit, last new index). Returns the last new index, or
   * undefined when prevIndex/prevTerm do not match (the caller rejects).
   * A stale or reordered message never truncates matching entries beyond it.
   */
  maybeAppend(prevIndex: number, prevTerm: number, commit: number, ents: readonly Entry[]): number | undefined {
    if (!this.matchTerm(prevIndex, prevTerm)) return undefined;
    for (let k = 0; k < ents.length; k++) {
      assert(ents[k].index === prevIndex + 1 + k, 'AppendEntries entries are not contiguous after prevLogIndex');
    }
    const lastNew = prevIndex + ents.length;
    const conflict = this.findConflict(ents);
    if (conflict !== 0) this.truncateAndAppend(ents.slice(conflict - (prevIndex + 1)));
    this.commitTo(Math.min(commit, lastNew));
    return lastNew;
  }

  /** Index of the first entry of ents that is absent or has another term in our log; 0 if all match. */
  findConflict(ents: readonly Entry[]): number {
    for (const e of ents) if (!this.matchTerm(e.index, e.term)) return e.index;
    return 0;
  }

  /**
   * Largest index <= index whose term is <= term (0 at worst). Used for the fast
   * backoff of a rejected AppendEntries: every entry above it is known to conflict.
   */
  findConflictByTerm(index: number, term: number): number {
    let i = Math.min(index, this.lastIndex());
    while (i > 0 && (this.term(i) as number) > term) i--;
    return i;
  }

  private truncateAndAppend(ents: readonly Entry[]): void {
    const first = ents[0].index;
    assert(first > this.committed, `truncating committed entry ${first} (committed ${this.committed})`);
    assert(first <= this.entries.length + 1, 'truncateAndAppend leaves a gap');
    this.entries.length = first - 1;
    if (this.stableIndex >= first) this.stableIndex = first - 1;
    this.append(ents);
  }

  commitTo(index: number): void {
    if (index <= this.committed) return;
    assert(index <= this.lastIndex(), `commit ${index} beyond last index ${this.lastIndex()}: log lost or corrupt`);
    this.committed = index;
  }

  /** §5.4.2: advance commit to index only if that entry is from the current term. */
  maybeCommit(index: number, currentTerm: number): boolean {
    if (index > this.committed && this.term(index) === currentTerm) {
      this.commitTo(index);
      return true;
    }
    return false;
  }

  stable(): number {
    return this.stableIndex;
  }

  /** Entries not yet persisted (to put in Ready). */
  unstableEntries(): Entry[] {
    return this.entries.slice(this.stableIndex);
  }

  /** The driver persisted entries up to (index, term); ignored if the log changed since. */
  stableTo(index: number, term: number): void {
    if (index > this.stableIndex && this.matchTerm(index, term)) this.stableIndex = index;
  }

  /** Committed, persisted and not yet applied entries, in order. */
  nextCommittedEntries(): Entry[] {
    const hi = Math.min(this.committed, this.stableIndex);
    return hi > this.applied ? this.entries.slice(this.applied, hi) : [];
  }

  appliedTo(index: number): void {
    if (index === 0) return;
    assert(index <= this.committed && index >= this.applied, `applied ${index} outside [${this.applied}, ${this.committed}]`);
    this.applied = index;
  }

  /**
   * Entries [lo, hi) with a total size of at most maxBytes, but always at least one
   * entry when lo < hi (an entry larger than maxBytes still has to travel).
   */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    assert(lo >= 1 && hi <= this.lastIndex() + 1 && lo <= hi, `slice [${lo}, ${hi}) outside log 1..${this.lastIndex()}`);
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const e = this.entries[i - 1];
      bytes += entryBytes(e);
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  /** Read-only view of the whole log, for tests and invariant checkers. */
  all(): readonly Entry[] {
    return this.entries;
  }
}
