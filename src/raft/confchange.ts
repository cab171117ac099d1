// Membership (ConfState) and single-step membership changes (ConfChange): the
// byte encoding carried in 'conf' entries, and the rules that decide whether a
// change is valid for a given membership (Raft thesis §4.1, one server at a time).
//
// Encoding (6 bytes, little-endian): [version=1][type][node u32]
//   type: 1 addLearner, 2 promote, 3 remove. Node ids are 1..2^32-1.
// decodeConfChange never reads past its input and returns ERR_PROTOCOL for
// anything but exactly those 6 bytes; encodeConfChange is its exact inverse.
//
// Invariants of every ConfState built here: voters and learners are sorted,
// hold no duplicates, are disjoint, and contain only valid node ids. A conf that
// came out of applyConfChange always has at least one voter.
import { assert, fail } from '../stdx/assert.js';
import { RaftError } from './errors.js';
import type { ConfChange, ConfState, Entry, SnapshotMeta } from './types.js';

export const CONF_CHANGE_BYTES = 6;
const CONF_CHANGE_VERSION = 1;
const NODE_ID_MAX = 0xffffffff;

const TYPE_CODES: Record<ConfChange['type'], number> = { addLearner: 1, promote: 2, remove: 3 };
const CODE_TYPES: readonly (ConfChange['type'] | undefined)[] = [undefined, 'addLearner', 'promote', 'remove'];

/** An empty membership: what a node that joins a group knows before its first snapshot. */
export const EMPTY_CONF: ConfState = Object.freeze({ voters: Object.freeze([]) as readonly number[], learners: Object.freeze([]) as readonly number[] });

export function isValidNodeId(id: number): boolean {
  return Number.isInteger(id) && id >= 1 && id <= NODE_ID_MAX;
}

export function encodeConfChange(cc: ConfChange): Uint8Array {
  if (!(isValidNodeId(cc.node))) fail(`conf change node ${cc.node} is not a valid node id`);
  const code = TYPE_CODES[cc.type];
  if (!(code !== undefined)) fail(`unknown conf change type ${String(cc.type)}`);
  const out = new Uint8Array(CONF_CHANGE_BYTES);
  out[0] = CONF_CHANGE_VERSION;
  out[1] = code;
  new DataView(out.buffer).setUint32(2, cc.node, true);
  return out;
}

export function decodeConfChange(data: Uint8Array): ConfChange | RaftError {
  if (data.length !== CONF_CHANGE_BYTES) return new RaftError('ERR_PROTOCOL', `conf change of ${data.length} bytes, want ${CONF_CHANGE_BYTES}`);
  if (data[0] !== CONF_CHANGE_VERSION) return new RaftError('ERR_PROTOCOL', `conf change version ${data[0]}`);
  const type = CODE_TYPES[data[1]];
  if (type === undefined) return new RaftError('ERR_PROTOCOL', `conf change type ${data[1]}`);
  const node = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(2, true);
  if (node === 0) return new RaftError('ERR_PROTOCOL', 'conf change for node 0');
  return { type, node };
}

/** A validated, normalized (sorted, frozen) copy of a stored or received conf. */
export function normalizeConf(conf: ConfState): ConfState {
  const voters = [...conf.voters].sort((a, b) => a - b);
  const learners = [...conf.learners].sort((a, b) => a - b);
  for (const id of [...voters, ...learners]) assert(isValidNodeId(id), `conf holds invalid node id ${id}`);
  assert(new Set(voters).size === voters.length && new Set(learners).size === learners.length, 'conf holds duplicate ids');
  assert(!voters.some((v) => learners.includes(v)), 'conf holds a node as both voter and learner');
  return Object.freeze({ voters: Object.freeze(voters), learners: Object.freeze(learners) });
}

export function isEmptyConf(conf: ConfState): boolean {
  return conf.voters.length === 0 && conf.learners.length === 0;
}

export function confEquals(a: ConfState, b: ConfState): boolean {
  return sameIds(a.voters, b.voters) && sameIds(a.learners, b.learners);
}

function sameIds(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, k) => x === b[k]);
}

/**
 * The membership after cc, or ERR_RAFT_CONF_CHANGE if cc does not apply to conf:
 * addLearner of a member, promote of a non-learner, remove of a non-member, or a
 * remove that would leave no voter (the group could never commit again).
 */
export function applyConfChange(conf: ConfState, cc: ConfChange): ConfState | RaftError {
  const refuse = (why: string) => new RaftError('ERR_RAFT_CONF_CHANGE', `${cc.type} ${cc.node}: ${why}`);
  if (!isValidNodeId(cc.node)) return refuse('not a valid node id');
  const isVoter = conf.voters.includes(cc.node);
  const isLearner = conf.learners.includes(cc.node);
  switch (cc.type) {
    case 'addLearner':
      if (isVoter || isLearner) return refuse('already a member');
      return normalizeConf({ voters: conf.voters, learners: [...conf.learners, cc.node] });
    case 'promote':
      if (!isLearner) return refuse('not a learner');
      return normalizeConf({ voters: [...conf.voters, cc.node], learners: conf.learners.filter((l) => l !== cc.node) });
    case 'remove':
      if (!isVoter && !isLearner) return refuse('not a member');
      if (isVoter && conf.voters.length === 1) return refuse('would leave no voter');
      return normalizeConf({ voters: conf.voters.filter((v) => v !== cc.node), learners: conf.learners.filter((l) => l !== cc.node) });
    default:
      return refuse('unknown type');
  }
}

/**
 * Apply a committed conf entry. It was validated by the leader that proposed it
 * against the membership it is applied to (one change at a time, see
 * RaftNode.proposeConfChange), so failing here is a bug or corruption: stop.
 */
export function mustApplyConfEntry(conf: ConfState, e: Entry): ConfState {
  const cc = decodeConfChange(e.data);
  if (!(!(cc instanceof RaftError))) fail(`conf entry ${e.index}: ${cc instanceof RaftError ? cc.message : ''}`);
  const next = applyConfChange(conf, cc);
  if (!(!(next instanceof RaftError))) fail(`conf entry ${e.index}: ${next instanceof RaftError ? next.message : ''}`);
  return next;
}

/** A snapshot meta as the wire may deliver it: sane numbers and a valid membership with a voter. */
export function isUsableSnapshotMeta(s: SnapshotMeta): boolean {
  if (!Number.isSafeInteger(s.index) || s.index < 1 || !Number.isSafeInteger(s.term) || s.term < 1) return false;
  const ids = [...s.conf.voters, ...s.conf.learners];
  return s.conf.voters.length > 0 && ids.every(isValidNodeId) && new Set(ids).size === ids.length;
}
