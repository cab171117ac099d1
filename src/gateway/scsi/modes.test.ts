// MODE SENSE / MODE SELECT (SPC-4 6.11-6.14, 7.5; SBC-4 6.5): golden bytes of the
// pages and headers, page control values, and MODE SELECT validation and effects.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ASC_INVALID_FIELD_IN_CDB,
  ASC_INVALID_FIELD_IN_PARAMETER_LIST,
  ASC_MODE_PARAMETERS_CHANGED,
  ASC_PARAMETER_LIST_LENGTH_ERROR,
  ASC_SAVING_PARAMETERS_NOT_SUPPORTED,
  SK_ILLEGAL_REQUEST,
  SK_UNIT_ATTENTION,
} from './sense.js';
import { NEXUS_A, NEXUS_B, assertCheck, assertGood, cdb10, hex, makeTestLu, scsiCmd } from './testing.js';

const CACHING = '0812 04 00' + '00'.repeat(16);
const CONTROL = '0a0a 02 10 0000 0000 0000 0000';
const IEC = '1c0a 08 00' + '00'.repeat(8);

const sense6 = (byte1: number, pcPage: number, subpage = 0, alloc = 255) => [0x1a, byte1, pcPage, subpage, alloc, 0];
const sense10 = (byte1: number, pcPage: number, subpage = 0, alloc = 0xffff) => [0x5a, byte1, pcPage, subpage, 0, 0, 0, alloc >>> 8, alloc & 0xff, 0];

test('SPC-4 6.11 / SBC-4 6.5: MODE SENSE (6) all pages: header, short block descriptor, 08h, 0Ah, 1Ch', async () => {
  const { lu } = await makeTestLu();
  const r = await lu.execute(scsiCmd(sense6(0, 0x3f)));
  assertGood(r);
  const expected = '37 00 10 08' + '00000800 00 000200' + CACHING + CONTROL + IEC;
  assert.equal(r.dataIn!.toString('hex'), hex(expected).toString('hex'));
});

test('SPC-4 6.12: MODE SENSE (10) with LLBAA: long block descriptor, LONGLBA', async () => {
  const { lu } = await makeTestLu();
  const r = await lu.execute(scsiCmd(sense10(0x10, 0x08)));
  const expected = '002a 00 10 01 00 0010' + '0000000000000800 00000000 00000200' + CACHING;
  assert.equal(r.dataIn!.toString('hex'), hex(expected).toString('hex'));
});

test('SPC-4 6.11: DBD drops the block descriptor; allocation length truncates', async () => {
  const { lu } = await makeTestLu();
  const r = await lu.execute(scsiCmd(sense6(0x08, 0x0a)));
  assert.equal(r.dataIn!.toString('hex'), hex('0f 00 10 00' + CONTROL).toString('hex'));
  const cut = await lu.execute(scsiCmd(sense6(0x08, 0x3f, 0, 4)));
  assert.equal(cut.dataIn!.toString('hex'), '2f001000'); // length still counts every page
});

test('SPC-4 7.5.x page control: changeable (only WCE), default; saved → SAVING PARAMETERS NOT SUPPORTED', async () => {
  const { lu } = await makeTestLu();
  const ch = await lu.execute(scsiCmd(sense6(0x08, 0x40 | 0x08)));
  assert.equal(ch.dataIn!.toString('hex'), hex('17 00 10 00 0812 04' + '00'.repeat(17)).toString('hex'));
  const def = await lu.execute(scsiCmd(sense6(0x08, 0x80 | 0x1c)));
  assert.equal(def.dataIn!.toString('hex'), hex('0f 00 10 00' + IEC).toString('hex'));
  assertCheck(await lu.execute(scsiCmd(sense6(0, 0xc0 | 0x08))), SK_ILLEGAL_REQUEST, ASC_SAVING_PARAMETERS_NOT_SUPPORTED);
});

test('SPC-4 6.11: unknown page or subpage → INVALID FIELD IN CDB', async () => {
  const { lu } = await makeTestLu();
  const s = assertCheck(await lu.execute(scsiCmd(sense6(0, 0x19))), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assert.equal(s.fieldPointer, 2);
  assertCheck(await lu.execute(scsiCmd(sense6(0, 0x08, 0x01))), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertGood(await lu.execute(scsiCmd(sense6(0, 0x3f, 0xff))));
});

const select6 = (byte1: number, length: number) => [0x15, byte1, 0, 0, length, 0];
const select10 = (byte1: number, length: number) => [0x55, byte1, 0, 0, 0, 0, 0, length >>> 8, length & 0xff, 0];

test('SPC-4 6.9: MODE SELECT (6) of the current values is accepted and changes nothing', async () => {
  const { lu } = await makeTestLu();
  const list = hex('00 00 00 08 00000800 00 000200' + CACHING + CONTROL);
  assertGood(await lu.execute(scsiCmd(select6(0x10, list.length), { dataOut: list })));
  assert.deepEqual(lu.pendingUnitAttentions(NEXUS_B.key), []);
  assertGood(await lu.execute(scsiCmd(select6(0x10, 0)))); // empty list
});

test('SBC-4 6.5.5: MODE SELECT WCE=0 makes writes FUA and raises MODE PARAMETERS CHANGED for other nexuses', async () => {
  const { lu, volume } = await makeTestLu();
  assertGood(await lu.execute(scsiCmd([0, 0, 0, 0, 0, 0], { nexus: NEXUS_B }))); // B is known
  const list = hex('0000 00 00 0000 0000' + '0812 00 00' + '00'.repeat(16));
  assertGood(await lu.execute(scsiCmd(select10(0x10, list.length), { dataOut: list, nexus: NEXUS_A })));
  assert.equal((await lu.execute(scsiCmd(sense6(0x08, 0x08)))).dataIn![6], 0x00);
  assertCheck(await lu.execute(scsiCmd([0, 0, 0, 0, 0, 0], { nexus: NEXUS_B })), SK_UNIT_ATTENTION, ASC_MODE_PARAMETERS_CHANGED);
  assert.deepEqual(lu.pendingUnitAttentions(NEXUS_A.key), []);
  assertGood(await lu.execute(scsiCmd(cdb10(0x2a, 0, 1), { dataOut: Buffer.alloc(512, 1) })));
  assert.ok(volume.calls.includes('write 0 512 fua=true'), volume.calls.join());
});

test('SPC-4 6.9: MODE SELECT validation: fixed fields, page length, unknown page, SP, PF, short list', async () => {
  const { lu } = await makeTestLu();
  const ctrl = hex('00 00 00 00 0a0a 06 10 0000 0000 0000 0000'); // D_SENSE set: not changeable
  const s = assertCheck(await lu.execute(scsiCmd(select6(0x10, ctrl.length), { dataOut: ctrl })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAMETER_LIST);
  assert.equal(s.fieldPointer, 6);
  assert.equal(s.sks, 0x8a); // SKSV | BPV | bit 2 (C/D = 0: parameter list)
  const badLen = hex('00 00 00 00 0a0b 02 10 0000 0000 0000 0000 00');
  assertCheck(await lu.execute(scsiCmd(select6(0x10, badLen.length), { dataOut: badLen })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAMETER_LIST);
  const unknown = hex('00 00 00 00 1902 0000');
  assertCheck(await lu.execute(scsiCmd(select6(0x10, unknown.length), { dataOut: unknown })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAMETER_LIST);
  const bd = hex('00 00 00 08 00000000 00 001000'); // 4096-byte block size: not ours
  assertCheck(await lu.execute(scsiCmd(select6(0x10, bd.length), { dataOut: bd })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAMETER_LIST);
  const ok = hex('00 00 00 00' + CONTROL);
  assertCheck(await lu.execute(scsiCmd(select6(0x11, ok.length), { dataOut: ok })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await lu.execute(scsiCmd(select6(0x00, ok.length), { dataOut: ok })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await lu.execute(scsiCmd(select6(0x10, ok.length + 4), { dataOut: ok })), SK_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
  const cutPage = ok.subarray(0, 10);
  assertCheck(await lu.execute(scsiCmd(select6(0x10, cutPage.length), { dataOut: cutPage })), SK_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
  // A rejected list applies nothing, even the valid page before the bad one.
  const mixed = hex('00 00 00 00' + '0812 00 00' + '00'.repeat(16) + '0a0a 06 10 0000 0000 0000 0000');
  assertCheck(await lu.execute(scsiCmd(select6(0x10, mixed.length), { dataOut: mixed })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAMETER_LIST);
  assert.equal(lu.modes.writeCacheEnabled, true);
});
