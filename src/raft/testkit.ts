// Test helpers for the raft unit tests (not used by production code): an
// in-memory storage that follows the Ready contract (snapshot, then entries, then
// hard state), a node factory, a ready-loop drain, and a tiny lossless network
// that delivers everything until quiet and completes snapshot transfers at once.
import assert from 'node:assert/strict';
import { Prng } from '../stdx/prng.js';
import { RaftNode, type RaftStorage } from './node.js';
import type { Entry, HardState, Message, Ready, ReadState, SnapshotMeta } from './types.js';

export const ELECTION_TICKS = 10;
export const HEARTBEAT_TICKS = 2;

export function ent(index: number, term: number, text = ''): Entry {
  return { index, term, data: new TextEncoder().encode(text) };
}

export class MemStorage implements RaftStorage {
  hardState: HardState = { term: 0, vote: 0, commit: 0 };
  snapshot: SnapshotMeta | undefined = undefined;
  entries: Entry[] = [];

  private get base(): number {
    return this.snapshot?.index ?? 0;
  }

  persist(rd: Ready): void {
    if (rd.snapshot) {
      this.snapshot = rd.snapshot;
      this.entries = [];
    }
    if (rd.entries.length > 0) {
      this.entries.length = rd.entries[0].index - 1 - this.base;
      this.entries.push(...rd.entries);
    }
    if (rd.hardState) this.hardState = rd.hardState;
  }

  /** What the driver does with the result of node.compact(). */
  compact(meta: SnapshotMeta): void {
    this.entries = this.entries.filter((e) => e.index > meta.index);
    this.snapshot = meta;
  }
}

export interface NodeOpts {
  peers: number[];
  storage: MemStorage;
  seed: number;
  maxInflightMsgs: number;
  maxMsgBytes: number;
  maxUncommittedEntries: number;
  repairUntilIndex: number;
  repairUntilTerm: number;
  repairExtentUnknown: boolean;
  applied: number;
  preVote: boolean;
  checkQuorum: boolean;
}

export interface TestNode {
  node: RaftNode;
  storage: MemStorage;
}

export function newNode(id: number, opts: Partial<NodeOpts> = {}): TestNode {
  const storage = opts.storage ?? new MemStorage();
  const node = new RaftNode({
    id,
    peers: opts.peers,
    electionTicks: ELECTION_TICKS,
    heartbeatTicks: HEARTBEAT_TICKS,
    prng: new Prng(opts.seed ?? id),
    storage: { hardState: storage.hardState, snapshot: storage.snapshot, entries: storage.entries.slice() },
    maxInflightMsgs: opts.maxInflightMsgs ?? 4,
    maxMsgBytes: opts.maxMsgBytes ?? 1 << 20,
    maxUncommittedEntries: opts.maxUncommittedEntries,
    repairUntilIndex: opts.repairUntilIndex,
    repairUntilTerm: opts.repairUntilTerm,
    repairExtentUnknown: opts.repairExtentUnknown,
    preVote: opts.preVote,
    checkQuorum: opts.checkQuorum,
    applied: opts.applied,
  });
  return { node, storage };
}

export interface Collected {
  applied: Entry[];
  readStates: ReadState[];
  snapshots: SnapshotMeta[];
}

/** Persist, collect messages and advance until the node has nothing more; returns the messages it sent. */
export function drain(n: TestNode, out?: Collected): Message[] {
  const msgs: Message[] = [];
  for (let rd = n.node.ready(); rd !== null; rd = n.node.ready()) {
    n.storage.persist(rd);
    msgs.push(...rd.messages);
    if (out) {
      if (rd.snapshot) out.snapshots.push(rd.snapshot);
      out.applied.push(...rd.committedEntries);
      out.readStates.push(...rd.readStates);
    }
    n.node.advance(rd);
  }
  return msgs;
}

/**
 * Lossless network delivering everything until quiet. `cut` drops messages to and
 * from a node; `filter` may drop others. A delivered MsgSnap is reported as a
 * successful transfer to its sender right after the receiver stepped it.
 */
export class Net {
  readonly nodes = new Map<number, TestNode>();
  readonly out = new Map<number, Collected>();
  cut = new Set<number>();
  filter: (m: Message) => boolean = () => true;
  /** Every message delivered, in order (tests inspect it). */
  readonly log: Message[] = [];

  constructor(
    ids: number[],
    peers: number[] = ids,
    /** Options every node of the net starts (and restarts) with. */
    readonly nodeOpts: Partial<NodeOpts> = {},
  ) {
    for (const id of ids) this.add(id, { peers });
  }

  add(id: number, opts: Partial<NodeOpts> = {}): TestNode {
    const n = newNode(id, { ...this.nodeOpts, ...opts });
    this.nodes.set(id, n);
    this.out.set(id, { applied: [], readStates: [], snapshots: [] });
    return n;
  }

  /** Crash and restart a node from what it persisted. */
  restart(id: number, opts: Partial<NodeOpts> = {}): TestNode {
    const old = this.nodes.get(id)!;
    return this.add(id, { storage: old.storage, ...opts });
  }

  get(id: number): RaftNode {
    return this.nodes.get(id)!.node;
  }

  collected(id: number): Collected {
    return this.out.get(id)!;
  }

  stabilize(): void {
    let pending: Message[] = [];
    for (let round = 0; round < 1000; round++) {
      for (const [id, n] of this.nodes) pending.push(...drain(n, this.out.get(id)));
      if (pending.length === 0) return;
      const now = pending;
      pending = [];
      for (const m of now) {
        if (this.cut.has(m.from) || this.cut.has(m.to) || !this.filter(m)) continue;
        const to = this.nodes.get(m.to);
        if (!to) continue;
        this.log.push(m);
        to.node.step(m);
        if (m.type === 'snap') {
          pending.push(...drain(to, this.out.get(m.to)));
          this.nodes.get(m.from)?.node.reportSnapshot(m.to, true);
        }
      }
    }
    assert.fail('network did not stabilize');
  }

  tick(ids: number[] = [...this.nodes.keys()]): void {
    for (const id of ids) if (!this.cut.has(id)) this.get(id).tick();
    this.stabilize();
  }

  /** Elect by timeout, as in production (with check-quorum a hand-triggered campaign loses to the lease). */
  electByTimeout(): number {
    for (let t = 0; t < 10 * ELECTION_TICKS; t++) {
      this.tick();
      const leaders = [...this.nodes.keys()].filter((id) => !this.cut.has(id) && this.get(id).role === 'leader');
      if (leaders.length === 1) return leaders[0];
    }
    return assert.fail('no leader elected');
  }

  elect(id: number): void {
    this.get(id).campaign();
    this.stabilize();
    assert.equal(this.get(id).role, 'leader');
  }

  /** One heartbeat round of the leader (and everything it causes). */
  heartbeat(leader: number): void {
    for (let t = 0; t < HEARTBEAT_TICKS; t++) this.get(leader).tick();
    this.stabilize();
  }

  propose(leader: number, text: string): number {
    const r = this.get(leader).propose(new TextEncoder().encode(text));
    assert.equal(typeof r, 'number', `propose refused: ${String(r)}`);
    this.stabilize();
    return r as number;
  }
}

export function text(e: Entry): string {
  return new TextDecoder().decode(e.data);
}
