// The iSCSI text format: `key=value\0` pairs carried in the data segment of Login
// and Text PDUs (RFC 7143 §6.1), binary values (hex `0x…` / base64 `0b…`), and the
// accumulator that joins a text split over several PDUs with the C bit.
// Pure: no IO.
//
// Invariants:
// - Nothing read from the wire is trusted: every key, value, pair count, decoded
//   binary and accumulated text has a limit, and anything malformed or over a
//   limit is a TesseraError (ERR_PROTOCOL, or ERR_LIMIT for the accumulator),
//   never a RangeError or a silently truncated value.
// - parseTextKeys returns every pair in wire order, duplicates included: whether
//   a repeated key is an error depends on the key (negotiate.ts / login.ts decide).
// - What we encode is always valid text (assertions: a bad key from our own code
//   is a programmer error).
import { assert, fail } from '../../stdx/assert.js';
import { TesseraError } from '../../stdx/errors.js';

/** RFC 7143 §6.1: a key name is at most 63 bytes. */
export const MAX_KEY_BYTES = 63;
/**
 * Longest value we accept. RFC 7143 §6.1 caps most values far lower (255 bytes
 * for simple values); 8192 leaves room for long lists and names while bounding work.
 */
export const MAX_VALUE_BYTES = 8192;
/** Longest encoded binary value (`0x` + hex of 8 KiB): binary values may be longer than text ones. */
export const MAX_BINARY_VALUE_CHARS = 2 + 2 * 8192;
/** Most pairs in one text (a real login sends ~20). */
export const MAX_PAIRS = 256;
/** Default limit of a text joined from C-bit PDUs. */
export const DEFAULT_TEXT_LIMIT_BYTES = 64 * 1024;
/** Default limit of a decoded binary value. */
export const DEFAULT_BINARY_LIMIT_BYTES = 8192;

/** Characters of a key name: standard-label and private keys (X-…, X#…) (RFC 7143 §6.1, §13.22 (§?)). */
const KEY_CHARS = /^[A-Za-z0-9.\-+@_#]+$/;
const HEX_DIGITS = /^[0-9A-Fa-f]+$/;
const BASE64_CHARS = /^[A-Za-z0-9+/]+={0,2}$/;

const utf8 = new TextDecoder('utf-8', { fatal: true });

function protocolError(message: string): TesseraError {
  return new TesseraError('ERR_PROTOCOL', `iSCSI text: ${message}`);
}

function isBinaryEncoded(value: string): boolean {
  return value.length > 2 && value[0] === '0' && 'xXbB'.includes(value[1]);
}

/** Throws unless `key` is a well-formed key name. */
function checkKey(key: string, keyBytes: number): void {
  if (keyBytes === 0) throw protocolError('empty key');
  if (keyBytes > MAX_KEY_BYTES) throw protocolError(`key of ${keyBytes} bytes (limit ${MAX_KEY_BYTES})`);
  if (!KEY_CHARS.test(key)) throw protocolError(`bad characters in key ${JSON.stringify(key)}`);
}

function checkValueLength(key: string, value: string, valueBytes: number): void {
  const limit = isBinaryEncoded(value) ? MAX_BINARY_VALUE_CHARS : MAX_VALUE_BYTES;
  if (valueBytes > limit) throw protocolError(`value of ${key} is ${valueBytes} bytes (limit ${limit})`);
}

/**
 * Splits a complete text into its pairs (RFC 7143 §6.1). Every pair ends in a
 * NUL; a text that does not end in one was cut short. Empty strings between NULs
 * are skipped: some initiators pad the text with zero bytes.
 */
export function parseTextKeys(data: Buffer): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  if (data.length === 0) return pairs;
  if (data[data.length - 1] !== 0) throw protocolError('text does not end with a NUL');
  let start = 0;
  while (start < data.length) {
    const end = data.indexOf(0, start);
    if (end > start) {
      if (pairs.length === MAX_PAIRS) throw protocolError(`more than ${MAX_PAIRS} pairs`);
      pairs.push(parsePair(data.subarray(start, end)));
    }
    start = end + 1;
  }
  return pairs;
}

function parsePair(bytes: Buffer): [string, string] {
  const eq = bytes.indexOf(0x3d); // '='
  if (eq < 0) throw protocolError('pair without "="');
  checkKeyBytes(bytes.subarray(0, eq));
  const key = decodeUtf8(bytes.subarray(0, eq));
  checkKey(key, eq);
  const valueBytes = bytes.subarray(eq + 1);
  const value = decodeUtf8(valueBytes);
  checkValueLength(key, value, valueBytes.length);
  return [key, value];
}

/** Refuses an over-long key before decoding it, so the error names the real problem. */
function checkKeyBytes(keyBytes: Buffer): void {
  if (keyBytes.length > MAX_KEY_BYTES) throw protocolError(`key of ${keyBytes.length} bytes (limit ${MAX_KEY_BYTES})`);
}

function decodeUtf8(bytes: Buffer): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw protocolError('text is not UTF-8');
  }
}

/** `key=value\0` for every pair, in order. */
export function encodeTextKeys(pairs: ReadonlyArray<readonly [string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [key, value] of pairs) {
    if (!(KEY_CHARS.test(key) && Buffer.byteLength(key) <= MAX_KEY_BYTES)) fail(`bad key ${JSON.stringify(key)}`);
    if (!(!value.includes('\0'))) fail(`NUL in the value of ${key}`);
    parts.push(Buffer.from(`${key}=${value}\0`, 'utf8'));
  }
  return Buffer.concat(parts);
}

/**
 * The bytes of a binary value: `0x`/`0X` + hex digits or `0b`/`0B` + base64
 * (RFC 7143 §6.1). An odd number of hex digits has an implied leading zero (§?).
 * ERR_PROTOCOL when malformed or longer than `maxBytes` once decoded.
 */
export function decodeBinary(value: string, maxBytes = DEFAULT_BINARY_LIMIT_BYTES): Buffer {
  if (!isBinaryEncoded(value)) throw protocolError('binary value without 0x or 0b prefix');
  if (value.length > MAX_BINARY_VALUE_CHARS) throw protocolError(`binary value of ${value.length} characters`);
  const body = value.slice(2);
  const out = value[1] === 'x' || value[1] === 'X' ? decodeHex(body) : decodeBase64(body);
  if (out.length > maxBytes) throw protocolError(`binary value of ${out.length} bytes (limit ${maxBytes})`);
  return out;
}

function decodeHex(digits: string): Buffer {
  if (!HEX_DIGITS.test(digits)) throw protocolError('bad hex digit in binary value');
  return Buffer.from(digits.length % 2 === 1 ? `0${digits}` : digits, 'hex');
}

function decodeBase64(text: string): Buffer {
  // Buffer.from ignores bad characters; check the alphabet and padding first.
  if (text.length % 4 !== 0 || !BASE64_CHARS.test(text)) throw protocolError('bad base64 in binary value');
  return Buffer.from(text, 'base64');
}

/** `0x` + lowercase hex: the one binary form every initiator parses. */
export function encodeHex(buf: Buffer): string {
  return `0x${buf.toString('hex')}`;
}

/**
 * Joins the data segments of a Login or Text request sequence that uses the C
 * (continue) bit (RFC 7143 §11.10.2 / §11.12.2 (§?)): a key=value pair may span
 * PDUs, so text is parsed only once the part with C = 0 has arrived.
 */
export class TextAccumulator {
  private parts: Buffer[] = [];
  private totalBytes = 0;

  constructor(readonly limitBytes = DEFAULT_TEXT_LIMIT_BYTES) {
    assert(Number.isInteger(limitBytes) && limitBytes > 0, 'text limit must be a positive integer');
  }

  /** True while a C = 1 part waits for the rest. */
  get pending(): boolean {
    return this.parts.length > 0;
  }

  /**
   * Adds one data segment. Returns the whole text when `cont` is false, null
   * while more parts are expected. ERR_LIMIT beyond `limitBytes` (the
   * accumulator is then empty again).
   */
  push(data: Buffer, cont: boolean): Buffer | null {
    if (this.totalBytes + data.length > this.limitBytes) {
      const total = this.totalBytes + data.length;
      this.reset();
      throw new TesseraError('ERR_LIMIT', `iSCSI text of more than ${this.limitBytes} bytes (${total} so far)`);
    }
    this.parts.push(data);
    this.totalBytes += data.length;
    if (cont) return null;
    const text = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.totalBytes);
    this.reset();
    return text;
  }

  reset(): void {
    this.parts = [];
    this.totalBytes = 0;
  }
}
