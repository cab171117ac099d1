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
import { TcpListener } from '../../io/node/tcp.js';
import type { TcpConnection } from '../../io/node/tcp.js';
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
  maxConnections?: number;
  loginTimeoutMs?: number;
}

export class IscsiServer {
  private readonly connections = new Set<IscsiConnection>();
  private closing: Promise<void> | null = null;
  portal!: Portal;

  private constructor(
    private readonly listener: TcpListener,
    private readonly log: LogFn,
    private readonly loginTimeoutMs: number,
  ) {}

  get host(): string {
    return this.listener.host;
  }

  get port(): number {
    return this.listener.port;
  }

  static async start(opts: IscsiServerOptions): Promise<IscsiServer> {
    const log: LogFn = opts.log ?? (() => {});
    const maxConnections = opts.maxConnections ?? MAX_CONNECTIONS_DEFAULT;
    let server: IscsiServer | null = null;
    const listener = await TcpListener.listen({
      host: opts.host === '' ? ISCSI_DEFAULT_HOST : opts.host,
      port: opts.port,
      log,
      onConnection: (conn) => {
        if (server === null || server.closing !== null || server.connections.size >= maxConnections) {
          log('warn', `refusing ${conn.remoteLabel}: ${server?.closing ? 'shutting down' : `limit of ${maxConnections} connections reached`}`);
          conn.destroy();
          return;
        }
        server.accept(conn);
      },
    });
    server = new IscsiServer(listener, log, opts.loginTimeoutMs ?? LOGIN_TIMEOUT_MS_DEFAULT);
    server.portal = opts.portal({ host: listener.host, port: listener.port });
    log('info', `listening on ${listener.host}:${listener.port}`);
    return server;
  }

  connectionCount(): number {
    return this.connections.size;
  }

  close(): Promise<void> {
    if (this.closing === null) this.closing = this.shutdown();
    return this.closing;
  }

  private accept(conn: TcpConnection): void {
    const label = conn.remoteLabel;
    const c = new IscsiConnection(conn, this.portal, label);
    this.connections.add(c);
    const loginTimer = setTimeout(() => {
      if (c.state() !== 'login') return;
      this.log('warn', `${label}: login not finished within ${this.loginTimeoutMs} ms; closing`);
      conn.destroy();
    }, this.loginTimeoutMs);
    loginTimer.unref();
    const guarded = (what: string, fn: () => void): void => {
      try {
        fn();
      } catch (err) {
        this.log('error', `${label}: ${what} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        conn.destroy();
      }
    };
    conn.attach({
      onData: (chunk) => guarded('input', () => c.onData(chunk)),
      onDrain: () => guarded('drain', () => c.onDrain()),
      onClose: () => {
        clearTimeout(loginTimer);
        guarded('close', () => c.onClose());
        void c.whenIdle().then(() => this.connections.delete(c));
      },
    });
  }

  private async shutdown(): Promise<void> {
    const stopped = this.listener.stopAccepting();
    const conns = [...this.connections];
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, SHUTDOWN_DRAIN_MS);
    });
    await Promise.race([Promise.all(conns.map((c) => c.whenIdle())), timeout]);
    clearTimeout(timer);
    this.listener.destroyAll();
    await stopped;
    await this.portal.close();
    this.log('info', 'closed');
  }
}
