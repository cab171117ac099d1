// Golden bytes of fixed-format sense data (SPC-4 4.5.3), written out by hand from the
// standard's layout: byte 0 VALID | 70h, byte 2 sense key, 3-6 INFORMATION, 7
// ADDITIONAL SENSE LENGTH, 12 ASC, 13 ASCQ, 15-17 sense-key specific (4.5.2.4.2 field
// pointer: SKSV, C/D, BPV, BIT POINTER, FIELD POINTER).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ASC_CAPACITY_DATA_CHANGED,
  ASC_MISCOMPARE_DURING_VERIFY,
  SK_MISCOMPARE,
  SK_UNIT_ATTENTION,
  buildSense,
  goodTruncated,
  invalidFieldInCdb,
  invalidFieldInParameterList,
  miscompare,
} from './sense.js';
import { hex } from './testing.js';

test('SPC-4 4.5.3: UNIT ATTENTION, CAPACITY DATA HAS CHANGED, no information, no SKS', () => {
  assert.equal(buildSense(SK_UNIT_ATTENTION, ASC_CAPACITY_DATA_CHANGED).toString('hex'), hex('70 00 06 00000000 0a 00000000 2a 09 00 000000').toString('hex'));
});

test('SPC-4 4.5.2.4.2: INVALID FIELD IN CDB, field pointer byte 1 bit 7 (C/D=1, BPV=1)', () => {
  const r = invalidFieldInCdb(1, 7);
  assert.equal(r.status, 0x02);
  assert.equal(r.sense!.toString('hex'), hex('70 00 05 00000000 0a 00000000 24 00 00 cf 0001').toString('hex'));
});

test('SPC-4 4.5.2.4.2: INVALID FIELD IN PARAMETER LIST, byte 0x0123 without bit (C/D=0, BPV=0)', () => {
  const r = invalidFieldInParameterList(0x123);
  assert.equal(r.sense!.toString('hex'), hex('70 00 05 00000000 0a 00000000 26 00 00 80 0123').toString('hex'));
});

test('SBC-4 5.3: MISCOMPARE carries VALID=1 and the offset in INFORMATION', () => {
  const r = miscompare(0x1234);
  assert.equal(r.sense!.toString('hex'), hex('f0 00 0e 00001234 0a 00000000 1d 00 00 000000').toString('hex'));
});

test('SPC-4 4.5.3: an INFORMATION value beyond 32 bits leaves VALID = 0', () => {
  const b = buildSense(SK_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY, { information: 2 ** 32 });
  assert.equal(b[0], 0x70);
  assert.equal(b.readUInt32BE(3), 0);
});

test('SPC-4 4.2.5.6: data is cut to the allocation length and to the initiator buffer', () => {
  const data = Buffer.from([1, 2, 3, 4, 5]);
  assert.deepEqual([...goodTruncated(data, 3, 100).dataIn!], [1, 2, 3]);
  assert.deepEqual([...goodTruncated(data, 100, 2).dataIn!], [1, 2]);
  assert.equal(goodTruncated(data, 0, 100).dataIn!.length, 0);
  assert.equal(goodTruncated(data, 10, -1).dataIn!.length, 0);
});
