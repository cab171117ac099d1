// Seeded simulation of raft groups of 3 and 5 nodes (§5 safety, §5.2 liveness).
// The network is in-memory and hostile: random drops, duplicates, delays in ticks
// (hence reordering) and partitions that heal; nodes crash and restart keeping only
// what they persisted through ready()/advance(). After every tick we check:
//   - election safety (§5.2): at most one leader per term, ever;
//   - log matching (§5.3): an (index, term) pair names one entry, and entries with
//     the same (index, term) have the same predecessor term (so, by induction, the
//     same prefix);
//   - leader completeness (§5.4): an entry known committed in term T is in the log
//     of every leader of a term above T; committed entries never change;
//   - state machine safety (§5.4.3): no two nodes apply different entries at an
//     index; each node applies indexes in order without gaps.
// At the end the network heals and every node restarts; a stable leader must
// emerge and commit new proposals on every node within a bounded number of ticks.
// A failure names the seed; TESSERA_SEED=N replays that seed alone (both sizes).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prng } from '../stdx/prng.js';
import { RaftNode } from './node.js';
import { RaftError } from './errors.js';
import type { Entry, HardState, Message, Ready } from './types.js';

const SEEDS_PER_SIZE = 150;
const ELECTION_TICKS = 10;
const HEARTBEAT_TICKS = 2;
const CHAOS_TICKS = 300;
/** After healing: ticks allowed for a stable leader to emerge, then for proposals to commit everywhere. */
const STABLE_LEADER_TICKS_MAX = 40 * ELECTION_TICKS;
const COMMIT_TICKS_MAX = 5 * ELECTION_TICKS;
const NET_QUEUE_MAX = 4096;
const DELAY_TICKS_MAX = 3;
const FINAL_PROPOSALS = 5;

interface Stored {
  hardState: HardState;
  entries: Entry[];
}

interface InFlight {
  readonly m: Message;
  readonly deliverAtTick: number;
}

interface EntryFact {
  readonly term: number;
  readonly val: number;
  readonly prevTerm: number;
}

function val(e: Entry): number {
  const d = e.data;
  return d.length === 0 ? -1 : (d[0] | (d[1] << 8) | (d[2] << 16) | (d[3] << 24)) >>> 0;
}

function encodeVal(v: number): Uint8Array {
  return new Uint8Array([v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff]);
}

class Sim {
  readonly prng: Prng;
  readonly ids: number[];
  readonly stored = new Map<number, Stored>();
  readonly nodes = new Map<number, RaftNode | null>();
  readonly appliedIndex = new Map<number, number>();
  readonly seenCommit = new Map<number, number>();
  net: InFlight[] = [];
  nowTick = 0;
  /** node → side of the partition; null when connected. */
  partition: Map<number, number> | null = null;
  dropP = 0.1;
  dupP = 0.03;
  delayTicksMax = DELAY_TICKS_MAX;
  nextVal = 1;

  // global facts for the checkers
  readonly leaderOfTerm = new Map<number, number>();
  /** entryFacts[index] lists the distinct (term, val, prevTerm) ever seen at index. */
  readonly entryFacts: EntryFact[][] = [];
  /** committed[index]: the entry known committed there and the lowest term it was known committed in. */
  readonly committed: { term: number; val: number; commitTerm: number }[] = [];
  readonly applied: number[] = [];

  constructor(readonly seed: number, size: number) {
    this.prng = new Prng(seed);
    this.ids = Array.from({ length: size }, (_, k) => k + 1);
    for (const id of this.ids) {
      this.stored.set(id, { hardState: { term: 0, vote: 0, commit: 0 }, entries: [] });
      this.start(id);
    }
  }

  start(id: number): void {
    const st = this.stored.get(id)!;
    const node = new RaftNode({
      id,
      peers: this.ids,
      electionTicks: ELECTION_TICKS,
      heartbeatTicks: HEARTBEAT_TICKS,
      prng: new Prng(this.prng.u32()),
      storage: { hardState: st.hardState, entries: st.entries.slice() },
      maxInflightMsgs: 4,
      maxMsgBytes: 256,
      maxUncommittedEntries: 64,
    });
    this.nodes.set(id, node);
    this.appliedIndex.set(id, 0);
    this.seenCommit.set(id, 0);
  }

  live(): number[] {
    return this.ids.filter((id) => this.nodes.get(id) !== null);
  }

  connected(a: number, b: number): boolean {
    return this.partition === null || this.partition.get(a) === this.partition.get(b);
  }

  send(m: Message): void {
    if (this.prng.chance(this.dropP)) return;
    const copies = this.prng.chance(this.dupP) ? 2 : 1;
    for (let c = 0; c < copies; c++) {
      if (this.net.length >= NET_QUEUE_MAX) return; // a full link drops, like a real one
      this.net.push({ m, deliverAtTick: this.nowTick + 1 + this.prng.int(this.delayTicksMax) });
    }
  }

  /** Drive one node's ready loop: persist, send, apply, advance. */
  process(id: number): void {
    const node = this.nodes.get(id)!;
    for (let rd: Ready | null = node.ready(); rd !== null; rd = node.ready()) {
      const st = this.stored.get(id)!;
      if (rd.entries.length > 0) {
        st.entries.length = rd.entries[0].index - 1;
        st.entries.push(...rd.entries);
      }
      if (rd.hardState) st.hardState = rd.hardState;
      for (const m of rd.messages) this.send(m);
      for (const e of rd.committedEntries) this.apply(id, e);
      node.advance(rd);
    }
  }

  apply(id: number, e: Entry): void {
    const last = this.appliedIndex.get(id)!;
    assert.equal(e.index, last + 1, `node ${id} applied ${e.index} after ${last}`);
    this.appliedIndex.set(id, e.index);
    const v = val(e);
    const prev = this.applied[e.index];
    if (prev === undefined) this.applied[e.index] = v;
    else assert.equal(v, prev, `state machine safety: node ${id} applied ${v} at ${e.index}, another node applied ${prev}`);
  }

  check(): void {
    for (const id of this.live()) {
      const node = this.nodes.get(id)!;
      // election safety
      if (node.role === 'leader') {
        const other = this.leaderOfTerm.get(node.term);
        assert.ok(other === undefined || other === id, `election safety: ${other} and ${id} both led term ${node.term}`);
        this.leaderOfTerm.set(node.term, id);
      }
      // log matching
      const log = node.log.all();
      for (let k = 0; k < log.length; k++) {
        const e = log[k];
        const prevTerm = k === 0 ? 0 : log[k - 1].term;
        const facts = (this.entryFacts[e.index] ??= []);
        const f = facts.find((x) => x.term === e.term);
        if (f === undefined) facts.push({ term: e.term, val: val(e), prevTerm });
        else {
          assert.equal(val(e), f.val, `log matching: two entries at (${e.index}, ${e.term})`);
          assert.equal(prevTerm, f.prevTerm, `log matching: (${e.index}, ${e.term}) follows different terms`);
        }
      }
      // committed entries are fixed
      const commit = node.log.committed;
      for (let i = this.seenCommit.get(id)! + 1; i <= commit; i++) {
        const e = node.log.entryAt(i)!;
        const c = this.committed[i];
        if (c === undefined) this.committed[i] = { term: e.term, val: val(e), commitTerm: node.term };
        else {
          assert.ok(c.term === e.term && c.val === val(e), `committed entry ${i} differs on node ${id}`);
          c.commitTerm = Math.min(c.commitTerm, node.term);
        }
      }
      this.seenCommit.set(id, commit);
    }
    // leader completeness
    for (const id of this.live()) {
      const node = this.nodes.get(id)!;
      if (node.role !== 'leader') continue;
      for (let i = 1; i < this.committed.length; i++) {
        const c = this.committed[i];
        if (c.commitTerm >= node.term) continue;
        const e = node.log.entryAt(i);
        assert.ok(e !== undefined && e.term === c.term && val(e) === c.val, `leader completeness: leader ${id} of term ${node.term} lacks committed entry ${i}`);
      }
    }
  }

  propose(id: number): number | undefined {
    const v = this.nextVal++;
    const r = this.nodes.get(id)!.propose(encodeVal(v));
    if (r instanceof RaftError) {
      assert.ok(r.code === 'ERR_RAFT_NOT_LEADER' || r.code === 'ERR_LIMIT', r.message);
      return undefined;
    }
    this.process(id);
    return r;
  }

  tick(): void {
    this.nowTick++;
    for (const id of this.shuffled(this.live())) {
      this.nodes.get(id)!.tick();
      this.process(id);
    }
    const due: InFlight[] = [];
    const later: InFlight[] = [];
    for (const f of this.net) (f.deliverAtTick <= this.nowTick ? due : later).push(f);
    this.net = later;
    for (const { m } of this.shuffled(due)) {
      const node = this.nodes.get(m.to);
      if (!node || !this.connected(m.from, m.to)) continue;
      node.step(m);
      this.process(m.to);
    }
    this.check();
  }

  chaos(): void {
    const p = this.prng;
    const size = this.ids.length;
    const faultsMax = Math.floor((size - 1) / 2);
    if (p.chance(0.3)) {
      const live = this.live();
      if (live.length > 0) this.propose(live[p.int(live.length)]);
    }
    const crashed = this.ids.filter((id) => this.nodes.get(id) === null);
    if (crashed.length < faultsMax && p.chance(0.02)) {
      const live = this.live();
      this.nodes.set(live[p.int(live.length)], null);
    }
    if (crashed.length > 0 && p.chance(0.03)) {
      const id = crashed[p.int(crashed.length)];
      this.start(id);
      this.process(id);
    }
    if (this.partition === null && p.chance(0.02)) {
      this.partition = new Map(this.ids.map((id) => [id, p.int(2)]));
    } else if (this.partition !== null && p.chance(0.03)) {
      this.partition = null;
    }
  }

  heal(): void {
    this.partition = null;
    this.dropP = 0;
    this.dupP = 0;
    this.delayTicksMax = 1;
    for (const id of this.ids) {
      if (this.nodes.get(id) === null) {
        this.start(id);
        this.process(id);
      }
    }
  }

  stableLeader(): number | undefined {
    const leaders = this.ids.filter((id) => this.nodes.get(id)!.role === 'leader');
    if (leaders.length !== 1) return undefined;
    const l = this.nodes.get(leaders[0])!;
    const all = this.ids.every((id) => this.nodes.get(id)!.term === l.term && this.nodes.get(id)!.leaderId === l.id);
    return all ? l.id : undefined;
  }

  private shuffled<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = this.prng.int(i + 1);
      [xs[i], xs[j]] = [xs[j], xs[i]];
    }
    return xs;
  }
}

function runSeed(seed: number, size: number): void {
  const sim = new Sim(seed, size);
  for (let t = 0; t < CHAOS_TICKS; t++) {
    sim.chaos();
    sim.tick();
  }
  sim.heal();
  let leader: number | undefined;
  for (let t = 0; t < STABLE_LEADER_TICKS_MAX && leader === undefined; t++) {
    sim.tick();
    leader = sim.stableLeader();
  }
  assert.ok(leader !== undefined, `liveness: no stable leader ${STABLE_LEADER_TICKS_MAX} ticks after healing`);
  // Let the leader's backlog drain so the uncommitted limit does not refuse the final proposals.
  const proposed: number[] = [];
  for (let k = 0; k < FINAL_PROPOSALS; k++) {
    for (let t = 0; t < COMMIT_TICKS_MAX; t++) {
      const idx = sim.propose(leader);
      if (idx !== undefined) {
        proposed.push(idx);
        break;
      }
      sim.tick();
    }
  }
  assert.equal(proposed.length, FINAL_PROPOSALS, 'liveness: the stable leader refused proposals');
  const target = Math.max(...proposed);
  let done = false;
  for (let t = 0; t < COMMIT_TICKS_MAX && !done; t++) {
    sim.tick();
    done = sim.ids.every((id) => sim.appliedIndex.get(id)! >= target);
  }
  assert.ok(done, `liveness: proposals up to ${target} not applied on every node within ${COMMIT_TICKS_MAX} ticks`);
  assert.equal(sim.stableLeader(), leader, 'leadership changed on a healthy network');
}

function seeds(size: number): number[] {
  const env = process.env.TESSERA_SEED;
  if (env !== undefined && env !== '') return [Number(env) >>> 0];
  return Array.from({ length: SEEDS_PER_SIZE }, (_, k) => size * 100003 + k);
}

for (const size of [3, 5]) {
  test(`raft simulation: ${size} nodes, ${SEEDS_PER_SIZE} seeds, drops/dups/delays/partitions/crashes`, () => {
    for (const seed of seeds(size)) {
      try {
        runSeed(seed, size);
      } catch (err) {
        throw new Error(`raft sim failed: size ${size} seed ${seed} (replay: TESSERA_SEED=${seed})\n${(err as Error).stack}`);
      }
    }
  });
}
