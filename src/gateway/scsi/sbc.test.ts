// Media commands (SBC-4 5.x) through the LU against a MemoryVolumeStore: READ/WRITE
// 6/10/12/16 round trips and FUA, range and length checks, VERIFY and WRITE AND VERIFY
// (10/12/16), COMPARE AND WRITE (success, miscompare offset, Data-Out length,
// atomicity against concurrent writes), ORWRITE (16), WRITE SAME (Data-Out length),
// UNMAP, GET LBA STATUS, SYNCHRONIZE CACHE, PRE-FETCH.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ASC_INVALID_FIELD_IN_CDB,
  ASC_INVALID_FIELD_IN_PARAMETER_LIST,
  ASC_LBA_OUT_OF_RANGE,
  ASC_MISCOMPARE_DURING_VERIFY,
  ASC_PARAMETER_LIST_LENGTH_ERROR,
  SK_ILLEGAL_REQUEST,
  SK_MISCOMPARE,
} from './sense.js';
import { assertCheck, assertGood, cdb10, cdb12, cdb16, cdb6, deferred, makeTestLu, scsiCmd } from './testing.js';
import type { TestLu } from './testing.js';

const BLOCK = 512;
const CAPACITY = 2048; // 1 MiB volume

function pattern(blocks: number, seed: number): Buffer {
  const b = Buffer.alloc(blocks * BLOCK);
  for (let i = 0; i < b.length; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

async function readBlocks(t: TestLu, lba: number, blocks: number): Promise<Buffer> {
  const r = await t.lu.execute(scsiCmd(cdb16(0x88, lba, blocks)));
  assertGood(r);
  return r.dataIn!;
}

test('SBC-4 5.13-5.16 / 5.40-5.43: READ and WRITE (6)/(10)/(12)/(16) round trips; FUA reaches the volume', async () => {
  const t = await makeTestLu();
  const forms = [
    { w: cdb6(0x0a, 10, 2), r: cdb6(0x08, 10, 2), lba: 10 },
    { w: cdb10(0x2a, 20, 2, 0x08), r: cdb10(0x28, 20, 2), lba: 20 },
    { w: cdb12(0xaa, 30, 2), r: cdb12(0xa8, 30, 2), lba: 30 },
    { w: cdb16(0x8a, 40, 2, 0x08), r: cdb16(0x88, 40, 2), lba: 40 },
  ];
  for (const [i, f] of forms.entries()) {
    const data = pattern(2, i);
    assertGood(await t.lu.execute(scsiCmd(f.w, { dataOut: data })));
    const r = await t.lu.execute(scsiCmd(f.r));
    assertGood(r);
    assert.ok(r.dataIn!.equals(data), `form ${i}`);
  }
  assert.deepEqual(
    t.volume.calls.filter((c) => c.startsWith('write')),
    ['write 5120 1024 fua=false', 'write 10240 1024 fua=true', 'write 15360 1024 fua=false', 'write 20480 1024 fua=true'],
  );
});

test('SBC-4 5.13: READ (6) transfer length 0 means 256 blocks; READ (10) 0 means none', async () => {
  const t = await makeTestLu();
  const r6 = await t.lu.execute(scsiCmd(cdb6(0x08, 0, 0)));
  assert.equal(r6.dataIn!.length, 256 * BLOCK);
  const before = t.volume.calls.length;
  const r10 = await t.lu.execute(scsiCmd(cdb10(0x28, 5, 0)));
  assertGood(r10);
  assert.equal(r10.dataIn, null);
  assert.equal(t.volume.calls.length, before);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 5, 0)))); // WRITE (10) of nothing
});

test('SBC-4 4.5: LBA OUT OF RANGE exactly at the last block boundary', async () => {
  const t = await makeTestLu();
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x28, CAPACITY - 1, 1))));
  assertCheck(await t.lu.execute(scsiCmd(cdb10(0x28, CAPACITY - 1, 2))), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
  assertCheck(await t.lu.execute(scsiCmd(cdb10(0x28, CAPACITY, 1))), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x28, CAPACITY, 0))));
  assertCheck(await t.lu.execute(scsiCmd(cdb10(0x28, CAPACITY + 1, 0))), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
  assertCheck(await t.lu.execute(scsiCmd(cdb16(0x88, 2n ** 64n - 1n, 1))), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
  assertCheck(await t.lu.execute(scsiCmd(cdb16(0x8a, 2n ** 63n, 1), { dataOut: Buffer.alloc(BLOCK) })), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
  assertCheck(await t.lu.execute(scsiCmd(cdb6(0x0a, CAPACITY - 1, 2), { dataOut: Buffer.alloc(2 * BLOCK) })), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
});

test('SBC-4 6.6.4: a transfer above MAXIMUM TRANSFER LENGTH → INVALID FIELD IN CDB at the length field', async () => {
  const t = await makeTestLu({ sizeBytes: 64 * 1024 * 1024 });
  const s = assertCheck(await t.lu.execute(scsiCmd(cdb16(0x88, 0, 16385))), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assert.equal(s.fieldPointer, 10);
  assertGood(await t.lu.execute(scsiCmd(cdb16(0x88, 0, 16384))));
});

test('SBC-4 5.14/5.41: RDPROTECT/WRPROTECT ≠ 0 → INVALID FIELD IN CDB (no protection information)', async () => {
  const t = await makeTestLu();
  const s = assertCheck(await t.lu.execute(scsiCmd(cdb10(0x28, 0, 1, 0x20))), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assert.equal(s.fieldPointer, 1);
  assert.equal(s.sks, 0xcf);
  assertCheck(await t.lu.execute(scsiCmd(cdb16(0x8a, 0, 1, 0x40), { dataOut: Buffer.alloc(BLOCK) })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
});

test('SBC-4 5.41 + RFC 7143 §11.4.5.1: a shorter Data-Out writes the whole blocks that arrived and reports the CDB length; longer is cut', async () => {
  const t = await makeTestLu();
  const first = pattern(2, 5);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 0, 2), { dataOut: first })));
  // EDTL of one block for a two-block WRITE: block 0 changes, block 1 keeps its data,
  // and transferBytes lets the transport report one block of overflow.
  const b = pattern(1, 6);
  const r = await t.lu.execute(scsiCmd(cdb10(0x2a, 0, 2), { dataOut: b }));
  assertGood(r);
  assert.equal(r.transferBytes, 2 * BLOCK);
  assert.ok((await readBlocks(t, 0, 2)).equals(Buffer.concat([b, first.subarray(BLOCK)])));
  // No data at all (EDTL 0) or less than a block: nothing is written.
  const none = await t.lu.execute(scsiCmd(cdb10(0x2a, 0, 1)));
  assertGood(none);
  assert.equal(none.transferBytes, BLOCK);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 0, 1), { dataOut: Buffer.alloc(200, 0xee) })));
  assert.ok((await readBlocks(t, 0, 1)).equals(b));
  const data = pattern(2, 9);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 100, 1), { dataOut: data })));
  assert.ok((await readBlocks(t, 100, 2)).equals(Buffer.concat([data.subarray(0, BLOCK), Buffer.alloc(BLOCK)])));
});

test('SBC-4 5.14: a read into a smaller initiator buffer returns its prefix', async () => {
  const t = await makeTestLu();
  const data = pattern(4, 3);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 0, 4), { dataOut: data })));
  const r = await t.lu.execute(scsiCmd(cdb10(0x28, 0, 4), { expectedInBytes: 700 }));
  assertGood(r);
  assert.ok(r.dataIn!.equals(data.subarray(0, 700)));
  assert.ok(t.volume.calls.includes('read 0 1024'), 'reads only the blocks covering the buffer');
});

test('SBC-4 5.33/5.34: VERIFY BYTCHK=0 checks readability; BYTCHK=1 compares, MISCOMPARE offset in INFORMATION', async () => {
  const t = await makeTestLu();
  const data = pattern(3, 1);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 50, 3), { dataOut: data })));
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2f, 0, CAPACITY))));
  assertGood(await t.lu.execute(scsiCmd(cdb16(0x8f, 50, 3, 0x02), { dataOut: data })));
  const other = Buffer.from(data);
  other[BLOCK + 17] ^= 0xff;
  const s = assertCheck(await t.lu.execute(scsiCmd(cdb10(0x2f, 50, 3, 0x02), { dataOut: other })), SK_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY);
  assert.equal(s.information, BLOCK + 17);
  assertCheck(await t.lu.execute(scsiCmd(cdb10(0x2f, 50, 3, 0x04))), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB); // BYTCHK 10b
  assertCheck(await t.lu.execute(scsiCmd(cdb10(0x2f, CAPACITY - 1, 2))), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
});

test('SBC-4 VERIFY (12) 0xAF: BYTCHK 0/1, MISCOMPARE offset, DPO accepted, 0 blocks, range, VRPROTECT', async () => {
  const t = await makeTestLu();
  const data = pattern(2, 7);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 80, 2), { dataOut: data })));
  assertGood(await t.lu.execute(scsiCmd(cdb12(0xaf, 80, 2))));
  assertGood(await t.lu.execute(scsiCmd(cdb12(0xaf, 80, 2, 0x12), { dataOut: data }))); // DPO | BYTCHK 01b
  const other = Buffer.from(data);
  other[700] ^= 0x01;
  const s = assertCheck(await t.lu.execute(scsiCmd(cdb12(0xaf, 80, 2, 0x02), { dataOut: other })), SK_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY);
  assert.equal(s.information, 700);
  assertGood(await t.lu.execute(scsiCmd(cdb12(0xaf, 80, 2), { dataOut: other })), 'BYTCHK 0 compares nothing');
  assertGood(await t.lu.execute(scsiCmd(cdb12(0xaf, 0, 0))));
  assertCheck(await t.lu.execute(scsiCmd(cdb12(0xaf, CAPACITY + 1, 0))), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
  assertCheck(await t.lu.execute(scsiCmd(cdb12(0xaf, 0xffffffff, 1))), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
  assertCheck(await t.lu.execute(scsiCmd(cdb12(0xaf, 0, 1, 0x20))), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
});

test('SBC-4 WRITE AND VERIFY (12) 0xAE: writes durably, compares with BYTCHK 1; short Data-Out reports the CDB length', async () => {
  const t = await makeTestLu();
  const data = pattern(2, 8);
  assertGood(await t.lu.execute(scsiCmd(cdb12(0xae, 90, 2, 0x12), { dataOut: data }))); // DPO | BYTCHK
  assert.ok((await readBlocks(t, 90, 2)).equals(data));
  assert.ok(t.volume.calls.includes(`write ${90 * BLOCK} ${2 * BLOCK} fua=true`));
  const r = await t.lu.execute(scsiCmd(cdb12(0xae, 90, 1), { dataOut: Buffer.alloc(200, 0xa6) }));
  assertGood(r); // libiscsi iSCSIResiduals.WriteVerify12Residuals: EDTL 200 for one block
  assert.equal(r.transferBytes, BLOCK);
  assert.ok((await readBlocks(t, 90, 1)).equals(data.subarray(0, BLOCK)), 'a partial block is not written');
  assertGood(await t.lu.execute(scsiCmd(cdb12(0xae, 0, 0))));
  assertCheck(await t.lu.execute(scsiCmd(cdb12(0xae, CAPACITY - 1, 2), { dataOut: Buffer.alloc(2 * BLOCK) })), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
  assertCheck(await t.lu.execute(scsiCmd(cdb12(0xae, 0, 1, 0x40), { dataOut: Buffer.alloc(BLOCK) })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
});

test('SBC-4 5.47/5.48: WRITE AND VERIFY writes durably and reads back', async () => {
  const t = await makeTestLu();
  const data = pattern(2, 5);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2e, 7, 2, 0x02), { dataOut: data })));
  assertGood(await t.lu.execute(scsiCmd(cdb16(0x8e, 9, 2), { dataOut: data })));
  assert.ok((await readBlocks(t, 7, 4)).equals(Buffer.concat([data, data])));
  assert.ok(t.volume.calls.includes('write 3584 1024 fua=true'));
});

function caw(lba: number, blocks: number, byte1 = 0): Buffer {
  const b = Buffer.alloc(16);
  b[0] = 0x89;
  b[1] = byte1;
  b.writeBigUInt64BE(BigInt(lba), 2);
  b[13] = blocks;
  return b;
}

test('SBC-4 5.3: COMPARE AND WRITE writes when the compare matches; MISCOMPARE with the offset otherwise', async () => {
  const t = await makeTestLu({ maxCompareAndWriteBlocks: 4 });
  const old = pattern(2, 1);
  const next = pattern(2, 2);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 64, 2), { dataOut: old })));
  assertGood(await t.lu.execute(scsiCmd(caw(64, 2, 0x08), { dataOut: Buffer.concat([old, next]) })));
  assert.ok((await readBlocks(t, 64, 2)).equals(next));
  assert.ok(t.volume.calls.includes('write 32768 1024 fua=true'), 'FUA bit honoured');
  const wrong = Buffer.from(next);
  wrong[600] ^= 1;
  const s = assertCheck(await t.lu.execute(scsiCmd(caw(64, 2), { dataOut: Buffer.concat([wrong, pattern(2, 3)]) })), SK_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY);
  assert.equal(s.information, 600);
  assert.ok((await readBlocks(t, 64, 2)).equals(next), 'nothing written on miscompare');
  assertGood(await t.lu.execute(scsiCmd(caw(64, 0)))); // 0 blocks: nothing, not an error
  assertCheck(await t.lu.execute(scsiCmd(caw(64, 5), { dataOut: Buffer.alloc(10 * BLOCK) })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await t.lu.execute(scsiCmd(caw(64, 2), { dataOut: Buffer.alloc(3 * BLOCK) })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await t.lu.execute(scsiCmd(caw(CAPACITY - 1, 2), { dataOut: Buffer.alloc(4 * BLOCK) })), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
});

test('SBC-4 5.3: COMPARE AND WRITE needs a Data-Out of exactly 2 × N blocks; N = 0 with data is refused', async () => {
  const t = await makeTestLu({ maxCompareAndWriteBlocks: 4 });
  const old = pattern(1, 1);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 8, 1), { dataOut: old })));
  const before = t.volume.calls.length;
  // Too much data for N = 1 (libiscsi's InvalidDataOutSize: 4 blocks with N = 1), even
  // though its first block matches; too little for N = 3.
  const s = assertCheck(await t.lu.execute(scsiCmd(caw(8, 1), { dataOut: Buffer.concat([old, pattern(3, 2)]) })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assert.equal(s.fieldPointer, 13);
  assertCheck(await t.lu.execute(scsiCmd(caw(8, 3), { dataOut: Buffer.alloc(4 * BLOCK) })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  // N = 0 (e.g. 256 truncated into the 8-bit field) with 2 × 256 blocks of data.
  assertCheck(await t.lu.execute(scsiCmd(caw(8, 0), { dataOut: Buffer.alloc(512 * BLOCK) })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertGood(await t.lu.execute(scsiCmd(caw(8, 0), { dataOut: Buffer.alloc(0) })));
  assert.equal(t.volume.calls.length, before, 'nothing read or written');
});

function orwrite(lba: number | bigint, blocks: number, byte1 = 0): Buffer {
  return cdb16(0x8b, lba, blocks, byte1);
}

test('SBC-4 5.8: ORWRITE (16) ORs the Data-Out into the blocks; FUA reaches the volume; 0 blocks, range, ORPROTECT', async () => {
  const t = await makeTestLu();
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 20, 2), { dataOut: Buffer.alloc(2 * BLOCK, 0x00) })));
  assertGood(await t.lu.execute(scsiCmd(orwrite(20, 2), { dataOut: Buffer.alloc(2 * BLOCK, 0xa5) })));
  assert.ok((await readBlocks(t, 20, 2)).equals(Buffer.alloc(2 * BLOCK, 0xa5)));
  assertGood(await t.lu.execute(scsiCmd(orwrite(20, 2, 0x18), { dataOut: Buffer.alloc(2 * BLOCK, 0x5a) }))); // DPO | FUA
  assert.ok((await readBlocks(t, 20, 2)).equals(Buffer.alloc(2 * BLOCK, 0xff)));
  assert.ok(t.volume.calls.includes(`write ${20 * BLOCK} ${2 * BLOCK} fua=true`), 'FUA honoured');
  const mixed = pattern(1, 3);
  const base = pattern(1, 4);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 30, 1), { dataOut: base })));
  assertGood(await t.lu.execute(scsiCmd(orwrite(30, 1), { dataOut: mixed })));
  assert.ok((await readBlocks(t, 30, 1)).equals(Buffer.from(base.map((x, i) => x | mixed[i]))));
  assertGood(await t.lu.execute(scsiCmd(orwrite(0, 0))));
  assertCheck(await t.lu.execute(scsiCmd(orwrite(CAPACITY + 1, 0))), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
  assertCheck(await t.lu.execute(scsiCmd(orwrite(CAPACITY - 1, 2), { dataOut: Buffer.alloc(2 * BLOCK) })), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
  assertCheck(await t.lu.execute(scsiCmd(orwrite(2n ** 63n, 1), { dataOut: Buffer.alloc(BLOCK) })), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
  for (let p = 1; p < 8; p++) assertCheck(await t.lu.execute(scsiCmd(orwrite(0, 1, p << 5), { dataOut: Buffer.alloc(BLOCK) })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await t.lu.execute(scsiCmd(orwrite(0, 16385), { dataOut: Buffer.alloc(BLOCK) })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
});

test('SBC-4 5.8 + RFC 7143 §11.4.5.1: ORWRITE with a short Data-Out ORs the whole blocks that arrived and reports the CDB length', async () => {
  const t = await makeTestLu();
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 40, 2), { dataOut: Buffer.alloc(2 * BLOCK, 0x01) })));
  const r = await t.lu.execute(scsiCmd(orwrite(40, 2), { dataOut: Buffer.alloc(BLOCK + 100, 0x10) }));
  assertGood(r);
  assert.equal(r.transferBytes, 2 * BLOCK);
  assert.ok((await readBlocks(t, 40, 2)).equals(Buffer.concat([Buffer.alloc(BLOCK, 0x11), Buffer.alloc(BLOCK, 0x01)])));
});

test('SBC-4 5.8: ORWRITE is atomic: a WRITE arriving between its read and its write waits and is not lost', async () => {
  const t = await makeTestLu();
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 60, 1), { dataOut: Buffer.alloc(BLOCK, 0x0f) })));
  const gate = deferred();
  t.volume.readGate = gate.promise;
  const orDone = t.lu.execute(scsiCmd(orwrite(60, 1), { dataOut: Buffer.alloc(BLOCK, 0xf0) }));
  await new Promise((r) => setImmediate(r));
  t.volume.readGate = null;
  const writeDone = t.lu.execute(scsiCmd(cdb10(0x2a, 60, 1), { dataOut: Buffer.alloc(BLOCK, 0x33) }));
  await new Promise((r) => setImmediate(r));
  gate.resolve();
  assertGood(await orDone);
  assertGood(await writeDone);
  // Had the WRITE landed between the ORWRITE's read and write, the block would be 0xff.
  assert.ok((await readBlocks(t, 60, 1)).equals(Buffer.alloc(BLOCK, 0x33)));
  assert.equal(t.lu.lock.size, 0);
});

test('SBC-4 5.3: COMPARE AND WRITE is atomic against a WRITE arriving between its compare and its write', async () => {
  const t = await makeTestLu();
  const old = pattern(1, 1);
  const cawData = pattern(1, 2);
  const other = pattern(1, 3);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 8, 1), { dataOut: old })));
  const slowRead = deferred();
  t.volume.readGate = slowRead.promise;
  const cawDone = t.lu.execute(scsiCmd(caw(8, 1), { dataOut: Buffer.concat([old, cawData]) }));
  await new Promise((r) => setImmediate(r));
  t.volume.readGate = null;
  const writeDone = t.lu.execute(scsiCmd(cdb10(0x2a, 8, 1), { dataOut: other }));
  await new Promise((r) => setImmediate(r));
  assert.equal(t.volume.calls.filter((c) => c === 'write 4096 512 fua=false').length, 1, 'the WRITE waits for the CAW');
  slowRead.resolve();
  assertGood(await cawDone);
  assertGood(await writeDone);
  assert.ok((await readBlocks(t, 8, 1)).equals(other), 'the later WRITE lands after the CAW');
  assert.equal(t.lu.lock.size, 0);
});

test('SBC-4 5.3: COMPARE AND WRITE waits for a WRITE already in flight on its range', async () => {
  const t = await makeTestLu();
  const old = pattern(1, 1);
  const other = pattern(1, 3);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 8, 1), { dataOut: old })));
  const slowWrite = deferred();
  t.volume.writeGate = slowWrite.promise;
  const writeDone = t.lu.execute(scsiCmd(cdb10(0x2a, 8, 1), { dataOut: other }));
  await new Promise((r) => setImmediate(r));
  t.volume.writeGate = null;
  const cawDone = t.lu.execute(scsiCmd(caw(8, 1), { dataOut: Buffer.concat([old, pattern(1, 2)]) }));
  const apart = t.lu.execute(scsiCmd(cdb10(0x2a, 500, 1), { dataOut: other }));
  assertGood(await apart, 'other ranges are not held up');
  assert.equal(t.volume.calls.filter((c) => c.startsWith('read')).length, 0, 'the CAW has not compared yet');
  slowWrite.resolve();
  assertGood(await writeDone);
  // The compare sees the WRITE's data, so it miscompares at byte 0... unless equal.
  const s = assertCheck(await cawDone, SK_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY);
  assert.equal(s.information, old.findIndex((x, i) => x !== other[i]));
});

test('SBC-4 5.50/5.51: WRITE SAME with UNMAP and a zero block frees space and reads zeros', async () => {
  const t = await makeTestLu();
  assertGood(await t.lu.execute(scsiCmd(cdb16(0x8a, 0, 512), { dataOut: pattern(512, 4) })));
  assert.equal(t.store.info('v').usedBytes, 256 * 1024);
  assertGood(await t.lu.execute(scsiCmd(cdb16(0x93, 0, 384, 0x08), { dataOut: Buffer.alloc(BLOCK) })));
  assert.equal(t.store.info('v').usedBytes, 64 * 1024);
  assert.ok((await readBlocks(t, 0, 384)).equals(Buffer.alloc(384 * BLOCK)));
  assert.ok(t.volume.calls.includes('writeZeroes 0 196608 mayTrim=true'));
  // WRITE SAME (10) with UNMAP and NDOB-less zero block; WRITE SAME (16) NDOB.
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x41, 384, 128, 0x08), { dataOut: Buffer.alloc(BLOCK) })));
  assert.equal(t.store.info('v').usedBytes, 0);
  assertGood(await t.lu.execute(scsiCmd(cdb16(0x93, 0, 16, 0x01))));
});

test('SBC-4 5.50: WRITE SAME replicates a non-zero block; 0 blocks (WSNZ), ANCHOR, PBDATA, over the limit → INVALID FIELD IN CDB', async () => {
  const t = await makeTestLu({ maxWriteSameBytes: 256 * 1024 });
  const block = pattern(1, 8);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x41, 10, 300), { dataOut: block })));
  const back = await readBlocks(t, 10, 300);
  for (let i = 0; i < 300; i++) assert.ok(back.subarray(i * BLOCK, (i + 1) * BLOCK).equals(block), `block ${i}`);
  assertCheck(await t.lu.execute(scsiCmd(cdb10(0x41, 10, 0), { dataOut: block })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await t.lu.execute(scsiCmd(cdb16(0x93, CAPACITY - 1, 0), { dataOut: block })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await t.lu.execute(scsiCmd(cdb10(0x41, 10, 1, 0x10), { dataOut: block })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await t.lu.execute(scsiCmd(cdb10(0x41, 10, 1, 0x04), { dataOut: block })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await t.lu.execute(scsiCmd(cdb16(0x93, 0, 513), { dataOut: block })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await t.lu.execute(scsiCmd(cdb16(0x93, CAPACITY - 1, 2), { dataOut: block })), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
});

test('SBC-4 5.50/5.51: WRITE SAME Data-Out must be exactly one block (none with NDOB); otherwise nothing is written', async () => {
  const t = await makeTestLu();
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 5, 1), { dataOut: Buffer.alloc(BLOCK, 0x77) })));
  const before = t.volume.calls.length;
  assertCheck(await t.lu.execute(scsiCmd(cdb10(0x41, 5, 1, 0x08), { dataOut: Buffer.alloc(BLOCK / 2) })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await t.lu.execute(scsiCmd(cdb10(0x41, 5, 1, 0x08), { dataOut: Buffer.alloc(2 * BLOCK) })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await t.lu.execute(scsiCmd(cdb16(0x93, 5, 1, 0x08), { dataOut: Buffer.alloc(2 * BLOCK) })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await t.lu.execute(scsiCmd(cdb16(0x93, 5, 1))), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertCheck(await t.lu.execute(scsiCmd(cdb16(0x93, 5, 1, 0x01), { dataOut: Buffer.alloc(BLOCK) })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB); // NDOB with data
  assert.equal(t.volume.calls.length, before);
  assert.ok((await readBlocks(t, 5, 1)).equals(Buffer.alloc(BLOCK, 0x77)));
});

function unmapList(descriptors: Array<[number, number]>, extraBytes = 0): Buffer {
  const b = Buffer.alloc(8 + descriptors.length * 16 + extraBytes);
  b.writeUInt16BE(b.length - 2, 0);
  b.writeUInt16BE(descriptors.length * 16 + extraBytes, 2);
  descriptors.forEach(([lba, n], i) => {
    b.writeBigUInt64BE(BigInt(lba), 8 + i * 16);
    b.writeUInt32BE(n, 16 + i * 16);
  });
  return b;
}

const unmapCdb = (length: number, byte1 = 0) => [0x42, byte1, 0, 0, 0, 0, 0, length >>> 8, length & 0xff, 0];

test('SBC-4 5.32: UNMAP block descriptors trim ranges; validation changes nothing on error', async () => {
  const t = await makeTestLu();
  assertGood(await t.lu.execute(scsiCmd(cdb16(0x8a, 0, 1024), { dataOut: pattern(1024, 6) })));
  const list = unmapList([[0, 128], [256, 256], [700, 0]], 8); // 8 trailing bytes: a partial descriptor, ignored
  assertGood(await t.lu.execute(scsiCmd(unmapCdb(list.length), { dataOut: list })));
  assert.equal(t.store.info('v').usedBytes, 5 * 64 * 1024);
  assert.ok((await readBlocks(t, 256, 256)).equals(Buffer.alloc(256 * BLOCK)));
  assert.ok(!(await readBlocks(t, 128, 1)).equals(Buffer.alloc(BLOCK)));
  const bad = unmapList([[512, 128], [CAPACITY - 1, 2]]);
  assertCheck(await t.lu.execute(scsiCmd(unmapCdb(bad.length), { dataOut: bad })), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
  assert.equal(t.store.info('v').usedBytes, 5 * 64 * 1024, 'the valid first descriptor was not applied');
  assertGood(await t.lu.execute(scsiCmd(unmapCdb(0))));
  assertCheck(await t.lu.execute(scsiCmd(unmapCdb(6), { dataOut: Buffer.alloc(6) })), SK_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
  assertCheck(await t.lu.execute(scsiCmd(unmapCdb(24), { dataOut: Buffer.alloc(8) })), SK_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
  assertCheck(await t.lu.execute(scsiCmd(unmapCdb(list.length, 0x01), { dataOut: list })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
});

test('SBC-4 5.32: UNMAP over the descriptor or LBA count limits → INVALID FIELD IN PARAMETER LIST', async () => {
  const t = await makeTestLu({ maxUnmapDescriptors: 2, maxUnmapBytes: 64 * 1024 });
  const many = unmapList([[0, 1], [1, 1], [2, 1]]);
  assertCheck(await t.lu.execute(scsiCmd(unmapCdb(many.length), { dataOut: many })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAMETER_LIST);
  const big = unmapList([[0, 100], [200, 29]]);
  const s = assertCheck(await t.lu.execute(scsiCmd(unmapCdb(big.length), { dataOut: big })), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAMETER_LIST);
  assert.equal(s.fieldPointer, 8 + 16 + 8);
});

test('SBC-4 5.7: GET LBA STATUS reports mapped and deallocated runs', async () => {
  const t = await makeTestLu();
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 130, 1), { dataOut: pattern(1, 1) })));
  const cdb = Buffer.alloc(16);
  cdb[0] = 0x9e;
  cdb[1] = 0x12;
  cdb.writeBigUInt64BE(10n, 2);
  cdb.writeUInt32BE(1024, 10);
  const r = await t.lu.execute(scsiCmd(cdb));
  assertGood(r);
  const d = r.dataIn!;
  assert.equal(d.readUInt32BE(0), 4 + 3 * 16);
  const desc = (i: number) => [Number(d.readBigUInt64BE(8 + i * 16)), d.readUInt32BE(16 + i * 16), d[20 + i * 16]];
  assert.deepEqual([desc(0), desc(1), desc(2)], [[10, 118, 1], [128, 128, 0], [256, CAPACITY - 256, 1]]);
  cdb.writeBigUInt64BE(BigInt(CAPACITY), 2);
  assertCheck(await t.lu.execute(scsiCmd(cdb)), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
});

test('SBC-4 5.22/5.23, 5.11/5.12: SYNCHRONIZE CACHE flushes; PRE-FETCH answers GOOD; both check the range', async () => {
  const t = await makeTestLu();
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x35, 0, 0))));
  assertGood(await t.lu.execute(scsiCmd(cdb16(0x91, 100, 10, 0x02))));
  assert.equal(t.volume.calls.filter((c) => c === 'flush').length, 2);
  assertCheck(await t.lu.execute(scsiCmd(cdb10(0x35, CAPACITY, 1))), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x34, 0, 10))));
  assertCheck(await t.lu.execute(scsiCmd(cdb16(0x90, CAPACITY - 5, 10))), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
});

test('SBC-4 4.x: 4096-byte logical blocks address the volume in 4 KiB units', async () => {
  const t = await makeTestLu({ blockSizeBytes: 4096 });
  const data = Buffer.alloc(8192, 0x5a);
  assertGood(await t.lu.execute(scsiCmd(cdb10(0x2a, 3, 2), { dataOut: data })));
  assert.ok(t.volume.calls.includes('write 12288 8192 fua=false'));
  assertCheck(await t.lu.execute(scsiCmd(cdb10(0x28, 255, 2))), SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
});
