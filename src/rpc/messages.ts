// Pure byte codec of the RPC payloads between gateways and OSDs and between OSDs
// (types in osd/proto.ts, raft messages in raft/types.ts). The frame (frame.ts)
// carries method, request id, status and the crc32c; this file lays out what goes
// in its payload (one raft message is coded by raft-codec.ts, to the layout below).
// No IO, no clock, no JSON.
//
// Encoders return the payload as a list of Buffers for writev: one small head
// buffer (every fixed field, plus data of at most INLINE_DATA_BYTES_MAX bytes) and
// the caller's data Buffers as they are, never copied. `headroomBytes` reserves
// that many zero bytes at the front of the first part so the frame header can be
// written there (headroom.ts): a 4 KiB write costs one 80-byte allocation in all.
// Decoders return subarray views of the payload for data (no copy): they pin the
// payload's memory for as long as they are held.
//
// Wire format: frame version 2 (frame.ts). Little-endian; "u64" fields carry non-negative safe
// integers (≤ 2^53 - 1, refused above); "rsvd" fields are zero. Offsets and data
// lengths are multiples of SECTOR_BYTES (512).
//
// Client request (frame method Read 1, Write 2, Zero 3, BlockStatus 4), 40-byte head:
//    0 u32 poolId        4 u32 pg          8 u64 pgEpoch      16 u64 volumeId
//   24 u64 offsetBytes  32 u32 lengthBytes (≤ IO_BYTES_MAX; Write: data length)
//   36 u32 flags        (Zero: bit 0 mayTrim; no other bit, nor any bit for other methods)
//   40 data             Write only: exactly lengthBytes; nothing after it
//
// Response (the frame's status is the Status): status Ok:
//   Read: the data, nothing else.  Write, Zero, SnapshotChunk: empty.
//   BlockStatus: u32 extentCount (≤ BLOCK_STATUS_EXTENTS_MAX), u32 rsvd, then per extent
//     u32 lengthBytes (> 0, sector multiple; sum ≤ IO_BYTES_MAX), u32 flags (bit 0 hole, bit 1 zero).
// Any other (known) status, the error body:
//    0 u32 flags (bit 0 leaderHint present, bit 1 pgEpoch present)
//    4 u32 messageBytes (≤ ERROR_MESSAGE_BYTES_MAX)   8 u64 leaderHint (0 if absent)
//   16 u64 pgEpoch (0 if absent)   24 message, UTF-8 (the encoder truncates at a character)
//
// RaftBatch (method 10, one-way): u64 fromOsd (> 0), u32 envelopeCount (≤ RAFT_BATCH_ENVELOPES_MAX),
//   u32 rsvd, then envelopes: u32 poolId, u32 pg, u64 pgEpoch, then one raft message:
//    0 u8 type (1 vote, 2 voteResp, 3 app, 4 appResp, 5 heartbeat, 6 heartbeatResp, 7 snap;
//      hup is local-only and has no code)
//    1 u8 flags (bit 0 reject: voteResp and appResp only; bit 1 removed:
//      voteResp with reject only, MsgVoteResp.removed; bit 2 pre: vote and
//      voteResp only, pre-vote)   2 u16 rsvd
//    4 u32 bodyBytes (what follows the 32-byte head)   8 u64 from   16 u64 to   24 u64 term
//   32 body:
//     vote          u64 lastLogIndex, u64 lastLogTerm
//     voteResp      (empty)
//     app           u64 prevLogIndex, u64 prevLogTerm, u64 commit, u32 entryCount, u32 rsvd,
//                   then entries: u64 term, u64 index, u8 type (0 normal, 1 conf), 3 rsvd,
//                   u32 dataBytes, data
//     appResp       u64 index, u64 rejectHint, u64 hintTerm
//     heartbeat     u64 commit, u64 ctx, u64 retain (the leader's lowest peer match;
//                   0 = unknown, decoded as absent)
//     heartbeatResp u64 ctx
//     snap          u64 index, u64 term, u32 voterCount, u32 learnerCount, u64 ids of voters then learners
//
// SnapshotChunk (method 11, request), 48-byte head:
//    0 u32 poolId   4 u32 pg   8 u64 pgEpoch   16 u64 fromOsd (> 0)   24 u64 transferId   32 u64 seq
//   40 u32 flags (bit 0 done, bit 1 snap present: in the done chunk or the first, seq 0)   44 u32 itemCount
//   48 the snap raft message (as above) when present, then items:
//      u64 volumeId, u64 offsetBytes, u32 lengthBytes, u32 flags (bit 0 zero), then data
//      (lengthBytes of it) unless zero; a zero item is a range the sender holds no
//      data for (no bytes follow). Data items' lengths sum to ≤ SNAPSHOT_CHUNK_BYTES_MAX,
//      a zero item is at most that long, itemCount ≤ SNAPSHOT_CHUNK_ITEMS_MAX.
//
// Invariants:
// - decode(bytes) returns a message or throws TesseraError ERR_PROTOCOL; it never reads
//   past the payload, and checks every count against the bytes left (and its limit)
//   before building anything for it.
// - Whatever a decoder accepts, the encoder accepts, and encode(decode(b)) === b: one
//   encoding per value (reserved bits zero, absent fields zero). The other way round,
//   decode(encode(m)) equals m except that an entry's type 'normal' comes back absent
//   (its default) and an over-long error message comes back truncated.
// - The same semantic checks run on both sides (as assertions when encoding, a
//   programmer error; as ERR_PROTOCOL when decoding): what the raft core asserts on
//   (contiguous entries, terms never decreasing) can never reach it from the wire.
import { assert, fail } from '../stdx/assert.js';
import { IO_BYTES_MAX, Method, RAFT_BATCH_ENVELOPES_MAX, SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_CHUNK_ITEMS_MAX, Status } from '../osd/proto.js';
import type {
  ClientRequest,
  ClientResponse,
  ErrorResponse,
  ExtentWire,
  OkResponse,
  RaftBatch,
  RaftEnvelope,
  SnapshotChunk,
  SnapshotItem,
} from '../osd/proto.js';
import type { MsgSnap } from '../raft/types.js';
import { RAFT_MESSAGE_HEAD_BYTES, messageBodyBytes, messageHeadBytes, raftMessageProblem, readMessage, writeMessage } from './raft-codec.js';
import type { WireMessage } from './raft-codec.js';
import { PartsWriter, PayloadReader, assertNoProblem, inlinedBytes, isNodeId, isSafeU64, isU32, refuse } from './wire.js';

export { CONF_MEMBERS_MAX, ENTRY_HEAD_BYTES, RAFT_MESSAGE_HEAD_BYTES, raftMessageProblem } from './raft-codec.js';

export const SECTOR_BYTES = 512;
export const CLIENT_REQUEST_HEAD_BYTES = 40;
export const ERROR_HEAD_BYTES = 24;
/** Longer error messages are truncated by the encoder (at a UTF-8 character boundary). */
export const ERROR_MESSAGE_BYTES_MAX = 1024;
export const BLOCK_STATUS_HEAD_BYTES = 8;
export const EXTENT_BYTES = 8;
/** One extent per sector of the largest request. */
export const BLOCK_STATUS_EXTENTS_MAX = IO_BYTES_MAX / SECTOR_BYTES;
export const RAFT_BATCH_HEAD_BYTES = 16;
export const ENVELOPE_PG_BYTES = 16;
export const SNAPSHOT_CHUNK_HEAD_BYTES = 48;
export const SNAPSHOT_ITEM_HEAD_BYTES = 24;

const ZERO_MAY_TRIM = 1;
const EXTENT_HOLE = 1;
const EXTENT_ZERO = 2;
const ERROR_HAS_LEADER_HINT = 1;
const ERROR_HAS_PG_EPOCH = 2;
const CHUNK_DONE = 1;
const CHUNK_HAS_SNAP = 2;
/** Snapshot item flag: a zero range, no data follows. */
const ITEM_ZERO = 1;

const KNOWN_STATUS = new Set<number>(Object.values(Status));

// ---------------------------------------------------------------------------
// Shared semantic checks: null when valid, else what is wrong.

function rangeProblem(what: string, offsetBytes: number, lengthBytes: number, lengthBytesMax: number): string | null {
  if (!isSafeU64(offsetBytes) || offsetBytes % SECTOR_BYTES !== 0) return `${what}: offsetBytes ${offsetBytes} is not a sector-aligned safe integer`;
  if (!Number.isInteger(lengthBytes) || lengthBytes < 0 || lengthBytes % SECTOR_BYTES !== 0) return `${what}: length ${lengthBytes} is not a multiple of ${SECTOR_BYTES}`;
  if (lengthBytes > lengthBytesMax) return `${what}: length ${lengthBytes} exceeds ${lengthBytesMax}`;
  if (!Number.isSafeInteger(offsetBytes + lengthBytes)) return `${what}: offset + length overflows`;
  return null;
}

function pgRefProblem(what: string, poolId: number, pg: number, pgEpoch: number): string | null {
  if (!isU32(poolId)) return `${what}: poolId ${poolId} is not a u32`;
  if (!isU32(pg)) return `${what}: pg ${pg} is not a u32`;
  if (!isSafeU64(pgEpoch)) return `${what}: pgEpoch ${pgEpoch} is not a non-negative safe integer`;
  return null;
}

export function clientRequestProblem(req: ClientRequest): string | null {
  const what = `client request (method ${req.method})`;
  const p = pgRefProblem(what, req.poolId, req.pg, req.pgEpoch);
  if (p !== null) return p;
  if (!isSafeU64(req.volumeId)) return `${what}: volumeId ${req.volumeId} is not a non-negative safe integer`;
  switch (req.method) {
    case Method.Write:
      return rangeProblem(what, req.offsetBytes, req.data.length, IO_BYTES_MAX);
    case Method.Zero:
      if (typeof req.mayTrim !== 'boolean') return `${what}: mayTrim is not a boolean`;
      return rangeProblem(what, req.offsetBytes, req.lengthBytes, IO_BYTES_MAX);
    case Method.Read:
    case Method.BlockStatus:
      return rangeProblem(what, req.offsetBytes, req.lengthBytes, IO_BYTES_MAX);
    default:
      return `unknown client request method ${(req as { method: number }).method}`;
  }
}

function envelopeProblem(env: RaftEnvelope, fromOsd: number): string | null {
  const p = pgRefProblem('raft envelope', env.poolId, env.pg, env.pgEpoch);
  if (p !== null) return p;
  if (env.msg.type !== 'hup' && env.msg.from !== fromOsd) return `raft envelope from ${env.msg.from} in a batch from OSD ${fromOsd}`;
  return raftMessageProblem(env.msg);
}

export function snapshotChunkProblem(c: SnapshotChunk): string | null {
  const p = pgRefProblem('snapshot chunk', c.poolId, c.pg, c.pgEpoch);
  if (p !== null) return p;
  if (!isNodeId(c.fromOsd)) return `snapshot chunk: fromOsd ${c.fromOsd} is not a positive safe integer`;
  if (!isSafeU64(c.transferId) || !isSafeU64(c.seq)) return 'snapshot chunk: transferId/seq not non-negative safe integers';
  if (typeof c.done !== 'boolean') return 'snapshot chunk: done is not a boolean';
  if (c.snap !== undefined) {
    if (c.snap.type !== 'snap') return `snapshot chunk: carries a raft ${String(c.snap.type)}, not a snap`;
    if (!c.done && c.seq !== 0) return 'snapshot chunk: snap in a chunk that is neither the first nor the last (done)';
    const m = raftMessageProblem(c.snap);
    if (m !== null) return `snapshot chunk: ${m}`;
  }
  if (c.items.length > SNAPSHOT_CHUNK_ITEMS_MAX) return `snapshot chunk: ${c.items.length} items exceed ${SNAPSHOT_CHUNK_ITEMS_MAX}`;
  let totalBytes = 0;
  for (let i = 0; i < c.items.length; i++) {
    const it = c.items[i];
    if (!isSafeU64(it.volumeId)) return `snapshot chunk item ${i}: volumeId ${it.volumeId} is not a non-negative safe integer`;
    if ((it.data === undefined) === (it.zeroBytes === undefined)) return `snapshot chunk item ${i}: needs exactly one of data and zeroBytes`;
    const lengthBytes = it.data !== undefined ? it.data.length : it.zeroBytes;
    const r = rangeProblem(`snapshot chunk item ${i}`, it.offsetBytes, lengthBytes, SNAPSHOT_CHUNK_BYTES_MAX);
    if (r !== null) return r;
    if (it.zeroBytes === 0) return `snapshot chunk item ${i}: empty zero range`;
    if (it.data !== undefined) totalBytes += it.data.length;
    if (totalBytes > SNAPSHOT_CHUNK_BYTES_MAX) return `snapshot chunk: data exceeds ${SNAPSHOT_CHUNK_BYTES_MAX} bytes`;
  }
  return null;
}

function extentsProblem(extents: readonly ExtentWire[]): string | null {
  if (extents.length > BLOCK_STATUS_EXTENTS_MAX) return `block status: ${extents.length} extents exceed ${BLOCK_STATUS_EXTENTS_MAX}`;
  let totalBytes = 0;
  for (let i = 0; i < extents.length; i++) {
    const e = extents[i];
    if (!Number.isInteger(e.lengthBytes) || e.lengthBytes <= 0 || e.lengthBytes % SECTOR_BYTES !== 0) return `block status extent ${i}: length ${e.lengthBytes} is not a positive multiple of ${SECTOR_BYTES}`;
    if (typeof e.hole !== 'boolean' || typeof e.zero !== 'boolean') return `block status extent ${i}: hole/zero are not booleans`;
    totalBytes += e.lengthBytes;
    if (totalBytes > IO_BYTES_MAX) return `block status: extents cover more than ${IO_BYTES_MAX} bytes`;
  }
  return null;
}

// ---------------------------------------------------------------------------
// Client requests

export function encodeClientRequest(req: ClientRequest, headroomBytes = 0): Buffer[] {
  assertNoProblem(clientRequestProblem(req));
  const isWrite = req.method === Method.Write;
  const w = new PartsWriter(CLIENT_REQUEST_HEAD_BYTES + (isWrite ? inlinedBytes(req.data.length) : 0), headroomBytes);
  w.u32(req.poolId);
  w.u32(req.pg);
  w.u64(req.pgEpoch);
  w.u64(req.volumeId);
  w.u64(req.offsetBytes);
  w.u32(isWrite ? req.data.length : req.lengthBytes);
  w.u32(req.method === Method.Zero && req.mayTrim ? ZERO_MAY_TRIM : 0);
  if (isWrite) w.data(req.data);
  return w.finish();
}

export function decodeClientRequest(method: number, payload: Buffer): ClientRequest {
  const r: PayloadReader = new PayloadReader(payload, `client request (method ${method})`);
  if (method !== Method.Read && method !== Method.Write && method !== Method.Zero && method !== Method.BlockStatus) {
    r.fail('not a client request method');
  }
  const poolId = r.u32('poolId');
  const pg = r.u32('pg');
  const pgEpoch = r.u64('pgEpoch');
  const volumeId = r.u64('volumeId');
  const offsetBytes = r.u64('offsetBytes');
  const lengthBytes = r.u32('lengthBytes');
  const flags = r.u32('flags');
  if ((flags & ~(method === Method.Zero ? ZERO_MAY_TRIM : 0)) !== 0) r.fail(`unknown flags 0x${flags.toString(16)}`);
  // Checked before the data is sliced, so a huge lengthBytes is refused as such.
  refuse(rangeProblem(`client request (method ${method})`, offsetBytes, lengthBytes, IO_BYTES_MAX));
  let req: ClientRequest;
  switch (method) {
    case Method.Write:
      req = { method, poolId, pg, pgEpoch, volumeId, offsetBytes, data: r.bytes(lengthBytes, 'data') };
      break;
    case Method.Zero:
      req = { method, poolId, pg, pgEpoch, volumeId, offsetBytes, lengthBytes, mayTrim: (flags & ZERO_MAY_TRIM) !== 0 };
      break;
    case Method.Read:
      req = { method, poolId, pg, pgEpoch, volumeId, offsetBytes, lengthBytes };
      break;
    default:
      req = { method: Method.BlockStatus, poolId, pg, pgEpoch, volumeId, offsetBytes, lengthBytes };
  }
  r.done();
  return req;
}

// ---------------------------------------------------------------------------
// Responses

export interface EncodedResponse {
  /** The frame status. */
  status: Status;
  parts: Buffer[];
}

/** Bytes of `message` as UTF-8, cut at a character boundary to at most ERROR_MESSAGE_BYTES_MAX. */
function errorMessageBytes(message: string): Buffer {
  const b = Buffer.from(message, 'utf8');
  if (b.length <= ERROR_MESSAGE_BYTES_MAX) return b;
  let end = ERROR_MESSAGE_BYTES_MAX;
  while (end > 0 && (b[end] & 0xc0) === 0x80) end--; // b[end] is a continuation byte: back up to its lead byte
  return b.subarray(0, end);
}

/** The response to a request of `method` (Read, Write, Zero, BlockStatus or SnapshotChunk). */
export function encodeClientResponse(method: number, resp: ClientResponse, headroomBytes = 0): EncodedResponse {
  if (resp.status !== Status.Ok) return { status: resp.status, parts: encodeErrorBody(resp, headroomBytes) };
  const ok: OkResponse = resp;
  switch (method) {
    case Method.Read: {
      assert(ok.data !== undefined && ok.extents === undefined, 'a Read response carries data only');
      assertNoProblem(rangeProblem('read response', 0, ok.data.length, IO_BYTES_MAX));
      const w = new PartsWriter(inlinedBytes(ok.data.length), headroomBytes);
      w.data(ok.data);
      return { status: Status.Ok, parts: w.finish() };
    }
    case Method.BlockStatus: {
      assert(ok.extents !== undefined && ok.data === undefined, 'a BlockStatus response carries extents only');
      assertNoProblem(extentsProblem(ok.extents));
      const w = new PartsWriter(BLOCK_STATUS_HEAD_BYTES + EXTENT_BYTES * ok.extents.length, headroomBytes);
      w.u32(ok.extents.length);
      w.zeros(4);
      for (const e of ok.extents) {
        w.u32(e.lengthBytes);
        w.u32((e.hole ? EXTENT_HOLE : 0) | (e.zero ? EXTENT_ZERO : 0));
      }
      return { status: Status.Ok, parts: w.finish() };
    }
    case Method.Write:
    case Method.Zero:
    case Method.SnapshotChunk:
      if (!(ok.data === undefined && ok.extents === undefined)) fail(`a method ${method} response carries nothing`);
      return { status: Status.Ok, parts: new PartsWriter(0, headroomBytes).finish() };
    default:
      fail(`method ${method} has no response`);
  }
}

function encodeErrorBody(resp: ErrorResponse, headroomBytes: number): Buffer[] {
  if (!(KNOWN_STATUS.has(resp.status) && (resp.status as number) !== Status.Ok)) fail(`unknown error status ${resp.status}`);
  const message = errorMessageBytes(resp.message);
  const w = new PartsWriter(ERROR_HEAD_BYTES + inlinedBytes(message.length), headroomBytes);
  w.u32((resp.leaderHint !== undefined ? ERROR_HAS_LEADER_HINT : 0) | (resp.pgEpoch !== undefined ? ERROR_HAS_PG_EPOCH : 0));
  w.u32(message.length);
  w.u64(resp.leaderHint ?? 0);
  w.u64(resp.pgEpoch ?? 0);
  w.data(message);
  return w.finish();
}

const UTF8_STRICT = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export function decodeClientResponse(method: number, status: number, payload: Buffer): ClientResponse {
  const r: PayloadReader = new PayloadReader(payload, `response (method ${method}, status ${status})`);
  if (!KNOWN_STATUS.has(status)) r.fail('unknown status');
  if (status !== Status.Ok) {
    const flags = r.u32('flags');
    if ((flags & ~(ERROR_HAS_LEADER_HINT | ERROR_HAS_PG_EPOCH)) !== 0) r.fail(`unknown flags 0x${flags.toString(16)}`);
    const messageBytes = r.u32('messageBytes');
    if (messageBytes > ERROR_MESSAGE_BYTES_MAX) r.fail(`message of ${messageBytes} bytes exceeds ${ERROR_MESSAGE_BYTES_MAX}`);
    const leaderHint = r.u64('leaderHint');
    const pgEpoch = r.u64('pgEpoch');
    if ((flags & ERROR_HAS_LEADER_HINT) === 0 && leaderHint !== 0) r.fail('leaderHint set but flagged absent');
    if ((flags & ERROR_HAS_PG_EPOCH) === 0 && pgEpoch !== 0) r.fail('pgEpoch set but flagged absent');
    const bytes = r.bytes(messageBytes, 'message');
    r.done();
    let message: string;
    try {
      message = UTF8_STRICT.decode(bytes);
    } catch {
      r.fail('message is not valid UTF-8');
    }
    const resp: ErrorResponse = { status: status as ErrorResponse['status'], message };
    if ((flags & ERROR_HAS_LEADER_HINT) !== 0) resp.leaderHint = leaderHint;
    if ((flags & ERROR_HAS_PG_EPOCH) !== 0) resp.pgEpoch = pgEpoch;
    return resp;
  }
  switch (method) {
    case Method.Read:
      refuse(rangeProblem('read response', 0, payload.length, IO_BYTES_MAX));
      return { status: Status.Ok, data: payload };
    case Method.BlockStatus: {
      const count = r.u32('extentCount');
      r.zeros(4, 'reserved');
      if (count > BLOCK_STATUS_EXTENTS_MAX) r.fail(`${count} extents exceed ${BLOCK_STATUS_EXTENTS_MAX}`);
      if (count * EXTENT_BYTES !== r.remaining()) r.fail(`${count} extents do not fill ${r.remaining()} bytes`);
      const extents: ExtentWire[] = [];
      for (let i = 0; i < count; i++) {
        const lengthBytes = r.u32('extent lengthBytes');
        const flags = r.u32('extent flags');
        if ((flags & ~(EXTENT_HOLE | EXTENT_ZERO)) !== 0) r.fail(`extent ${i}: unknown flags 0x${flags.toString(16)}`);
        extents.push({ lengthBytes, hole: (flags & EXTENT_HOLE) !== 0, zero: (flags & EXTENT_ZERO) !== 0 });
      }
      r.done();
      refuse(extentsProblem(extents));
      return { status: Status.Ok, extents };
    }
    case Method.Write:
    case Method.Zero:
    case Method.SnapshotChunk:
      r.done();
      return { status: Status.Ok };
    default:
      return r.fail('not a method with a response');
  }
}

// ---------------------------------------------------------------------------
// RaftBatch

/** Wire bytes of one envelope in a RaftBatch: lets a sender split batches below the frame limit. */
export function raftEnvelopeBytes(env: RaftEnvelope): number {
  assert(env.msg.type !== 'hup', 'hup is local-only and is never sent');
  return ENVELOPE_PG_BYTES + RAFT_MESSAGE_HEAD_BYTES + messageBodyBytes(env.msg);
}

export function encodeRaftBatch(batch: RaftBatch, headroomBytes = 0): Buffer[] {
  if (!(isNodeId(batch.fromOsd))) fail(`fromOsd ${batch.fromOsd} is not a positive safe integer`);
  if (!(batch.envelopes.length <= RAFT_BATCH_ENVELOPES_MAX)) fail(`${batch.envelopes.length} envelopes exceed ${RAFT_BATCH_ENVELOPES_MAX}`);
  let headBytes = RAFT_BATCH_HEAD_BYTES;
  for (const env of batch.envelopes) {
    assertNoProblem(envelopeProblem(env, batch.fromOsd));
    headBytes += ENVELOPE_PG_BYTES + messageHeadBytes(env.msg as WireMessage);
  }
  const w = new PartsWriter(headBytes, headroomBytes);
  w.u64(batch.fromOsd);
  w.u32(batch.envelopes.length);
  w.zeros(4);
  for (const env of batch.envelopes) {
    w.u32(env.poolId);
    w.u32(env.pg);
    w.u64(env.pgEpoch);
    writeMessage(w, env.msg as WireMessage);
  }
  return w.finish();
}

export function decodeRaftBatch(payload: Buffer): RaftBatch {
  const r: PayloadReader = new PayloadReader(payload, 'raft batch');
  const fromOsd = r.u64('fromOsd');
  if (!isNodeId(fromOsd)) r.fail('fromOsd is 0');
  const count = r.u32('envelopeCount');
  r.zeros(4, 'reserved');
  if (count > RAFT_BATCH_ENVELOPES_MAX) r.fail(`${count} envelopes exceed ${RAFT_BATCH_ENVELOPES_MAX}`);
  if (count > Math.floor(r.remaining() / (ENVELOPE_PG_BYTES + RAFT_MESSAGE_HEAD_BYTES))) r.fail(`${count} envelopes cannot fit in ${r.remaining()} bytes`);
  const envelopes: RaftEnvelope[] = [];
  for (let i = 0; i < count; i++) {
    const poolId = r.u32('poolId');
    const pg = r.u32('pg');
    const pgEpoch = r.u64('pgEpoch');
    const env: RaftEnvelope = { poolId, pg, pgEpoch, msg: readMessage(r) };
    refuse(envelopeProblem(env, fromOsd));
    envelopes.push(env);
  }
  r.done();
  return { fromOsd, envelopes };
}

// ---------------------------------------------------------------------------
// SnapshotChunk

export function encodeSnapshotChunk(c: SnapshotChunk, headroomBytes = 0): Buffer[] {
  assertNoProblem(snapshotChunkProblem(c));
  let headBytes = SNAPSHOT_CHUNK_HEAD_BYTES + (c.snap !== undefined ? messageHeadBytes(c.snap) : 0);
  for (const it of c.items) headBytes += SNAPSHOT_ITEM_HEAD_BYTES + (it.data !== undefined ? inlinedBytes(it.data.length) : 0);
  const w = new PartsWriter(headBytes, headroomBytes);
  w.u32(c.poolId);
  w.u32(c.pg);
  w.u64(c.pgEpoch);
  w.u64(c.fromOsd);
  w.u64(c.transferId);
  w.u64(c.seq);
  w.u32((c.done ? CHUNK_DONE : 0) | (c.snap !== undefined ? CHUNK_HAS_SNAP : 0));
  w.u32(c.items.length);
  if (c.snap !== undefined) writeMessage(w, c.snap);
  for (const it of c.items) {
    w.u64(it.volumeId);
    w.u64(it.offsetBytes);
    if (it.data !== undefined) {
      w.u32(it.data.length);
      w.u32(0);
      w.data(it.data);
    } else {
      w.u32(it.zeroBytes);
      w.u32(ITEM_ZERO);
    }
  }
  return w.finish();
}

export function decodeSnapshotChunk(payload: Buffer): SnapshotChunk {
  const r: PayloadReader = new PayloadReader(payload, 'snapshot chunk');
  const poolId = r.u32('poolId');
  const pg = r.u32('pg');
  const pgEpoch = r.u64('pgEpoch');
  const fromOsd = r.u64('fromOsd');
  const transferId = r.u64('transferId');
  const seq = r.u64('seq');
  const flags = r.u32('flags');
  if ((flags & ~(CHUNK_DONE | CHUNK_HAS_SNAP)) !== 0) r.fail(`unknown flags 0x${flags.toString(16)}`);
  const count = r.u32('itemCount');
  let snap: MsgSnap | undefined;
  if ((flags & CHUNK_HAS_SNAP) !== 0) {
    const m = readMessage(r);
    if (m.type !== 'snap') r.fail(`carries a raft ${m.type}, not a snap`);
    snap = m;
  }
  if (count > SNAPSHOT_CHUNK_ITEMS_MAX) r.fail(`${count} items exceed ${SNAPSHOT_CHUNK_ITEMS_MAX}`);
  if (count > Math.floor(r.remaining() / SNAPSHOT_ITEM_HEAD_BYTES)) r.fail(`${count} items cannot fit in ${r.remaining()} bytes`);
  const items: SnapshotItem[] = [];
  let totalBytes = 0;
  for (let i = 0; i < count; i++) {
    const volumeId = r.u64('item volumeId');
    const offsetBytes = r.u64('item offsetBytes');
    const lengthBytes = r.u32('item lengthBytes');
    const itemFlags = r.u32('item flags');
    if ((itemFlags & ~ITEM_ZERO) !== 0) r.fail(`item ${i}: unknown flags 0x${itemFlags.toString(16)}`);
    if ((itemFlags & ITEM_ZERO) !== 0) {
      items.push({ volumeId, offsetBytes, zeroBytes: lengthBytes });
      continue;
    }
    totalBytes += lengthBytes;
    if (totalBytes > SNAPSHOT_CHUNK_BYTES_MAX) r.fail(`data exceeds ${SNAPSHOT_CHUNK_BYTES_MAX} bytes`);
    items.push({ volumeId, offsetBytes, data: r.bytes(lengthBytes, 'item data') });
  }
  r.done();
  const chunk: SnapshotChunk = { poolId, pg, pgEpoch, fromOsd, transferId, seq, done: (flags & CHUNK_DONE) !== 0, items };
  if (snap !== undefined) chunk.snap = snap;
  refuse(snapshotChunkProblem(chunk));
  return chunk;
}
