// ApplyQueue: log-order application with concurrency for disjoint ranges, and the
// pause a snapshot install needs (apply.ts header).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApplyQueue } from './apply.js';
import { encodeOp, OpKind } from './op.js';
import type { ObjectStore } from './objects.js';
import type { Entry } from '../raft/types.js';

/** An object store whose writes complete only when the test says so. */
class ManualStore {
  readonly started: { offsetBytes: number; finish: () => void }[] = [];
  write(_volumeId: number, offsetBytes: number): Promise<void> {
    return new Promise((resolve) => this.started.push({ offsetBytes, finish: resolve }));
  }
  zero(): Promise<void> {
    return Promise.resolve();
  }
}

function writeEntry(index: number, offsetBytes: number): Entry {
  return { term: 1, index, data: encodeOp(OpKind.Write, 1, offsetBytes, 4096, Buffer.alloc(4096, index)) };
}

function setup(): { store: ManualStore; q: ApplyQueue; applied: number[] } {
  const store = new ManualStore();
  const applied: number[] = [];
  const q = new ApplyQueue(store as unknown as ObjectStore, 0, (e) => applied.push(e.index), (err) => assert.fail(err));
  return { store, q, applied };
}

const settle = () => new Promise<void>((r) => setImmediate(r));

test('ApplyQueue: disjoint entries run together, an overlapping one waits for the earlier write', async () => {
  const { store, q, applied } = setup();
  q.push([writeEntry(1, 0), writeEntry(2, 8192), writeEntry(3, 0)]);
  assert.deepEqual(
    store.started.map((s) => s.offsetBytes),
    [0, 8192],
    'entry 3 overlaps the running entry 1',
  );
  store.started[1].finish();
  await settle();
  assert.equal(q.doneIndex, 0, 'entry 1 is still running');
  store.started[0].finish();
  await settle();
  assert.equal(store.started.length, 3, 'entry 3 starts once entry 1 is done');
  store.started[2].finish();
  await settle();
  assert.deepEqual(applied, [2, 1, 3]);
  assert.equal(q.doneIndex, 3);
});

test('ApplyQueue: pause() drops queued entries, starts nothing, and resolves only when the running write is done', async () => {
  const { store, q } = setup();
  q.push([writeEntry(1, 0), writeEntry(2, 0)]); // 2 waits behind 1
  let paused = false;
  const p = q.pause().then(() => (paused = true));
  q.push([writeEntry(3, 65536)]); // committed during the install: superseded by the snapshot
  await settle();
  assert.equal(paused, false, 'entry 1 is still writing: the install must not drop the data yet');
  assert.equal(store.started.length, 1);
  store.started[0].finish();
  await p;
  assert.equal(store.started.length, 1, 'neither the queued entry 2 nor entry 3 started');
  let served = false;
  q.whenDone(10, () => (served = true));
  q.reset(10);
  assert.equal(q.doneIndex, 10);
  assert.equal(served, true, 'reads waiting for the snapshot point are released');
  q.push([writeEntry(11, 0)]);
  assert.equal(store.started.length, 2, 'the queue runs again after reset');
});

test('ApplyQueue: reset() while a write still runs is a programmer error', () => {
  const { q } = setup();
  q.push([writeEntry(1, 0)]);
  assert.throws(() => q.reset(5), /still running/);
});
