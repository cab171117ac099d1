// A deliberately minimal, hand-written NBD client over node:net for protocol
// abuse tests: it sends exactly the bytes a test asks for (including garbage and
// truncated messages) and reads raw replies. It does NOT use src/gateway/nbd/
// codec.ts: an independent encoding of the wire format (proto.md "Newstyle
// negotiation", "Request message", "Simple reply message") is what makes the
// tests able to catch a codec bug that the codec's own round-trip would hide.
import * as net from 'node:net';

export const NBDMAGIC = Buffer.from('NBDMAGIC', 'ascii');
export const IHAVEOPT = Buffer.from('IHAVEOPT', 'ascii');
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1;
export const NBD_FLAG_C_NO_ZEROES = 2;
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;

const IO_TIMEOUT_MS_DEFAULT = 5_000;

/** A socket with an input buffer: read exactly n bytes, or learn that the peer closed. */
export class RawNbd {
  private buffered = Buffer.alloc(0);
  private closed = false;
  private waiter: (() => void) | null = null;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {}); // resets are expected in these tests; 'close' follows
  }

  static connect(port: number, host = '127.0.0.1', timeoutMs = IO_TIMEOUT_MS_DEFAULT): Promise<RawNbd> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port, noDelay: true });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to ${host}:${port} timed out`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve(new RawNbd(socket));
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  write(buf: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(buf);
  }

  /** Exactly n bytes, or throws if the peer closes first or the timeout passes. */
  async read(n: number, timeoutMs = IO_TIMEOUT_MS_DEFAULT): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buffered.length < n) {
      if (this.closed) throw new Error(`connection closed after ${this.buffered.length} of ${n} expected bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes (have ${this.buffered.length})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    return out;
  }

  /** Resolves with the bytes received before the peer closed; rejects on timeout. */
  async untilClosed(timeoutMs = IO_TIMEOUT_MS_DEFAULT): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`the server did not close the connection within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    const rest = this.buffered;
    this.buffered = Buffer.alloc(0);
    return rest;
  }

  /** Abrupt close: RST if possible. */
  reset(): void {
    if (typeof this.socket.resetAndDestroy === 'function') this.socket.resetAndDestroy();
    else this.socket.destroy();
  }

  end(): void {
    this.socket.end();
  }

  /** Reads the server greeting ("Newstyle negotiation"): NBDMAGIC IHAVEOPT + 16-bit handshake flags. */
  async readGreeting(): Promise<number> {
    const g = await this.read(18);
    if (!g.subarray(0, 8).equals(NBDMAGIC) || !g.subarray(8, 16).equals(IHAVEOPT)) {
      throw new Error(`bad greeting ${g.toString('hex')}`);
    }
    return g.readUInt16BE(16);
  }

  sendClientFlags(flags: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(flags >>> 0);
    this.write(b);
  }

  sendOption(option: number, data: Buffer): void {
    const h = Buffer.alloc(16);
    IHAVEOPT.copy(h, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(data.length, 12);
    this.write(Buffer.concat([h, data]));
  }

  /**
   * Old-style selection of an export (NBD_OPT_EXPORT_NAME, with NO_ZEROES
   * negotiated): returns the export size and transmission flags.
   */
  async exportName(name: string): Promise<{ sizeBytes: bigint; flags: number }> {
    await this.readGreeting();
    this.sendClientFlags(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    this.sendOption(NBD_OPT_EXPORT_NAME, Buffer.from(name, 'utf8'));
    const r = await this.read(10);
    return { sizeBytes: r.readBigUInt64BE(0), flags: r.readUInt16BE(8) };
  }

  static request(type: number, cookie: bigint, offset: bigint, lengthBytes: number, flags = 0): Buffer {
    const b = Buffer.alloc(28);
    b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
    b.writeUInt16BE(flags, 4);
    b.writeUInt16BE(type, 6);
    b.writeBigUInt64BE(cookie, 8);
    b.writeBigUInt64BE(offset, 16);
    b.writeUInt32BE(lengthBytes >>> 0, 24);
    return b;
  }

  /** A simple reply (no structured replies were negotiated): error and cookie. */
  async readSimpleReply(): Promise<{ error: number; cookie: bigint }> {
    const r = await this.read(16);
    const magic = r.readUInt32BE(0);
    if (magic !== NBD_SIMPLE_REPLY_MAGIC) throw new Error(`bad simple reply magic 0x${magic.toString(16)}: ${r.toString('hex')}`);
    return { error: r.readUInt32BE(4), cookie: r.readBigUInt64BE(8) };
  }
}
