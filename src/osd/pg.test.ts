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
