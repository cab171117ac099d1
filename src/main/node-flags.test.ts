// Tests of the daemon Node-flag check (node-flags.ts), down to a real daemon process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDaemon } from '../../test/helpers/cluster.js';
import { freePort } from '../../test/helpers/daemon.js';
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

test('a real `tessera mon` started without the flag warns on stderr; with it, it does not', async () => {
  for (const nodeArgs of [[], [...DAEMON_NODE_ARGS]]) {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-flags-'));
    const port = await freePort();
    const { proc } = await startDaemon('mon', ['mon', '--mon-port', String(port), '--mon-data-dir', join(dir, 'mon')], /tessera-mon: ready/, undefined, nodeArgs);
    try {
      // stderr and stdout are separate pipes: the warning (written before the ready
      // line) may be read after it, so give it a moment.
      const warning = /Node runs without --initial-old-space-size=256/;
      for (let i = 0; i < 20 && !warning.test(proc.stderr); i++) await new Promise((r) => setTimeout(r, 50));
      const warned = warning.test(proc.stderr);
      assert.equal(warned, nodeArgs.length === 0, `node ${nodeArgs.join(' ')}: stderr was:\n${proc.stderr}`);
    } finally {
      await proc.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }
});
