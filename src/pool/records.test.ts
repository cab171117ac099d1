// Pool records (docs/raid.md): member labels and container headers round-trip,
// every corruption is reported (never trusted), and the newest valid label copy
// wins. Geometry: pieces cover a range exactly, never cross a strip, and the
// roles of a row land on distinct positions with parity rotating.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RECORD_BYTES, chooseLabel, decodeContainer, decodeLabel, encodeContainer, encodeLabel, type ContainerRecord, type MemberLabel } from './records.js';
import { capacityBytes, pieces, positionOf, type ContainerShape } from './geometry.js';
import { Prng, seedFromEnv } from '../stdx/prng.js';

const SEED = seedFromEnv();
console.log(`records.test seed: TESSERA_SEED=${SEED}`);
const uuid = (n: number) => n.toString(16).padStart(32, '0');

const label: MemberLabel = {
  pool: { protection: 'raid6', dataCount: 4, stripBytes: 65536, logicalSizeBytes: 2 ** 33, memberCount: 6, journalBytes: 1 << 20, dataZeroed: false },
  sequence: 7, poolUuid: uuid(1), memberUuid: uuid(2), memberIndex: 3, sizeBytes: 1 << 30, chunkDataBytes: 1 << 20,
  chunkCount: 1000, firstChunkOffset: 2 << 20, enduranceBytes: 2 ** 40, bytesWritten: 12345 * 4096, failedMembers: [0, 5],
};

const container: ContainerRecord = {
  containerId: 42, generation: 3, firstExtent: 8, ownedMask: 0b1011, protection: 'raid6', dataCount: 4, parityCount: 2, stripBytes: 65536,
  members: [0, 1, 2, 3, 4, 5].map((i) => ({ memberUuid: uuid(100 + i), chunkIndex: i * 7 })),
};

test('member label and container header round-trip', () => {
  const b = Buffer.alloc(RECORD_BYTES);
  encodeLabel(label, b);
  assert.deepEqual(decodeLabel(b), label);
  encodeContainer(container, b);
  assert.deepEqual(decodeContainer(b), container);
  const mirror: ContainerRecord = { ...container, protection: 'mirror3', dataCount: 1, parityCount: 2, ownedMask: 1, members: container.members.slice(0, 3) };
  encodeContainer(mirror, b);
  assert.deepEqual(decodeContainer(b), mirror);
});

test('any flipped bit, a short buffer or a wrong magic is reported, never decoded', () => {
  const rng = new Prng(SEED);
  const b = Buffer.alloc(RECORD_BYTES);
  for (const [encode, decode] of [
    [() => encodeLabel(label, b), decodeLabel],
    [() => encodeContainer(container, b), decodeContainer],
  ] as const) {
    encode();
    for (let i = 0; i < 200; i++) {
      const c = Buffer.from(b);
      const bit = rng.int(RECORD_BYTES * 8);
      c[bit >> 3] ^= 1 << (bit & 7);
      assert.equal(typeof decode(c), 'string', `bit ${bit} flipped went unnoticed`);
    }
    assert.equal(decode(b.subarray(0, 100)), 'short record');
    const m = Buffer.from(b);
    m.write('NOTPOOL!', 0, 'latin1'); // a foreign record: wrong magic
    assert.equal(decode(m), 'bad magic');
  }
});

test('checksummed but inconsistent records are refused (lengths are checked, not trusted)', () => {
  const b = Buffer.alloc(RECORD_BYTES);
  encodeLabel({ ...label, chunkCount: 2000 }, b); // chunks end past the device
  assert.match(decodeLabel(b) as string, /does not fit/);
  encodeLabel({ ...label, firstChunkOffset: 1 << 20 }, b); // chunk 0 inside the 1 MiB journal at 64 KiB
  assert.equal(decodeLabel(b), 'chunks overlap the journal area');
  assert.throws(() => encodeContainer({ ...container, parityCount: 1, members: container.members.slice(0, 5) }, b), /raid6 has 2 parity/);
  assert.throws(() => encodeContainer({ ...container, members: container.members.slice(0, 5) }, b), /width/);
});

test('the newest valid label copy wins; none valid names every reason', () => {
  const a = Buffer.alloc(RECORD_BYTES);
  const b = Buffer.alloc(RECORD_BYTES);
  encodeLabel(label, a);
  encodeLabel({ ...label, sequence: 8, bytesWritten: 1 }, b);
  assert.equal((chooseLabel([a, b]) as MemberLabel).sequence, 8);
  b[100] ^= 1;
  assert.equal((chooseLabel([a, b]) as MemberLabel).sequence, 7);
  assert.match(chooseLabel([Buffer.alloc(RECORD_BYTES), b]) as string, /no valid member label \(bad magic, bad checksum\)/);
});

test('geometry: pieces cover a range exactly and stay within strips; row roles are distinct positions', () => {
  const rng = new Prng(SEED ^ 9);
  for (let round = 0; round < 500; round++) {
    const s: ContainerShape = { dataCount: 1 + rng.int(8), parityCount: rng.int(3), stripBytes: 512 << rng.int(5), chunkDataBytes: 0 };
    (s as { chunkDataBytes: number }).chunkDataBytes = s.stripBytes * (1 + rng.int(16));
    const cap = capacityBytes(s);
    const off = rng.int(cap);
    const len = rng.int(cap - off + 1);
    const ps = pieces(s, off, len);
    let covered = 0;
    for (const p of ps) {
      assert.equal(p.bufOffset, covered);
      assert.ok(p.stripOffset + p.lengthBytes <= s.stripBytes, 'piece crosses a strip');
      assert.equal(p.chunkOffset, p.row * s.stripBytes + p.stripOffset);
      assert.equal(p.position, positionOf(s, p.dataIndex, p.row));
      covered += p.lengthBytes;
    }
    assert.equal(covered, len);
    const width = s.dataCount + s.parityCount;
    const row = rng.int(8);
    const roles = Array.from({ length: width }, (_, j) => positionOf(s, j, row));
    assert.equal(new Set(roles).size, width, 'two roles on one position');
  }
  // Parity rotates: P of 4+2 moves one position per row.
  const s: ContainerShape = { dataCount: 4, parityCount: 2, stripBytes: 4096, chunkDataBytes: 4096 * 8 };
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((r) => positionOf(s, 4, r)), [4, 5, 0, 1, 2, 3, 4]);
});
