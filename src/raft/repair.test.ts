// Repair of a node whose stored log was damaged in the middle (RaftConfig
// repairUntilIndex). Raft's election restriction (§5.4.1) assumes that what a
// node acknowledged stays in its log; a damaged node may have acknowledged
// committed entries it lost, so until a leader has replicated its log past the
// damage it must not campaign, and may vote only for a candidate whose log is at
// least as up-to-date as the one it lost (repairUntilTerm; no vote without it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HEARTBEAT_TICKS, MemStorage, Net, drain, ent, newNode, text } from './testkit.js';
import type { MsgVoteResp } from './types.js';

/** Node `id` restarts keeping only its first `keep` entries (the driver cut the log at the damage). */
function damage(net: Net, id: number, keep: number): number {
  const st = net.nodes.get(id)!.storage;
  const lastIndex = st.entries.length;
  const cut = new MemStorage();
  cut.hardState = st.hardState;
  cut.entries = st.entries.slice(0, keep);
  net.nodes.get(id)!.storage = cut;
  net.restart(id, { peers: [1, 2, 3], repairUntilIndex: lastIndex });
  return lastIndex;
}

test('repair: a damaged node neither campaigns nor grants votes; its stored commit is lowered to its log', () => {
  const st = new MemStorage();
  st.entries = [ent(1, 1), ent(2, 1), ent(3, 1)];
  st.hardState = { term: 1, vote: 0, commit: 5 };
  const n = newNode(2, { peers: [1, 2, 3], storage: st, repairUntilIndex: 6 });
  assert.equal(n.node.status().repairing, true);
  assert.equal(n.node.commit, 3);
  for (let t = 0; t < 100; t++) n.node.tick();
  n.node.campaign();
  assert.equal(n.node.role, 'follower');
  assert.equal(n.node.term, 1);
  n.node.step({ type: 'vote', from: 3, to: 2, term: 2, lastLogIndex: 9, lastLogTerm: 1 });
  const resp = drain(n).find((m) => m.type === 'voteResp') as MsgVoteResp;
  assert.equal(resp.reject, true);
});

test('repair (§5.4.1): a damaged node refuses the vote that would elect a leader missing a committed entry', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.cut.add(2);
  const x = net.propose(1, 'x'); // committed on 1 and 3
  net.heartbeat(1);
  assert.equal(net.get(3).commit, x);
  damage(net, 3, x - 1); // node 3 loses x
  net.cut = new Set([1]); // the only other holder of x is gone
  for (let t = 0; t < 10 * 10; t++) net.tick([2, 3]);
  assert.notEqual(net.get(2).role, 'leader', 'node 2 lacks committed entry x');
  assert.notEqual(net.get(3).role, 'leader');
  // Once node 1 is back, the leader repairs node 3.
  net.cut.clear();
  let l = 0;
  for (let t = 0; t < 100 && l === 0; t++) {
    net.tick();
    l = [1, 2, 3].find((id) => net.get(id).role === 'leader' && net.get(id).term > 1) ?? 0;
  }
  assert.equal(l, 1, 'only node 1 holds x and can win');
  net.propose(l, 'y');
  net.heartbeat(l);
  assert.equal(net.get(3).repairing, false);
  assert.equal(net.get(3).log.entryAt(x)!.term, net.get(1).log.entryAt(x)!.term);
});

test('repair: a leader that believes the damaged node holds more is told to reset, then replicates past the damage', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  for (let i = 0; i < 5; i++) net.propose(1, `v${i}`);
  net.heartbeat(1);
  assert.equal(net.get(1).progress(3)!.match, 6);
  damage(net, 3, 2);
  assert.equal(net.get(3).repairing, true);
  net.heartbeat(1); // heartbeat commit 6 > its last index 2: it answers with a reset
  assert.equal(net.get(3).repairing, false);
  assert.deepEqual(net.get(3).log.all(), net.get(1).log.all());
  assert.equal(net.get(3).commit, 6);
});

test('repair: a damaged tail beyond the leader log stays under repair until the leader log passes it; a snapshot also repairs', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.propose(1, 'a');
  net.heartbeat(1);
  // Node 3 claims it held up to index 6 (uncommitted entries of some old leader, say).
  const st = net.nodes.get(3)!.storage;
  net.restart(3, { storage: st, peers: [1, 2, 3], repairUntilIndex: 6 });
  net.heartbeat(1);
  assert.equal(net.get(3).repairing, true, 'the leader log ends at 2');
  for (let i = 0; i < 4; i++) net.propose(1, `b${i}`);
  net.heartbeat(1);
  assert.equal(net.get(3).repairing, false);
  // Snapshot path: node 2 restarts damaged while the leader compacted everything.
  const meta = net.get(1).compact(net.get(1).applied);
  net.nodes.get(1)!.storage.compact(meta);
  const st2 = new MemStorage();
  st2.hardState = net.nodes.get(2)!.storage.hardState;
  st2.entries = net.nodes.get(2)!.storage.entries.slice(0, 1);
  net.nodes.get(2)!.storage = st2;
  net.restart(2, { peers: [1, 2, 3], repairUntilIndex: meta.index });
  net.heartbeat(1);
  assert.equal(net.collected(2).snapshots.length, 1);
  assert.equal(net.get(2).repairing, false);
});

test('repair: heartbeats commit a repairing node up to what appends of this term proved, never a stale entry (reproducer: raft sim seed 517814 stayed behind while idle)', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.propose(1, 'a');
  net.heartbeat(1);
  // Node 3 restarts claiming it held up to index 6: it stays under repair while the leader's log is shorter.
  net.restart(3, { storage: net.nodes.get(3)!.storage, peers: [1, 2, 3], repairUntilIndex: 6 });
  net.heartbeat(1);
  // The entry reaches node 3; every commit announcement (an empty append) to it is lost.
  net.filter = (m) => !(m.type === 'app' && m.to === 3 && m.entries.length === 0);
  const x = net.propose(1, 'x');
  assert.equal(net.get(3).lastIndex, x);
  assert.ok(net.get(3).commit < x, 'the entry came without its commit');
  net.heartbeat(1);
  assert.equal(net.get(3).commit, x, 'the heartbeat commits what the append proved');
  assert.equal(net.get(3).repairing, true);

  // A stale entry at x (an old term) after a damaged restart: the leader still
  // believes node 3 matches up to x, but a heartbeat must not commit it.
  net.filter = () => true;
  const st = new MemStorage();
  st.hardState = { ...net.nodes.get(3)!.storage.hardState, commit: x - 1 };
  st.entries = [...net.nodes.get(3)!.storage.entries.slice(0, x - 1), ent(x, 1, 'stale')];
  net.nodes.get(3)!.storage = st;
  net.restart(3, { storage: st, peers: [1, 2, 3], repairUntilIndex: 6 });
  for (let t = 0; t < HEARTBEAT_TICKS; t++) net.get(1).tick();
  const hb = drain(net.nodes.get(1)!).filter((m) => m.type === 'heartbeat' && m.to === 3);
  assert.equal(hb.length, 1);
  assert.equal((hb[0] as { commit: number }).commit, x, 'the leader\'s progress still says x');
  net.get(3).step(hb[0]);
  assert.equal(net.get(3).commit, x - 1, 'not committed through a heartbeat');
});

test('repair (§5.4.1): with the term of its lost log, a damaged node votes for a candidate at least as up-to-date as what it held, and for no other', () => {
  const mk = (repairUntilTerm?: number) => {
    const st = new MemStorage();
    st.entries = [ent(1, 1), ent(2, 1), ent(3, 2)];
    st.hardState = { term: 3, vote: 0, commit: 2 };
    // It held up to index 6 of term 2 before the damage.
    return newNode(2, { peers: [1, 2, 3], storage: st, repairUntilIndex: 6, repairUntilTerm });
  };
  const answer = (n: ReturnType<typeof mk>, term: number, lastLogIndex: number, lastLogTerm: number): boolean => {
    n.node.step({ type: 'vote', from: 3, to: 2, term, lastLogIndex, lastLogTerm });
    const out = drain(n).filter((m) => m.type === 'voteResp') as MsgVoteResp[];
    assert.equal(out.length, 1);
    return !out[0].reject;
  };
  assert.equal(answer(mk(2), 4, 5, 2), false, 'shorter than what it held in term 2');
  assert.equal(answer(mk(2), 4, 6, 2), true, 'as long, same term');
  assert.equal(answer(mk(2), 4, 4, 3), true, 'a later last term');
  assert.equal(answer(mk(undefined), 4, 9, 3), false, 'term unknown: no vote while repairing (as before)');
  const n = mk(2);
  assert.equal(answer(n, 4, 6, 2), true);
  assert.equal(n.node.repairing, true, 'voting does not end the repair');
  n.node.campaign();
  assert.equal(n.node.role, 'follower', 'nor may it campaign');
});

test('repair, damage extent unknown (no readable record after the damage bounds it): no vote at all, repaired only up to a commit of the leader\'s own term', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.propose(1, 'a');
  net.heartbeat(1);
  net.cut.add(2);
  const x = net.propose(1, 'x'); // committed on 1 and 3 only
  net.heartbeat(1);
  // Node 3 loses x; the WAL's readable records of it end at x - 1 (its maxIndexSeen).
  const st = net.nodes.get(3)!.storage;
  const cut = new MemStorage();
  cut.hardState = st.hardState;
  cut.entries = st.entries.slice(0, x - 1);
  net.nodes.get(3)!.storage = cut;
  const term = net.get(1).term;
  const answer = (unknown: boolean): boolean => {
    const n = newNode(3, { peers: [1, 2, 3], storage: cut, repairUntilIndex: x - 1, repairUntilTerm: term, repairExtentUnknown: unknown });
    n.node.step({ type: 'vote', from: 2, to: 3, term: term + 1, lastLogIndex: x - 1, lastLogTerm: term });
    return !(drain(n).find((m) => m.type === 'voteResp') as MsgVoteResp).reject;
  };
  // Node 2 lacks x: taking the readable mark as the bound would elect it (x lost).
  assert.equal(answer(false), true, 'the hole the flag closes');
  assert.equal(answer(true), false);
  net.restart(3, { storage: cut, peers: [1, 2, 3], repairUntilIndex: x - 1, repairUntilTerm: term, repairExtentUnknown: true });
  assert.equal(net.get(3).repairing, true);
  net.cut = new Set([1]);
  for (let t = 0; t < 10 * 10; t++) net.tick([2, 3]);
  assert.notEqual(net.get(2).role, 'leader', 'node 2 lacks committed entry x');
  // Node 1 comes back and wins. Its first append to node 3 carries a commit of an
  // older term: not enough to end the repair; the commit of its own first entry is.
  net.cut.clear();
  let ended: { commit: number; commitTerm: number } | undefined;
  net.filter = (m) => {
    if (m.type === 'app' && m.to === 3 && net.get(3).repairing) ended = { commit: m.commit, commitTerm: net.get(1).log.term(m.commit) ?? 0 };
    return true;
  };
  let l = 0;
  for (let t = 0; t < 100 && (l === 0 || net.get(3).repairing); t++) {
    net.tick();
    l = net.get(1).role === 'leader' && net.get(1).term > term ? 1 : 0;
  }
  assert.equal(l, 1, 'only node 1 holds x and can win');
  assert.equal(net.get(3).repairing, false);
  assert.ok(ended !== undefined && ended.commit > x && ended.commitTerm === net.get(1).term, `the append that ended the repair carried ${JSON.stringify(ended)}`);
  assert.equal(text(net.get(3).log.entryAt(x)!), 'x');
});

test('repair, damage extent unknown, under the leader of the term it restarted in: it raises its term at the first message, so no leader counts what it acknowledged before the damage (raft sim seed 316155)', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  for (const v of ['a', 'b', 'c']) net.propose(1, v);
  net.heartbeat(1);
  const term = net.get(1).term;
  assert.equal(net.get(1).progress(3)!.match, 4, 'the leader counts 3 as holding 4');
  // Node 3 restarts having lost its last two entries, nothing bounding the damage.
  const cut = new MemStorage();
  cut.hardState = net.nodes.get(3)!.storage.hardState;
  cut.entries = net.nodes.get(3)!.storage.entries.slice(0, 2);
  net.nodes.get(3)!.storage = cut;
  net.restart(3, { storage: cut, peers: [1, 2, 3], repairUntilIndex: 2, repairUntilTerm: term, repairExtentUnknown: true });
  net.heartbeat(1);
  assert.equal(net.get(3).term, term + 1, 'raised at the leader\'s first message');
  assert.equal(net.get(3).repairing, true);
  assert.notEqual(net.get(1).role, 'leader', 'the leader stepped down at its answer');
  const l = net.electByTimeout();
  net.propose(l, 'd');
  net.heartbeat(l);
  assert.ok(net.get(l).term > term);
  assert.equal(net.get(3).repairing, false, 'repaired under the next leader');
  assert.deepEqual(net.get(3).log.all().map((e) => [e.index, e.term]), net.get(l).log.all().map((e) => [e.index, e.term]));
});
