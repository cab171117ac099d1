// The LU as a whole: dispatch, REPORT LUNS (SPC-4 6.33), REPORT SUPPORTED OPERATION
// CODES (SPC-4 6.35), reservation gating (SPC-4 5.9), SPC-2 RESERVE/RELEASE (6) and
// their release on nexus loss and LU reset, unit attentions (SAM-5 5.14, SPC-4 6.39
// REQUEST SENSE), capacity-change UAs after a resize, device error mapping, control
// byte checks, START STOP UNIT (SBC-4 5.25).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ErrorCode } from '../../stdx/errors.js';
import { TesseraError } from '../../stdx/errors.js';
import { accessClass } from './lu.js';
import { Spc2Reservation } from './reserve6.js';
import { answerMissingLun, decodeLun, encodeLun, reportLuns } from './luns.js';
import { supportedCommands } from './rsoc.js';
import {
  ASC_CAPACITY_DATA_CHANGED,
  ASC_INTERNAL_TARGET_FAILURE,
  ASC_INVALID_COMMAND_OPERATION_CODE,
  ASC_INVALID_FIELD_IN_CDB,
  ASC_LU_NOT_ACCESSIBLE_TRANSITION,
  ASC_LU_NOT_SUPPORTED,
  ASC_POWER_ON_RESET,
  ASC_REPORTED_LUNS_DATA_CHANGED,
  ASC_SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
  ASC_UNRECOVERED_READ_ERROR,
  ASC_WRITE_ERROR,
  SK_DATA_PROTECT,
  SK_HARDWARE_ERROR,
  SK_ILLEGAL_REQUEST,
  SK_MEDIUM_ERROR,
  SK_NOT_READY,
  SK_UNIT_ATTENTION,
  checkCondition,
} from './sense.js';
import { NEXUS_A, NEXUS_B, assertCheck, assertGood, cdb10, cdb16, decodeSense, makeNexus, makeTestLu, scsiCmd } from './testing.js';
import type { AccessClass, Nexus, ReservationGate, ScsiResult } from './types.js';

const TUR = [0, 0, 0, 0, 0, 0];
const INQUIRY = [0x12, 0, 0, 0, 96, 0];
const REQUEST_SENSE = [0x03, 0, 0, 0, 18, 0];
const reportLunsCdb = (select: number, alloc = 4096) => [0xa0, 0, select, 0, 0, 0, alloc >>> 24, (alloc >>> 16) & 0xff, (alloc >>> 8) & 0xff, alloc & 0xff, 0, 0];

test('SAM-5 4.7: LUN encoding: peripheral addressing below 256, flat space above', () => {
  assert.equal(encodeLun(5).toString('hex'), '0005000000000000');
  assert.equal(encodeLun(300).toString('hex'), '412c000000000000');
  assert.equal(decodeLun(encodeLun(300)), 300);
  assert.equal(decodeLun(Buffer.from('0105000000000000', 'hex')), -1);
});

test('SPC-4 6.33: REPORT LUNS lists the target LUNs, sorted; SELECT REPORT 01h is empty; others refused', async () => {
  const { lu } = await makeTestLu({ luns: () => [3, 0, 300, 3] });
  const r = await lu.execute(scsiCmd(reportLunsCdb(0)));
  assert.equal(r.dataIn!.toString('hex'), '00000018' + '00000000' + '0000000000000000' + '0003000000000000' + '412c000000000000');
  assert.equal((await lu.execute(scsiCmd(reportLunsCdb(2)))).dataIn!.length, 32);
  assert.equal((await lu.execute(scsiCmd(reportLunsCdb(1)))).dataIn!.toString('hex'), '0000000000000000');
  assertCheck(await lu.execute(scsiCmd(reportLunsCdb(0x10))), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  const cut = await lu.execute(scsiCmd(reportLunsCdb(0, 16)));
  assert.equal(cut.dataIn!.toString('hex'), '00000018' + '00000000' + '0000000000000000'); // LIST LENGTH still 24
});

test('SPC-4 6.33 / 6.6.2: the transport answers a missing LUN: REPORT LUNS works, INQUIRY has qualifier 011b', () => {
  const luns = [1];
  const r = reportLuns(Buffer.from(reportLunsCdb(0)), luns, 100);
  assert.equal(r.dataIn!.toString('hex'), '00000008000000000001000000000000');
  const id = { vendor: 'TESSERA', product: 'VOLUME', revision: '0001' };
  const inq = answerMissingLun(scsiCmd(INQUIRY), luns, id);
  assert.equal(inq.dataIn![0], 0x7f);
  assert.equal(inq.dataIn!.length, 96);
  assertCheck(answerMissingLun(scsiCmd(TUR), luns, id), SK_ILLEGAL_REQUEST, ASC_LU_NOT_SUPPORTED);
  const rs = answerMissingLun(scsiCmd(REQUEST_SENSE), luns, id);
  assertGood(rs);
  assert.equal(decodeSense(rs.dataIn!).ascq, ASC_LU_NOT_SUPPORTED);
});

const rsocCdb = (options: number, opcode = 0, sa = 0, alloc = 65536) => {
  const b = Buffer.alloc(12);
  b[0] = 0xa3;
  b[1] = 0x0c;
  b[2] = options;
  b[3] = opcode;
  b.writeUInt16BE(sa, 4);
  b.writeUInt32BE(alloc, 6);
  return b;
};

test('SPC-4 6.35: REPORT SUPPORTED OPERATION CODES, all-commands format, with and without timeouts', async () => {
  const { lu } = await makeTestLu();
  const table = supportedCommands(false);
  const r = await lu.execute(scsiCmd(rsocCdb(0)));
  const d = r.dataIn!;
  assert.equal(d.readUInt32BE(0), table.length * 8);
  table.forEach((c, i) => {
    const at = 4 + i * 8;
    assert.equal(d[at], c.opcode);
    assert.equal(d.readUInt16BE(at + 2), c.serviceAction ?? 0);
    assert.equal(d[at + 5], c.serviceAction !== null ? 0x01 : 0x00);
    assert.equal(d.readUInt16BE(at + 6), c.usage.length);
  });
  assert.equal(d.subarray(4, 12).toString('hex'), '0000000000000006'); // TEST UNIT READY
  const t = (await lu.execute(scsiCmd(rsocCdb(0x80)))).dataIn!;
  assert.equal(t.readUInt32BE(0), table.length * 20);
  assert.equal(t.subarray(4, 24).toString('hex'), '0000000000020006' + '000a0000' + '00000000' + '0000001e');
});

test('SPC-4 6.35: one-command format: supported, with service action, unsupported, wrong option', async () => {
  const { lu } = await makeTestLu();
  const read10 = (await lu.execute(scsiCmd(rsocCdb(1, 0x28)))).dataIn!;
  assert.equal(read10.toString('hex'), '0003000a' + '28f8ffffffff00ffff04');
  const rc16 = (await lu.execute(scsiCmd(rsocCdb(2, 0x9e, 0x10)))).dataIn!;
  assert.equal(rc16.subarray(0, 6).toString('hex'), '00030010' + '9e1f');
  assert.equal((await lu.execute(scsiCmd(rsocCdb(2, 0x9e, 0x11)))).dataIn!.toString('hex'), '00010000');
  assert.equal((await lu.execute(scsiCmd(rsocCdb(1, 0x5e)))).dataIn!.toString('hex'), '00010000'); // no gate: no PR
  assertCheck(await lu.execute(scsiCmd(rsocCdb(1, 0x9e))), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await lu.execute(scsiCmd(rsocCdb(2, 0x28))), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  const withTimeout = (await lu.execute(scsiCmd(rsocCdb(0x81, 0x00)))).dataIn!;
  assert.equal(withTimeout.toString('hex'), '00830006' + '000000000004' + '000a0000000000000000001e');
  assert.equal((await lu.execute(scsiCmd(rsocCdb(3, 0x9e, 0x12)))).dataIn![1], 0x03);
});

test('SPC-4 6.35: every listed command is dispatched; unlisted opcodes are INVALID COMMAND OPERATION CODE', async () => {
  const { lu } = await makeTestLu({ gate: fakeGate(() => 'ok') });
  for (const c of supportedCommands(true)) {
    const cdb = Buffer.alloc(c.usage.length);
    cdb[0] = c.opcode;
    if (c.serviceAction !== null) cdb[1] = c.serviceAction;
    const r = await lu.execute(scsiCmd(cdb, { dataOut: Buffer.alloc(0) }));
    if (r.sense !== null) assert.notEqual(decodeSense(r.sense).ascq, ASC_INVALID_COMMAND_OPERATION_CODE, c.name);
  }
  for (const opcode of [0x01, 0x04, 0x1d, 0x3b, 0x3c, 0x4d, 0x56, 0x57, 0x7f, 0x83, 0x84, 0xa4, 0xc0, 0xff]) {
    const s = assertCheck(await lu.execute(scsiCmd([opcode, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])), SK_ILLEGAL_REQUEST, ASC_INVALID_COMMAND_OPERATION_CODE);
    assert.equal(s.fieldPointer, 0);
  }
  assertCheck(await lu.execute(scsiCmd([0x9e, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await lu.execute(scsiCmd([0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
});

test('SAM-5 5.x: NACA and LINK in the control byte → INVALID FIELD IN CDB', async () => {
  const { lu } = await makeTestLu();
  const s = assertCheck(await lu.execute(scsiCmd([0, 0, 0, 0, 0, 0x04])), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assert.equal(s.fieldPointer, 5);
  assertCheck(await lu.execute(scsiCmd(Buffer.from([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0x01]))), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await lu.execute(scsiCmd([0x28, 0, 0])), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB); // CDB shorter than its group
});

function fakeGate(decide: (nexus: Nexus, access: AccessClass) => 'ok' | 'conflict' | 'unavailable', log: AccessClass[] = []): ReservationGate {
  return {
    checkAccess(nexus, access) {
      log.push(access);
      return decide(nexus, access);
    },
    async prIn(_nexus, _cdb, expectedInBytes) {
      return { status: 0, sense: null, dataIn: Buffer.alloc(Math.max(expectedInBytes, 0) + 8, 0xab) };
    },
    async prOut(_nexus, cdb) {
      if (cdb[1] === 0x07) throw new TesseraError('ERR_TIMEOUT', 'monitor did not answer');
      return { status: 0, sense: null, dataIn: null };
    },
  };
}

test('SPC-4 5.9: a conflicting gate answers RESERVATION CONFLICT for writes only; reads and INQUIRY pass', async () => {
  const log: AccessClass[] = [];
  const { lu } = await makeTestLu({ gate: fakeGate((n, a) => (n.key === NEXUS_B.key && a === 'write' ? 'conflict' : 'ok'), log) });
  const w = await lu.execute(scsiCmd(cdb10(0x2a, 0, 1), { dataOut: Buffer.alloc(512), nexus: NEXUS_B }));
  assert.deepEqual(w, { status: 0x18, sense: null, dataIn: null });
  assertGood(await lu.execute(scsiCmd(cdb10(0x28, 0, 1), { nexus: NEXUS_B })));
  assertGood(await lu.execute(scsiCmd(cdb10(0x2a, 0, 1), { dataOut: Buffer.alloc(512), nexus: NEXUS_A })));
  assert.equal((await lu.execute(scsiCmd([0x1a, 0x08, 0x3f, 0, 255, 0], { nexus: NEXUS_B }))).status, 0x18, 'MODE SENSE is write-class');
  assertGood(await lu.execute(scsiCmd(TUR, { nexus: NEXUS_B })));
  assertGood(await lu.execute(scsiCmd(INQUIRY, { nexus: NEXUS_B })));
  assert.deepEqual(log, ['write', 'read', 'write', 'write', 'always']);
});

test('SPC-4 5.9: an unavailable gate answers NOT READY 04/0A, but INQUIRY, REPORT LUNS, REQUEST SENSE still work', async () => {
  const { lu } = await makeTestLu({ gate: fakeGate(() => 'unavailable') });
  assertCheck(await lu.execute(scsiCmd(cdb10(0x28, 0, 1))), SK_NOT_READY, ASC_LU_NOT_ACCESSIBLE_TRANSITION);
  assertCheck(await lu.execute(scsiCmd(TUR)), SK_NOT_READY, ASC_LU_NOT_ACCESSIBLE_TRANSITION);
  assertGood(await lu.execute(scsiCmd(INQUIRY)));
  assertGood(await lu.execute(scsiCmd(reportLunsCdb(0))));
  assertGood(await lu.execute(scsiCmd(REQUEST_SENSE)));
});

test('SPC-4 5.9 (memo §5): reservation classes of the commands', () => {
  const c = (bytes: number[]) => accessClass(Buffer.from([...bytes, ...new Array(16).fill(0)]));
  for (const op of [0x08, 0x28, 0xa8, 0x88, 0x2f, 0xaf, 0x8f, 0x34, 0x90]) assert.equal(c([op]), 'read', op.toString(16));
  for (const op of [0x0a, 0x2a, 0xaa, 0x8a, 0x8b, 0x2e, 0xae, 0x8e, 0x41, 0x93, 0x42, 0x89, 0x35, 0x91, 0x15, 0x55, 0x1a, 0x5a]) assert.equal(c([op]), 'write', op.toString(16));
  for (const op of [0x00, 0x12, 0x03, 0xa0, 0x25, 0xa3, 0x5e, 0x5f]) assert.equal(c([op]), 'always', op.toString(16));
  assert.equal(c([0x9e, 0x10]), 'always');
  assert.equal(c([0x9e, 0x12]), 'read');
  assert.equal(c([0x1b, 0, 0, 0, 0x01]), 'always');
  assert.equal(c([0x1b, 0, 0, 0, 0x00]), 'write');
});

test('SPC-4 6.15/6.16: PR IN/OUT go to the gate (data cut to the buffer, errors mapped); without a gate they are unknown', async () => {
  const { lu } = await makeTestLu({ gate: fakeGate(() => 'ok') });
  const r = await lu.execute(scsiCmd([0x5e, 0, 0, 0, 0, 0, 0, 0, 24, 0], { expectedInBytes: 24 }));
  assertGood(r);
  assert.equal(r.dataIn!.length, 24);
  assertGood(await lu.execute(scsiCmd([0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0], { dataOut: Buffer.alloc(24) })));
  assert.equal((await lu.execute(scsiCmd([0x5f, 0x07, 0, 0, 0, 0, 0, 0, 24, 0], { dataOut: Buffer.alloc(24) }))).status, 0x08);
  const bare = await makeTestLu();
  assertCheck(await bare.lu.execute(scsiCmd([0x5e, 0, 0, 0, 0, 0, 0, 0, 24, 0])), SK_ILLEGAL_REQUEST, ASC_INVALID_COMMAND_OPERATION_CODE);
});

test('SAM-5 5.14: a UA is reported once, oldest first, to every nexus but the excepted one; INQUIRY neither reports nor clears', async () => {
  const { lu } = await makeTestLu();
  const C = makeNexus(3);
  for (const n of [NEXUS_A, NEXUS_B, C]) assertGood(await lu.execute(scsiCmd(TUR, { nexus: n })));
  lu.raiseUnitAttention(0x29, 0x00, C.key);
  lu.raiseUnitAttention(0x3f, 0x0e);
  assertGood(await lu.execute(scsiCmd(INQUIRY, { nexus: NEXUS_A })));
  assertCheck(await lu.execute(scsiCmd(cdb10(0x28, 0, 1), { nexus: NEXUS_A })), SK_UNIT_ATTENTION, ASC_POWER_ON_RESET);
  assertCheck(await lu.execute(scsiCmd(TUR, { nexus: NEXUS_A })), SK_UNIT_ATTENTION, ASC_REPORTED_LUNS_DATA_CHANGED);
  assertGood(await lu.execute(scsiCmd(TUR, { nexus: NEXUS_A })));
  assertCheck(await lu.execute(scsiCmd(TUR, { nexus: C })), SK_UNIT_ATTENTION, ASC_REPORTED_LUNS_DATA_CHANGED);
  // REQUEST SENSE returns the UA as data and clears it; REPORT LUNS clears 3F/0E.
  const rs = await lu.execute(scsiCmd(REQUEST_SENSE, { nexus: NEXUS_B }));
  assertGood(rs);
  assert.equal(decodeSense(rs.dataIn!).key, SK_UNIT_ATTENTION);
  assert.equal(decodeSense(rs.dataIn!).ascq, ASC_POWER_ON_RESET);
  assertGood(await lu.execute(scsiCmd(reportLunsCdb(0), { nexus: NEXUS_B })));
  assertGood(await lu.execute(scsiCmd(TUR, { nexus: NEXUS_B })));
  const none = await lu.execute(scsiCmd(REQUEST_SENSE, { nexus: NEXUS_B }));
  assert.equal(none.dataIn!.toString('hex'), '700000000000000a' + '00'.repeat(10));
});

test('SPC-4 6.39: REQUEST SENSE with DESC=1 → INVALID FIELD IN CDB (fixed format only)', async () => {
  const { lu } = await makeTestLu();
  assertCheck(await lu.execute(scsiCmd([0x03, 0x01, 0, 0, 18, 0])), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
});

test('SAM-5 5.14: POWER ON/RESET on first contact only with powerOnUa; targeted UAs, dedup, overflow, forget', async () => {
  const quiet = await makeTestLu();
  assertGood(await quiet.lu.execute(scsiCmd(TUR)));
  const loud = await makeTestLu({ powerOnUa: true });
  assertCheck(await loud.lu.execute(scsiCmd(TUR)), SK_UNIT_ATTENTION, ASC_POWER_ON_RESET);
  assertGood(await loud.lu.execute(scsiCmd(TUR)));
  const lu = quiet.lu;
  lu.unitAttentionFor(NEXUS_B.key, 0x2a, 0x03); // a PR effect for a nexus not seen yet
  lu.unitAttentionFor(NEXUS_B.key, 0x2a, 0x03);
  assert.deepEqual(lu.pendingUnitAttentions(NEXUS_B.key), [0x2a03]);
  for (let i = 0; i < 20; i++) lu.unitAttentionFor(NEXUS_A.key, 0x2a, 0x10 + i);
  assert.deepEqual(lu.pendingUnitAttentions(NEXUS_A.key), [ASC_POWER_ON_RESET, 0x2a21, 0x2a22, 0x2a23]);
  lu.forgetNexus(NEXUS_A.key);
  assertGood(await lu.execute(scsiCmd(TUR)));
});

test('SBC-4 4.x: CAPACITY DATA HAS CHANGED for every nexus after a live resize', async () => {
  const t = await makeTestLu();
  assertGood(await t.lu.execute(scsiCmd(TUR, { nexus: NEXUS_A })));
  assertGood(await t.lu.execute(scsiCmd(TUR, { nexus: NEXUS_B })));
  await t.store.resize('v', 2 * 1024 * 1024);
  assertCheck(await t.lu.execute(scsiCmd(cdb10(0x28, 3000, 1), { nexus: NEXUS_A })), SK_UNIT_ATTENTION, ASC_CAPACITY_DATA_CHANGED);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x28, 3000, 1), { nexus: NEXUS_A })));
  assertGood(await t.lu.execute(scsiCmd(INQUIRY, { nexus: NEXUS_B }))); // notices, does not report
  assertCheck(await t.lu.execute(scsiCmd(TUR, { nexus: NEXUS_B })), SK_UNIT_ATTENTION, ASC_CAPACITY_DATA_CHANGED);
  const rc = await t.lu.execute(scsiCmd([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], { nexus: NEXUS_B }));
  assert.equal(rc.dataIn!.toString('hex'), '00000fff00000200');
  const newcomer = makeNexus(9);
  assertGood(await t.lu.execute(scsiCmd(TUR, { nexus: newcomer })), 'a new nexus sees the new size as its first');
});

async function errorCase(setup: (v: import('./testing.js').ControlledVolume) => void, cdb: Buffer, dataOut: Buffer | null = null): Promise<ScsiResult> {
  const t = await makeTestLu();
  setup(t.volume);
  return t.lu.execute(scsiCmd(cdb, { dataOut }));
}

test('SBC-4 4.x: device errors map to sense: medium, data protect, LU gone, busy, internal failure', async () => {
  const read = cdb10(0x28, 0, 1);
  const write = cdb10(0x2a, 0, 1);
  const block = Buffer.alloc(512, 1);
  const failRead = (code: ErrorCode) => (v: import('./testing.js').ControlledVolume) => (v.failRead = code);
  const failWrite = (code: ErrorCode) => (v: import('./testing.js').ControlledVolume) => (v.failWrite = code);
  assertCheck(await errorCase(failRead('ERR_DEVICE_IO'), read), SK_MEDIUM_ERROR, ASC_UNRECOVERED_READ_ERROR);
  assertCheck(await errorCase(failRead('ERR_CHECKSUM'), read), SK_MEDIUM_ERROR, ASC_UNRECOVERED_READ_ERROR);
  assertCheck(await errorCase(failWrite('ERR_DEVICE_IO'), write, block), SK_MEDIUM_ERROR, ASC_WRITE_ERROR);
  assertCheck(await errorCase(failWrite('ERR_NO_SPACE'), write, block), SK_DATA_PROTECT, ASC_SPACE_ALLOCATION_FAILED_WRITE_PROTECT);
  assertCheck(await errorCase(failWrite('ERR_NO_SPACE'), cdb16(0x93, 0, 8), block), SK_DATA_PROTECT, ASC_SPACE_ALLOCATION_FAILED_WRITE_PROTECT);
  assert.equal((await errorCase(failRead('ERR_TIMEOUT'), read)).status, 0x08);
  assert.equal((await errorCase(failWrite('ERR_BUSY'), write, block)).status, 0x08);
  assertCheck(await errorCase(failRead('ERR_FORMAT'), read), SK_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE);
  assertCheck(await errorCase((v) => (v.failFlush = 'ERR_DEVICE_FLUSH'), cdb10(0x35, 0, 0)), SK_MEDIUM_ERROR, ASC_WRITE_ERROR);
  const foreign = await errorCase((v) => {
    v.read = async () => {
      throw new RangeError('boom');
    };
  }, read);
  assertCheck(foreign, SK_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE);
  const gone = await makeTestLu();
  await gone.store.delete('v');
  assertCheck(await gone.lu.execute(scsiCmd(read)), SK_ILLEGAL_REQUEST, ASC_LU_NOT_SUPPORTED);
});

test('SBC-4 5.25: START STOP UNIT: start is a no-op; stop flushes (IMMED answers without waiting)', async () => {
  const t = await makeTestLu();
  assertGood(await t.lu.execute(scsiCmd([0x1b, 0, 0, 0, 0x01, 0])));
  assert.equal(t.volume.calls.length, 0);
  assertGood(await t.lu.execute(scsiCmd([0x1b, 0, 0, 0, 0x00, 0])));
  assertGood(await t.lu.execute(scsiCmd([0x1b, 0x01, 0, 0, 0x00, 0])));
  assertGood(await t.lu.execute(scsiCmd([0x1b, 0, 0, 0, 0x04, 0]))); // NO_FLUSH
  assert.deepEqual(t.volume.calls, ['flush', 'flush']);
  t.volume.failFlush = 'ERR_DEVICE_IO';
  assertGood(await t.lu.execute(scsiCmd([0x1b, 0x01, 0, 0, 0x00, 0])), 'IMMED: the failure is not waited for');
  assertCheck(await t.lu.execute(scsiCmd([0x1b, 0, 0, 0, 0x00, 0])), SK_MEDIUM_ERROR, ASC_WRITE_ERROR);
});

test('types.ts: volumeName follows the volume; execute never rejects on an empty CDB', async () => {
  const t = await makeTestLu();
  assert.equal(t.lu.volumeName, 'v');
  await t.store.rename('v', 'w');
  assert.equal(t.lu.volumeName, 'w');
  assertCheck(await t.lu.execute(scsiCmd([])), SK_ILLEGAL_REQUEST, ASC_INVALID_COMMAND_OPERATION_CODE);
});

const RESERVE6 = [0x16, 0, 0, 0, 0, 0];
const RELEASE6 = [0x17, 0, 0, 0, 0, 0];
const CONFLICT = { status: 0x18, sense: null, dataIn: null };

/** A gate whose PR IN READ KEYS reports `keys` registrations (SPC-4 6.15.2). */
function registrationsGate(keys: () => number): ReservationGate {
  return {
    checkAccess: () => 'ok',
    async prIn(_nexus, cdb) {
      assert.equal(cdb[1] & 0x1f, 0x00, 'READ KEYS');
      const b = Buffer.alloc(8 + 8 * keys());
      b.writeUInt32BE(8 * keys(), 4);
      return { status: 0, sense: null, dataIn: b };
    },
    async prOut() {
      return { status: 0, sense: null, dataIn: null };
    },
  };
}

test('SPC-2 5.5 RESERVE (6)/RELEASE (6): the holder works, others conflict except INQUIRY, REQUEST SENSE, REPORT LUNS, RELEASE', async () => {
  const { lu } = await makeTestLu();
  const a = { nexus: NEXUS_A };
  const b = { nexus: NEXUS_B };
  assertGood(await lu.execute(scsiCmd(RESERVE6, a)));
  assertGood(await lu.execute(scsiCmd(RESERVE6, a)), 're-reserving by the holder is GOOD');
  assertGood(await lu.execute(scsiCmd(cdb10(0x2a, 0, 1), { ...a, dataOut: Buffer.alloc(512) })));
  assertGood(await lu.execute(scsiCmd([0x1a, 0x08, 0x3f, 0, 255, 0], a)));
  assert.deepEqual(await lu.execute(scsiCmd(RESERVE6, b)), CONFLICT);
  assert.deepEqual(await lu.execute(scsiCmd(cdb10(0x28, 0, 1), b)), CONFLICT);
  assert.deepEqual(await lu.execute(scsiCmd(cdb10(0x2a, 0, 1), { ...b, dataOut: Buffer.alloc(512) })), CONFLICT);
  assert.deepEqual(await lu.execute(scsiCmd([0x1a, 0x08, 0x3f, 0, 255, 0], b)), CONFLICT, 'MODE SENSE');
  assert.deepEqual(await lu.execute(scsiCmd(TUR, b)), CONFLICT, 'TEST UNIT READY is not exempt');
  assertGood(await lu.execute(scsiCmd(INQUIRY, b)));
  assertGood(await lu.execute(scsiCmd(REQUEST_SENSE, b)));
  assertGood(await lu.execute(scsiCmd(reportLunsCdb(0), b)));
  assertGood(await lu.execute(scsiCmd(RELEASE6, b)), 'RELEASE from a non-holder is GOOD and changes nothing');
  assert.deepEqual(await lu.execute(scsiCmd(TUR, b)), CONFLICT);
  assertGood(await lu.execute(scsiCmd(RELEASE6, a)));
  assertGood(await lu.execute(scsiCmd(TUR, b)));
  assertGood(await lu.execute(scsiCmd(RESERVE6, b)));
  assertGood(await lu.execute(scsiCmd(RELEASE6, b)));
  assertGood(await lu.execute(scsiCmd(RELEASE6, b)), 'RELEASE with no reservation is GOOD');
  assertCheck(await lu.execute(scsiCmd([0x16, 0x10, 0, 0, 0, 0], a)), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB); // 3RDPTY
  assertCheck(await lu.execute(scsiCmd([0x17, 0x01, 0, 0, 0, 0], a)), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB); // EXTENT
  assert.equal(lu.spc2.holder, null);
});

test('SPC-2 5.5: the reservation is released by the holder\'s nexus loss (forgetNexus) and by a LU reset (reset())', async () => {
  const { lu } = await makeTestLu();
  assertGood(await lu.execute(scsiCmd(RESERVE6, { nexus: NEXUS_A })));
  lu.forgetNexus(NEXUS_B.key);
  assert.equal(lu.spc2.holder, NEXUS_A.key, 'another nexus going away changes nothing');
  lu.forgetNexus(NEXUS_A.key);
  assertGood(await lu.execute(scsiCmd(TUR, { nexus: NEXUS_B })));
  assertGood(await lu.execute(scsiCmd(RESERVE6, { nexus: NEXUS_B })));
  // LU reset: the transport calls reset() and raises the 29/03 UA itself.
  lu.reset();
  lu.raiseUnitAttention(0x29, 0x03);
  assertGood(await lu.execute(scsiCmd(RESERVE6, { nexus: NEXUS_A })), 'A was forgotten: no UA, and B no longer holds it');
  assertCheck(await lu.execute(scsiCmd(TUR, { nexus: NEXUS_B })), SK_UNIT_ATTENTION, 0x2903);
  assert.deepEqual(await lu.execute(scsiCmd(TUR, { nexus: NEXUS_B })), CONFLICT);
});

test('SPC-3 5.6.3 / SPC-4: SPC-2 and persistent reservations exclude each other', async () => {
  let keys = 0;
  const { lu } = await makeTestLu({ gate: registrationsGate(() => keys) });
  assertGood(await lu.execute(scsiCmd(RESERVE6, { nexus: NEXUS_A })));
  // Under an SPC-2 reservation every PR IN/OUT conflicts, from the holder too.
  assert.deepEqual(await lu.execute(scsiCmd([0x5e, 0, 0, 0, 0, 0, 0, 0, 24, 0], { nexus: NEXUS_A, expectedInBytes: 24 })), CONFLICT);
  assert.deepEqual(await lu.execute(scsiCmd([0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0], { nexus: NEXUS_B, dataOut: Buffer.alloc(24) })), CONFLICT);
  assertGood(await lu.execute(scsiCmd(RELEASE6, { nexus: NEXUS_A })));
  assertGood(await lu.execute(scsiCmd([0x5e, 0, 0, 0, 0, 0, 0, 0, 24, 0], { nexus: NEXUS_A, expectedInBytes: 24 })));
  // With a registration (from any nexus) RESERVE (6) and RELEASE (6) conflict.
  keys = 1;
  assert.deepEqual(await lu.execute(scsiCmd(RESERVE6, { nexus: NEXUS_A })), CONFLICT);
  assert.deepEqual(await lu.execute(scsiCmd(RELEASE6, { nexus: NEXUS_B })), CONFLICT);
  assert.equal(lu.spc2.holder, null);
  keys = 0;
  assertGood(await lu.execute(scsiCmd(RESERVE6, { nexus: NEXUS_A })));
  // A gate that cannot know the PR state: RESERVE answers what PR IN answers (NOT READY).
  const blind = await makeTestLu({ gate: { ...registrationsGate(() => 0), prIn: async () => checkCondition(SK_NOT_READY, ASC_LU_NOT_ACCESSIBLE_TRANSITION) } });
  assertCheck(await blind.lu.execute(scsiCmd(RESERVE6)), SK_NOT_READY, ASC_LU_NOT_ACCESSIBLE_TRANSITION);
  assert.equal(blind.lu.spc2.holder, null);
});

test('SPC-2 5.5: LUs sharing one Spc2Reservation (one volume, two targets) agree on the holder', async () => {
  const shared = new Spc2Reservation();
  const one = await makeTestLu({ spc2Reservation: shared });
  const two = await makeTestLu({ spc2Reservation: shared });
  assertGood(await one.lu.execute(scsiCmd(RESERVE6, { nexus: NEXUS_A })));
  assert.deepEqual(await two.lu.execute(scsiCmd(cdb10(0x28, 0, 1), { nexus: NEXUS_B })), CONFLICT);
  two.lu.forgetNexus(NEXUS_A.key);
  assertGood(await one.lu.execute(scsiCmd(cdb10(0x28, 0, 1), { nexus: NEXUS_B })));
});

test('SPC-4 6.35 / SBC-4 6.5.1: RSOC CDB usage data marks DPO for VERIFY and WRITE AND VERIFY, DPO/FUA for ORWRITE (mode sense says DPOFUA)', async () => {
  const { lu } = await makeTestLu();
  const ms = await lu.execute(scsiCmd([0x1a, 0x08, 0x3f, 0, 255, 0]));
  assert.equal(ms.dataIn![2] & 0x10, 0x10, 'DPOFUA');
  for (const opcode of [0x2e, 0x2f, 0xae, 0xaf, 0x8e, 0x8f]) {
    const r = await lu.execute(scsiCmd(rsocCdb(1, opcode)));
    assertGood(r);
    assert.equal(r.dataIn![1] & 0x07, 0x03, `0x${opcode.toString(16)} supported`);
    assert.equal(r.dataIn![5], 0xf6, `0x${opcode.toString(16)} byte 1: xPROTECT, DPO, BYTCHK`);
  }
  const orw = (await lu.execute(scsiCmd(rsocCdb(1, 0x8b)))).dataIn!;
  assert.equal(orw.readUInt16BE(2), 16);
  assert.equal(orw[5], 0xf8, 'ORPROTECT, DPO, FUA');
  for (const opcode of [0x16, 0x17]) assert.equal((await lu.execute(scsiCmd(rsocCdb(1, opcode)))).dataIn![1] & 0x07, 0x03);
});
