// Tests of the TCP listener's borrowed reads (tcp.ts borrowReads): accepted sockets
// re-created with net's onread deliver every byte in order through one lent
// buffer, pause and resume, write back, and keep the server's connection count, so
// that closing the listener completes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { TcpListener, type TcpConnection } from './tcp.js';
import { waitFor } from '../../../test/helpers/wait.js';

const HOST = '127.0.0.1';

test('borrowReads: 8 MiB arrive intact through one lent buffer, with pauses; replies flow; closing the listener completes', async () => {
  const received: Buffer[] = [];
  const lentBuffers = new Set<ArrayBufferLike>();
  let conn: TcpConnection | null = null;
  let closed = false;
  const listener = await TcpListener.listen({
    host: HOST,
    port: 0,
    borrowReads: true,
    onConnection: (c) => {
      conn = c;
      let chunks = 0;
      c.attach({
        onData: (chunk) => {
          lentBuffers.add(chunk.buffer);
          received.push(Buffer.from(chunk)); // lent: copy what is kept
          if (++chunks % 7 === 0) {
            c.pauseReading();
            setTimeout(() => c.resumeReading(), 2);
          }
        },
        onDrain: () => {},
        onClose: () => {
          closed = true;
        },
      });
    },
  });
  const data = Buffer.alloc(8 << 20);
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i, i);
  const client = net.connect({ host: HOST, port: listener.port });
  const replies: Buffer[] = [];
  client.on('data', (d: Buffer) => replies.push(d));
  await new Promise<void>((resolve) => client.once('connect', () => resolve()));
  client.write(data);
  await waitFor(() => received.reduce((n, b) => n + b.length, 0) >= data.length, 'all bytes');
  assert.ok(Buffer.concat(received).equals(data), 'every byte, in order');
  assert.equal(lentBuffers.size, 1, 'every read landed in the one lent buffer');
  assert.ok(received.length > 7, 'several reads, some while paused and resumed');
  assert.equal(listener.connectionCount(), 1);
  assert.equal(conn!.borrowsReads, true); // (an assert inside onConnection would be caught by accept())
  conn!.write(Buffer.from('ok'));
  await waitFor(() => Buffer.concat(replies).toString() === 'ok', 'the reply');
  client.end();
  await waitFor(() => closed && listener.connectionCount() === 0, 'the connection to close');
  await listener.close(); // hangs if the moved socket did not take the server's connection count along
});

/** Sends `data` to a fresh listener and returns what arrived and whether the connection lent its chunks. */
async function sendThrough(borrowReads: boolean, data: Buffer): Promise<{ received: Buffer; borrows: boolean | null }> {
  const received: Buffer[] = [];
  let borrows: boolean | null = null;
  const listener = await TcpListener.listen({
    host: HOST,
    port: 0,
    borrowReads,
    onConnection: (c) => {
      borrows = c.borrowsReads;
      c.attach({ onData: (chunk) => received.push(Buffer.from(chunk)), onDrain: () => {}, onClose: () => {} });
    },
  });
  const client = net.connect({ host: HOST, port: listener.port });
  await new Promise<void>((resolve) => client.once('connect', () => resolve()));
  client.write(data);
  await waitFor(() => received.reduce((n, b) => n + b.length, 0) >= data.length, 'all bytes');
  client.destroy();
  await listener.close();
  return { received: Buffer.concat(received), borrows };
}

test('without borrowReads a connection gets the socket\'s own buffers', async () => {
  const data = Buffer.alloc(1 << 20, 5);
  const r = await sendThrough(false, data);
  assert.ok(r.received.equals(data));
  assert.equal(r.borrows, false);
});

test('borrowReads on a Node without the internals it needs falls back to fresh buffers per read, and still reads', async () => {
  // Hide the handle's useUserBuffer, as a Node release without it would.
  const probe = net.connect({ host: HOST, port: 9 });
  probe.on('error', () => {});
  let proto: object | null = Object.getPrototypeOf((probe as unknown as { _handle: object })._handle) as object;
  while (proto !== null && !Object.prototype.hasOwnProperty.call(proto, 'useUserBuffer')) proto = Object.getPrototypeOf(proto) as object | null;
  probe.destroy();
  assert.ok(proto !== null, 'found the prototype with useUserBuffer');
  const owner = proto as { useUserBuffer?: unknown };
  const saved = owner.useUserBuffer;
  delete owner.useUserBuffer;
  try {
    const data = Buffer.alloc(300_000, 9);
    const r = await sendThrough(true, data);
    assert.ok(r.received.equals(data), 'every byte on the fallback path');
    assert.equal(r.borrows, false);
  } finally {
    owner.useUserBuffer = saved;
  }
});

test('borrowReads: close() of a connection paused for backpressure still sees the peer\'s FIN and closes at once, not after closeLingerMs', async () => {
  let closedAtMs = 0;
  let conn: TcpConnection | null = null;
  const listener = await TcpListener.listen({
    host: HOST,
    port: 0,
    borrowReads: true,
    closeLingerMs: 30_000,
    onConnection: (c) => {
      conn = c;
      c.attach({
        onData: () => c.pauseReading(),
        onDrain: () => {},
        onClose: () => {
          closedAtMs = Date.now();
        },
      });
    },
  });
  const client = net.connect({ host: HOST, port: listener.port });
  client.on('end', () => client.end()); // a peer that closes when we do
  client.on('error', () => {});
  await new Promise<void>((resolve) => client.once('connect', () => resolve()));
  client.write(Buffer.alloc(1000));
  await waitFor(() => conn !== null, 'the connection');
  await new Promise((r) => setTimeout(r, 50));
  const t0 = Date.now();
  conn!.close();
  await waitFor(() => closedAtMs > 0, 'the close', 3000);
  assert.ok(closedAtMs - t0 < 2000, `closed after ${closedAtMs - t0} ms`);
  await listener.close();
});
