// The NBD server: wires TCP connections (io/node/tcp.ts) to per-connection
// sessions (session.ts) that serve volumes of a VolumeStore. Wiring only; the
// protocol lives in codec.ts and session.ts.
//
// Invariants:
// - Binds 127.0.0.1 unless a host is given: exports are not exposed by accident.
// - At most `maxConnections` sessions; extra connections are closed at once.
// - One connection's failure (garbage, reset, even a bug surfacing as an exception)
//   ends that connection only, never the process or other sessions.
// - close() stops accepting, lets sessions in transmission answer what is in flight
//   (proto.md "Terminating the transmission phase": a server shutting down SHOULD
//   wait for in-flight requests), then destroys whatever is left after shutdownDrainMs.
import type { IdlePoll } from '../idle-poll.js';
import type { VolumeStore } from '../../volume/types.js';
import { GatewayTcpServer } from '../tcp-server.js';
import { NbdSession } from './session.js';
import { SharedBudget } from './budget.js';
import type { LogFn } from './session.js';

export const NBD_DEFAULT_HOST = '127.0.0.1';
const MAX_CONNECTIONS_DEFAULT = 256;
const SHUTDOWN_DRAIN_MS = 5_000;
/** A client must finish negotiation within this time, or it would hold a connection slot forever. */
const HANDSHAKE_TIMEOUT_MS_DEFAULT = 30_000;
/** Bytes of write payloads and read buffers all connections may hold together. */
const SHARED_BUFFER_BYTES_DEFAULT = 512 * 1024 * 1024;

export interface NbdServerOptions {
  host: string;
  /** 0 picks a free port; read it back from `port`. */
  port: number;
  store: VolumeStore;
  log?: LogFn;
  maxConnections?: number;
  handshakeTimeoutMs?: number;
  sharedBufferBytesMax?: number;
  /** Poll briefly after a connection answered its last request (gateway/idle-poll.ts); shared per process. */
  idlePoll?: IdlePoll;
}

export class NbdServer {
  private constructor(private readonly tcp: GatewayTcpServer<NbdSession>) {}

  get host(): string {
    return this.tcp.host;
  }

  get port(): number {
    return this.tcp.port;
  }

  static async start(opts: NbdServerOptions): Promise<NbdServer> {
    const log: LogFn = opts.log ?? (() => {});
    const budget = new SharedBudget(opts.sharedBufferBytesMax ?? SHARED_BUFFER_BYTES_DEFAULT);
    const tcp = await GatewayTcpServer.start<NbdSession>({
      name: 'nbd',
      host: opts.host === '' ? NBD_DEFAULT_HOST : opts.host,
      port: opts.port,
      maxConnections: opts.maxConnections ?? MAX_CONNECTIONS_DEFAULT,
      negotiationTimeoutMs: opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS_DEFAULT,
      shutdownDrainMs: SHUTDOWN_DRAIN_MS,
      log,
      borrowReads: true, // NbdDecoder copies bodies out (1 MiB writes churned ~16 fresh buffers each)
      idlePoll: opts.idlePoll,
      createSession: (conn, label, hooks) => new NbdSession(conn, { store: opts.store, log, label, sharedBudget: budget, quietHooks: hooks }),
    });
    return new NbdServer(tcp);
  }

  /** Open client connections. */
  connectionCount(): number {
    return this.tcp.connectionCount();
  }

  close(): Promise<void> {
    return this.tcp.close();
  }
}
