// ReadIndex (Raft thesis §6.4): a leader answers a read with its commit index only
// after a quorum of voters confirmed its leadership by answering a heartbeat sent
// after the read arrived, and only once it committed an entry of its own term.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AssertionError } from '../stdx/assert.js';
import { RaftError } from './errors.js';
import { READS_PENDING_MAX } from './readindex.js';
import { ELECTION_TICKS, MemStorage, Net, drain, newNode } from './testkit.js';
import type { Message, MsgHeartbeat } from './types.js';

function heartbeats(msgs: Message[], ctx: number): MsgHeartbeat[] {
  return msgs.filter((m): m is MsgHeartbeat => m.type === 'heartbeat' && m.ctx === ctx);
}

test('§6.4: the read index is the commit index, released after a quorum answers a heartbeat carrying ctx', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.propose(1, 'a');
  const l = net.nodes.get(1)!;
  l.node.readIndex(7);
  assert.equal(l.node.pendingReadCount, 1);
  const rd = l.node.ready()!;
  assert.deepEqual(rd.readStates, [], 'not before the quorum round');
  const hbs = heartbeats([...rd.messages], 7);
  assert.deepEqual(hbs.map((m) => m.to).sort(), [2, 3]);
  l.storage.persist(rd);
  l.node.advance(rd);
  // One follower's answer makes a quorum with the leader.
  net.get(2).step(hbs.find((m) => m.to === 2)!);
  const answer = drain(net.nodes.get(2)!).find((m) => m.type === 'heartbeatResp')!;
  assert.equal(answer.type === 'heartbeatResp' && answer.ctx, 7);
  l.node.step(answer);
  const rd2 = l.node.ready()!;
  assert.deepEqual(rd2.readStates, [{ ctx: 7, index: 2 }]);
  l.node.advance(rd2);
  assert.equal(l.node.pendingReadCount, 0);
});

test('§6.4: an answer for an older ctx does not release a newer read; a newer one releases all older', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  const l = net.get(1);
  net.filter = (m) => m.type !== 'heartbeatResp';
  l.readIndex(1);
  net.stabilize();
  l.readIndex(2);
  net.stabilize();
  l.readIndex(3);
  net.stabilize();
  assert.equal(l.pendingReadCount, 3);
  l.step({ type: 'heartbeatResp', from: 2, to: 1, term: 1, ctx: 1 });
  assert.deepEqual(l.ready()!.readStates, [{ ctx: 1, index: 1 }]);
  l.advance({ entries: [], messages: [], committedEntries: [], readStates: [] });
  l.step({ type: 'heartbeatResp', from: 3, to: 1, term: 1, ctx: 3 });
  const rd = l.ready()!;
  assert.deepEqual(rd.readStates, [
    { ctx: 2, index: 1 },
    { ctx: 3, index: 1 },
  ]);
  l.advance(rd);
});

test('§6.4: a new leader delays reads until it has committed an entry of its term', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.propose(1, 'a');
  net.cut.add(1);
  net.filter = (m) => m.type !== 'app';
  const l = net.electByTimeout();
  const leader = net.get(l);
  assert.ok(leader.commit < leader.lastIndex, 'its empty entry is not committed');
  leader.readIndex(1);
  net.stabilize();
  net.heartbeat(l); // leadership confirmed, but the commit index may be stale
  assert.deepEqual(net.collected(l).readStates, []);
  assert.equal(leader.pendingReadCount, 1);
  net.filter = () => true;
  net.heartbeat(l);
  assert.deepEqual(net.collected(l).readStates, [{ ctx: 1, index: leader.lastIndex }]);
});

test('§6.4: a single-voter group answers at once (after its first commit)', () => {
  const n = newNode(1, { peers: [1] });
  n.node.campaign();
  n.node.readIndex(1); // its empty entry is not yet persisted, hence not committed
  const got = { applied: [], readStates: [] as { ctx: number; index: number }[], snapshots: [] };
  drain(n, got);
  assert.deepEqual(got.readStates, [{ ctx: 1, index: 1 }]);
  n.node.readIndex(2);
  const rd = n.node.ready()!;
  assert.deepEqual(rd.readStates, [{ ctx: 2, index: 1 }]);
  assert.deepEqual(rd.messages, []);
  n.node.advance(rd);
});

test('§6.4: a non-leader throws ERR_RAFT_NOT_LEADER with the leader hint; ctx must increase', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  assert.throws(
    () => net.get(2).readIndex(1),
    (e: unknown) => e instanceof RaftError && e.code === 'ERR_RAFT_NOT_LEADER' && e.leaderId === 1,
  );
  net.get(1).readIndex(5);
  assert.throws(() => net.get(1).readIndex(5), AssertionError);
  assert.throws(() => net.get(1).readIndex(0), AssertionError);
});

test('§6.4: at most READS_PENDING_MAX reads wait; beyond, readIndex throws ERR_LIMIT', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.cut = new Set([2, 3]);
  const l = net.get(1);
  for (let ctx = 1; ctx <= READS_PENDING_MAX; ctx++) l.readIndex(ctx);
  assert.throws(
    () => l.readIndex(READS_PENDING_MAX + 1),
    (e: unknown) => e instanceof RaftError && e.code === 'ERR_LIMIT',
  );
  assert.equal(l.pendingReadCount, READS_PENDING_MAX);
});

test('§6.4: pending reads are dropped, never answered, when leadership is lost', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.cut = new Set([2, 3]);
  net.get(1).readIndex(1);
  net.stabilize();
  assert.equal(net.get(1).pendingReadCount, 1);
  for (let t = 0; t < 2 * ELECTION_TICKS; t++) net.tick([1]); // check-quorum: steps down
  assert.equal(net.get(1).role, 'follower');
  assert.equal(net.get(1).pendingReadCount, 0);
  net.cut.clear();
  net.electByTimeout();
  for (let t = 0; t < 3 * ELECTION_TICKS; t++) net.tick();
  assert.deepEqual(net.collected(1).readStates, []);
});

test('§6.4: learners do not count toward the read quorum; a lost heartbeat is made up by the next periodic one', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.add(4, { storage: new MemStorage() });
  net.get(1).proposeConfChange({ type: 'addLearner', node: 4 });
  net.stabilize();
  net.heartbeat(1);
  net.cut = new Set([2, 3]);
  net.get(1).readIndex(1);
  net.heartbeat(1);
  assert.deepEqual(net.collected(1).readStates, [], 'the learner answered, the voters did not');
  net.cut.clear();
  net.heartbeat(1);
  assert.equal(net.collected(1).readStates.length, 1);
});
