// WriteBuffers: size classes, reuse, and the bound on what it keeps.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WriteBuffers } from './write-buffers.js';

test('buffers come in power-of-two classes from 64 KiB and are reused after give()', () => {
  const w = new WriteBuffers(1024 * 1024);
  const a = w.take(100_000);
  assert.equal(a.length, 128 * 1024);
  w.give(a);
  assert.equal(w.take(70_000), a, 'same class: reused');
  assert.equal(w.take(10).length, 64 * 1024);
});

test('the free list is bounded; foreign buffers are refused', () => {
  const w = new WriteBuffers(256 * 1024);
  const bufs = [w.take(128 * 1024), w.take(128 * 1024), w.take(128 * 1024)];
  for (const b of bufs) w.give(b);
  assert.equal(w.bytesKept, 256 * 1024);
  assert.throws(() => w.give(Buffer.alloc(100_000)), /not a WriteBuffers buffer/);
});
