// ConfChange codec (golden bytes, exact inverse, malformed input) and the rules of
// single-step membership changes (Raft thesis §4.1).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AssertionError } from '../stdx/assert.js';
import { applyConfChange, decodeConfChange, encodeConfChange, normalizeConf } from './confchange.js';
import { RaftError } from './errors.js';
import type { ConfChange, ConfState } from './types.js';

test('ConfChange encoding: golden bytes and exact inverse', () => {
  assert.deepEqual([...encodeConfChange({ type: 'addLearner', node: 7 })], [1, 1, 7, 0, 0, 0]);
  assert.deepEqual([...encodeConfChange({ type: 'promote', node: 0x01020304 })], [1, 2, 4, 3, 2, 1]);
  assert.deepEqual([...encodeConfChange({ type: 'remove', node: 0xffffffff })], [1, 3, 255, 255, 255, 255]);
  for (const cc of [{ type: 'addLearner', node: 1 }, { type: 'promote', node: 65536 }, { type: 'remove', node: 0xfffffffe }] as ConfChange[]) {
    assert.deepEqual(decodeConfChange(encodeConfChange(cc)), cc);
  }
  // decoding a view into a larger buffer reads only its own bytes
  const big = new Uint8Array([9, 9, 1, 3, 5, 0, 0, 0, 9]);
  assert.deepEqual(decodeConfChange(big.subarray(2, 8)), { type: 'remove', node: 5 });
  assert.throws(() => encodeConfChange({ type: 'remove', node: 0 }), AssertionError);
  assert.throws(() => encodeConfChange({ type: 'remove', node: 2 ** 32 }), AssertionError);
});

test('ConfChange decoding refuses malformed bytes with ERR_PROTOCOL', () => {
  const bad = [[], [1, 1, 7, 0, 0], [1, 1, 7, 0, 0, 0, 0], [2, 1, 7, 0, 0, 0], [1, 0, 7, 0, 0, 0], [1, 4, 7, 0, 0, 0], [1, 1, 0, 0, 0, 0]];
  for (const b of bad) {
    const r = decodeConfChange(new Uint8Array(b));
    assert.ok(r instanceof RaftError && r.code === 'ERR_PROTOCOL', `accepted ${b}`);
  }
});

test('thesis §4.1: single-step changes: addLearner, promote, remove, and what they refuse', () => {
  const c0: ConfState = normalizeConf({ voters: [3, 1, 2], learners: [] });
  assert.deepEqual(c0.voters, [1, 2, 3], 'normalized: sorted');
  const c1 = applyConfChange(c0, { type: 'addLearner', node: 4 }) as ConfState;
  assert.deepEqual(c1, { voters: [1, 2, 3], learners: [4] });
  const c2 = applyConfChange(c1, { type: 'promote', node: 4 }) as ConfState;
  assert.deepEqual(c2, { voters: [1, 2, 3, 4], learners: [] });
  const c3 = applyConfChange(c2, { type: 'remove', node: 1 }) as ConfState;
  assert.deepEqual(c3, { voters: [2, 3, 4], learners: [] });
  const refused = (conf: ConfState, cc: ConfChange) => {
    const r = applyConfChange(conf, cc);
    assert.ok(r instanceof RaftError && r.code === 'ERR_RAFT_CONF_CHANGE', `${cc.type} ${cc.node} accepted`);
  };
  refused(c1, { type: 'addLearner', node: 4 }); // already a learner
  refused(c1, { type: 'addLearner', node: 2 }); // already a voter
  refused(c1, { type: 'promote', node: 2 }); // a voter, not a learner
  refused(c1, { type: 'promote', node: 9 }); // a stranger
  refused(c1, { type: 'remove', node: 9 });
  refused(normalizeConf({ voters: [1], learners: [2] }), { type: 'remove', node: 1 }); // no voter left
  refused(c1, { type: 'addLearner', node: 0 });
  assert.deepEqual(applyConfChange(c1, { type: 'remove', node: 4 }), { voters: [1, 2, 3], learners: [] }, 'a learner can be removed');
  assert.throws(() => normalizeConf({ voters: [1, 1], learners: [] }), AssertionError);
  assert.throws(() => normalizeConf({ voters: [1], learners: [1] }), AssertionError);
});
