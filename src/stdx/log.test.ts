import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Logger } from './log.js';

test('one line per event with timestamp, level and component; below-level events dropped', () => {
  const lines: string[] = [];
  const log = new Logger('api', { level: 'info', sink: (l) => lines.push(l), nowMs: () => Date.UTC(2025, 0, 2, 3, 4, 5, 6) });
  log.debug('hidden');
  log.info('hello');
  log.child('nbd').fn()('warn', 'two\nlines');
  assert.deepEqual(lines, ['2025-01-02T03:04:05.006Z INFO  api: hello\n', '2025-01-02T03:04:05.006Z WARN  nbd: two\\nlines\n']);
});
