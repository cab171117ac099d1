// The OSD's object store (osd/objects.ts): page-cache hints for raft entries
// being appended (prefetchEntries), which only reach open engine volumes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimDevice } from '../device/sim-device.js';
import { LocalEngine } from '../engine/engine.js';
import { Prng } from '../stdx/prng.js';
import type { Entry } from '../raft/types.js';
import { encodeOp, OpKind } from './op.js';
import { ObjectStore } from './objects.js';

const MiB = 1024 * 1024;
const OBJECT = 64 * 1024;

test('ObjectStore.prefetchEntries: advises the writes of normal entries to open volumes, and nothing else', async () => {
  const dev = new SimDevice(32 * MiB, new Prng(5));
  await LocalEngine.format(dev, { objectSizeBytes: OBJECT, dataZeroed: true });
  const engine = await LocalEngine.open(dev);
  const store = new ObjectStore(engine);
  await store.write(1, 2 * OBJECT, Buffer.alloc(4096, 3)); // volume 1 exists; objects 2, then 0, have chunks
  await store.write(1, 0, Buffer.alloc(OBJECT, 3));
  const calls: [number, number][] = [];
  dev.prefetchWrite = (o: number, l: number) => void calls.push([o, l]);
  const entry = (index: number, data: Uint8Array, type?: 'conf'): Entry => ({ term: 1, index, data, type });
  store.prefetchEntries([
    entry(1, new Uint8Array(0)), // a new leader's no-op
    entry(2, encodeOp(OpKind.Write, 1, 4096, 4096, Buffer.alloc(4096))), // block 1 of object 0
    entry(3, encodeOp(OpKind.Write, 9, 0, 4096, Buffer.alloc(4096))), // a volume this OSD does not hold
    entry(4, encodeOp(OpKind.Write, 1, 0, 4096, Buffer.alloc(4096)), 'conf'), // a membership change: not an op, whatever its bytes
    entry(5, encodeOp(OpKind.ZeroKeep, 1, 2 * 4096, 8192, null)), // blocks 2..3 of object 0
    entry(6, Buffer.from([9, 0, 0, 0])), // not an op: decodeOp will refuse it at apply
  ]);
  const chunk0 = engine.volumeById(engine.list().find((v) => v.name === 'v1')!.id)!.objects.get(0)!;
  assert.notEqual(chunk0, 0, 'object 0 is not in chunk 0');
  const base = engine.layout.dataOffset + chunk0 * engine.layout.chunkStrideBytes;
  assert.deepEqual(calls, [
    [base + 4608, 4608],
    [base + 2 * 4608, 2 * 4608],
  ]);
  assert.equal(engine.list().length, 1, 'no volume was created by a hint');
  await engine.close();
});
