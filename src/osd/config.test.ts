// The OSD's raft limits against the client protocol's: every request the OSD
// accepts must fit one raft entry (reproducer: with maxMsgBytes = 4 MiB a
// whole-object 4 MiB write was refused by raft as ERR_LIMIT, answered Busy,
// and retried by the client until its deadline), and a raft message must fit
// an RPC frame.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RaftNode } from '../raft/node.js';
import { MemStorage } from '../raft/testkit.js';
import { FRAME_PAYLOAD_BYTES_MAX_DEFAULT } from '../rpc/frame.js';
import { Prng } from '../stdx/prng.js';
import { encodeOp, OpKind } from './op.js';
import { OSD_CONFIG_DEFAULTS, RAFT_BATCH_BYTES_MAX } from './osd.js';
import { IO_BYTES_MAX } from './proto.js';

test('a whole-object write (IO_BYTES_MAX) is accepted by raft under the OSD defaults', () => {
  const r = OSD_CONFIG_DEFAULTS.raft;
  const node = new RaftNode({ id: 1, peers: [1], electionTicks: r.electionTicks, heartbeatTicks: r.heartbeatTicks, prng: new Prng(1), storage: new MemStorage(), maxInflightMsgs: r.maxInflightMsgs, maxMsgBytes: r.maxMsgBytes });
  node.campaign();
  for (let rd = node.ready(); rd; rd = node.ready()) node.advance(rd);
  assert.equal(node.role, 'leader');
  const index = node.propose(encodeOp(OpKind.Write, 1, 0, IO_BYTES_MAX, Buffer.alloc(IO_BYTES_MAX)));
  assert.equal(typeof index, 'number', `propose refused: ${String(index)}`);
});

test('one raft message plus one entry, or one split batch, fits an RPC frame', () => {
  const maxMsg = OSD_CONFIG_DEFAULTS.raft.maxMsgBytes;
  assert.ok(maxMsg + IO_BYTES_MAX + 64 * 1024 <= FRAME_PAYLOAD_BYTES_MAX_DEFAULT, `maxMsgBytes ${maxMsg} too large for a frame`);
  assert.ok(RAFT_BATCH_BYTES_MAX + maxMsg + IO_BYTES_MAX <= FRAME_PAYLOAD_BYTES_MAX_DEFAULT);
});
