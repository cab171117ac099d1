// The register checker itself: it must flag stale, future, lost and garbage reads.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlockHistory, fillTagBlock, readTagBlock } from './register-check.js';

test('latest acknowledged or concurrent values pass; stale, lost and future values fail', () => {
  const h = new BlockHistory();
  const w1 = h.addWrite(1, 0);
  w1.ackMs = 10;
  const w2 = h.addWrite(2, 20);
  w2.ackMs = 30;
  assert.equal(h.checkRead({ tag: 2, invokeMs: 40, returnMs: 41 }), null);
  assert.match(h.checkRead({ tag: 1, invokeMs: 40, returnMs: 41 }) ?? '', /stale read/);
  assert.equal(h.checkRead({ tag: 1, invokeMs: 25, returnMs: 26 }), null, 'w2 concurrent with the read');
  assert.equal(h.checkRead({ tag: 2, invokeMs: 25, returnMs: 26 }), null);
  assert.match(h.checkRead({ tag: 0, invokeMs: 40, returnMs: 41 }) ?? '', /returned zeros/);
  assert.equal(h.checkRead({ tag: 0, invokeMs: 5, returnMs: 6 }), null);
  assert.match(h.checkRead({ tag: 2, invokeMs: 5, returnMs: 6 }) ?? '', /before its write was invoked/);
  assert.match(h.checkRead({ tag: 9, invokeMs: 5, returnMs: 6 }) ?? '', /no write/);
  const w3 = h.addWrite(3, 50); // outcome unknown: may land any time later
  assert.equal(h.checkRead({ tag: 3, invokeMs: 1000, returnMs: 1001 }), null);
  assert.equal(h.checkRead({ tag: 2, invokeMs: 1000, returnMs: 1001 }), null);
  assert.equal(w3.ackMs, Infinity);
});

test('tag blocks detect torn and misdirected content', () => {
  const b = Buffer.alloc(4096);
  assert.equal(readTagBlock(b, 7), 0);
  fillTagBlock(b, 7, 42);
  assert.equal(readTagBlock(b, 7), 42);
  assert.equal(readTagBlock(b, 8), -1, 'misdirected');
  b.fill(0, 2048);
  assert.equal(readTagBlock(b, 7), -1, 'torn');
});
