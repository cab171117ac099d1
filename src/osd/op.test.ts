// The raft entry codec of PG ops (osd/op.ts): round trips, validation, and that
// an encoded op owns its bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeOp, encodeOp, OP_HEADER_BYTES, OpKind, peekOpTarget, type OpTarget } from './op.js';

test('write and zero ops round-trip through encodeOp/decodeOp', () => {
  const data = Buffer.alloc(4096, 0x5c);
  const w = encodeOp(OpKind.Write, 7, 3 * 2 ** 32 + 8192, data.length, data);
  assert.equal(w.length, OP_HEADER_BYTES + 4096);
  const op = decodeOp(w)!;
  assert.deepEqual({ kind: op.kind, volumeId: op.volumeId, offsetBytes: op.offsetBytes, lengthBytes: op.lengthBytes }, { kind: OpKind.Write, volumeId: 7, offsetBytes: 3 * 2 ** 32 + 8192, lengthBytes: 4096 });
  assert.ok(op.data!.equals(data));
  const z = decodeOp(encodeOp(OpKind.ZeroTrim, 1, 512, 1 << 20, null))!;
  assert.deepEqual({ kind: z.kind, lengthBytes: z.lengthBytes, data: z.data }, { kind: OpKind.ZeroTrim, lengthBytes: 1 << 20, data: null });
  assert.equal(decodeOp(new Uint8Array(0)), null, "an empty entry is the new leader's no-op");
});

test('an encoded op owns its bytes: the source may be reused at once (the transport lends its buffers)', () => {
  const src = Buffer.alloc(4096, 1);
  const a = encodeOp(OpKind.Write, 1, 0, 4096, src);
  src.fill(2);
  const b = encodeOp(OpKind.Write, 1, 4096, 4096, src);
  assert.ok(decodeOp(a)!.data!.equals(Buffer.alloc(4096, 1)));
  assert.ok(decodeOp(b)!.data!.equals(Buffer.alloc(4096, 2)));
  // Each op has a buffer of its own: an entry may stay in a PG's raft log for a
  // long time (keepMinEntries), and a shared slab would keep every other op in
  // it alive as long (see the header of op.ts).
  assert.notEqual(a.buffer, b.buffer);
});

test('decodeOp refuses bytes that are not an op (ERR_FORMAT)', () => {
  assert.throws(() => decodeOp(new Uint8Array(10)), { code: 'ERR_FORMAT' });
  const bad = Buffer.from(encodeOp(OpKind.Write, 1, 0, 512, Buffer.alloc(512)));
  bad.writeUInt8(9, 0);
  assert.throws(() => decodeOp(bad), { code: 'ERR_FORMAT' });
});

test('peekOpTarget reads the range of every op kind without decoding it, and refuses unknown kinds, offsets beyond 2^53 and empty lengths', () => {
  const t: OpTarget = { volumeId: 0, offsetBytes: 0, lengthBytes: 0 };
  const w = encodeOp(OpKind.Write, 7, 3 * 2 ** 32 + 8192, 4096, Buffer.alloc(4096));
  assert.equal(peekOpTarget(w, t), true);
  assert.deepEqual(t, { volumeId: 7, offsetBytes: 3 * 2 ** 32 + 8192, lengthBytes: 4096 });
  // A view into a larger frame (as a follower's entries may be) reads from its own start.
  const framed = Buffer.concat([Buffer.alloc(100, 0xff), encodeOp(OpKind.ZeroKeep, 2, 1 << 20, 65536, null)]).subarray(100);
  assert.equal(peekOpTarget(framed, t), true);
  assert.deepEqual(t, { volumeId: 2, offsetBytes: 1 << 20, lengthBytes: 65536 });
  assert.equal(peekOpTarget(encodeOp(OpKind.ZeroTrim, 3, 0, 512, null), t), true);
  assert.equal(t.volumeId, 3);
  for (const bad of [new Uint8Array(0), new Uint8Array(10)]) assert.equal(peekOpTarget(bad, t), false);
  const kind = Buffer.from(w);
  kind.writeUInt8(9, 0);
  assert.equal(peekOpTarget(kind, t), false);
  const far = Buffer.from(w);
  far.writeUInt32LE(2 ** 21, 12); // offset beyond 2^53
  assert.equal(peekOpTarget(far, t), false);
  const empty = Buffer.from(w);
  empty.writeUInt32LE(0, 16);
  assert.equal(peekOpTarget(empty, t), false);
});
