// The TCP side every gateway protocol shares (NBD, iSCSI): listen, refuse
// connections beyond a limit or during shutdown, give each accepted connection a
// protocol session, close one that has not finished its negotiation in time,
// contain a session's exceptions to its own connection, and drain on close.
// Wiring only; protocols live in their sessions.
//
// Invariants:
// - At most `maxConnections` sessions; extra connections are closed at once.
// - One connection's failure (garbage, reset, even a bug surfacing as an
//   exception) ends that connection only, never the process or other sessions.
// - close() stops accepting, lets sessions answer what is in flight, then
//   destroys whatever is left after shutdownDrainMs.
// - With `idlePoll`, each session reports its connection's first request in
//   flight and its last one answered through QuietHooks (gateway/idle-poll.ts),
//   one quiet per busy; once this server is closing no quiet opens a window.
//   Every chunk received is reported to the poller before the session sees it.
import type { IdlePoll, QuietHooks } from './idle-poll.js';
import { TcpListener } from '../io/node/tcp.js';
import type { TcpConnection } from '../io/node/tcp.js';

export type GatewayLogFn = (level: 'info' | 'warn' | 'error', msg: string) => void;

/** What a protocol session offers the server. */
export interface GatewaySession {
  onData(chunk: Buffer): void;
  onDrain(): void;
  onClose(): void;
  /** Resolves once none of the session's requests is in flight. */
  whenIdle(): Promise<void>;
  /** Still negotiating (NBD options, iSCSI login): subject to the negotiation timeout. */
  negotiating(): boolean;
  /** Called first when the server closes (e.g. NBD stops taking new requests). */
  shutdown?(): void;
  /** Called once the connection is attached (e.g. NBD sends its greeting). */
  start?(): void;
}

export interface GatewayServerOptions<S extends GatewaySession> {
  /** For log lines: "nbd", "iscsi". */
  name: string;
  host: string;
  port: number;
  maxConnections: number;
  negotiationTimeoutMs: number;
  shutdownDrainMs: number;
  log: GatewayLogFn;
  /** Read into one lent buffer (TcpListenOptions.borrowReads): the sessions' decoders must copy what they keep. */
  borrowReads?: boolean;
  /** Keep the loop polling briefly after a session goes quiet (shared by every server of the process). */
  idlePoll?: IdlePoll;
  /** `hooks`: the session reports its in-flight count going 0 -> 1 (busy) and 1 -> 0 (quiet). */
  createSession(conn: TcpConnection, label: string, hooks: QuietHooks): S;
}

const NO_HOOKS: QuietHooks = { busy: () => {}, quiet: () => {} };

export class GatewayTcpServer<S extends GatewaySession> {
  private readonly sessions = new Set<S>();
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly listener: TcpListener,
    private readonly opts: GatewayServerOptions<S>,
  ) {}

  get host(): string {
    return this.listener.host;
  }

  get port(): number {
    return this.listener.port;
  }

  static async start<S extends GatewaySession>(opts: GatewayServerOptions<S>): Promise<GatewayTcpServer<S>> {
    let server: GatewayTcpServer<S> | null = null;
    const listener = await TcpListener.listen({
      host: opts.host,
      port: opts.port,
      log: opts.log,
      borrowReads: opts.borrowReads,
      onConnection: (conn) => {
        if (server === null || server.closing !== null || server.sessions.size >= opts.maxConnections) {
          opts.log('warn', `${opts.name}: refusing ${conn.remoteLabel}: ${server?.closing ? 'shutting down' : `limit of ${opts.maxConnections} connections reached`}`);
          conn.destroy();
          return;
        }
        server.accept(conn);
      },
    });
    server = new GatewayTcpServer(listener, opts);
    opts.log('info', `${opts.name}: listening on ${listener.host}:${listener.port}`);
    return server;
  }

  /** Sessions not yet forgotten (their connection open or their requests in flight). */
  sessionCount(): number {
    return this.sessions.size;
  }

  /** Open client connections. */
  connectionCount(): number {
    return this.listener.connectionCount();
  }

  close(): Promise<void> {
    if (this.closing === null) this.closing = this.shutdown();
    return this.closing;
  }

  private accept(conn: TcpConnection): void {
    const { log, name, negotiationTimeoutMs } = this.opts;
    const label = `${name} ${conn.remoteLabel}`;
    const idlePoll = this.opts.idlePoll;
    const hooks: QuietHooks = idlePoll
      ? { busy: () => idlePoll.busy(), quiet: (stayOpen) => idlePoll.quiet(stayOpen && this.closing === null) }
      : NO_HOOKS;
    const session = this.opts.createSession(conn, label, hooks);
    this.sessions.add(session);
    const timer = setTimeout(() => {
      if (!session.negotiating()) return;
      log('warn', `${label}: negotiation not finished within ${negotiationTimeoutMs} ms; closing`);
      conn.destroy();
    }, negotiationTimeoutMs);
    timer.unref();
    // A throw here would be our bug; contain it to this connection.
    const guarded = (what: string, fn: () => void): void => {
      try {
        fn();
      } catch (err) {
        log('error', `${label}: ${what} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        conn.destroy();
      }
    };
    conn.attach({
      onData: (chunk) => {
        idlePoll?.noteArrival();
        guarded('input', () => session.onData(chunk));
      },
      onDrain: () => guarded('drain', () => session.onDrain()),
      onClose: () => {
        clearTimeout(timer);
        guarded('close', () => session.onClose());
        void session.whenIdle().then(() => this.sessions.delete(session));
      },
    });
    if (session.start) guarded('start', () => session.start!());
  }

  private async shutdown(): Promise<void> {
    const stopped = this.listener.stopAccepting();
    const sessions = [...this.sessions];
    for (const s of sessions) s.shutdown?.();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.opts.shutdownDrainMs);
    });
    await Promise.race([Promise.all(sessions.map((s) => s.whenIdle())), timeout]);
    clearTimeout(timer);
    this.listener.destroyAll();
    await stopped;
    this.opts.log('info', `${this.opts.name}: closed`);
  }
}
