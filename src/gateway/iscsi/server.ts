// The iSCSI server: wires TCP connections (io/node/tcp.ts) to IscsiConnections
// that log in to the targets of a Portal (portal.ts). Wiring only; the protocol
// lives in connection.ts, session.ts and the pure codecs.
//
// Invariants:
// - Binds 127.0.0.1 unless a host is given: exports are not exposed by accident.
// - At most `maxConnections` connections; extra ones are closed at once.
// - A login must finish within loginTimeoutMs, or it would hold a slot forever.
// - One connection's failure (garbage, reset, even a bug surfacing as an
//   exception) ends that connection only, never the process or other sessions.
// - close() stops accepting, lets connections answer what is in flight, then
//   destroys whatever is left after shutdownDrainMs.
import type { IdlePoll } from '../idle-poll.js';
import { GatewayTcpServer } from '../tcp-server.js';
import { IscsiConnection } from './connection.js';
import type { LogFn } from './connection.js';
import type { Portal } from './portal.js';

export const ISCSI_DEFAULT_HOST = '127.0.0.1';
export const ISCSI_DEFAULT_PORT = 3260;
const MAX_CONNECTIONS_DEFAULT = 256;
const SHUTDOWN_DRAIN_MS = 5_000;
const LOGIN_TIMEOUT_MS_DEFAULT = 30_000;

export interface IscsiServerOptions {
  host: string;
  /** 0 picks a free port; read it back from `port`. */
  port: number;
  /** Builds the portal once the port is known (TargetAddress answers name it). */
  portal: (address: { host: string; port: number }) => Portal;
  log?: LogFn;
  /** Poll briefly after a connection answered its last task (gateway/idle-poll.ts); shared per process. */
  idlePoll?: IdlePoll;
  maxConnections?: number;
  loginTimeoutMs?: number;
}

export class IscsiServer {
  private constructor(
    private readonly tcp: GatewayTcpServer<IscsiConnection>,
    readonly portal: Portal,
  ) {}

  get host(): string {
    return this.tcp.host;
  }

  get port(): number {
    return this.tcp.port;
  }

  static async start(opts: IscsiServerOptions): Promise<IscsiServer> {
    const log: LogFn = opts.log ?? (() => {});
    // The portal needs the bound address, and connections need the portal: it is set
    // right after listen(), before the first connection can be accepted (same tick).
    let portal: Portal | null = null;
    const tcp = await GatewayTcpServer.start<IscsiConnection>({
      name: 'iscsi',
      host: opts.host === '' ? ISCSI_DEFAULT_HOST : opts.host,
      port: opts.port,
      maxConnections: opts.maxConnections ?? MAX_CONNECTIONS_DEFAULT,
      negotiationTimeoutMs: opts.loginTimeoutMs ?? LOGIN_TIMEOUT_MS_DEFAULT,
      shutdownDrainMs: SHUTDOWN_DRAIN_MS,
      log,
      idlePoll: opts.idlePoll,
      createSession: (conn, label, hooks) => new IscsiConnection(conn, portal!, label, hooks),
    });
    portal = opts.portal({ host: tcp.host, port: tcp.port });
    return new IscsiServer(tcp, portal);
  }

  /** Connections not yet forgotten (open, or with tasks still settling). */
  connectionCount(): number {
    return this.tcp.sessionCount();
  }

  async close(): Promise<void> {
    await this.tcp.close();
    await this.portal.close();
  }
}
