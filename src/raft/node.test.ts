// Unit tests of the raft core, one rule per test, citing the Raft paper
// (Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm",
// extended version): §5.1 terms, §5.2 leader election, §5.3 log replication,
// §5.4 safety (§5.4.1 election restriction, §5.4.2 committing older-term entries).
// Messages are driven by hand or by a tiny lossless in-memory network (`Net`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prng } from '../stdx/prng.js';
import { AssertionError } from '../stdx/assert.js';
import { RaftNode, type RaftStorage } from './node.js';
import { RaftLog } from './log.js';
import { RaftError } from './errors.js';
import type { Entry, HardState, Message, MsgApp, MsgAppResp, Ready } from './types.js';

const ELECTION_TICKS = 10;
const HEARTBEAT_TICKS = 2;

function ent(index: number, term: number, text = ''): Entry {
  return { index, term, data: new TextEncoder().encode(text) };
}

class MemStorage implements RaftStorage {
  hardState: HardState = { term: 0, vote: 0, commit: 0 };
  entries: Entry[] = [];
  persist(rd: Ready): void {
    if (rd.entries.length > 0) {
      this.entries.length = rd.entries[0].index - 1;
      this.entries.push(...rd.entries);
    }
    if (rd.hardState) this.hardState = rd.hardState;
  }
}

function newNode(id: number, peers: number[], storage = new MemStorage(), opts: Partial<{ maxInflightMsgs: number; maxMsgBytes: number; maxUncommittedEntries: number; seed: number }> = {}) {
  const node = new RaftNode({
    id,
    peers,
    electionTicks: ELECTION_TICKS,
    heartbeatTicks: HEARTBEAT_TICKS,
    prng: new Prng(opts.seed ?? id),
    storage,
    maxInflightMsgs: opts.maxInflightMsgs ?? 4,
    maxMsgBytes: opts.maxMsgBytes ?? 1 << 20,
    maxUncommittedEntries: opts.maxUncommittedEntries,
  });
  return { node, storage };
}

/** Persist, collect messages and advance; returns the messages the node sent. */
function drain(n: { node: RaftNode; storage: MemStorage }, applied?: Entry[]): Message[] {
  const out: Message[] = [];
  for (let rd = n.node.ready(); rd !== null; rd = n.node.ready()) {
    n.storage.persist(rd);
    out.push(...rd.messages);
    applied?.push(...rd.committedEntries);
    n.node.advance(rd);
  }
  return out;
}

/** Lossless network that delivers everything until quiet; `cut` drops messages to/from a node. */
class Net {
  readonly nodes = new Map<number, { node: RaftNode; storage: MemStorage }>();
  readonly applied = new Map<number, Entry[]>();
  cut = new Set<number>();
  constructor(readonly ids: number[]) {
    for (const id of ids) {
      this.nodes.set(id, newNode(id, ids));
      this.applied.set(id, []);
    }
  }
  get(id: number): RaftNode {
    return this.nodes.get(id)!.node;
  }
  stabilize(): void {
    let pending: Message[] = [];
    for (let round = 0; round < 1000; round++) {
      for (const [id, n] of this.nodes) pending.push(...drain(n, this.applied.get(id)));
      if (pending.length === 0) return;
      const now = pending;
      pending = [];
      for (const m of now) {
        if (this.cut.has(m.from) || this.cut.has(m.to)) continue;
        this.get(m.to).step(m);
      }
    }
    assert.fail('network did not stabilize');
  }
  /**
   * Elect by timeout, as in production: with check-quorum, followers that heard
   * from a leader within an election timeout ignore vote requests (the lease),
   * so a hand-triggered campaign would not win. Ticks every uncut node.
   */
  electByTimeout(): number {
    for (let t = 0; t < 10 * ELECTION_TICKS; t++) {
      for (const id of this.ids) if (!this.cut.has(id)) this.get(id).tick();
      this.stabilize();
      const leaders = this.ids.filter((id) => !this.cut.has(id) && this.get(id).role === 'leader');
      if (leaders.length === 1) return leaders[0];
    }
    return assert.fail('no leader elected');
  }
  elect(id: number): void {
    this.get(id).campaign();
    this.stabilize();
    assert.equal(this.get(id).role, 'leader');
  }
}

test('§5.2: a follower times out after a randomized [E, 2E) ticks and campaigns', () => {
  for (let seed = 1; seed <= 50; seed++) {
    const n = newNode(1, [1, 2, 3], new MemStorage(), { seed });
    const timeout = n.node.electionTimeoutTicks;
    assert.ok(timeout >= ELECTION_TICKS && timeout < 2 * ELECTION_TICKS, `timeout ${timeout}`);
    for (let t = 0; t < timeout - 1; t++) n.node.tick();
    assert.equal(n.node.role, 'follower');
    n.node.tick();
    assert.equal(n.node.role, 'candidate');
    assert.equal(n.node.term, 1);
    assert.equal(n.node.vote, 1);
    const rd = n.node.ready()!;
    assert.deepEqual(rd.hardState, { term: 1, vote: 1, commit: 0 }, 'the self-vote is persisted before RequestVote leaves');
    assert.deepEqual(rd.messages.map((m) => [m.type, m.to]), [['vote', 2], ['vote', 3]]);
    n.node.advance(rd);
  }
});

test('§5.2: a candidate with a majority of votes becomes leader and replicates an empty entry of its term', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  assert.equal(net.get(2).leaderId, 1);
  assert.equal(net.get(3).leaderId, 1);
  for (const id of [1, 2, 3]) {
    assert.deepEqual(net.get(id).log.all().map((e) => [e.index, e.term]), [[1, 1]]);
    assert.equal(net.get(id).log.committed, 1, `commit on node ${id}`);
  }
});

test('§5.2: a node grants at most one vote per term', () => {
  const n = newNode(1, [1, 2, 3]);
  n.node.step({ type: 'vote', from: 2, to: 1, term: 1, lastLogIndex: 0, lastLogTerm: 0 });
  n.node.step({ type: 'vote', from: 3, to: 1, term: 1, lastLogIndex: 0, lastLogTerm: 0 });
  n.node.step({ type: 'vote', from: 2, to: 1, term: 1, lastLogIndex: 0, lastLogTerm: 0 }); // a duplicate is re-granted
  const rd = n.node.ready()!;
  assert.deepEqual(rd.hardState, { term: 1, vote: 2, commit: 0 });
  assert.deepEqual(rd.messages.map((m) => [m.to, m.type === 'voteResp' && m.reject]), [[2, false], [3, true], [2, false]]);
  n.node.advance(rd);
});

test('§5.4.1: a candidate whose log is less up-to-date gets no vote', () => {
  const st = new MemStorage();
  st.entries = [ent(1, 1), ent(2, 2), ent(3, 2)];
  st.hardState = { term: 2, vote: 0, commit: 1 };
  const n = newNode(1, [1, 2, 3], st);
  // lower last term, even with a longer log
  n.node.step({ type: 'vote', from: 2, to: 1, term: 3, lastLogIndex: 9, lastLogTerm: 1 });
  // same last term, shorter log
  n.node.step({ type: 'vote', from: 3, to: 1, term: 4, lastLogIndex: 2, lastLogTerm: 2 });
  let rd = n.node.ready()!;
  assert.deepEqual(rd.messages.map((m) => m.type === 'voteResp' && m.reject), [true, true]);
  assert.equal(n.node.vote, 0);
  n.node.advance(rd);
  // same last term, same length: granted
  n.node.step({ type: 'vote', from: 3, to: 1, term: 5, lastLogIndex: 3, lastLogTerm: 2 });
  rd = n.node.ready()!;
  assert.equal(rd.messages[0].type === 'voteResp' && rd.messages[0].reject, false);
  n.node.advance(rd);
});

test('§5.2 liveness: a candidate yields to a rival of its term with a longer log, keeping its vote; never to one with a log no longer (raft sim seed 300843)', () => {
  const st = new MemStorage();
  st.entries = [ent(1, 1), ent(2, 2), ent(3, 2)];
  st.hardState = { term: 2, vote: 0, commit: 1 };
  const n = newNode(1, [1, 2, 3], st);
  n.node.campaign();
  drain(n);
  assert.equal(n.node.role, 'candidate');
  assert.equal(n.node.term, 3);
  // A rival of term 3 with a log no longer than ours (same last term, same length): refused, we stay candidate.
  n.node.step({ type: 'vote', from: 2, to: 1, term: 3, lastLogIndex: 3, lastLogTerm: 2 });
  let out = drain(n);
  assert.deepEqual(out.map((m) => m.type === 'voteResp' && m.reject), [true]);
  assert.equal(n.node.role, 'candidate');
  // A rival of term 3 whose log is longer: still refused (we voted for ourselves), but we step back.
  n.node.step({ type: 'vote', from: 3, to: 1, term: 3, lastLogIndex: 4, lastLogTerm: 2 });
  out = drain(n);
  assert.deepEqual(out.map((m) => m.type === 'voteResp' && m.reject), [true]);
  assert.equal(n.node.role, 'follower');
  assert.equal(n.node.term, 3);
  assert.equal(n.node.vote, 1, 'the vote of term 3 is kept');
  // The rival's next term gets our vote.
  n.node.step({ type: 'vote', from: 3, to: 1, term: 4, lastLogIndex: 4, lastLogTerm: 2 });
  out = drain(n);
  assert.deepEqual(out.map((m) => m.type === 'voteResp' && m.reject), [false]);
  assert.equal(n.node.vote, 3);
});

test('§5.3: a follower rejects AppendEntries whose prevLogTerm does not match, with a backoff hint', () => {
  const st = new MemStorage();
  st.entries = [ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2)];
  st.hardState = { term: 3, vote: 0, commit: 1 };
  const n = newNode(2, [1, 2, 3], st);
  n.node.step({ type: 'app', from: 1, to: 2, term: 3, prevLogIndex: 4, prevLogTerm: 3, entries: [ent(5, 3)], commit: 4 });
  const rd = n.node.ready()!;
  const r = rd.messages[0] as MsgAppResp;
  assert.equal(r.reject, true);
  assert.equal(r.index, 4);
  // our entries with terms above 3 cannot match; 4 has term 2 <= 3, so the hint is 4 at term 2
  assert.deepEqual([r.rejectHint, r.hintTerm], [4, 2]);
  assert.equal(n.node.log.lastIndex(), 4, 'log unchanged');
  assert.equal(n.node.log.committed, 1, 'commit does not advance on a reject');
  n.node.advance(rd);
});

test('§5.3: a follower truncates a conflicting uncommitted suffix and appends the leader entries', () => {
  const st = new MemStorage();
  st.entries = [ent(1, 1), ent(2, 2, 'old'), ent(3, 2, 'old')];
  st.hardState = { term: 3, vote: 0, commit: 1 };
  const n = newNode(2, [1, 2, 3], st);
  n.node.step({ type: 'app', from: 1, to: 2, term: 3, prevLogIndex: 1, prevLogTerm: 1, entries: [ent(2, 3, 'new')], commit: 2 });
  const rd = n.node.ready()!;
  assert.deepEqual(rd.entries.map((e) => [e.index, e.term]), [[2, 3]], 'persist from the conflict point');
  assert.equal(rd.hardState?.commit, 2);
  assert.deepEqual(n.node.log.all().map((e) => [e.index, e.term]), [[1, 1], [2, 3]]);
  n.node.advance(rd);
  st.persist(rd);
});

test('§5.3: a stale, reordered AppendEntries does not truncate entries that match', () => {
  const st = new MemStorage();
  st.entries = [ent(1, 1), ent(2, 1), ent(3, 1)];
  st.hardState = { term: 1, vote: 0, commit: 0 };
  const n = newNode(2, [1, 2, 3], st);
  n.node.step({ type: 'app', from: 1, to: 2, term: 1, prevLogIndex: 0, prevLogTerm: 0, entries: [ent(1, 1)], commit: 0 });
  assert.equal(n.node.log.lastIndex(), 3);
  const r = n.node.ready()!.messages[0] as MsgAppResp;
  assert.equal(r.index, 1, 'acknowledges only what the message proved');
});

test('§5.4: truncating a committed entry is an assertion failure', () => {
  const log = new RaftLog([ent(1, 1), ent(2, 1)], 2);
  assert.throws(() => log.maybeAppend(1, 1, 2, [ent(2, 2)]), AssertionError);
});

test('§5.4.2: a leader does not commit an entry of an older term by counting replicas (Figure 8)', () => {
  // Node 1 holds (1,1),(2,2) from an old leader of term 2; it is elected in term 4.
  const st = new MemStorage();
  st.entries = [ent(1, 1), ent(2, 2, 'x')];
  st.hardState = { term: 3, vote: 0, commit: 1 };
  const n = newNode(1, [1, 2, 3], st);
  n.node.campaign();
  drain(n);
  n.node.step({ type: 'voteResp', from: 2, to: 1, term: 4, reject: false });
  assert.equal(n.node.role, 'leader');
  drain(n); // persists the empty entry (3, 4)
  // Follower 2 holds index 2 but not yet 3: a majority holds (2, 2), yet it must not commit.
  n.node.step({ type: 'appResp', from: 2, to: 1, term: 4, reject: false, index: 2, rejectHint: 0, hintTerm: 0 });
  drain(n);
  assert.equal(n.node.log.committed, 1);
  // Once a majority holds (3, 4), both commit together.
  n.node.step({ type: 'appResp', from: 2, to: 1, term: 4, reject: false, index: 3, rejectHint: 0, hintTerm: 0 });
  drain(n);
  assert.equal(n.node.log.committed, 3);
});

test('§5.1: a stale leader is rejected after a new term and steps down on the answer', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.cut.add(1);
  const newLeader = net.electByTimeout(); // term 2 without node 1
  const other = newLeader === 2 ? 3 : 2;
  const old = net.get(1);
  assert.equal(old.role, 'leader');
  assert.equal(old.term, 1);
  const idx = old.propose(new Uint8Array([7]));
  assert.equal(typeof idx, 'number');
  const msgs = drain(net.nodes.get(1)!);
  const toOther = msgs.find((m) => m.to === other && m.type === 'app')!;
  const before = net.get(other).log.all().slice();
  net.get(other).step(toOther);
  assert.deepEqual(net.get(other).log.all(), before, 'stale AppendEntries leaves the log untouched');
  const answer = drain(net.nodes.get(other)!).find((m) => m.to === 1)!;
  const newTerm = net.get(newLeader).term;
  assert.ok(newTerm > 1);
  assert.equal(answer.term, newTerm);
  old.step(answer);
  assert.equal(old.role, 'follower');
  assert.equal(old.term, newTerm);
  net.cut.clear();
  for (let t = 0; t < HEARTBEAT_TICKS; t++) net.get(newLeader).tick();
  net.stabilize();
  // §5.3: the new leader overwrites the old leader's uncommitted entry
  for (const id of [1, 2, 3]) assert.deepEqual(net.get(id).log.all().map((e) => [e.index, e.term]), [[1, 1], [2, newTerm]]);
});

test('§5.3: fast backoff repairs a follower with a long divergent uncommitted suffix', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  // Node 1 appends 30 entries no one else receives, then loses leadership.
  net.cut.add(1);
  for (let i = 0; i < 30; i++) net.get(1).propose(new Uint8Array([i]));
  net.stabilize();
  const l = net.electByTimeout();
  for (let i = 0; i < 5; i++) net.get(l).propose(new Uint8Array([100 + i]));
  net.stabilize();
  net.cut.clear();
  // node 1 steps down by check-quorum; a heartbeat round then reaches it and it is repaired
  for (let t = 0; t < ELECTION_TICKS; t++) net.get(1).tick();
  net.stabilize();
  assert.equal(net.get(1).role, 'follower');
  for (let t = 0; t < HEARTBEAT_TICKS; t++) net.get(l).tick();
  let appsToOne = 0;
  for (let round = 0; round < 50; round++) {
    let moved = false;
    for (const [, n] of net.nodes) {
      for (const m of drain(n)) {
        if (m.to === 1 && m.type === 'app') appsToOne++;
        net.get(m.to).step(m);
        moved = true;
      }
    }
    if (!moved) break;
  }
  assert.deepEqual(net.get(1).log.all(), net.get(l).log.all());
  assert.equal(net.get(1).log.committed, net.get(l).log.committed);
  assert.ok(appsToOne <= 4, `repair took ${appsToOne} AppendEntries`);
});

test('propose: a follower answers ERR_RAFT_NOT_LEADER with a leader hint; the uncommitted limit gives ERR_LIMIT', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  const r = net.get(2).propose(new Uint8Array(1));
  assert.ok(r instanceof RaftError);
  assert.equal(r.code, 'ERR_RAFT_NOT_LEADER');
  assert.equal(r.leaderId, 1);
  const st = newNode(1, [1], new MemStorage(), { maxUncommittedEntries: 3 });
  st.node.campaign();
  assert.equal(st.node.role, 'leader');
  // the empty entry of the new term counts as uncommitted until persisted
  assert.equal(st.node.propose(new Uint8Array(1)), 2);
  assert.equal(st.node.propose(new Uint8Array(1)), 3);
  const full = st.node.propose(new Uint8Array(1));
  assert.ok(full instanceof RaftError && full.code === 'ERR_LIMIT');
  const applied: Entry[] = [];
  drain(st, applied);
  assert.equal(st.node.log.committed, 3, 'a single node commits once it has persisted');
  assert.deepEqual(applied.map((e) => e.index), [1, 2, 3]);
  assert.equal(st.node.propose(new Uint8Array(1)), 4);
});

test('§5.3 flow control: at most maxInflightMsgs AppendEntries are in flight to a silent follower', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  const leader = net.nodes.get(1)!;
  for (let i = 0; i < 20; i++) {
    leader.node.propose(new Uint8Array([i]));
  }
  const msgs = drain(leader);
  assert.equal(msgs.filter((m) => m.to === 2 && m.type === 'app').length, 4);
  assert.equal(leader.node.progress(2)!.inflights.count(), 4);
  // an acknowledgment frees slots and the rest streams
  const lastSent = (msgs.filter((m) => m.to === 2 && m.type === 'app').at(-1) as MsgApp).entries.at(-1)!.index;
  assert.equal(lastSent, 5);
  leader.node.step({ type: 'appResp', from: 2, to: 1, term: 1, reject: false, index: lastSent, rejectHint: 0, hintTerm: 0 });
  // the freed window streams the rest (one message here: maxMsgBytes is large)
  const more = drain(leader).filter((m): m is MsgApp => m.to === 2 && m.type === 'app');
  assert.deepEqual(more.flatMap((m) => m.entries.map((e) => e.index)), Array.from({ length: 16 }, (_, k) => 6 + k));
});

test('§5.3: AppendEntries are bounded by maxMsgBytes but always carry at least one entry', () => {
  const st = newNode(1, [1, 2], new MemStorage(), { maxMsgBytes: 200, maxInflightMsgs: 100 });
  st.node.campaign();
  drain(st);
  st.node.step({ type: 'voteResp', from: 2, to: 1, term: 1, reject: false });
  drain(st);
  st.node.step({ type: 'appResp', from: 2, to: 1, term: 1, reject: false, index: 1, rejectHint: 0, hintTerm: 0 });
  drain(st);
  for (let i = 0; i < 6; i++) st.node.propose(new Uint8Array(60)); // 84 bytes each with overhead
  const apps = drain(st).filter((m) => m.type === 'app');
  for (const m of apps) {
    const bytes = (m as MsgApp).entries.reduce((s, e) => s + e.data.length + 24, 0);
    assert.ok(bytes <= 200, `message of ${bytes} bytes`);
  }
  assert.ok(st.node.propose(new Uint8Array(300)) instanceof RaftError, 'an entry larger than a message is refused');
});

test('check-quorum: a leader that hears from no quorum for an election timeout steps down', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.cut.add(1);
  for (let t = 0; t < 2 * ELECTION_TICKS && net.get(1).role === 'leader'; t++) {
    net.get(1).tick();
    net.stabilize();
  }
  assert.equal(net.get(1).role, 'follower');
  assert.equal(net.get(1).term, 1, 'stepping down does not start a new term');
});

test('check-quorum lease: a follower with a live leader ignores a higher-term vote request', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.get(2).step({ type: 'vote', from: 3, to: 2, term: 5, lastLogIndex: 9, lastLogTerm: 9 });
  assert.equal(net.get(2).term, 1);
  assert.equal(net.nodes.get(2)!.node.hasReady(), false);
});

test('broadcastCommit false: a commit costs no extra messages; followers learn it from the next heartbeat', () => {
  const mk = (id: number) => {
    const storage = new MemStorage();
    return { node: new RaftNode({ id, peers: [1, 2, 3], electionTicks: ELECTION_TICKS, heartbeatTicks: HEARTBEAT_TICKS, prng: new Prng(id), storage, maxInflightMsgs: 4, maxMsgBytes: 1 << 20, broadcastCommit: false }), storage };
  };
  const net = new Net([1, 2, 3]);
  for (const id of [1, 2, 3]) net.nodes.set(id, mk(id));
  net.elect(1);
  for (let t = 0; t < HEARTBEAT_TICKS; t++) net.get(1).tick();
  net.stabilize();
  const idx = net.get(1).propose(new TextEncoder().encode('x')) as number;
  // Leader → appends; followers → appResps; leader commits and sends nothing more.
  const leaderOut = drain(net.nodes.get(1)!);
  assert.deepEqual(leaderOut.map((m) => m.type), ['app', 'app']);
  for (const m of leaderOut) net.get(m.to).step(m);
  const acks = [...drain(net.nodes.get(2)!), ...drain(net.nodes.get(3)!)];
  assert.deepEqual(acks.map((m) => m.type), ['appResp', 'appResp']);
  for (const m of acks) net.get(1).step(m);
  assert.equal(net.get(1).commit, idx, 'the leader committed');
  assert.deepEqual(drain(net.nodes.get(1)!).map((m) => m.type), [], 'no commit broadcast');
  assert.ok(net.get(2).commit < idx, 'the follower does not know yet');
  for (let t = 0; t < HEARTBEAT_TICKS; t++) net.get(1).tick();
  net.stabilize();
  assert.equal(net.get(2).commit, idx, 'learned from the heartbeat');
  assert.equal(net.get(3).commit, idx);
});

test('retain: the leader\'s heartbeats carry its lowest peer match; followers keep it until the term changes', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  const enc = new TextEncoder();
  for (let k = 0; k < 3; k++) net.get(1).propose(enc.encode(`a${k}`));
  net.stabilize();
  const last = net.get(1).lastIndex;
  assert.equal(net.get(1).minPeerMatch(), last, 'every peer holds everything');
  assert.equal(net.get(2).minPeerMatch(), null, 'not the leader');
  for (let t = 0; t < HEARTBEAT_TICKS; t++) net.get(1).tick();
  net.stabilize();
  assert.equal(net.get(2).leaderRetain, last);
  assert.equal(net.get(3).leaderRetain, last);
  // Node 3 is cut off: the leader's lowest peer match stays where 3 stopped, and
  // node 2 learns that, so it would keep those entries should it lead.
  net.cut.add(3);
  for (let k = 0; k < 5; k++) net.get(1).propose(enc.encode(`b${k}`));
  net.stabilize();
  for (let t = 0; t < HEARTBEAT_TICKS; t++) net.get(1).tick();
  net.stabilize();
  assert.equal(net.get(1).minPeerMatch(), last);
  assert.equal(net.get(2).leaderRetain, last);
  assert.equal(net.get(2).commit, last + 5);
  // A new term forgets it (0: unknown) until the new leader says otherwise.
  net.cut.clear();
  net.cut.add(1);
  const leader = net.electByTimeout();
  assert.notEqual(leader, 1);
  const follower = leader === 2 ? 3 : 2;
  assert.equal(net.get(leader).leaderRetain, 0);
  for (let t = 0; t < HEARTBEAT_TICKS; t++) net.get(leader).tick();
  net.stabilize();
  assert.equal(net.get(follower).leaderRetain, net.get(leader).minPeerMatch(), 'the new leader\'s figure (node 1 unreachable: its match is 0)');
  assert.equal(net.get(follower).leaderRetain, 0);
});

test('voteQuietTicksAfterStart: a (re)started node refuses higher-term votes for that many ticks, then grants them', () => {
  const node = new RaftNode({ id: 2, peers: [1, 2, 3], electionTicks: ELECTION_TICKS, heartbeatTicks: HEARTBEAT_TICKS, prng: new Prng(2), storage: new MemStorage(), maxInflightMsgs: 4, maxMsgBytes: 1 << 20, voteQuietTicksAfterStart: 3 });
  const vote = (term: number): Message => ({ type: 'vote', from: 3, to: 2, term, lastLogIndex: 0, lastLogTerm: 0 });
  node.step(vote(1));
  assert.equal(node.term, 0, 'ignored during the quiet period');
  for (let t = 0; t < 3; t++) node.tick();
  node.step(vote(1));
  assert.equal(node.term, 1);
  const rd = node.ready();
  assert.ok(rd?.messages.some((m) => m.type === 'voteResp' && !(m as { reject?: boolean }).reject), 'the vote is granted after the quiet period');
});

test('restart: a node recovers term, vote, log and commit from storage and reapplies committed entries', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.get(1).propose(new TextEncoder().encode('a'));
  net.stabilize();
  for (let t = 0; t < HEARTBEAT_TICKS; t++) net.get(1).tick();
  net.stabilize();
  const st = net.nodes.get(3)!.storage;
  const re = newNode(3, [1, 2, 3], st);
  assert.equal(re.node.term, 1);
  assert.equal(re.node.log.committed, 2);
  const applied: Entry[] = [];
  drain(re, applied);
  assert.deepEqual(applied.map((e) => e.index), [1, 2]);
});
