// Monitor API errors on the wire: every failure is JSON {code, message} with
// the HTTP status below; a monitor that is not the active one answers 503
// {code: 'ERR_NOT_ACTIVE', message, activeAddr} so a client retries at the
// active monitor's "host:port" (null when no monitor is known to be active).
//
// Invariant: `code` is a TesseraError code (stdx/errors.ts) or one of the
// monitor-only codes here; clients decide on `code`, never on `message`.
import { TesseraError, type ErrorCode } from '../stdx/errors.js';

export type MonOnlyCode =
  | 'ERR_NOT_ACTIVE' // this monitor is a standby (or lost its election): ask activeAddr
  | 'ERR_NO_ROUTE' // unknown method or path
  | 'ERR_UNAUTHORIZED' // the monitor wants a bearer token
  | 'ERR_INTERNAL'; // a bug in the monitor: see its log

export type MonErrorCode = ErrorCode | MonOnlyCode;

export interface MonErrorBody {
  code: MonErrorCode;
  message: string;
  /** With ERR_NOT_ACTIVE: the active monitor's "host:port", if known. */
  activeAddr?: string | null;
}

/**
 * Thrown by MonService calls on a monitor that is not active. Its TesseraError
 * code is ERR_CLOSED (the service is closed for this request); the HTTP layer
 * sends it as ERR_NOT_ACTIVE with the hint.
 */
export class MonNotActiveError extends TesseraError {
  constructor(
    message: string,
    readonly activeAddr: string | null,
  ) {
    super('ERR_CLOSED', message);
    this.name = 'MonNotActiveError';
  }
}

const STATUS: Partial<Record<MonErrorCode, number>> = {
  ERR_INVALID: 400,
  ERR_RANGE: 400,
  ERR_UNAUTHORIZED: 401,
  ERR_NOT_FOUND: 404,
  ERR_NO_ROUTE: 404,
  ERR_EXISTS: 409,
  ERR_BUSY: 409,
  ERR_SHRINK: 409,
  ERR_LIMIT: 429,
  ERR_NOT_ACTIVE: 503,
  ERR_CLOSED: 503,
  ERR_TIMEOUT: 504,
};

export function httpStatusOf(code: MonErrorCode): number {
  return STATUS[code] ?? 500;
}

/** Every TesseraError code (a Record, so a new code is a compile error here until listed). */
const ERROR_CODES: Record<ErrorCode, true> = {
  ERR_DEVICE_IO: true,
  ERR_DEVICE_FLUSH: true,
  ERR_CHECKSUM: true,
  ERR_NO_SPACE: true,
  ERR_RANGE: true,
  ERR_INVALID: true,
  ERR_NOT_FOUND: true,
  ERR_EXISTS: true,
  ERR_BUSY: true,
  ERR_SHRINK: true,
  ERR_FORMAT: true,
  ERR_LIMIT: true,
  ERR_CLOSED: true,
  ERR_ADDRESS_IN_USE: true,
  ERR_TIMEOUT: true,
  ERR_PROTOCOL: true,
};

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);
}
