// TCP listener and connection wrapper for the gateways: the only place the NBD
// server touches node:net. It gives protocol sessions a small, testable surface
// (write / pauseReading / resumeReading / close) and callbacks for data, drain, close.
//
// Invariants:
// - TCP_NODELAY is always on: NBD replies are small and latency-bound, and QEMU's
//   NBD client stalls against a server that leaves Nagle on (proto.md also says
//   both sides SHOULD disable Nagle).
// - Writes made in one event-loop pass are corked and leave in one writev in its check phase.
// - write() reports "full" only once this socket holds writeBufferBytesMax unsent
//   bytes; onDrain follows when the kernel has taken them.
// - Every accepted socket is tracked until it closes, has an 'error' listener (a
//   reset peer never crashes the process), and is destroyed by destroyAll()/close();
//   a socket we end() is destroyed after closeLingerMs if the peer never closes.
import * as net from 'node:net';
import { TesseraError } from '../../stdx/errors.js';

export type TcpLogFn = (level: 'info' | 'warn' | 'error', msg: string) => void;

export interface TcpHandlers {
  /** With TcpListenOptions.borrowReads the chunk is valid only during this call: copy what you keep. */
  onData(chunk: Buffer): void;
  onDrain(): void;
  /** Called once, when the socket is fully closed for any reason. */
  onClose(): void;
}

export interface TcpListenOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  onConnection(conn: TcpConnection): void;
  log?: TcpLogFn;
  keepAliveInitialDelayMs?: number;
  writeBufferBytesMax?: number;
  closeLingerMs?: number;
  /**
   * Read every connection into one reused buffer (net `onread`) instead of a fresh
   * ArrayBuffer per socket read: onData's chunk is then lent for the call only.
   * 1 MiB writes arrive as ~16 reads, and that churn of external memory kept V8 in
   * back-to-back full GCs (half the gateway's CPU at 1 MiB writes, session 10).
   */
  borrowReads?: boolean;
}

/**
 * The one buffer every borrowing socket of this process reads into (listeners' and
 * rpc.ts's clients'): libuv delivers reads one at a time, and each is consumed
 * (copied out) before its callback returns.
 */
const lentReadBuffer = Buffer.allocUnsafe(256 * 1024);

/** net's `onread` option for a borrowing socket: every read goes to `deliver` as a chunk lent for the call. */
export function lentReads(deliver: (chunk: Buffer) => void): net.OnReadOpts {
  return {
    buffer: lentReadBuffer,
    callback: (bytes: number, buf: Uint8Array) => {
      deliver((buf as Buffer).subarray(0, bytes));
      return true;
    },
  };
}

const KEEPALIVE_INITIAL_DELAY_MS = 30_000;
const WRITE_BUFFER_BYTES_MAX = 8 * 1024 * 1024;
const CLOSE_LINGER_MS = 5_000;

export class TcpConnection {
  readonly remoteLabel: string;
  private handlers: TcpHandlers | null = null;
  private corked = false;
  private ending = false;
  private reportedFull = false;
  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  constructor(
    private readonly socket: net.Socket,
    private readonly writeBufferBytesMax: number,
    private readonly closeLingerMs: number,
    /** The socket reads through onread into a lent buffer (see borrowReads), delivered by deliverBorrowed. */
    private readonly borrowed = false,
  ) {
    this.remoteLabel = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
  }

  /** True when onData's chunks are lent for the call only (TcpListenOptions.borrowReads). */
  get borrowsReads(): boolean {
    return this.borrowed;
  }

  /** onread's callback: the bytes the socket just read into the lent buffer. */
  deliverBorrowed(chunk: Buffer): void {
    if (this.ending) return; // read only to see the peer's FIN (close())
    this.handlers?.onData(chunk);
  }

  /** Starts delivering events; data flows only after this. */
  attach(handlers: TcpHandlers): void {
    this.handlers = handlers;
    if (!this.borrowed) this.socket.on('data', (chunk: Buffer) => handlers.onData(chunk));
    // Created paused (pauseOnCreate, or pauseOnConnect on the fallback path, where a
    // 'data' listener alone does not start a stream whose flowing state is false).
    this.socket.resume();
    this.socket.on('drain', () => {
      if (!this.reportedFull) return;
      this.reportedFull = false;
      handlers.onDrain();
    });
  }

  /**
   * Queues buf. onSent, if given, runs once the socket no longer needs buf: it was
   * handed to the kernel, or dropped (this connection is closing, or the socket was
   * destroyed). The caller may then reuse buf.
   */
  write(buf: Buffer, onSent?: () => void): boolean {
    if (this.ending || this.socket.destroyed) {
      onSent?.(); // dropped: the peer is gone or going
      return true;
    }
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      // setImmediate, not nextTick: every reply completed in this event-loop pass (all
      // the IO completions libuv delivers together) leaves in one writev, instead of one
      // send per completion. The check phase runs right after the poll phase, so a lone
      // reply waits for nothing.
      setImmediate(this.uncork);
    }
    if (onSent === undefined) this.socket.write(buf);
    else this.socket.write(buf, () => onSent()); // called with an error too when the socket is destroyed first
    if (this.socket.writableLength >= this.writeBufferBytesMax) {
      // Above the socket's own high-water mark, so socket.write returned false and 'drain' will fire.
      this.reportedFull = true;
      return false;
    }
    return true;
  }

  /** Sends what this turn wrote now instead of in the check phase (before the caller blocks the loop). */
  flush(): void {
    if (this.corked) this.uncork();
  }

  pauseReading(): void {
    // After close() a borrowed socket must keep reading to see the peer's FIN (a
    // decoder that failed mid-chunk asks for a pause after its close: review, session 10).
    if (!this.ending) this.socket.pause();
  }

  resumeReading(): void {
    if (!this.ending) this.socket.resume();
  }

  /** Flushes queued writes, sends FIN, and destroys the socket if the peer lingers. */
  close(): void {
    if (this.ending) return;
    this.ending = true;
    if (this.corked) this.uncork();
    this.socket.end();
    // A paused onread socket reads nothing, not even the peer's FIN, and would linger
    // until closeLingerMs (Node's own buffers keep reading up to their high-water mark).
    if (this.borrowed) this.socket.resume();
    this.socket.setTimeout(this.closeLingerMs, () => this.socket.destroy());
  }

  destroy(): void {
    this.ending = true;
    this.socket.destroy();
  }

  /** For the listener: whether attach() ran (so onClose is owed). */
  hasHandlers(): boolean {
    return this.handlers !== null;
  }

  notifyClosed(): void {
    this.handlers?.onClose();
  }
}

export class TcpListener {
  private readonly sockets = new Set<net.Socket>();
  private closedPromise: Promise<void> | null = null;

  private constructor(
    private readonly server: net.Server,
    readonly host: string,
    readonly port: number,
  ) {}

  static listen(opts: TcpListenOptions): Promise<TcpListener> {
    const log = opts.log ?? (() => {});
    const keepAliveMs = opts.keepAliveInitialDelayMs ?? KEEPALIVE_INITIAL_DELAY_MS;
    const writeBufferBytesMax = opts.writeBufferBytesMax ?? WRITE_BUFFER_BYTES_MAX;
    const closeLingerMs = opts.closeLingerMs ?? CLOSE_LINGER_MS;
    // Borrowing: connections arrive paused, so that no byte is read before the socket is re-created with onread.
    const server = net.createServer({ noDelay: true, keepAlive: true, keepAliveInitialDelay: keepAliveMs, pauseOnConnect: opts.borrowReads === true });
    let listener: TcpListener | null = null;
    server.on('connection', (accepted) => {
      if (listener === null) {
        accepted.destroy();
        return;
      }
      let conn: TcpConnection | null = null;
      const socket = opts.borrowReads === true ? withLentReads(accepted, (chunk) => conn?.deliverBorrowed(chunk)) : accepted;
      conn = new TcpConnection(socket, writeBufferBytesMax, closeLingerMs, socket !== accepted);
      listener.accept(socket, conn, opts, log, keepAliveMs);
    });
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const what = `cannot listen on ${opts.host}:${opts.port}`;
        if (err.code === 'EADDRINUSE') reject(new TesseraError('ERR_ADDRESS_IN_USE', `${what}: the address is already in use by another program`));
        else if (err.code === 'EADDRNOTAVAIL' || err.code === 'EACCES') reject(new TesseraError('ERR_INVALID', `${what}: ${err.code}`));
        else reject(err);
      });
      server.listen({ host: opts.host, port: opts.port }, () => {
        server.removeAllListeners('error');
        server.on('error', (err) => log('error', `tcp listener ${opts.host}:${opts.port}: ${err.message}`));
        const addr = server.address() as net.AddressInfo;
        listener = new TcpListener(server, opts.host, addr.port);
        resolve(listener);
      });
    });
  }

  private accept(socket: net.Socket, conn: TcpConnection, opts: TcpListenOptions, log: TcpLogFn, keepAliveMs: number): void {
    socket.setNoDelay(true); // never leave Nagle on, whatever the server defaults were
    socket.setKeepAlive(true, keepAliveMs);
    this.sockets.add(socket);
    socket.on('error', (err) => log('warn', `tcp ${conn.remoteLabel}: ${err.message}`));
    socket.once('close', () => {
      this.sockets.delete(socket);
      conn.notifyClosed();
    });
    try {
      opts.onConnection(conn);
    } catch (err) {
      log('error', `tcp ${conn.remoteLabel}: connection handler failed: ${String(err)}`);
      socket.destroy();
    }
  }

  connectionCount(): number {
    return this.sockets.size;
  }

  /** Stops accepting; existing sockets stay until they close or destroyAll(). */
  stopAccepting(): Promise<void> {
    if (this.closedPromise === null) {
      this.closedPromise = new Promise((resolve) => this.server.close(() => resolve()));
    }
    return this.closedPromise;
  }

  destroyAll(): void {
    for (const s of this.sockets) s.destroy();
  }

  /** Stops accepting, destroys every socket, and resolves once the listener is closed. */
  async close(): Promise<void> {
    const closed = this.stopAccepting();
    this.destroyAll();
    await closed;
  }
}

/** The parts of an accepted net.Socket that withLentReads moves to its replacement (Node internals, checked). */
interface AcceptedInternals {
  _handle: { useUserBuffer?: unknown } | null;
  _server: net.Server | null;
  server: net.Server | null;
}

/**
 * The accepted (paused) socket `accepted` as a socket that reads into the lent
 * buffer through net's public `onread` option, delivering each read to `onChunk`. Node
 * offers onread only to sockets it creates for connect(), so the accepted socket's
 * handle moves to a new Socket (created paused: TcpConnection.attach resumes it),
 * with the server's connection count. Falls back to `accepted` itself (fresh
 * buffers per read) should a Node release not have these internals.
 */
function withLentReads(accepted: net.Socket, onChunk: (chunk: Buffer) => void): net.Socket {
  const inner = accepted as unknown as AcceptedInternals;
  const handle = inner._handle;
  if (handle === null || typeof handle.useUserBuffer !== 'function' || inner._server === undefined) {
    return accepted; // paused by pauseOnConnect: attach() resumes it
  }
  const socket = new net.Socket({
    handle: handle as never,
    readable: true,
    writable: true,
    pauseOnCreate: true,
    onread: lentReads(onChunk),
  } as net.SocketConstructorOpts);
  const moved = socket as unknown as AcceptedInternals;
  moved._server = inner._server; // its close decrements the server's connection count
  moved.server = inner.server;
  inner._server = null;
  inner._handle = null;
  return socket;
}
