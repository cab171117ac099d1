// BufferRecycler: reuse after give(), one owner at a time, bounded cache, size classes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AssertionError } from './assert.js';
import { BufferRecycler } from './buffer-recycler.js';

test('a given-back buffer is handed out again for the same class; views of exactly the asked length', () => {
  const r = new BufferRecycler(8 << 20, 64 << 10);
  const a = r.take(1 << 20);
  assert.equal(a.length, 1 << 20);
  assert.equal(r.owns(a), true);
  r.give(a.subarray(0, 10)); // any view of it
  assert.equal(r.owns(a), false);
  const b = r.take((1 << 20) - 4096);
  assert.equal(b.length, (1 << 20) - 4096);
  assert.equal(b.buffer, a.buffer, 'the same backing store');
  assert.deepEqual({ reused: r.reused, allocated: r.allocated }, { reused: 1, allocated: 1 });
  const c = r.take(100 << 10);
  assert.notEqual(c.buffer, a.buffer);
  assert.equal(c.buffer.byteLength, 128 << 10, '100 KiB is in the 128 KiB class');
});

test('a buffer is never out twice: give() of a buffer not out is refused', () => {
  const r = new BufferRecycler();
  const a = r.take(256 << 10);
  r.give(a);
  assert.throws(() => r.give(a), AssertionError);
  assert.throws(() => r.give(Buffer.alloc(256 << 10)), AssertionError, 'not from take()');
  const b = r.take(256 << 10);
  const c = r.take(256 << 10);
  assert.notEqual(b.buffer, c.buffer, 'two takes without a give get two buffers');
});

test('the free lists hold at most cacheBytesMax bytes', () => {
  const r = new BufferRecycler(2 << 20, 64 << 10);
  const bufs = Array.from({ length: 4 }, () => r.take(1 << 20));
  for (const b of bufs) r.give(b);
  for (let i = 0; i < 4; i++) r.take(1 << 20);
  assert.deepEqual({ reused: r.reused, allocated: r.allocated }, { reused: 2, allocated: 6 });
});

test('a shared recycler hands out SharedArrayBuffer views and takes them back', () => {
  const r = new BufferRecycler(1 << 20, 64 * 1024, true);
  const a = r.take(100_000);
  assert.ok(a.buffer instanceof SharedArrayBuffer);
  assert.equal(a.length, 100_000);
  r.give(a);
  const b = r.take(70_000);
  assert.equal(b.buffer, a.buffer, 'reused');
  assert.ok(!(new BufferRecycler().take(65536).buffer instanceof SharedArrayBuffer), 'private by default');
});
