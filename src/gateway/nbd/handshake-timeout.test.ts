// Protocol abuse (GUIDE §4): a client that connects and never finishes the
// handshake ("Newstyle negotiation" in proto.md) is disconnected after the
// handshake timeout instead of holding a connection slot forever; a client that
// negotiates normally is not affected by the timer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { MemoryVolumeStore } from '../../volume/memory.js';
import { NbdServer } from './server.js';

const execFileAsync = promisify(execFile);
const CLIENT_ENV = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` };

test('a client stuck in negotiation is closed after handshakeTimeoutMs; a negotiated one stays', async () => {
  const store = new MemoryVolumeStore();
  await store.create('vol0', 1024 * 1024);
  const server = await NbdServer.start({ host: '127.0.0.1', port: 0, store, handshakeTimeoutMs: 300 });
  try {
    const silent = net.connect(server.port, '127.0.0.1');
    const greeting: Buffer[] = [];
    silent.on('data', (c) => greeting.push(c));
    const t0 = performance.now();
    await new Promise<void>((resolve, reject) => {
      silent.on('close', () => resolve());
      silent.on('error', () => resolve());
      setTimeout(() => reject(new Error('the silent client was never disconnected')), 5000);
    });
    const closedAfterMs = performance.now() - t0;
    assert.ok(Buffer.concat(greeting).length >= 18, 'the greeting was sent first');
    assert.ok(closedAfterMs >= 250 && closedAfterMs < 3000, `closed after ${closedAfterMs.toFixed(0)} ms`);
    // A real client that negotiates and then idles past the timeout keeps its connection.
    const { stdout } = await execFileAsync(
      'nbdsh',
      ['-u', `nbd://127.0.0.1:${server.port}/vol0`, '-c', 'import time; h.pwrite(b"x" * 512, 0); time.sleep(0.8); print(h.pread(512, 0) == b"x" * 512)'],
      { env: CLIENT_ENV, timeout: 30_000 },
    );
    assert.equal(stdout.trim(), 'True');
  } finally {
    await server.close();
  }
});
