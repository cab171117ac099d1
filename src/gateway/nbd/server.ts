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
import type { VolumeStore } from '../../volume/types.js';
import { TcpListener } from '../../io/node/tcp.js';
import type { TcpConnection } from '../../io/node/tcp.js';
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
}

export class NbdServer {
  private readonly sessions = new Set<NbdSession>();
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly listener: TcpListener,
    private readonly log: LogFn,
    private readonly handshakeTimeoutMs: number,
    private readonly budget: SharedBudget,
  ) {}

  get host(): string {
    return this.listener.host;
  }

  get port(): number {
    return this.listener.port;
  }

  static async start(opts: NbdServerOptions): Promise<NbdServer> {
    const log: LogFn = opts.log ?? (() => {});
    const maxConnections = opts.maxConnections ?? MAX_CONNECTIONS_DEFAULT;
    let server: NbdServer | null = null;
    const listener = await TcpListener.listen({
      host: opts.host === '' ? NBD_DEFAULT_HOST : opts.host,
      port: opts.port,
      log,
      onConnection: (conn) => {
        if (server === null || server.closing !== null || server.sessions.size >= maxConnections) {
          log('warn', `nbd: refusing ${conn.remoteLabel}: ${server?.closing ? 'shutting down' : `limit of ${maxConnections} connections reached`}`);
          conn.destroy();
          return;
        }
        server.accept(conn, opts.store);
      },
    });
    server = new NbdServer(listener, log, opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS_DEFAULT, new SharedBudget(opts.sharedBufferBytesMax ?? SHARED_BUFFER_BYTES_DEFAULT));
    log('info', `nbd: listening on ${listener.host}:${listener.port}`);
    return server;
  }

  /** Open client connections. */
  connectionCount(): number {
    return this.listener.connectionCount();
  }

  close(): Promise<void> {
    if (this.closing === null) this.closing = this.shutdown();
    return this.closing;
  }

  private accept(conn: TcpConnection, store: VolumeStore): void {
    const label = `nbd ${conn.remoteLabel}`;
    const session = new NbdSession(conn, { store, log: this.log, label, sharedBudget: this.budget });
    this.sessions.add(session);
    const handshakeTimer = setTimeout(() => {
      const phase = session.state();
      if (phase !== 'greeting' && phase !== 'options') return;
      this.log('warn', `${label}: negotiation not finished within ${this.handshakeTimeoutMs} ms; closing`);
      conn.destroy();
    }, this.handshakeTimeoutMs);
    handshakeTimer.unref();
    // A throw here would be our bug; contain it to this connection.
    const guarded = (what: string, fn: () => void): void => {
      try {
        fn();
      } catch (err) {
        this.log('error', `${label}: ${what} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        conn.destroy();
      }
    };
    conn.attach({
      onData: (chunk) => guarded('input', () => session.onData(chunk)),
      onDrain: () => guarded('drain', () => session.onDrain()),
      onClose: () => {
        clearTimeout(handshakeTimer);
        session.onClose();
        void session.whenIdle().then(() => this.sessions.delete(session));
      },
    });
    guarded('greeting', () => session.start());
  }

  private async shutdown(): Promise<void> {
    const stopped = this.listener.stopAccepting();
    const sessions = [...this.sessions];
    for (const s of sessions) s.shutdown();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, SHUTDOWN_DRAIN_MS);
    });
    await Promise.race([Promise.all(sessions.map((s) => s.whenIdle())), timeout]);
    clearTimeout(timer);
    this.listener.destroyAll();
    await stopped;
    this.log('info', 'nbd: closed');
  }
}
