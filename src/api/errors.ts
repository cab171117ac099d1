// Error codes and HTTP statuses of the management API. The API answers every
// failure with JSON `{ code, message }`; `code` is a TesseraError code from
// stdx/errors.ts, or one of the few API-level codes below. Clients decide on
// `code`, never on `message` (which is for humans and may change).
//
// Invariant: the mapping is total — every ErrorCode has a status (the Record
// type makes a new code a compile error until it is mapped here).
import type { ErrorCode } from '../stdx/errors.js';

/** API-level codes that are not engine errors. */
export type ApiOnlyCode =
  | 'ERR_UNAUTHORIZED' // a mutating route on the TCP listener without the bearer token
  | 'ERR_NO_ROUTE' // unknown method or path
  | 'ERR_INTERNAL' // an unexpected failure inside the daemon (a bug): see its log
  | 'ERR_UNREACHABLE'; // client side only: nothing answers on the socket or port

export type ApiErrorCode = ErrorCode | ApiOnlyCode;

export const HTTP_STATUS_OF_CODE: Record<ApiErrorCode, number> = {
  ERR_INVALID: 400,
  ERR_RANGE: 400,
  ERR_PROTOCOL: 400,
  ERR_ADDRESS_IN_USE: 409,
  ERR_UNAUTHORIZED: 401,
  ERR_NOT_FOUND: 404,
  ERR_NO_ROUTE: 404,
  ERR_EXISTS: 409,
  ERR_SHRINK: 409,
  ERR_BUSY: 409,
  ERR_LIMIT: 429,
  ERR_INTERNAL: 500,
  ERR_DEVICE_IO: 500,
  ERR_DEVICE_FLUSH: 500,
  ERR_CHECKSUM: 500,
  ERR_FORMAT: 500,
  ERR_CLOSED: 503,
  ERR_UNREACHABLE: 503,
  ERR_TIMEOUT: 504,
  ERR_NO_SPACE: 507,
};

export interface ApiErrorBody {
  code: ApiErrorCode;
  message: string;
}

/** An API failure as the client sees it; `httpStatus` is 0 when no answer came. */
export class ApiError extends Error {
  constructor(
    readonly code: ApiErrorCode,
    message: string,
    readonly httpStatus: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ApiError';
  }
}

export function isApiErrorCode(value: unknown): value is ApiErrorCode {
  return typeof value === 'string' && Object.hasOwn(HTTP_STATUS_OF_CODE, value);
}
