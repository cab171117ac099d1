// Snapshots and log compaction at the node level (Raft §7): compact(), a leader
// replacing AppendEntries by InstallSnapshot for a follower that needs compacted
// entries, the follower's install (Ready.snapshot, commit/applied, answer), stale
// snapshots, transfer failures, and restart from a stored snapshot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AssertionError } from '../stdx/assert.js';
import { MemStorage, Net, drain, ent, newNode, text } from './testkit.js';
import type { Message, MsgAppResp, MsgSnap } from './types.js';

/** Ten rounds of delivering the messages of `ids` to each other (not to `cut`); every message sent, in order. */
function exchange(net: Net, ids: number[], cut: number): Message[] {
  const seen: Message[] = [];
  for (let round = 0; round < 10; round++) {
    for (const id of ids) {
      for (const m of drain(net.nodes.get(id)!)) {
        seen.push(m);
        if (m.to !== cut) net.get(m.to).step(m);
      }
    }
  }
  return seen;
}

/** 3 nodes, 1 leads; node 3 is cut off while `n` entries commit on 1 and 2, then 1 compacts to its applied index. */
function lagging(n: number): Net {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.cut.add(3);
  for (let i = 0; i < n; i++) net.propose(1, `v${i}`);
  net.heartbeat(1);
  const meta = net.get(1).compact(net.get(1).applied);
  net.nodes.get(1)!.storage.compact(meta);
  return net;
}

test('§7: compact drops applied entries and remembers index, term and the membership at that point', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.propose(1, 'a');
  net.propose(1, 'b');
  const leader = net.get(1);
  assert.equal(leader.applied, 3);
  assert.throws(() => leader.compact(4), AssertionError, 'beyond applied');
  const meta = leader.compact(2);
  assert.deepEqual(meta, { index: 2, term: 1, conf: { voters: [1, 2, 3], learners: [] } });
  assert.deepEqual(leader.snapshotMeta, meta);
  assert.deepEqual(leader.log.all().map((e) => e.index), [3]);
  assert.deepEqual(leader.compact(1), meta, 'compacting below the point is a no-op');
});

test('§7: a leader sends a snapshot to a follower that needs compacted entries, then replicates the rest', () => {
  const net = lagging(5);
  const leader = net.get(1);
  const snapIndex = leader.snapshotMeta.index;
  assert.equal(snapIndex, 6);
  net.cut.clear();
  // Deliver by hand to observe the progress state while the snapshot is in flight.
  for (let t = 0; t < 2; t++) leader.tick();
  let msgs = drain(net.nodes.get(1)!);
  for (const m of msgs.filter((m) => m.to === 3)) net.get(3).step(m);
  const answers = drain(net.nodes.get(3)!).filter((m) => m.to === 1);
  for (const m of answers) leader.step(m);
  msgs = drain(net.nodes.get(1)!);
  const snap = msgs.find((m): m is MsgSnap => m.type === 'snap' && m.to === 3);
  assert.ok(snap, 'MsgSnap sent');
  assert.deepEqual(snap.snapshot, { index: 6, term: 1, conf: { voters: [1, 2, 3], learners: [] } });
  assert.equal(leader.progress(3)!.state, 'snapshot');
  assert.equal(leader.progress(3)!.pendingSnapshot, 6);
  // No appends to a follower awaiting a snapshot, even with new proposals.
  leader.propose(new TextEncoder().encode('during'));
  assert.equal(drain(net.nodes.get(1)!).filter((m) => m.to === 3 && m.type === 'app').length, 0);
  // The follower installs it.
  const f = net.nodes.get(3)!;
  assert.ok(f.node.acceptsSnapshot(snap));
  f.node.step(snap);
  const rd = f.node.ready()!;
  assert.deepEqual(rd.snapshot, snap.snapshot, 'Ready.snapshot asks the driver to persist it');
  assert.equal(rd.hardState?.commit, 6);
  assert.deepEqual(rd.committedEntries, []);
  const resp = rd.messages.find((m) => m.type === 'appResp') as MsgAppResp;
  assert.deepEqual([resp.reject, resp.index], [false, 6]);
  assert.deepEqual([f.node.commit, f.node.applied, f.node.lastIndex], [6, 6, 6]);
  f.storage.persist(rd);
  f.node.advance(rd);
  leader.step(resp);
  assert.equal(leader.progress(3)!.state, 'replicate');
  net.stabilize();
  net.heartbeat(1);
  assert.deepEqual(net.get(3).log.all(), leader.log.all());
  assert.equal(net.get(3).commit, leader.commit);
  // §7: application after a snapshot restarts from snapshot.index + 1.
  // (entry 1 was applied before node 3 was cut off; 2..6 arrived as the snapshot)
  assert.deepEqual(net.collected(3).applied.map((e) => e.index), [1, 7]);
  assert.equal(text(net.collected(3).applied[1]), 'during');
  assert.equal(f.storage.snapshot?.index, 6);
  assert.deepEqual(f.storage.entries.map((e) => e.index), [7]);
});

test('§7: a stale snapshot (at or below the commit index) is answered with the commit index and not installed', () => {
  const net = new Net([1, 2, 3]);
  net.elect(1);
  net.propose(1, 'a');
  net.propose(1, 'b');
  net.heartbeat(1);
  const f = net.nodes.get(2)!;
  assert.equal(f.node.commit, 3);
  const stale: MsgSnap = { type: 'snap', from: 1, to: 2, term: 1, snapshot: { index: 2, term: 1, conf: { voters: [1, 2, 3], learners: [] } } };
  assert.equal(f.node.acceptsSnapshot(stale), false);
  assert.equal(f.node.acceptsSnapshot({ ...stale, snapshot: { ...stale.snapshot, index: 4 } }), true);
  assert.equal(f.node.acceptsSnapshot({ ...stale, term: 0, snapshot: { ...stale.snapshot, index: 4 } }), false, 'older term');
  f.node.step(stale);
  const rd = f.node.ready()!;
  assert.equal(rd.snapshot, undefined);
  const resp = rd.messages[0] as MsgAppResp;
  assert.deepEqual([resp.type, resp.reject, resp.index], ['appResp', false, 3]);
  f.node.advance(rd);
  assert.equal(f.node.log.snapshotIndex(), 0);
});

test('§7: a follower whose log holds the snapshot point keeps the entries after it', () => {
  const st = new MemStorage();
  st.entries = [ent(1, 1), ent(2, 1), ent(3, 1), ent(4, 1)];
  st.hardState = { term: 1, vote: 0, commit: 1 };
  const f = newNode(2, { peers: [1, 2, 3], storage: st });
  f.node.step({ type: 'snap', from: 1, to: 2, term: 1, snapshot: { index: 3, term: 1, conf: { voters: [1, 2, 3], learners: [] } } });
  const rd = f.node.ready()!;
  assert.equal(rd.snapshot?.index, 3);
  assert.deepEqual(rd.entries.map((e) => e.index), [4], 'kept entry re-persisted after the snapshot replaced the stored log');
  st.persist(rd);
  f.node.advance(rd);
  assert.deepEqual(st.entries.map((e) => e.index), [4]);
  assert.equal(f.node.lastIndex, 4);
});

test('§7: a failed snapshot transfer puts the follower back to probing, and the next heartbeat answer retries', () => {
  const net = lagging(3);
  net.cut.clear();
  const leader = net.get(1);
  net.filter = (m) => m.type !== 'snap'; // transfers never arrive
  net.heartbeat(1);
  assert.equal(leader.progress(3)!.state, 'snapshot');
  const sent = () => net.log.length;
  const before = sent();
  leader.reportSnapshot(3, false);
  assert.equal(leader.progress(3)!.state, 'probe');
  net.filter = () => true;
  net.heartbeat(1);
  assert.ok(sent() > before);
  assert.equal(leader.progress(3)!.state, 'replicate');
  assert.equal(net.get(3).commit, leader.commit);
  assert.equal(net.collected(3).snapshots.length, 1);
});

test('§7: a transfer reported done at a newer index than raft asked for (the driver moved it up) probes from after that index', () => {
  const net = lagging(3);
  net.cut.clear();
  const leader = net.get(1);
  net.filter = (m) => m.type !== 'snap'; // the driver ships it
  net.heartbeat(1);
  assert.equal(leader.progress(3)!.state, 'snapshot');
  assert.equal(leader.progress(3)!.pendingSnapshot, 4);
  net.cut.add(3);
  for (let i = 0; i < 3; i++) net.propose(1, `late${i}`);
  net.heartbeat(1);
  assert.equal(leader.applied, 7);
  // The copy moved up to the applied point (snapshotPoint) and arrived there.
  leader.reportSnapshot(3, true, 7);
  assert.equal(leader.progress(3)!.state, 'probe');
  assert.equal(leader.progress(3)!.next, 8, 'from after the index shipped, not after 4 (the log before 7 may be compacted)');
  // An index beyond the log (another term's, say) is not taken.
  const other = lagging(3);
  other.cut.clear();
  other.filter = (m) => m.type !== 'snap';
  other.heartbeat(1);
  other.get(1).reportSnapshot(3, true, 99);
  assert.equal(other.get(1).progress(3)!.next, 5);
});

test('§7: a node restarts from a stored snapshot: its log starts after it and application resumes after it', () => {
  const net = lagging(4);
  net.cut.clear();
  net.heartbeat(1);
  net.propose(1, 'after');
  net.heartbeat(1);
  const st = net.nodes.get(3)!.storage;
  assert.ok(st.snapshot !== undefined);
  const re = net.restart(3, { peers: [7, 8, 9] }); // peers are ignored when a snapshot is stored
  assert.deepEqual(re.node.conf, st.snapshot.conf);
  assert.equal(re.node.log.snapshotIndex(), st.snapshot.index);
  assert.equal(re.node.applied, st.snapshot.index);
  const got = { applied: [] as { index: number }[], readStates: [], snapshots: [] };
  drain(re, got as never);
  assert.deepEqual(got.applied.map((e) => e.index), [st.snapshot.index + 1]);
  // With `applied` configured the state machine is trusted to hold more already.
  const re2 = newNode(3, { storage: st, applied: st.snapshot.index + 1 });
  assert.equal(re2.node.applied, st.snapshot.index + 1);
  assert.equal(re2.node.hasReady(), false);
});

test('§7: a leader snapshots at its applied index even when it compacted less', () => {
  const net = lagging(4);
  const leader = net.get(1);
  net.propose(1, 'more'); // applied moves past the compaction point
  net.heartbeat(1);
  assert.ok(leader.applied > leader.snapshotMeta.index);
  net.cut.clear();
  const snaps: Message[] = [];
  net.filter = (m) => {
    if (m.type === 'snap') snaps.push(m);
    return true;
  };
  net.heartbeat(1);
  assert.equal(snaps.length, 1);
  assert.equal((snaps[0] as MsgSnap).snapshot.index, leader.applied);
  assert.equal(net.get(3).commit, leader.commit);
});

test('§7: renewSnapshot gives a queued snapshot the leader\'s applied point of now and makes it the pending one; null once nothing waits', () => {
  const net = lagging(5);
  const leader = net.get(1);
  net.cut.clear();
  for (let t = 0; t < 2; t++) leader.tick();
  for (const m of drain(net.nodes.get(1)!).filter((m) => m.to === 3)) net.get(3).step(m);
  for (const m of drain(net.nodes.get(3)!).filter((m) => m.to === 1)) leader.step(m);
  const snap = drain(net.nodes.get(1)!).find((m): m is MsgSnap => m.type === 'snap' && m.to === 3);
  assert.equal(snap?.snapshot.index, 6);
  // The driver queued it; meanwhile entries commit and apply on 1 and 2.
  net.cut.add(3);
  for (let i = 0; i < 3; i++) net.propose(1, `late${i}`);
  net.heartbeat(1);
  assert.equal(leader.applied, 9);
  assert.equal(leader.renewSnapshot(3, leader.term + 1), null, 'another term');
  assert.equal(leader.renewSnapshot(2, leader.term), null, 'node 2 waits for no snapshot');
  const fresh = leader.renewSnapshot(3, leader.term);
  assert.ok(fresh);
  assert.deepEqual(fresh, { type: 'snap', from: 1, to: 3, term: leader.term, snapshot: { index: 9, term: 1, conf: { voters: [1, 2, 3], learners: [] } } });
  assert.equal(leader.progress(3)!.pendingSnapshot, 9);
  assert.equal(net.get(2).renewSnapshot(3, leader.term), null, 'a follower');
  // Installed: the follower answers at 9, and the leader replicates from 10.
  net.cut.clear();
  const f = net.nodes.get(3)!;
  f.node.step(fresh);
  const rd = f.node.ready()!;
  f.storage.persist(rd);
  f.node.advance(rd);
  for (const m of rd.messages) leader.step(m as Message);
  assert.equal(leader.progress(3)!.state, 'replicate');
  assert.equal(leader.progress(3)!.match, 9);
  net.propose(1, 'after');
  net.heartbeat(1);
  assert.deepEqual(net.get(3).log.all().map((e) => e.index), [10]);
  assert.equal(net.get(3).commit, 10);
});

test('§7: a follower awaiting a snapshot (its driver dropped the data) answers appends with a reset, so a new leader sends one; it does not campaign; the install ends the wait', () => {
  // Node 3 lags (cut off while 5 entries commit): the driver began installing a
  // snapshot from 1, which then goes away.
  const net = lagging(5);
  const f = net.get(3);
  assert.throws(() => net.get(1).awaitSnapshot(), AssertionError, 'a leader never awaits a snapshot');
  f.awaitSnapshot();
  assert.equal(f.awaitingSnapshot, true);
  const commitBefore = f.commit;
  // No campaign, however long the silence: it has no data to lead with (it still votes).
  for (let t = 0; t < 50; t++) f.tick();
  assert.equal(f.role, 'follower');
  assert.equal(drain(net.nodes.get(3)!).filter((m) => m.type === 'vote').length, 0);
  f.campaign();
  assert.equal(f.role, 'follower');
  // Node 2 takes over. Its appends to 3 are answered with a reset (reject at
  // index 0, no hint), and it sends a snapshot instead.
  net.cut.clear();
  net.cut.add(1);
  net.get(2).campaign();
  const seen = exchange(net, [2, 3], 1);
  assert.equal(net.get(2).role, 'leader');
  const reset = seen.find((m): m is MsgAppResp => m.type === 'appResp' && m.from === 3 && m.reject);
  assert.ok(reset, 'node 3 answered an append with a reject');
  assert.deepEqual([reset.index, reset.rejectHint, reset.hintTerm], [0, 0, 0]);
  const snap = seen.find((m): m is MsgSnap => m.type === 'snap' && m.to === 3);
  assert.ok(snap, 'the new leader sent a snapshot');
  assert.ok(snap.snapshot.index > commitBefore);
  // Stepped above (the driver would have installed the data first): the wait is over.
  assert.equal(f.awaitingSnapshot, false);
  assert.ok(f.commit >= snap.snapshot.index);
});

test('§7: a follower awaiting a snapshot takes one at its commit index too: the leader that needs its acknowledgement to commit can send no newer one', () => {
  // All three hold 1..4, committed. Node 3's driver then drops its data for a
  // snapshot, node 1 goes away: node 2 leads but cannot commit without node 3,
  // so its applied point (the snapshot it can send) stays at node 3's commit.
  const net = new Net([1, 2, 3]);
  net.elect(1);
  for (let i = 0; i < 3; i++) net.propose(1, `v${i}`);
  net.heartbeat(1);
  const f = net.get(3);
  const commit = f.commit;
  assert.equal(commit, 4);
  const stale = { type: 'snap', from: 2, to: 3, term: f.term + 1, snapshot: { index: commit, term: 1, conf: { voters: [1, 2, 3], learners: [] } } } as MsgSnap;
  assert.equal(f.acceptsSnapshot(stale), false, 'at its commit: not newer, while it has its data');
  f.awaitSnapshot();
  assert.equal(f.acceptsSnapshot(stale), true, 'awaiting: taken at its commit');
  assert.equal(f.acceptsSnapshot({ ...stale, snapshot: { ...stale.snapshot, index: commit - 1 } }), false, 'never below it');
  net.cut.add(1);
  // Past node 3's leader lease (it grants no vote within it); it does not campaign.
  for (let t = 0; t < 50; t++) f.tick();
  drain(net.nodes.get(3)!);
  net.get(2).campaign();
  const seen = exchange(net, [2, 3], 1);
  assert.equal(net.get(2).role, 'leader');
  const snap = seen.find((m): m is MsgSnap => m.type === 'snap' && m.to === 3);
  assert.ok(snap, 'node 2 sent a snapshot');
  assert.equal(snap.snapshot.index, commit);
  assert.equal(f.awaitingSnapshot, false, 'installed');
  // Node 3 acknowledges again, so node 2 commits its first entry.
  net.stabilize();
  assert.equal(net.get(2).role, 'leader');
  assert.ok(net.get(2).commit > commit, `node 2 commits with node 3 again (commit ${net.get(2).commit})`);
});
