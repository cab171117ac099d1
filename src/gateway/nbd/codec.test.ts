// Golden-byte tests of the NBD codec: every encoder against bytes written out by
// hand from doc/proto.md (section names in the test titles), the option payload
// parsers, and the incremental decoder fed the same stream split at every byte
// boundary. Expected bytes are hex literals, never produced by the code under test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  NbdDecoder,
  encodeBlockStatus,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoDescription,
  encodeInfoExport,
  encodeInfoName,
  encodeMetaContext,
  encodeNoneChunk,
  encodeOffsetData,
  encodeOffsetHole,
  encodeOptionAck,
  encodeOptionError,
  encodeRepServer,
  encodeServerGreeting,
  encodeSimpleReply,
  parseExportName,
  parseInfoRequest,
  parseMetaContextRequest,
  truncateUtf8,
  writeOffsetDataHeader,
} from './codec.js';
import type { DecodeFailure, DecoderHandler, NbdRequest } from './codec.js';
import * as C from './constants.js';

function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ''), 'hex');
}

function assertBytes(actual: Buffer, expectedHex: string): void {
  assert.equal(actual.toString('hex'), hex(expectedHex).toString('hex'));
}

const REP = '0003e889045565a9'; // option reply magic

// --- Encoders -----------------------------------------------------------------

test('Newstyle negotiation: greeting is NBDMAGIC, IHAVEOPT, handshake flags FIXED_NEWSTYLE|NO_ZEROES', () => {
  assertBytes(encodeServerGreeting(C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES), '4e42444d41474943 49484156454f5054 0003');
});

test('Newstyle negotiation: NBD_OPT_EXPORT_NAME reply with and without the 124 zero bytes', () => {
  assertBytes(encodeExportNameReply(0x100000, 0x0003, true), '0000000000100000 0003');
  const padded = encodeExportNameReply(0x100000, 0x0003, false);
  assertBytes(padded, '0000000000100000 0003' + '00'.repeat(124));
});

test('Fixed newstyle negotiation: NBD_REP_ACK to NBD_OPT_STRUCTURED_REPLY', () => {
  assertBytes(encodeOptionAck(C.NBD_OPT_STRUCTURED_REPLY), `${REP} 00000008 00000001 00000000`);
});

test('Option reply types: NBD_REP_ERR_UNSUP with a message', () => {
  assertBytes(encodeOptionError(C.NBD_OPT_STARTTLS, C.NBD_REP_ERR_UNSUP, 'no'), `${REP} 00000005 80000001 00000002 6e6f`);
  assertBytes(encodeOptionError(99, C.NBD_REP_ERR_INVALID), `${REP} 00000063 80000003 00000000`);
});

test('Option reply types: NBD_REP_SERVER carries a length-prefixed name', () => {
  assertBytes(encodeRepServer(C.NBD_OPT_LIST, 'vol0'), `${REP} 00000003 00000002 00000008 00000004 766f6c30`);
  assertBytes(encodeRepServer(C.NBD_OPT_LIST, 'a', 'b'), `${REP} 00000003 00000002 00000006 00000001 61 62`);
});

test('NBD_REP_INFO: NBD_INFO_EXPORT is 12 bytes of type, size, transmission flags', () => {
  assertBytes(encodeInfoExport(C.NBD_OPT_GO, 2 ** 32, 0x0d6d), `${REP} 00000007 00000003 0000000c 0000 0000000100000000 0d6d`);
});

test('NBD_REP_INFO: NBD_INFO_NAME and NBD_INFO_DESCRIPTION', () => {
  assertBytes(encodeInfoName(C.NBD_OPT_INFO, 'vol0'), `${REP} 00000006 00000003 00000006 0001 766f6c30`);
  assertBytes(encodeInfoDescription(C.NBD_OPT_INFO, 'd'), `${REP} 00000006 00000003 00000003 0002 64`);
});

test('NBD_REP_INFO: NBD_INFO_BLOCK_SIZE is 14 bytes: min 512, preferred 4096, max 32 MiB', () => {
  assertBytes(encodeInfoBlockSize(C.NBD_OPT_GO, 512, 4096, 32 * 1024 * 1024), `${REP} 00000007 00000003 0000000e 0003 00000200 00001000 02000000`);
});

test('Option reply types: NBD_REP_META_CONTEXT is id then name', () => {
  const name = Buffer.from('base:allocation').toString('hex');
  assertBytes(encodeMetaContext(C.NBD_OPT_SET_META_CONTEXT, 1, 'base:allocation'), `${REP} 0000000a 00000004 00000013 00000001 ${name}`);
});

test('Simple reply message: magic, error, cookie', () => {
  assertBytes(encodeSimpleReply(C.NBD_EINVAL, 0x0102030405060708n), '67446698 00000016 0102030405060708');
  assertBytes(encodeSimpleReply(0, 0xffffffffffffffffn), '67446698 00000000 ffffffffffffffff');
});

test('Structured reply types: NBD_REPLY_TYPE_OFFSET_DATA with DONE', () => {
  assertBytes(encodeOffsetData(C.NBD_REPLY_FLAG_DONE, 1n, 0x200, hex('aabb')), '668e33ef 0001 0001 0000000000000001 0000000a 0000000000000200 aabb');
  const out = Buffer.alloc(C.OFFSET_DATA_HEADER_BYTES + 1);
  writeOffsetDataHeader(out, 0, 0, 2n, 2 ** 40, 1);
  assertBytes(out, '668e33ef 0000 0001 0000000000000002 00000009 0000010000000000 00');
});

test('Structured reply types: NBD_REPLY_TYPE_OFFSET_HOLE is offset and hole size', () => {
  assertBytes(encodeOffsetHole(0, 3n, 0x1000, 0x10000), '668e33ef 0000 0002 0000000000000003 0000000c 0000000000001000 00010000');
});

test('Structured reply types: NBD_REPLY_TYPE_BLOCK_STATUS is context id then descriptors', () => {
  const chunk = encodeBlockStatus(C.NBD_REPLY_FLAG_DONE, 4n, 1, [
    { lengthBytes: 0x10000, statusFlags: 0 },
    { lengthBytes: 0x20000, statusFlags: C.NBD_STATE_HOLE | C.NBD_STATE_ZERO },
  ]);
  assertBytes(chunk, '668e33ef 0001 0005 0000000000000004 00000014 00000001 00010000 00000000 00020000 00000003');
});

test('Structured reply types: NBD_REPLY_TYPE_ERROR is errno, message length, message', () => {
  assertBytes(encodeErrorChunk(C.NBD_REPLY_FLAG_DONE, 5n, C.NBD_EIO, 'io'), '668e33ef 0001 8001 0000000000000005 00000008 00000005 0002 696f');
  assert.throws(() => encodeErrorChunk(1, 5n, 0, 'x'));
});

test('Structured reply types: NBD_REPLY_TYPE_NONE always carries DONE and no payload', () => {
  assertBytes(encodeNoneChunk(6n), '668e33ef 0001 0000 0000000000000006 00000000');
});

test('Conventions: messages are cut at a UTF-8 boundary', () => {
  assert.equal(truncateUtf8('abc', 2), 'ab');
  assert.equal(truncateUtf8('aé', 2), 'a'); // é is 2 bytes
  assert.equal(Buffer.byteLength(encodeErrorChunk(1, 0n, 5, 'x'.repeat(10_000))) - 26, C.ERROR_MESSAGE_BYTES_MAX);
});

// --- Option payload parsers ------------------------------------------------------

function infoData(name: string, infos: number[], extraHex = ''): Buffer {
  const n = Buffer.from(name);
  const out = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
  out.writeUInt32BE(n.length, 0);
  n.copy(out, 4);
  out.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((t, i) => out.writeUInt16BE(t, 6 + n.length + 2 * i));
  return Buffer.concat([out, hex(extraHex)]);
}

test('NBD_OPT_INFO and NBD_OPT_GO: request data parses name and info list', () => {
  const r = parseInfoRequest(hex('00000004 766f6c30 0002 0003 0001'));
  assert.deepEqual(r, { ok: true, value: { name: 'vol0', infoTypes: [3, 1] } });
  assert.deepEqual(parseInfoRequest(hex('00000000 0000')), { ok: true, value: { name: '', infoTypes: [] } });
});

test('NBD_OPT_INFO and NBD_OPT_GO: malformed lengths are ERR_INVALID material', () => {
  assert.equal(parseInfoRequest(hex('0000')).ok, false); // shorter than 6
  assert.equal(parseInfoRequest(hex('00000005 766f6c30 0000')).ok, false); // name length > data - 6
  assert.equal(parseInfoRequest(hex('ffffffff 0000')).ok, false);
  assert.equal(parseInfoRequest(infoData('vol0', [3], '00')).ok, false); // trailing byte
  assert.equal(parseInfoRequest(hex('00000004 766f6c30 0002 0003')).ok, false); // count says 2, one present
  assert.equal(parseInfoRequest(infoData('x'.repeat(4097), [])).ok, false); // Conventions: > 4096
  assert.equal(parseInfoRequest(infoData('x'.repeat(4096), [])).ok, true);
});

test('NBD_OPT_EXPORT_NAME: names over 4096 bytes are rejected', () => {
  assert.deepEqual(parseExportName(Buffer.from('vol0')), { ok: true, value: 'vol0' });
  assert.equal(parseExportName(Buffer.alloc(4097, 0x61)).ok, false);
});

test('NBD_OPT_SET_META_CONTEXT: export name then counted queries', () => {
  const q = Buffer.from('base:allocation').toString('hex');
  const r = parseMetaContextRequest(hex(`00000004 766f6c30 00000002 0000000f ${q} 00000005 ${Buffer.from('base:').toString('hex')}`));
  assert.deepEqual(r, { ok: true, value: { exportName: 'vol0', queries: ['base:allocation', 'base:'] } });
  assert.deepEqual(parseMetaContextRequest(hex('00000000 00000000')), { ok: true, value: { exportName: '', queries: [] } });
});

test('NBD_OPT_LIST_META_CONTEXT: a query length beyond the data is ERR_INVALID material', () => {
  assert.equal(parseMetaContextRequest(hex('00000000')).ok, false); // no count
  assert.equal(parseMetaContextRequest(hex('00000000 00000001')).ok, false); // count 1, no query
  assert.equal(parseMetaContextRequest(hex('00000000 ffffffff')).ok, false); // count far beyond data
  assert.equal(parseMetaContextRequest(hex('00000000 00000001 00000009 6261')).ok, false); // query too long
  assert.equal(parseMetaContextRequest(hex('00000000 00000000 00')).ok, false); // trailing byte
  assert.equal(parseMetaContextRequest(hex('00000009 6261')).ok, false); // name beyond data
});

// --- Decoder ----------------------------------------------------------------------

type Event =
  | { kind: 'flags'; flags: number }
  | { kind: 'option'; option: number; data: string }
  | { kind: 'request'; type: number; flags: number; cookie: bigint; offset: bigint; offsetSafe: boolean; lengthBytes: number; data: string | null; skipped: boolean }
  | { kind: 'failure'; failure: DecodeFailure; option: number; lengthBytes: number };

class Recorder implements DecoderHandler {
  readonly events: Event[] = [];
  /** Every body handed out, kept as is (a lent chunk overwritten later would show in them). */
  readonly bodies: Buffer[] = [];
  decoder: NbdDecoder;
  pauseOnRequest = false;
  constructor(borrowedChunks = false) {
    this.decoder = new NbdDecoder(this, { borrowedChunks });
  }
  onClientFlags(flags: number): void {
    this.events.push({ kind: 'flags', flags });
  }
  onOption(option: number, data: Buffer): void {
    this.bodies.push(data);
    this.events.push({ kind: 'option', option, data: data.toString('hex') });
    if (option === C.NBD_OPT_GO) this.decoder.enterTransmission();
  }
  onRequest(r: NbdRequest): void {
    if (r.data) this.bodies.push(r.data);
    this.events.push({ kind: 'request', type: r.type, flags: r.flags, cookie: r.cookie, offset: r.offset, offsetSafe: r.offsetSafe, lengthBytes: r.lengthBytes, data: r.data?.toString('hex') ?? null, skipped: r.payloadSkipped });
    if (this.pauseOnRequest) this.decoder.pause();
  }
  onDecodeFailure(failure: DecodeFailure, option: number, lengthBytes: number): void {
    this.events.push({ kind: 'failure', failure, option, lengthBytes });
  }
}

// Client stream: flags, NBD_OPT_STRUCTURED_REPLY (no data), NBD_OPT_GO "vol0" with
// one info request, then READ, WRITE (4 bytes), FLUSH, BLOCK_STATUS at offset 2^53+1.
const CLIENT_STREAM = hex(
  [
    '00000003',
    '49484156454f5054 00000008 00000000',
    '49484156454f5054 00000007 0000000c 00000004 766f6c30 0001 0003',
    '25609513 0001 0000 1122334455667788 0000000000001000 00000200',
    '25609513 0000 0001 0000000000000002 0000000000000000 00000004 deadbeef',
    '25609513 0000 0003 0000000000000003 0000000000000000 00000000',
    '25609513 0008 0007 0000000000000004 0020000000000001 00001000',
  ].join(''),
);

const EXPECTED: Event[] = [
  { kind: 'flags', flags: 3 },
  { kind: 'option', option: 8, data: '' },
  { kind: 'option', option: 7, data: '00000004766f6c3000010003' },
  { kind: 'request', type: 0, flags: 1, cookie: 0x1122334455667788n, offset: 0x1000n, offsetSafe: true, lengthBytes: 0x200, data: null, skipped: false },
  { kind: 'request', type: 1, flags: 0, cookie: 2n, offset: 0n, offsetSafe: true, lengthBytes: 4, data: 'deadbeef', skipped: false },
  { kind: 'request', type: 3, flags: 0, cookie: 3n, offset: 0n, offsetSafe: true, lengthBytes: 0, data: null, skipped: false },
  { kind: 'request', type: 7, flags: 8, cookie: 4n, offset: 2n ** 53n + 1n, offsetSafe: false, lengthBytes: 0x1000, data: null, skipped: false },
];

test('Request message: the whole client stream decodes in one piece', () => {
  const r = new Recorder();
  r.decoder.feed(CLIENT_STREAM);
  assert.deepEqual(r.events, EXPECTED);
});

test('Request message: the stream split at every byte boundary decodes identically', () => {
  for (let cut = 1; cut < CLIENT_STREAM.length; cut++) {
    const r = new Recorder();
    r.decoder.feed(CLIENT_STREAM.subarray(0, cut));
    r.decoder.feed(CLIENT_STREAM.subarray(cut));
    assert.deepEqual(r.events, EXPECTED, `split at byte ${cut}`);
  }
});

test('Request message: the stream fed one byte at a time decodes identically', () => {
  const r = new Recorder();
  for (let i = 0; i < CLIENT_STREAM.length; i++) r.decoder.feed(CLIENT_STREAM.subarray(i, i + 1));
  assert.deepEqual(r.events, EXPECTED);
});

test('borrowed chunks (a socket reading into one reused buffer): bodies are copies and a paused decoder keeps a copy of the rest, at every split', () => {
  const owned = new Recorder();
  owned.decoder.feed(CLIENT_STREAM);
  const want = owned.bodies.map((b) => b.toString('hex'));
  for (let cut = 1; cut < CLIENT_STREAM.length; cut++) {
    for (const pause of [false, true]) {
      const r = new Recorder(true);
      r.pauseOnRequest = pause;
      const lent = Buffer.alloc(CLIENT_STREAM.length);
      for (const [from, to] of [
        [0, cut],
        [cut, CLIENT_STREAM.length],
      ]) {
        CLIENT_STREAM.copy(lent, 0, from, to);
        r.decoder.feed(lent.subarray(0, to - from));
        lent.fill(0xee); // the next read lands in the same memory
        while (r.decoder.isPaused()) r.decoder.resume();
      }
      assert.deepEqual(r.events, EXPECTED, `split at byte ${cut}, pause ${pause}`);
      assert.deepEqual(r.bodies.map((b) => b.toString('hex')), want, `bodies kept, split at byte ${cut}, pause ${pause}`);
      assert.equal(r.decoder.heldBytes(), 0);
    }
  }
});

test('Request message: offset 2^53 is the largest offset marked safe', () => {
  const r = new Recorder();
  r.decoder.feed(hex('00000000 49484156454f5054 00000007 00000000'));
  r.decoder.feed(hex('25609513 0000 0000 0000000000000001 0020000000000000 00000200'));
  const ev = r.events[2];
  assert.equal(ev.kind, 'request');
  assert.equal(ev.kind === 'request' && ev.offsetSafe, true);
});

test('Newstyle negotiation: a bad option magic stops the decoder', () => {
  const r = new Recorder();
  r.decoder.feed(hex('00000001 49484156454f5055 00000003 00000000 49484156454f5054 00000003 00000000'));
  assert.deepEqual(r.events, [
    { kind: 'flags', flags: 1 },
    { kind: 'failure', failure: 'bad-option-magic', option: 0, lengthBytes: 0 },
  ]);
  assert.equal(r.decoder.isStopped(), true);
  r.decoder.feed(hex('00'));
  assert.equal(r.events.length, 2);
});

test('Newstyle negotiation: option data over 64 KiB fails before any data is buffered', () => {
  const r = new Recorder();
  r.decoder.feed(hex('00000001 49484156454f5054 00000001 00010001'));
  assert.deepEqual(r.events[1], { kind: 'failure', failure: 'option-too-large', option: 1, lengthBytes: 0x10001 });
  assert.equal(r.decoder.heldBytes(), 0);
});

test('Newstyle negotiation: option data of exactly 64 KiB is accepted', () => {
  const r = new Recorder();
  r.decoder.feed(hex('00000001 49484156454f5054 00000063 00010000'));
  r.decoder.feed(Buffer.alloc(0x10000));
  assert.equal(r.events[1].kind, 'option');
});

test('Request message: a bad request magic stops the decoder', () => {
  const r = new Recorder();
  r.decoder.feed(hex('00000001 49484156454f5054 00000007 00000000'));
  r.decoder.feed(hex('25609514 0000 0000 0000000000000001 0000000000000000 00000200'));
  assert.deepEqual(r.events[2], { kind: 'failure', failure: 'bad-request-magic', option: 0, lengthBytes: 0 });
});

test('Size constraints: a write over 32 MiB is delivered without data and its payload is skipped, not buffered', () => {
  const r = new Recorder();
  r.decoder.feed(hex('00000001 49484156454f5054 00000007 00000000'));
  const lengthBytes = C.PAYLOAD_BYTES_MAX + 1;
  const header = hex('25609513 0000 0001 0000000000000009 0000000000000000 02000001');
  r.decoder.feed(header);
  assert.equal(r.events.length, 3);
  const zeros = Buffer.alloc(1024 * 1024);
  let sent = 0;
  while (sent < lengthBytes) {
    const n = Math.min(zeros.length, lengthBytes - sent);
    r.decoder.feed(zeros.subarray(0, n));
    assert.ok(r.decoder.heldBytes() === 0, 'skipped payload must not be held');
    sent += n;
  }
  r.decoder.feed(hex('25609513 0000 0003 000000000000000a 0000000000000000 00000000'));
  const [write, flush] = r.events.slice(2);
  assert.deepEqual(write, { kind: 'request', type: 1, flags: 0, cookie: 9n, offset: 0n, offsetSafe: true, lengthBytes, data: null, skipped: true });
  assert.equal(flush.kind === 'request' && flush.type, C.NBD_CMD_FLUSH);
});

test('Decoder: pause() inside a callback holds the rest until resume()', () => {
  const r = new Recorder();
  r.decoder.feed(hex('00000001 49484156454f5054 00000007 00000000'));
  r.pauseOnRequest = true;
  const req = (cookie: string): string => `25609513 0000 0000 ${cookie} 0000000000000000 00000200`;
  r.decoder.feed(hex(req('0000000000000001') + req('0000000000000002') + req('0000000000000003')));
  assert.equal(r.events.length, 3);
  assert.equal(r.decoder.heldBytes(), 56);
  r.decoder.resume();
  assert.equal(r.events.length, 4);
  r.pauseOnRequest = false;
  r.decoder.resume();
  assert.equal(r.events.length, 5);
  assert.equal(r.decoder.heldBytes(), 0);
});
