// Pre-vote (Raft thesis §9.6, RaftConfig.preVote): a node whose election timer
// fires asks the voters whether they would vote for it at its term + 1 before it
// campaigns; nobody's term or vote moves until a quorum says yes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ELECTION_TICKS, MemStorage, Net, drain, ent, newNode } from './testkit.js';
import type { Message, MsgVoteResp } from './types.js';

for (const checkQuorum of [true, false]) {
  test(`§9.6: a node cut off raises no term; back, it deposes nobody (check-quorum ${checkQuorum})`, () => {
    const net = new Net([1, 2, 3], [1, 2, 3], { preVote: true, checkQuorum });
    net.elect(1);
    net.propose(1, 'a');
    net.cut.add(3);
    net.propose(1, 'b'); // 3's log falls behind
    const term = net.get(1).term;
    const n3 = net.nodes.get(3)!;
    let asked = 0;
    for (let t = 0; t < 10 * ELECTION_TICKS; t++) {
      n3.node.tick();
      asked += drain(n3).filter((m) => m.type === 'vote' && m.pre === true).length; // lost: it is cut off
    }
    assert.ok(asked >= 2 * 4, `it timed out and asked again and again (${asked} pre-votes)`);
    assert.equal(net.get(3).term, term, 'its timeouts were pre-votes only');
    net.cut.clear();
    for (let t = 0; t < 4 * ELECTION_TICKS; t++) net.tick();
    assert.equal(net.get(1).role, 'leader');
    assert.equal(net.get(1).term, term, 'the leader was not deposed');
    assert.equal(net.get(3).leaderId, 1);
    assert.equal(net.get(3).lastIndex, net.get(1).lastIndex);
  });
}

test('§9.6: with the leader gone, one pre-vote round and one election at term + 1', () => {
  const net = new Net([1, 2, 3], [1, 2, 3], { preVote: true });
  net.elect(1);
  net.propose(1, 'a');
  const term = net.get(1).term;
  net.cut.add(1);
  const from = net.log.length;
  const l = net.electByTimeout();
  assert.notEqual(l, 1);
  assert.equal(net.get(l).term, term + 1);
  const since = net.log.slice(from);
  assert.ok(since.some((m) => m.type === 'vote' && m.pre === true && m.term === term + 1), 'pre-votes asked about term + 1');
  assert.ok(since.every((m) => m.type !== 'vote' || m.pre === true || m.term === term + 1), 'every real vote was for term + 1');
});

test('§9.6: a pre-vote changes neither the term nor the vote of its receiver; granted, the answer carries the asked term', () => {
  const st = new MemStorage();
  st.entries = [ent(1, 1), ent(2, 2)];
  st.hardState = { term: 3, vote: 1, commit: 2 };
  const n = newNode(2, { peers: [1, 2, 3], storage: st, preVote: true });
  const ask = (term: number, lastLogIndex: number, lastLogTerm: number): MsgVoteResp => {
    n.node.step({ type: 'vote', from: 3, to: 2, term, lastLogIndex, lastLogTerm, pre: true });
    return drain(n).find((m) => m.type === 'voteResp') as MsgVoteResp;
  };
  assert.deepEqual(ask(4, 2, 2), { type: 'voteResp', from: 2, to: 3, term: 4, reject: false, pre: true });
  assert.deepEqual([n.node.term, n.node.vote], [3, 1], 'unchanged');
  const stale = ask(4, 1, 1);
  assert.deepEqual([stale.reject, stale.term, stale.pre], [true, 3, true], 'a less up-to-date log is refused, with our term');
  assert.deepEqual(ask(3, 5, 2).reject, true, 'in our own term we voted for 1 already');
  assert.deepEqual([n.node.term, n.node.vote], [3, 1]);
});

test('§9.6: a pre-candidate refused by a node of a higher term follows that term; granted by a quorum, it campaigns', () => {
  const st = new MemStorage();
  st.entries = [ent(1, 1)];
  st.hardState = { term: 1, vote: 0, commit: 1 };
  const n = newNode(1, { peers: [1, 2, 3], storage: st, preVote: true });
  n.node.campaign();
  const asked = drain(n).filter((m) => m.type === 'vote') as Array<Message & { type: 'vote' }>;
  assert.deepEqual(asked.map((m) => [m.to, m.term, m.pre]), [[2, 2, true], [3, 2, true]]);
  assert.equal(n.node.term, 1, 'no term raised yet');
  n.node.step({ type: 'voteResp', from: 2, to: 1, term: 5, reject: true, pre: true });
  assert.deepEqual([n.node.role, n.node.term], ['follower', 5]);
  n.node.campaign();
  drain(n);
  n.node.step({ type: 'voteResp', from: 3, to: 1, term: 6, reject: false, pre: true });
  const votes = drain(n).filter((m) => m.type === 'vote') as Array<Message & { type: 'vote' }>;
  assert.deepEqual([n.node.role, n.node.term, n.node.vote], ['candidate', 6, 1], 'a quorum (itself and 3): the real election');
  assert.deepEqual(votes.map((m) => [m.to, m.term, m.pre ?? false]), [[2, 6, false], [3, 6, false]]);
});
