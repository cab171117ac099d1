// Membership changes (Raft thesis §4.1, single-server changes; etcd-style
// learners), joining nodes, and status(). A change takes effect on each node when
// it applies the 'conf' entry (advance()).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeConfChange } from './confchange.js';
import { RaftError } from './errors.js';
import { ELECTION_TICKS, MemStorage, Net, drain, ent, newNode, text } from './testkit.js';
import type { ConfChange, Message, MsgAppResp, MsgVoteResp } from './types.js';

function change(net: Net, leader: number, cc: ConfChange): number {
  const r = net.get(leader).proposeConfChange(cc);
  assert.equal(typeof r, 'number', `conf change refused: ${r instanceof RaftError ? r.message : ''}`);
  net.stabilize();
  net.heartbeat(leader);
  return r as number;
}

function refused(r: number | RaftError, code: RaftError['code']): void {
  assert.ok(r instanceof RaftError, 'accepted');
  assert.equal(r.code, code, r.message);
}

test('thesis §4.1: replace a voter: addLearner (joins by snapshot) → promote → remove the old leader', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.propose(1, 'a');
  net.add(4, { storage: new MemStorage() }); // joining: no snapshot, no peers
  assert.equal(net.get(4).isMember, false);
  const idx = change(net, 1, { type: 'addLearner', node: 4 });
  const entry = net.get(1).log.entryAt(idx)!;
  assert.equal(entry.type, 'conf');
  assert.deepEqual(decodeConfChange(entry.data), { type: 'addLearner', node: 4 });
  for (const id of [1, 2, 3, 4]) assert.deepEqual(net.get(id).conf, { voters: [1, 2, 3], learners: [4] }, `conf on ${id}`);
  // The joiner got the membership and state as a snapshot (it cannot use entries from index 1).
  assert.equal(net.collected(4).snapshots.length, 1);
  assert.equal(net.get(4).commit, net.get(1).commit);
  assert.equal(net.get(4).isMember, true);
  assert.deepEqual(net.get(1).learners, [4]);

  // A learner's acknowledgment does not count for commit.
  net.cut = new Set([2, 3]);
  const r = net.get(1).propose(new Uint8Array([1]));
  assert.equal(typeof r, 'number');
  net.stabilize();
  assert.equal(net.get(4).lastIndex, r, 'the learner holds the entry');
  assert.ok(net.get(1).commit < (r as number), 'committed with one voter of three plus a learner');
  net.cut.clear();
  net.heartbeat(1);
  assert.equal(net.get(1).commit, r);

  change(net, 1, { type: 'promote', node: 4 });
  assert.deepEqual(net.get(1).conf, { voters: [1, 2, 3, 4], learners: [] });
  // Four voters: 1 and 4 are not a quorum, 1, 2 and 4 are.
  net.cut = new Set([2, 3]);
  const r2 = net.get(1).propose(new Uint8Array([2])) as number;
  net.stabilize();
  assert.ok(net.get(1).commit < r2);
  net.cut = new Set([3]);
  net.heartbeat(1);
  assert.equal(net.get(1).commit, r2, 'node 4 counts now');
  net.cut.clear();
  net.heartbeat(1);

  // The leader removes itself: it steps down once the removal is applied.
  change(net, 1, { type: 'remove', node: 1 });
  assert.equal(net.get(1).role, 'follower');
  assert.equal(net.get(1).isMember, false);
  for (const id of [2, 3, 4]) assert.deepEqual(net.get(id).voters, [2, 3, 4]);
  const l = net.electByTimeout();
  assert.ok([2, 3, 4].includes(l));
  for (let t = 0; t < 5 * ELECTION_TICKS; t++) net.tick();
  assert.equal(net.get(1).role, 'follower', 'a removed node never campaigns');
  assert.equal(net.get(l).role, 'leader');
  net.propose(l, 'after');
  assert.equal(net.get(4).commit, net.get(l).commit);
});

test('a removed node still votes: peers that have not applied its removal may need its vote', () => {
  // Voters {1,2,3,4}; leader 3 removes itself and steps down once the removal is
  // applied; 2 and 4 hold the entry but never heard it committed; 1 is down. For
  // 2 and 4 the voters are still {1,2,3,4}: only 3's vote completes a quorum.
  const net = new Net([1, 2, 3, 4]);
  net.elect(3);
  const r = net.get(3).proposeConfChange({ type: 'remove', node: 3 }) as number;
  assert.equal(typeof r, 'number');
  net.filter = (m) => !(m.from === 3 && ((m.type === 'app' && m.commit >= r) || m.type === 'heartbeat'));
  net.stabilize();
  assert.equal(net.get(3).role, 'follower');
  assert.equal(net.get(3).isMember, false);
  for (const id of [2, 4]) {
    assert.equal(net.get(id).lastIndex, r);
    assert.ok(net.get(id).commit < r);
  }
  net.filter = () => true;
  net.cut.add(1);
  let l = 0;
  for (let t = 0; t < 10 * ELECTION_TICKS && l === 0; t++) {
    net.tick([2, 3, 4]);
    l = [2, 4].find((id) => net.get(id).role === 'leader') ?? 0;
  }
  assert.ok(l !== 0, 'no leader elected without the removed node');
  net.heartbeat(l);
  assert.deepEqual(net.get(l).voters, [1, 2, 4]);
});

/**
 * Voters {1,2,3,4}, leader 1 (2 cut off). Leader 1 appends its own removal at r and
 * an entry at r + 1; 3 gets r only, 4 gets both. r commits with 1, 3 and 4; the
 * commit never reaches 3 or 4, and 1 applies its removal and steps down. Then 4
 * restarts with a damaged log that lost r and r + 1 (repairing: it votes only for
 * a log as up-to-date as (term, r + 1)). The family of raft sim seed 300316.
 */
function removedHolderScenario(): { net: Net; r: number } {
  const net = new Net([1, 2, 3, 4]);
  net.elect(1);
  net.propose(1, 'a');
  net.heartbeat(1);
  net.cut.add(2);
  const r = net.get(1).proposeConfChange({ type: 'remove', node: 1 }) as number;
  assert.equal(typeof r, 'number');
  net.filter = (m) => !(m.from === 1 && (m.type === 'heartbeat' || (m.type === 'app' && (m.commit >= r || (m.to === 3 && m.entries.some((e) => e.index > r))))));
  const b = net.get(1).propose(new TextEncoder().encode('b'));
  assert.equal(b, r + 1);
  net.stabilize();
  assert.equal(net.get(1).isMember, false, 'the removal committed and applied on 1');
  assert.equal(net.get(1).role, 'follower');
  assert.equal(net.get(3).lastIndex, r);
  assert.equal(net.get(4).lastIndex, r + 1);
  for (const id of [3, 4]) assert.ok(net.get(id).commit < r, `${id} never heard the commit`);
  const term = net.get(1).term;
  const st4 = net.nodes.get(4)!.storage;
  const cut = new MemStorage();
  cut.hardState = st4.hardState;
  cut.entries = st4.entries.slice(0, r - 1);
  net.nodes.get(4)!.storage = cut;
  net.restart(4, { peers: [1, 2, 3, 4], repairUntilIndex: r + 1, repairUntilTerm: term });
  net.filter = () => true;
  net.cut.clear();
  return { net, r };
}

test('thesis §4.2.2: a removed node holding entries the candidates lack campaigns once, leads, commits them, steps down (raft sim seed 300316)', () => {
  // 3 is the only candidate that can win without 1 (2 lacks r, 4 is repairing), but
  // it needs three of {1,2,3,4}: 1 refuses (its log is longer), 4 refuses (it lost
  // r + 1). Only 1 can gather a majority of its own membership {2,3,4}.
  const { net, r } = removedHolderScenario();
  const term0 = net.get(1).term;
  let l = 0;
  for (let t = 0; t < 20 * ELECTION_TICKS && l === 0; t++) {
    net.tick();
    l = [2, 3, 4].find((id) => net.get(id).role === 'leader') ?? 0;
  }
  // (It leads and steps down within one delivery round: its appends show it.)
  assert.ok(net.log.some((m) => m.from === 1 && m.type === 'app' && m.term > term0), 'the removed node led');
  assert.equal(net.get(1).role, 'follower', 'and stepped down after its first entry applied');
  assert.ok(l !== 0, 'a leader of the new membership was elected');
  net.propose(l, 'c');
  net.heartbeat(l);
  for (const id of [2, 3, 4]) {
    assert.deepEqual(net.get(id).voters, [2, 3, 4], `membership on ${id}`);
    assert.equal(text(net.get(id).log.entryAt(r + 1)!), 'b', `entry r + 1 on ${id}`);
    assert.equal(net.get(id).commit, net.get(l).lastIndex);
  }
  assert.equal(net.get(4).repairing, false);
});

test('a removed node never campaigns unprompted, nor after a vote request it can grant; a failed candidacy ends', () => {
  const net = new Net([1, 2, 3]);
  net.elect(3);
  net.propose(3, 'a');
  const r = net.get(3).proposeConfChange({ type: 'remove', node: 1 }) as number;
  net.stabilize();
  net.heartbeat(3);
  assert.equal(net.get(1).isMember, false);
  // The leader no longer contacts 1: it times out again and again, silently.
  net.cut = new Set([2, 3]);
  for (let t = 0; t < 10 * ELECTION_TICKS; t++) net.tick([1]);
  assert.equal(net.get(1).role, 'follower');
  assert.equal(net.get(1).term, net.get(3).term);
  // A candidate as up-to-date as 1 gets its vote; 1 stays quiet.
  const n1 = net.nodes.get(1)!;
  n1.node.step({ type: 'vote', from: 2, to: 1, term: 9, lastLogIndex: r, lastLogTerm: net.get(1).log.lastTerm() });
  assert.equal((drain(n1).find((m) => m.type === 'voteResp') as MsgVoteResp).reject, false);
  for (let t = 0; t < 10 * ELECTION_TICKS; t++) n1.node.tick();
  assert.equal(n1.node.role, 'follower');
  assert.equal(n1.node.term, 9);
  // A less up-to-date one is refused, and 1 stands once; its voters ignore it here,
  // so it returns to follower and waits for the next prompt.
  n1.node.step({ type: 'vote', from: 2, to: 1, term: 10, lastLogIndex: r - 1, lastLogTerm: net.get(1).log.lastTerm() });
  assert.equal((drain(n1).find((m) => m.type === 'voteResp') as MsgVoteResp).reject, true);
  let votes: Message[] = [];
  for (let t = 0; t < 2 * ELECTION_TICKS && votes.length === 0; t++) {
    n1.node.tick();
    votes = drain(n1).filter((m) => m.type === 'vote');
  }
  assert.deepEqual(votes.map((m) => m.to).sort(), [2, 3], 'asks the voters of its membership');
  assert.equal(n1.node.role, 'candidate');
  assert.equal(n1.node.term, 11);
  for (let t = 0; t < 2 * ELECTION_TICKS; t++) n1.node.tick();
  assert.equal(n1.node.role, 'follower');
  for (let t = 0; t < 10 * ELECTION_TICKS; t++) n1.node.tick();
  assert.equal(drain(n1).filter((m) => m.type === 'vote').length, 0, 'one candidacy per prompt');
  assert.equal(n1.node.term, 11);
});

test('a voter removed while cut off learns it from a member\'s "removed" answer to its vote request: no term change in the group, it stops campaigning until a leader contacts it', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.propose(1, 'a');
  net.heartbeat(1);
  net.cut.add(3); // 3 misses its own removal
  const r = net.get(1).proposeConfChange({ type: 'remove', node: 3 }) as number;
  net.stabilize();
  net.heartbeat(1);
  assert.deepEqual(net.get(1).voters, [1, 2]);
  assert.deepEqual(net.get(3).voters, [1, 2, 3], '3 still counts itself');
  assert.ok(net.get(3).lastIndex < r);
  const term = net.get(1).term;
  net.cut.clear();
  // 3 campaigns; 2 (in 1's lease) and 1 answer with the notice instead of ignoring it.
  let notified = false;
  for (let t = 0; t < 4 * ELECTION_TICKS && !notified; t++) {
    net.tick([3]);
    notified = net.get(3).removalNotified;
  }
  assert.ok(notified, 'the removed voter was told');
  assert.ok(net.log.some((m) => m.type === 'voteResp' && m.to === 3 && m.removed === true));
  assert.equal(net.get(3).role, 'follower');
  assert.equal(net.get(1).term, term, 'its higher term did not reach the group');
  assert.equal(net.get(1).role, 'leader');
  const votesBefore = net.log.filter((m) => m.type === 'vote').length;
  for (let t = 0; t < 10 * ELECTION_TICKS; t++) net.tick([3]);
  assert.equal(net.log.filter((m) => m.type === 'vote').length, votesBefore, 'no more candidacies');
  // Re-added (a leader contacts it): the notice is forgotten.
  net.get(3).step({ type: 'heartbeat', from: 1, to: 3, term: net.get(3).term, commit: 0, ctx: 0 });
  drain(net.nodes.get(3)!);
  assert.equal(net.get(3).removalNotified, false);
});

test('no "removed" answer to a voter missing from an older membership: its log holds the promotion the answering node has not applied', () => {
  const st = new MemStorage();
  st.entries = [ent(1, 1), ent(2, 1)];
  st.hardState = { term: 2, vote: 0, commit: 2 };
  const n = newNode(2, { peers: [1, 2, 3], storage: st, applied: 2 });
  drain(n);
  // Voter 4 was added and promoted at 3 and 4 (node 2 applied up to 2 only).
  n.node.step({ type: 'vote', from: 4, to: 2, term: 3, lastLogIndex: 4, lastLogTerm: 1 });
  const resp = drain(n).find((m) => m.type === 'voteResp') as MsgVoteResp;
  assert.equal(resp.removed, undefined);
  assert.equal(resp.reject, false, 'an ordinary vote');
  // A stranger whose log ends at or before what node 2 applied was removed by then.
  n.node.step({ type: 'vote', from: 5, to: 2, term: 9, lastLogIndex: 2, lastLogTerm: 1 });
  const notice = drain(n).find((m) => m.type === 'voteResp') as MsgVoteResp;
  assert.deepEqual([notice.reject, notice.removed, notice.term], [true, true, 3], 'the notice, at our term');
});

test('learners never count for commit: a leader and two learners are not a quorum of three voters', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  for (const id of [4, 5]) {
    net.add(id, { storage: new MemStorage() });
    change(net, 1, { type: 'addLearner', node: id });
  }
  net.cut = new Set([2, 3]);
  const r = net.get(1).propose(new Uint8Array([1])) as number;
  net.stabilize();
  net.heartbeat(1);
  assert.equal(net.get(4).lastIndex, r);
  assert.equal(net.get(5).lastIndex, r);
  assert.ok(net.get(1).commit < r);
});

test('thesis §4.1: one change at a time; invalid changes and non-leaders are refused', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  const leader = net.get(1);
  refused(net.get(2).proposeConfChange({ type: 'addLearner', node: 4 }), 'ERR_RAFT_NOT_LEADER');
  const first = leader.proposeConfChange({ type: 'addLearner', node: 4 });
  assert.equal(typeof first, 'number');
  assert.equal(leader.pendingConfChange, true);
  refused(leader.proposeConfChange({ type: 'addLearner', node: 5 }), 'ERR_RAFT_CONF_CHANGE');
  net.stabilize(); // committed and applied on the leader
  assert.equal(leader.pendingConfChange, false);
  refused(leader.proposeConfChange({ type: 'addLearner', node: 4 }), 'ERR_RAFT_CONF_CHANGE'); // already a learner
  refused(leader.proposeConfChange({ type: 'addLearner', node: 2 }), 'ERR_RAFT_CONF_CHANGE'); // a voter
  refused(leader.proposeConfChange({ type: 'promote', node: 2 }), 'ERR_RAFT_CONF_CHANGE'); // not a learner
  refused(leader.proposeConfChange({ type: 'remove', node: 9 }), 'ERR_RAFT_CONF_CHANGE');
  const solo = newNode(1, { peers: [1] });
  solo.node.campaign();
  drain(solo);
  refused(solo.node.proposeConfChange({ type: 'remove', node: 1 }), 'ERR_RAFT_CONF_CHANGE'); // no voter left
});

test('thesis §4.1: a new leader changes membership only after applying an entry of its own term', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.cut.add(1);
  net.filter = (m) => m.type !== 'app' && m.type !== 'heartbeat'; // the new leader's empty entry does not replicate
  const l = net.electByTimeout();
  const leader = net.get(l);
  assert.ok(leader.commit < leader.lastIndex);
  refused(leader.proposeConfChange({ type: 'addLearner', node: 4 }), 'ERR_RAFT_CONF_CHANGE');
  net.filter = () => true;
  net.heartbeat(l);
  assert.equal(leader.commit, leader.lastIndex);
  assert.equal(typeof leader.proposeConfChange({ type: 'addLearner', node: 4 }), 'number');
});

test('learners and joining nodes never campaign; a learner votes, a joining node does not', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.add(4, { storage: new MemStorage() });
  change(net, 1, { type: 'addLearner', node: 4 });
  net.add(5, { storage: new MemStorage() }); // never added
  net.cut = new Set([1, 2, 3]);
  for (let t = 0; t < 5 * ELECTION_TICKS; t++) {
    net.get(4).tick();
    net.get(5).tick();
    net.get(4).campaign();
    net.get(5).campaign();
  }
  assert.equal(net.get(4).role, 'follower');
  assert.equal(net.get(5).role, 'follower');
  assert.equal(net.nodes.get(4)!.node.hasReady(), false, 'no vote requests');
  // A learner grants a vote (it may have been promoted without having applied it
  // yet, and refusing could block an election that needs it); a joining node with
  // no membership holds nothing to vote on.
  const lastIndex = net.get(1).lastIndex;
  for (const id of [4, 5]) {
    net.get(id).step({ type: 'vote', from: 2, to: id, term: 9, lastLogIndex: lastIndex, lastLogTerm: 1 });
    const resp = drain(net.nodes.get(id)!)[0] as MsgVoteResp;
    assert.equal(resp.reject, id === 5, `node ${id}`);
  }
});

test('a joining node accepts a leader of a term >= its own, answers appends with a reset until it has a snapshot', () => {
  const j = newNode(4, { storage: new MemStorage() });
  j.node.step({ type: 'app', from: 1, to: 4, term: 3, prevLogIndex: 5, prevLogTerm: 3, entries: [], commit: 5 });
  const resp = drain(j)[0] as MsgAppResp;
  assert.deepEqual([resp.reject, resp.index, resp.rejectHint, resp.hintTerm], [true, 0, 0, 0]);
  assert.equal(j.node.leaderId, 1);
  assert.equal(j.node.term, 3);
  j.node.step({ type: 'snap', from: 1, to: 4, term: 3, snapshot: { index: 5, term: 3, conf: { voters: [1, 2, 3], learners: [4] } } });
  drain(j);
  assert.deepEqual(j.node.learners, [4]);
  j.node.step({ type: 'app', from: 1, to: 4, term: 3, prevLogIndex: 5, prevLogTerm: 3, entries: [{ index: 6, term: 3, data: new Uint8Array() }], commit: 6 });
  const ok = drain(j)[0] as MsgAppResp;
  assert.deepEqual([ok.reject, ok.index], [false, 6]);
});

test('membership survives a restart: conf entries after the snapshot point are replayed', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  change(net, 1, { type: 'addLearner', node: 4 });
  change(net, 1, { type: 'remove', node: 3 });
  net.propose(1, 'x');
  const st = net.nodes.get(2)!.storage;
  const re = newNode(2, { peers: [1, 2, 3], storage: st });
  // Before re-applying, the node knows the bootstrap conf; the committed conf
  // entries are handed out again and applied in advance().
  drain(re);
  assert.deepEqual(re.node.conf, { voters: [1, 2], learners: [4] });
  // Compact past the changes: the snapshot point carries the conf at that index.
  const meta = net.get(2).compact(net.get(2).applied);
  assert.deepEqual(meta.conf, { voters: [1, 2], learners: [4] });
  st.compact(meta);
  const re2 = newNode(2, { storage: st });
  assert.deepEqual(re2.node.conf, { voters: [1, 2], learners: [4] });
});

test('status(): role, term, indexes, membership and, on a leader, every member progress', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.propose(1, 'a');
  const s = net.get(1).status();
  assert.deepEqual(
    { role: s.role, term: s.term, leader: s.leader, commit: s.commit, applied: s.applied, lastIndex: s.lastIndex, isMember: s.isMember, repairing: s.repairing },
    { role: 'leader', term: 1, leader: 1, commit: 2, applied: 2, lastIndex: 2, isMember: true, repairing: false },
  );
  assert.deepEqual(s.conf, { voters: [1, 2, 3], learners: [] });
  assert.deepEqual(
    s.peers.map((p) => [p.id, p.match, p.next, p.state, p.learner]),
    [
      [1, 2, 3, 'replicate', false],
      [2, 2, 3, 'replicate', false],
      [3, 2, 3, 'replicate', false],
    ],
  );
  const f = net.get(2).status();
  assert.equal(f.role, 'follower');
  assert.equal(f.leader, 1);
  assert.deepEqual(f.peers, []);
});
