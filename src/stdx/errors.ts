// Operating errors with stable codes. Every error that can reach an operator or a
// client (EIO, ENOSPC, bad input, timeouts) is a TesseraError with a code from
// ErrorCode; protocol layers map codes to wire errors (see gateway/nbd/errno.ts).
// Programmer errors are assertions (stdx/assert.ts), never TesseraErrors.

export type ErrorCode =
  | 'ERR_DEVICE_IO' // a device read or write failed
  | 'ERR_DEVICE_FLUSH' // fsync failed: fatal to the daemon
  | 'ERR_CHECKSUM' // stored block failed its crc32c check
  | 'ERR_NO_SPACE' // no free chunk left on the device
  | 'ERR_RANGE' // offset/length outside a volume or device
  | 'ERR_INVALID' // malformed argument
  | 'ERR_NOT_FOUND' // unknown volume or object
  | 'ERR_EXISTS' // name already taken
  | 'ERR_BUSY' // resource in use (e.g. exported volume being deleted)
  | 'ERR_SHRINK' // resize below allocated data
  | 'ERR_FORMAT' // on-disk structure is not a Tessera format or is corrupt
  | 'ERR_LIMIT' // a configured limit was reached
  | 'ERR_CLOSED' // object used after close
  | 'ERR_ADDRESS_IN_USE' // a listen address/port is taken
  | 'ERR_TIMEOUT'
  | 'ERR_PROTOCOL'; // a peer broke the wire protocol

export class TesseraError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'TesseraError';
  }
}

export function isTesseraError(err: unknown, code?: ErrorCode): err is TesseraError {
  return err instanceof TesseraError && (code === undefined || err.code === code);
}
