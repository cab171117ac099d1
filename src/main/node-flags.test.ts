// Tests of the daemon Node-flag check (node-flags.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DAEMON_NODE_ARGS, missingDaemonNodeArgs, warnMissingNodeArgs } from './node-flags.js';

test('missingDaemonNodeArgs: a flag counts whatever its value and spelling (- or _); absent ones are listed', () => {
  assert.deepEqual(missingDaemonNodeArgs([]), [...DAEMON_NODE_ARGS]);
  assert.deepEqual(missingDaemonNodeArgs(['--initial-old-space-size=256']), []);
  assert.deepEqual(missingDaemonNodeArgs(['--initial_old_space_size=512', '--cpu-prof']), []);
  assert.deepEqual(missingDaemonNodeArgs(['--max-old-space-size=256']), ['--initial-old-space-size=256']);
});

test('warnMissingNodeArgs warns once, naming the flag and how to start Tessera; silent when the flag is there', () => {
  const warnings: string[] = [];
  const log = { warn: (m: string) => warnings.push(m) };
  warnMissingNodeArgs(log, ['--initial-old-space-size=256']);
  assert.deepEqual(warnings, []);
  warnMissingNodeArgs(log, []);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /--initial-old-space-size=256/);
  assert.match(warnings[0], /npx tessera/);
});

test('bin/tessera.js carries DAEMON_NODE_ARGS in its shebang (npx tessera starts daemons with them)', () => {
  const bin = readFileSync(fileURLToPath(new URL('../../../bin/tessera.js', import.meta.url)), 'utf8');
  const shebang = bin.split('\n')[0];
  for (const a of DAEMON_NODE_ARGS) assert.ok(shebang.includes(a), `shebang ${shebang} lacks ${a}`);
});
