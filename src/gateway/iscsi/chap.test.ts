// Tests of target-side CHAP (RFC 7143 §12.1.3, RFC 1994 §4.1). Expected responses
// are computed here from RFC 1994's definition, MD5(identifier ‖ secret ‖ challenge),
// with node:crypto, not with the code under test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { isTesseraError } from '../../stdx/errors.js';
import { Prng } from '../../stdx/prng.js';
import { CHAP_MD5, CHAP_SHA256, ChapAuthenticator, validateChapConfig, validateChapSecret } from './chap.js';
import type { ChapConfig, ChapStep } from './chap.js';
import { decodeBinary } from './text.js';

const CONFIG: ChapConfig = { user: 'alice', secret: 'alice-secret-123' };
const MUTUAL: ChapConfig = { ...CONFIG, mutualUser: 'tgt', mutualSecret: 'target-secret-456' };

/** Deterministic injected randomness: a seeded PRNG. */
function rng(seed: number): (n: number) => Buffer {
  const prng = new Prng(seed);
  return (n) => {
    const b = Buffer.alloc(n);
    prng.fill(b);
    return b;
  };
}

function rfc1994(hash: string, id: number, secret: string, challenge: Buffer): Buffer {
  return createHash(hash).update(Buffer.of(id)).update(Buffer.from(secret)).update(challenge).digest();
}

function ok(step: ChapStep): { response: Array<[string, string]>; done: boolean } {
  assert.ok(step.ok, step.ok ? '' : step.reason);
  return step;
}

/** Starts an exchange; returns the authenticator and our CHAP_I / CHAP_C. */
function start(config: ChapConfig, offer = '5', seed = 1): { chap: ChapAuthenticator; id: number; challenge: Buffer; alg: string } {
  const chap = new ChapAuthenticator(config, rng(seed));
  const { response } = ok(chap.handle(new Map([['CHAP_A', offer]])));
  const m = new Map(response);
  const challengeText = m.get('CHAP_C') as string;
  assert.match(challengeText, /^0x[0-9a-f]+$/, 'we send lowercase hex');
  return { chap, id: Number(m.get('CHAP_I')), challenge: decodeBinary(challengeText), alg: m.get('CHAP_A') as string };
}

test('RFC 1994 §4.1 / RFC 7143 §12.1.3: a correct MD5 response passes', () => {
  const { chap, id, challenge, alg } = start(CONFIG);
  assert.equal(alg, '5');
  assert.ok(id >= 0 && id <= 255);
  assert.ok(challenge.length >= 16);
  assert.equal(chap.inProgress, true);
  const r = rfc1994('md5', id, 'alice-secret-123', challenge);
  const step = ok(chap.handle(new Map([['CHAP_N', 'alice'], ['CHAP_R', `0x${r.toString('hex')}`]])));
  assert.deepEqual(step, { ok: true, response: [], done: true });
  assert.equal(chap.done, true);
});

test('RFC 7143 §6.1: CHAP_R in base64 (0b) is accepted too', () => {
  const { chap, id, challenge } = start(CONFIG);
  const r = rfc1994('md5', id, 'alice-secret-123', challenge);
  ok(chap.handle(new Map([['CHAP_N', 'alice'], ['CHAP_R', `0b${r.toString('base64')}`]])));
});

test('SHA-256 (CHAP_A 7, as libiscsi numbers it): the initiator order picks the algorithm', () => {
  const { chap, id, challenge, alg } = start(CONFIG, '7,5');
  assert.equal(alg, String(CHAP_SHA256));
  assert.ok(challenge.length >= 32, 'challenge at least as long as the digest');
  const r = rfc1994('sha256', id, 'alice-secret-123', challenge);
  ok(chap.handle(new Map([['CHAP_N', 'alice'], ['CHAP_R', `0x${r.toString('hex')}`]])));
  assert.equal(start(CONFIG, '5,7').alg, String(CHAP_MD5));
  const only = new ChapAuthenticator(CONFIG, rng(1), { algorithms: [CHAP_MD5] });
  assert.equal(new Map(ok(only.handle(new Map([['CHAP_A', '7,5']]))).response).get('CHAP_A'), '5');
  const none = new ChapAuthenticator(CONFIG, rng(1), { algorithms: [CHAP_MD5] });
  assert.equal(none.handle(new Map([['CHAP_A', '6,7']])).ok, false, 'no common algorithm');
});

test('RFC 7143 §12.1.3: wrong response, wrong length, wrong user or missing keys fail', () => {
  const cases: Array<[string, (id: number, c: Buffer) => Map<string, string>]> = [
    ['wrong secret', (id, c) => new Map([['CHAP_N', 'alice'], ['CHAP_R', `0x${rfc1994('md5', id, 'not-the-secret!!', c).toString('hex')}`]])],
    ['wrong id', (id, c) => new Map([['CHAP_N', 'alice'], ['CHAP_R', `0x${rfc1994('md5', (id + 1) & 0xff, 'alice-secret-123', c).toString('hex')}`]])],
    ['short response', (id, c) => new Map([['CHAP_N', 'alice'], ['CHAP_R', `0x${rfc1994('md5', id, 'alice-secret-123', c).subarray(0, 15).toString('hex')}`]])],
    ['wrong user', (id, c) => new Map([['CHAP_N', 'mallory'], ['CHAP_R', `0x${rfc1994('md5', id, 'alice-secret-123', c).toString('hex')}`]])],
    ['no CHAP_N', (id, c) => new Map([['CHAP_R', `0x${rfc1994('md5', id, 'alice-secret-123', c).toString('hex')}`]])],
    ['malformed CHAP_R', () => new Map([['CHAP_N', 'alice'], ['CHAP_R', 'hello']])],
  ];
  for (const [what, keys] of cases) {
    const { chap, id, challenge } = start(CONFIG);
    const step = chap.handle(keys(id, challenge));
    assert.equal(step.ok, false, what);
    assert.equal(chap.done, false, what);
    // A failure is final: even the right answer afterwards is refused.
    const r = rfc1994('md5', id, 'alice-secret-123', challenge);
    assert.equal(chap.handle(new Map([['CHAP_N', 'alice'], ['CHAP_R', `0x${r.toString('hex')}`]])).ok, false, what);
  }
});

test('a fresh challenge and identifier for every login (injected randomness)', () => {
  const random = rng(42);
  const a = new ChapAuthenticator(CONFIG, random);
  const b = new ChapAuthenticator(CONFIG, random);
  const ca = new Map(ok(a.handle(new Map([['CHAP_A', '5']]))).response).get('CHAP_C');
  const cb = new Map(ok(b.handle(new Map([['CHAP_A', '5']]))).response).get('CHAP_C');
  assert.notEqual(ca, cb);
  // The response to one login's challenge does not authenticate the other.
  const first = start(CONFIG, '5', 7);
  const second = start(CONFIG, '5', 8);
  const r = rfc1994('md5', first.id, 'alice-secret-123', first.challenge);
  assert.equal(second.chap.handle(new Map([['CHAP_N', 'alice'], ['CHAP_R', `0x${r.toString('hex')}`]])).ok, false);
});

test('RFC 7143 §12.1.3: mutual CHAP answers H(id ‖ mutualSecret ‖ initiator challenge) as CHAP_N + CHAP_R', () => {
  const { chap, id, challenge } = start(MUTUAL);
  const theirChallenge = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
  const step = ok(
    chap.handle(
      new Map([
        ['CHAP_N', 'alice'],
        ['CHAP_R', `0x${rfc1994('md5', id, 'alice-secret-123', challenge).toString('hex')}`],
        ['CHAP_I', '77'],
        ['CHAP_C', `0b${theirChallenge.toString('base64')}`],
      ]),
    ),
  );
  assert.deepEqual(step.response, [
    ['CHAP_N', 'tgt'],
    ['CHAP_R', `0x${rfc1994('md5', 77, 'target-secret-456', theirChallenge).toString('hex')}`],
  ]);
  assert.equal(step.done, true);
});

test('mutual CHAP refusals: reflected challenge, bad challenge length, not configured, same secret, forward failure', () => {
  const forward = (id: number, c: Buffer): [string, string][] => [
    ['CHAP_N', 'alice'],
    ['CHAP_R', `0x${rfc1994('md5', id, 'alice-secret-123', c).toString('hex')}`],
  ];
  const refuse = (config: ChapConfig, extra: (c: Buffer) => [string, string][], what: string, forwardOk = true): void => {
    const { chap, id, challenge } = start(config);
    const keys = forwardOk ? forward(id, challenge) : [['CHAP_N', 'alice'], ['CHAP_R', '0x00']] as [string, string][];
    const step = chap.handle(new Map([...keys, ...extra(challenge)]));
    assert.equal(step.ok, false, what);
  };
  refuse(MUTUAL, (c) => [['CHAP_I', '1'], ['CHAP_C', `0x${c.toString('hex')}`]], 'reflected challenge');
  refuse(MUTUAL, (c) => [['CHAP_I', '1'], ['CHAP_C', `0b${c.toString('base64')}`]], 'reflected challenge in base64');
  refuse(MUTUAL, () => [['CHAP_I', '1'], ['CHAP_C', `0x${'ab'.repeat(1025)}`]], 'challenge over 1024 bytes');
  refuse(MUTUAL, () => [['CHAP_I', '1'], ['CHAP_C', '0x']], 'empty challenge');
  refuse(MUTUAL, () => [['CHAP_I', '256'], ['CHAP_C', '0x0102']], 'CHAP_I over 255');
  refuse(MUTUAL, () => [['CHAP_C', '0x0102']], 'CHAP_C without CHAP_I');
  refuse(CONFIG, () => [['CHAP_I', '1'], ['CHAP_C', '0x0102']], 'mutual not configured');
  refuse({ ...MUTUAL, mutualSecret: MUTUAL.secret }, () => [['CHAP_I', '1'], ['CHAP_C', '0x0102']], 'same secret both ways');
  refuse(MUTUAL, () => [['CHAP_I', '1'], ['CHAP_C', '0x0102']], 'no answer before the initiator passed', false);
  // 1024 bytes is still accepted.
  const { chap, id, challenge } = start(MUTUAL);
  assert.equal(chap.handle(new Map([...forward(id, challenge), ['CHAP_I', '1'], ['CHAP_C', `0x${'ab'.repeat(1024)}`]])).ok, true);
});

test('configuration: secrets of 12..255 bytes; mutual secret must differ', () => {
  const invalid = (f: () => void): void => assert.throws(f, (e: unknown) => isTesseraError(e, 'ERR_INVALID'));
  invalid(() => validateChapSecret('short-11byt'));
  invalid(() => validateChapSecret(''));
  invalid(() => validateChapSecret('x'.repeat(256)));
  validateChapSecret('twelve-bytes');
  validateChapSecret(Buffer.alloc(255, 1));
  validateChapConfig(MUTUAL);
  invalid(() => validateChapConfig({ ...MUTUAL, mutualSecret: MUTUAL.secret }));
  invalid(() => validateChapConfig({ user: 'a', secret: 'twelve-bytes', mutualUser: 'b' }));
  invalid(() => validateChapConfig({ user: '', secret: 'twelve-bytes' }));
});
