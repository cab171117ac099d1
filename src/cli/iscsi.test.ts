// Argument handling and formatting of the iSCSI commands (cli/iscsi.ts); the
// commands themselves run against a real daemon in test/conformance/iscsi.test.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runCli } from './main.js';
import type { CliIo } from './io.js';
import { chapFromFlags, formatTargetList } from './iscsi.js';

async function cli(args: string[]): Promise<{ status: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: CliIo = { out: (t) => (out += t), err: (t) => (err += t), env: {}, cwd: '/nonexistent-cwd', interactive: false, prompt: async () => '', sleepMs: async () => {}, nowMs: () => 0 };
  const status = await runCli([...args, '--socket', '/nonexistent/tessera.sock'], io);
  return { status, out, err };
}

test('CHAP flags: secrets from flags or the environment; incomplete sets are usage errors', () => {
  assert.equal(chapFromFlags({}, {}), undefined);
  assert.deepEqual(chapFromFlags({ chapUser: 'h' }, { TESSERA_CHAP_SECRET: 'from-the-env-123' }), { user: 'h', secret: 'from-the-env-123' });
  assert.deepEqual(chapFromFlags({ chapUser: 'h', chapSecret: 's1-is-long-enough', mutualUser: 't', mutualSecret: 's2-is-long-enough' }, {}), { user: 'h', secret: 's1-is-long-enough', mutualUser: 't', mutualSecret: 's2-is-long-enough' });
  assert.throws(() => chapFromFlags({ chapSecret: 'x' }, {}), /need --chap-user/);
  assert.throws(() => chapFromFlags({ chapUser: 'h' }, {}), /needs --chap-secret/);
  assert.throws(() => chapFromFlags({ chapUser: 'h', chapSecret: 's', mutualUser: 't' }, {}), /both --mutual-user and --mutual-secret/);
});

test('bad iSCSI flags are usage errors (exit 2) naming the flag, before the daemon is contacted', async () => {
  for (const [args, re] of [
    [['iscsi', 'lun', 'map', 'iqn.2026-11.a:b', 'vol0', '--lun', 'x'], /--lun must be 0..16383/],
    [['iscsi', 'lun', 'unmap', 'iqn.2026-11.a:b', '99999'], /--lun must be 0..16383/],
    [['iscsi', 'target', 'set', 'iqn.2026-11.a:b'], /nothing to change/],
    [['iscsi', 'target', 'set', 'iqn.2026-11.a:b', '--no-chap', '--chap-user', 'u', '--chap-secret', 'longenoughsecret'], /--no-chap cannot be combined/],
    [['iscsi', 'target', 'create', 'iqn.2026-11.a:b', '--mutual-user', 'u'], /need --chap-user/],
  ] as const) {
    const r = await cli([...args]);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.err}`);
    assert.match(r.err, re);
  }
  const up = await cli(['up', '--iscsi-port', 'abc', '--data-dir', '/nonexistent']);
  assert.equal(up.status, 2);
  assert.match(up.err, /--iscsi-port/);
});

test('target list shows the portal, each target, and an iscsi:// URL per LUN', () => {
  const text = formatTargetList({
    portal: { host: '127.0.0.1', port: 3260 },
    targets: [
      { name: 'iqn.2026-11.io.tessera:default', isDefault: true, luns: [{ lun: 0, volume: 'vol0', sizeBytes: 2 ** 30 }], initiators: [], chap: null, sessions: 2 },
      { name: 'iqn.2026-11.com.example:db', isDefault: false, luns: [], initiators: ['iqn.1994-05.com.redhat:h1'], chap: { user: 'h1', mutualUser: 't' }, sessions: 0 },
    ],
  });
  assert.match(text, /^portal 127\.0\.0\.1:3260$/m);
  assert.match(text, /iqn\.2026-11\.io\.tessera:default \(default\)\s+1\s+any\s+none\s+2/);
  assert.match(text, /iqn\.2026-11\.com\.example:db\s+0\s+iqn\.1994-05\.com\.redhat:h1\s+mutual CHAP \(h1\/t\)\s+0/);
  assert.match(text, /iscsi:\/\/127\.0\.0\.1:3260\/iqn\.2026-11\.io\.tessera:default\/0  vol0 \(1\.00 GiB\)/);
});
