// Unit tests of RaftLog around a snapshot point (Raft §7 log compaction):
// terms and entries at and below the point, compaction, and installing a
// snapshot over a log that does or does not hold the snapshot's last entry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AssertionError } from '../stdx/assert.js';
import { RaftLog } from './log.js';
import { ent } from './testkit.js';

function indexes(log: RaftLog): number[] {
  return log.all().map((e) => e.index);
}

test('§7: a log that starts after a snapshot knows the term at the snapshot point and nothing below', () => {
  const log = new RaftLog([ent(6, 2), ent(7, 3)], 6, { index: 5, term: 2 });
  assert.equal(log.firstIndex(), 6);
  assert.equal(log.lastIndex(), 7);
  assert.equal(log.term(5), 2);
  assert.equal(log.term(4), undefined);
  assert.equal(log.term(0), undefined);
  assert.equal(log.entryAt(5), undefined);
  assert.equal(log.entryAt(6)?.term, 2);
  assert.equal(log.applied, 5, 'the snapshot point is applied');
  assert.deepEqual(log.nextCommittedEntries().map((e) => e.index), [6], 'application restarts after the snapshot');
  // An empty log after a snapshot has the snapshot as its last entry (§5.4.1 comparisons use it).
  const empty = new RaftLog([], 5, { index: 5, term: 2 });
  assert.deepEqual([empty.lastIndex(), empty.lastTerm()], [5, 2]);
  assert.ok(empty.maybeAppend(5, 2, 6, [ent(6, 3)]) === 6);
});

test('§7: stored entries must follow the snapshot point and commit must cover it', () => {
  assert.throws(() => new RaftLog([ent(5, 2)], 5, { index: 5, term: 2 }), AssertionError);
  assert.throws(() => new RaftLog([ent(6, 1)], 5, { index: 5, term: 2 }), AssertionError, 'term below the snapshot term');
  assert.throws(() => new RaftLog([ent(6, 2)], 4, { index: 5, term: 2 }), AssertionError);
});

test('§7: compact forgets applied entries only, keeps the term of the new point', () => {
  const log = new RaftLog([ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2)], 4);
  log.appliedTo(3);
  assert.throws(() => log.compact(4), AssertionError, 'beyond applied');
  log.compact(3);
  assert.deepEqual(indexes(log), [4]);
  assert.deepEqual([log.snapshotIndex(), log.snapshotTerm(), log.term(3)], [3, 2, 2]);
  log.compact(2); // below the point: no-op
  assert.equal(log.snapshotIndex(), 3);
  assert.throws(() => log.slice(3, 5, 1 << 20), AssertionError, 'compacted entries cannot be sent');
  assert.deepEqual(log.slice(4, 5, 1 << 20).map((e) => e.index), [4]);
  // fast backoff stops at the snapshot point, or just below it when even that term is too high
  assert.equal(log.findConflictByTerm(4, 2), 4);
  assert.equal(log.findConflictByTerm(4, 1), 2);
  assert.equal(log.findConflictByTerm(1, 1), 1);
});

test('§7: installing a snapshot over a log that holds its last entry keeps (and re-persists) the suffix', () => {
  const log = new RaftLog([ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2)], 1);
  log.restore(3, 2);
  assert.deepEqual(indexes(log), [4]);
  assert.deepEqual([log.committed, log.applied, log.snapshotIndex()], [3, 3, 3]);
  assert.deepEqual(log.unstableEntries().map((e) => e.index), [4], 'the driver replaces its log with the snapshot, then re-appends these');
});

test('§7: installing a snapshot over a conflicting or shorter log discards it', () => {
  const conflicting = new RaftLog([ent(1, 1), ent(2, 1), ent(3, 1), ent(4, 1)], 1);
  conflicting.restore(3, 2);
  assert.deepEqual(indexes(conflicting), []);
  assert.deepEqual([conflicting.lastIndex(), conflicting.lastTerm()], [3, 2]);
  const shorter = new RaftLog([ent(1, 1)], 1);
  shorter.restore(9, 3);
  assert.deepEqual([shorter.lastIndex(), shorter.committed, shorter.unstableEntries().length], [9, 9, 0]);
  assert.throws(() => shorter.restore(8, 3), AssertionError, 'a snapshot below commit is not installed');
  // At the commit point: allowed (a node whose data is gone, node.ts awaitSnapshot).
  shorter.restore(9, 3);
  assert.deepEqual([shorter.lastIndex(), shorter.committed, shorter.applied], [9, 9, 9]);
});
