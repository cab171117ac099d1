// The client library's only way to reach an OSD (SPEC CLU6, CLU7): one request,
// one response. Injected so that production sends it over the binary RPC on TCP
// (src/io/node/rpc.ts), the simulation over a simulated network, and the tests
// in this folder into an in-memory fake (testing.ts).
//
// Contract an implementation must keep:
// - request() settles exactly once: with the OSD's ClientResponse (an OSD-level
//   error such as NotLeader is a *response*, not a rejection), or by rejecting
//   with a TesseraError: ERR_TIMEOUT (no response within timeoutMs), ERR_CLOSED
//   (connection refused, reset or closed), ERR_PROTOCOL (a reply that cannot be
//   decoded), ERR_CHECKSUM (a reply damaged on the wire — not the OSD's
//   Status.Checksum, which is a response) or ERR_LIMIT (the transport's own
//   queue is full). The client retries all five; any other rejection fails the
//   operation.
// - It never rejects later than timeoutMs (plus timer slack) after the call.
// - Requests to one OSD are delivered in the order they were sent, and a request
//   whose promise has settled is not applied after a request sent later to that
//   OSD (keep one connection per OSD; do not abandon it on a request timeout
//   while the peer may still read it). The client's ordering rule (client.ts)
//   keeps at most one write per block range outstanding; this clause is what
//   stops a timed-out copy from overtaking its own retry or a later write.
// - The response's buffers (read data) belong to the caller once resolved.
import type { ClientRequest, ClientResponse } from '../osd/proto.js';

/** Where an OSD listens: the fields of its OsdRecord in the cluster map. */
export interface OsdAddress {
  id: number;
  addr: string;
  port: number;
}

export interface OsdTransport {
  request(osd: OsdAddress, req: ClientRequest, timeoutMs: number): Promise<ClientResponse>;
  /** Closes the connections (a store that owns the transport calls it on close). */
  close?(): Promise<void>;
}
