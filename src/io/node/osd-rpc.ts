// The OSD protocol (osd/proto.ts) over the binary RPC (rpc.ts): the client
// library's OsdTransport for gateways, and the OsdNet an OSD uses to reach its
// peers. One pipelined connection per remote OSD (RpcPool), so requests to one
// OSD stay in order (transport contract in client/transport.ts).
import type { OsdAddress, OsdTransport } from '../../client/transport.js';
import type { OsdNet } from '../../osd/osd.js';
import { Method, Status, type ClientRequest, type ClientResponse, type RaftBatch, type SnapshotChunk } from '../../osd/proto.js';
import { decodeClientResponse, encodeClientRequest, encodeRaftBatch, encodeSnapshotChunk } from '../../rpc/messages.js';
import { TesseraError } from '../../stdx/errors.js';
import { RpcPool, responsePayloadBuffers } from './rpc.js';
import { FRAME_HEADROOM_BYTES } from '../../rpc/headroom.js';

export const SNAPSHOT_CHUNK_TIMEOUT_MS = 30_000;

export class RpcOsdTransport implements OsdTransport {
  constructor(readonly pool: RpcPool = new RpcPool()) {}

  async request(osd: OsdAddress, req: ClientRequest, timeoutMs: number): Promise<ClientResponse> {
    const client = this.pool.get(`${osd.addr}:${osd.port}`);
    const resp = await client.request(req.method, encodeClientRequest(req, FRAME_HEADROOM_BYTES), timeoutMs, { headroom: true });
    const decoded = decodeClientResponse(req.method, resp.status, resp.payload);
    if (decoded.status === Status.Ok && decoded.data !== undefined && responsePayloadBuffers.owns(resp.payload)) {
      const payload = resp.payload;
      decoded.release = () => responsePayloadBuffers.give(payload);
    }
    return decoded;
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

/**
 * Reconnect backoff cap between OSDs. Raft messages to a peer in backoff are
 * dropped, so a restarted peer stays deaf to its leader until the backoff ends;
 * with the client default (5 s) a restarted OSD kept campaigning for seconds
 * and failover after a later fault took up to 7 s (real-process cluster test).
 */
export const OSD_PEER_RECONNECT_MS_MAX = 250;

/** Peer messages of an OSD; `addressOf` resolves an OSD id from the current map. */
export class RpcOsdNet implements OsdNet {
  dropped = 0;

  constructor(
    private readonly addressOf: (osdId: number) => string | null,
    readonly pool: RpcPool = new RpcPool({ reconnectDelayMsMax: OSD_PEER_RECONNECT_MS_MAX }),
  ) {}

  sendRaft(toOsd: number, batch: RaftBatch): void {
    const addr = this.addressOf(toOsd);
    const client = addr ? this.pool.get(addr) : null;
    // Not connected: dropped (raft resends) without encoding it first.
    if (client === null || client.state !== 'connected' || !client.sendOneWay(Method.RaftBatch, encodeRaftBatch(batch, FRAME_HEADROOM_BYTES), { headroom: true })) {
      this.dropped++;
    }
  }

  flush(): void {
    this.pool.flush();
  }

  /** osd.id came up (again) in the map: reconnect now instead of after the backoff. */
  peerUp(osdId: number): void {
    const addr = this.addressOf(osdId);
    if (addr) this.pool.retryNow(addr);
  }

  async sendSnapshotChunk(toOsd: number, chunk: SnapshotChunk): Promise<ClientResponse> {
    const addr = this.addressOf(toOsd);
    if (!addr) throw new TesseraError('ERR_CLOSED', `osd.${toOsd} has no address in the map`);
    const resp = await this.pool.get(addr).request(Method.SnapshotChunk, encodeSnapshotChunk(chunk), SNAPSHOT_CHUNK_TIMEOUT_MS);
    return decodeClientResponse(Method.SnapshotChunk, resp.status, resp.payload);
  }
}
