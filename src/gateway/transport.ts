// What a gateway protocol session (NBD, iSCSI) needs from its transport; io/node/tcp.ts
// implements it over a socket, tests over in-memory pipes. Types only.

export type LogLevel = 'info' | 'warn' | 'error';
export type LogFn = (level: LogLevel, msg: string) => void;

export interface Connection {
  /**
   * Queues bytes (writes made in the same tick are batched). Returns false when the
   * transport's buffer is full; onDrain() follows. onSent, if given, runs once the
   * transport no longer needs buf (handed to the kernel, or dropped because the
   * connection is gone): the caller may then reuse it.
   */
  write(buf: Buffer, onSent?: () => void): boolean;
  pauseReading(): void;
  resumeReading(): void;
  /** Sends what is queued, then closes. Idempotent. The transport later calls onClose(). */
  close(): void;
  /** True when a data chunk is lent for the delivering call only (the session must copy what it keeps); absent means false. */
  readonly borrowsReads?: boolean;
}
