// The in-memory view of one raft log: an optional snapshot point (everything up
// to snapshotIndex is folded into the state machine and its entries are gone,
// Raft §7), then entries already in stable storage (given at construction),
// then entries appended since and not yet persisted ("unstable").
//
// Invariants (asserted):
// - entries are contiguous after the snapshot point: entries[k].index ===
//   snapshotIndex + 1 + k; terms never decrease and never go below snapshotTerm.
//   term(snapshotIndex) = snapshotTerm; indexes below it have no known term.
// - snapshotIndex <= applied <= committed <= lastIndex; committed entries are
//   never truncated or replaced (Raft §5.4: State Machine Safety depends on it).
// - snapshotIndex <= stableIndex <= lastIndex: entries at or below stableIndex are
//   in the driver's storage; everything above is returned by unstableEntries()
//   until stableTo() confirms it.
// - committed entries are handed out for applying only once persisted locally.
import { assert, fail } from '../stdx/assert.js';
import { type Entry, entryBytes } from './types.js';

export class RaftLog {
  /** entries[k] has index snapIndex + 1 + k. */
  private entries: Entry[];
  /** Index and term of the last entry folded into the snapshot (0, 0 without one). */
  private snapIndex: number;
  private snapTerm: number;
  /** Highest index known to be in stable storage. */
  private stableIndex: number;
  /** Highest index known committed (§5.3). */
  committed: number;
  /** Highest index handed to the state machine and acknowledged by advance() (or installed by a snapshot). */
  applied: number;

  constructor(stable: readonly Entry[], commit: number, snapshot: { index: number; term: number } = { index: 0, term: 0 }) {
    assert(Number.isSafeInteger(snapshot.index) && snapshot.index >= 0 && snapshot.term >= 0, 'bad snapshot point');
    assert(snapshot.index > 0 || snapshot.term === 0, 'a snapshot at index 0 must have term 0');
    for (let k = 0; k < stable.length; k++) {
      const want = snapshot.index + 1 + k;
      if (!(stable[k].index === want)) fail(`stored entry ${k} has index ${stable[k].index}, want ${want}`);
      const prevTerm = k === 0 ? snapshot.term : stable[k - 1].term;
      if (!(stable[k].term >= prevTerm)) fail(`stored entry ${want} has a lower term than its predecessor`);
    }
    this.entries = stable.slice();
    this.snapIndex = snapshot.index;
    this.snapTerm = snapshot.term;
    this.stableIndex = this.lastIndex();
    if (!(commit >= snapshot.index && commit <= this.lastIndex())) fail(`stored commit ${commit} outside [${snapshot.index}, ${this.lastIndex()}]`);
    this.committed = commit;
    this.applied = snapshot.index;
  }

  snapshotIndex(): number {
    return this.snapIndex;
  }

  snapshotTerm(): number {
    return this.snapTerm;
  }

  /** First index still held as an entry. */
  firstIndex(): number {
    return this.snapIndex + 1;
  }

  lastIndex(): number {
    return this.snapIndex + this.entries.length;
  }

  lastTerm(): number {
    return this.entries.length === 0 ? this.snapTerm : this.entries[this.entries.length - 1].term;
  }

  /** Term of the entry at index: snapshotTerm at snapshotIndex (0 at 0), undefined if compacted away or beyond the log. */
  term(index: number): number | undefined {
    if (index === this.snapIndex) return this.snapTerm;
    if (index < this.snapIndex || index > this.lastIndex()) return undefined;
    return this.entries[index - this.snapIndex - 1].term;
  }

  entryAt(index: number): Entry | undefined {
    return index > this.snapIndex && index <= this.lastIndex() ? this.entries[index - this.snapIndex - 1] : undefined;
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
      if (!(e.index === this.lastIndex() + 1)) fail(`append at ${e.index} leaves a gap after ${this.lastIndex()}`);
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
   * The caller guarantees prevIndex >= committed >= snapshotIndex.
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
   * Largest index <= index whose term is <= term. Used for the fast backoff of a
   * rejected AppendEntries: every entry above it is known to conflict. Below the
   * snapshot point terms are unknown: an index there comes back as is, and if even
   * the snapshot point's term is above `term` the answer is snapshotIndex - 1 —
   * either way the leader then has to send a snapshot.
   */
  findConflictByTerm(index: number, term: number): number {
    let i = Math.min(index, this.lastIndex());
    while (i > this.snapIndex && (this.term(i) as number) > term) i--;
    if (i === this.snapIndex && i > 0 && this.snapTerm > term) return i - 1;
    return i;
  }

  private truncateAndAppend(ents: readonly Entry[]): void {
    const first = ents[0].index;
    if (!(first > this.committed)) fail(`truncating committed entry ${first} (committed ${this.committed})`);
    assert(first <= this.lastIndex() + 1, 'truncateAndAppend leaves a gap');
    this.entries.length = first - 1 - this.snapIndex;
    if (this.stableIndex >= first) this.stableIndex = first - 1;
    this.append(ents);
  }

  commitTo(index: number): void {
    if (index <= this.committed) return;
    if (!(index <= this.lastIndex())) fail(`commit ${index} beyond last index ${this.lastIndex()}: log lost or corrupt`);
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
  /** unstableEntries().length > 0, without copying them. */
  hasUnstableEntries(): boolean {
    return this.lastIndex() > this.stableIndex;
  }

  unstableEntries(): Entry[] {
    return this.entries.slice(this.stableIndex - this.snapIndex);
  }

  /** The driver persisted entries up to (index, term); ignored if the log changed since. */
  stableTo(index: number, term: number): void {
    if (index > this.stableIndex && this.matchTerm(index, term)) this.stableIndex = index;
  }

  /** Committed, persisted and not yet applied entries, in order. */
  nextCommittedEntries(): Entry[] {
    const hi = Math.min(this.committed, this.stableIndex);
    return hi > this.applied ? this.entries.slice(this.applied - this.snapIndex, hi - this.snapIndex) : [];
  }

  hasNextCommittedEntries(): boolean {
    return Math.min(this.committed, this.stableIndex) > this.applied;
  }

  appliedTo(index: number): void {
    if (index === 0) return;
    if (!(index <= this.committed && index >= this.applied)) fail(`applied ${index} outside [${this.applied}, ${this.committed}]`);
    this.applied = index;
  }

  /**
   * Entries [lo, hi) with a total size of at most maxBytes, but always at least one
   * entry when lo < hi (an entry larger than maxBytes still has to travel).
   */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    if (!(lo > this.snapIndex && hi <= this.lastIndex() + 1 && lo <= hi)) fail(`slice [${lo}, ${hi}) outside log ${this.firstIndex()}..${this.lastIndex()}`);
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const e = this.entries[i - this.snapIndex - 1];
      bytes += entryBytes(e);
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  /** Log compaction (§7): forget entries up to index, which the state machine has applied. */
  compact(index: number): void {
    if (!(index <= this.applied)) fail(`compacting to ${index} beyond applied ${this.applied}`);
    if (index <= this.snapIndex) return;
    const term = this.term(index) as number;
    this.entries = this.entries.slice(index - this.snapIndex);
    this.snapTerm = term;
    this.snapIndex = index;
  }

  /**
   * Install a snapshot newer than our commit (§7). If our log holds (index, term),
   * the entries after it follow the leader's log up to there (Log Matching) and
   * are kept; otherwise the whole log is discarded. Kept entries are marked
   * unstable again because the driver replaces its whole stored log with the
   * snapshot and must then re-persist them.
   */
  restore(index: number, term: number): void {
    // At the commit point too: a node whose state machine data is gone takes one there (node.ts awaitSnapshot).
    if (!(index >= this.committed)) fail(`restoring snapshot ${index} below commit ${this.committed}`);
    this.entries = this.matchTerm(index, term) ? this.entries.slice(index - this.snapIndex) : [];
    this.snapIndex = index;
    this.snapTerm = term;
    this.stableIndex = index;
    this.committed = index;
    this.applied = index;
  }

  /** Read-only view of the entries held (those after the snapshot point), for tests and invariant checkers. */
  all(): readonly Entry[] {
    return this.entries;
  }
}
