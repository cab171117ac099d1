// PgReplica's input bounds (reproducer for a review finding: the inbox was
// bounded only by message count, so a burst of large appends could push one
// pass's WAL batch past the WAL's buffer, whose ERR_LIMIT stopped the OSD).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Message } from '../raft/types.js';
import { Prng } from '../stdx/prng.js';
import type { ObjectStore } from './objects.js';
import { OSD_CONFIG_DEFAULTS } from './osd.js';
import { INBOX_ENTRY_BYTES_MAX, PgReplica, PROPOSAL_BYTES_MAX } from './pg.js';

function replica(): PgReplica {
  const storage = { hardState: { term: 0, vote: 0, commit: 0 }, snapshot: { index: 0, term: 0, conf: { voters: [1, 2, 3], learners: [] } }, entries: [] };
  return new PgReplica({ poolId: 1, pg: 0, pgCount: 1, key: 65536 }, 1, storage, OSD_CONFIG_DEFAULTS.raft, new Prng(1), {} as ObjectStore, () => assert.fail('fatal'));
}

const app = (bytes: number): Message => ({ type: 'app', from: 2, to: 1, term: 1, prevLogIndex: 0, prevLogTerm: 0, commit: 0, entries: [{ term: 1, index: 1, data: new Uint8Array(bytes) }] });

test('inbox: bounded by entry bytes as well as count; one oversized message alone still passes; drive() resets the budget', () => {
  const pg = replica();
  const chunk = 4 * 1024 * 1024;
  let accepted = 0;
  while (pg.enqueue(app(chunk))) accepted++;
  assert.equal(accepted, INBOX_ENTRY_BYTES_MAX / chunk, 'stops at the byte budget');
  assert.equal(pg.enqueue({ type: 'heartbeat', from: 2, to: 1, term: 1, commit: 0, ctx: 0 } as Message), true, 'messages without entries still get in');
  const fresh = replica();
  assert.equal(fresh.enqueue(app(INBOX_ENTRY_BYTES_MAX + 1)), true, 'a single message over the budget is not starved');
  pg.drive(0, 0, () => undefined);
  assert.equal(pg.enqueue(app(chunk)), true, 'budget freed by drive()');
});

test('a replica dropped from the map restarts its grace period when a voter asks for its vote (it may be needed to elect a leader)', () => {
  const pg = replica();
  pg.enqueue({ type: 'vote', from: 2, to: 1, term: 1, lastLogIndex: 0, lastLogTerm: 0 });
  pg.drive(100, 0, () => undefined);
  assert.equal(pg.orphanSinceMs, -1, 'a replica in the map stays so');
  pg.orphanSinceMs = 100;
  pg.enqueue({ type: 'heartbeat', from: 2, to: 1, term: 5, commit: 0, ctx: 0 } as Message);
  pg.drive(200, 0, () => undefined);
  assert.equal(pg.orphanSinceMs, 100, 'other traffic does not');
  pg.enqueue({ type: 'vote', from: 3, to: 1, term: 6, lastLogIndex: 0, lastLogTerm: 0 });
  pg.drive(300, 0, () => undefined);
  assert.equal(pg.orphanSinceMs, 300);
});

test('proposals: bounded by bytes; the refused one is left for the caller to answer Busy', () => {
  const pg = replica();
  const chunk = 4 * 1024 * 1024;
  let accepted = 0;
  while (pg.propose(Buffer.alloc(chunk), () => undefined)) accepted++;
  assert.equal(accepted, PROPOSAL_BYTES_MAX / chunk);
  assert.equal(pg.proposals.length, accepted);
});

test('log compaction keeps at most keepEntries entries and keepBytes of data below the applied point (reproducer: 2.3 GB per OSD after a 2 GiB fill of 1 MiB writes)', async () => {
  const { compactIndex, COMPACT_STEP_ENTRIES } = await import('./osd.js');
  const MiB = 2 ** 20;
  // 1 MiB entries 1..200, all applied: 4 MiB of them stay, entries 197..200.
  assert.equal(compactIndex(200, 0, () => MiB, 1024, 4 * MiB), 196);
  // 4 KiB entries: the count bounds first (1024 stay), in steps of at least COMPACT_STEP_ENTRIES.
  assert.equal(compactIndex(5000, 0, () => 4096, 1024, 4 * MiB + 1), 5000 - 1024);
  assert.equal(compactIndex(5000, 5000 - 1024 - COMPACT_STEP_ENTRIES + 1, () => 4096, 1024, 4 * MiB + 1), null, 'a step under COMPACT_STEP_ENTRIES waits');
  // An entry over keepBytes forces compaction even for a small step: none stays.
  assert.equal(compactIndex(10, 8, () => 8 * MiB, 1024, 4 * MiB), 10);
  // Everything fits: nothing to drop.
  assert.equal(compactIndex(100, 0, () => 4096, 1024, 4 * MiB), null);
});

test('log compaction keeps only keepMinEntries while every peer has the entries, and what the slowest peer lacks up to the caps', async () => {
  const { compactIndex, COMPACT_STEP_ENTRIES } = await import('./osd.js');
  const MiB = 2 ** 20;
  const visits: number[] = [];
  const bytesAt = (i: number) => (visits.push(i), 4096);
  // Every peer holds everything (wanted = top): 64 stay, and the walk visits only
  // those (not the ~1000 the caps would allow).
  assert.equal(compactIndex(5000, 0, bytesAt, 1024, 4 * MiB, 64, 5000), 5000 - 64);
  assert.ok(visits.length <= 64, `walk visited ${visits.length} entries`);
  // A peer at 4500 (behind by 500, within the caps): everything after 4500 stays.
  assert.equal(compactIndex(5000, 0, bytesAt, 1024, 4 * MiB, 64, 4500), 4500);
  // A peer far behind, or unknown (0): the caps bound the log, as without a minimum.
  assert.equal(compactIndex(5000, 0, bytesAt, 1024, 4 * MiB, 64, 0), 5000 - 1024);
  assert.equal(compactIndex(5000, 0, () => MiB, 1024, 4 * MiB, 64, 0), 4996);
  // A peer ahead of the applied point (it holds entries not applied here yet).
  assert.equal(compactIndex(5000, 0, bytesAt, 1024, 4 * MiB, 64, 5100), 5000 - 64);
  // Steps: a compaction under COMPACT_STEP_ENTRIES waits, also for the minimum.
  assert.equal(compactIndex(5000, 5000 - 64 - COMPACT_STEP_ENTRIES + 1, bytesAt, 1024, 4 * MiB, 64, 5000), null);
  // Nothing below the snapshot index, nothing when all of it is wanted.
  assert.equal(compactIndex(100, 90, bytesAt, 1024, 4 * MiB, 64, 100), null);
  assert.equal(compactIndex(100, 0, bytesAt, 1024, 4 * MiB, 64, 0), null);
});

test('repairTermOf: a damaged group votes only for logs as up-to-date as the highest term it saw, entries or hard states; nothing known, no vote', async () => {
  const { repairTermOf } = await import('./osd.js');
  assert.equal(repairTermOf({ hardState: { term: 7, vote: 0, commit: 0 }, maxTermSeen: 5 }), 7, 'the term record outlived the entry records');
  assert.equal(repairTermOf({ hardState: { term: 4, vote: 0, commit: 0 }, maxTermSeen: 6 }), 6);
  assert.equal(repairTermOf({ hardState: { term: 0, vote: 0, commit: 0 } }), undefined);
});

test('membershipStep: a learner is promoted only once it holds the log near the commit index and the conf entry that added it (reproducer: sim seed 1215)', async () => {
  const { membershipStep, PROMOTE_LAG_ENTRIES } = await import('./osd.js');
  const conf = { voters: [1, 3, 4], learners: [2] };
  const target = [1, 2, 4]; // osd.3 was taken out, osd.2 replaces it
  const matchOf = (m: number) => (n: number) => (n === 2 ? m : 10);
  // A short log: commit 3, the learner holds nothing. The lag bound alone (3 - 16 < 0) promoted it.
  assert.equal(membershipStep(3, conf, target, matchOf(0), 3, 3, false), null, 'holds nothing: not promoted');
  assert.equal(membershipStep(3, conf, target, matchOf(2), 3, 3, false), null, 'lacks the conf entry that added it');
  assert.deepEqual(membershipStep(3, conf, target, matchOf(3), 3, 3, false), { type: 'promote', node: 2 });
  assert.equal(membershipStep(3, conf, target, matchOf(3), 3, 3, true), null, 'a snapshot is still being sent');
  // A long log: within PROMOTE_LAG_ENTRIES of the commit index counts as caught up.
  assert.deepEqual(membershipStep(3, conf, target, matchOf(1000 - PROMOTE_LAG_ENTRIES), 1000, 900, false), { type: 'promote', node: 2 });
  assert.equal(membershipStep(3, conf, target, matchOf(1000 - PROMOTE_LAG_ENTRIES - 1), 1000, 900, false), null);
  assert.equal(membershipStep(3, conf, target, () => undefined, 1000, 900, false), null, 'no progress known');
  // The other steps, in order: add the missing, drop a learner the map dropped, then remove extra voters, the leader last.
  assert.deepEqual(membershipStep(3, { voters: [1, 3, 4], learners: [] }, target, matchOf(0), 3, 3, false), { type: 'addLearner', node: 2 });
  assert.deepEqual(membershipStep(3, { voters: [1, 3, 4], learners: [5] }, [1, 3, 4], matchOf(0), 3, 3, false), { type: 'remove', node: 5 });
  assert.deepEqual(membershipStep(3, { voters: [1, 2, 3, 4], learners: [] }, target, matchOf(0), 3, 3, false), { type: 'remove', node: 3 }, 'the leader itself goes last, but here it is the only extra');
  assert.deepEqual(membershipStep(1, { voters: [1, 2, 3, 4, 5], learners: [] }, [2, 4, 5], matchOf(0), 3, 3, false), { type: 'remove', node: 3 }, 'others before the leader');
  assert.equal(membershipStep(1, { voters: [1, 2, 4], learners: [] }, [1, 2, 4], matchOf(0), 3, 3, false), null, 'nothing to do');
});
