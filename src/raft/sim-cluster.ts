// A seeded, in-memory raft cluster for the simulation tests (sim.test.ts): a
// hostile network (drops, duplicates, delays in ticks hence reordering,
// partitions), crashes and restarts from what each node persisted, random log
// compaction with snapshot transfers (Raft §7), membership changes replacing a
// voter (thesis §4.1: addLearner → promote → remove), ReadIndex reads (thesis
// §6.4) served from a key-value state machine, and restarts with a log damaged in
// the middle (the driver keeps the good prefix and sets repairUntilIndex).
// A repairing node counts as a fault, like a crashed one, and only one at a time
// is damaged: losing the same committed entry on two replicas is data loss. A
// replaced voter is retired (crashed for good) on a model of the OSD's rule: once
// a leader of the new membership applied its removal, it is a follower or still a
// member in its own view, and no vote request reached it for RETIRE_QUIET_TICKS.
//
// Checked after every tick (a failure throws; the caller names the seed):
//   - election safety (§5.2): at most one leader per term, ever;
//   - log matching (§5.3): an (index, term) pair names one entry, and entries with
//     the same (index, term) follow the same term (so, by induction, the same prefix);
//   - leader completeness (§5.4): an entry known committed in term T is in the log
//     (or under the snapshot point) of every leader of a term above T; committed
//     entries never change;
//   - state machine safety (§5.4.3): every node applies the same entry at an index,
//     in order, without gaps (after a snapshot: from its index + 1), so the applied
//     sequences are prefixes of one another;
//   - linearizable reads (§6.4): a ReadIndex read's index covers every write
//     acknowledged before the read was issued, and the value it returns for its key
//     is at least as new as every write to that key acknowledged by then (a write
//     is acknowledged when the node that proposed it applies it).
// The driver behaviour modelled here is the one documented in node.ts / types.ts:
// persist snapshot, then entries, then hard state; send; apply; advance. A
// snapshot's state is installed only if the node would accept it (acceptsSnapshot),
// and is the exact state at the snapshot index (see stateAt).
import assert from 'node:assert/strict';
import { Prng } from '../stdx/prng.js';
import { EMPTY_CONF, decodeConfChange } from './confchange.js';
import { RaftError } from './errors.js';
import { RaftNode } from './node.js';
import type { ConfChange, Entry, HardState, Message, Ready, SnapshotMeta } from './types.js';

export const ELECTION_TICKS = 10;
export const HEARTBEAT_TICKS = 2;
const NET_QUEUE_MAX = 4096;
const DELAY_TICKS_MAX = 3;
const KEYS = 4;
/** A removed node is retired only after this long without a vote request (mayRetire). */
const RETIRE_QUIET_TICKS = 3 * ELECTION_TICKS;

export interface SimStats {
  compactions: number;
  damagedRestarts: number;
  repairs: number;
  /** Of those, repairs of a log damaged with an unknown extent. */
  repairsExtentUnknown: number;
  snapshotsInstalled: number;
  replacementsDone: number;
  readsIssued: number;
  readsServed: number;
}

interface Stored {
  hardState: HardState;
  snapshot?: SnapshotMeta;
  entries: Entry[];
  /** Bootstrap voters for a founding node, [] for a joiner. */
  readonly peers: number[];
  /** The driver's damage marker: repairUntilIndex until the node reports it repaired, else 0. */
  repairUntil: number;
  /** The term of the last entry the log held when it was damaged (with repairUntil). */
  repairTerm?: number;
  /** With repairUntil: no readable record bounds the damage (RaftConfig.repairExtentUnknown). */
  repairExtentUnknown?: boolean;
  started: boolean;
}

interface Sm {
  readonly node: RaftNode;
  /** key → index of the write it holds. */
  kv: Map<number, number>;
  applied: number;
}

type Event = { kind: 'msg'; m: Message; at: number } | { kind: 'report'; sender: RaftNode; from: number; peer: number; ok: boolean; at: number };

interface Read {
  readonly node: RaftNode;
  readonly key: number;
  /** Highest acknowledged write to key when the read was issued: the value read must be at least as new. */
  readonly ackedAtIssue: number;
  /** Highest acknowledged write to any key then: the read index must cover it. */
  readonly ackedAnyAtIssue: number;
  released: boolean;
}

interface EntryFact {
  readonly term: number;
  readonly fp: string;
  readonly prevTerm: number;
}

/** A write: [val u32 LE][key u8]. */
function encodeWrite(val: number, key: number): Uint8Array {
  return new Uint8Array([val & 0xff, (val >>> 8) & 0xff, (val >>> 16) & 0xff, (val >>> 24) & 0xff, key]);
}

/** Entries are immutable and shared between logs and messages: compute each fingerprint once. */
const fingerprints = new WeakMap<Entry, string>();

function fingerprint(e: Entry): string {
  let fp = fingerprints.get(e);
  if (fp === undefined) {
    fp = computeFingerprint(e);
    fingerprints.set(e, fp);
  }
  return fp;
}

function computeFingerprint(e: Entry): string {
  if (e.type === 'conf') {
    const cc = decodeConfChange(e.data) as ConfChange;
    return `conf:${cc.type}:${cc.node}`;
  }
  if (e.data.length === 0) return 'noop';
  const d = e.data;
  return `w:${(d[0] | (d[1] << 8) | (d[2] << 16) | (d[3] << 24)) >>> 0}:${d[4]}`;
}

function writeKey(e: Entry): number | undefined {
  return e.type !== 'conf' && e.data.length === 5 ? e.data[4] : undefined;
}

export class SimCluster {
  readonly prng: Prng;
  /** Every node id ever started. */
  readonly ids: number[];
  readonly stored = new Map<number, Stored>();
  readonly nodes = new Map<number, RaftNode | null>();
  readonly retired = new Set<number>();
  readonly sms = new Map<number, Sm>();
  readonly stats: SimStats = { compactions: 0, damagedRestarts: 0, repairs: 0, repairsExtentUnknown: 0, snapshotsInstalled: 0, replacementsDone: 0, readsIssued: 0, readsServed: 0 };
  events: Event[] = [];
  nowTick = 0;
  /** node → side of the partition; null when connected. */
  partition: Map<number, number> | null = null;
  dropP = 0.1;
  dupP = 0.03;
  delayTicksMax = DELAY_TICKS_MAX;
  private nextVal = 1;
  private nextId: number;
  private nextCtx = 1;
  private readonly faultsMax: number;
  replacement: { old: number; neu: number } | null = null;
  /** node → last tick a vote request reached it (mayRetire). */
  private readonly voteAskedAt = new Map<number, number>();

  // global facts for the checkers
  readonly leaderOfTerm = new Map<number, number>();
  private readonly entryFacts: EntryFact[][] = [];
  private readonly checkedAfter = new WeakMap<Entry, number>();
  /** committed[index]: the entry known committed there and the lowest term it was known committed in. */
  private readonly committed: { term: number; fp: string; commitTerm: number }[] = [];
  private readonly seenCommit = new Map<RaftNode, number>();
  /** appliedFp[index]: what every node applies at index. */
  private readonly appliedFp: string[] = [];
  /** appliedKey[index]: the key written at index, or -1. */
  private readonly appliedKey: number[] = [];
  /** Value → the node instance that proposed it (it acknowledges the write when it applies it). */
  private readonly proposer = new Map<string, RaftNode>();
  /** key → highest index of an acknowledged write. */
  private readonly acked = new Map<number, number>();
  private ackedAny = 0;
  private readonly reads = new Map<number, Read>();
  private serveQueue: { ctx: number; index: number; read: Read }[] = [];

  constructor(
    readonly seed: number,
    readonly size: number,
    /** Without check-quorum a leader cut off from the others stays leader until it hears a higher term. */
    readonly checkQuorum = true,
    /** RaftConfig.preVote. */
    readonly preVote = false,
  ) {
    this.prng = new Prng(seed);
    this.ids = Array.from({ length: size }, (_, k) => k + 1);
    this.nextId = size + 1;
    this.faultsMax = Math.floor((size - 1) / 2);
    for (const id of this.ids) {
      this.stored.set(id, { hardState: { term: 0, vote: 0, commit: 0 }, entries: [], peers: this.ids.slice(), repairUntil: 0, started: false });
      this.start(id);
    }
  }

  // ---- nodes ------------------------------------------------------------------

  start(id: number): void {
    const st = this.stored.get(id)!;
    if (st.started && st.entries.length > 1 && this.damageAllowed(id) && this.prng.chance(0.3)) {
      // The middle of the stored log is unreadable: keep the prefix before it.
      // The driver knows how far the log went only when a readable record of the
      // group follows the damage (the OSD's maxIndexSeen); else nothing bounds it.
      const base = st.snapshot?.index ?? 0;
      const keep = this.prng.int(st.entries.length);
      st.repairExtentUnknown = this.prng.chance(0.5);
      st.repairUntil = st.repairExtentUnknown ? base + Math.max(keep, 1) : base + st.entries.length;
      st.repairTerm = st.entries[st.entries.length - 1].term;
      st.entries = st.entries.slice(0, keep);
      this.stats.damagedRestarts++;
    }
    st.started = true;
    const node = new RaftNode({
      id,
      peers: st.peers,
      electionTicks: ELECTION_TICKS,
      heartbeatTicks: HEARTBEAT_TICKS,
      prng: new Prng(this.prng.u32()),
      storage: { hardState: st.hardState, snapshot: st.snapshot, entries: st.entries.slice() },
      maxInflightMsgs: 4,
      maxMsgBytes: 256,
      maxUncommittedEntries: 64,
      checkQuorum: this.checkQuorum,
      preVote: this.preVote,
      repairUntilIndex: st.repairUntil > 0 ? st.repairUntil : undefined,
      repairUntilTerm: st.repairUntil > 0 ? st.repairTerm : undefined,
      repairExtentUnknown: st.repairUntil > 0 && st.repairExtentUnknown,
    });
    this.nodes.set(id, node);
    // The state machine restarts from the snapshot point (the driver keeps that state durable).
    const at = st.snapshot?.index ?? 0;
    this.sms.set(id, { node, kv: this.stateAt(at), applied: at });
    this.process(id);
  }

  crash(id: number): void {
    const node = this.nodes.get(id);
    if (!node) return;
    this.nodes.set(id, null);
    this.sms.delete(id);
    this.serveQueue = this.serveQueue.filter((s) => s.read.node !== node);
  }

  live(): number[] {
    return this.ids.filter((id) => this.nodes.get(id));
  }

  node(id: number): RaftNode {
    const n = this.nodes.get(id);
    assert.ok(n, `node ${id} is down`);
    return n;
  }

  /** Members of the newest membership any live node has applied (by applied index). */
  members(): number[] {
    let best: RaftNode | undefined;
    for (const id of this.live()) {
      const n = this.node(id);
      if (n.isMember && (best === undefined || n.applied > best.applied)) best = n;
    }
    return best ? [...best.voters, ...best.learners] : [];
  }

  // ---- the driver -------------------------------------------------------------

  /** Drive one node's ready loop: persist (snapshot, entries, hard state), send, apply, advance. */
  process(id: number): void {
    const node = this.node(id);
    for (let rd: Ready | null = node.ready(); rd !== null; rd = node.ready()) {
      const st = this.stored.get(id)!;
      if (rd.snapshot) {
        assert.equal(this.sms.get(id)!.applied, rd.snapshot.index, 'Ready.snapshot is the state the driver installed');
        st.snapshot = rd.snapshot;
        st.entries = [];
      }
      if (rd.entries.length > 0) {
        st.entries.length = rd.entries[0].index - 1 - (st.snapshot?.index ?? 0);
        st.entries.push(...rd.entries);
      }
      if (rd.hardState) st.hardState = rd.hardState;
      for (const m of rd.messages) this.send(m);
      for (const e of rd.committedEntries) this.apply(id, e);
      for (const rs of rd.readStates) {
        const r = this.reads.get(rs.ctx);
        assert.ok(r && r.node === node && !r.released, `ReadState ${rs.ctx} was not registered on node ${id} or came twice`);
        r.released = true;
        assert.ok(rs.index >= r.ackedAnyAtIssue, `linearizability: read ${rs.ctx} got read index ${rs.index} below write ${r.ackedAnyAtIssue} acknowledged before it was issued`);
        this.serveQueue.push({ ctx: rs.ctx, index: rs.index, read: r });
      }
      node.advance(rd);
    }
    const st = this.stored.get(id)!;
    if (st.repairUntil > 0 && !node.repairing) {
      st.repairUntil = 0;
      this.stats.repairs++;
      if (st.repairExtentUnknown) this.stats.repairsExtentUnknown++;
    }
    this.serveReads(id);
  }

  /** Faults so far: crashed members and damaged (repairing) nodes, not counting `except`. */
  private faults(except = 0): number {
    const members = this.members();
    let n = 0;
    for (const id of this.ids) {
      if (this.retired.has(id) || id === except) continue;
      if ((members.includes(id) && !this.nodes.get(id)) || this.stored.get(id)!.repairUntil > 0) n++;
    }
    return n;
  }

  /** May `id`, restarting after a crash, come back damaged? Its crash turns into the damage. */
  private damageAllowed(id: number): boolean {
    return this.ids.every((i) => this.stored.get(i)!.repairUntil === 0) && this.faults(id) < this.faultsMax;
  }

  private apply(id: number, e: Entry): void {
    const sm = this.sms.get(id)!;
    assert.equal(e.index, sm.applied + 1, `node ${id} applied ${e.index} after ${sm.applied}`);
    sm.applied = e.index;
    const fp = fingerprint(e);
    const prev = this.appliedFp[e.index];
    if (prev === undefined) {
      this.appliedFp[e.index] = fp;
      this.appliedKey[e.index] = writeKey(e) ?? -1;
    } else assert.equal(fp, prev, `state machine safety: node ${id} applied ${fp} at ${e.index}, another node applied ${prev}`);
    const key = writeKey(e);
    if (key === undefined) return;
    sm.kv.set(key, e.index);
    if (this.proposer.get(fp) === sm.node) {
      this.acked.set(key, Math.max(this.acked.get(key) ?? 0, e.index));
      this.ackedAny = Math.max(this.ackedAny, e.index);
    }
  }

  /** The state machine at index: every write applied (by anyone) up to it. */
  private stateAt(index: number): Map<number, number> {
    const kv = new Map<number, number>();
    for (let i = 1; i <= index; i++) {
      assert.ok(this.appliedFp[i] !== undefined, `state at ${index} needs entry ${i}, applied nowhere`);
      if (this.appliedKey[i] >= 0) kv.set(this.appliedKey[i], i);
    }
    return kv;
  }

  private serveReads(id: number): void {
    const sm = this.sms.get(id);
    if (!sm || this.serveQueue.length === 0) return;
    this.serveQueue = this.serveQueue.filter((s) => {
      if (s.read.node !== sm.node || s.index > sm.applied) return true;
      const got = sm.kv.get(s.read.key) ?? 0;
      assert.ok(got >= s.read.ackedAtIssue, `linearizability: read ${s.ctx} of key ${s.read.key} on node ${id} saw the write at ${got}, but the write at ${s.read.ackedAtIssue} was acknowledged before it was issued`);
      this.stats.readsServed++;
      return false;
    });
  }

  // ---- network ----------------------------------------------------------------

  connected(a: number, b: number): boolean {
    return this.partition === null || (this.partition.get(a) ?? 0) === (this.partition.get(b) ?? 0);
  }

  private send(m: Message): void {
    if (this.prng.chance(this.dropP)) {
      this.lost(m);
      return;
    }
    const copies = this.prng.chance(this.dupP) ? 2 : 1;
    for (let c = 0; c < copies; c++) {
      if (this.events.length >= NET_QUEUE_MAX) return; // a full link drops, like a real one
      this.events.push({ kind: 'msg', m, at: this.nowTick + 1 + this.prng.int(this.delayTicksMax) });
    }
  }

  /** A snapshot transfer that does not arrive is reported failed to its sender. */
  private lost(m: Message): void {
    if (m.type !== 'snap') return;
    const sender = this.nodes.get(m.from);
    if (sender) this.events.push({ kind: 'report', sender, from: m.from, peer: m.to, ok: false, at: this.nowTick + 1 + this.prng.int(this.delayTicksMax) });
  }

  private deliver(m: Message): void {
    const node = this.nodes.get(m.to);
    if (!node || !this.connected(m.from, m.to)) {
      this.lost(m);
      return;
    }
    if (m.type === 'vote') this.voteAskedAt.set(m.to, this.nowTick);
    if (m.type === 'snap') {
      // The driver installs the shipped state only if the node will take it.
      if (node.acceptsSnapshot(m)) {
        this.sms.set(m.to, { node, kv: this.stateAt(m.snapshot.index), applied: m.snapshot.index });
        this.stats.snapshotsInstalled++;
      }
      const sender = this.nodes.get(m.from);
      if (sender) this.events.push({ kind: 'report', sender, from: m.from, peer: m.to, ok: true, at: this.nowTick + 1 + this.prng.int(this.delayTicksMax) });
    }
    node.step(m);
    this.process(m.to);
  }

  // ---- time -------------------------------------------------------------------

  tick(): void {
    this.nowTick++;
    for (const id of this.shuffled(this.live())) {
      this.node(id).tick();
      this.process(id);
    }
    const due: Event[] = [];
    const later: Event[] = [];
    for (const ev of this.events) (ev.at <= this.nowTick ? due : later).push(ev);
    this.events = later;
    for (const ev of this.shuffled(due)) {
      if (ev.kind === 'msg') this.deliver(ev.m);
      else if (this.nodes.get(ev.from) === ev.sender) {
        ev.sender.reportSnapshot(ev.peer, ev.ok);
        this.process(ev.from);
      }
    }
    this.driveReplacement();
    this.check();
  }

  propose(id: number): number | undefined {
    const v = this.nextVal++;
    const data = encodeWrite(v, this.prng.int(KEYS));
    const node = this.node(id);
    const r = node.propose(data);
    if (r instanceof RaftError) {
      assert.ok(r.code === 'ERR_RAFT_NOT_LEADER' || r.code === 'ERR_LIMIT', r.message);
      return undefined;
    }
    this.proposer.set(fingerprint({ index: 0, term: 0, data }), node);
    this.process(id);
    return r;
  }

  /** Issue a ReadIndex read on id; returns its ctx, or undefined if refused. */
  read(id: number): number | undefined {
    const node = this.node(id);
    const ctx = this.nextCtx++;
    const key = this.prng.int(KEYS);
    try {
      node.readIndex(ctx);
    } catch (err) {
      assert.ok(err instanceof RaftError && (err.code === 'ERR_RAFT_NOT_LEADER' || err.code === 'ERR_LIMIT'), String(err));
      return undefined;
    }
    this.stats.readsIssued++;
    this.reads.set(ctx, { node, key, ackedAtIssue: this.acked.get(key) ?? 0, ackedAnyAtIssue: this.ackedAny, released: false });
    this.process(id);
    return ctx;
  }

  readServed(ctx: number): boolean {
    const r = this.reads.get(ctx);
    return r !== undefined && r.released && !this.serveQueue.some((s) => s.ctx === ctx);
  }

  compact(id: number): void {
    const node = this.node(id);
    const base = node.snapshotMeta.index;
    if (node.applied <= base) return;
    const index = base + 1 + this.prng.int(node.applied - base);
    const meta = node.compact(index);
    const st = this.stored.get(id)!;
    st.entries = st.entries.filter((e) => e.index > meta.index);
    st.snapshot = meta;
    this.stats.compactions++;
  }

  // ---- membership: replace a voter (thesis §4.1) ------------------------------

  /** Start replacing a voter by a fresh node, if none is under way and a leader has a settled membership. */
  startReplacement(): void {
    if (this.replacement !== null) return;
    const leader = this.anyLeader();
    if (leader === undefined) return;
    const l = this.node(leader);
    if (l.learners.length > 0 || l.voters.length !== this.size || l.pendingConfChange) return;
    const old = l.voters[this.prng.int(l.voters.length)];
    const neu = this.nextId++;
    this.ids.push(neu);
    // Joiners start with no membership, either as an OSD does (a snapshot at 0 with an
    // empty conf) or with nothing at all.
    const snapshot = this.prng.chance(0.5) ? { index: 0, term: 0, conf: EMPTY_CONF } : undefined;
    this.stored.set(neu, { hardState: { term: 0, vote: 0, commit: 0 }, snapshot, entries: [], peers: [], repairUntil: 0, started: false });
    this.start(neu);
    this.replacement = { old, neu };
  }

  /** One step toward the replacement, proposed on whichever node leads now. */
  private driveReplacement(): void {
    const r = this.replacement;
    if (r === null) return;
    const leader = this.anyLeader();
    if (leader === undefined) return;
    const l = this.node(leader);
    const isVoter = (id: number) => l.voters.includes(id);
    const isLearner = (id: number) => l.learners.includes(id);
    let cc: ConfChange | undefined;
    if (!isVoter(r.neu) && !isLearner(r.neu)) {
      if (isVoter(r.old) || isLearner(r.old)) cc = { type: 'addLearner', node: r.neu };
    } else if (isLearner(r.neu)) {
      const pr = l.progress(r.neu);
      if (pr !== undefined && pr.match + 2 >= l.commit) cc = { type: 'promote', node: r.neu };
    } else if (isVoter(r.old) || isLearner(r.old)) {
      cc = { type: 'remove', node: r.old };
    }
    if (cc === undefined) {
      if (isVoter(r.neu) && !isVoter(r.old) && !isLearner(r.old) && leader !== r.old && this.mayRetire(r.old)) {
        // The removal is applied on a leader of the new membership, hence committed:
        // retire the old node.
        this.crash(r.old);
        this.retired.add(r.old);
        this.replacement = null;
        this.stats.replacementsDone++;
      }
      return;
    }
    if (l.pendingConfChange) return;
    const res = l.proposeConfChange(cc);
    if (typeof res === 'number') this.process(leader);
    else assert.ok(res.code === 'ERR_RAFT_CONF_CHANGE' || res.code === 'ERR_LIMIT', res.message);
  }

  /**
   * Modelled on the OSD's rule for deleting a removed replica (osd.ts
   * housekeeping): no voter asked for its vote for a while, and it is not
   * campaigning or leading after its removal. A voter that has not applied the
   * removal may need its vote, or its log (node.ts, "removed nodes"). One that
   * never learned of its removal is retired here however it campaigns (the OSD
   * deletes it only once a member's "removed" notice made it a follower, which
   * the OSD-level sim checks: test/sim/cluster.test.ts).
   */
  private mayRetire(id: number): boolean {
    const n = this.nodes.get(id);
    if (n && n.role !== 'follower' && !n.isMember) return false;
    return this.nowTick - (this.voteAskedAt.get(id) ?? -Infinity) >= RETIRE_QUIET_TICKS;
  }

  private anyLeader(): number | undefined {
    const leaders = this.live().filter((id) => this.node(id).role === 'leader');
    return leaders.length === 0 ? undefined : leaders[this.prng.int(leaders.length)];
  }

  // ---- chaos ------------------------------------------------------------------

  chaos(): void {
    const p = this.prng;
    if (p.chance(0.3)) {
      // Mostly on a node that believes it leads (acknowledged writes for the read
      // checks); sometimes elsewhere, which must refuse.
      const live = this.live();
      const leaders = live.filter((id) => this.node(id).role === 'leader');
      const pool = leaders.length > 0 && p.chance(0.7) ? leaders : live;
      if (pool.length > 0) this.propose(pool[p.int(pool.length)]);
    }
    if (this.faults() < this.faultsMax && p.chance(0.02)) {
      const up = this.members().filter((id) => this.nodes.get(id));
      if (up.length > 0) this.crash(up[p.int(up.length)]);
    }
    const down = this.ids.filter((id) => !this.nodes.get(id) && !this.retired.has(id));
    if (down.length > 0 && p.chance(0.03)) this.start(down[p.int(down.length)]);
    if (this.partition === null && p.chance(0.02)) {
      const leaders = this.live().filter((id) => this.node(id).role === 'leader');
      if (leaders.length > 0 && p.chance(0.5)) {
        // Cut a leader off with at most a minority: the others elect a new one while
        // it may still believe it leads (the case ReadIndex's quorum round is for).
        const cut = new Set([leaders[p.int(leaders.length)]]);
        for (const id of this.ids) if (cut.size < this.faultsMax && p.chance(0.3)) cut.add(id);
        this.partition = new Map(this.ids.map((id) => [id, cut.has(id) ? 1 : 0]));
      } else {
        this.partition = new Map(this.ids.map((id) => [id, p.int(2)]));
      }
    } else if (this.partition !== null && p.chance(0.02)) {
      this.partition = null;
    }
    for (const id of this.live()) if (p.chance(0.02)) this.compact(id);
    if (p.chance(0.01)) this.startReplacement();
    if (p.chance(0.4)) {
      const live = this.live();
      // Mostly on a leader; sometimes elsewhere, which must throw ERR_RAFT_NOT_LEADER.
      const leaders = live.filter((id) => this.node(id).role === 'leader');
      const pool = leaders.length > 0 && p.chance(0.9) ? leaders : live;
      if (pool.length > 0) this.read(pool[p.int(pool.length)]);
    }
  }

  heal(): void {
    this.partition = null;
    this.dropP = 0;
    this.dupP = 0;
    this.delayTicksMax = 1;
    for (const id of this.ids) if (!this.nodes.get(id) && !this.retired.has(id)) this.start(id);
  }

  /** A leader that every member of its membership follows in its term. */
  stableLeader(): number | undefined {
    const leaders = this.live().filter((id) => this.node(id).role === 'leader');
    if (leaders.length !== 1) return undefined;
    const l = this.node(leaders[0]);
    const all = [...l.voters, ...l.learners].every((id) => {
      const n = this.nodes.get(id);
      return n && n.term === l.term && n.leaderId === l.id;
    });
    return all ? l.id : undefined;
  }

  appliedOn(id: number): number {
    return this.sms.get(id)?.applied ?? 0;
  }

  // ---- invariants -------------------------------------------------------------

  check(): void {
    for (const id of this.live()) {
      const node = this.node(id);
      // election safety
      if (node.role === 'leader') {
        const other = this.leaderOfTerm.get(node.term);
        assert.ok(other === undefined || other === id, `election safety: ${other} and ${id} both led term ${node.term}`);
        this.leaderOfTerm.set(node.term, id);
      }
      // log matching (an entry object already checked after the same term is skipped)
      const log = node.log.all();
      for (let k = 0; k < log.length; k++) {
        const e = log[k];
        const prevTerm = k === 0 ? node.log.snapshotTerm() : log[k - 1].term;
        if (this.checkedAfter.get(e) === prevTerm) continue;
        this.checkedAfter.set(e, prevTerm);
        const facts = (this.entryFacts[e.index] ??= []);
        const f = facts.find((x) => x.term === e.term);
        const fp = fingerprint(e);
        if (f === undefined) facts.push({ term: e.term, fp, prevTerm });
        else {
          assert.equal(fp, f.fp, `log matching: two entries at (${e.index}, ${e.term})`);
          assert.equal(prevTerm, f.prevTerm, `log matching: (${e.index}, ${e.term}) follows different terms`);
        }
      }
      // committed entries are fixed
      const commit = node.log.committed;
      const snapIndex = node.log.snapshotIndex();
      for (let i = Math.max(this.seenCommit.get(node) ?? 0, snapIndex) + 1; i <= commit; i++) {
        const e = node.log.entryAt(i)!;
        const c = this.committed[i];
        const fp = fingerprint(e);
        if (c === undefined) this.committed[i] = { term: e.term, fp, commitTerm: node.term };
        else {
          assert.ok(c.term === e.term && c.fp === fp, `committed entry ${i} differs on node ${id}`);
          c.commitTerm = Math.min(c.commitTerm, node.term);
        }
      }
      this.seenCommit.set(node, commit);
      const c = this.committed[snapIndex];
      if (snapIndex > 0 && c !== undefined) assert.equal(node.log.snapshotTerm(), c.term, `node ${id} snapshot term at ${snapIndex}`);
    }
    // leader completeness
    for (const id of this.live()) {
      const node = this.node(id);
      if (node.role !== 'leader') continue;
      const snapIndex = node.log.snapshotIndex();
      for (let i = snapIndex; i < this.committed.length; i++) {
        const c = this.committed[i];
        if (c === undefined || c.commitTerm >= node.term) continue;
        const term = node.log.term(i);
        const e = node.log.entryAt(i);
        assert.ok(term === c.term && (e === undefined || fingerprint(e) === c.fp), `leader completeness: leader ${id} of term ${node.term} lacks committed entry ${i}`);
      }
    }
  }

  private shuffled<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = this.prng.int(i + 1);
      [xs[i], xs[j]] = [xs[j], xs[i]];
    }
    return xs;
  }
}
