// Figure 8 of the Raft paper (Ongaro & Ousterhout, extended version, §5.4.2):
// why a leader must not commit an entry of an earlier term by counting replicas.
// Five nodes are driven message by message through the public API
// (campaign/step/tick/ready/advance); every message is delivered or dropped
// explicitly by the script, crashes discard the RaftNode and restarts rebuild it
// from what it persisted through ready()/advance(). After every step we check
// state machine safety: no two nodes commit or apply different entries at one index.
//
// Entries are named by (index, term); the entries of the figure are the empty
// entries a new leader appends (node.ts becomeLeader), which is enough: the
// figure is about terms, not payloads. Index 1 (term 1) starts committed everywhere.
//
//   (a) S1 leads term 2, appends 2:t2, replicates it to S2 only, crashes.
//   (b) S5 leads term 3 (votes S3, S4, S5), appends 2:t3, crashes before replicating.
//   (c) S1 restarts, leads term 4 (appends 3:t4), replicates 2:t2 to S3: 2:t2 is now
//       on a majority (S1, S2, S3) but must NOT be committed. We also replicate it to
//       S4 so that the leader *knows* of a majority holding index 2 (S2's copy is
//       invisible to S1: S2 could only acknowledge it together with 3:t4, after which
//       it could no longer vote for S5); a leader that counted replicas of an
//       old-term entry would commit index 2 right there.
//   (d) S1 crashes; S5 is elected in term 5 (votes S2, S3, S4) and overwrites index 2
//       with 2:t3 on every node: nobody may ever have applied 2:t2.
//   (e) instead, S1 first replicates 3:t4 to a majority: 2:t2 and 3:t4 commit, and S5
//       can no longer win an election.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prng } from '../stdx/prng.js';
import { RaftNode } from './node.js';
import type { Entry, HardState, Message, Ready } from './types.js';

const ELECTION_TICKS = 10;
const HEARTBEAT_TICKS = 2;
const IDS = [1, 2, 3, 4, 5];
const PUMP_STEPS_MAX = 10_000;

/**
 * Always the largest randomized election timeout (2*electionTicks - 1), so that
 * ticking a follower electionTicks times expires its leader lease without making
 * it campaign: elections happen only when the script calls campaign().
 */
class LatestTimeoutPrng extends Prng {
  override int(n: number): number {
    return n - 1;
  }
}

interface Stored {
  hardState: HardState;
  entries: Entry[];
}

type MsgPred = (m: Message) => boolean;

function msg(type: Message['type'], from: number, to: number): MsgPred {
  return (m) => m.type === type && m.from === from && m.to === to;
}

function terms(entries: readonly Entry[]): number[] {
  return entries.map((e) => e.term);
}

class Cluster {
  readonly stored = new Map<number, Stored>();
  readonly nodes = new Map<number, RaftNode | null>();
  /** Messages sent and neither delivered nor dropped yet, in send order. */
  outbox: Message[] = [];
  /** Every (index → term) each node ever applied, across restarts. */
  readonly appliedHistory = new Map<number, Map<number, number>>();
  /** index → term of every entry ever known committed (by any node) or applied. */
  readonly committedFacts = new Map<number, number>();

  constructor() {
    for (const id of IDS) {
      this.stored.set(id, { hardState: { term: 1, vote: 0, commit: 1 }, entries: [{ index: 1, term: 1, data: new Uint8Array(0) }] });
      this.appliedHistory.set(id, new Map());
      this.start(id);
    }
    this.check();
  }

  node(id: number): RaftNode {
    const n = this.nodes.get(id);
    assert.ok(n, `S${id} is down`);
    return n;
  }

  start(id: number): void {
    assert.ok(!this.nodes.get(id), `S${id} is already up`);
    const st = this.stored.get(id)!;
    this.nodes.set(
      id,
      new RaftNode({
        id,
        peers: IDS,
        electionTicks: ELECTION_TICKS,
        heartbeatTicks: HEARTBEAT_TICKS,
        prng: new LatestTimeoutPrng(id),
        storage: { hardState: st.hardState, entries: st.entries.slice() },
        maxInflightMsgs: 8,
        // One entry per AppendEntries: the script decides which entries travel.
        maxMsgBytes: 1,
      }),
    );
    this.process(id);
  }

  /** The node loses its memory; messages to or from it that are still in flight are lost. */
  crash(id: number): void {
    this.node(id);
    this.nodes.set(id, null);
    this.drop((m) => m.from === id || m.to === id);
    this.check();
  }

  /** Drive one node's ready loop: persist, queue messages, apply, advance. */
  process(id: number): void {
    const node = this.node(id);
    for (let rd: Ready | null = node.ready(); rd !== null; rd = node.ready()) {
      const st = this.stored.get(id)!;
      if (rd.entries.length > 0) {
        st.entries.length = rd.entries[0].index - 1;
        st.entries.push(...rd.entries);
      }
      if (rd.hardState) st.hardState = rd.hardState;
      this.outbox.push(...rd.messages);
      for (const e of rd.committedEntries) {
        this.appliedHistory.get(id)!.set(e.index, e.term);
        this.fact(e.index, e.term, `S${id} applied`);
      }
      node.advance(rd);
    }
    this.check();
  }

  campaign(id: number): void {
    this.node(id).campaign();
    this.process(id);
  }

  /** Time passes for a follower: one election timeout, enough to expire its leader lease. */
  elapse(id: number): void {
    const n = this.node(id);
    const term = n.term;
    for (let k = 0; k < ELECTION_TICKS; k++) n.tick();
    this.process(id);
    assert.equal(n.term, term, `S${id} started an election while time passed`);
    assert.notEqual(n.role, 'leader');
  }

  /** Deliver the pending messages matching pred (those already queued, in order); returns how many. */
  deliver(pred: MsgPred): number {
    const picked = this.outbox.filter(pred);
    this.outbox = this.outbox.filter((m) => !pred(m));
    for (const m of picked) {
      const to = this.nodes.get(m.to);
      if (!to) continue; // the receiver is down: lost
      to.step(m);
      this.process(m.to);
    }
    return picked.length;
  }

  /** Deliver exactly one pending message matching pred. */
  deliverOne(pred: MsgPred): Message {
    const k = this.outbox.findIndex(pred);
    assert.ok(k >= 0, 'expected message not sent');
    const [m] = this.outbox.splice(k, 1);
    this.node(m.to).step(m);
    this.process(m.to);
    return m;
  }

  drop(pred: MsgPred): number {
    const before = this.outbox.length;
    this.outbox = this.outbox.filter((m) => !pred(m));
    return before - this.outbox.length;
  }

  /** Deliver matching messages, including those they cause, until none is left. */
  pump(pred: MsgPred = () => true): void {
    for (let steps = 0; ; steps++) {
      assert.ok(steps < PUMP_STEPS_MAX, 'message pump does not quiesce');
      const k = this.outbox.findIndex(pred);
      if (k < 0) return;
      const [m] = this.outbox.splice(k, 1);
      const to = this.nodes.get(m.to);
      if (!to) continue;
      to.step(m);
      this.process(m.to);
    }
  }

  private fact(index: number, term: number, who: string): void {
    const known = this.committedFacts.get(index);
    if (known === undefined) this.committedFacts.set(index, term);
    else assert.equal(term, known, `state machine safety: ${who} entry ${index}:t${term} but ${index}:t${known} was committed`);
  }

  /** Safety after every step: committed prefixes of all live nodes agree with everything ever committed. */
  check(): void {
    for (const [id, n] of this.nodes) {
      if (!n) continue;
      const log = n.log.all();
      for (let i = 1; i <= n.log.committed; i++) this.fact(i, log[i - 1].term, `S${id} committed`);
    }
  }

  logTerms(id: number): number[] {
    const n = this.nodes.get(id);
    return terms(n ? n.log.all() : this.stored.get(id)!.entries);
  }
}

function neverAppliedTerm2AtIndex2(c: Cluster): void {
  for (const id of IDS) assert.notEqual(c.appliedHistory.get(id)!.get(2), 2, `S${id} applied 2:t2`);
}

/** Figure 8 (a)–(c); returns the cluster with S1 leader of term 4 and its 3:t4 not yet delivered anywhere. */
function figure8abc(): Cluster {
  const c = new Cluster();

  // (a) S1 leads term 2 and replicates its entry at index 2 to S2 only.
  c.campaign(1);
  assert.equal(c.deliver((m) => m.type === 'vote'), 4); // S2..S5 vote for S1 in term 2
  c.deliverOne(msg('voteResp', 2, 1));
  c.deliverOne(msg('voteResp', 3, 1));
  assert.equal(c.node(1).role, 'leader');
  assert.equal(c.node(1).term, 2);
  c.drop((m) => m.type === 'voteResp');
  assert.deepEqual(c.logTerms(1), [1, 2]);
  c.deliverOne(msg('app', 1, 2));
  assert.deepEqual(c.logTerms(2), [1, 2]);
  c.crash(1); // S2's ack and the appends to S3..S5 are lost
  assert.deepEqual([1, 2, 3, 4, 5].map((id) => c.logTerms(id)), [[1, 2], [1, 2], [1], [1], [1]]);

  // (b) S5 leads term 3 with votes from S3, S4 (S2's log is more up-to-date), appends 2:t3, crashes.
  c.campaign(5);
  assert.equal(c.node(5).term, 3);
  c.drop(msg('vote', 5, 2));
  c.deliver((m) => m.type === 'vote');
  c.deliver((m) => m.type === 'voteResp');
  assert.equal(c.node(5).role, 'leader');
  assert.deepEqual(c.logTerms(5), [1, 3]);
  c.crash(5); // before any append leaves
  assert.deepEqual(c.stored.get(5)!.entries.map((e) => e.term), [1, 3], 'S5 persisted 2:t3');

  // (c) S1 restarts and becomes leader of term 4.
  for (const id of [2, 3, 4]) c.elapse(id); // the followers notice the crashes
  c.start(1);
  c.campaign(1); // term 3 is taken: S3 and S4 already voted for S5 there
  assert.equal(c.node(1).term, 3);
  c.pump((m) => m.type === 'vote' || m.type === 'voteResp');
  assert.equal(c.node(1).role, 'candidate');
  c.campaign(1);
  assert.equal(c.node(1).term, 4);
  c.pump((m) => m.type === 'vote' || m.type === 'voteResp');
  assert.equal(c.node(1).role, 'leader');
  assert.deepEqual(c.logTerms(1), [1, 2, 4]);
  assert.ok(c.outbox.some(msg('app', 1, 2)), 'S1 offers 3:t4 to S2');

  // S1 replicates 2:t2 to S3 (S3 rejects 3:t4 for lack of index 2; S1 backs off).
  const s1s3 = (m: Message) => (m.from === 1 && m.to === 3) || (m.from === 3 && m.to === 1);
  const only2 = (m: Message) => m.type !== 'app' || m.entries.every((e) => e.index <= 2);
  c.deliverOne(msg('app', 1, 3)); // prev 2:t2, [3:t4]: rejected, S3 lacks index 2
  assert.deepEqual(c.logTerms(3), [1]);
  c.pump((m) => s1s3(m) && only2(m));
  assert.deepEqual(c.logTerms(3), [1, 2]);
  assert.equal(c.node(1).progress(3)?.match, 2);
  // 2:t2 is on a majority (S1, S2, S3) yet must not be committed.
  assert.equal(c.node(1).log.committed, 1, 'S1 committed an entry of term 2 by counting replicas');

  // Same with S4: now S1 itself sees a majority (S1, S3, S4) holding index 2.
  const s1s4 = (m: Message) => (m.from === 1 && m.to === 4) || (m.from === 4 && m.to === 1);
  c.deliverOne(msg('app', 1, 4));
  assert.deepEqual(c.logTerms(4), [1]);
  c.pump((m) => s1s4(m) && only2(m));
  assert.deepEqual(c.logTerms(4), [1, 2]);
  assert.equal(c.node(1).progress(4)?.match, 2);
  assert.equal(c.node(1).log.committed, 1, 'S1 committed an entry of term 2 by counting replicas (§5.4.2)');
  for (const id of [1, 2, 3, 4]) assert.ok(c.node(id).log.committed < 2, `S${id} considers index 2 committed`);
  neverAppliedTerm2AtIndex2(c);
  // Nobody but S1 holds 3:t4: its appends to S2, S3, S4, S5 are still in flight.
  assert.deepEqual([2, 3, 4].map((id) => c.logTerms(id)), [[1, 2], [1, 2], [1, 2]]);
  return c;
}

test('figure 8 (d): an old-term entry on a majority is not committed and may be overwritten', () => {
  const c = figure8abc();

  c.crash(1); // 3:t4 never leaves S1
  for (const id of [2, 3, 4]) c.elapse(id);
  c.start(5);
  c.campaign(5); // term 4: S2, S3, S4 already voted for S1
  assert.equal(c.node(5).term, 4);
  c.pump((m) => m.type === 'vote' || m.type === 'voteResp');
  assert.notEqual(c.node(5).role, 'leader');
  c.campaign(5);
  assert.equal(c.node(5).term, 5);
  // §5.4.1: S5's last entry (term 3) is more up-to-date than S2, S3, S4's (term 2).
  const granted: number[] = [];
  for (const from of [2, 3, 4]) {
    c.deliverOne(msg('vote', 5, from));
    const resp = c.outbox.find(msg('voteResp', from, 5));
    assert.ok(resp && resp.type === 'voteResp' && !resp.reject, `S${from} grants S5 its vote`);
    granted.push(from);
    c.deliverOne(msg('voteResp', from, 5));
  }
  assert.deepEqual(granted, [2, 3, 4]);
  assert.equal(c.node(5).role, 'leader');

  c.start(1); // S1 comes back as a follower and is repaired too
  c.pump();
  for (const id of IDS) {
    assert.deepEqual(c.logTerms(id), [1, 3, 5], `S${id} log`);
    assert.equal(c.node(id).log.committed, 3);
    assert.equal(c.appliedHistory.get(id)!.get(2), 3, `S${id} applied 2:t3`);
  }
  neverAppliedTerm2AtIndex2(c);
  assert.equal(c.committedFacts.get(2), 3);
});

test('figure 8 (e): once an entry of the current term is on a majority, the old-term entry commits and S5 cannot win', () => {
  const c = figure8abc();

  // S1 replicates 3:t4 to S2 and S3 (not S4): 3:t4 on S1, S2, S3 commits 3 and hence 2.
  c.pump((m) => [m.from, m.to].every((id) => id === 1 || id === 2 || id === 3));
  assert.deepEqual([1, 2, 3].map((id) => c.logTerms(id)), [[1, 2, 4], [1, 2, 4], [1, 2, 4]]);
  for (const id of [1, 2, 3]) {
    assert.equal(c.node(id).log.committed, 3, `S${id} commit`);
    assert.equal(c.appliedHistory.get(id)!.get(2), 2, `S${id} applied 2:t2`);
    assert.equal(c.appliedHistory.get(id)!.get(3), 4, `S${id} applied 3:t4`);
  }
  assert.deepEqual(c.logTerms(4), [1, 2]);

  // S1 crashes; S5 restarts and campaigns over and over: S2 and S3 hold a term-4
  // entry, so S5 gets at most S4 and itself.
  c.crash(1);
  c.start(5);
  for (const id of [2, 3, 4]) c.elapse(id); // leases expire (no leader is heard from again)
  for (let round = 0; round < 3; round++) {
    c.campaign(5);
    c.pump((m) => m.type === 'vote' || m.type === 'voteResp');
    assert.notEqual(c.node(5).role, 'leader', `S5 won term ${c.node(5).term}`);
    for (const from of [2, 3]) assert.ok(c.node(from).vote !== 5, `S${from} voted for S5`);
  }

  // A node holding the committed entries can still be elected, and repairs S4 and S5.
  c.start(1);
  for (const id of [3, 4, 5]) c.elapse(id);
  c.campaign(2);
  c.pump();
  assert.equal(c.node(2).role, 'leader');
  for (const id of IDS) {
    assert.deepEqual(c.logTerms(id).slice(0, 3), [1, 2, 4], `S${id} log`);
    assert.equal(c.appliedHistory.get(id)!.get(2), 2, `S${id} applied 2:t2`);
  }
  assert.equal(c.committedFacts.get(2), 2);
  assert.equal(c.committedFacts.get(3), 4);
});
