// Seeded fuzz of the RPC message decoders (messages.ts): random valid payloads of
// every kind, mutated (bit flips, overwritten runs, u32 fields set to edge values,
// truncation, insertion, deletion, splices from other payloads) and decoded, also
// by the wrong decoder. Each decode must either return a value that re-encodes to
// exactly the bytes given (the codec is canonical) or throw TesseraError
// ERR_PROTOCOL; anything else (RangeError, AssertionError, a value that does not
// re-encode) fails with the seed. Replay a run with TESSERA_SEED=<seed>.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TesseraError } from '../stdx/errors.js';
import { Prng, seedFromEnv } from '../stdx/prng.js';
import { Method, Status } from '../osd/proto.js';
import type { ClientRequest, ClientResponse, ExtentWire, RaftBatch, RaftEnvelope, SnapshotChunk, SnapshotItem } from '../osd/proto.js';
import type { Entry, Message } from '../raft/types.js';
import {
  decodeClientRequest,
  decodeClientResponse,
  decodeRaftBatch,
  decodeSnapshotChunk,
  encodeClientRequest,
  encodeClientResponse,
  encodeRaftBatch,
  encodeSnapshotChunk,
} from './messages.js';

const SECTOR = 512;
const RESPONSE_METHODS = [Method.Read, Method.Write, Method.Zero, Method.BlockStatus, Method.SnapshotChunk] as const;
const ERROR_STATUSES = Object.values(Status).filter((s) => s !== Status.Ok);

/** A decoder and the encoder that must reproduce what it accepts. */
interface Codec {
  label: string;
  decode(b: Buffer): unknown;
  encode(v: unknown): Buffer;
}

function cat(parts: readonly Buffer[]): Buffer {
  return Buffer.concat(parts);
}

function bytes(prng: Prng, n: number): Buffer {
  const b = Buffer.alloc(n);
  prng.fill(b);
  return b;
}

/** A safe integer biased toward edges: 0, small, around 2^32, near 2^53. */
function u64(prng: Prng): number {
  switch (prng.int(5)) {
    case 0:
      return 0;
    case 1:
      return prng.int(1000);
    case 2:
      return 2 ** 32 - 2 + prng.int(4);
    case 3:
      return Number.MAX_SAFE_INTEGER - prng.int(3);
    default:
      return prng.u32() * 1024 + prng.int(1024);
  }
}

function id(prng: Prng): number {
  return 1 + (prng.chance(0.9) ? prng.int(20) : u64(prng) % Number.MAX_SAFE_INTEGER);
}

function sectors(prng: Prng, max: number): number {
  return prng.int(max + 1) * SECTOR;
}

function randomRequest(prng: Prng): ClientRequest {
  const base = { poolId: prng.u32(), pg: prng.int(64), pgEpoch: u64(prng), volumeId: u64(prng), offsetBytes: prng.int(1 << 20) * SECTOR };
  switch (prng.int(4)) {
    case 0:
      return { ...base, method: Method.Read, lengthBytes: sectors(prng, 16) };
    case 1:
      return { ...base, method: Method.Write, data: bytes(prng, sectors(prng, 4)) };
    case 2:
      return { ...base, method: Method.Zero, lengthBytes: sectors(prng, 8192), mayTrim: prng.chance(0.5) };
    default:
      return { ...base, method: Method.BlockStatus, lengthBytes: sectors(prng, 64) };
  }
}

const CHARS = ['a', 'Z', ' ', 'é', '✓', '𝄞', '\u0000', '\ufeff'];

function randomResponse(prng: Prng, method: number): ClientResponse {
  if (prng.chance(0.5)) {
    const status = ERROR_STATUSES[prng.int(ERROR_STATUSES.length)];
    let message = '';
    const n = prng.int(prng.chance(0.9) ? 20 : 400);
    for (let i = 0; i < n; i++) message += CHARS[prng.int(CHARS.length)];
    const resp: ClientResponse = { status, message };
    if (prng.chance(0.5)) resp.leaderHint = u64(prng);
    if (prng.chance(0.5)) resp.pgEpoch = u64(prng);
    return resp;
  }
  switch (method) {
    case Method.Read:
      return { status: Status.Ok, data: bytes(prng, sectors(prng, 8)) };
    case Method.BlockStatus: {
      const extents: ExtentWire[] = [];
      const n = prng.int(10);
      for (let i = 0; i < n; i++) extents.push({ lengthBytes: (1 + prng.int(64)) * SECTOR, hole: prng.chance(0.5), zero: prng.chance(0.5) });
      return { status: Status.Ok, extents };
    }
    default:
      return { status: Status.Ok };
  }
}

function randomEntries(prng: Prng, prevLogIndex: number, prevLogTerm: number, term: number): Entry[] {
  const entries: Entry[] = [];
  let t = prevLogTerm;
  const n = prng.int(5);
  for (let k = 0; k < n; k++) {
    if (t < term && prng.chance(0.3)) t += 1;
    const size = prng.chance(0.7) ? prng.int(200) : prng.int(5000);
    const e: Entry = prng.chance(0.2) ? { term: t, index: prevLogIndex + 1 + k, type: 'conf', data: bytes(prng, size) } : { term: t, index: prevLogIndex + 1 + k, data: bytes(prng, size) };
    entries.push(e);
  }
  return entries;
}

function randomMessage(prng: Prng, from: number): Message {
  const to = id(prng);
  const term = prng.chance(0.9) ? prng.int(50) : u64(prng);
  const below = (): number => prng.int(term + 1);
  switch (prng.int(7)) {
    case 0:
      return { type: 'vote', from, to, term, lastLogIndex: u64(prng), lastLogTerm: below(), ...(prng.chance(0.3) ? { pre: true } : {}) };
    case 1:
      return prng.chance(0.2)
        ? { type: 'voteResp', from, to, term, reject: true, removed: true }
        : { type: 'voteResp', from, to, term, reject: prng.chance(0.5), ...(prng.chance(0.3) ? { pre: true } : {}) };
    case 2: {
      const prevLogIndex = prng.int(1000);
      const prevLogTerm = below();
      return { type: 'app', from, to, term, prevLogIndex, prevLogTerm, commit: u64(prng), entries: randomEntries(prng, prevLogIndex, prevLogTerm, term) };
    }
    case 3:
      return { type: 'appResp', from, to, term, reject: prng.chance(0.5), index: u64(prng), rejectHint: u64(prng), hintTerm: u64(prng) };
    case 4: {
      // retain 0 means unknown and decodes as absent: only a positive one round-trips as a field.
      const retain = u64(prng);
      return { type: 'heartbeat', from, to, term, commit: u64(prng), ctx: u64(prng), ...(retain > 0 ? { retain } : {}) };
    }
    case 5:
      return { type: 'heartbeatResp', from, to, term, ctx: u64(prng) };
    default:
      return randomSnap(prng, from, to, term);
  }
}

function randomSnap(prng: Prng, from: number, to: number, term: number): Message & { type: 'snap' } {
  const members = [...new Set(Array.from({ length: 1 + prng.int(7) }, () => id(prng)))];
  const voterCount = 1 + prng.int(members.length);
  return {
    type: 'snap',
    from,
    to,
    term,
    snapshot: { index: u64(prng), term: prng.int(term + 1), conf: { voters: members.slice(0, voterCount), learners: members.slice(voterCount) } },
  };
}

function randomBatch(prng: Prng): RaftBatch {
  const fromOsd = id(prng);
  const envelopes: RaftEnvelope[] = [];
  const n = prng.int(6);
  for (let i = 0; i < n; i++) envelopes.push({ poolId: prng.int(4), pg: prng.int(256), pgEpoch: u64(prng), msg: randomMessage(prng, fromOsd) });
  return { fromOsd, envelopes };
}

function randomChunk(prng: Prng): SnapshotChunk {
  const fromOsd = id(prng);
  const done = prng.chance(0.4);
  const items: SnapshotItem[] = Array.from({ length: prng.int(5) }, () =>
    prng.chance(0.3)
      ? { volumeId: u64(prng), offsetBytes: prng.int(1 << 24) * SECTOR, zeroBytes: (1 + prng.int(64)) * SECTOR }
      : { volumeId: u64(prng), offsetBytes: prng.int(1 << 24) * SECTOR, data: bytes(prng, sectors(prng, 3)) },
  );
  const chunk: SnapshotChunk = { poolId: prng.u32(), pg: prng.int(64), pgEpoch: u64(prng), fromOsd, transferId: u64(prng), seq: prng.int(100), done, items };
  if (done && prng.chance(0.6)) chunk.snap = randomSnap(prng, fromOsd, id(prng), prng.int(50));
  return chunk;
}

function requestCodec(method: number): Codec {
  return { label: `request ${method}`, decode: (b) => decodeClientRequest(method, b), encode: (v) => cat(encodeClientRequest(v as ClientRequest)) };
}

function responseCodec(method: number, status: number): Codec {
  return {
    label: `response ${method}/${status}`,
    decode: (b) => decodeClientResponse(method, status, b),
    encode: (v) => {
      const enc = encodeClientResponse(method, v as ClientResponse);
      assert.equal(enc.status, status);
      return cat(enc.parts);
    },
  };
}

const BATCH_CODEC: Codec = { label: 'raft batch', decode: decodeRaftBatch, encode: (v) => cat(encodeRaftBatch(v as RaftBatch)) };
const CHUNK_CODEC: Codec = { label: 'snapshot chunk', decode: decodeSnapshotChunk, encode: (v) => cat(encodeSnapshotChunk(v as SnapshotChunk)) };

/** A valid payload and the codec it belongs to. */
function randomSample(prng: Prng): { codec: Codec; payload: Buffer } {
  switch (prng.int(4)) {
    case 0: {
      const req = randomRequest(prng);
      return { codec: requestCodec(req.method), payload: cat(encodeClientRequest(req)) };
    }
    case 1: {
      const method = RESPONSE_METHODS[prng.int(RESPONSE_METHODS.length)];
      const enc = encodeClientResponse(method, randomResponse(prng, method));
      return { codec: responseCodec(method, enc.status), payload: cat(enc.parts) };
    }
    case 2:
      return { codec: BATCH_CODEC, payload: cat(encodeRaftBatch(randomBatch(prng))) };
    default:
      return { codec: CHUNK_CODEC, payload: cat(encodeSnapshotChunk(randomChunk(prng))) };
  }
}

const EDGE_U32 = [0, 1, 2, 0x7f, 0x80, 0xff, 0x1fffff, 0x200000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 512, 4 * 1024 * 1024, 4 * 1024 * 1024 + 512, 65536, 65537];

function mutate(prng: Prng, input: Buffer, other: Buffer): Buffer {
  let b = Buffer.from(input);
  const mutations = 1 + prng.int(3);
  for (let m = 0; m < mutations; m++) {
    const at = b.length === 0 ? 0 : prng.int(b.length);
    switch (prng.int(8)) {
      case 0:
        if (b.length > 0) b[at] ^= 1 << prng.int(8);
        break;
      case 1:
        bytes(prng, 1 + prng.int(8)).copy(b, at);
        break;
      case 2: {
        // a u32 field (aligned or not) set to an edge value or to a length near the payload size
        const v = prng.chance(0.7) ? EDGE_U32[prng.int(EDGE_U32.length)] : Math.max(0, b.length - at + prng.int(9) - 4);
        const pos = prng.chance(0.7) ? at & ~3 : at;
        if (pos + 4 <= b.length) b.writeUInt32LE(v >>> 0, pos);
        break;
      }
      case 3:
        b = b.subarray(0, at);
        break;
      case 4:
        b = Buffer.concat([b.subarray(0, at), bytes(prng, 1 + prng.int(32)), b.subarray(at)]);
        break;
      case 5:
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + prng.int(32))]);
        break;
      case 6: {
        // splice a run of another valid payload
        const from = other.length === 0 ? 0 : prng.int(other.length);
        b = Buffer.concat([b.subarray(0, at), other.subarray(from, from + 1 + prng.int(64)), b.subarray(at)]);
        break;
      }
      default:
        // duplicate a range (repeated envelopes, entries, items)
        b = Buffer.concat([b.subarray(0, at), b.subarray(at, at + 1 + prng.int(96)), b.subarray(at)]);
    }
  }
  return b;
}

/** Decodes `b` (placed inside a larger buffer, so reading past its end would see junk): a canonical value or ERR_PROTOCOL. */
function check(codec: Codec, b: Buffer, prng: Prng, label: string): 'ok' | 'refused' {
  const host = Buffer.alloc(b.length + 64);
  b.copy(host, 16);
  prng.fill(host.subarray(0, 16));
  prng.fill(host.subarray(16 + b.length));
  const view = host.subarray(16, 16 + b.length);
  let value: unknown;
  try {
    value = codec.decode(view);
  } catch (err) {
    if (err instanceof TesseraError && err.code === 'ERR_PROTOCOL') return 'refused';
    assert.fail(`${label}: ${codec.label} decode threw ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
  }
  let again: Buffer;
  try {
    again = codec.encode(value);
  } catch (err) {
    assert.fail(`${label}: ${codec.label} accepted a value its encoder refuses: ${String(err)}`);
  }
  assert.ok(again.equals(b), `${label}: ${codec.label} decode→encode changed the bytes`);
  return 'ok';
}

function anyCodec(prng: Prng): Codec {
  switch (prng.int(4)) {
    case 0:
      return requestCodec([Method.Read, Method.Write, Method.Zero, Method.BlockStatus, Method.RaftBatch][prng.int(5)]);
    case 1:
      return responseCodec(RESPONSE_METHODS[prng.int(RESPONSE_METHODS.length)], prng.chance(0.5) ? Status.Ok : ERROR_STATUSES[prng.int(ERROR_STATUSES.length)]);
    case 2:
      return BATCH_CODEC;
    default:
      return CHUNK_CODEC;
  }
}

test('fuzz: mutated payloads decode to a canonical value or ERR_PROTOCOL, never anything else', (t) => {
  const seed = seedFromEnv();
  t.diagnostic(`seed ${seed} (replay with TESSERA_SEED=${seed})`);
  const prng = new Prng(seed);
  const iterations = 4000;
  let accepted = 0;
  let refused = 0;
  let previous: Buffer = Buffer.alloc(0);
  for (let iter = 0; iter < iterations; iter++) {
    const label = `seed ${seed} iteration ${iter}`;
    const { codec, payload } = randomSample(prng);
    assert.equal(check(codec, payload, prng, `${label} (unmutated)`), 'ok', `${label}: a valid payload was refused`);
    const mutated = mutate(prng, payload, previous);
    if (check(codec, mutated, prng, label) === 'ok') accepted++;
    else refused++;
    // The wrong decoder on valid and mutated bytes: the same contract.
    check(anyCodec(prng), prng.chance(0.5) ? payload : mutated, prng, `${label} (cross-decoded)`);
    previous = payload;
  }
  t.diagnostic(`${iterations} payloads: mutated ones ${accepted} accepted (re-encoded byte-exact), ${refused} refused with ERR_PROTOCOL`);
});
