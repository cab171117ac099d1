// Byte codec of one raft message (raft/types.ts) inside an RPC payload: used by
// messages.ts for RaftBatch envelopes and the snap message of a SnapshotChunk. The
// layout is in the format table at the top of messages.ts (the one place it is
// written down). Pure: no IO.
//
// Invariants:
// - hup is local-only: it has no type code, the encoder asserts, the decoder refuses.
// - raftMessageProblem() is the single list of what a message on the wire must
//   satisfy; the encoder asserts it and the decoder refuses what breaks it, so what
//   the raft core asserts on (entries contiguous after prevLogIndex, entry terms
//   never decreasing, positive node ids) cannot reach it from a peer.
// - readMessage() consumes exactly bodyBytes of body; every count is checked
//   against the bytes left before anything is built for it.
import { unreachable } from '../stdx/assert.js';
import type { Entry, Message } from '../raft/types.js';
import { PartsWriter, PayloadReader, inlinedBytes, isNodeId, isSafeU64, refuse } from './wire.js';

export const RAFT_MESSAGE_HEAD_BYTES = 32;
export const ENTRY_HEAD_BYTES = 24;
/** Voters plus learners of one raft group: far above any pool size. */
export const CONF_MEMBERS_MAX = 256;

const MSG_REJECT = 1;
/** voteResp only, with MSG_REJECT: MsgVoteResp.removed. */
const MSG_REMOVED = 2;
/** vote and voteResp: MsgVote.pre / MsgVoteResp.pre. */
const MSG_PRE = 4;
const ENTRY_TYPE_NORMAL = 0;
const ENTRY_TYPE_CONF = 1;

export type WireMessage = Exclude<Message, { type: 'hup' }>;
export type WireMessageType = WireMessage['type'];

const MESSAGE_TYPE_CODE: Record<WireMessageType, number> = {
  vote: 1,
  voteResp: 2,
  app: 3,
  appResp: 4,
  heartbeat: 5,
  heartbeatResp: 6,
  snap: 7,
};
const MESSAGE_TYPE_BY_CODE: readonly (WireMessageType | undefined)[] = [
  undefined,
  'vote',
  'voteResp',
  'app',
  'appResp',
  'heartbeat',
  'heartbeatResp',
  'snap',
];

function entriesProblem(m: WireMessage & { type: 'app' }): string | null {
  let prevTerm = m.prevLogTerm;
  for (let k = 0; k < m.entries.length; k++) {
    const e = m.entries[k];
    if (!isSafeU64(e.term) || !isSafeU64(e.index)) return `app entry ${k}: term/index not a non-negative safe integer`;
    // raft/log.ts asserts both: entries follow prevLogIndex without a gap, terms never decrease.
    if (e.index !== m.prevLogIndex + 1 + k) return `app entry ${k}: index ${e.index}, expected ${m.prevLogIndex + 1 + k} (entries must be contiguous after prevLogIndex)`;
    if (e.term < prevTerm) return `app entry ${k}: term ${e.term} below the previous ${prevTerm}`;
    if (e.term > m.term) return `app entry ${k}: term ${e.term} above the message term ${m.term}`;
    if (e.type !== undefined && e.type !== 'normal' && e.type !== 'conf') return `app entry ${k}: unknown type ${String(e.type)}`;
    if (!(e.data instanceof Uint8Array)) return `app entry ${k}: data is not bytes`;
    prevTerm = e.term;
  }
  return null;
}

function confProblem(voters: readonly number[], learners: readonly number[]): string | null {
  if (voters.length === 0) return 'snapshot conf has no voter';
  if (voters.length + learners.length > CONF_MEMBERS_MAX) return `snapshot conf has more than ${CONF_MEMBERS_MAX} members`;
  const seen = new Set<number>();
  for (const id of [...voters, ...learners]) {
    if (!isNodeId(id)) return `snapshot conf member ${id} is not a positive safe integer`;
    if (seen.has(id)) return `snapshot conf lists ${id} twice`;
    seen.add(id);
  }
  return null;
}

export function raftMessageProblem(m: Message): string | null {
  if (m.type === 'hup') return 'hup is local-only and is never sent';
  if (!isNodeId(m.from) || !isNodeId(m.to)) return `raft ${m.type}: from ${m.from} / to ${m.to} must be positive safe integers`;
  if (!isSafeU64(m.term)) return `raft ${m.type}: term ${m.term} is not a non-negative safe integer`;
  switch (m.type) {
    case 'vote':
      if (!isSafeU64(m.lastLogIndex) || !isSafeU64(m.lastLogTerm)) return 'raft vote: lastLogIndex/lastLogTerm not safe integers';
      if (m.lastLogTerm > m.term) return `raft vote: lastLogTerm ${m.lastLogTerm} above term ${m.term}`;
      return null;
    case 'voteResp':
      return typeof m.reject === 'boolean' ? null : 'raft voteResp: reject is not a boolean';
    case 'app':
      if (!isSafeU64(m.prevLogIndex) || !isSafeU64(m.prevLogTerm) || !isSafeU64(m.commit)) return 'raft app: prevLogIndex/prevLogTerm/commit not safe integers';
      if (m.prevLogTerm > m.term) return `raft app: prevLogTerm ${m.prevLogTerm} above term ${m.term}`;
      return entriesProblem(m);
    case 'appResp':
      if (typeof m.reject !== 'boolean') return 'raft appResp: reject is not a boolean';
      if (!isSafeU64(m.index) || !isSafeU64(m.rejectHint) || !isSafeU64(m.hintTerm)) return 'raft appResp: index/rejectHint/hintTerm not safe integers';
      return null;
    case 'heartbeat':
      return isSafeU64(m.commit) && isSafeU64(m.ctx) && (m.retain === undefined || isSafeU64(m.retain)) ? null : 'raft heartbeat: commit/ctx/retain not safe integers';
    case 'heartbeatResp':
      return isSafeU64(m.ctx) ? null : 'raft heartbeatResp: ctx not a safe integer';
    case 'snap': {
      const s = m.snapshot;
      if (!isSafeU64(s.index) || !isSafeU64(s.term)) return 'raft snap: snapshot index/term not safe integers';
      if (s.term > m.term) return `raft snap: snapshot term ${s.term} above term ${m.term}`;
      return confProblem(s.conf.voters, s.conf.learners);
    }
    default:
      return `unknown raft message type ${String((m as { type: unknown }).type)}`;
  }
}

function entriesDataBytes(entries: readonly Entry[], inlinedOnly: boolean): number {
  let n = 0;
  for (const e of entries) n += inlinedOnly ? inlinedBytes(e.data.length) : e.data.length;
  return n;
}

/** Wire bytes of the body of m (what follows the 32-byte message head). */
export function messageBodyBytes(m: WireMessage): number {
  switch (m.type) {
    case 'vote':
      return 16;
    case 'voteResp':
      return 0;
    case 'app':
      return 32 + ENTRY_HEAD_BYTES * m.entries.length + entriesDataBytes(m.entries, false);
    case 'appResp':
      return 24;
    case 'heartbeat':
      return 24;
    case 'heartbeatResp':
      return 8;
    case 'snap':
      return 24 + 8 * (m.snapshot.conf.voters.length + m.snapshot.conf.learners.length);
    default:
      return unreachable(m);
  }
}

/** Bytes of m that go into the writer's head (all but non-inlined entry data). */
export function messageHeadBytes(m: WireMessage): number {
  const body = messageBodyBytes(m);
  if (m.type !== 'app') return RAFT_MESSAGE_HEAD_BYTES + body;
  return RAFT_MESSAGE_HEAD_BYTES + body - entriesDataBytes(m.entries, false) + entriesDataBytes(m.entries, true);
}

export function writeMessage(w: PartsWriter, m: WireMessage): void {
  w.u8(MESSAGE_TYPE_CODE[m.type]);
  w.u8(
    ((m.type === 'voteResp' || m.type === 'appResp') && m.reject ? MSG_REJECT : 0) |
      (m.type === 'voteResp' && m.removed === true ? MSG_REMOVED : 0) |
      ((m.type === 'vote' || m.type === 'voteResp') && m.pre === true ? MSG_PRE : 0),
  );
  w.zeros(2);
  w.u32(messageBodyBytes(m));
  w.u64(m.from);
  w.u64(m.to);
  w.u64(m.term);
  switch (m.type) {
    case 'vote':
      w.u64(m.lastLogIndex);
      w.u64(m.lastLogTerm);
      return;
    case 'voteResp':
      return;
    case 'app':
      w.u64(m.prevLogIndex);
      w.u64(m.prevLogTerm);
      w.u64(m.commit);
      w.u32(m.entries.length);
      w.zeros(4);
      for (const e of m.entries) {
        w.u64(e.term);
        w.u64(e.index);
        w.u8(e.type === 'conf' ? ENTRY_TYPE_CONF : ENTRY_TYPE_NORMAL);
        w.zeros(3);
        w.u32(e.data.length);
        w.data(e.data);
      }
      return;
    case 'appResp':
      w.u64(m.index);
      w.u64(m.rejectHint);
      w.u64(m.hintTerm);
      return;
    case 'heartbeat':
      w.u64(m.commit);
      w.u64(m.ctx);
      w.u64(m.retain ?? 0);
      return;
    case 'heartbeatResp':
      w.u64(m.ctx);
      return;
    case 'snap': {
      const { index, term, conf } = m.snapshot;
      w.u64(index);
      w.u64(term);
      w.u32(conf.voters.length);
      w.u32(conf.learners.length);
      for (const id of conf.voters) w.u64(id);
      for (const id of conf.learners) w.u64(id);
      return;
    }
    default:
      unreachable(m);
  }
}

function readEntries(r: PayloadReader, count: number): Entry[] {
  // Every entry has at least its head: a count the bytes left cannot hold is refused before any work.
  if (count > Math.floor(r.remaining() / ENTRY_HEAD_BYTES)) r.fail(`${count} entries cannot fit in ${r.remaining()} bytes`);
  const entries: Entry[] = [];
  for (let k = 0; k < count; k++) {
    const term = r.u64('entry term');
    const index = r.u64('entry index');
    const type = r.u8('entry type');
    if (type !== ENTRY_TYPE_NORMAL && type !== ENTRY_TYPE_CONF) r.fail(`entry ${k}: unknown type ${type}`);
    r.zeros(3, 'entry reserved');
    const dataBytes = r.u32('entry dataBytes');
    const data = ownedEntryData(r.bytes(dataBytes, 'entry data'));
    entries.push(type === ENTRY_TYPE_CONF ? { term, index, data, type: 'conf' } : { term, index, data });
  }
  return entries;
}

function readIds(r: PayloadReader, count: number): number[] {
  const ids: number[] = [];
  for (let i = 0; i < count; i++) ids.push(r.u64('conf member'));
  return ids;
}

export function readMessage(r: PayloadReader): WireMessage {
  const code = r.u8('message type');
  const type = MESSAGE_TYPE_BY_CODE[code];
  if (type === undefined) r.fail(`unknown raft message type ${code}`);
  const flags = r.u8('message flags');
  const mayReject = type === 'voteResp' || type === 'appResp';
  const known = (mayReject ? MSG_REJECT : 0) | (type === 'voteResp' ? MSG_REMOVED : 0) | (type === 'vote' || type === 'voteResp' ? MSG_PRE : 0);
  if ((flags & ~known) !== 0) r.fail(`raft ${type}: unknown flags 0x${flags.toString(16)}`);
  const reject = (flags & MSG_REJECT) !== 0;
  if ((flags & MSG_REMOVED) !== 0 && !reject) r.fail(`raft ${type}: removed without reject`);
  r.zeros(2, 'message reserved');
  const bodyBytes = r.u32('message bodyBytes');
  const from = r.u64('from');
  const to = r.u64('to');
  const term = r.u64('term');
  const m = r.within(bodyBytes, `raft ${type} body`, (): WireMessage => {
    switch (type) {
      case 'vote': {
        const lastLogIndex = r.u64('lastLogIndex');
        const lastLogTerm = r.u64('lastLogTerm');
        return (flags & MSG_PRE) !== 0 ? { type, from, to, term, lastLogIndex, lastLogTerm, pre: true } : { type, from, to, term, lastLogIndex, lastLogTerm };
      }
      case 'voteResp': {
        const base = { type, from, to, term, reject };
        if ((flags & (MSG_REMOVED | MSG_PRE)) === 0) return base;
        return { ...base, ...((flags & MSG_REMOVED) !== 0 ? { removed: true } : {}), ...((flags & MSG_PRE) !== 0 ? { pre: true } : {}) };
      }
      case 'app': {
        const prevLogIndex = r.u64('prevLogIndex');
        const prevLogTerm = r.u64('prevLogTerm');
        const commit = r.u64('commit');
        const count = r.u32('entryCount');
        r.zeros(4, 'app reserved');
        return { type, from, to, term, prevLogIndex, prevLogTerm, entries: readEntries(r, count), commit };
      }
      case 'appResp':
        return { type, from, to, term, reject, index: r.u64('index'), rejectHint: r.u64('rejectHint'), hintTerm: r.u64('hintTerm') };
      case 'heartbeat': {
        const commit = r.u64('commit');
        const ctx = r.u64('ctx');
        const retain = r.u64('retain'); // 0 = unknown: decoded as absent (canonical either way)
        return retain > 0 ? { type, from, to, term, commit, ctx, retain } : { type, from, to, term, commit, ctx };
      }
      case 'heartbeatResp':
        return { type, from, to, term, ctx: r.u64('ctx') };
      case 'snap': {
        const index = r.u64('snapshot index');
        const snapTerm = r.u64('snapshot term');
        const voterCount = r.u32('voterCount');
        const learnerCount = r.u32('learnerCount');
        if (voterCount + learnerCount > CONF_MEMBERS_MAX) r.fail(`${voterCount + learnerCount} conf members exceed ${CONF_MEMBERS_MAX}`);
        if ((voterCount + learnerCount) * 8 !== r.remaining()) r.fail('conf member counts do not match the body');
        const voters = readIds(r, voterCount);
        const learners = readIds(r, learnerCount);
        return { type, from, to, term, snapshot: { index, term: snapTerm, conf: { voters, learners } } };
      }
      default:
        return unreachable(type);
    }
  });
  refuse(raftMessageProblem(m));
  return m;
}

/**
 * A decoded entry's data, copied out of the frame when the frame's memory is much
 * larger than the entry: a follower keeps entries in its log for a while, and a
 * 4 KiB view must not pin a 64 KiB socket read or a 4 MiB batch (the OSD bounds
 * its log by entry bytes, which is only true of the memory if entries own it).
 */
function ownedEntryData(view: Buffer): Buffer {
  return view.buffer.byteLength > 2 * view.length + ENTRY_COPY_SLACK_BYTES ? Buffer.from(view) : view;
}

/** Frames up to this much larger than an entry are kept as they are (a copy would save little). */
const ENTRY_COPY_SLACK_BYTES = 4096;
