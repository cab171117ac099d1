// Golden bytes of INQUIRY (SPC-4 6.6.2 standard data, 7.8 VPD pages; SBC-4 6.6 block
// VPD pages) and READ CAPACITY (SBC-4 5.17/5.18), written by hand from the field
// tables. The NAA designator's hash bytes are computed here with node:crypto from the
// layout (NAA 6 | company id | 36 bits of sha256(cluster id) | volume id).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { ASC_INVALID_FIELD_IN_CDB, SK_ILLEGAL_REQUEST } from './sense.js';
import { NEXUS_A, assertCheck, assertGood, hex, makeTestLu, scsiCmd } from './testing.js';

function expectedNaa(clusterId: string, volumeId: number): Buffer {
  const h = createHash('sha256').update(clusterId).digest();
  const b = Buffer.alloc(16);
  b[0] = 0x60;
  b[1] = 0xa7;
  b[2] = 0xe5;
  b[3] = 0x50 | (h[0] & 0x0f);
  h.copy(b, 4, 1, 5);
  b.writeBigUInt64BE(BigInt(volumeId), 8);
  return b;
}

const inq = (evpd: number, page: number, alloc = 0xffff) => [0x12, evpd, page, alloc >>> 8, alloc & 0xff, 0];

test('SPC-4 6.6.2: standard INQUIRY data, 96 bytes', async () => {
  const { lu } = await makeTestLu();
  const r = await lu.execute(scsiCmd(inq(0, 0)));
  assertGood(r);
  const ascii = (s: string, n: number) => Buffer.from(s.padEnd(n, ' ')).toString('hex');
  const expected = hex(
    '00 00 06 12 5b 00 00 02' +
      ascii('TESSERA', 8) +
      ascii('VOLUME', 16) +
      ascii('0001', 4) +
      '00'.repeat(20) + // 36..55 vendor specific
      '00 00' + // 56, 57
      '00a0 0960 0460 0600 04c0 0000 0000 0000' + // version descriptors 58..73: SAM-5, iSCSI, SPC-4, SBC-4, SBC-3
      '00'.repeat(22),
  );
  assert.equal(r.dataIn!.toString('hex'), expected.toString('hex'));
});

test('SPC-4 6.6.1: INQUIRY data is cut to the ALLOCATION LENGTH and to expectedInBytes', async () => {
  const { lu } = await makeTestLu();
  assert.equal((await lu.execute(scsiCmd(inq(0, 0, 36)))).dataIn!.length, 36);
  assert.equal((await lu.execute(scsiCmd(inq(0, 0, 0)))).dataIn!.length, 0);
  assert.equal((await lu.execute(scsiCmd(inq(0, 0), { expectedInBytes: 5 }))).dataIn!.length, 5);
  assert.equal((await lu.execute(scsiCmd(inq(1, 0x83, 4)))).dataIn!.toString('hex'), '0083006c');
});

test('SPC-4 6.6.1: CMDDT, page code without EVPD, unknown VPD page → INVALID FIELD IN CDB', async () => {
  const { lu } = await makeTestLu();
  const cmddt = assertCheck(await lu.execute(scsiCmd(inq(0x02, 0))), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assert.equal(cmddt.sks, 0xc9); // SKSV | C/D | BPV | bit 1
  assert.equal(cmddt.fieldPointer, 1);
  const page = assertCheck(await lu.execute(scsiCmd(inq(0, 0x80))), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assert.equal(page.fieldPointer, 2);
  assertCheck(await lu.execute(scsiCmd(inq(1, 0x86))), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
});

test('SPC-4 7.8.2: VPD 0x00 supported pages', async () => {
  const { lu } = await makeTestLu();
  assert.equal((await lu.execute(scsiCmd(inq(1, 0)))).dataIn!.toString('hex'), '00000006' + '008083b0b1b2');
});

test('SPC-4 7.8.15: VPD 0x80 unit serial number = the NAA designator in hex', async () => {
  const { lu } = await makeTestLu();
  const serial = expectedNaa('test-cluster', 1).toString('hex');
  const r = await lu.execute(scsiCmd(inq(1, 0x80)));
  assert.equal(r.dataIn!.toString('hex'), '00800020' + Buffer.from(serial).toString('hex'));
});

test('SPC-4 7.8.6: VPD 0x83 NAA 6, relative target port, target port group, SCSI name strings', async () => {
  const { lu } = await makeTestLu();
  const r = await lu.execute(scsiCmd(inq(1, 0x83), { nexus: NEXUS_A }));
  const port = Buffer.concat([Buffer.from('iqn.2024-01.io.tessera:vol,t,0x0001'), Buffer.alloc(1)]); // 36 bytes
  const device = Buffer.concat([Buffer.from('iqn.2024-01.io.tessera:vol'), Buffer.alloc(2)]); // 28 bytes
  const expected =
    '0083 006c' +
    '01 03 00 10' + expectedNaa('test-cluster', 1).toString('hex') + // LU, binary, NAA
    '51 94 00 04 0000 0002' + // iSCSI, PIV, target port, relative target port 2 (TPGT 1 + 1)
    '51 95 00 04 0000 0002' + // target port group
    '53 98 00 24' + port.toString('hex') + // target port SCSI name, UTF-8
    '53 a8 00 1c' + device.toString('hex'); // target device SCSI name
  assert.equal(r.dataIn!.toString('hex'), hex(expected).toString('hex'));
});

test('SPC-4 7.8.6: two gateways (clusters sharing an id) report the same NAA; another cluster id differs', async () => {
  const a = await makeTestLu({ clusterId: 'c' });
  const b = await makeTestLu({ clusterId: 'c' });
  const c = await makeTestLu({ clusterId: 'd' });
  const naa = async (t: typeof a) => (await t.lu.execute(scsiCmd(inq(1, 0x83)))).dataIn!.subarray(8, 24).toString('hex');
  assert.equal(await naa(a), await naa(b));
  assert.notEqual(await naa(a), await naa(c));
});

test('SBC-4 6.6.4: VPD 0xB0 block limits (512-byte blocks, 64 KiB objects, 8 MiB max transfer)', async () => {
  const { lu } = await makeTestLu();
  const r = await lu.execute(scsiCmd(inq(1, 0xb0)));
  const expected =
    '00b0 003c' +
    '01 01 0008' + // WSNZ, MAXIMUM COMPARE AND WRITE LENGTH 1, OPTIMAL TRANSFER LENGTH GRANULARITY 8 (4 KiB)
    '00004000' + // MAXIMUM TRANSFER LENGTH 16384 blocks = 8 MiB
    '00000080' + // OPTIMAL TRANSFER LENGTH 128 blocks = one object
    '00000000' + // MAXIMUM PREFETCH LENGTH
    '00100000' + // MAXIMUM UNMAP LBA COUNT 512 MiB = 2^20 blocks
    '00000100' + // MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT 256
    '00000080' + // OPTIMAL UNMAP GRANULARITY 128 blocks = one object
    '80000000' + // UGAVALID, alignment 0
    '0000000000200000' + // MAXIMUM WRITE SAME LENGTH 1 GiB
    '00'.repeat(20);
  assert.equal(r.dataIn!.toString('hex'), hex(expected).toString('hex'));
});

test('SBC-4 6.6.2: VPD 0xB1 block device characteristics: non-rotating', async () => {
  const { lu } = await makeTestLu();
  const r = await lu.execute(scsiCmd(inq(1, 0xb1)));
  assert.equal(r.dataIn!.toString('hex'), '00b1003c0001' + '00'.repeat(58));
});

test('SBC-4 6.6.6: VPD 0xB2 logical block provisioning: LBPU, LBPWS, LBPWS10, LBPRZ=1, thin', async () => {
  const { lu } = await makeTestLu();
  const r = await lu.execute(scsiCmd(inq(1, 0xb2)));
  assert.equal(r.dataIn!.toString('hex'), '00b2000400e40200');
});

test('SBC-4 5.17: READ CAPACITY (10) of 1 MiB at 512 bytes: last LBA 0x7ff', async () => {
  const { lu } = await makeTestLu();
  const r = await lu.execute(scsiCmd([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
  assert.equal(r.dataIn!.toString('hex'), '000007ff00000200');
});

test('SBC-4 5.17: READ CAPACITY (10) answers FFFFFFFFh beyond 2^32 blocks; (16) has the real value', async () => {
  const { lu } = await makeTestLu({ sizeBytes: 4 * 2 ** 40 });
  const r10 = await lu.execute(scsiCmd([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
  assert.equal(r10.dataIn!.toString('hex'), 'ffffffff00000200');
  const r16 = await lu.execute(scsiCmd([0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]));
  assert.equal(r16.dataIn!.subarray(0, 12).toString('hex'), '00000001ffffffff00000200');
});

test('SBC-4 5.18: READ CAPACITY (16): 4096-byte blocks, exponent 0, LBPME | LBPRZ, allocation length', async () => {
  const { lu } = await makeTestLu({ blockSizeBytes: 4096 });
  const r = await lu.execute(scsiCmd([0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]));
  assert.equal(r.dataIn!.toString('hex'), hex('00000000000000ff 00001000 10 00 c000' + '00'.repeat(16)).toString('hex'));
  const small = await makeTestLu();
  const r512 = await small.lu.execute(scsiCmd([0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 14, 0, 0]));
  assert.equal(r512.dataIn!.toString('hex'), '00000000000007ff000002001003'); // exponent 3: 8 x 512 per 4 KiB
});

test('SBC-4 5.17/5.18: PMI = 0 with a non-zero LBA → INVALID FIELD IN CDB', async () => {
  const { lu } = await makeTestLu();
  assertCheck(await lu.execute(scsiCmd([0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0])), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
  assertGood(await lu.execute(scsiCmd([0x25, 0, 0, 0, 0, 1, 0, 0, 1, 0])));
  assertCheck(await lu.execute(scsiCmd([0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 32, 0, 0])), SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
});
