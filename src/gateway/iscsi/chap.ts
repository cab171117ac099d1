// Target side of iSCSI CHAP (RFC 7143 §12.1.3 over RFC 1994 §4.1), one instance
// per login: challenge the initiator, check its response, and for mutual CHAP
// answer the initiator's challenge. Randomness and the credentials are injected;
// the only dependency is node:crypto for the hashes. Pure otherwise.
//
// Exchange (I = initiator, T = target):
//   I: CHAP_A=<algorithms>            T: CHAP_A=<chosen> CHAP_I=<id> CHAP_C=<challenge>
//   I: CHAP_N=<user> CHAP_R=<H(id ‖ secret ‖ challenge)> [CHAP_I=<id'> CHAP_C=<challenge'>]
//   T (mutual only): CHAP_N=<mutualUser> CHAP_R=<H(id' ‖ mutualSecret ‖ challenge')>
//
// Invariants:
// - Every login gets a fresh challenge from randomBytes (at least 16 bytes, and
//   at least the digest length) and a random identifier.
// - A response is compared in constant time (crypto.timingSafeEqual) and only
//   after its length matched the digest length.
// - We never compute a response for the initiator's challenge before the
//   initiator has proved it knows the secret, never for our own challenge
//   reflected back, and never with a mutual secret equal to the forward secret:
//   otherwise the target would answer its own challenge for an attacker.
// - We accept 0x and 0b binaries but always send hex: libiscsi parses only hex.
import { createHash, timingSafeEqual } from 'node:crypto';
import { assert, fail } from '../../stdx/assert.js';
import { TesseraError } from '../../stdx/errors.js';
import { decodeBinary, encodeHex } from './text.js';
import { parseNumber } from './negotiate.js';

/** CHAP_A values (the PPP authentication algorithm numbers). */
export const CHAP_MD5 = 5;
/**
 * SHA-256. 7 is what libiscsi ≥ 1.20.1 (`enum iscsi_chap_auth`) and the Linux
 * target use; tgt uses 7 for SHA-1. The IANA registry was not checked here
 * (docs/iscsi.md §4): we follow libiscsi.
 */
export const CHAP_SHA256 = 7;

const DIGESTS: ReadonlyMap<number, { hash: string; bytes: number }> = new Map([
  [CHAP_MD5, { hash: 'md5', bytes: 16 }],
  [CHAP_SHA256, { hash: 'sha256', bytes: 32 }],
]);

/** Secrets shorter than 96 bits are refused (RFC 7143 §12.1.3 (§?) guidance on CHAP secret strength). */
export const MIN_SECRET_BYTES = 12;
/** Our own bound on secret length (a configuration sanity limit, not from the RFC). */
export const MAX_SECRET_BYTES = 255;
/** Longest challenge we accept from an initiator (libiscsi caps at 1024 bytes too). */
export const MAX_INITIATOR_CHALLENGE_BYTES = 1024;
/** Shortest challenge we send. */
export const MIN_CHALLENGE_BYTES = 16;
/** Longest CHAP_N we accept (RFC 7143 §6.1 text-value limit). */
const MAX_NAME_BYTES = 255;

/** Credentials for one target, chosen by the caller. */
export interface ChapConfig {
  /** The name the initiator must send in CHAP_N. */
  user: string;
  secret: string | Buffer;
  /** For mutual CHAP: the name we send in CHAP_N. */
  mutualUser?: string;
  mutualSecret?: string | Buffer;
}

function secretBytes(secret: string | Buffer): Buffer {
  return typeof secret === 'string' ? Buffer.from(secret, 'utf8') : secret;
}

/** Configuration-time check of one secret: ERR_INVALID unless 12..255 bytes. */
export function validateChapSecret(secret: string | Buffer): void {
  const n = secretBytes(secret).length;
  if (n < MIN_SECRET_BYTES) throw new TesseraError('ERR_INVALID', `CHAP secret of ${n} bytes: at least ${MIN_SECRET_BYTES} required`);
  if (n > MAX_SECRET_BYTES) throw new TesseraError('ERR_INVALID', `CHAP secret of ${n} bytes: at most ${MAX_SECRET_BYTES} allowed`);
}

/** Configuration-time check of a whole ChapConfig: ERR_INVALID naming the problem. */
export function validateChapConfig(config: ChapConfig): void {
  if (config.user.length === 0 || Buffer.byteLength(config.user) > MAX_NAME_BYTES) {
    throw new TesseraError('ERR_INVALID', 'CHAP user must be 1..255 bytes');
  }
  validateChapSecret(config.secret);
  const hasUser = config.mutualUser !== undefined;
  const hasSecret = config.mutualSecret !== undefined;
  if (hasUser !== hasSecret) throw new TesseraError('ERR_INVALID', 'mutual CHAP needs both a user and a secret');
  if (config.mutualUser === undefined || config.mutualSecret === undefined) return;
  if (config.mutualUser.length === 0 || Buffer.byteLength(config.mutualUser) > MAX_NAME_BYTES) {
    throw new TesseraError('ERR_INVALID', 'mutual CHAP user must be 1..255 bytes');
  }
  validateChapSecret(config.mutualSecret);
  if (secretBytes(config.mutualSecret).equals(secretBytes(config.secret))) {
    throw new TesseraError('ERR_INVALID', 'the mutual CHAP secret must differ from the initiator secret');
  }
}

/** RFC 1994 §4.1: H(identifier ‖ secret ‖ challenge). */
export function chapResponse(algorithm: number, id: number, secret: Buffer, challenge: Buffer): Buffer {
  const digest = DIGESTS.get(algorithm);
  if (!(digest !== undefined)) fail(`unsupported CHAP algorithm ${algorithm}`);
  assert(Number.isInteger(id) && id >= 0 && id <= 255, 'CHAP identifier is one byte');
  return createHash(digest.hash).update(Buffer.of(id)).update(secret).update(challenge).digest();
}

export type ChapStep =
  | { ok: true; response: Array<[string, string]>; done: boolean }
  | { ok: false; reason: string };

export interface ChapOptions {
  /** Algorithms we accept; the initiator's order picks among them. Default: MD5 and SHA-256. */
  algorithms?: number[];
}

type ChapState = 'await-algorithm' | 'await-response' | 'done' | 'failed';

/** One login's CHAP exchange, target side. Feed it the CHAP_* keys of each complete text. */
export class ChapAuthenticator {
  private state: ChapState = 'await-algorithm';
  private algorithm = 0;
  private id = 0;
  private challenge: Buffer = Buffer.alloc(0);
  private readonly algorithms: number[];

  constructor(
    private readonly config: ChapConfig,
    private readonly randomBytes: (n: number) => Buffer,
    options: ChapOptions = {},
  ) {
    this.algorithms = options.algorithms ?? [CHAP_MD5, CHAP_SHA256];
    assert(this.algorithms.length > 0 && this.algorithms.every((a) => DIGESTS.has(a)), 'unsupported CHAP algorithm configured');
  }

  get done(): boolean {
    return this.state === 'done';
  }

  /** True between our challenge and the initiator's response. */
  get inProgress(): boolean {
    return this.state === 'await-response';
  }

  /** The challenge we issued (for tests and logs); empty before CHAP_A. */
  get issuedChallenge(): Buffer {
    return Buffer.from(this.challenge);
  }

  /** Handles the CHAP_* keys of one complete text. Any failure is final (Login status 2/1). */
  handle(keys: ReadonlyMap<string, string>): ChapStep {
    const step = this.step(keys);
    if (!step.ok) this.state = 'failed';
    return step;
  }

  private step(keys: ReadonlyMap<string, string>): ChapStep {
    switch (this.state) {
      case 'await-algorithm':
        return this.chooseAlgorithm(keys);
      case 'await-response':
        return this.checkResponse(keys);
      case 'done':
        return keys.size === 0 ? { ok: true, response: [], done: true } : { ok: false, reason: 'CHAP keys after CHAP completed' };
      case 'failed':
        return { ok: false, reason: 'CHAP already failed' };
    }
  }

  private chooseAlgorithm(keys: ReadonlyMap<string, string>): ChapStep {
    const offer = keys.get('CHAP_A');
    if (offer === undefined) {
      return keys.size === 0 ? { ok: true, response: [], done: false } : { ok: false, reason: 'CHAP keys before CHAP_A' };
    }
    if (keys.size !== 1) return { ok: false, reason: 'CHAP_A must come alone' };
    const chosen = offer.split(',').map(parseNumber).find((a): a is number => a !== null && this.algorithms.includes(a));
    if (chosen === undefined) return { ok: false, reason: `no acceptable CHAP algorithm in ${JSON.stringify(offer.slice(0, 64))}` };
    const digest = DIGESTS.get(chosen);
    assert(digest !== undefined, 'algorithm filtered above');
    this.algorithm = chosen;
    this.id = this.draw(1)[0];
    this.challenge = this.draw(Math.max(MIN_CHALLENGE_BYTES, digest.bytes));
    this.state = 'await-response';
    return {
      ok: true,
      done: false,
      response: [
        ['CHAP_A', String(chosen)],
        ['CHAP_I', String(this.id)],
        ['CHAP_C', encodeHex(this.challenge)],
      ],
    };
  }

  /** randomBytes is injected: check it returned what was asked. */
  private draw(n: number): Buffer {
    const bytes = this.randomBytes(n);
    if (!(bytes.length === n)) fail(`randomBytes(${n}) returned ${bytes.length} bytes`);
    return Buffer.from(bytes);
  }

  private checkResponse(keys: ReadonlyMap<string, string>): ChapStep {
    for (const key of keys.keys()) {
      if (!['CHAP_N', 'CHAP_R', 'CHAP_I', 'CHAP_C'].includes(key)) return { ok: false, reason: `unexpected ${key}` };
    }
    const name = keys.get('CHAP_N');
    const r = keys.get('CHAP_R');
    if (name === undefined || r === undefined) return { ok: false, reason: 'CHAP_N and CHAP_R required' };
    const received = decodeOrNull(r, MAX_INITIATOR_CHALLENGE_BYTES);
    if (received === null) return { ok: false, reason: 'malformed CHAP_R' };
    const expected = chapResponse(this.algorithm, this.id, secretBytes(this.config.secret), this.challenge);
    // Length first: timingSafeEqual requires equal lengths, and a digest's length is no secret.
    const responseOk = received.length === expected.length && timingSafeEqual(received, expected);
    if (name !== this.config.user || !responseOk) return { ok: false, reason: 'CHAP authentication failed' };
    const mutual = this.mutualResponse(keys);
    if (!mutual.ok) return mutual;
    this.state = 'done';
    return mutual;
  }

  /** The initiator's challenge to us, answered only after it passed ours. */
  private mutualResponse(keys: ReadonlyMap<string, string>): ChapStep {
    const idText = keys.get('CHAP_I');
    const challengeText = keys.get('CHAP_C');
    if (idText === undefined && challengeText === undefined) return { ok: true, response: [], done: true };
    if (idText === undefined || challengeText === undefined) return { ok: false, reason: 'mutual CHAP needs both CHAP_I and CHAP_C' };
    const { mutualUser, mutualSecret } = this.config;
    if (mutualUser === undefined || mutualSecret === undefined) return { ok: false, reason: 'mutual CHAP requested but not configured' };
    const secret = secretBytes(mutualSecret);
    if (secret.equals(secretBytes(this.config.secret))) return { ok: false, reason: 'mutual CHAP secret equals the initiator secret' };
    const id = parseNumber(idText);
    if (id === null || id > 255) return { ok: false, reason: 'bad CHAP_I' };
    const challenge = decodeOrNull(challengeText, MAX_INITIATOR_CHALLENGE_BYTES);
    if (challenge === null || challenge.length === 0) return { ok: false, reason: 'bad CHAP_C (1..1024 bytes)' };
    if (challenge.equals(this.challenge)) return { ok: false, reason: 'initiator reflected our CHAP challenge' };
    const response = chapResponse(this.algorithm, id, secret, challenge);
    return {
      ok: true,
      done: true,
      response: [
        ['CHAP_N', mutualUser],
        ['CHAP_R', encodeHex(response)],
      ],
    };
  }
}

function decodeOrNull(value: string, maxBytes: number): Buffer | null {
  try {
    return decodeBinary(value, maxBytes);
  } catch (err) {
    if (err instanceof TesseraError) return null;
    throw err;
  }
}
