// RaftNode: one raft group member as a pure state machine (etcd-io/raft style).
// No IO, no clock, no Math.random: time is tick(), input is step(msg), randomness
// is the injected Prng, and output is ready() — what to persist, send and apply —
// acknowledged by advance(). A seed therefore replays a whole cluster run.
//
// Rules implemented (Raft paper, Ongaro & Ousterhout 2014; Ongaro's thesis 2014):
// - §5.1 terms: a message with a higher term makes us a follower of that term;
//   lower-term messages are dropped (AppendEntries/heartbeats/snapshots get our
//   term back so a stale leader steps down).
// - §5.2 election: randomized timeout in [electionTicks, 2*electionTicks); one vote
//   per term (persisted in HardState before the answer leaves).
// - §5.4.1 election restriction: vote only for a log at least as up-to-date.
// - §5.3 replication: prevLogIndex/prevLogTerm consistency check; conflicting
//   uncommitted suffixes are truncated; fast backoff with a (hint index, hint term).
// - §5.4.2 commit only current-term entries by counting voters' matchIndex; a new
//   leader appends an empty entry to commit its predecessors' entries.
// - §7 snapshots: compact() forgets applied entries; a follower that needs them
//   gets a MsgSnap of the leader's applied point instead (the driver moves the
//   state data), see sendAppend / handleSnapshot.
// - thesis §4.1 membership: single-step changes (confchange.ts rules), effective
//   when applied (advance()); learners replicate but neither vote-count nor
//   campaign; a leader may propose a change only after applying the previous one
//   and after committing an entry of its own term (the fix to the single-server
//   change bug described on raft-dev, 2015).
// - thesis §6.4 ReadIndex (readindex.ts).
// - pre-vote (thesis §9.6, RaftConfig.preVote): a node whose timer fires first
//   asks the voters whether they would vote for it at its term + 1 (MsgVote.pre),
//   changing no term or vote anywhere; it campaigns only once a quorum said yes.
//   A pre-vote is granted like a vote (log up-to-date, not in a leader's lease,
//   the repair rule) by a node that has not voted in a term >= the asked one.
// - check-quorum: a leader that heard from no quorum during an election timeout
//   steps down; a node with a live leader ignores higher-term vote requests during
//   that lease (so a rejoining node cannot depose a healthy leader by vote).
// - repair: a node whose stored log was damaged (repairUntilIndex) does not
//   campaign until a leader replicated its log past the damage, and votes only
//   for a log at least as up-to-date as the one it lost (repairUntilTerm).
// - removed nodes (thesis §4.2.2: a server not in its latest configuration may
//   still be needed to elect a leader): a node that applied its own removal does
//   not campaign, except after refusing a candidate whose log is less
//   up-to-date than its own (that candidate still counts it as a voter, so has not
//   applied the removal, and may lack entries only we and a damaged node held).
//   It then campaigns once, counting the votes of its membership's voters only;
//   if it wins it leads until an entry of its term is applied, then steps down.
//   A node that never learned of its removal (it was away) still campaigns; a
//   member that has applied a membership without it answers its vote request,
//   even in a lease or at a lower term, with a "removed" notice (voteResp
//   removed): it then stops campaigning (removalNotified, until a leader
//   contacts it) so the driver can delete it.
//
// "Reset" answers: an appResp with reject=true and index=0 (impossible as an
// ordinary reject: every log matches at index 0) means "forget what you think
// I hold, my log may match only up to rejectHint/hintTerm". A joining node with
// no membership yet sends it with hint 0 (it needs a snapshot to learn the
// membership its log starts from); a repairing node sends it when the leader's
// view of its log is beyond what it still holds; a node awaiting a snapshot
// (awaitSnapshot: its driver dropped the data its log was applied to) answers
// every append with hint 0, and does not campaign until one is installed.
//
// Limits: maxInflightMsgs AppendEntries per follower, maxMsgBytes per message,
// maxUncommittedEntries proposals awaiting commit, READS_PENDING_MAX reads,
// one snapshot in flight per follower, MSGS_PENDING_MAX outbox.
// Driver contract: see Ready in types.ts; no input (step/tick/propose/campaign/
// readIndex/compact/reportSnapshot/proposeConfChange) between ready() and advance()
// (asserted).
import { assert, unreachable, fail } from '../stdx/assert.js';
import type { Prng } from '../stdx/prng.js';
import { applyConfChange, encodeConfChange, isEmptyConf, isUsableSnapshotMeta, isValidNodeId, mustApplyConfEntry, normalizeConf } from './confchange.js';
import { MAX_UNCOMMITTED_ENTRIES_DEFAULT, MSGS_PENDING_MAX, type RaftConfig } from './config.js';
import { RaftError } from './errors.js';
import { RaftLog } from './log.js';
import { Progress, quorumMatchIndex, quorumSize } from './progress.js';
import { READS_PENDING_MAX, ReadIndexQueue } from './readindex.js';
import type { RaftPeerStatus, RaftStatus } from './status.js';
import {
  type ConfChange,
  type ConfState,
  type Entry,
  type HardState,
  type Message,
  type MsgApp,
  type MsgAppResp,
  type MsgHeartbeat,
  type MsgSnap,
  type MsgVote,
  type RaftRole,
  type Ready,
  type ReadState,
  type SnapshotMeta,
  NONE,
  entryBytes,
} from './types.js';

export { MAX_UNCOMMITTED_ENTRIES_DEFAULT, MSGS_PENDING_MAX, type RaftConfig, type RaftStorage } from './config.js';

export class RaftNode {
  readonly id: number;
  private readonly electionTicks: number;
  private readonly heartbeatTicks: number;
  private readonly prng: Prng;
  private readonly maxInflightMsgs: number;
  private readonly maxMsgBytes: number;
  private readonly maxUncommittedEntries: number;
  private readonly checkQuorum: boolean;
  private readonly preVote: boolean;
  /** Role 'candidate' in its pre-vote phase: term and vote not raised yet. */
  private preCandidate = false;
  /** Ticks left of the post-start period in which higher-term votes are refused (voteQuietTicksAfterStart). */
  private voteQuietTicksLeft: number;
  private readonly broadcastCommit: boolean;
  /** Set by maybeCommit(): whether the commit just made should be sent to followers at once. */
  private announceCommit = true;

  readonly log: RaftLog;
  private termValue: number;
  private voteValue: number;
  private roleValue: RaftRole = 'follower';
  private leadValue = NONE;

  /** Membership as of the applied index. */
  private confValue: ConfState;
  /** Membership as of the log's snapshot point. */
  private snapConf: ConfState;
  /** Leader: index of the last conf entry it appended (or of its first entry); no new change until applied past it. */
  private pendingConfIndex = 0;
  /** 0 once repaired (or never damaged); see RaftConfig.repairUntilIndex. */
  private repairUntil: number;
  /** RaftConfig.repairUntilTerm; Infinity when unknown (no vote while repairing). */
  private readonly repairTerm: number;
  /** RaftConfig.repairExtentUnknown: repaired only up to a commit of a leader's own term. */
  private readonly repairToLeaderCommit: boolean;
  /** The term this node restarted in (with repairToLeaderCommit): its leader may hold acknowledgements it lost. */
  private readonly repairRestartTerm: number;

  private electionElapsedTicks = 0;
  private heartbeatElapsedTicks = 0;
  private leaderRetainValue = 0;
  /** Removed node (not a member of its applied membership): may campaign once (see header, "removed nodes"). */
  private removedMayCampaign = false;
  /** A member's applied membership no longer lists this node (voteResp removed); cleared by a leader's contact. */
  private removalNotifiedValue = false;
  /**
   * Repairing node: the highest index an append of this term proved to match the
   * leader's log (handleApp). Heartbeats may commit up to it: a damaged log may hold
   * stale entries below its last index, but not below this.
   */
  private verifiedIndex = 0;
  private randomizedElectionTicks = 0;

  private votes = new Map<number, boolean>();
  private prs = new Map<number, Progress>();
  private readonly reads = new ReadIndexQueue();
  private lastReadCtx = 0;
  private msgs: Message[] = [];
  private readStatesOut: ReadState[] = [];
  private snapshotToPersist: SnapshotMeta | undefined;
  /** awaitSnapshot() was called and no snapshot was installed since. */
  private awaitingSnapshotValue = false;
  private persistedHardState: HardState;
  private readyOutstanding = false;

  constructor(cfg: RaftConfig) {
    assert(isValidNodeId(cfg.id), 'raft id must be a positive 32-bit integer');
    assert(cfg.electionTicks > cfg.heartbeatTicks && cfg.heartbeatTicks >= 1, 'need electionTicks > heartbeatTicks >= 1');
    assert(cfg.maxMsgBytes >= 1, 'maxMsgBytes must be >= 1');
    this.id = cfg.id;
    this.electionTicks = cfg.electionTicks;
    this.heartbeatTicks = cfg.heartbeatTicks;
    this.prng = cfg.prng;
    this.maxInflightMsgs = cfg.maxInflightMsgs;
    this.maxMsgBytes = cfg.maxMsgBytes;
    this.maxUncommittedEntries = cfg.maxUncommittedEntries ?? MAX_UNCOMMITTED_ENTRIES_DEFAULT;
    this.checkQuorum = cfg.checkQuorum ?? true;
    this.preVote = cfg.preVote ?? false;
    this.voteQuietTicksLeft = cfg.voteQuietTicksAfterStart ?? 0;
    this.broadcastCommit = cfg.broadcastCommit ?? true;

    const st = cfg.storage;
    const snap = st.snapshot;
    const peers = cfg.peers ?? [];
    if (snap === undefined && peers.length > 0) {
      // Bootstrap: every founding member starts from the same membership at index 0.
      assert(peers.includes(cfg.id), 'bootstrap peers must include the node itself');
    }
    this.snapConf = normalizeConf(snap !== undefined ? snap.conf : { voters: peers, learners: [] });
    const snapIndex = snap?.index ?? 0;
    const hs = st.hardState;
    this.repairToLeaderCommit = cfg.repairUntilIndex !== undefined && cfg.repairExtentUnknown === true;
    this.repairUntil = cfg.repairUntilIndex !== undefined && cfg.repairUntilIndex > snapIndex ? cfg.repairUntilIndex : 0;
    // Nothing bounds the damage: under repair even if the readable log reaches no
    // further than the snapshot point.
    if (this.repairToLeaderCommit) this.repairUntil = Math.max(this.repairUntil, snapIndex + 1);
    this.repairTerm = this.repairToLeaderCommit ? Number.POSITIVE_INFINITY : (cfg.repairUntilTerm ?? Number.POSITIVE_INFINITY);
    this.repairRestartTerm = hs.term;
    // The snapshot point is committed by definition. A damaged log may have lost
    // committed entries: they come back from the leader, commit follows them.
    let commit = Math.max(hs.commit, snapIndex);
    if (this.repairUntil > 0) commit = Math.min(commit, snapIndex + st.entries.length);
    this.log = new RaftLog(st.entries, commit, { index: snapIndex, term: snap?.term ?? 0 });
    const applied = cfg.applied ?? snapIndex;
    if (!(applied >= snapIndex && applied <= commit)) fail(`applied ${applied} outside [${snapIndex}, ${commit}]`);
    this.confValue = this.confAt(applied);
    this.log.appliedTo(applied);
    this.termValue = hs.term;
    this.voteValue = hs.vote;
    this.persistedHardState = { ...hs };
    assert(this.log.lastTerm() <= hs.term, 'stored log has a term above the stored term');
    this.becomeFollower(hs.term, NONE);
  }

  // ---- state ----------------------------------------------------------------

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
  get conf(): ConfState {
    return this.confValue;
  }
  get voters(): readonly number[] {
    return this.confValue.voters;
  }
  get learners(): readonly number[] {
    return this.confValue.learners;
  }
  /** A voter or learner of the applied membership. */
  get isMember(): boolean {
    return this.confValue.voters.includes(this.id) || this.confValue.learners.includes(this.id);
  }
  get applied(): number {
    return this.log.applied;
  }
  get commit(): number {
    return this.log.committed;
  }
  get lastIndex(): number {
    return this.log.lastIndex();
  }
  /** The point the in-memory log starts after (index 0 and the bootstrap conf without a snapshot). */
  get snapshotMeta(): SnapshotMeta {
    return { index: this.log.snapshotIndex(), term: this.log.snapshotTerm(), conf: this.snapConf };
  }
  /** Leader: a conf change was appended and is not yet applied (proposeConfChange would refuse). */
  get pendingConfChange(): boolean {
    return this.roleValue === 'leader' && this.pendingConfIndex > this.log.applied;
  }
  get pendingReadCount(): number {
    return this.reads.count();
  }
  get repairing(): boolean {
    return this.repairUntil > 0;
  }
  /** A member told this node it is no longer in the group (see header, "removed nodes"); it does not campaign. */
  get removalNotified(): boolean {
    return this.removalNotifiedValue;
  }
  /** Leader only: the progress of a peer (tests and metrics). */
  progress(peer: number): Readonly<Progress> | undefined {
    return this.prs.get(peer);
  }

  /**
   * Leader: the lowest index its peers (voters and learners) are known to hold;
   * the entries after it may still have to be sent from the log. Null when not
   * leader or alone. Heartbeats carry it to the followers (leaderRetain).
   */
  minPeerMatch(): number | null {
    if (this.roleValue !== 'leader') return null;
    let min: number | null = null;
    for (const [p, pr] of this.prs) if (p !== this.id && (min === null || pr.match < min)) min = pr.match;
    return min;
  }

  /** Follower: the minPeerMatch its leader of this term last sent; 0 = not known. */
  get leaderRetain(): number {
    return this.leaderRetainValue;
  }

  /**
   * Would stepping m now install its snapshot? The driver must check this after
   * receiving the state data and before replacing its own with it: a snapshot of
   * an older term is dropped and one at or below the commit index is only
   * acknowledged, and in both cases the node keeps its applied state.
   */
  acceptsSnapshot(m: MsgSnap): boolean {
    return m.to === this.id && m.term >= this.termValue && isUsableSnapshotMeta(m.snapshot) && this.installs(m.snapshot.index);
  }

  /**
   * A snapshot at index replaces our state: one beyond our commit, or, while we
   * await a snapshot (our data is gone), one at it too. A leader that needs our
   * acknowledgement to commit anything has applied no further than our commit
   * point, so the snapshot it can send is exactly there.
   */
  private installs(index: number): boolean {
    return index > this.log.committed || (this.awaitingSnapshotValue && index === this.log.committed && index > 0);
  }

  status(): RaftStatus {
    const peers: RaftPeerStatus[] = [];
    if (this.roleValue === 'leader') {
      for (const [id, pr] of this.prs) {
        peers.push({ id, match: pr.match, next: pr.next, state: pr.state, learner: this.confValue.learners.includes(id), recentActive: pr.recentActive });
      }
      peers.sort((a, b) => a.id - b.id);
    }
    return {
      id: this.id,
      role: this.roleValue,
      term: this.termValue,
      vote: this.voteValue,
      leader: this.leadValue,
      commit: this.log.committed,
      applied: this.log.applied,
      lastIndex: this.log.lastIndex(),
      snapshotIndex: this.log.snapshotIndex(),
      conf: this.confValue,
      isMember: this.isMember,
      repairing: this.repairing,
      pendingReads: this.reads.count(),
      peers,
    };
  }

  // ---- inputs -------------------------------------------------------------

  tick(): void {
    this.assertNoReadyOutstanding();
    if (this.voteQuietTicksLeft > 0) this.voteQuietTicksLeft--;
    if (this.roleValue === 'leader') this.tickLeader();
    else this.tickElection();
  }

  /** Start an election now (etcd's MsgHup). A leader, a learner, a non-member or a repairing node ignores it. */
  campaign(): void {
    this.assertNoReadyOutstanding();
    this.hup();
  }

  /** Append data as a new entry; returns its index or a RaftError (not leader, limits). */
  propose(data: Uint8Array): number | RaftError {
    this.assertNoReadyOutstanding();
    const refused = this.checkProposal(data);
    if (refused !== undefined) return refused;
    return this.appendProposal(data, 'normal');
  }

  /**
   * Propose a single-step membership change (thesis §4.1). Returns the index of
   * its 'conf' entry, or a RaftError: ERR_RAFT_NOT_LEADER, ERR_RAFT_CONF_CHANGE
   * (a change is still unapplied, or this leader has not yet applied an entry of
   * its term, or cc is invalid for the current membership), ERR_LIMIT.
   * The change takes effect on each node when it applies the entry (advance()).
   */
  proposeConfChange(cc: ConfChange): number | RaftError {
    this.assertNoReadyOutstanding();
    if (this.roleValue !== 'leader') {
      return new RaftError('ERR_RAFT_NOT_LEADER', `node ${this.id} is not the leader`, this.leadValue);
    }
    if (this.pendingConfIndex > this.log.applied) {
      return new RaftError('ERR_RAFT_CONF_CHANGE', `${cc.type} ${cc.node}: a membership change (or this leader's first entry) at ${this.pendingConfIndex} is not applied yet`);
    }
    const next = applyConfChange(this.confValue, cc);
    if (next instanceof RaftError) return next;
    const data = encodeConfChange(cc);
    const refused = this.checkProposal(data);
    if (refused !== undefined) return refused;
    const index = this.appendProposal(data, 'conf');
    this.pendingConfIndex = index;
    return index;
  }

  /**
   * ReadIndex (thesis §6.4): register a linearizable read. ctx is a positive
   * caller-chosen number, strictly increasing per node (asserted). Once this
   * leader has committed an entry of its term and a quorum of voters confirmed its
   * leadership by answering a heartbeat sent after this call, a later Ready has
   * {ctx, index} in readStates: serve the read once the state machine applied
   * index. Throws RaftError ERR_RAFT_NOT_LEADER (with the leader hint) on a
   * non-leader, ERR_LIMIT beyond READS_PENDING_MAX pending reads.
   * A pending read is dropped, never answered, if this node loses leadership: the
   * driver must fail its waiting reads on a role change (or time them out).
   */
  readIndex(ctx: number): void {
    this.assertNoReadyOutstanding();
    if (!(Number.isSafeInteger(ctx) && ctx > this.lastReadCtx)) fail(`read ctx ${ctx} must be > ${this.lastReadCtx}`);
    this.lastReadCtx = ctx;
    if (this.roleValue !== 'leader') {
      throw new RaftError('ERR_RAFT_NOT_LEADER', `node ${this.id} is not the leader`, this.leadValue);
    }
    if (this.reads.count() >= READS_PENDING_MAX) {
      throw new RaftError('ERR_LIMIT', `${READS_PENDING_MAX} reads already pending`);
    }
    this.reads.add(ctx, -1);
    this.flushWaitingReads();
  }

  /**
   * Log compaction (§7): forget entries up to index (<= applied, asserted). Returns
   * the new snapshot point with the membership as of index; the driver records it
   * and may then drop its stored entries up to index. A no-op below the current point.
   */
  compact(index: number): SnapshotMeta {
    this.assertNoReadyOutstanding();
    if (!(index <= this.log.applied)) fail(`compact(${index}) beyond applied ${this.log.applied}`);
    if (index > this.log.snapshotIndex()) {
      const conf = this.confAt(index);
      this.log.compact(index);
      this.snapConf = conf;
    }
    return this.snapshotMeta;
  }

  /**
   * Leader: the snapshot to ship to `peer` now, at this leader's applied point of
   * now, which becomes the peer's pending snapshot; null when this node no longer
   * leads in `term` or the peer no longer waits for a snapshot. For a driver that
   * queued a MsgSnap (it limits transfers at once): the point raft named then
   * may be compacted away by the time the transfer can start.
   */
  renewSnapshot(peer: number, term: number): MsgSnap | null {
    this.assertNoReadyOutstanding();
    if (this.roleValue !== 'leader' || this.termValue !== term) return null;
    const pr = this.prs.get(peer);
    if (pr === undefined || pr.state !== 'snapshot') return null;
    const m = this.snapshotMessage(peer);
    pr.becomeSnapshot(m.snapshot.index);
    return m;
  }

  /**
   * Follower: the driver began replacing the state machine's data with a
   * snapshot's (it dropped what the log was applied to). Until a snapshot is
   * installed this node answers every AppendEntries with a reset (so whichever
   * leader there is sends a snapshot; the one already sending ignores it) and
   * never campaigns: its log is intact, so it still votes, but it has no data to
   * lead with. Volatile: a restart forgets it. Only sets a flag that later input
   * reads, so it may be called while a Ready is outstanding.
   */
  awaitSnapshot(): void {
    if (!(this.roleValue === 'follower')) fail(`awaitSnapshot on a ${this.roleValue}`);
    this.awaitingSnapshotValue = true;
  }

  get awaitingSnapshot(): boolean {
    return this.awaitingSnapshotValue;
  }

  /**
   * Leader: the outcome of shipping the snapshot of a MsgSnap to peer. Either way
   * the peer is probed again after the next heartbeat answer (or at once on its
   * appResp); after a failure the probe leads to a fresh snapshot. `index`: the
   * index the driver actually shipped, when it moved the snapshot up (its log
   * before that may be compacted, so the probe starts after it).
   */
  reportSnapshot(peer: number, ok: boolean, index?: number): void {
    this.assertNoReadyOutstanding();
    if (this.roleValue !== 'leader') return;
    const pr = this.prs.get(peer);
    if (pr === undefined || pr.state !== 'snapshot') return;
    if (!ok) pr.pendingSnapshot = 0;
    // The driver may have shipped a newer point than the one asked for (a copy
    // whose index moved up, snapshotPoint()): probe from after it.
    else if (index !== undefined && index > pr.pendingSnapshot && index <= this.lastIndex) pr.pendingSnapshot = index;
    pr.becomeProbe();
    pr.probeSent = true;
  }

  step(m: Message): void {
    this.assertNoReadyOutstanding();
    if (m.type === 'hup') {
      this.hup();
      return;
    }
    if (!(m.to === this.id)) fail(`message for ${m.to} delivered to ${this.id}`);
    if (m.type === 'voteResp' && m.removed === true) {
      // Whatever its term: a member that applied our removal says so (see header).
      if (m.reject && this.roleValue !== 'leader') {
        this.removalNotifiedValue = true;
        if (this.roleValue === 'candidate') this.becomeFollower(this.termValue, NONE);
      }
      return;
    }
    if (m.type === 'vote' && this.isStranger(m)) {
      // Its removal is committed and it does not know: tell it, and nothing else
      // (its higher term must not disturb this group).
      this.sendRemovedNotice(m);
      return;
    }
    const fromLeader = m.type === 'app' || m.type === 'heartbeat' || m.type === 'snap';
    if (m.term > this.termValue) {
      if (m.type === 'vote' && (this.inLease() || this.voteQuietTicksLeft > 0)) return; // §6 / check-quorum: a live leader is not disrupted
      // A pre-vote asks about a future term and changes none; a granted one comes
      // back with that term (§9.6). Any other higher term makes us its follower.
      const preVoteAsked = m.type === 'vote' && m.pre === true;
      const preVoteGranted = m.type === 'voteResp' && m.pre === true && !m.reject;
      if (!preVoteAsked && !preVoteGranted) this.becomeFollower(m.term, fromLeader ? m.from : NONE);
    } else if (m.term < this.termValue) {
      if (fromLeader) {
        // §5.1: tell a stale leader about the newer term so it steps down.
        this.send({ type: 'appResp', from: this.id, to: m.from, term: this.termValue, reject: false, index: 0, rejectHint: 0, hintTerm: 0 });
      } else if (m.type === 'vote') {
        this.send({ type: 'voteResp', from: this.id, to: m.from, term: this.termValue, reject: true, ...(m.pre === true ? { pre: true } : {}) });
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
      this.snapshotToPersist !== undefined ||
      this.readStatesOut.length > 0 ||
      this.log.hasUnstableEntries() ||
      this.log.hasNextCommittedEntries() ||
      this.termValue !== this.persistedHardState.term ||
      this.voteValue !== this.persistedHardState.vote ||
      this.log.committed !== this.persistedHardState.commit
    );
  }

  ready(): Ready | null {
    assert(!this.readyOutstanding, 'ready() called twice without advance()');
    if (!this.hasReady()) return null;
    const hs = this.hardState();
    const rd: Ready = {
      snapshot: this.snapshotToPersist,
      hardState: sameHardState(hs, this.persistedHardState) ? undefined : hs,
      entries: this.log.unstableEntries(),
      messages: this.msgs,
      committedEntries: this.log.nextCommittedEntries(),
      readStates: this.readStatesOut,
    };
    this.msgs = [];
    this.readStatesOut = [];
    this.snapshotToPersist = undefined;
    this.readyOutstanding = true;
    return rd;
  }

  /** The driver did what rd asked. Applies the membership changes among rd.committedEntries. */
  advance(rd: Ready): void {
    assert(this.readyOutstanding, 'advance() without ready()');
    this.readyOutstanding = false;
    if (rd.hardState !== undefined) this.persistedHardState = rd.hardState;
    if (rd.entries.length > 0) {
      const last = rd.entries[rd.entries.length - 1];
      this.log.stableTo(last.index, last.term);
    }
    if (rd.committedEntries.length > 0) {
      let confChanged = false;
      for (const e of rd.committedEntries) {
        if (e.type !== 'conf') continue;
        this.confValue = mustApplyConfEntry(this.confValue, e);
        confChanged = true;
      }
      this.log.appliedTo(rd.committedEntries[rd.committedEntries.length - 1].index);
      if (confChanged) this.onConfChanged();
    }
    if (this.roleValue === 'leader') {
      // The leader counts itself only for entries it has persisted: a commit must
      // survive the crash of any minority, the leader included.
      const self = this.prs.get(this.id);
      if (self === undefined) {
        // A removed node leading (see header): its first entry is applied, so every
        // entry before it is committed and the voters learned it; hand over.
        if (this.log.applied >= this.pendingConfIndex) this.becomeFollower(this.termValue, NONE);
      } else if (self.maybeUpdate(this.log.stable()) && this.maybeCommit()) this.bcastAppend(this.announceCommit);
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
    this.syncProgress();
    // §5.4.2 / §8: an entry of our own term lets us commit our predecessors' entries.
    const index = this.log.lastIndex() + 1;
    this.log.append([{ term: this.termValue, index, data: new Uint8Array(0) }]);
    // No membership change before that entry is applied: it may be preceded by an
    // unapplied conf entry of an earlier leader, and a leader that has not committed
    // in its term must not change membership (single-server change bug, thesis §4.1 errata).
    this.pendingConfIndex = index;
    this.bcastAppend(true);
  }

  /** Everything that belongs to one role in one term is dropped here, pending reads included. */
  private reset(term: number): void {
    if (term !== this.termValue) {
      this.termValue = term;
      this.voteValue = NONE;
    }
    this.leadValue = NONE;
    this.leaderRetainValue = 0;
    this.verifiedIndex = 0;
    this.electionElapsedTicks = 0;
    this.heartbeatElapsedTicks = 0;
    this.randomizedElectionTicks = this.electionTicks + this.prng.int(this.electionTicks);
    this.votes = new Map();
    this.prs = new Map();
    this.reads.reset();
    this.pendingConfIndex = 0;
    this.preCandidate = false;
  }

  /** May stand for election: a voter whose log is intact and not told it was removed, or a removed node asked to (see header). */
  private promotable(): boolean {
    if (this.repairUntil > 0 || this.awaitingSnapshotValue) return false;
    return (this.confValue.voters.includes(this.id) && !this.removalNotifiedValue) || (this.removedMayCampaign && this.isRemoved());
  }

  /**
   * The candidate of m is not in this member's applied membership and its log is
   * no more up-to-date than our applied point: it was removed at or before that
   * point, so its removal is committed (with an equal log it even holds the
   * removal, without knowing it committed). Absence alone proves nothing: a node
   * may hold an old membership lacking a voter added since (raft sim seeds
   * 300137, 304043, 304257), but such a voter's log holds its promotion, beyond
   * our applied point.
   */
  private isStranger(m: MsgVote): boolean {
    if (!this.isMember || this.confValue.voters.includes(m.from) || this.confValue.learners.includes(m.from)) return false;
    const applied = this.log.applied;
    const appliedTerm = this.log.term(applied) ?? 0;
    return m.lastLogTerm < appliedTerm || (m.lastLogTerm === appliedTerm && m.lastLogIndex <= applied);
  }

  private sendRemovedNotice(m: MsgVote): void {
    this.send({ type: 'voteResp', from: this.id, to: m.from, term: this.termValue, reject: true, removed: true });
  }

  /** Not a member of the applied membership, and not a joiner (which has none yet). */
  private isRemoved(): boolean {
    return !this.isMember && !isEmptyConf(this.confValue);
  }

  /**
   * May grant votes: voters, and also learners and removed nodes (as in etcd).
   * Membership takes effect when applied, so a candidate may count as a voter a
   * node whose promotion it applied before that node did, or one whose removal that
   * node applied before the candidate did; refusing can then block every election
   * for good (e.g. voters {1,2,3,4}, 3 removed and stepped down, the others have the
   * removal but not its commit, 1 is down: 2 and 4 need 3's vote to elect the
   * leader that will commit it). A vote only counts where the candidate's
   * membership lists the voter, and it still obeys §5.4.1. A node that joins with
   * no membership yet holds nothing to vote on; a repairing node may have lost
   * entries it acknowledged (see RaftConfig.repairUntilIndex).
   */
  private mayVote(lastLogIndex: number, lastLogTerm: number): boolean {
    if (isEmptyConf(this.confValue)) return false;
    // Repairing: only for a log at least as up-to-date as the one it had (§5.4.1
    // against what it may have acknowledged before the damage).
    return this.repairUntil === 0 || lastLogTerm > this.repairTerm || (lastLogTerm === this.repairTerm && lastLogIndex >= this.repairUntil);
  }

  private hup(): void {
    if (this.roleValue === 'leader' || !this.promotable()) return;
    this.removedMayCampaign = false; // one candidacy per refused candidate
    if (this.preVote) this.becomePreCandidate();
    else this.campaignNow();
  }

  /** Pre-vote phase (§9.6): a candidate without raising its term or vote. */
  private becomePreCandidate(): void {
    this.roleValue = 'candidate';
    this.preCandidate = true;
    this.leadValue = NONE;
    this.votes = new Map();
    this.votes.set(this.id, true);
    if (this.countVotes(true) >= quorumSize(this.confValue.voters.length)) {
      this.campaignNow();
      return;
    }
    this.sendVotes(true);
  }

  private campaignNow(): void {
    this.becomeCandidate();
    this.votes.set(this.id, true);
    if (this.countVotes(true) >= quorumSize(this.confValue.voters.length)) {
      this.becomeLeader();
      return;
    }
    this.sendVotes(false);
  }

  private sendVotes(pre: boolean): void {
    const term = pre ? this.termValue + 1 : this.termValue;
    for (const p of this.confValue.voters) {
      if (p === this.id) continue;
      const m: MsgVote = { type: 'vote', from: this.id, to: p, term, lastLogIndex: this.log.lastIndex(), lastLogTerm: this.log.lastTerm() };
      this.send(pre ? { ...m, pre: true } : m);
    }
  }

  private inLease(): boolean {
    return this.checkQuorum && this.leadValue !== NONE && this.electionElapsedTicks < this.electionTicks;
  }

  // ---- ticks --------------------------------------------------------------

  private tickElection(): void {
    // A node that may not campaign keeps counting, so its leader lease expires.
    if (this.electionElapsedTicks < Number.MAX_SAFE_INTEGER) this.electionElapsedTicks++;
    if (this.electionElapsedTicks < this.randomizedElectionTicks) return;
    if (this.promotable()) {
      this.electionElapsedTicks = 0;
      this.hup();
    } else if (this.roleValue === 'candidate') {
      // A removed node's single candidacy failed (its voters may ignore it, in a
      // leader's lease): it is a follower again, retired once nobody needs it.
      this.becomeFollower(this.termValue, NONE);
    }
  }

  private tickLeader(): void {
    this.heartbeatElapsedTicks++;
    this.electionElapsedTicks++;
    if (this.electionElapsedTicks >= this.electionTicks) {
      this.electionElapsedTicks = 0;
      if (this.checkQuorum) {
        let active = 0;
        for (const v of this.confValue.voters) if (v === this.id || this.prs.get(v)?.recentActive) active++;
        for (const pr of this.prs.values()) pr.recentActive = false;
        if (active < quorumSize(this.confValue.voters.length)) {
          this.becomeFollower(this.termValue, NONE);
          return;
        }
      }
    }
    if (this.heartbeatElapsedTicks >= this.heartbeatTicks) {
      this.heartbeatElapsedTicks = 0;
      // Carry the newest pending read: a lost ReadIndex heartbeat is made up for here.
      this.bcastHeartbeat(this.reads.highestPendingCtx());
    }
  }

  // ---- votes (§5.2, §5.4.1) ------------------------------------------------

  private handleVote(m: MsgVote): void {
    const pre = m.pre === true;
    // A pre-vote for a term above ours binds nothing: we have voted in no such term.
    const canVote = this.voteValue === m.from || (this.voteValue === NONE && this.leadValue === NONE) || (pre && m.term > this.termValue);
    const upToDate = this.log.isUpToDate(m.lastLogIndex, m.lastLogTerm);
    const grant = canVote && this.mayVote(m.lastLogIndex, m.lastLogTerm) && upToDate;
    if (grant && !pre) {
      this.voteValue = m.from;
      this.electionElapsedTicks = 0;
    }
    // The candidate still counts us as a voter and lacks entries we hold; without
    // our candidacy a damaged voter that held them too can block every election
    // (raft sim seed 300316).
    if (!upToDate && this.isRemoved() && this.repairUntil === 0) this.removedMayCampaign = true;
    if (pre) this.send({ type: 'voteResp', from: this.id, to: m.from, term: grant ? m.term : this.termValue, reject: !grant, pre: true });
    else this.send({ type: 'voteResp', from: this.id, to: m.from, term: this.termValue, reject: !grant });
    // A rival candidate of our term holds a longer log than ours: yield (stay
    // a follower of nobody, our vote kept, the election timer restarted), so
    // that the rival, whose next term we would vote in, gets there first.
    // Without pre-vote a candidate that cannot win (an old membership whose
    // other voters are gone or refuse it) otherwise raises the term ahead of
    // the rival each time, and the rival's requests always come a term late
    // (raft sim seed 300843). The rival need not be in our membership (there
    // it was not: ours was the old one). The cost: a candidate a vote short of
    // winning may yield to a rival that does not win this term either, one
    // more election timeout. Liveness only: votes are unchanged.
    if (!pre && this.roleValue === 'candidate' && !this.preCandidate && m.term === this.termValue && this.log.isUpToDate(m.lastLogIndex - 1, m.lastLogTerm)) {
      this.becomeFollower(this.termValue, NONE);
    }
  }

  /** Votes from voters of our membership only: a learner's or stranger's answer does not count. */
  private countVotes(granted: boolean): number {
    let n = 0;
    for (const v of this.confValue.voters) if (this.votes.get(v) === granted) n++;
    return n;
  }

  // ---- per-role message handling -------------------------------------------

  private stepFollower(m: Message): void {
    if (m.type === 'app' || m.type === 'heartbeat' || m.type === 'snap') {
      if (this.leaveRestartTerm(m)) return;
      this.removedMayCampaign = false;
      this.removalNotifiedValue = false;
    }
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
      case 'snap':
        this.electionElapsedTicks = 0;
        this.leadValue = m.from;
        this.handleSnapshot(m);
        break;
      default:
        break; // answers to an old candidacy or leadership of this term: nothing to do
    }
  }

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case 'app':
      case 'heartbeat':
      case 'snap':
        // §5.2: a leader of our term exists; return to follower.
        this.becomeFollower(m.term, m.from);
        this.stepFollower(m);
        break;
      case 'voteResp': {
        if ((m.pre === true) !== this.preCandidate) break; // an answer to the other phase
        if (!this.votes.has(m.from)) this.votes.set(m.from, !m.reject);
        const q = quorumSize(this.confValue.voters.length);
        if (this.countVotes(true) >= q) {
          if (this.preCandidate) this.campaignNow();
          else this.becomeLeader();
        } else if (this.countVotes(false) >= q) this.becomeFollower(this.termValue, NONE);
        break;
      }
      default:
        break;
    }
  }

  private stepLeader(m: Message): void {
    if (m.type === 'app' || m.type === 'heartbeat' || m.type === 'snap') {
      fail(`two leaders in term ${this.termValue}: ${this.id} and ${m.from}`);
    }
    const pr = this.prs.get(m.from);
    if (pr === undefined) return; // not a member of this group (any more)
    switch (m.type) {
      case 'appResp':
        pr.recentActive = true;
        this.handleAppResp(m, pr);
        break;
      case 'heartbeatResp':
        pr.recentActive = true;
        if (pr.state === 'probe') pr.probeSent = false;
        else if (pr.state === 'replicate' && pr.inflights.full()) pr.inflights.freeFirstOne();
        if (m.ctx > 0) {
          this.reads.ack(m.from, m.ctx);
          this.releaseReads();
        }
        // An empty AppendEntries finds out whether entries in flight were lost.
        if (pr.match < this.log.lastIndex()) this.sendAppend(m.from, true);
        break;
      default:
        break;
    }
  }

  private handleAppResp(m: MsgAppResp, pr: Progress): void {
    if (m.reject) {
      if (m.index === 0) {
        this.handleResetRequest(m, pr);
        return;
      }
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
    const updated = pr.maybeUpdate(m.index);
    if (pr.state === 'snapshot') {
      // The follower installed the snapshot (or already held what it covers).
      if (pr.match >= this.log.snapshotIndex()) pr.becomeReplicate();
    } else if (updated) {
      if (pr.state === 'probe') pr.becomeReplicate();
      else pr.inflights.freeLE(m.index);
    }
    if (updated) {
      if (this.maybeCommit()) this.bcastAppend(this.announceCommit);
      // A peer that was paused missed the commit broadcast: tell it now.
      else if (wasPaused) this.sendAppend(m.from, true);
    }
    while (this.sendAppend(m.from, false)) {
      // stream until paused by the in-flight limit or nothing is left to send
    }
  }

  /** A follower's "reset" answer (see header): its log holds less than our progress says. */
  private handleResetRequest(m: MsgAppResp, pr: Progress): void {
    if (pr.state === 'snapshot') return; // the snapshot on its way resets the follower anyway
    if (m.rejectHint === 0 && m.hintTerm === 0 && this.log.applied > 0) {
      // Nothing usable (a joining node needs the membership its log starts from).
      pr.resetTo(1);
      this.sendSnapshot(m.from, pr);
      return;
    }
    pr.resetTo(this.log.findConflictByTerm(m.rejectHint, m.hintTerm) + 1);
    this.sendAppend(m.from, true);
  }

  /** An append response to m's sender (a plain literal: an object spread per message showed in OSD profiles). */
  private appResp(m: MsgApp | MsgSnap, reject: boolean, index: number, rejectHint: number, hintTerm: number): MsgAppResp {
    return { type: 'appResp', from: this.id, to: m.from, term: this.termValue, reject, index, rejectHint, hintTerm };
  }

  private handleApp(m: MsgApp): void {
    if (isEmptyConf(this.confValue) || this.awaitingSnapshotValue) {
      // Joining: entries are meaningless without the membership they start from.
      // Awaiting a snapshot: the driver dropped the state they would apply to.
      // Either way the reset answer makes a leader send a snapshot.
      this.send(this.appResp(m, true, 0, 0, 0));
      return;
    }
    if (m.prevLogIndex < this.log.committed) {
      this.send(this.appResp(m, false, this.log.committed, 0, 0));
      return;
    }
    const lastNew = this.log.maybeAppend(m.prevLogIndex, m.prevLogTerm, m.commit, m.entries);
    if (lastNew !== undefined) {
      if (lastNew > this.verifiedIndex) this.verifiedIndex = lastNew;
      // Our log now matches the leader's up to lastNew: whatever we acknowledged
      // before the damage and was committed is held again.
      if (this.repairUntil > 0 && lastNew >= this.repairUntil && this.repairCovered(lastNew, m.commit)) this.repairUntil = 0;
      this.send(this.appResp(m, false, lastNew, 0, 0));
      return;
    }
    // §5.3 consistency check failed: hint where our log may match.
    const hint = this.log.findConflictByTerm(Math.min(m.prevLogIndex, this.log.lastIndex()), m.prevLogTerm);
    const hintTerm = this.log.term(hint) ?? 0; // unknown only below our snapshot: cannot happen for a leader's message
    // A repairing node may be asked for entries the leader saw it acknowledge:
    // an ordinary reject would look stale to the leader, so ask for a reset.
    this.send(this.appResp(m, true, this.repairUntil > 0 ? 0 : m.prevLogIndex, hint, hintTerm));
  }

  /**
   * Our log now matches the leader's up to lastNew (>= repairUntil): is the
   * repair complete? With an unknown damage extent only if that covers the
   * leader's commit and the commit is an entry of its term: every entry known
   * committed so far lies at or below it (RaftConfig.repairExtentUnknown). Only
   * an append carries the leader's whole commit (a heartbeat's is capped at our
   * match).
   */
  private repairCovered(lastNew: number, leaderCommit: number): boolean {
    if (!this.repairToLeaderCommit) return true;
    return this.termValue > this.repairRestartTerm && lastNew >= leaderCommit && this.log.term(leaderCommit) === this.termValue;
  }

  /**
   * Unknown damage extent: a leader of the term we restarted in may still count
   * acknowledgements we gave before the damage, for entries we no longer hold (a
   * stale append then "repaired" us while its leader believed we held more: raft
   * sim seed 316155 with pre-vote). At its first message we raise our term: it
   * steps down at our answer, and the next leader knows only what we acknowledge
   * from now on. Returns whether m was answered so.
   */
  private leaveRestartTerm(m: MsgApp | MsgHeartbeat | MsgSnap): boolean {
    if (!this.repairToLeaderCommit || this.repairUntil === 0 || m.term > this.repairRestartTerm) return false;
    this.becomeFollower(m.term + 1, NONE);
    this.send({ type: 'appResp', from: this.id, to: m.from, term: this.termValue, reject: false, index: 0, rejectHint: 0, hintTerm: 0 });
    return true;
  }

  private handleHeartbeat(m: MsgHeartbeat): void {
    this.leaderRetainValue = m.retain ?? 0;
    if (this.repairUntil > 0) {
      // Commit only what appends of this term proved to match (handleApp). Without
      // this, a repaired-up-to-date node whose damage mark lies past the leader's
      // last index stayed behind until the next write (raft sim seed 517814).
      if (m.commit > this.log.lastIndex()) {
        this.send({ type: 'appResp', from: this.id, to: m.from, term: this.termValue, reject: true, index: 0, rejectHint: this.log.lastIndex(), hintTerm: this.log.lastTerm() });
      } else {
        this.log.commitTo(Math.min(m.commit, this.verifiedIndex));
      }
    } else {
      this.log.commitTo(m.commit);
    }
    this.send({ type: 'heartbeatResp', from: this.id, to: m.from, term: this.termValue, ctx: m.ctx });
  }

  /**
   * InstallSnapshot (§7). The driver installed the state data before stepping
   * this. A snapshot at or below our commit is stale: answer with our commit. Else
   * the log restarts at the snapshot point, commit and applied jump to it, its
   * membership is adopted, and Ready.snapshot asks the driver to persist it.
   */
  private handleSnapshot(m: MsgSnap): void {
    const s = m.snapshot;
    if (!isUsableSnapshotMeta(s)) return; // malformed: ignoring it makes the leader retry
    if (!this.installs(s.index)) {
      this.send(this.appResp(m, false, this.log.committed, 0, 0));
      return;
    }
    this.log.restore(s.index, s.term);
    this.awaitingSnapshotValue = false;
    const conf = normalizeConf(s.conf);
    this.snapConf = conf;
    this.confValue = conf;
    this.snapshotToPersist = { index: s.index, term: s.term, conf };
    // (With an unknown damage extent the appends that follow complete the repair: a
    // snapshot does not carry the leader's commit.)
    if (this.repairUntil > 0 && s.index >= this.repairUntil && !this.repairToLeaderCommit) this.repairUntil = 0;
    this.send(this.appResp(m, false, s.index, 0, 0));
  }

  // ---- replication (§5.3, §7) -----------------------------------------------

  /** Send the next AppendEntries (or a snapshot) to peer if not paused; returns whether one was sent. */
  private sendAppend(to: number, allowEmpty: boolean): boolean {
    const pr = this.prs.get(to) as Progress;
    if (pr.isPaused()) return false;
    const last = this.log.lastIndex();
    if (!(pr.next >= 1 && pr.next <= last + 1)) fail(`progress next ${pr.next} outside log 1..${last + 1}`);
    if (pr.next <= this.log.snapshotIndex()) {
      // §7: the entries it needs are compacted away.
      this.sendSnapshot(to, pr);
      return true;
    }
    const prevLogIndex = pr.next - 1;
    const prevLogTerm = this.log.term(prevLogIndex) as number;
    const entries = this.log.slice(pr.next, last + 1, this.maxMsgBytes);
    if (entries.length === 0 && !allowEmpty) return false;
    this.send({ type: 'app', from: this.id, to, term: this.termValue, prevLogIndex, prevLogTerm, entries, commit: this.log.committed });
    pr.sentEntries(prevLogIndex + entries.length, entries.length);
    return true;
  }

  /**
   * The snapshot is this leader's applied point with the membership as of it: the
   * driver ships its applied state, which is at least that new; entries are
   * idempotent, so a state a little newer than the index is fine.
   */
  private sendSnapshot(to: number, pr: Progress): void {
    const m = this.snapshotMessage(to);
    this.send(m);
    pr.becomeSnapshot(m.snapshot.index);
  }

  private snapshotMessage(to: number): MsgSnap {
    return { type: 'snap', from: this.id, to, term: this.termValue, snapshot: this.snapshotPoint() };
  }

  /**
   * The point a snapshot of this node's state would have now: its applied index
   * with that entry's term and the membership (what sendSnapshot ships). Read
   * only: a driver finishing a transfer may move its snapshot up to it.
   */
  snapshotPoint(): SnapshotMeta {
    const index = this.log.applied;
    return { index, term: this.log.term(index) as number, conf: this.confValue };
  }

  private bcastAppend(allowEmpty: boolean): void {
    for (const p of this.prs.keys()) if (p !== this.id) this.sendAppend(p, allowEmpty);
  }

  private bcastHeartbeat(ctx: number): void {
    const retain = this.minPeerMatch() ?? 0;
    for (const [p, pr] of this.prs) {
      if (p === this.id) continue;
      this.send({ type: 'heartbeat', from: this.id, to: p, term: this.termValue, commit: Math.min(pr.match, this.log.committed), ctx, retain });
    }
  }

  /** §5.4.2: commit the voters' quorum match index only if it is an entry of this term. */
  private maybeCommit(): boolean {
    const matches = this.confValue.voters.map((v) => this.prs.get(v)?.match ?? 0);
    const before = this.log.committed;
    if (!this.log.maybeCommit(quorumMatchIndex(matches), this.termValue)) return false;
    // Membership changes (and a new leader's first entry) are always announced at
    // once, even without broadcastCommit: followers must apply a new
    // configuration promptly (a leader that removed itself steps down, and the
    // rest must be able to elect under the new configuration).
    this.announceCommit = this.broadcastCommit || (this.pendingConfIndex > before && this.pendingConfIndex <= this.log.committed);
    this.flushWaitingReads();
    return true;
  }

  private appendProposal(data: Uint8Array, type: 'normal' | 'conf'): number {
    const index = this.log.lastIndex() + 1;
    this.log.append([type === 'conf' ? { term: this.termValue, index, data, type } : { term: this.termValue, index, data }]);
    this.bcastAppend(false);
    return index;
  }

  private checkProposal(data: Uint8Array): RaftError | undefined {
    if (this.roleValue !== 'leader') {
      return new RaftError('ERR_RAFT_NOT_LEADER', `node ${this.id} is not the leader`, this.leadValue);
    }
    if (entryBytes({ term: 0, index: 0, data }) > this.maxMsgBytes) {
      return new RaftError('ERR_LIMIT', `entry of ${data.length} bytes exceeds maxMsgBytes ${this.maxMsgBytes}`);
    }
    if (this.log.lastIndex() - this.log.committed >= this.maxUncommittedEntries) {
      return new RaftError('ERR_LIMIT', `${this.maxUncommittedEntries} proposals already await commit`);
    }
    return undefined;
  }

  // ---- membership (thesis §4.1) ----------------------------------------------

  /** Membership as of index (snapshotIndex <= index <= lastIndex): the snapshot's, then every conf entry up to index. */
  private confAt(index: number): ConfState {
    if (!(index >= this.log.snapshotIndex() && index <= this.log.lastIndex())) fail(`conf at ${index} outside the log`);
    let conf = this.snapConf;
    for (let i = this.log.snapshotIndex() + 1; i <= index; i++) {
      const e = this.log.entryAt(i) as Entry;
      if (e.type === 'conf') conf = mustApplyConfEntry(conf, e);
    }
    return conf;
  }

  private onConfChanged(): void {
    if (this.roleValue === 'candidate' && !this.promotable()) {
      this.becomeFollower(this.termValue, NONE);
      return;
    }
    if (this.roleValue !== 'leader') return;
    if (!this.confValue.voters.includes(this.id)) {
      // Removed: it led until its removal committed (etcd-style); the others elect
      // a new leader after an election timeout.
      this.becomeFollower(this.termValue, NONE);
      return;
    }
    const added = this.syncProgress();
    if (this.maybeCommit()) this.bcastAppend(this.announceCommit); // a smaller quorum may commit more
    else for (const p of added) this.sendAppend(p, true);
    this.releaseReads();
  }

  /** Leader: one Progress per member; returns the members that got a new one. */
  private syncProgress(): number[] {
    const members = [...this.confValue.voters, ...this.confValue.learners];
    for (const p of [...this.prs.keys()]) if (!members.includes(p)) this.prs.delete(p);
    const added: number[] = [];
    for (const p of members) {
      if (this.prs.has(p)) continue;
      const pr = new Progress(this.log.lastIndex() + 1, this.maxInflightMsgs);
      if (p === this.id) {
        pr.match = this.log.stable();
        pr.becomeReplicate();
      } else {
        added.push(p);
      }
      this.prs.set(p, pr);
    }
    return added;
  }

  // ---- ReadIndex (thesis §6.4) -------------------------------------------------

  /** Once an entry of this term is committed, waiting reads get the commit index and a heartbeat round. */
  private flushWaitingReads(): void {
    if (this.roleValue !== 'leader' || this.log.term(this.log.committed) !== this.termValue) return;
    const ctx = this.reads.assignWaiting(this.log.committed);
    if (ctx === 0) return;
    if (quorumSize(this.confValue.voters.length) > 1) this.bcastHeartbeat(ctx);
    this.releaseReads();
  }

  private releaseReads(): void {
    for (const rs of this.reads.release(this.id, this.confValue.voters)) this.readStatesOut.push(rs);
  }

  // ---- misc -------------------------------------------------------------------

  private send(m: Message): void {
    assert(this.msgs.length < MSGS_PENDING_MAX, 'raft outbox full: the driver must drain ready()');
    this.msgs.push(m);
  }

  private assertNoReadyOutstanding(): void {
    assert(!this.readyOutstanding, 'input between ready() and advance()');
  }
}

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}
