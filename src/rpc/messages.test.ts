// Tests of the RPC message codec (messages.ts): golden bytes written by hand from
// the format table in messages.ts's header, round trips of every message variant
// (every raft message type), zero-copy on both sides, the one-allocation hot path,
// and each rejection (limits, alignment, counts, reserved bits, raft invariants).
// The seeded fuzz of mutated payloads is messages.fuzz.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AssertionError } from '../stdx/assert.js';
import { TesseraError } from '../stdx/errors.js';
import { IO_BYTES_MAX, Method, RAFT_BATCH_ENVELOPES_MAX, SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_CHUNK_ITEMS_MAX, Status } from '../osd/proto.js';
import type { ClientRequest, ClientResponse, RaftBatch, SnapshotChunk } from '../osd/proto.js';
import type { Message } from '../raft/types.js';
import { FRAME_HEADER_BYTES, FrameDecoder, FrameKind } from './frame.js';
import type { Frame } from './frame.js';
import { FRAME_HEADROOM_BYTES, frameInHeadroom } from './headroom.js';
import {
  ERROR_MESSAGE_BYTES_MAX,
  decodeClientRequest,
  decodeClientResponse,
  decodeRaftBatch,
  decodeSnapshotChunk,
  encodeClientRequest,
  encodeClientResponse,
  encodeRaftBatch,
  encodeSnapshotChunk,
  raftEnvelopeBytes,
} from './messages.js';

function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ''), 'hex');
}

function cat(parts: readonly Buffer[]): Buffer {
  return Buffer.concat(parts);
}

function expectProtocolError(fn: () => unknown, pattern?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof TesseraError, `expected a TesseraError, got ${String(err)}`);
    assert.equal(err.code, 'ERR_PROTOCOL');
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

// --- Golden payloads (hand-written from the table in messages.ts) -----------------------

const DATA_AB = Buffer.alloc(512, 0xab);
const GOLDEN_WRITE: ClientRequest = {
  method: Method.Write,
  poolId: 1,
  pg: 0x2a,
  pgEpoch: 7,
  volumeId: 0x0102030405,
  offsetBytes: 2 ** 32 + 512,
  data: DATA_AB,
};
//                         poolId   pg       pgEpoch          volumeId         offsetBytes      length   flags
const GOLDEN_WRITE_HEAD = '01000000 2a000000 0700000000000000 0504030201000000 0002000001000000 00020000 00000000';

const GOLDEN_ZERO: ClientRequest = {
  method: Method.Zero,
  poolId: 2,
  pg: 3,
  pgEpoch: 0x1122334455,
  volumeId: 9,
  offsetBytes: 4096,
  lengthBytes: 1024 * 1024,
  mayTrim: true,
};
const GOLDEN_ZERO_BYTES = '02000000 03000000 5544332211000000 0900000000000000 0010000000000000 00001000 01000000';

const GOLDEN_READ: ClientRequest = { method: Method.Read, poolId: 0, pg: 0xffffffff, pgEpoch: 0, volumeId: 1, offsetBytes: 0, lengthBytes: 4096 };
const GOLDEN_READ_BYTES = '00000000 ffffffff 0000000000000000 0100000000000000 0000000000000000 00100000 00000000';

//                 flags    msgBytes leaderHint       pgEpoch          "not leader"
const GOLDEN_NOT_LEADER = '01000000 0a000000 0300000000000000 0000000000000000 6e6f74206c6561646572';
const GOLDEN_STALE_EPOCH = '02000000 00000000 0000000000000000 0c00000000000000';

const GOLDEN_EXTENTS = '03000000 00000000  00100000 03000000  00020000 00000000  00040000 02000000';

const GOLDEN_BATCH: RaftBatch = {
  fromOsd: 5,
  envelopes: [
    { poolId: 1, pg: 2, pgEpoch: 3, msg: { type: 'heartbeat', from: 5, to: 6, term: 9, commit: 100, ctx: 0x0102, retain: 99 } },
    {
      poolId: 1,
      pg: 4,
      pgEpoch: 3,
      msg: {
        type: 'app',
        from: 5,
        to: 7,
        term: 9,
        prevLogIndex: 10,
        prevLogTerm: 8,
        commit: 10,
        entries: [
          { term: 9, index: 11, data: Buffer.from('ab') },
          { term: 9, index: 12, type: 'conf', data: Buffer.from([1, 2, 3]) },
        ],
      },
    },
  ],
};
const GOLDEN_BATCH_BYTES = `
  0500000000000000 02000000 00000000
  01000000 02000000 0300000000000000
    05 00 0000 18000000 0500000000000000 0600000000000000 0900000000000000
    6400000000000000 0201000000000000 6300000000000000
  01000000 04000000 0300000000000000
    03 00 0000 55000000 0500000000000000 0700000000000000 0900000000000000
    0a00000000000000 0800000000000000 0a00000000000000 02000000 00000000
      0900000000000000 0b00000000000000 00 000000 02000000 6162
      0900000000000000 0c00000000000000 01 000000 03000000 010203`;

const DATA_5A = Buffer.alloc(512, 0x5a);
const GOLDEN_CHUNK: SnapshotChunk = {
  poolId: 1,
  pg: 2,
  pgEpoch: 3,
  fromOsd: 5,
  transferId: 77,
  seq: 4,
  done: true,
  items: [{ volumeId: 8, offsetBytes: 512, data: DATA_5A }],
  snap: { type: 'snap', from: 5, to: 7, term: 9, snapshot: { index: 12, term: 9, conf: { voters: [5, 6], learners: [7] } } },
};
const GOLDEN_CHUNK_HEAD = `
  01000000 02000000 0300000000000000 0500000000000000 4d00000000000000 0400000000000000 03000000 01000000
  07 00 0000 30000000 0500000000000000 0700000000000000 0900000000000000
    0c00000000000000 0900000000000000 02000000 01000000 0500000000000000 0600000000000000 0700000000000000
  0800000000000000 0002000000000000 00020000 00000000`;

test('golden: client requests (Write, Zero, Read) encode to the documented bytes and decode back', () => {
  const w = encodeClientRequest(GOLDEN_WRITE);
  assert.deepEqual(cat(w), cat([hex(GOLDEN_WRITE_HEAD), DATA_AB]));
  assert.deepEqual(decodeClientRequest(Method.Write, cat(w)), GOLDEN_WRITE);
  assert.deepEqual(cat(encodeClientRequest(GOLDEN_ZERO)), hex(GOLDEN_ZERO_BYTES));
  assert.deepEqual(decodeClientRequest(Method.Zero, hex(GOLDEN_ZERO_BYTES)), GOLDEN_ZERO);
  assert.deepEqual(cat(encodeClientRequest(GOLDEN_READ)), hex(GOLDEN_READ_BYTES));
  assert.deepEqual(decodeClientRequest(Method.Read, hex(GOLDEN_READ_BYTES)), GOLDEN_READ);
  // BlockStatus has the Read layout under its own method number.
  assert.deepEqual(decodeClientRequest(Method.BlockStatus, hex(GOLDEN_READ_BYTES)), { ...GOLDEN_READ, method: Method.BlockStatus });
});

test('golden: responses (error bodies, extents, read data, empty)', () => {
  const notLeader: ClientResponse = { status: Status.NotLeader, leaderHint: 3, message: 'not leader' };
  const e = encodeClientResponse(Method.Write, notLeader);
  assert.equal(e.status, Status.NotLeader);
  assert.deepEqual(cat(e.parts), hex(GOLDEN_NOT_LEADER));
  assert.deepEqual(decodeClientResponse(Method.Write, Status.NotLeader, hex(GOLDEN_NOT_LEADER)), notLeader);
  const stale: ClientResponse = { status: Status.StaleEpoch, pgEpoch: 12, message: '' };
  assert.deepEqual(cat(encodeClientResponse(Method.Read, stale).parts), hex(GOLDEN_STALE_EPOCH));
  assert.deepEqual(decodeClientResponse(Method.Read, Status.StaleEpoch, hex(GOLDEN_STALE_EPOCH)), stale);

  const extents: ClientResponse = {
    status: Status.Ok,
    extents: [
      { lengthBytes: 4096, hole: true, zero: true },
      { lengthBytes: 512, hole: false, zero: false },
      { lengthBytes: 1024, hole: false, zero: true },
    ],
  };
  assert.deepEqual(cat(encodeClientResponse(Method.BlockStatus, extents).parts), hex(GOLDEN_EXTENTS));
  assert.deepEqual(decodeClientResponse(Method.BlockStatus, Status.Ok, hex(GOLDEN_EXTENTS)), extents);

  const data = Buffer.alloc(1024, 7);
  const read = encodeClientResponse(Method.Read, { status: Status.Ok, data });
  assert.equal(read.parts.length, 1);
  assert.equal(read.parts[0], data, 'read data is passed through, not copied');
  assert.deepEqual(decodeClientResponse(Method.Read, Status.Ok, data), { status: Status.Ok, data });
  for (const method of [Method.Write, Method.Zero, Method.SnapshotChunk]) {
    assert.deepEqual(encodeClientResponse(method, { status: Status.Ok }).parts, []);
    assert.deepEqual(decodeClientResponse(method, Status.Ok, Buffer.alloc(0)), { status: Status.Ok });
  }
});

test('golden: a RaftBatch with a heartbeat and an app with a normal and a conf entry', () => {
  const parts = encodeRaftBatch(GOLDEN_BATCH);
  assert.deepEqual(cat(parts), hex(GOLDEN_BATCH_BYTES));
  assert.equal(parts.length, 1, 'small entry data is inlined into the one head buffer');
  assert.deepEqual(decodeRaftBatch(hex(GOLDEN_BATCH_BYTES)), GOLDEN_BATCH);
  assert.equal(raftEnvelopeBytes(GOLDEN_BATCH.envelopes[0]) + raftEnvelopeBytes(GOLDEN_BATCH.envelopes[1]) + 16, hex(GOLDEN_BATCH_BYTES).length);
});

test('golden: a SnapshotChunk with its snap message and one item', () => {
  const parts = encodeSnapshotChunk(GOLDEN_CHUNK);
  assert.deepEqual(cat(parts), cat([hex(GOLDEN_CHUNK_HEAD), DATA_5A]));
  assert.equal(parts[1], DATA_5A);
  assert.deepEqual(decodeSnapshotChunk(cat(parts)), GOLDEN_CHUNK);
});

// --- Round trips of every variant ----------------------------------------------------

const BIG = Number.MAX_SAFE_INTEGER;

function allRaftMessages(): Message[] {
  const bulk = Buffer.alloc(4096, 0x33);
  return [
    { type: 'vote', from: 1, to: 2, term: BIG, lastLogIndex: BIG, lastLogTerm: BIG - 1 },
    { type: 'voteResp', from: 2, to: 1, term: 3, reject: true },
    { type: 'voteResp', from: 2, to: 1, term: 3, reject: false },
    { type: 'app', from: 1, to: 3, term: 4, prevLogIndex: 0, prevLogTerm: 0, entries: [], commit: 0 },
    {
      type: 'app',
      from: 1,
      to: 3,
      term: 4,
      prevLogIndex: 99,
      prevLogTerm: 2,
      commit: 101,
      entries: [
        { term: 2, index: 100, data: bulk },
        { term: 4, index: 101, data: Buffer.alloc(0) },
        { term: 4, index: 102, type: 'conf', data: Buffer.from([9, 9]) },
        { term: 4, index: 103, data: Buffer.alloc(129, 1) },
      ],
    },
    { type: 'appResp', from: 3, to: 1, term: 4, reject: true, index: 7, rejectHint: 5, hintTerm: 2 },
    { type: 'appResp', from: 3, to: 1, term: 4, reject: false, index: 103, rejectHint: 0, hintTerm: 0 },
    { type: 'heartbeat', from: 1, to: 2, term: 4, commit: 55, ctx: BIG },
    { type: 'heartbeatResp', from: 2, to: 1, term: 4, ctx: 17 },
    { type: 'snap', from: 1, to: 4, term: 4, snapshot: { index: 1000, term: 3, conf: { voters: [1, 2, 3], learners: [] } } },
    { type: 'snap', from: 1, to: 4, term: 4, snapshot: { index: 0, term: 0, conf: { voters: [BIG], learners: [4, 5] } } },
    { type: 'voteResp', from: 2, to: 1, term: 3, reject: true, removed: true },
    { type: 'vote', from: 1, to: 3, term: 7, lastLogIndex: 12, lastLogTerm: 6, pre: true },
    { type: 'voteResp', from: 3, to: 1, term: 7, reject: false, pre: true },
    { type: 'voteResp', from: 3, to: 1, term: 9, reject: true, pre: true },
  ];
}

test('round trip: every raft message type in one batch, and each alone; entry data is not copied either way', () => {
  const messages = allRaftMessages();
  const byFrom = new Map<number, Message[]>();
  for (const m of messages) byFrom.set(m.from, [...(byFrom.get(m.from) ?? []), m]);
  for (const [fromOsd, msgs] of byFrom) {
    const batch: RaftBatch = { fromOsd, envelopes: msgs.map((msg, i) => ({ poolId: i, pg: i * 3, pgEpoch: i + 10, msg })) };
    const parts = encodeRaftBatch(batch);
    const bytes = cat(parts);
    const back = decodeRaftBatch(bytes);
    assert.equal(back.envelopes.length, msgs.length);
    assert.equal(bytes.length, 16 + batch.envelopes.reduce((n, e) => n + raftEnvelopeBytes(e), 0));
    for (let i = 0; i < msgs.length; i++) assert.deepEqual(back.envelopes[i], batch.envelopes[i]);
    assert.deepEqual(cat(encodeRaftBatch(back)), bytes, 'encode(decode(b)) === b');
    for (const env of batch.envelopes) assert.deepEqual(decodeRaftBatch(cat(encodeRaftBatch({ fromOsd, envelopes: [env] }))).envelopes[0], env);
  }
  const app = messages[4] as Message & { type: 'app' };
  const parts = encodeRaftBatch({ fromOsd: 1, envelopes: [{ poolId: 0, pg: 0, pgEpoch: 0, msg: app }] });
  assert.ok(parts.includes(app.entries[0].data as Buffer), 'a 4 KiB entry is its own part');
  assert.ok(parts.includes(app.entries[3].data as Buffer), 'a 129-byte entry is its own part');
  const bytes = cat(parts);
  const decoded = decodeRaftBatch(bytes).envelopes[0].msg as Message & { type: 'app' };
  bytes[bytes.indexOf(0x33)] = 0x44;
  assert.equal(decoded.entries[0].data[0], 0x44, 'decoded entry data is a view of the payload');
  assert.deepEqual(decodeRaftBatch(cat(encodeRaftBatch({ fromOsd: 9, envelopes: [] }))), { fromOsd: 9, envelopes: [] });
  // Entry data may be a plain Uint8Array (the raft core's type): same bytes, passed as a view.
  const u8 = new Uint8Array(300).fill(0x77);
  const withU8: Message = { ...app, entries: [{ term: 2, index: 100, data: u8 }] };
  const withBuf: Message = { ...app, entries: [{ term: 2, index: 100, data: Buffer.from(u8) }] };
  const u8Parts = encodeRaftBatch({ fromOsd: 1, envelopes: [{ poolId: 0, pg: 0, pgEpoch: 0, msg: withU8 }] });
  assert.ok(u8Parts.some((p) => p.buffer === u8.buffer && p.length === 300), 'a view of the Uint8Array, not a copy');
  assert.deepEqual(cat(u8Parts), cat(encodeRaftBatch({ fromOsd: 1, envelopes: [{ poolId: 0, pg: 0, pgEpoch: 0, msg: withBuf }] })));
});

test('round trip: an entry typed "normal" explicitly comes back with the type absent (its default), same bytes', () => {
  const msg: Message = { type: 'app', from: 1, to: 2, term: 1, prevLogIndex: 0, prevLogTerm: 0, commit: 0, entries: [{ term: 1, index: 1, type: 'normal', data: Buffer.from('x') }] };
  const batch: RaftBatch = { fromOsd: 1, envelopes: [{ poolId: 0, pg: 0, pgEpoch: 0, msg }] };
  const back = decodeRaftBatch(cat(encodeRaftBatch(batch)));
  assert.deepEqual((back.envelopes[0].msg as Message & { type: 'app' }).entries[0], { term: 1, index: 1, data: Buffer.from('x') });
  assert.deepEqual(cat(encodeRaftBatch(back)), cat(encodeRaftBatch(batch)));
});

test('round trip: client requests and responses of every method and status', () => {
  const data = Buffer.alloc(IO_BYTES_MAX, 0x11);
  const requests: ClientRequest[] = [
    { method: Method.Read, poolId: 3, pg: 1, pgEpoch: 2, volumeId: BIG, offsetBytes: BIG - 511 - IO_BYTES_MAX, lengthBytes: IO_BYTES_MAX },
    { method: Method.Write, poolId: 3, pg: 1, pgEpoch: 2, volumeId: 4, offsetBytes: 0, data },
    { method: Method.Write, poolId: 3, pg: 1, pgEpoch: 2, volumeId: 4, offsetBytes: 512, data: Buffer.alloc(0) },
    { method: Method.Zero, poolId: 3, pg: 1, pgEpoch: 2, volumeId: 4, offsetBytes: 512, lengthBytes: 512, mayTrim: false },
    { method: Method.BlockStatus, poolId: 3, pg: 1, pgEpoch: 2, volumeId: 4, offsetBytes: 0, lengthBytes: 0 },
  ];
  for (const req of requests) {
    const bytes = cat(encodeClientRequest(req));
    assert.deepEqual(decodeClientRequest(req.method, bytes), req);
  }
  for (const status of Object.values(Status)) {
    if (status === Status.Ok) continue;
    const resp: ClientResponse = { status, message: `status ${status} — ünïcödé ✓`, leaderHint: status, pgEpoch: BIG };
    const enc = encodeClientResponse(Method.Read, resp);
    assert.equal(enc.status, status);
    assert.deepEqual(decodeClientResponse(Method.Read, status, cat(enc.parts)), resp);
  }
  const chunk: SnapshotChunk = {
    poolId: 1,
    pg: 2,
    pgEpoch: 3,
    fromOsd: 4,
    transferId: BIG,
    seq: 0,
    done: false,
    items: [
      { volumeId: 1, offsetBytes: 0, data: Buffer.alloc(SNAPSHOT_CHUNK_BYTES_MAX - 512, 1) },
      { volumeId: 2, offsetBytes: 1 << 30, data: Buffer.alloc(512, 2) },
      { volumeId: 3, offsetBytes: 0, data: Buffer.alloc(0) },
      // A zero range carries no data: it does not count against the data limit.
      { volumeId: 3, offsetBytes: 1 << 22, zeroBytes: SNAPSHOT_CHUNK_BYTES_MAX },
    ],
  };
  assert.deepEqual(decodeSnapshotChunk(cat(encodeSnapshotChunk(chunk))), chunk);
  const empty: SnapshotChunk = { ...chunk, items: [], done: true };
  assert.deepEqual(decodeSnapshotChunk(cat(encodeSnapshotChunk(empty))), empty);
});

// --- Hot path ---------------------------------------------------------------------------

test('hot path: a 4 KiB write framed in headroom is [one 80-byte buffer, the data as-is], and decodes through a FrameDecoder', () => {
  const data = Buffer.alloc(4096, 0xcd);
  const req: ClientRequest = { method: Method.Write, poolId: 1, pg: 2, pgEpoch: 3, volumeId: 4, offsetBytes: 8192, data };
  const parts = encodeClientRequest(req, FRAME_HEADROOM_BYTES);
  assert.equal(parts.length, 2);
  assert.equal(parts[0].length, FRAME_HEADER_BYTES + 40);
  assert.equal(parts[1], data);
  const again = encodeClientRequest(req, FRAME_HEADROOM_BYTES);
  assert.equal(parts[0].buffer.byteLength, 64 * 1024, 'heads are carved from a slab, not an ArrayBuffer each');
  if (again[0].buffer === parts[0].buffer) assert.ok(again[0].byteOffset >= parts[0].byteOffset + parts[0].length, 'in distinct regions');
  assert.deepEqual(cat(again), cat(parts));
  const framed = frameInHeadroom({ kind: FrameKind.Request, flags: 0, method: Method.Write, requestId: 42n, status: 0 }, parts);
  assert.equal(framed, parts, 'framing in headroom allocates nothing');
  const frames: Frame[] = [];
  const decoder = new FrameDecoder({ onFrame: (f) => frames.push(f), onCorruptFrame: () => assert.fail('corrupt'), onFailure: (e) => assert.fail(e) });
  decoder.feed(cat(framed));
  assert.equal(frames.length, 1);
  assert.equal(frames[0].requestId, 42n);
  assert.deepEqual(decodeClientRequest(frames[0].method, frames[0].payload), req);
  // Responses and batches take headroom the same way.
  const resp = encodeClientResponse(Method.Read, { status: Status.Ok, data }, FRAME_HEADROOM_BYTES);
  assert.deepEqual(resp.parts.map((p) => p.length), [FRAME_HEADER_BYTES, 4096]);
  const err = encodeClientResponse(Method.Read, { status: Status.Busy, message: 'busy' }, FRAME_HEADROOM_BYTES);
  assert.deepEqual(decodeClientResponse(Method.Read, Status.Busy, cat(err.parts).subarray(FRAME_HEADER_BYTES)), { status: Status.Busy, message: 'busy' });
});

// --- Rejections -------------------------------------------------------------------------

test('reject: every truncation and an extra trailing byte of every golden payload', () => {
  const cases: Array<[string, Buffer, (b: Buffer) => unknown]> = [
    ['write', cat([hex(GOLDEN_WRITE_HEAD), DATA_AB]), (b) => decodeClientRequest(Method.Write, b)],
    ['zero', hex(GOLDEN_ZERO_BYTES), (b) => decodeClientRequest(Method.Zero, b)],
    ['read', hex(GOLDEN_READ_BYTES), (b) => decodeClientRequest(Method.Read, b)],
    ['not leader', hex(GOLDEN_NOT_LEADER), (b) => decodeClientResponse(Method.Write, Status.NotLeader, b)],
    ['extents', hex(GOLDEN_EXTENTS), (b) => decodeClientResponse(Method.BlockStatus, Status.Ok, b)],
    ['batch', hex(GOLDEN_BATCH_BYTES), (b) => decodeRaftBatch(b)],
    ['chunk', cat([hex(GOLDEN_CHUNK_HEAD), DATA_5A]), (b) => decodeSnapshotChunk(b)],
  ];
  for (const [label, bytes, decode] of cases) {
    decode(bytes);
    for (let n = 0; n < bytes.length; n++) {
      // A Read/BlockStatus payload of 0 bytes is a valid (empty) answer only for Read data; none of these.
      expectProtocolError(() => decode(bytes.subarray(0, n)));
    }
    expectProtocolError(() => decode(Buffer.concat([bytes, Buffer.alloc(1)])), /trailing|left unread|fill|not a multiple/);
    assert.ok(label);
  }
});

test('reject: client request limits, alignment, flags and methods', () => {
  const head = (patch: (b: Buffer) => void): Buffer => {
    const b = hex(GOLDEN_READ_BYTES);
    patch(b);
    return b;
  };
  expectProtocolError(() => decodeClientRequest(Method.Read, head((b) => b.writeUInt32LE(IO_BYTES_MAX + 512, 32))), /exceeds/);
  expectProtocolError(() => decodeClientRequest(Method.Write, head((b) => b.writeUInt32LE(0xfffffe00, 32))), /exceeds/);
  expectProtocolError(() => decodeClientRequest(Method.Read, head((b) => b.writeUInt32LE(4097, 32))), /multiple of 512/);
  expectProtocolError(() => decodeClientRequest(Method.Read, head((b) => b.writeUInt32LE(513, 24))), /sector-aligned/);
  expectProtocolError(() => decodeClientRequest(Method.Read, head((b) => b.writeUInt32LE(0x200000, 28))), /offsetBytes exceeds 2\^53/);
  expectProtocolError(() => decodeClientRequest(Method.Read, head((b) => b.writeUInt32LE(0x1fffff, 28) && b.writeUInt32LE(0xfffffe00, 24))), /overflows/);
  expectProtocolError(() => decodeClientRequest(Method.Read, head((b) => b.writeUInt32LE(0xffffffff, 12))), /pgEpoch exceeds/);
  expectProtocolError(() => decodeClientRequest(Method.Read, head((b) => b.writeUInt32LE(1, 36))), /unknown flags/);
  expectProtocolError(() => decodeClientRequest(Method.Zero, head((b) => b.writeUInt32LE(2, 36))), /unknown flags/);
  expectProtocolError(() => decodeClientRequest(Method.RaftBatch, hex(GOLDEN_READ_BYTES)), /not a client request method/);
  expectProtocolError(() => decodeClientRequest(99, hex(GOLDEN_READ_BYTES)), /not a client request method/);
  // The write's data must be exactly lengthBytes.
  expectProtocolError(() => decodeClientRequest(Method.Write, cat([hex(GOLDEN_WRITE_HEAD), Buffer.alloc(511)])), /truncated at data/);
  // Encoders assert the same rules (a programmer error, not a wire error).
  assert.throws(() => encodeClientRequest({ ...GOLDEN_WRITE, offsetBytes: 100 } as ClientRequest), AssertionError);
  assert.throws(() => encodeClientRequest({ ...GOLDEN_WRITE, data: Buffer.alloc(IO_BYTES_MAX + 512) } as ClientRequest), AssertionError);
  assert.throws(() => encodeClientRequest({ ...GOLDEN_READ, pgEpoch: 2 ** 53 } as ClientRequest), AssertionError);
  assert.throws(() => encodeClientRequest({ ...GOLDEN_READ, poolId: -1 } as ClientRequest), AssertionError);
});

test('reject: responses with unknown status, bad error bodies, bad extents, misfit data', () => {
  expectProtocolError(() => decodeClientResponse(Method.Write, 99, hex(GOLDEN_NOT_LEADER)), /unknown status/);
  expectProtocolError(() => decodeClientResponse(Method.RaftBatch, Status.Ok, Buffer.alloc(0)), /not a method with a response/);
  expectProtocolError(() => decodeClientResponse(Method.Write, Status.Ok, Buffer.alloc(1)), /trailing/);
  expectProtocolError(() => decodeClientResponse(Method.Read, Status.Ok, Buffer.alloc(100)), /multiple of 512/);
  expectProtocolError(() => decodeClientResponse(Method.Read, Status.Ok, Buffer.alloc(IO_BYTES_MAX + 512)), /exceeds/);
  const body = (patch: (b: Buffer) => void, base = GOLDEN_NOT_LEADER): Buffer => {
    const b = hex(base);
    patch(b);
    return b;
  };
  expectProtocolError(() => decodeClientResponse(Method.Write, 1, body((b) => b.writeUInt32LE(4, 0))), /unknown flags/);
  expectProtocolError(() => decodeClientResponse(Method.Write, 1, body((b) => b.writeUInt32LE(0, 0))), /leaderHint set but flagged absent/);
  expectProtocolError(() => decodeClientResponse(Method.Write, 2, body((b) => b.writeUInt32LE(0, 0), GOLDEN_STALE_EPOCH)), /pgEpoch set but flagged absent/);
  expectProtocolError(() => decodeClientResponse(Method.Write, 1, body((b) => b.writeUInt32LE(0xffffffff, 4))), /exceeds 1024/);
  expectProtocolError(() => decodeClientResponse(Method.Write, 1, body((b) => b.writeUInt32LE(11, 4))), /truncated at message/);
  expectProtocolError(() => decodeClientResponse(Method.Write, 1, body((b) => (b[24] = 0xff))), /UTF-8/);
  expectProtocolError(() => decodeClientResponse(Method.Write, 1, body((b) => (b[24] = 0xc3))), /UTF-8/); // a lead byte without its continuation
  // A BOM is message content: kept, so the bytes re-encode the same.
  const bom = decodeClientResponse(Method.Write, 1, hex('00000000 03000000 0000000000000000 0000000000000000 efbbbf'));
  assert.deepEqual(cat(encodeClientResponse(Method.Write, bom).parts), hex('00000000 03000000 0000000000000000 0000000000000000 efbbbf'));

  const ext = (patch: (b: Buffer) => void): Buffer => {
    const b = hex(GOLDEN_EXTENTS);
    patch(b);
    return b;
  };
  expectProtocolError(() => decodeClientResponse(Method.BlockStatus, 0, ext((b) => b.writeUInt32LE(0xffffffff, 0))), /exceed/);
  expectProtocolError(() => decodeClientResponse(Method.BlockStatus, 0, ext((b) => b.writeUInt32LE(4, 0))), /do not fill/);
  expectProtocolError(() => decodeClientResponse(Method.BlockStatus, 0, ext((b) => b.writeUInt32LE(1, 4))), /reserved is not zero/);
  expectProtocolError(() => decodeClientResponse(Method.BlockStatus, 0, ext((b) => b.writeUInt32LE(0, 8))), /positive multiple/);
  expectProtocolError(() => decodeClientResponse(Method.BlockStatus, 0, ext((b) => b.writeUInt32LE(100, 8))), /positive multiple/);
  expectProtocolError(() => decodeClientResponse(Method.BlockStatus, 0, ext((b) => b.writeUInt32LE(4, 12))), /unknown flags/);
  expectProtocolError(() => decodeClientResponse(Method.BlockStatus, 0, ext((b) => b.writeUInt32LE(IO_BYTES_MAX, 16))), /more than/);
});

test('error messages: longer than 1024 bytes are cut at a character boundary', () => {
  const long = 'a' + 'é'.repeat(600); // 1201 bytes; byte 1024 is the middle of an é
  const enc = encodeClientResponse(Method.Read, { status: Status.Io, message: long });
  const back = decodeClientResponse(Method.Read, Status.Io, cat(enc.parts)) as { message: string };
  assert.equal(Buffer.byteLength(back.message), 1023);
  assert.equal(back.message, long.slice(0, 1 + 511));
  const exact = 'x'.repeat(ERROR_MESSAGE_BYTES_MAX);
  assert.equal((decodeClientResponse(Method.Read, Status.Io, cat(encodeClientResponse(Method.Read, { status: Status.Io, message: exact }).parts)) as { message: string }).message, exact);
});

function batchBytes(msg: Message, fromOsd = msg.type === 'hup' ? 1 : msg.from): Buffer {
  return cat(encodeRaftBatch({ fromOsd, envelopes: [{ poolId: 1, pg: 2, pgEpoch: 3, msg }] }));
}

/** Offset of the raft message head inside batchBytes(). */
const MSG_AT = 16 + 16;

test('reject: hup is never sent (encoder assertion; no wire code), unknown types and flags', () => {
  assert.throws(() => encodeRaftBatch({ fromOsd: 1, envelopes: [{ poolId: 0, pg: 0, pgEpoch: 0, msg: { type: 'hup', from: 1, to: 1, term: 1 } }] }), AssertionError);
  assert.throws(() => raftEnvelopeBytes({ poolId: 0, pg: 0, pgEpoch: 0, msg: { type: 'hup', from: 1, to: 1, term: 1 } }), AssertionError);
  const b = batchBytes({ type: 'voteResp', from: 2, to: 1, term: 3, reject: true });
  for (const code of [0, 8, 255]) {
    const x = Buffer.from(b);
    x[MSG_AT] = code;
    expectProtocolError(() => decodeRaftBatch(x), /unknown raft message type/);
  }
  const x = Buffer.from(b);
  x[MSG_AT + 1] = 8;
  expectProtocolError(() => decodeRaftBatch(x), /unknown flags/);
  x[MSG_AT + 1] = 2; // "removed" without "reject"
  expectProtocolError(() => decodeRaftBatch(x), /removed without reject/);
  const app0 = batchBytes({ type: 'appResp', from: 2, to: 1, term: 3, reject: true, index: 1, rejectHint: 0, hintTerm: 0 });
  app0[MSG_AT + 1] = 3; // "removed" is for voteResp only
  expectProtocolError(() => decodeRaftBatch(app0), /unknown flags/);
  const hb = batchBytes({ type: 'heartbeat', from: 1, to: 2, term: 3, commit: 1, ctx: 0 });
  hb[MSG_AT + 1] = 1; // reject bit on a heartbeat
  expectProtocolError(() => decodeRaftBatch(hb), /unknown flags/);
  hb[MSG_AT + 1] = 4; // pre-vote bit on a heartbeat
  expectProtocolError(() => decodeRaftBatch(hb), /unknown flags/);
});

test('reject: raft invariants the core asserts on never pass the decoder', () => {
  const app = (entries: Array<{ term: number; index: number }>, prevLogIndex = 10, prevLogTerm = 2, term = 5): Buffer => {
    // Built with valid entries, then patched, because the encoder refuses invalid ones.
    const valid: Message = {
      type: 'app',
      from: 1,
      to: 2,
      term,
      prevLogIndex,
      prevLogTerm,
      commit: 0,
      entries: entries.map((_e, k) => ({ term: prevLogTerm, index: prevLogIndex + 1 + k, data: new Uint8Array(0) })),
    };
    const b = batchBytes(valid);
    entries.forEach((e, k) => {
      const at = MSG_AT + 32 + 32 + k * 24;
      b.writeUInt32LE(e.term, at);
      b.writeUInt32LE(e.index, at + 8);
    });
    return b;
  };
  decodeRaftBatch(app([{ term: 2, index: 11 }, { term: 5, index: 12 }]));
  expectProtocolError(() => decodeRaftBatch(app([{ term: 2, index: 11 }, { term: 2, index: 13 }])), /contiguous/);
  expectProtocolError(() => decodeRaftBatch(app([{ term: 2, index: 12 }])), /contiguous/);
  expectProtocolError(() => decodeRaftBatch(app([{ term: 3, index: 11 }, { term: 2, index: 12 }])), /below the previous/);
  expectProtocolError(() => decodeRaftBatch(app([{ term: 1, index: 11 }])), /below the previous/);
  expectProtocolError(() => decodeRaftBatch(app([{ term: 6, index: 11 }])), /above the message term/);
  // prevLogTerm above the message term; vote's lastLogTerm likewise.
  const prev = batchBytes({ type: 'app', from: 1, to: 2, term: 5, prevLogIndex: 1, prevLogTerm: 5, commit: 0, entries: [] });
  prev.writeUInt32LE(6, MSG_AT + 32 + 8);
  expectProtocolError(() => decodeRaftBatch(prev), /prevLogTerm 6 above term 5/);
  // Node ids are positive; the batch's messages come from its fromOsd.
  const zeroFrom = batchBytes({ type: 'heartbeatResp', from: 1, to: 2, term: 1, ctx: 0 });
  zeroFrom.writeUInt32LE(0, MSG_AT + 8);
  expectProtocolError(() => decodeRaftBatch(zeroFrom));
  expectProtocolError(() => decodeRaftBatch(batchBytes({ type: 'heartbeatResp', from: 1, to: 2, term: 1, ctx: 0 }, 1).fill(0, 0, 8)), /fromOsd is 0/);
  const other = batchBytes({ type: 'heartbeatResp', from: 1, to: 2, term: 1, ctx: 0 });
  other.writeUInt32LE(3, 0);
  expectProtocolError(() => decodeRaftBatch(other), /in a batch from OSD 3/);
  assert.throws(() => batchBytes({ type: 'heartbeatResp', from: 1, to: 2, term: 1, ctx: 0 }, 3), AssertionError);
  // Snapshot conf: no voter, duplicates, zero ids, too many.
  const snap = (voters: number[], learners: number[]): Buffer => {
    const b = batchBytes({ type: 'snap', from: 1, to: 2, term: 5, snapshot: { index: 9, term: 5, conf: { voters: voters.map((_v, i) => 100 + i), learners: learners.map((_v, i) => 200 + i) } } });
    [...voters, ...learners].forEach((id, i) => b.writeUInt32LE(id, MSG_AT + 32 + 24 + 8 * i));
    return b;
  };
  decodeRaftBatch(snap([1, 2], [3]));
  expectProtocolError(() => decodeRaftBatch(snap([1, 2], [2])), /twice/);
  expectProtocolError(() => decodeRaftBatch(snap([1, 0], [])), /not a positive/);
  const noVoter = snap([1], [3]);
  noVoter.writeUInt32LE(0, MSG_AT + 32 + 16);
  noVoter.writeUInt32LE(2, MSG_AT + 32 + 20);
  expectProtocolError(() => decodeRaftBatch(noVoter), /no voter/);
  const tooMany = snap([1], []);
  tooMany.writeUInt32LE(300, MSG_AT + 32 + 16);
  expectProtocolError(() => decodeRaftBatch(tooMany), /exceed 256/);
  assert.throws(() => batchBytes({ type: 'snap', from: 1, to: 2, term: 5, snapshot: { index: 9, term: 5, conf: { voters: [], learners: [] } } }), AssertionError);
});

test('reject: counts checked against the bytes left and the limits before any work', () => {
  const b = hex(GOLDEN_BATCH_BYTES);
  for (const [count, pattern] of [
    [0xffffffff, /exceed 65536/],
    [RAFT_BATCH_ENVELOPES_MAX + 1, /exceed 65536/],
    [RAFT_BATCH_ENVELOPES_MAX, /cannot fit/],
    [3, /cannot fit|truncated/],
  ] as const) {
    const x = Buffer.from(b);
    x.writeUInt32LE(count, 8);
    expectProtocolError(() => decodeRaftBatch(x), pattern);
  }
  // entryCount of the app (second envelope): body starts after 16 + (16+32+24) + 16 + 32.
  const entryCountAt = 16 + 16 + 32 + 24 + 16 + 32 + 24;
  assert.equal(b.readUInt32LE(entryCountAt), 2);
  for (const count of [0xffffffff, 3, 1]) {
    const x = Buffer.from(b);
    x.writeUInt32LE(count, entryCountAt);
    expectProtocolError(() => decodeRaftBatch(x));
  }
  // bodyBytes larger or smaller than the body.
  for (const bodyBytes of [0xffffffff, 86, 84, 0]) {
    const x = Buffer.from(b);
    x.writeUInt32LE(bodyBytes, 16 + 16 + 32 + 24 + 16 + 4);
    expectProtocolError(() => decodeRaftBatch(x));
  }
  // An entry's dataBytes reaching past the message body.
  const x = Buffer.from(b);
  x.writeUInt32LE(0xfffffff0, entryCountAt + 8 + 20);
  expectProtocolError(() => decodeRaftBatch(x), /truncated at entry data/);
});

test('reject: snapshot chunks (snap in a middle chunk, a non-snap message, data over the chunk limit, misaligned items)', () => {
  const golden = cat([hex(GOLDEN_CHUNK_HEAD), DATA_5A]);
  const noDone = Buffer.from(golden);
  noDone.writeUInt32LE(2, 40);
  expectProtocolError(() => decodeSnapshotChunk(noDone), /neither the first nor the last/);
  // The first chunk (seq 0) may carry it: the receiver checks it before dropping its data.
  const first = Buffer.from(noDone);
  first.writeBigUInt64LE(0n, 32);
  const c = decodeSnapshotChunk(first);
  assert.deepEqual([c.seq, c.done, c.snap?.snapshot.index], [0, false, 12]);
  const notSnap = Buffer.from(golden);
  notSnap[48] = 6; // heartbeatResp (its 8-byte body does not match 48 bodyBytes either way)
  expectProtocolError(() => decodeSnapshotChunk(notSnap));
  const flags = Buffer.from(golden);
  flags.writeUInt32LE(7, 40);
  expectProtocolError(() => decodeSnapshotChunk(flags), /unknown flags/);
  const itemAt = 48 + 32 + 48;
  const misaligned = Buffer.from(golden);
  misaligned.writeUInt32LE(100, itemAt + 8);
  expectProtocolError(() => decodeSnapshotChunk(misaligned), /sector-aligned/);
  const count = Buffer.from(golden);
  count.writeUInt32LE(SNAPSHOT_CHUNK_ITEMS_MAX, 44);
  expectProtocolError(() => decodeSnapshotChunk(count), /cannot fit/);
  // Two items of 3 MiB: over SNAPSHOT_CHUNK_BYTES_MAX, refused at the second item's length.
  const item = (data: Buffer): Buffer => cat([hex('0100000000000000 0000000000000000'), Buffer.from(new Uint32Array([data.length, 0]).buffer), data]);
  const big = Buffer.alloc(3 * 1024 * 1024);
  const head = hex('01000000 02000000 0300000000000000 0500000000000000 0100000000000000 0000000000000000 00000000 02000000');
  decodeSnapshotChunk(cat([head.fill(0, 44, 48).fill(1, 44, 45), item(big)]));
  const two = cat([hex('01000000 02000000 0300000000000000 0500000000000000 0100000000000000 0000000000000000 00000000 02000000'), item(big), item(big)]);
  expectProtocolError(() => decodeSnapshotChunk(two), /data exceeds/);
  // Item flags (bit 0: a zero range, no data follows); others are refused.
  const zeroItem = (lengthBytes: number, flags: number): Buffer => cat([hex('0100000000000000 0000000000000000'), Buffer.from(new Uint32Array([lengthBytes, flags]).buffer)]);
  const oneItemHead = head.fill(0, 44, 48).fill(1, 44, 45);
  assert.deepEqual(decodeSnapshotChunk(cat([oneItemHead, zeroItem(8192, 1)])).items, [{ volumeId: 1, offsetBytes: 0, zeroBytes: 8192 }]);
  expectProtocolError(() => decodeSnapshotChunk(cat([oneItemHead, zeroItem(8192, 2)])), /item 0: unknown flags 0x2/);
  expectProtocolError(() => decodeSnapshotChunk(cat([oneItemHead, zeroItem(0, 1)])), /empty zero range/);
  expectProtocolError(() => decodeSnapshotChunk(cat([oneItemHead, zeroItem(SNAPSHOT_CHUNK_BYTES_MAX + 512, 1)])), /exceeds/);
  // A zero item's length is not followed by data: bytes after it are trailing garbage.
  expectProtocolError(() => decodeSnapshotChunk(cat([oneItemHead, zeroItem(512, 1), Buffer.alloc(512)])));
  const manyHead = Buffer.from(oneItemHead);
  manyHead.writeUInt32LE(SNAPSHOT_CHUNK_ITEMS_MAX + 1, 44);
  expectProtocolError(() => decodeSnapshotChunk(cat([manyHead, ...Array.from({ length: SNAPSHOT_CHUNK_ITEMS_MAX + 1 }, () => zeroItem(512, 1))])), /items exceed/);
  assert.throws(() => encodeSnapshotChunk({ ...GOLDEN_CHUNK, items: [{ volumeId: 1, offsetBytes: 0, zeroBytes: 0 }] }), AssertionError);
  assert.throws(() => encodeSnapshotChunk({ ...GOLDEN_CHUNK, done: false }), AssertionError);
  assert.throws(() => encodeSnapshotChunk({ ...GOLDEN_CHUNK, items: [{ volumeId: 1, offsetBytes: 0, data: big }, { volumeId: 1, offsetBytes: 0, data: big }] }), AssertionError);
});

test('canonical: every single-byte change of every golden payload is refused or re-encodes to exactly those bytes', () => {
  const cases: Array<[Buffer, (b: Buffer) => unknown, (v: unknown) => Buffer]> = [
    [cat([hex(GOLDEN_WRITE_HEAD), DATA_AB.subarray(0, 0)]).fill(0, 32, 36), (b) => decodeClientRequest(Method.Write, b), (v) => cat(encodeClientRequest(v as ClientRequest))],
    [hex(GOLDEN_ZERO_BYTES), (b) => decodeClientRequest(Method.Zero, b), (v) => cat(encodeClientRequest(v as ClientRequest))],
    [hex(GOLDEN_NOT_LEADER), (b) => decodeClientResponse(Method.Write, Status.NotLeader, b), (v) => cat(encodeClientResponse(Method.Write, v as ClientResponse).parts)],
    [hex(GOLDEN_EXTENTS), (b) => decodeClientResponse(Method.BlockStatus, Status.Ok, b), (v) => cat(encodeClientResponse(Method.BlockStatus, v as ClientResponse).parts)],
    [hex(GOLDEN_BATCH_BYTES), (b) => decodeRaftBatch(b), (v) => cat(encodeRaftBatch(v as RaftBatch))],
    [cat(encodeRaftBatch({ fromOsd: 1, envelopes: allRaftMessages().filter((m) => m.from === 1).map((msg) => ({ poolId: 0, pg: 0, pgEpoch: 0, msg })) })), (b) => decodeRaftBatch(b), (v) => cat(encodeRaftBatch(v as RaftBatch))],
    [cat([hex(GOLDEN_CHUNK_HEAD), DATA_5A]), (b) => decodeSnapshotChunk(b), (v) => cat(encodeSnapshotChunk(v as SnapshotChunk))],
  ];
  let accepted = 0;
  for (const [golden, decode, encode] of cases) {
    for (let at = 0; at < golden.length; at++) {
      for (const change of [(x: number) => x ^ 0x01, (x: number) => x ^ 0x80, () => 0x00, () => 0xff]) {
        const b = Buffer.from(golden);
        b[at] = change(b[at]);
        let v: unknown;
        try {
          v = decode(b);
        } catch (err) {
          assert.ok(err instanceof TesseraError && err.code === 'ERR_PROTOCOL', `byte ${at}: ${String(err)}`);
          continue;
        }
        accepted++;
        assert.deepEqual(encode(v), b, `byte ${at} changed to ${b[at]} was accepted but does not re-encode`);
      }
    }
  }
  assert.ok(accepted > 0);
});
