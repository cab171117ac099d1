// runOsd start-up: a start that fails half way releases what it opened and the
// data dir's PID file, so a retry is not refused as "already running".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { resolveClusterConfig } from './cluster-config.js';
import { runOsd } from './osd-daemon.js';
import { Logger } from '../stdx/log.js';

test('a failed OSD start (its port is taken) releases the PID file and the device', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-osd-start-'));
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  const port = (blocker.address() as net.AddressInfo).port;
  try {
    const cfg = resolveClusterConfig({ cwd: dir, flags: { osd: { dataDir: path.join(dir, 'osd'), port, deviceSizeBytes: 64 * 2 ** 20 } } });
    const log = new Logger('test', { sink: () => {} });
    for (let attempt = 0; attempt < 2; attempt++) {
      // The second attempt fails the same way, not with "data dir in use".
      await assert.rejects(runOsd(cfg, log, (err) => assert.fail(err)), (err: Error & { code?: string }) => /in use/i.test(err.message) && err.code !== 'ERR_BUSY');
      assert.equal(fs.existsSync(path.join(dir, 'osd', 'osd.pid')), false, 'PID file released');
    }
  } finally {
    blocker.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
