// KeyedListeners: per-key subscription, unsubscribe, and a throwing listener
// that does not stop the others.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeyedListeners } from './keyed-listeners.js';

test('listeners of a key are called in order; unsubscribe works; a throw is reported and the rest still run', () => {
  const l = new KeyedListeners<number>();
  const got: string[] = [];
  const offA = l.add('k', (v) => got.push(`a${v}`));
  l.add('k', () => {
    throw new Error('bug');
  });
  l.add('k', (v) => got.push(`c${v}`));
  l.add('other', (v) => got.push(`o${v}`));
  const errors: unknown[] = [];
  l.emit('k', 1, (e) => errors.push(e));
  assert.deepEqual(got, ['a1', 'c1']);
  assert.equal(errors.length, 1);
  offA();
  l.emit('k', 2);
  assert.deepEqual(got, ['a1', 'c1', 'c2']);
  l.emit('none', 3);
});
