// Seeded fuzz of the iSCSI PDU framer and decoders (pdu.ts). Streams of valid
// PDUs of every opcode (random fields, AHS, data lengths, digest settings) are
// fed in random chunks, first intact, then mutated (bit flips, overwritten runs,
// length fields set to edge values, truncation, insertion, deletion,
// duplication); pure random byte streams too. PduReader and the decoder matching
// each PDU's opcode must either succeed or throw TesseraError, never anything
// else (RangeError, AssertionError), and no PDU may carry more data than the
// limit. Intact streams must come back PDU for PDU. Replay a run with
// TESSERA_SEED=<seed>.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TesseraError } from '../../stdx/errors.js';
import { Prng, seedFromEnv } from '../../stdx/prng.js';
import {
  OP_DATA_IN,
  OP_DATA_OUT,
  OP_LOGIN_REQ,
  OP_LOGIN_RESP,
  OP_LOGOUT_REQ,
  OP_LOGOUT_RESP,
  OP_NOP_IN,
  OP_NOP_OUT,
  OP_R2T,
  OP_REJECT,
  OP_SCSI_CMD,
  OP_SCSI_RESP,
  OP_TEXT_REQ,
  OP_TEXT_RESP,
  OP_TMF_REQ,
  OP_TMF_RESP,
} from './pdu-types.js';
import type { DigestSettings, InPdu } from './pdu-types.js';
import {
  AHS_BYTES_MAX,
  PduReader,
  decodeDataIn,
  decodeDataOut,
  decodeLoginRequest,
  decodeLoginResponse,
  decodeLogoutRequest,
  decodeLogoutResponse,
  decodeNopIn,
  decodeNopOut,
  decodeR2t,
  decodeReject,
  decodeScsiCommand,
  decodeScsiResponse,
  decodeSenseData,
  decodeTextRequest,
  decodeTextResponse,
  decodeTmfRequest,
  decodeTmfResponse,
  encodeDataIn,
  encodeDataOut,
  encodeLoginRequest,
  encodeLoginResponse,
  encodeLogoutRequest,
  encodeLogoutResponse,
  encodeNopIn,
  encodeNopOut,
  encodeR2t,
  encodeReject,
  encodeScsiCommand,
  encodeScsiResponse,
  encodeTextRequest,
  encodeTextResponse,
  encodeTmfRequest,
  encodeTmfResponse,
  frameToBuffer,
  readHeader,
} from './pdu.js';

const DATA_LIMIT_BYTES = 600;

const DECODERS: Record<number, (p: InPdu) => unknown> = {
  [OP_NOP_OUT]: decodeNopOut,
  [OP_SCSI_CMD]: decodeScsiCommand,
  [OP_TMF_REQ]: decodeTmfRequest,
  [OP_LOGIN_REQ]: decodeLoginRequest,
  [OP_TEXT_REQ]: decodeTextRequest,
  [OP_DATA_OUT]: decodeDataOut,
  [OP_LOGOUT_REQ]: decodeLogoutRequest,
  [OP_NOP_IN]: decodeNopIn,
  [OP_SCSI_RESP]: (p) => [decodeScsiResponse(p), decodeSenseData(p.data)],
  [OP_TMF_RESP]: decodeTmfResponse,
  [OP_LOGIN_RESP]: decodeLoginResponse,
  [OP_TEXT_RESP]: decodeTextResponse,
  [OP_DATA_IN]: decodeDataIn,
  [OP_LOGOUT_RESP]: decodeLogoutResponse,
  [OP_R2T]: decodeR2t,
  [OP_REJECT]: decodeReject,
};

/** A u32 biased toward edges. */
function u32(prng: Prng): number {
  switch (prng.int(4)) {
    case 0:
      return 0;
    case 1:
      return 0xffffffff - prng.int(2);
    case 2:
      return prng.int(100);
    default:
      return prng.u32();
  }
}

function bytes(prng: Prng, n: number): Buffer {
  const b = Buffer.alloc(n);
  prng.fill(b);
  return b;
}

function dataBytes(prng: Prng): number {
  if (prng.chance(0.3)) return 0;
  return prng.chance(0.8) ? prng.int(40) : prng.int(DATA_LIMIT_BYTES + 1);
}

interface Built {
  bhs: Buffer;
  ahs: Buffer | null;
  data: Buffer;
}

/** One valid PDU of a random kind with random fields. */
function randomPdu(prng: Prng): Built {
  const n = dataBytes(prng);
  const data = bytes(prng, n);
  const lun = prng.chance(0.5) ? prng.int(256) : prng.int(16384);
  const b = (): boolean => prng.chance(0.5);
  const trio = { statSN: u32(prng), expCmdSN: u32(prng), maxCmdSN: u32(prng) };
  const isid = bytes(prng, 6);
  const plain = (bhs: Buffer, withData = true): Built => ({ bhs, ahs: null, data: withData ? data : Buffer.alloc(0) });
  switch (prng.int(16)) {
    case 0: {
      const cdbBytes = prng.chance(0.6) ? 6 + prng.int(11) : 17 + prng.int(prng.chance(0.8) ? 48 : 900);
      const cmd = {
        immediate: b(),
        final: b(),
        read: b(),
        write: b(),
        attr: prng.int(8),
        lun,
        itt: u32(prng),
        expectedDataTransferLength: u32(prng),
        cmdSN: u32(prng),
        expStatSN: u32(prng),
        cdb: bytes(prng, cdbBytes),
        bidiReadLength: prng.chance(0.3) ? u32(prng) : null,
      };
      const { bhs, ahs } = encodeScsiCommand(cmd, n);
      return { bhs, ahs, data };
    }
    case 1:
      return plain(encodeDataOut({ final: b(), lun, itt: u32(prng), ttt: u32(prng), expStatSN: u32(prng), dataSN: u32(prng), bufferOffset: u32(prng) }, n));
    case 2:
      return plain(encodeNopOut({ immediate: b(), lun, itt: u32(prng), ttt: u32(prng), cmdSN: u32(prng), expStatSN: u32(prng) }, n));
    case 3:
      return plain(
        encodeTmfRequest({ immediate: b(), func: prng.int(128), lun, itt: u32(prng), referencedTaskTag: u32(prng), cmdSN: u32(prng), expStatSN: u32(prng), refCmdSN: u32(prng), expDataSN: u32(prng) }),
        false,
      );
    case 4:
      return plain(
        encodeLoginRequest(
          { transit: b(), cont: b(), csg: prng.int(4), nsg: prng.int(4), versionMax: prng.int(256), versionMin: prng.int(256), isid, tsih: prng.int(65536), itt: u32(prng), cid: prng.int(65536), cmdSN: u32(prng), expStatSN: u32(prng) },
          n,
        ),
      );
    case 5:
      return plain(encodeTextRequest({ immediate: b(), final: b(), cont: b(), lun, itt: u32(prng), ttt: u32(prng), cmdSN: u32(prng), expStatSN: u32(prng) }, n));
    case 6:
      return plain(encodeLogoutRequest({ immediate: b(), reason: prng.int(128), itt: u32(prng), cid: prng.int(65536), cmdSN: u32(prng), expStatSN: u32(prng) }), false);
    case 7: {
      const o = b();
      return plain(encodeScsiResponse({ itt: u32(prng), response: prng.int(256), status: prng.int(256), overflow: o, underflow: !o && b(), residualCount: u32(prng), expDataSN: u32(prng), ...trio }, n));
    }
    case 8: {
      const hasStatus = b();
      const o = b();
      return plain(
        encodeDataIn(
          { final: hasStatus || b(), hasStatus, status: prng.int(256), overflow: o, underflow: !o && b(), residualCount: u32(prng), lun, itt: u32(prng), ttt: u32(prng), dataSN: u32(prng), bufferOffset: u32(prng), ...trio },
          n,
        ),
      );
    }
    case 9:
      return plain(encodeR2t({ lun, itt: u32(prng), ttt: u32(prng), r2tSN: u32(prng), bufferOffset: u32(prng), desiredDataTransferLength: u32(prng), ...trio }), false);
    case 10:
      return plain(encodeNopIn({ lun, itt: u32(prng), ttt: u32(prng), ...trio }, n));
    case 11:
      return plain(encodeTmfResponse({ itt: u32(prng), response: prng.int(256), ...trio }), false);
    case 12:
      return plain(
        encodeLoginResponse(
          { transit: b(), cont: b(), csg: prng.int(4), nsg: prng.int(4), versionMax: prng.int(256), versionActive: prng.int(256), isid, tsih: prng.int(65536), itt: u32(prng), statusClass: prng.int(256), statusDetail: prng.int(256), ...trio },
          n,
        ),
      );
    case 13:
      return plain(encodeTextResponse({ final: b(), cont: b(), lun, itt: u32(prng), ttt: u32(prng), ...trio }, n));
    case 14:
      return plain(encodeLogoutResponse({ itt: u32(prng), response: prng.int(256), time2Wait: prng.int(65536), time2Retain: prng.int(65536), ...trio }), false);
    default:
      return plain(encodeReject({ reason: prng.int(256), dataSN: u32(prng), ...trio }, n));
  }
}

interface Stream {
  bytes: Buffer;
  pdus: InPdu[];
  /** Offsets where each PDU starts, for targeted mutations. */
  starts: number[];
  digests: DigestSettings;
}

function randomStream(prng: Prng): Stream {
  const digests = { header: prng.chance(0.5), data: prng.chance(0.5) };
  const frames: Buffer[] = [];
  const pdus: InPdu[] = [];
  const starts: number[] = [];
  let at = 0;
  const count = 1 + prng.int(5);
  for (let i = 0; i < count; i++) {
    const { bhs, ahs, data } = randomPdu(prng);
    const frame = frameToBuffer(bhs, ahs, data, digests);
    starts.push(at);
    at += frame.length;
    frames.push(frame);
    pdus.push({ header: readHeader(bhs), bhs, ahs, data, dataDigestOk: true });
  }
  return { bytes: Buffer.concat(frames), pdus, starts, digests };
}

function mutate(prng: Prng, s: Stream): Buffer {
  let b = Buffer.from(s.bytes);
  const rounds = 1 + prng.int(3);
  for (let r = 0; r < rounds; r++) {
    const at = b.length === 0 ? 0 : prng.int(b.length);
    switch (prng.int(8)) {
      case 0:
        if (b.length > 0) b[at] ^= 1 << prng.int(8);
        break;
      case 1: {
        const run = bytes(prng, 1 + prng.int(8));
        run.copy(b, at, 0, Math.min(run.length, b.length - at));
        break;
      }
      case 2: {
        // A length field of some PDU: TotalAHSLength or DataSegmentLength.
        const start = s.starts[prng.int(s.starts.length)];
        const field = start + 4 + prng.int(4);
        if (field < b.length) b[field] = [0, 1, 0x7f, 0x80, 0xff][prng.int(5)];
        break;
      }
      case 3:
        b = b.subarray(0, at);
        break;
      case 4:
        b = Buffer.concat([b.subarray(0, at), bytes(prng, 1 + prng.int(16)), b.subarray(at)]);
        break;
      case 5:
        b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + prng.int(64)))]);
        break;
      case 6:
        b = Buffer.concat([b.subarray(0, at), b.subarray(at, at + prng.int(100)), b.subarray(at)]);
        break;
      default:
        // The byte 0 of a PDU: opcode, I bit, reserved bit.
        b[s.starts[prng.int(s.starts.length)]] = prng.int(256);
        break;
    }
  }
  return b;
}

/** Random cut points, biased toward small chunks. */
function chunks(prng: Prng, b: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  while (at < b.length) {
    const n = prng.chance(0.2) ? b.length - at : 1 + prng.int(prng.chance(0.5) ? 8 : 200);
    out.push(b.subarray(at, at + n));
    at += n;
  }
  return out;
}

interface Outcome {
  pdus: InPdu[];
  error: TesseraError | null;
}

/** Feeds `b` in random chunks; checks each PDU's invariants and decodes it. */
function feed(prng: Prng, b: Buffer, digests: DigestSettings, label: string, hostile: boolean): Outcome {
  // Hostile runs also get a random AHS limit and digest switches between PDUs.
  const maxAhsBytes = hostile && prng.chance(0.2) ? prng.int(AHS_BYTES_MAX + 1) : AHS_BYTES_MAX;
  const reader = new PduReader({ maxDataSegmentBytes: DATA_LIMIT_BYTES, maxAhsBytes });
  reader.setDigests(digests);
  const pdus: InPdu[] = [];
  for (const chunk of chunks(prng, b)) {
    reader.push(chunk);
    for (;;) {
      if (hostile && prng.chance(0.02)) reader.setDigests({ header: prng.chance(0.5), data: prng.chance(0.5) });
      let p: InPdu | null;
      try {
        p = reader.next();
      } catch (err) {
        assert.ok(err instanceof TesseraError, `${label}: reader threw a non-TesseraError: ${String((err as Error)?.stack ?? err)}`);
        assert.equal(err.code, 'ERR_PROTOCOL', label);
        return { pdus, error: err };
      }
      if (p === null) break;
      checkPdu(p, maxAhsBytes, label);
      pdus.push(p);
    }
  }
  return { pdus, error: null };
}

function checkPdu(p: InPdu, maxAhsBytes: number, label: string): void {
  assert.equal(p.bhs.length, 48, label);
  assert.ok(p.data.length <= DATA_LIMIT_BYTES, `${label}: ${p.data.length} data bytes over the limit`);
  assert.equal(p.data.length, p.header.dataSegmentBytes, label);
  assert.equal(p.ahs?.length ?? 0, p.header.totalAhsBytes, label);
  assert.ok(p.header.totalAhsBytes <= maxAhsBytes, label);
  assert.equal(p.bhs[0] & 0x80, 0, `${label}: reserved bit accepted`);
  const decode = DECODERS[p.header.opcode];
  if (decode === undefined) return;
  try {
    decode(p);
  } catch (err) {
    assert.ok(err instanceof TesseraError, `${label}: decoder for 0x${p.header.opcode.toString(16)} threw a non-TesseraError: ${String((err as Error)?.stack ?? err)}`);
  }
}

test('fuzz: PduReader and decoders accept valid streams and fail mutated ones only with TesseraError', (t) => {
  const seed = seedFromEnv();
  t.diagnostic(`seed ${seed} (replay with TESSERA_SEED=${seed})`);
  const prng = new Prng(seed);
  const iterations = 2000;
  const t0 = performance.now();
  let refused = 0;
  let pdusSeen = 0;
  for (let iter = 0; iter < iterations; iter++) {
    const label = `seed ${seed} iteration ${iter}`;
    const s = randomStream(prng);
    const intact = feed(prng, s.bytes, s.digests, `${label} (intact)`, false);
    assert.equal(intact.error, null, `${label}: valid stream refused: ${intact.error?.message}`);
    assert.deepEqual(intact.pdus, s.pdus, `${label}: valid stream framed differently`);
    const mutated = feed(prng, mutate(prng, s), s.digests, `${label} (mutated)`, prng.chance(0.2));
    if (mutated.error !== null) refused++;
    pdusSeen += mutated.pdus.length;
    const garbage = bytes(prng, prng.int(prng.chance(0.5) ? 100 : 2000));
    // Half the garbage gets a plausible byte 0 and small lengths so framing goes further.
    if (garbage.length >= 8 && prng.chance(0.5)) {
      garbage[0] &= 0x7f;
      garbage[4] = prng.int(3);
      garbage[5] = 0;
      garbage[6] = prng.int(3);
    }
    const g = feed(prng, garbage, { header: prng.chance(0.5), data: prng.chance(0.5) }, `${label} (garbage)`, true);
    if (g.error !== null) refused++;
    pdusSeen += g.pdus.length;
  }
  const elapsedMs = performance.now() - t0;
  t.diagnostic(`${iterations} iterations in ${elapsedMs.toFixed(0)} ms; ${refused} refused streams, ${pdusSeen} PDUs from mutated/garbage streams`);
  assert.ok(refused > 0 && pdusSeen > 0, 'the fuzz exercised neither refusals nor acceptances');
});
