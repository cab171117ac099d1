// RaftNode: one raft group member as a pure state machine (etcd-io/raft style).
// No IO, no clock, no Math.random: time is tick(), input is step(msg), randomness
// is the injected Prng, and output is ready() — what to persist, send and apply —
// acknowledged by advance(). A seed therefore replays a whole cluster run.
//
// Rules implemented (Raft paper, Ongaro & Ousterhout 2014):
// - §5.1 terms: a message with a higher term makes us a follower of that term;
//   lower-term messages are dropped (AppendEntries/heartbeats get our term back so
//   a stale leader steps down).
// - §5.2 election: randomized timeout in [electionTicks, 2*electionTicks); one vote
//   per term (persisted in HardState before the answer leaves).
// - §5.4.1 election restriction: vote only for a log at least as up-to-date.
// - §5.3 replication: prevLogIndex/prevLogTerm consistency check; conflicting
//   uncommitted suffixes are truncated; fast backoff with a (hint index, hint term).
// - §5.4.2 commit only current-term entries by counting matchIndex; a new leader
//   appends an empty entry to commit its predecessors' entries.
// - check-quorum: a leader that heard from no quorum during an election timeout
//   steps down; a node with a live leader ignores higher-term vote requests during
//   that lease (so a rejoining node cannot depose a healthy leader by vote).
// Limits: maxInflightMsgs AppendEntries per follower, maxMsgBytes per message,
// maxUncommittedEntries proposals awaiting commit, MSGS_PENDING_MAX outbox.
// Driver contract: see Ready in types.ts; step/tick/propose/campaign must not be
// called between ready() and advance() (asserted).
import { assert, unreachable } from '../stdx/assert.js';
import type { Prng } from '../stdx/prng.js';
import { RaftError } from './errors.js';
import { RaftLog } from './log.js';
import { Progress, quorumMatchIndex, quorumSize } from './progress.js';
import {
  type Entry,
  type HardState,
  type Message,
  type MsgApp,
  type MsgAppResp,
  type MsgHeartbeat,
  type MsgVote,
  type RaftRole,
  type Ready,
  NONE,
  entryBytes,
} from './types.js';

/** Messages queued between two ready() calls; beyond this the driver is not draining. */
export const MSGS_PENDING_MAX = 1 << 16;
export const MAX_UNCOMMITTED_ENTRIES_DEFAULT = 1024;

export interface RaftStorage {
  readonly hardState: HardState;
  /** Persisted log, contiguous from index 1. */
  readonly entries: readonly Entry[];
}

export interface RaftConfig {
  readonly id: number;
  /** Every voter of the group, including id. */
  readonly peers: readonly number[];
  readonly electionTicks: number;
  readonly heartbeatTicks: number;
  readonly prng: Prng;
  readonly storage: RaftStorage;
  /** AppendEntries messages in flight per follower in replicate state. */
  readonly maxInflightMsgs: number;
  /** Bound on the entry bytes of one AppendEntries (at least one entry is always sent). */
  readonly maxMsgBytes: number;
  /** Proposals appended but not yet committed; propose() fails with ERR_LIMIT beyond. */
  readonly maxUncommittedEntries?: number;
  /** Default true. */
  readonly checkQuorum?: boolean;
}

export class RaftNode {
  readonly id: number;
  private readonly peers: readonly number[];
  private readonly electionTicks: number;
  private readonly heartbeatTicks: number;
  private readonly prng: Prng;
  private readonly maxInflightMsgs: number;
  private readonly maxMsgBytes: number;
  private readonly maxUncommittedEntries: number;
  private readonly checkQuorum: boolean;

  readonly log: RaftLog;
  private termValue: number;
  private voteValue: number;
  private roleValue: RaftRole = 'follower';
  private leadValue = NONE;

  private electionElapsedTicks = 0;
  private heartbeatElapsedTicks = 0;
  private randomizedElectionTicks = 0;

  private votes = new Map<number, boolean>();
  private prs = new Map<number, Progress>();
  private msgs: Message[] = [];
  private persistedHardState: HardState;
  private readyOutstanding = false;

  constructor(cfg: RaftConfig) {
    assert(Number.isInteger(cfg.id) && cfg.id > 0, 'raft id must be a positive integer');
    assert(cfg.peers.includes(cfg.id), 'peers must include the node itself');
    assert(new Set(cfg.peers).size === cfg.peers.length, 'duplicate peer ids');
    assert(cfg.electionTicks > cfg.heartbeatTicks && cfg.heartbeatTicks >= 1, 'need electionTicks > heartbeatTicks >= 1');
    assert(cfg.maxMsgBytes >= 1, 'maxMsgBytes must be >= 1');
    this.id = cfg.id;
    this.peers = cfg.peers.slice();
    this.electionTicks = cfg.electionTicks;
    this.heartbeatTicks = cfg.heartbeatTicks;
    this.prng = cfg.prng;
    this.maxInflightMsgs = cfg.maxInflightMsgs;
    this.maxMsgBytes = cfg.maxMsgBytes;
    this.maxUncommittedEntries = cfg.maxUncommittedEntries ?? MAX_UNCOMMITTED_ENTRIES_DEFAULT;
    this.checkQuorum = cfg.checkQuorum ?? true;
    const hs = cfg.storage.hardState;
    this.log = new RaftLog(cfg.storage.entries, hs.commit);
    this.termValue = hs.term;
    this.voteValue = hs.vote;
    this.persistedHardState = { ...hs };
    assert(this.log.lastTerm() <= hs.term, 'stored log has a term above the stored term');
    this.becomeFollower(hs.term, NONE);
  }

  get term(): number {
    return this.termValue;
  }
  get vote(): number {
    return this.voteValue;
  }
  get role(): RaftRole {
    return this.roleValue;
  }
  /** The leader this node follows in its current term, or NONE. */
  get leaderId(): number {
    return this.leadValue;
  }
  get electionTimeoutTicks(): number {
    return this.randomizedElectionTicks;
  }
  /** Leader only: the progress of a peer (tests and metrics). */
  progress(peer: number): Readonly<Progress> | undefined {
    return this.prs.get(peer);
  }

  // ---- inputs -------------------------------------------------------------

  tick(): void {
    this.assertNoReadyOutstanding();
    if (this.roleValue === 'leader') this.tickLeader();
    else this.tickElection();
  }

  /** Start an election now (etcd's MsgHup). A leader ignores it. */
  campaign(): void {
    this.assertNoReadyOutstanding();
    this.hup();
  }

  /** Append data as a new entry; returns its index or a RaftError (not leader, limits). */
  propose(data: Uint8Array): number | RaftError {
    this.assertNoReadyOutstanding();
    if (this.roleValue !== 'leader') {
      return new RaftError('ERR_RAFT_NOT_LEADER', `node ${this.id} is not the leader`, this.leadValue);
    }
    if (entryBytes({ term: 0, index: 0, data }) > this.maxMsgBytes) {
      return new RaftError('ERR_LIMIT', `entry of ${data.length} bytes exceeds maxMsgBytes ${this.maxMsgBytes}`);
    }
    if (this.log.lastIndex() - this.log.committed >= this.maxUncommittedEntries) {
      return new RaftError('ERR_LIMIT', `${this.maxUncommittedEntries} proposals already await commit`);
    }
    const index = this.log.lastIndex() + 1;
    this.log.append([{ term: this.termValue, index, data }]);
    this.bcastAppend(false);
    return index;
  }

  step(m: Message): void {
    this.assertNoReadyOutstanding();
    if (m.type === 'hup') {
      this.hup();
      return;
    }
    assert(m.to === this.id, `message for ${m.to} delivered to ${this.id}`);
    if (m.term > this.termValue) {
      if (m.type === 'vote' && this.inLease()) return; // §6 / check-quorum: a live leader is not disrupted
      const lead = m.type === 'app' || m.type === 'heartbeat' ? m.from : NONE;
      this.becomeFollower(m.term, lead);
    } else if (m.term < this.termValue) {
      if (m.type === 'app' || m.type === 'heartbeat') {
        // §5.1: tell a stale leader about the newer term so it steps down.
        this.send({ type: 'appResp', from: this.id, to: m.from, term: this.termValue, reject: false, index: 0, rejectHint: 0, hintTerm: 0 });
      } else if (m.type === 'vote') {
        this.send({ type: 'voteResp', from: this.id, to: m.from, term: this.termValue, reject: true });
      }
      return;
    }
    if (m.type === 'vote') {
      this.handleVote(m);
      return;
    }
    switch (this.roleValue) {
      case 'follower':
        this.stepFollower(m);
        break;
      case 'candidate':
        this.stepCandidate(m);
        break;
      case 'leader':
        this.stepLeader(m);
        break;
      default:
        unreachable(this.roleValue);
    }
  }

  // ---- outputs ------------------------------------------------------------

  hasReady(): boolean {
    return (
      this.msgs.length > 0 ||
      this.log.unstableEntries().length > 0 ||
      this.log.nextCommittedEntries().length > 0 ||
      !sameHardState(this.hardState(), this.persistedHardState)
    );
  }

  ready(): Ready | null {
    assert(!this.readyOutstanding, 'ready() called twice without advance()');
    if (!this.hasReady()) return null;
    const hs = this.hardState();
    const rd: Ready = {
      hardState: sameHardState(hs, this.persistedHardState) ? undefined : hs,
      entries: this.log.unstableEntries(),
      messages: this.msgs,
      committedEntries: this.log.nextCommittedEntries(),
    };
    this.msgs = [];
    this.readyOutstanding = true;
    return rd;
  }

  advance(rd: Ready): void {
    assert(this.readyOutstanding, 'advance() without ready()');
    this.readyOutstanding = false;
    if (rd.hardState !== undefined) this.persistedHardState = rd.hardState;
    if (rd.entries.length > 0) {
      const last = rd.entries[rd.entries.length - 1];
      this.log.stableTo(last.index, last.term);
    }
    if (rd.committedEntries.length > 0) this.log.appliedTo(rd.committedEntries[rd.committedEntries.length - 1].index);
    if (this.roleValue === 'leader') {
      // The leader counts itself only for entries it has persisted: a commit must
      // survive the crash of any minority, the leader included.
      const self = this.prs.get(this.id) as Progress;
      if (self.maybeUpdate(this.log.stable()) && this.maybeCommit()) this.bcastAppend(true);
    }
  }

  hardState(): HardState {
    return { term: this.termValue, vote: this.voteValue, commit: this.log.committed };
  }

  // ---- roles --------------------------------------------------------------

  private becomeFollower(term: number, lead: number): void {
    this.reset(term);
    this.roleValue = 'follower';
    this.leadValue = lead;
  }

  private becomeCandidate(): void {
    assert(this.roleValue !== 'leader', 'leader cannot become candidate');
    this.reset(this.termValue + 1);
    this.voteValue = this.id;
    this.roleValue = 'candidate';
  }

  private becomeLeader(): void {
    assert(this.roleValue === 'candidate', 'only a candidate becomes leader');
    this.reset(this.termValue);
    this.roleValue = 'leader';
    this.leadValue = this.id;
    for (const p of this.peers) {
      const pr = new Progress(this.log.lastIndex() + 1, this.maxInflightMsgs);
      if (p === this.id) {
        pr.match = this.log.stable();
        pr.becomeReplicate();
      }
      this.prs.set(p, pr);
    }
    // §5.4.2 / §8: an entry of our own term lets us commit our predecessors' entries.
    this.log.append([{ term: this.termValue, index: this.log.lastIndex() + 1, data: new Uint8Array(0) }]);
    this.bcastAppend(true);
  }

  private reset(term: number): void {
    if (term !== this.termValue) {
      this.termValue = term;
      this.voteValue = NONE;
    }
    this.leadValue = NONE;
    this.electionElapsedTicks = 0;
    this.heartbeatElapsedTicks = 0;
    this.randomizedElectionTicks = this.electionTicks + this.prng.int(this.electionTicks);
    this.votes = new Map();
    this.prs = new Map();
  }

  private hup(): void {
    if (this.roleValue === 'leader') return;
    this.becomeCandidate();
    this.votes.set(this.id, true);
    if (this.countVotes(true) >= quorumSize(this.peers.length)) {
      this.becomeLeader();
      return;
    }
    for (const p of this.peers) {
      if (p === this.id) continue;
      this.send({ type: 'vote', from: this.id, to: p, term: this.termValue, lastLogIndex: this.log.lastIndex(), lastLogTerm: this.log.lastTerm() });
    }
  }

  private inLease(): boolean {
    return this.checkQuorum && this.leadValue !== NONE && this.electionElapsedTicks < this.electionTicks;
  }

  // ---- ticks --------------------------------------------------------------

  private tickElection(): void {
    this.electionElapsedTicks++;
    if (this.electionElapsedTicks >= this.randomizedElectionTicks) {
      this.electionElapsedTicks = 0;
      this.hup();
    }
  }

  private tickLeader(): void {
    this.heartbeatElapsedTicks++;
    this.electionElapsedTicks++;
    if (this.electionElapsedTicks >= this.electionTicks) {
      this.electionElapsedTicks = 0;
      if (this.checkQuorum) {
        let active = 0;
        for (const [p, pr] of this.prs) {
          if (p === this.id || pr.recentActive) active++;
          pr.recentActive = false;
        }
        if (active < quorumSize(this.peers.length)) {
          this.becomeFollower(this.termValue, NONE);
          return;
        }
      }
    }
    if (this.heartbeatElapsedTicks >= this.heartbeatTicks) {
      this.heartbeatElapsedTicks = 0;
      for (const [p, pr] of this.prs) {
        if (p === this.id) continue;
        this.send({ type: 'heartbeat', from: this.id, to: p, term: this.termValue, commit: Math.min(pr.match, this.log.committed) });
      }
    }
  }

  // ---- votes (§5.2, §5.4.1) ------------------------------------------------

  private handleVote(m: MsgVote): void {
    const canVote = this.voteValue === m.from || (this.voteValue === NONE && this.leadValue === NONE);
    const grant = canVote && this.log.isUpToDate(m.lastLogIndex, m.lastLogTerm);
    if (grant) {
      this.voteValue = m.from;
      this.electionElapsedTicks = 0;
    }
    this.send({ type: 'voteResp', from: this.id, to: m.from, term: this.termValue, reject: !grant });
  }

  private countVotes(granted: boolean): number {
    let n = 0;
    for (const v of this.votes.values()) if (v === granted) n++;
    return n;
  }

  // ---- per-role message handling -------------------------------------------

  private stepFollower(m: Message): void {
    switch (m.type) {
      case 'app':
        this.electionElapsedTicks = 0;
        this.leadValue = m.from;
        this.handleApp(m);
        break;
      case 'heartbeat':
        this.electionElapsedTicks = 0;
        this.leadValue = m.from;
        this.handleHeartbeat(m);
        break;
      default:
        break; // answers to an old candidacy or leadership of this term: nothing to do
    }
  }

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case 'app':
      case 'heartbeat':
        // §5.2: a leader of our term exists; return to follower.
        this.becomeFollower(m.term, m.from);
        this.stepFollower(m);
        break;
      case 'voteResp': {
        if (!this.votes.has(m.from)) this.votes.set(m.from, !m.reject);
        const q = quorumSize(this.peers.length);
        if (this.countVotes(true) >= q) this.becomeLeader();
        else if (this.countVotes(false) >= q) this.becomeFollower(this.termValue, NONE);
        break;
      }
      default:
        break;
    }
  }

  private stepLeader(m: Message): void {
    const pr = this.prs.get(m.from);
    if (pr === undefined) return; // not a voter of this group
    switch (m.type) {
      case 'app':
      case 'heartbeat':
        assert(false, `two leaders in term ${this.termValue}: ${this.id} and ${m.from}`);
        break;
      case 'appResp':
        pr.recentActive = true;
        this.handleAppResp(m, pr);
        break;
      case 'heartbeatResp':
        pr.recentActive = true;
        if (pr.state === 'probe') pr.probeSent = false;
        else if (pr.inflights.full()) pr.inflights.freeFirstOne();
        // An empty AppendEntries finds out whether entries in flight were lost.
        if (pr.match < this.log.lastIndex()) this.sendAppend(m.from, true);
        break;
      default:
        break;
    }
  }

  private handleAppResp(m: MsgAppResp, pr: Progress): void {
    if (m.reject) {
      // Fast backoff: skip every index whose term cannot match the follower's hint.
      let matchHint = m.rejectHint;
      if (m.hintTerm > 0) matchHint = this.log.findConflictByTerm(m.rejectHint, m.hintTerm);
      if (pr.maybeDecrTo(m.index, matchHint)) {
        if (pr.state === 'replicate') pr.becomeProbe();
        this.sendAppend(m.from, true);
      }
      return;
    }
    const wasPaused = pr.isPaused();
    if (pr.maybeUpdate(m.index)) {
      if (pr.state === 'probe') pr.becomeReplicate();
      else pr.inflights.freeLE(m.index);
      if (this.maybeCommit()) this.bcastAppend(true);
      // A peer that was paused missed the commit broadcast: tell it now.
      else if (wasPaused) this.sendAppend(m.from, true);
    }
    while (this.sendAppend(m.from, false)) {
      // stream until paused by the in-flight limit or nothing is left to send
    }
  }

  private handleApp(m: MsgApp): void {
    const base = { type: 'appResp' as const, from: this.id, to: m.from, term: this.termValue };
    if (m.prevLogIndex < this.log.committed) {
      this.send({ ...base, reject: false, index: this.log.committed, rejectHint: 0, hintTerm: 0 });
      return;
    }
    const lastNew = this.log.maybeAppend(m.prevLogIndex, m.prevLogTerm, m.commit, m.entries);
    if (lastNew !== undefined) {
      this.send({ ...base, reject: false, index: lastNew, rejectHint: 0, hintTerm: 0 });
      return;
    }
    // §5.3 consistency check failed: hint where our log may match.
    const hint = this.log.findConflictByTerm(Math.min(m.prevLogIndex, this.log.lastIndex()), m.prevLogTerm);
    this.send({ ...base, reject: true, index: m.prevLogIndex, rejectHint: hint, hintTerm: this.log.term(hint) as number });
  }

  private handleHeartbeat(m: MsgHeartbeat): void {
    this.log.commitTo(m.commit);
    this.send({ type: 'heartbeatResp', from: this.id, to: m.from, term: this.termValue });
  }

  // ---- replication (§5.3) ---------------------------------------------------

  /** Send the next AppendEntries to peer if not paused; returns whether one was sent. */
  private sendAppend(to: number, allowEmpty: boolean): boolean {
    const pr = this.prs.get(to) as Progress;
    if (pr.isPaused()) return false;
    const last = this.log.lastIndex();
    assert(pr.next >= 1 && pr.next <= last + 1, `progress next ${pr.next} outside log 1..${last + 1}`);
    const prevLogIndex = pr.next - 1;
    const prevLogTerm = this.log.term(prevLogIndex) as number;
    const entries = this.log.slice(pr.next, last + 1, this.maxMsgBytes);
    if (entries.length === 0 && !allowEmpty) return false;
    this.send({ type: 'app', from: this.id, to, term: this.termValue, prevLogIndex, prevLogTerm, entries, commit: this.log.committed });
    pr.sentEntries(prevLogIndex + entries.length, entries.length);
    return true;
  }

  private bcastAppend(allowEmpty: boolean): void {
    for (const p of this.peers) if (p !== this.id) this.sendAppend(p, allowEmpty);
  }

  /** §5.4.2: commit the quorum match index only if it is an entry of this term. */
  private maybeCommit(): boolean {
    const matches: number[] = [];
    for (const pr of this.prs.values()) matches.push(pr.match);
    return this.log.maybeCommit(quorumMatchIndex(matches), this.termValue);
  }

  private send(m: Message): void {
    assert(this.msgs.length < MSGS_PENDING_MAX, 'raft outbox full: the driver must drain ready()');
    this.msgs.push(m);
  }

  private assertNoReadyOutstanding(): void {
    assert(!this.readyOutstanding, 'step/tick/propose between ready() and advance()');
  }
}

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

