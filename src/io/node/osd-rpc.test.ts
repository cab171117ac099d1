// Tests of the client library's transport over the RPC (osd-rpc.ts) against a
// real RpcServer on loopback: large read results reuse their buffers once the
// caller releases them, small ones need no release, and the data is intact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Method, Status, type ClientResponse, type ReadRequest } from '../../osd/proto.js';
import { decodeClientRequest, encodeClientResponse } from '../../rpc/messages.js';
import { FrameKind } from '../../rpc/frame.js';
import { RpcServer, responsePayloadBuffers } from './rpc.js';
import { RpcOsdTransport } from './osd-rpc.js';

const HOST = '127.0.0.1';

/** Answers every Read with lengthBytes bytes of (offset + i) & 0xff. */
async function readServer(): Promise<RpcServer> {
  const server = new RpcServer((conn, frame) => {
    if (frame.kind !== FrameKind.Request) return;
    const req = decodeClientRequest(frame.method, frame.payload) as ReadRequest;
    const data = Buffer.alloc(req.lengthBytes);
    for (let i = 0; i < data.length; i++) data[i] = (req.offsetBytes + i) & 0xff;
    const enc = encodeClientResponse(Method.Read, { status: Status.Ok, data });
    conn.reply(frame.requestId, enc.status, enc.parts);
  });
  await server.listen(HOST, 0);
  return server;
}

function read(offsetBytes: number, lengthBytes: number): ReadRequest {
  return { method: Method.Read, poolId: 1, pg: 0, pgEpoch: 1, volumeId: 1, offsetBytes, lengthBytes };
}

function expectData(resp: ClientResponse, offsetBytes: number, lengthBytes: number): Buffer {
  assert.equal(resp.status, Status.Ok);
  const data = (resp as { data?: Buffer }).data!;
  assert.equal(data.length, lengthBytes);
  for (let i = 0; i < data.length; i += 4099) assert.equal(data[i], (offsetBytes + i) & 0xff, `byte ${i}`);
  assert.equal(data[data.length - 1], (offsetBytes + data.length - 1) & 0xff);
  return data;
}

test('1 MiB read results come from a recycler: released ones are reused, the data is intact; small ones need no release', async () => {
  const server = await readServer();
  const transport = new RpcOsdTransport();
  const osd = { id: 1, addr: HOST, port: server.port };
  try {
    const reused0 = responsePayloadBuffers.reused;
    for (let i = 0; i < 8; i++) {
      const off = i * 4096 + 512;
      const resp = await transport.request(osd, read(off, 1 << 20), 5000);
      expectData(resp, off, 1 << 20);
      assert.equal(resp.status === Status.Ok && typeof resp.release, 'function', 'a large result can be given back');
      if (resp.status === Status.Ok) resp.release!();
    }
    assert.ok(responsePayloadBuffers.reused - reused0 >= 7, `reused ${responsePayloadBuffers.reused - reused0} of 8`);
    // A large result never released is only collected: the next request allocates.
    const kept = await transport.request(osd, read(0, 1 << 20), 5000);
    const allocated0 = responsePayloadBuffers.allocated;
    const next = await transport.request(osd, read(512, 1 << 20), 5000);
    expectData(kept, 0, 1 << 20);
    expectData(next, 512, 1 << 20);
    assert.equal(responsePayloadBuffers.allocated, allocated0 + 1, 'the unreleased buffer is not handed out again');
    const small = await transport.request(osd, read(1536, 4096), 5000);
    expectData(small, 1536, 4096);
    assert.equal(small.status === Status.Ok ? small.release : undefined, undefined);
  } finally {
    await transport.close();
    await server.close();
  }
});
