// Tests of the iSCSI PDU codec (pdu.ts). Golden byte arrays are written by hand
// from the RFC 7143 §11 field layouts (byte offsets in the comments), never
// produced by our encoders; CRC32C vectors come from RFC 3720 Appendix B.4
// (the same examples RFC 7143 carries forward). Digests are checked as they
// appear on the wire: least-significant byte first.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32c } from '../../stdx/crc32c.js';
import { TesseraError } from '../../stdx/errors.js';
import {
  BHS_BYTES,
  OP_LOGIN_REQ,
  OP_NOP_OUT,
  OP_SCSI_CMD,
  TAG_NONE,
} from './pdu-types.js';
import type {
  DataInFields,
  DataOutPdu,
  DigestSettings,
  InPdu,
  LoginRequestPdu,
  LoginResponseFields,
  LogoutRequestPdu,
  LogoutResponseFields,
  NopInFields,
  NopOutPdu,
  R2tFields,
  RejectFields,
  ScsiCommandPdu,
  ScsiResponseFields,
  TextRequestPdu,
  TextResponseFields,
  TmfRequestPdu,
  TmfResponseFields,
} from './pdu-types.js';
import {
  PduFramingError,
  PduReader,
  decodeDataIn,
  decodeDataOut,
  decodeLoginRequest,
  decodeLoginResponse,
  decodeLogoutRequest,
  decodeLogoutResponse,
  decodeLun,
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
  encodeLun,
  encodeNopIn,
  encodeNopOut,
  encodeR2t,
  encodeReject,
  encodeScsiCommand,
  encodeScsiResponse,
  encodeSenseData,
  encodeTextRequest,
  encodeTextResponse,
  encodeTmfRequest,
  encodeTmfResponse,
  framePdu,
  frameToBuffer,
  readHeader,
} from './pdu.js';

const NO_DIGESTS: DigestSettings = { header: false, data: false };
const BOTH_DIGESTS: DigestSettings = { header: true, data: true };

/** Bytes from a dump laid out like the RFC figures; whitespace and '|' are ignored. */
function wire(dump: string): Buffer {
  const hex = dump.replace(/[\s|]/g, '');
  assert.match(hex, /^([0-9a-f]{2})*$/i, 'bad hex dump');
  return Buffer.from(hex, 'hex');
}

function le32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
}

function framingKind(kind: string): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof PduFramingError, `expected PduFramingError, got ${String(err)}`);
    assert.ok(err instanceof TesseraError);
    assert.equal(err.code, 'ERR_PROTOCOL');
    assert.equal(err.kind, kind);
    return true;
  };
}

function drain(reader: PduReader): InPdu[] {
  const out: InPdu[] = [];
  for (let p = reader.next(); p !== null; p = reader.next()) out.push(p);
  return out;
}

// ---------------------------------------------------------------------------
// CRC32C (RFC 3720 App. B.4; RFC 7143 §13.1 for digest coverage)

/** The SCSI Read (10) Command PDU of RFC 3720 App. B.4, as printed there. */
const RFC_READ10_PDU = wire(`
  01 c0 00 00 | 00 00 00 00 | 00 00 00 00 | 00 00 00 00
  14 00 00 00 | 00 00 04 00 | 00 00 00 14 | 00 00 00 18
  28 00 00 00 | 00 00 00 00 | 02 00 00 00 | 00 00 00 00`);

test('CRC32C vectors of RFC 3720 App. B.4, little-endian on the wire', () => {
  const incrementing = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
  const decrementing = Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i));
  const vectors: [string, Buffer, string][] = [
    ['32 bytes of zeros', Buffer.alloc(32), 'aa 36 91 8a'],
    ['32 bytes of ones', Buffer.alloc(32, 0xff), '43 ab a8 62'],
    ['32 incrementing bytes', incrementing, '4e 79 dd 46'],
    ['32 decrementing bytes', decrementing, '5c db 3f 11'],
    ['SCSI Read (10) Command PDU', RFC_READ10_PDU, '56 3a 96 d9'],
  ];
  for (const [label, bytes, onWire] of vectors) {
    assert.deepEqual(le32(crc32c(bytes)), wire(onWire), label);
  }
});

test('HeaderDigest of the RFC read PDU is 56 3a 96 d9 after the BHS (RFC 7143 §11.2.3, §13.1)', () => {
  const { bhs, ahs } = encodeScsiCommand(
    {
      immediate: false,
      final: true,
      read: true,
      write: false,
      attr: 0,
      lun: 0,
      itt: 0x14000000,
      expectedDataTransferLength: 1024,
      cmdSN: 0x14,
      expStatSN: 0x18,
      cdb: wire('28 00 00 00 00 00 00 00 02 00'),
      bidiReadLength: null,
    },
    0,
  );
  assert.equal(ahs, null);
  assert.deepEqual(bhs, RFC_READ10_PDU);
  const framed = frameToBuffer(bhs, null, null, BOTH_DIGESTS);
  // No data segment: no DataDigest either.
  assert.deepEqual(framed, Buffer.concat([RFC_READ10_PDU, wire('56 3a 96 d9')]));
});

test('DataDigest covers data and padding, little-endian (RFC 7143 §11.2.3, §13.1)', () => {
  const bhs = encodeNopIn({ lun: 0, itt: TAG_NONE, ttt: 1, statSN: 0, expCmdSN: 0, maxCmdSN: 0 }, 32);
  const framed = frameToBuffer(bhs, null, Buffer.alloc(32), { header: false, data: true });
  assert.deepEqual(framed.subarray(48 + 32), wire('aa 36 91 8a'));
  // 30 data bytes + 2 pad bytes: the digest equals the one over 32 zero bytes.
  const bhs2 = encodeNopIn({ lun: 0, itt: TAG_NONE, ttt: 1, statSN: 0, expCmdSN: 0, maxCmdSN: 0 }, 30);
  const parts = framePdu(bhs2, null, Buffer.alloc(30), { header: false, data: true });
  assert.deepEqual(
    parts.map((p) => p.length),
    [48, 30, 2, 4],
  );
  assert.deepEqual(parts[3], wire('aa 36 91 8a'));
});

// ---------------------------------------------------------------------------
// Golden bytes for every PDU we send, and the initiator PDUs we read

test('golden: SCSI Command with extended CDB and bidirectional read AHS (RFC 7143 §11.3, §11.2.2.3, §11.2.2.4)', () => {
  // A 32-byte CDB: 16 bytes in the BHS, 16 in an AHS of type 1 with
  // AHSLength = 32 - 15 = 17 (reserved byte + 16 CDB bytes), 20 bytes in all.
  // Then an AHS of type 2, AHSLength 5, read length 0x00010000.
  const cdb = Buffer.from(Array.from({ length: 32 }, (_, i) => 0xa0 + i));
  const { bhs, ahs } = encodeScsiCommand(
    {
      immediate: true,
      final: true,
      read: true,
      write: true,
      attr: 1,
      lun: 2,
      itt: 0x01020304,
      expectedDataTransferLength: 0x2000,
      cmdSN: 0x10,
      expStatSN: 0x20,
      cdb,
      bidiReadLength: 0x10000,
    },
    0x200,
  );
  assert.deepEqual(
    bhs,
    wire(`
      41 e1 00 00 | 07 00 02 00 | 00 02 00 00 | 00 00 00 00
      01 02 03 04 | 00 00 20 00 | 00 00 00 10 | 00 00 00 20
      a0 a1 a2 a3 | a4 a5 a6 a7 | a8 a9 aa ab | ac ad ae af`),
  );
  assert.deepEqual(
    ahs,
    wire(`
      00 11 01 00 | b0 b1 b2 b3 | b4 b5 b6 b7 | b8 b9 ba bb | bc bd be bf
      00 05 02 00 | 00 01 00 00`),
  );
  // An 18-byte CDB: AHSLength 3, two CDB bytes, two pad bytes.
  const short = encodeScsiCommand(
    { ...decodeScsiCommand(bhs, ahs), cdb: cdb.subarray(0, 18), bidiReadLength: null },
    0,
  );
  assert.deepEqual(short.ahs, wire('00 03 01 00 | b0 b1 00 00'));
  assert.equal(short.bhs[4], 2);
});

test('golden: SCSI Response with sense data (RFC 7143 §11.4, §11.4.7)', () => {
  // Fixed-format sense: ILLEGAL REQUEST, INVALID FIELD IN CDB.
  const sense = wire('70 00 05 00 00 00 00 0a 00 00 00 00 24 00 00 00 00 00');
  const data = encodeSenseData(sense);
  assert.deepEqual(data, Buffer.concat([wire('00 12'), sense]));
  const f: ScsiResponseFields = {
    itt: 0x11223344,
    response: 0,
    status: 0x02,
    overflow: false,
    underflow: true,
    residualCount: 0x200,
    expDataSN: 3,
    statSN: 7,
    expCmdSN: 8,
    maxCmdSN: 0x47,
  };
  const framed = frameToBuffer(encodeScsiResponse(f, data.length), null, data, NO_DIGESTS);
  assert.deepEqual(
    framed,
    Buffer.concat([
      wire(`
        21 82 00 02 | 00 00 00 14 | 00 00 00 00 | 00 00 00 00
        11 22 33 44 | 00 00 00 00 | 00 00 00 07 | 00 00 00 08
        00 00 00 47 | 00 00 00 03 | 00 00 00 00 | 00 00 02 00`),
      data,
    ]),
  );
  assert.deepEqual(decodeSenseData(data), sense);
});

test('golden: Data-In with status, and without (RFC 7143 §11.7)', () => {
  const withStatus: DataInFields = {
    final: true,
    hasStatus: true,
    status: 0,
    overflow: false,
    underflow: true,
    residualCount: 0x200,
    lun: 1,
    itt: 0x1000,
    ttt: TAG_NONE,
    dataSN: 2,
    bufferOffset: 0x4000,
    statSN: 9,
    expCmdSN: 10,
    maxCmdSN: 73,
  };
  const data = Buffer.from('abcde');
  assert.deepEqual(
    frameToBuffer(encodeDataIn(withStatus, data.length), null, data, NO_DIGESTS),
    wire(`
      25 83 00 00 | 00 00 00 05 | 00 01 00 00 | 00 00 00 00
      00 00 10 00 | ff ff ff ff | 00 00 00 09 | 00 00 00 0a
      00 00 00 49 | 00 00 00 02 | 00 00 40 00 | 00 00 02 00
      61 62 63 64 | 65 00 00 00`),
  );
  // Without S: StatSN, status, O/U and residual are reserved, so zero.
  const noStatus = { ...withStatus, final: false, hasStatus: false, status: 0x02 };
  assert.deepEqual(
    encodeDataIn(noStatus, 8),
    wire(`
      25 00 00 00 | 00 00 00 08 | 00 01 00 00 | 00 00 00 00
      00 00 10 00 | ff ff ff ff | 00 00 00 00 | 00 00 00 0a
      00 00 00 49 | 00 00 00 02 | 00 00 40 00 | 00 00 00 00`),
  );
});

test('golden: R2T with a flat-space LUN (RFC 7143 §11.8, SAM-5 §4.7)', () => {
  const f: R2tFields = {
    lun: 300,
    itt: 0xdeadbeef,
    ttt: 0x00000007,
    r2tSN: 1,
    bufferOffset: 0x10000,
    desiredDataTransferLength: 0x40000,
    statSN: 5,
    expCmdSN: 6,
    maxCmdSN: 0x45,
  };
  assert.deepEqual(
    encodeR2t(f),
    wire(`
      31 80 00 00 | 00 00 00 00 | 41 2c 00 00 | 00 00 00 00
      de ad be ef | 00 00 00 07 | 00 00 00 05 | 00 00 00 06
      00 00 00 45 | 00 00 00 01 | 00 01 00 00 | 00 04 00 00`),
  );
});

const ISID = wire('80 12 34 56 00 01');

test('golden: Login Request and Login Response (RFC 7143 §11.12, §11.13)', () => {
  const text = Buffer.from('InitiatorName=iqn.x\0');
  const req: LoginRequestPdu = {
    transit: true,
    cont: false,
    csg: 1,
    nsg: 3,
    versionMax: 0,
    versionMin: 0,
    isid: ISID,
    tsih: 0,
    itt: 0x00000001,
    cid: 1,
    cmdSN: 0x100,
    expStatSN: 0,
  };
  assert.deepEqual(
    frameToBuffer(encodeLoginRequest(req, text.length), null, text, NO_DIGESTS),
    Buffer.concat([
      wire(`
        43 87 00 00 | 00 00 00 14 | 80 12 34 56 | 00 01 00 00
        00 00 00 01 | 00 01 00 00 | 00 00 01 00 | 00 00 00 00
        00 00 00 00 | 00 00 00 00 | 00 00 00 00 | 00 00 00 00`),
      text,
    ]),
  );
  const resp: LoginResponseFields = {
    transit: true,
    cont: false,
    csg: 1,
    nsg: 3,
    versionMax: 0,
    versionActive: 0,
    isid: ISID,
    tsih: 0x0005,
    itt: 0x00000001,
    statSN: 0x11,
    expCmdSN: 0x100,
    maxCmdSN: 0x13f,
    statusClass: 0,
    statusDetail: 0,
  };
  assert.deepEqual(
    encodeLoginResponse(resp, 0x21),
    wire(`
      23 87 00 00 | 00 00 00 21 | 80 12 34 56 | 00 01 00 05
      00 00 00 01 | 00 00 00 00 | 00 00 00 11 | 00 00 01 00
      00 00 01 3f | 00 00 00 00 | 00 00 00 00 | 00 00 00 00`),
  );
  // A failed login: class 2 (initiator error), detail 1 (authentication failure), no T.
  assert.deepEqual(
    encodeLoginResponse({ ...resp, transit: false, csg: 0, nsg: 0, tsih: 0, statusClass: 2, statusDetail: 1 }, 0),
    wire(`
      23 00 00 00 | 00 00 00 00 | 80 12 34 56 | 00 01 00 00
      00 00 00 01 | 00 00 00 00 | 00 00 00 11 | 00 00 01 00
      00 00 01 3f | 02 01 00 00 | 00 00 00 00 | 00 00 00 00`),
  );
});

test('golden: Text Response with padding (RFC 7143 §11.11, §11.2.4)', () => {
  const text = Buffer.from('TargetName=iqn.t\0'); // 17 bytes: 3 pad bytes
  const f: TextResponseFields = { final: true, cont: false, lun: 0, itt: 0x22, ttt: TAG_NONE, statSN: 1, expCmdSN: 2, maxCmdSN: 3 };
  assert.deepEqual(
    frameToBuffer(encodeTextResponse(f, text.length), null, text, NO_DIGESTS),
    Buffer.concat([
      wire(`
        24 80 00 00 | 00 00 00 11 | 00 00 00 00 | 00 00 00 00
        00 00 00 22 | ff ff ff ff | 00 00 00 01 | 00 00 00 02
        00 00 00 03 | 00 00 00 00 | 00 00 00 00 | 00 00 00 00`),
      text,
      wire('00 00 00'),
    ]),
  );
  // More to come: C set, F clear, our TTT.
  assert.deepEqual(encodeTextResponse({ ...f, final: false, cont: true, ttt: 0x99 }, 0).subarray(0, 24), wire(`
    24 40 00 00 | 00 00 00 00 | 00 00 00 00 | 00 00 00 00 | 00 00 00 22 | 00 00 00 99`));
});

test('golden: NOP-In, TMF Response, Logout Response, Reject (RFC 7143 §11.19, §11.6, §11.15, §11.17)', () => {
  const nop: NopInFields = { lun: 0, itt: TAG_NONE, ttt: 0xabc, statSN: 0x10, expCmdSN: 0x20, maxCmdSN: 0x5f };
  assert.deepEqual(
    encodeNopIn(nop, 0),
    wire(`
      20 80 00 00 | 00 00 00 00 | 00 00 00 00 | 00 00 00 00
      ff ff ff ff | 00 00 0a bc | 00 00 00 10 | 00 00 00 20
      00 00 00 5f | 00 00 00 00 | 00 00 00 00 | 00 00 00 00`),
  );
  const tmf: TmfResponseFields = { itt: 0x77, response: 1, statSN: 4, expCmdSN: 5, maxCmdSN: 6 };
  assert.deepEqual(
    encodeTmfResponse(tmf),
    wire(`
      22 80 01 00 | 00 00 00 00 | 00 00 00 00 | 00 00 00 00
      00 00 00 77 | 00 00 00 00 | 00 00 00 04 | 00 00 00 05
      00 00 00 06 | 00 00 00 00 | 00 00 00 00 | 00 00 00 00`),
  );
  const logout: LogoutResponseFields = { itt: 0x78, response: 0, time2Wait: 2, time2Retain: 20, statSN: 4, expCmdSN: 5, maxCmdSN: 6 };
  assert.deepEqual(
    encodeLogoutResponse(logout),
    wire(`
      26 80 00 00 | 00 00 00 00 | 00 00 00 00 | 00 00 00 00
      00 00 00 78 | 00 00 00 00 | 00 00 00 04 | 00 00 00 05
      00 00 00 06 | 00 00 00 00 | 00 02 00 14 | 00 00 00 00`),
  );
  const rejected = RFC_READ10_PDU;
  const reject: RejectFields = { reason: 0x04, dataSN: 0, statSN: 4, expCmdSN: 5, maxCmdSN: 6 };
  assert.deepEqual(
    frameToBuffer(encodeReject(reject, rejected.length), null, rejected, NO_DIGESTS),
    Buffer.concat([
      wire(`
        3f 80 04 00 | 00 00 00 30 | 00 00 00 00 | 00 00 00 00
        ff ff ff ff | 00 00 00 00 | 00 00 00 04 | 00 00 00 05
        00 00 00 06 | 00 00 00 00 | 00 00 00 00 | 00 00 00 00`),
      rejected,
    ]),
  );
});

test('golden: initiator PDUs NOP-Out, Data-Out, TMF, Text, Logout requests (RFC 7143 §11.18, §11.7, §11.5, §11.10, §11.14)', () => {
  assert.deepEqual(
    encodeNopOut({ immediate: true, lun: 0, itt: 5, ttt: TAG_NONE, cmdSN: 9, expStatSN: 3 }, 4),
    wire(`
      40 80 00 00 | 00 00 00 04 | 00 00 00 00 | 00 00 00 00
      00 00 00 05 | ff ff ff ff | 00 00 00 09 | 00 00 00 03
      00 00 00 00 | 00 00 00 00 | 00 00 00 00 | 00 00 00 00`),
  );
  assert.deepEqual(
    encodeDataOut({ final: true, lun: 3, itt: 6, ttt: 0x1234, expStatSN: 3, dataSN: 1, bufferOffset: 0x2000 }, 0x2000),
    wire(`
      05 80 00 00 | 00 00 20 00 | 00 03 00 00 | 00 00 00 00
      00 00 00 06 | 00 00 12 34 | 00 00 00 00 | 00 00 00 03
      00 00 00 00 | 00 00 00 01 | 00 00 20 00 | 00 00 00 00`),
  );
  assert.deepEqual(
    encodeTmfRequest({ immediate: true, func: 1, lun: 0, itt: 7, referencedTaskTag: 6, cmdSN: 10, expStatSN: 3, refCmdSN: 8, expDataSN: 0 }),
    wire(`
      42 81 00 00 | 00 00 00 00 | 00 00 00 00 | 00 00 00 00
      00 00 00 07 | 00 00 00 06 | 00 00 00 0a | 00 00 00 03
      00 00 00 08 | 00 00 00 00 | 00 00 00 00 | 00 00 00 00`),
  );
  assert.deepEqual(
    encodeTextRequest({ immediate: false, final: true, cont: false, lun: 0, itt: 8, ttt: TAG_NONE, cmdSN: 11, expStatSN: 3 }, 16),
    wire(`
      04 80 00 00 | 00 00 00 10 | 00 00 00 00 | 00 00 00 00
      00 00 00 08 | ff ff ff ff | 00 00 00 0b | 00 00 00 03
      00 00 00 00 | 00 00 00 00 | 00 00 00 00 | 00 00 00 00`),
  );
  assert.deepEqual(
    encodeLogoutRequest({ immediate: true, reason: 0, itt: 9, cid: 1, cmdSN: 12, expStatSN: 3 }),
    wire(`
      46 80 00 00 | 00 00 00 00 | 00 00 00 00 | 00 00 00 00
      00 00 00 09 | 00 01 00 00 | 00 00 00 0c | 00 00 00 03
      00 00 00 00 | 00 00 00 00 | 00 00 00 00 | 00 00 00 00`),
  );
});

test('framePdu sets TotalAHSLength and DataSegmentLength and orders the pieces (RFC 7143 §11.2)', () => {
  const cdb = Buffer.alloc(32, 0x11); // AHS: 4 + 16 bytes
  const { bhs, ahs } = encodeScsiCommand({ ...sampleScsiCommand(), cdb }, 0); // declared 0: framePdu corrects it
  const data = Buffer.from('xyz');
  const parts = framePdu(bhs, ahs, data, BOTH_DIGESTS);
  assert.deepEqual(
    parts.map((p) => p.length),
    [48, 20, 4, 3, 1, 4],
  );
  assert.equal(bhs[4], 5);
  assert.deepEqual(bhs.subarray(5, 8), wire('00 00 03'));
  assert.deepEqual(parts[2], le32(crc32c(Buffer.concat([bhs, ahs!]))));
  assert.deepEqual(parts[5], le32(crc32c(Buffer.from('xyz\0'))));
  // Zero-length data: neither padding nor DataDigest.
  assert.deepEqual(
    framePdu(encodeNopIn({ lun: 0, itt: 1, ttt: TAG_NONE, statSN: 0, expCmdSN: 0, maxCmdSN: 0 }, 0), null, Buffer.alloc(0), BOTH_DIGESTS).map((p) => p.length),
    [48, 4],
  );
});

// ---------------------------------------------------------------------------
// LUN addressing (SAM-5 §4.7)

test('LUN: peripheral below 256, flat up to 16383, anything else is -1 (SAM-5 §4.7)', () => {
  const b = Buffer.alloc(8);
  for (const [lun, bytes] of [
    [0, '00 00'],
    [255, '00 ff'],
    [256, '41 00'],
    [16383, '7f ff'],
  ] as const) {
    encodeLun(lun, b, 0);
    assert.deepEqual(b, wire(`${bytes} 00 00 00 00 00 00`), `LUN ${lun}`);
    assert.equal(decodeLun(b, 0), lun);
  }
  assert.equal(decodeLun(wire('40 05 00 00 00 00 00 00'), 0), 5, 'flat addressing of a small LUN');
  assert.equal(decodeLun(wire('01 05 00 00 00 00 00 00'), 0), -1, 'peripheral with bus 1');
  assert.equal(decodeLun(wire('80 05 00 00 00 00 00 00'), 0), -1, 'logical unit addressing');
  assert.equal(decodeLun(wire('c0 05 00 00 00 00 00 00'), 0), -1, 'extended addressing');
  assert.equal(decodeLun(wire('00 05 00 01 00 00 00 00'), 0), -1, 'second level');
  assert.equal(decodeLun(wire('00 00 00 00 00 00 00 01'), 0), -1, 'fourth level');
  const bhs = Buffer.alloc(48);
  encodeLun(7, bhs, 8);
  assert.equal(decodeLun(bhs), 7, 'default offset 8');
});

// ---------------------------------------------------------------------------
// Round trips

function sampleScsiCommand(): ScsiCommandPdu {
  return {
    immediate: false,
    final: true,
    read: false,
    write: true,
    attr: 1,
    lun: 256,
    itt: TAG_NONE - 1,
    expectedDataTransferLength: 0xffffffff,
    cmdSN: 0xffffffff,
    expStatSN: 0,
    cdb: Buffer.from(Array.from({ length: 20 }, (_, i) => i + 1)),
    bidiReadLength: null,
  };
}

/** Encodes, frames, reads back through a PduReader and decodes. */
function throughReader(bhs: Buffer, ahs: Buffer | null, data: Buffer | null, digests: DigestSettings): InPdu {
  const reader = new PduReader({ maxDataSegmentBytes: 1 << 16 });
  reader.setDigests(digests);
  reader.push(frameToBuffer(bhs, ahs, data, digests));
  const got = drain(reader);
  assert.equal(got.length, 1);
  assert.equal(reader.bufferedBytes, 0);
  assert.equal(got[0].dataDigestOk, true);
  return got[0];
}

test('round trip: SCSI Command with 16-, 20- and 260-byte CDBs and bidi length (RFC 7143 §11.3, §11.2.2)', () => {
  for (const cdbBytes of [16, 17, 20, 260]) {
    for (const bidiReadLength of [null, 0, 0xffffffff]) {
      const f: ScsiCommandPdu = { ...sampleScsiCommand(), cdb: Buffer.from(Array.from({ length: cdbBytes }, (_, i) => (i * 7) & 0xff)), bidiReadLength };
      const { bhs, ahs } = encodeScsiCommand(f, 3);
      assert.deepEqual(decodeScsiCommand(bhs, ahs), f);
      const p = throughReader(bhs, ahs, Buffer.from('abc'), BOTH_DIGESTS);
      assert.deepEqual(decodeScsiCommand(p), f);
      assert.deepEqual(p.data, Buffer.from('abc'));
    }
  }
  // A short CDB comes back zero-padded to 16 bytes.
  const six = { ...sampleScsiCommand(), cdb: wire('12 00 00 00 24 00') };
  assert.deepEqual(decodeScsiCommand(encodeScsiCommand(six, 0).bhs).cdb, Buffer.concat([six.cdb, Buffer.alloc(10)]));
});

test('round trip: every other initiator PDU (RFC 7143 §11.5, §11.7, §11.10, §11.12, §11.14, §11.18)', () => {
  const dataOut: DataOutPdu = { final: false, lun: 16383, itt: 1, ttt: 0xfffffffe, expStatSN: 0xffffffff, dataSN: 7, bufferOffset: 0x7fff0000 };
  assert.deepEqual(decodeDataOut(throughReader(encodeDataOut(dataOut, 5), null, Buffer.alloc(5, 1), BOTH_DIGESTS)), dataOut);
  const nop: NopOutPdu = { immediate: true, lun: 0, itt: TAG_NONE, ttt: 0x10, cmdSN: 3, expStatSN: 4 };
  assert.deepEqual(decodeNopOut(throughReader(encodeNopOut(nop, 0), null, null, NO_DIGESTS)), nop);
  const tmf: TmfRequestPdu = { immediate: true, func: 5, lun: 12, itt: 2, referencedTaskTag: TAG_NONE, cmdSN: 5, expStatSN: 6, refCmdSN: 7, expDataSN: 8 };
  assert.deepEqual(decodeTmfRequest(throughReader(encodeTmfRequest(tmf), null, null, BOTH_DIGESTS)), tmf);
  const login: LoginRequestPdu = { transit: false, cont: true, csg: 0, nsg: 1, versionMax: 0, versionMin: 0, isid: ISID, tsih: 0xffff, itt: 3, cid: 0xffff, cmdSN: 1, expStatSN: 2 };
  assert.deepEqual(decodeLoginRequest(throughReader(encodeLoginRequest(login, 7), null, Buffer.from('a=b\0c=d'), NO_DIGESTS)), login);
  const text: TextRequestPdu = { immediate: false, final: false, cont: true, lun: 1, itt: 4, ttt: 5, cmdSN: 6, expStatSN: 7 };
  assert.deepEqual(decodeTextRequest(throughReader(encodeTextRequest(text, 1), null, Buffer.from('x'), BOTH_DIGESTS)), text);
  const logout: LogoutRequestPdu = { immediate: false, reason: 2, itt: 5, cid: 9, cmdSN: 10, expStatSN: 11 };
  assert.deepEqual(decodeLogoutRequest(throughReader(encodeLogoutRequest(logout), null, null, NO_DIGESTS)), logout);
});

test('round trip: every target PDU (RFC 7143 §11.4, §11.6, §11.7, §11.8, §11.11, §11.13, §11.15, §11.17, §11.19)', () => {
  const resp: ScsiResponseFields = { itt: 1, response: 1, status: 0x18, overflow: true, underflow: false, residualCount: 0xffffffff, expDataSN: 2, statSN: 3, expCmdSN: 4, maxCmdSN: 5 };
  assert.deepEqual(decodeScsiResponse(throughReader(encodeScsiResponse(resp, 0), null, null, BOTH_DIGESTS)), resp);
  const dataIn: DataInFields = { final: true, hasStatus: true, status: 0x02, overflow: true, underflow: false, residualCount: 9, lun: 4, itt: 5, ttt: TAG_NONE, dataSN: 6, bufferOffset: 7, statSN: 8, expCmdSN: 9, maxCmdSN: 10 };
  assert.deepEqual(decodeDataIn(throughReader(encodeDataIn(dataIn, 3), null, Buffer.alloc(3), BOTH_DIGESTS)), dataIn);
  const dataInNoStatus: DataInFields = { ...dataIn, final: false, hasStatus: false, status: 0, overflow: false, residualCount: 0, statSN: 0 };
  assert.deepEqual(decodeDataIn(encodeDataIn(dataInNoStatus, 0)), dataInNoStatus);
  const r2t: R2tFields = { lun: 0, itt: 1, ttt: 2, r2tSN: 3, bufferOffset: 4, desiredDataTransferLength: 5, statSN: 6, expCmdSN: 7, maxCmdSN: 8 };
  assert.deepEqual(decodeR2t(throughReader(encodeR2t(r2t), null, null, NO_DIGESTS)), r2t);
  const nop: NopInFields = { lun: 1, itt: 2, ttt: TAG_NONE, statSN: 3, expCmdSN: 4, maxCmdSN: 5 };
  assert.deepEqual(decodeNopIn(throughReader(encodeNopIn(nop, 2), null, Buffer.alloc(2), BOTH_DIGESTS)), nop);
  const tmf: TmfResponseFields = { itt: 1, response: 255, statSN: 2, expCmdSN: 3, maxCmdSN: 4 };
  assert.deepEqual(decodeTmfResponse(throughReader(encodeTmfResponse(tmf), null, null, NO_DIGESTS)), tmf);
  const login: LoginResponseFields = { transit: true, cont: false, csg: 0, nsg: 1, versionMax: 0, versionActive: 0, isid: ISID, tsih: 1, itt: 2, statSN: 3, expCmdSN: 4, maxCmdSN: 5, statusClass: 3, statusDetail: 2 };
  assert.deepEqual(decodeLoginResponse(throughReader(encodeLoginResponse(login, 4), null, Buffer.from('a=b\0'), NO_DIGESTS)), login);
  const text: TextResponseFields = { final: false, cont: true, lun: 0, itt: 1, ttt: 2, statSN: 3, expCmdSN: 4, maxCmdSN: 5 };
  assert.deepEqual(decodeTextResponse(throughReader(encodeTextResponse(text, 0), null, null, BOTH_DIGESTS)), text);
  const logout: LogoutResponseFields = { itt: 1, response: 3, time2Wait: 3600, time2Retain: 0xffff, statSN: 2, expCmdSN: 3, maxCmdSN: 4 };
  assert.deepEqual(decodeLogoutResponse(throughReader(encodeLogoutResponse(logout), null, null, NO_DIGESTS)), logout);
  const reject: RejectFields = { reason: 9, dataSN: 0xffffffff, statSN: 1, expCmdSN: 2, maxCmdSN: 3 };
  const p = throughReader(encodeReject(reject, 48), null, RFC_READ10_PDU, BOTH_DIGESTS);
  assert.deepEqual(decodeReject(p), reject);
  assert.deepEqual(p.data, RFC_READ10_PDU);
  assert.equal(p.header.itt, TAG_NONE);
});

test('sense data: empty, round trip, SenseLength beyond the segment is ERR_PROTOCOL (RFC 7143 §11.4.7)', () => {
  assert.deepEqual(decodeSenseData(Buffer.alloc(0)), Buffer.alloc(0));
  assert.deepEqual(encodeSenseData(Buffer.alloc(0)), wire('00 00'));
  const sense = Buffer.alloc(252, 0x5a);
  assert.deepEqual(decodeSenseData(encodeSenseData(sense)), sense);
  assert.throws(() => decodeSenseData(wire('00 05 01 02')), (e: unknown) => e instanceof TesseraError && e.code === 'ERR_PROTOCOL');
  assert.throws(() => decodeSenseData(wire('00')), (e: unknown) => e instanceof TesseraError && e.code === 'ERR_PROTOCOL');
});

test('readHeader reads the fields every PDU shares (RFC 7143 §11.2.1)', () => {
  const { bhs, ahs } = encodeScsiCommand({ ...sampleScsiCommand(), immediate: true }, 0x123456);
  assert.deepEqual(readHeader(bhs), {
    opcode: OP_SCSI_CMD,
    immediate: true,
    final: true,
    totalAhsBytes: ahs!.length,
    dataSegmentBytes: 0x123456,
    itt: TAG_NONE - 1,
  });
  assert.equal(readHeader(encodeLoginRequest({ transit: false, cont: false, csg: 0, nsg: 0, versionMax: 0, versionMin: 0, isid: ISID, tsih: 0, itt: 0, cid: 0, cmdSN: 0, expStatSN: 0 }, 0)).opcode, OP_LOGIN_REQ);
});

// ---------------------------------------------------------------------------
// Malformed AHS (RFC 7143 §11.2.2)

test('malformed AHS is a bad-ahs PduFramingError (RFC 7143 §11.2.2.1-§11.2.2.4)', () => {
  const { bhs } = encodeScsiCommand({ ...sampleScsiCommand(), cdb: Buffer.alloc(16) }, 0);
  const cases: [string, string][] = [
    ['AHSLength overruns TotalAHSLength', '00 09 01 00 | 01 02 03 04'],
    ['extended CDB AHSLength 1 (no CDB bytes)', '00 01 01 00'],
    ['extended CDB AHSLength 0', '00 00 01 00'],
    ['bidi AHSLength 4', '00 04 02 00 | 00 00 00 01'],
    ['unknown AHSType 3', '00 01 03 00'],
    ['reserved AHSType bits set', '00 05 42 00 | 00 00 00 01'],
    ['two bidi AHS', '00 05 02 00 | 00 00 00 01 | 00 05 02 00 | 00 00 00 01'],
    ['two extended CDB AHS', '00 02 01 00 | 00 05 01 00 | 01 02 03 04'],
    ['not a whole number of words', '00 01 01'],
  ];
  for (const [label, ahs] of cases) {
    assert.throws(() => decodeScsiCommand(bhs, wire(ahs)), framingKind('bad-ahs'), label);
  }
  // The same AHS arriving through the reader: framing is fine, decoding refuses it.
  const reader = new PduReader({ maxDataSegmentBytes: 0 });
  reader.push(frameToBuffer(bhs, wire('00 01 03 00'), null, NO_DIGESTS));
  const p = reader.next();
  assert.ok(p !== null);
  assert.throws(() => decodeScsiCommand(p), framingKind('bad-ahs'));
});

// ---------------------------------------------------------------------------
// PduReader

/** A stream exercising AHS, padding of every length, empty and larger data. */
function sampleStream(digests: DigestSettings): { bytes: Buffer; pdus: InPdu[] } {
  const frames: Buffer[] = [];
  const pdus: InPdu[] = [];
  const add = (bhs: Buffer, ahs: Buffer | null, data: Buffer): void => {
    frames.push(frameToBuffer(bhs, ahs, data, digests)); // sets bytes 4-7 of bhs
    pdus.push({ header: readHeader(bhs), bhs, ahs, data, dataDigestOk: true });
  };
  const cmd = encodeScsiCommand(sampleScsiCommand(), 5);
  add(cmd.bhs, cmd.ahs, Buffer.from('hello'));
  add(encodeNopOut({ immediate: true, lun: 0, itt: 1, ttt: TAG_NONE, cmdSN: 2, expStatSN: 3 }, 0), null, Buffer.alloc(0));
  const big = Buffer.alloc(1000);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
  add(encodeDataOut({ final: true, lun: 0, itt: 4, ttt: 5, expStatSN: 3, dataSN: 0, bufferOffset: 0 }, big.length), null, big);
  add(encodeTextRequest({ immediate: false, final: true, cont: false, lun: 0, itt: 6, ttt: TAG_NONE, cmdSN: 3, expStatSN: 3 }, 6), null, Buffer.from('a=bcd\0'));
  add(encodeNopOut({ immediate: false, lun: 0, itt: 7, ttt: TAG_NONE, cmdSN: 3, expStatSN: 3 }, 7), null, Buffer.from('1234567'));
  return { bytes: Buffer.concat(frames), pdus };
}

test('PduReader: every split point, and byte-by-byte, yields the same PDUs (RFC 7143 §11.2, §11.2.3)', () => {
  for (const digests of [NO_DIGESTS, BOTH_DIGESTS, { header: true, data: false }, { header: false, data: true }]) {
    const { bytes, pdus } = sampleStream(digests);
    for (let split = 0; split <= bytes.length; split++) {
      const reader = new PduReader({ maxDataSegmentBytes: 8192 });
      reader.setDigests(digests);
      reader.push(bytes.subarray(0, split));
      const got = drain(reader);
      reader.push(bytes.subarray(split));
      got.push(...drain(reader));
      assert.deepEqual(got, pdus, `split at ${split}, digests ${JSON.stringify(digests)}`);
      assert.equal(reader.bufferedBytes, 0);
    }
    const reader = new PduReader({ maxDataSegmentBytes: 8192 });
    reader.setDigests(digests);
    const got: InPdu[] = [];
    for (let i = 0; i < bytes.length; i++) {
      reader.push(bytes.subarray(i, i + 1));
      got.push(...drain(reader));
      assert.equal(reader.bufferedBytes, i + 1 - got.reduce((n, p) => n + frameBytes(p, digests), 0));
    }
    assert.deepEqual(got, pdus);
  }
});

function frameBytes(p: InPdu, d: DigestSettings): number {
  const dataBytes = p.data.length;
  return 48 + (p.ahs?.length ?? 0) + (d.header ? 4 : 0) + ((dataBytes + 3) & ~3) + (d.data && dataBytes > 0 ? 4 : 0);
}

test('PduReader: a HeaderDigest mismatch throws header-digest, and keeps throwing (RFC 7143 §11.2.3)', () => {
  const { bytes, pdus } = sampleStream(BOTH_DIGESTS);
  const secondStart = frameBytes(pdus[0], BOTH_DIGESTS);
  for (const at of [secondStart + 20, secondStart + 48 /* the digest itself */, 52 /* inside the first PDU's AHS */]) {
    const corrupt = Buffer.from(bytes);
    corrupt[at] ^= 0x01;
    const reader = new PduReader({ maxDataSegmentBytes: 8192 });
    reader.setDigests(BOTH_DIGESTS);
    reader.push(corrupt);
    if (at > secondStart) assert.deepEqual(reader.next(), pdus[0]);
    assert.throws(() => reader.next(), framingKind('header-digest'), `flip at ${at}`);
    assert.throws(() => reader.next(), framingKind('header-digest'), 'poisoned');
  }
});

test('PduReader: a corrupt header is reported as a digest error before its lengths are trusted (RFC 7143 §11.2.3)', () => {
  const bhs = encodeNopOut({ immediate: true, lun: 0, itt: 1, ttt: TAG_NONE, cmdSN: 0, expStatSN: 0 }, 0);
  const frame = frameToBuffer(bhs, null, null, { header: true, data: false });
  frame[5] = 0xff; // DataSegmentLength 16 MiB and over the limit, but the digest catches it first
  const reader = new PduReader({ maxDataSegmentBytes: 8192 });
  reader.setDigests({ header: true, data: false });
  reader.push(frame);
  assert.throws(() => reader.next(), framingKind('header-digest'));
});

test('PduReader: a DataDigest mismatch is reported on the PDU and the next PDU still parses (RFC 7143 §11.2.3)', () => {
  const { bytes, pdus } = sampleStream(BOTH_DIGESTS);
  const firstDataAt = 48 + pdus[0].ahs!.length + 4;
  // A data byte, a pad byte (covered too, RFC 7143 §13.1), and the digest itself.
  for (const at of [firstDataAt + 1, firstDataAt + 6, firstDataAt + 8]) {
    const corrupt = Buffer.from(bytes);
    corrupt[at] ^= 0x80;
    const reader = new PduReader({ maxDataSegmentBytes: 8192 });
    reader.setDigests(BOTH_DIGESTS);
    reader.push(corrupt);
    const got = drain(reader);
    assert.equal(got.length, pdus.length);
    assert.equal(got[0].dataDigestOk, false, `flip at ${at}`);
    assert.deepEqual(got.slice(1), pdus.slice(1));
  }
});

test('PduReader: DataSegmentLength over the limit throws too-long before the data arrives', () => {
  const reader = new PduReader({ maxDataSegmentBytes: 8192 });
  const bhs = encodeDataOut({ final: true, lun: 0, itt: 1, ttt: 2, expStatSN: 0, dataSN: 0, bufferOffset: 0 }, 8193);
  reader.push(bhs);
  assert.throws(() => reader.next(), framingKind('too-long'));
  assert.equal(reader.bufferedBytes, 48);
  // Exactly the limit is fine; a lower limit set later applies to the next PDU.
  const ok = new PduReader({ maxDataSegmentBytes: 8192 });
  ok.push(frameToBuffer(encodeDataOut({ final: true, lun: 0, itt: 1, ttt: 2, expStatSN: 0, dataSN: 0, bufferOffset: 0 }, 0), null, Buffer.alloc(8192), NO_DIGESTS));
  assert.equal(ok.next()?.data.length, 8192);
  ok.setMaxDataSegmentBytes(100);
  ok.push(bhs.fill(0, 4, 8).fill(0x65, 7, 8)); // DataSegmentLength 101
  assert.throws(() => ok.next(), framingKind('too-long'));
  // With HeaderDigest on, the check happens once BHS + digest are in.
  const hd = new PduReader({ maxDataSegmentBytes: 16 });
  hd.setDigests(BOTH_DIGESTS);
  const frame = frameToBuffer(encodeNopOut({ immediate: true, lun: 0, itt: 1, ttt: TAG_NONE, cmdSN: 0, expStatSN: 0 }, 17), null, Buffer.alloc(17), BOTH_DIGESTS);
  hd.push(frame.subarray(0, 52));
  assert.throws(() => hd.next(), framingKind('too-long'));
});

test('PduReader: AHS over maxAhsBytes is too-long; reserved bit 7 of byte 0 is reserved (RFC 7143 §11.2.1)', () => {
  const { bhs, ahs } = encodeScsiCommand(sampleScsiCommand(), 0);
  const reader = new PduReader({ maxDataSegmentBytes: 0, maxAhsBytes: 4 });
  reader.push(frameToBuffer(bhs, ahs, null, NO_DIGESTS)); // AHS of 8 bytes
  assert.throws(() => reader.next(), framingKind('too-long'));
  const frame = frameToBuffer(encodeNopOut({ immediate: false, lun: 0, itt: 1, ttt: TAG_NONE, cmdSN: 0, expStatSN: 0 }, 0), null, null, NO_DIGESTS);
  frame[0] |= 0x80;
  const r2 = new PduReader({ maxDataSegmentBytes: 0 });
  r2.push(frame);
  assert.throws(() => r2.next(), framingKind('reserved'));
});

test('PduReader: digests switched on after the last login PDU apply from the next PDU (RFC 7143 §13.1)', () => {
  const login = encodeLoginRequest({ transit: true, cont: false, csg: 1, nsg: 3, versionMax: 0, versionMin: 0, isid: ISID, tsih: 0, itt: 1, cid: 0, cmdSN: 1, expStatSN: 0 }, 5);
  const nop = encodeNopOut({ immediate: false, lun: 0, itt: 2, ttt: TAG_NONE, cmdSN: 1, expStatSN: 1 }, 3);
  const stream = Buffer.concat([frameToBuffer(login, null, Buffer.from('a=b\0\0'), NO_DIGESTS), frameToBuffer(nop, null, Buffer.from('xyz'), BOTH_DIGESTS)]);
  for (let split = 0; split <= stream.length; split++) {
    // Like the session: next() until the final Login Request, then switch.
    const reader = new PduReader({ maxDataSegmentBytes: 8192 });
    reader.push(stream.subarray(0, split));
    let restPushed = false;
    let first = reader.next();
    if (first === null) {
      reader.push(stream.subarray(split));
      restPushed = true;
      first = reader.next();
    }
    assert.ok(first !== null);
    assert.equal(first.header.opcode, OP_LOGIN_REQ);
    assert.deepEqual(first.data, Buffer.from('a=b\0\0'));
    reader.setDigests(BOTH_DIGESTS);
    if (!restPushed) reader.push(stream.subarray(split));
    const second = drain(reader);
    assert.equal(second.length, 1, `split ${split}`);
    assert.equal(second[0].header.opcode, OP_NOP_OUT);
    assert.deepEqual(second[0].data, Buffer.from('xyz'));
    assert.equal(second[0].dataDigestOk, true);
  }
});

test('PduReader: headers are private copies; a data segment inside one chunk is a view of it (no copy), one spanning chunks a copy', () => {
  const { bytes, pdus } = sampleStream(NO_DIGESTS);
  const chunk = Buffer.from(bytes);
  const reader = new PduReader({ maxDataSegmentBytes: 8192 });
  reader.push(chunk);
  const got = drain(reader);
  assert.deepEqual(got, pdus);
  const withData = got.find((p) => p.data.length > 0)!;
  assert.equal(withData.data.buffer, chunk.buffer, 'a view of the pushed chunk');
  chunk.fill(0xee);
  assert.ok(got.every((p, i) => p.bhs.equals(pdus[i].bhs)), 'headers do not change with the chunk');
  // Split one PDU's data across two chunks: a private copy.
  const target = pdus.find((p) => p.data.length > 1)!;
  const frame = frameToBuffer(target.bhs, target.ahs, target.data, NO_DIGESTS);
  const r2 = new PduReader({ maxDataSegmentBytes: 8192 });
  const cut = 48 + (target.ahs?.length ?? 0) + 1;
  r2.push(Buffer.from(frame.subarray(0, cut)));
  r2.push(Buffer.from(frame.subarray(cut)));
  const p2 = r2.next()!;
  assert.ok(p2.data.equals(target.data));
});

test('PduReader: a data placement receives the segment (also into shared memory at any alignment); null keeps the usual path', () => {
  for (const digests of [NO_DIGESTS, BOTH_DIGESTS]) {
    const { bytes, pdus } = sampleStream(digests);
    for (const chunkBytes of [1, 3, 7, 64, 100000]) {
      const reader = new PduReader({ maxDataSegmentBytes: 8192 });
      reader.setDigests(digests);
      const placed: Buffer[] = [];
      const asked: number[] = [];
      reader.setDataPlacement((bhs, dataBytes) => {
        asked.push(bhs[0] & 0x3f);
        if ((bhs[0] & 0x3f) !== 0x05) return null; // only Data-Out
        const t = Buffer.from(new SharedArrayBuffer(dataBytes + 13)).subarray(5, 5 + dataBytes);
        placed.push(t);
        return t;
      });
      const got: InPdu[] = [];
      for (let i = 0; i < bytes.length; i += chunkBytes) {
        reader.push(Buffer.from(bytes.subarray(i, i + chunkBytes)));
        got.push(...drain(reader));
      }
      assert.deepEqual(got.map((p) => [p.bhs, p.data, p.dataDigestOk]), pdus.map((p) => [p.bhs, p.data, true]), `chunks of ${chunkBytes}`);
      assert.equal(placed.length, 1, 'the Data-Out segment was placed');
      assert.equal(got[2].data, placed[0], 'InPdu.data is the placement target');
      assert.deepEqual(asked, [0x01, 0x05, 0x04, 0x00], 'asked once per PDU with data, never for an empty segment');
    }
  }
  const { bytes } = sampleStream(NO_DIGESTS);
  const reader = new PduReader({ maxDataSegmentBytes: 8192 });
  reader.setDataPlacement((_bhs, dataBytes) => Buffer.alloc(dataBytes + 1));
  reader.push(bytes);
  assert.throws(() => reader.next(), /data placement of/);
});

test('PduReader: a 64 KiB PDU pushed one byte at a time (no quadratic behaviour)', () => {
  const data = Buffer.alloc(65536, 7);
  const frame = frameToBuffer(encodeDataOut({ final: true, lun: 0, itt: 1, ttt: 2, expStatSN: 0, dataSN: 0, bufferOffset: 0 }, data.length), null, data, BOTH_DIGESTS);
  const reader = new PduReader({ maxDataSegmentBytes: data.length });
  reader.setDigests(BOTH_DIGESTS);
  const t0 = performance.now();
  let got: InPdu | null = null;
  for (let i = 0; i < frame.length; i++) {
    reader.push(frame.subarray(i, i + 1));
    const p = reader.next();
    if (p !== null) got = p;
  }
  const elapsedMs = performance.now() - t0;
  assert.ok(got !== null);
  assert.deepEqual(got.data, data);
  assert.equal(got.dataDigestOk, true);
  assert.ok(elapsedMs < 2000, `took ${elapsedMs.toFixed(0)} ms`);
});

test('PduReader: BHS_BYTES is 48 and an empty push changes nothing', () => {
  assert.equal(BHS_BYTES, 48);
  const reader = new PduReader({ maxDataSegmentBytes: 0 });
  reader.push(Buffer.alloc(0));
  assert.equal(reader.bufferedBytes, 0);
  assert.equal(reader.next(), null);
});
