// Tests of the RPC frame codec: golden header bytes written out by hand from the
// format table in frame.ts (crc values from an independent bitwise crc32c, pinned
// as literals), encode/decode round trips, the decoder fed streams split at every
// byte boundary, every header rejection, payload corruption, backpressure, and a
// seeded fuzz of mutated streams (TESSERA_SEED replays a run).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32c as nativeCrc32c } from '@node-rs/crc32';
import { AssertionError } from '../stdx/assert.js';
import { TesseraError } from '../stdx/errors.js';
import { Prng, seedFromEnv } from '../stdx/prng.js';
import {
  FRAME_HEADER_BYTES,
  FRAME_PAYLOAD_BYTES_MAX_DEFAULT,
  FrameDecoder,
  FrameError,
  FrameKind,
  encodeFrame,
  writeFrameHeader,
} from './frame.js';
import type { Frame, FrameDecoderOptions, FrameErrorReason, FrameHeader } from './frame.js';

function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ''), 'hex');
}

// magic    ver kind flags method rsvd rsvd2    requestId        status   payloadBytes payloadCrc headerCrc
const GOLDEN_REQUEST_HEADER = '54535250 02 01 0300 0201 0000 00000000 0102030405060708 00000000 09000000 839206e3 ab586311';
const GOLDEN_RESPONSE_HEADER = '54535250 02 02 0000 0201 0000 00000000 0102030405060708 05000000 00000000 00000000 34d53144';
const GOLDEN_REQUEST: FrameHeader = { kind: FrameKind.Request, flags: 3, method: 0x0102, requestId: 0x0807060504030201n, status: 0 };
const GOLDEN_RESPONSE: FrameHeader = { kind: FrameKind.Response, flags: 0, method: 0x0102, requestId: 0x0807060504030201n, status: 5 };
const CHECK_PAYLOAD = Buffer.from('123456789'); // crc32c check value 0xe3069283

interface Collected {
  frames: Frame[];
  corrupt: Array<{ header: FrameHeader; error: FrameError }>;
  failures: FrameError[];
}

function collector(): { sink: Collected; handler: ConstructorParameters<typeof FrameDecoder>[0] } {
  const sink: Collected = { frames: [], corrupt: [], failures: [] };
  return {
    sink,
    handler: {
      onFrame: (frame) => sink.frames.push(frame),
      onCorruptFrame: (header, error) => sink.corrupt.push({ header, error }),
      onFailure: (error) => sink.failures.push(error),
    },
  };
}

function decodeChunks(chunks: Buffer[], options?: FrameDecoderOptions): Collected & { decoder: FrameDecoder } {
  const { sink, handler } = collector();
  const decoder = new FrameDecoder(handler, options);
  for (const c of chunks) decoder.feed(c);
  return { ...sink, decoder };
}

function frameBytes(h: FrameHeader, payload: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat(encodeFrame(h, payload));
}

function headerOf(f: Frame): FrameHeader {
  return { kind: f.kind, flags: f.flags, method: f.method, requestId: f.requestId, status: f.status };
}

/** A header with `patch` applied to its bytes, then its headerCrc recomputed (by the native crc, not the codec). */
function patchedHeader(h: FrameHeader, payloadBytes: number, patch: (b: Buffer) => void): Buffer {
  const b = Buffer.alloc(FRAME_HEADER_BYTES);
  writeFrameHeader(b, 0, h, payloadBytes, 0);
  patch(b);
  b.writeUInt32LE(nativeCrc32c(b.subarray(0, 36)) >>> 0, 36);
  return b;
}

function expectFailure(chunks: Buffer[], reason: FrameErrorReason, options?: FrameDecoderOptions): FrameDecoder {
  const r = decodeChunks(chunks, options);
  assert.equal(r.frames.length, 0);
  assert.equal(r.failures.length, 1);
  const err = r.failures[0];
  assert.ok(err instanceof FrameError && err instanceof TesseraError);
  assert.equal(err.reason, reason);
  assert.equal(err.code, 'ERR_PROTOCOL');
  assert.equal(err.fatal, true);
  assert.equal(r.decoder.failed(), err);
  assert.equal(r.decoder.heldBytes(), 0, 'a failed decoder holds nothing');
  // Later input is ignored: a valid frame after the failure is not decoded.
  assert.equal(r.decoder.feed(frameBytes(GOLDEN_REQUEST, CHECK_PAYLOAD)), false);
  assert.equal(r.frames.length, 0);
  assert.equal(r.failures.length, 1);
  return r.decoder;
}

// --- Golden bytes ----------------------------------------------------------------

test('golden: request header bytes (flags 3, method 0x0102, payload "123456789")', () => {
  const out = encodeFrame(GOLDEN_REQUEST, CHECK_PAYLOAD);
  assert.equal(out.length, 2);
  assert.equal(out[0].toString('hex'), hex(GOLDEN_REQUEST_HEADER).toString('hex'));
  assert.equal(out[1], CHECK_PAYLOAD, 'the payload is passed through, not copied');
});

test('golden: response header bytes (status 5, empty payload adds no buffer)', () => {
  const out = encodeFrame(GOLDEN_RESPONSE);
  assert.equal(out.length, 1);
  assert.equal(out[0].toString('hex'), hex(GOLDEN_RESPONSE_HEADER).toString('hex'));
});

test('golden: the pinned headerCrc literals are crc32c of the first 36 bytes', () => {
  for (const h of [GOLDEN_REQUEST_HEADER, GOLDEN_RESPONSE_HEADER]) {
    const b = hex(h);
    assert.equal(b.length, FRAME_HEADER_BYTES);
    assert.equal(nativeCrc32c(b.subarray(0, 36)) >>> 0, b.readUInt32LE(36));
  }
});

test('golden: the decoder reads the hand-written bytes back', () => {
  const r = decodeChunks([Buffer.concat([hex(GOLDEN_REQUEST_HEADER), CHECK_PAYLOAD, hex(GOLDEN_RESPONSE_HEADER)])]);
  assert.equal(r.failures.length + r.corrupt.length, 0);
  assert.equal(r.frames.length, 2);
  assert.deepEqual(headerOf(r.frames[0]), GOLDEN_REQUEST);
  assert.equal(r.frames[0].payload.toString(), '123456789');
  assert.deepEqual(headerOf(r.frames[1]), GOLDEN_RESPONSE);
  assert.equal(r.frames[1].payload.length, 0);
});

// --- Round trip and framing --------------------------------------------------------

test('round trip: extreme field values and a payload given in parts', () => {
  const h: FrameHeader = { kind: FrameKind.OneWay, flags: 0xffff, method: 0xffff, requestId: (1n << 64n) - 1n, status: 0 };
  const parts = [Buffer.from('message header|'), Buffer.alloc(0), Buffer.alloc(4096, 0xab)];
  const out = encodeFrame(h, parts);
  assert.equal(out.length, 3, 'empty parts are dropped, the others passed through');
  assert.equal(out[1], parts[0]);
  assert.equal(out[2], parts[2]);
  const r = decodeChunks(out);
  assert.equal(r.frames.length, 1);
  assert.deepEqual(headerOf(r.frames[0]), h);
  assert.deepEqual(r.frames[0].payload, Buffer.concat(parts));
  const resp: FrameHeader = { kind: FrameKind.Response, flags: 0, method: 0, requestId: 0n, status: 0xffffffff };
  assert.deepEqual(headerOf(decodeChunks([frameBytes(resp)]).frames[0]), resp);
});

function sampleStream(): { bytes: Buffer; headers: FrameHeader[]; payloads: Buffer[] } {
  const payloads = [Buffer.alloc(300), Buffer.alloc(0), Buffer.from('one-way')];
  for (let i = 0; i < 300; i++) payloads[0][i] = (i * 7) & 0xff; // over 256 bytes: the native crc path
  const headers: FrameHeader[] = [
    { kind: FrameKind.Request, flags: 1, method: 7, requestId: 1n, status: 0 },
    { kind: FrameKind.Response, flags: 0, method: 7, requestId: 1n, status: 0 },
    { kind: FrameKind.OneWay, flags: 0, method: 9, requestId: 0n, status: 0 },
  ];
  const bytes = Buffer.concat(headers.map((h, i) => frameBytes(h, payloads[i])));
  return { bytes, headers, payloads };
}

test('decoder: a stream split into two chunks at every byte boundary, and fed byte by byte', () => {
  const { bytes, headers, payloads } = sampleStream();
  const check = (r: Collected, label: string): void => {
    assert.equal(r.failures.length + r.corrupt.length, 0, label);
    assert.deepEqual(r.frames.map(headerOf), headers, label);
    assert.deepEqual(r.frames.map((f) => f.payload), payloads, label);
  };
  for (let i = 0; i <= bytes.length; i++) {
    const r = decodeChunks([Buffer.from(bytes.subarray(0, i)), Buffer.from(bytes.subarray(i))]);
    check(r, `split at ${i}`);
    assert.equal(r.decoder.heldBytes(), 0);
  }
  const oneByOne = [];
  for (let i = 0; i < bytes.length; i++) oneByOne.push(Buffer.from(bytes.subarray(i, i + 1)));
  check(decodeChunks(oneByOne), 'byte by byte');
});

test('decoder: a payload inside one chunk is a view of it; one spanning chunks is copied into one allocation', () => {
  const { bytes } = sampleStream();
  // Shared memory is tested by writing through the input: small Buffers share Node's
  // pool slab, so comparing .buffer alone would not tell a view from a copy.
  const aliases = (payload: Buffer, input: Buffer, inputAt: number): boolean => {
    const before = payload[0];
    input[inputAt] ^= 0xff;
    const shared = payload[0] !== before;
    input[inputAt] ^= 0xff;
    return shared;
  };
  const input = Buffer.from(bytes);
  const whole = decodeChunks([input]);
  assert.ok(aliases(whole.frames[0].payload, input, FRAME_HEADER_BYTES), 'no copy');
  const allocations: number[] = [];
  const allocate = (n: number): Buffer => {
    allocations.push(n);
    return Buffer.alloc(n);
  };
  const split = FRAME_HEADER_BYTES + 100; // inside the 300-byte payload
  const r = decodeChunks([input.subarray(0, split), input.subarray(split)], { allocate });
  assert.deepEqual(allocations, [300]);
  assert.ok(!aliases(r.frames[0].payload, input, FRAME_HEADER_BYTES), 'copied');
  assert.deepEqual(r.frames[0].payload, whole.frames[0].payload);
});

test('decoder of borrowed chunks (a socket reading into one reused buffer): every payload is a copy, so overwriting the chunk after feed() changes no frame, paused or not', (t) => {
  const { bytes, headers } = sampleStream();
  const want = decodeChunks([Buffer.from(bytes)]).frames.map((f) => Buffer.from(f.payload));
  const seed = seedFromEnv();
  t.diagnostic(`seed ${seed} (replay with TESSERA_SEED=${seed})`);
  const prng = new Prng(seed);
  const { sink, handler } = collector();
  // Every frame pauses the decoder (as a server at its in-flight bound does); it is resumed before the next read.
  const decoder: FrameDecoder = new FrameDecoder(
    {
      ...handler,
      onFrame: (f) => {
        handler.onFrame(f);
        if (prng.int(2) === 0) decoder.pause();
      },
    },
    { borrowedChunks: true },
  );
  const lent = Buffer.alloc(bytes.length);
  for (let at = 0; at < bytes.length; ) {
    const n = Math.min(bytes.length - at, 1 + prng.int(bytes.length));
    bytes.copy(lent, 0, at, at + n);
    decoder.feed(lent.subarray(0, n));
    lent.fill(0xee); // the socket reads the next bytes into the same memory
    // Sometimes the next chunk comes while still paused: the rest of this one is then
    // kept behind earlier ones (keepRestOf's i > 0 case).
    if (prng.int(3) !== 0) while (decoder.isPaused()) decoder.resume();
    at += n;
  }
  while (decoder.isPaused()) decoder.resume();
  assert.deepEqual(sink.frames.map(headerOf), headers);
  assert.deepEqual(sink.frames.map((f) => f.payload), want);
  assert.equal(decoder.heldBytes(), 0);
});

// --- Rejections ---------------------------------------------------------------------

test('reject: bad magic (garbage, and an NBD request) is fatal with ERR_PROTOCOL', () => {
  expectFailure([Buffer.alloc(FRAME_HEADER_BYTES, 0)], 'bad-magic');
  expectFailure([hex('25609513 0000 0001 0000000000000001 0000000000000000 00001000 000000000000000000000000')], 'bad-magic');
  // Detected as soon as the header is complete, even if split.
  const b = Buffer.from('GET / HTTP/1.1\r\nHost: tessera.example\r\n\r\n');
  expectFailure([b.subarray(0, 3), b.subarray(3)], 'bad-magic');
});

test('reject: unsupported version (valid crc) and a version byte flipped in transit', () => {
  // A version 1 peer (a daemon from before the raft payload changes of sessions 15-16), and a future one.
  expectFailure([patchedHeader(GOLDEN_REQUEST, 0, (b) => b.writeUInt8(1, 4))], 'bad-version');
  expectFailure([patchedHeader(GOLDEN_REQUEST, 0, (b) => b.writeUInt8(3, 4))], 'bad-version');
  const flipped = Buffer.from(hex(GOLDEN_REQUEST_HEADER));
  flipped[4] ^= 0x02;
  expectFailure([flipped], 'bad-version');
});

test('reject: header crc mismatch on a single flipped bit of every header byte after magic and version', () => {
  for (let at = 5; at < FRAME_HEADER_BYTES; at++) {
    for (const bit of [0x01, 0x80]) {
      const b = Buffer.concat([hex(GOLDEN_REQUEST_HEADER), CHECK_PAYLOAD]);
      b[at] ^= bit;
      expectFailure([b], 'header-crc');
    }
  }
});

test('reject: unknown kind, nonzero reserved fields, status in a request (all with valid crcs)', () => {
  expectFailure([patchedHeader(GOLDEN_REQUEST, 0, (b) => b.writeUInt8(0, 5))], 'bad-kind');
  expectFailure([patchedHeader(GOLDEN_REQUEST, 0, (b) => b.writeUInt8(4, 5))], 'bad-kind');
  expectFailure([patchedHeader(GOLDEN_REQUEST, 0, (b) => b.writeUInt16LE(1, 10))], 'bad-reserved');
  expectFailure([patchedHeader(GOLDEN_REQUEST, 0, (b) => b.writeUInt32LE(0x80000000, 12))], 'bad-reserved');
  expectFailure([patchedHeader(GOLDEN_REQUEST, 0, (b) => b.writeUInt32LE(5, 24))], 'bad-status');
  const oneWay = { ...GOLDEN_REQUEST, kind: FrameKind.OneWay };
  expectFailure([patchedHeader(oneWay, 0, (b) => b.writeUInt32LE(1, 24))], 'bad-status');
});

test('reject: oversize payloadBytes (valid crc) before allocating anything', () => {
  let allocatedBytes = 0;
  const allocate = (n: number): Buffer => {
    allocatedBytes += n;
    return Buffer.alloc(n);
  };
  expectFailure([patchedHeader(GOLDEN_REQUEST, 0xffffffff, () => {})], 'payload-too-large', { allocate });
  expectFailure([patchedHeader(GOLDEN_REQUEST, FRAME_PAYLOAD_BYTES_MAX_DEFAULT + 1, () => {})], 'payload-too-large', { allocate });
  expectFailure([patchedHeader(GOLDEN_REQUEST, 101, () => {})], 'payload-too-large', { allocate, payloadBytesMax: 100 });
  assert.equal(allocatedBytes, 0);
  // Exactly the limit is accepted.
  const r = decodeChunks(encodeFrame(GOLDEN_REQUEST, Buffer.alloc(100, 1), 100), { payloadBytesMax: 100 });
  assert.equal(r.frames.length, 1);
  assert.equal(r.failures.length, 0);
});

test('payload crc mismatch: that frame is reported with its header (ERR_CHECKSUM, not fatal) and decoding continues', () => {
  const { bytes, headers, payloads } = sampleStream();
  const b = Buffer.from(bytes);
  b[FRAME_HEADER_BYTES + 123] ^= 0x10; // inside frame 0's payload
  const r = decodeChunks([b]);
  assert.equal(r.failures.length, 0);
  assert.equal(r.corrupt.length, 1);
  assert.deepEqual(r.corrupt[0].header, headers[0]);
  const err = r.corrupt[0].error;
  assert.ok(err instanceof TesseraError);
  assert.equal(err.code, 'ERR_CHECKSUM');
  assert.equal(err.reason, 'payload-crc');
  assert.equal(err.fatal, false);
  assert.equal(r.decoder.failed(), null);
  assert.deepEqual(r.frames.map(headerOf), headers.slice(1));
  assert.deepEqual(r.frames.map((f) => f.payload), payloads.slice(1));
  // An empty payload must carry payloadCrc 0.
  const empty = decodeChunks([patchedHeader(GOLDEN_RESPONSE, 0, (h) => h.writeUInt32LE(1, 32))]);
  assert.equal(empty.corrupt.length, 1);
  assert.equal(empty.frames.length, 0);
});

// --- Backpressure ---------------------------------------------------------------------

test('pause from inside onFrame holds the rest until resume; feeding a paused decoder past its bound is a programmer error', () => {
  const { bytes, headers } = sampleStream();
  const frames: Frame[] = [];
  const decoder: FrameDecoder = new FrameDecoder({
    onFrame: (f) => {
      frames.push(f);
      decoder.pause();
    },
    onCorruptFrame: () => assert.fail('corrupt'),
    onFailure: () => assert.fail('failure'),
  });
  assert.equal(decoder.feed(bytes), false, 'paused: stop reading');
  assert.equal(frames.length, 1);
  assert.ok(decoder.isPaused());
  assert.equal(decoder.heldBytes(), bytes.length - (FRAME_HEADER_BYTES + 300));
  decoder.resume();
  assert.equal(frames.length, 2);
  decoder.resume();
  assert.equal(frames.length, 3);
  decoder.resume();
  assert.deepEqual(frames.map(headerOf), headers);
  assert.equal(decoder.heldBytes(), 0);

  const small = new FrameDecoder(collector().handler, { pausedQueueBytesMax: 1000 });
  small.pause();
  assert.equal(small.feed(Buffer.alloc(1000)), false);
  assert.throws(() => small.feed(Buffer.alloc(1)), AssertionError);
});

test('encoder: programmer errors are assertions', () => {
  assert.throws(() => encodeFrame({ ...GOLDEN_REQUEST, status: 1 }), AssertionError);
  assert.throws(() => encodeFrame({ ...GOLDEN_REQUEST, requestId: 1n << 64n }), AssertionError);
  assert.throws(() => encodeFrame({ ...GOLDEN_REQUEST, requestId: -1n }), AssertionError);
  assert.throws(() => encodeFrame({ ...GOLDEN_REQUEST, method: 0x10000 }), AssertionError);
  assert.throws(() => encodeFrame({ ...GOLDEN_REQUEST, kind: 4 as FrameKind }), AssertionError);
  assert.throws(() => encodeFrame(GOLDEN_REQUEST, Buffer.alloc(101), 100), AssertionError);
});

// --- Fuzz ---------------------------------------------------------------------------

const FUZZ_PAYLOAD_BYTES_MAX = 80 * 1024;

function randomFrame(prng: Prng): { header: FrameHeader; payload: Buffer } {
  const kind = (1 + prng.int(3)) as FrameKind;
  const header: FrameHeader = {
    kind,
    flags: prng.int(0x10000),
    method: prng.int(0x10000),
    requestId: (BigInt(prng.u32()) << 32n) | BigInt(prng.u32()),
    status: kind === FrameKind.Response && prng.chance(0.3) ? prng.u32() : 0,
  };
  const r = prng.float();
  const payloadBytes = r < 0.2 ? 0 : r < 0.8 ? prng.int(300) : r < 0.97 ? prng.int(8192) : prng.int(FUZZ_PAYLOAD_BYTES_MAX + 1);
  const payload = Buffer.alloc(payloadBytes);
  prng.fill(payload);
  return { header, payload };
}

function mutate(prng: Prng, stream: Buffer, frameStarts: number[]): Buffer {
  let b = Buffer.from(stream);
  const mutations = 1 + prng.int(3);
  for (let m = 0; m < mutations; m++) {
    const at = b.length === 0 ? 0 : prng.int(b.length);
    switch (prng.int(8)) {
      case 0: // bit flips
        if (b.length > 0) b[at] ^= 1 << prng.int(8);
        break;
      case 1: {
        // overwrite a run with random bytes
        const run = Buffer.alloc(1 + prng.int(16));
        prng.fill(run);
        run.copy(b, at);
        break;
      }
      case 2: {
        // insert random bytes
        const ins = Buffer.alloc(1 + prng.int(64));
        prng.fill(ins);
        b = Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
        break;
      }
      case 3: // delete a range
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + prng.int(64))]);
        break;
      case 4: // duplicate a range
        b = Buffer.concat([b.subarray(0, at), b.subarray(at, at + 1 + prng.int(200)), b.subarray(at)]);
        break;
      case 5: // truncate
        b = b.subarray(0, at);
        break;
      case 6: {
        // a header claiming a huge payload, with a crc that verifies
        if (frameStarts.length === 0) break;
        const start = frameStarts[prng.int(frameStarts.length)];
        if (start + FRAME_HEADER_BYTES > b.length) break;
        b.writeUInt32LE(prng.chance(0.5) ? 0xffffffff : FUZZ_PAYLOAD_BYTES_MAX + 1 + prng.int(1 << 20), start + 28);
        b.writeUInt32LE(nativeCrc32c(b.subarray(start, start + 36)) >>> 0, start + 36);
        break;
      }
      default: {
        // a payload byte changed, header untouched
        if (frameStarts.length === 0) break;
        const start = frameStarts[prng.int(frameStarts.length)];
        if (start + FRAME_HEADER_BYTES >= b.length) break;
        const payloadBytes = b.readUInt32LE(start + 28);
        if (payloadBytes === 0 || start + FRAME_HEADER_BYTES + payloadBytes > b.length) break;
        b[start + FRAME_HEADER_BYTES + prng.int(payloadBytes)] ^= 1 + prng.int(255);
      }
    }
  }
  return b;
}

test('fuzz: mutated streams fed in random chunks, owned or lent, never throw, never over-allocate, never yield an unverified frame', (t) => {
  const seed = seedFromEnv();
  t.diagnostic(`seed ${seed} (replay with TESSERA_SEED=${seed})`);
  const prng = new Prng(seed);
  const iterations = 400;
  let yielded = 0;
  let corrupt = 0;
  let failed = 0;
  for (let iter = 0; iter < iterations; iter++) {
    const label = `seed ${seed} iteration ${iter}`;
    const originals = new Set<string>();
    const parts: Buffer[] = [];
    const frameStarts: number[] = [];
    let offset = 0;
    const frameCount = 1 + prng.int(8);
    for (let i = 0; i < frameCount; i++) {
      const { header, payload } = randomFrame(prng);
      const bytes = frameBytes(header, payload);
      originals.add(bytes.toString('hex'));
      frameStarts.push(offset);
      offset += bytes.length;
      parts.push(bytes);
    }
    const clean = Buffer.concat(parts);
    const mutated = iter % 10 <= 1 ? clean : mutate(prng, clean, frameStarts); // clean streams, owned (0) and lent (1)

    // Odd iterations lend their chunks (one buffer, overwritten after each feed), as a
    // socket reading through onread does: a yielded frame that still viewed it would
    // fail the check against the frames sent.
    const borrowed = iter % 2 === 1;
    const lent = Buffer.alloc(16384);
    let maxAllocationBytes = 0;
    const frames: Frame[] = [];
    const decoder: FrameDecoder = new FrameDecoder(
      {
        onFrame: (f) => {
          frames.push(f);
          if (prng.chance(0.2)) decoder.pause();
        },
        onCorruptFrame: (_h, e) => {
          assert.ok(e instanceof FrameError && e.code === 'ERR_CHECKSUM' && !e.fatal, label);
          corrupt++;
        },
        onFailure: (e) => {
          assert.ok(e instanceof FrameError && e.code === 'ERR_PROTOCOL' && e.fatal, label);
          failed++;
        },
      },
      {
        payloadBytesMax: FUZZ_PAYLOAD_BYTES_MAX,
        borrowedChunks: borrowed,
        allocate: (n) => {
          maxAllocationBytes = Math.max(maxAllocationBytes, n);
          return Buffer.alloc(n);
        },
      },
    );
    let pos = 0;
    while (pos < mutated.length) {
      const n = 1 + prng.int(prng.chance(0.5) ? 64 : 16384);
      const piece = mutated.subarray(pos, pos + n);
      const chunk = borrowed ? lent.subarray(0, piece.copy(lent)) : Buffer.from(piece);
      pos += n;
      try {
        decoder.feed(chunk);
        if (borrowed) lent.fill(0xee);
        while (decoder.isPaused()) decoder.resume(); // like a transport that resumes reading at once
      } catch (err) {
        assert.fail(`${label}: feed threw ${String(err)}`);
      }
      // Drained: at most a partial header or a partial payload is held.
      assert.ok(decoder.heldBytes() < FUZZ_PAYLOAD_BYTES_MAX + FRAME_HEADER_BYTES, label);
    }
    assert.ok(maxAllocationBytes <= FUZZ_PAYLOAD_BYTES_MAX, `${label}: allocated ${maxAllocationBytes}`);
    // Re-encoding a yielded frame must give the bytes of one of the valid frames that
    // were sent: the decoder never invents or half-verifies a frame.
    for (const f of frames) {
      assert.ok(originals.has(frameBytes(headerOf(f), f.payload).toString('hex')), `${label}: yielded a frame that was never sent`);
    }
    if (mutated === clean) assert.equal(frames.length, frameCount, `${label}: clean stream`);
    yielded += frames.length;
  }
  t.diagnostic(`${iterations} streams: ${yielded} frames yielded, ${corrupt} corrupt payloads reported, ${failed} fatal failures`);
});
