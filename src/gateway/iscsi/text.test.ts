// Tests of the iSCSI text codec (RFC 7143 §6.1): pairs, limits, binary values,
// and the C-bit accumulator; plus a seeded fuzz that parse never throws anything
// but ERR_PROTOCOL. Replay with TESSERA_SEED=<seed>.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TesseraError, isTesseraError } from '../../stdx/errors.js';
import { Prng, seedFromEnv } from '../../stdx/prng.js';
import { MAX_PAIRS, TextAccumulator, decodeBinary, encodeHex, encodeTextKeys, parseTextKeys } from './text.js';

const txt = (s: string): Buffer => Buffer.from(s, 'utf8');
const protocolError = (err: unknown): boolean => isTesseraError(err, 'ERR_PROTOCOL');

test('RFC 7143 §6.1: key=value pairs each end in NUL; order and duplicates are kept', () => {
  const pairs = parseTextKeys(txt('InitiatorName=iqn.2024-01.x:a\0HeaderDigest=CRC32C,None\0X-Foo=\0X-Foo=2\0'));
  assert.deepEqual(pairs, [
    ['InitiatorName', 'iqn.2024-01.x:a'],
    ['HeaderDigest', 'CRC32C,None'],
    ['X-Foo', ''],
    ['X-Foo', '2'],
  ]);
  assert.deepEqual(parseTextKeys(Buffer.alloc(0)), []);
  // Zero padding after the last pair is tolerated.
  assert.deepEqual(parseTextKeys(txt('A=1\0\0\0')), [['A', '1']]);
  // A value may contain '='.
  assert.deepEqual(parseTextKeys(txt('CHAP_R=0bAAA=\0')), [['CHAP_R', '0bAAA=']]);
});

test('encodeTextKeys round-trips through parseTextKeys', () => {
  const pairs: Array<[string, string]> = [
    ['TargetName', 'iqn.2024-01.org.tessera:vol1'],
    ['TargetAddress', '[::1]:3260,1'],
    ['Empty', ''],
  ];
  const bytes = encodeTextKeys(pairs);
  assert.equal(bytes.toString('latin1'), 'TargetName=iqn.2024-01.org.tessera:vol1\0TargetAddress=[::1]:3260,1\0Empty=\0');
  assert.deepEqual(parseTextKeys(bytes), pairs);
});

test('RFC 7143 §6.1: malformed text is ERR_PROTOCOL', () => {
  const cases: Array<[string, Buffer]> = [
    ['no trailing NUL', txt('A=1')],
    ['no =', txt('A\0')],
    ['empty key', txt('=1\0')],
    ['key of 64 bytes', txt(`${'K'.repeat(64)}=1\0`)],
    ['bad key character', txt('A B=1\0')],
    ['value of 8193 bytes', txt(`A=${'v'.repeat(8193)}\0`)],
    ['not UTF-8', Buffer.from([0x41, 0x3d, 0xff, 0xfe, 0x00])],
    ['too many pairs', txt('A=1\0'.repeat(MAX_PAIRS + 1))],
  ];
  for (const [what, data] of cases) assert.throws(() => parseTextKeys(data), protocolError, what);
  // Limits are inclusive.
  assert.equal(parseTextKeys(txt(`${'K'.repeat(63)}=${'v'.repeat(8192)}\0`)).length, 1);
  assert.equal(parseTextKeys(txt('A=1\0'.repeat(MAX_PAIRS))).length, MAX_PAIRS);
  // Binary values may be longer than text values.
  assert.equal(parseTextKeys(txt(`CHAP_C=0x${'ab'.repeat(4096)}\0`))[0][1].length, 2 + 8192);
});

test('RFC 7143 §6.1: binary values in hex (0x) and base64 (0b); we send lowercase hex', () => {
  const bytes = Buffer.from([0x00, 0x01, 0xab, 0xff]);
  assert.deepEqual(decodeBinary('0x0001abff'), bytes);
  assert.deepEqual(decodeBinary('0X0001ABFF'), bytes);
  assert.deepEqual(decodeBinary(`0b${bytes.toString('base64')}`), bytes);
  assert.deepEqual(decodeBinary('0B' + bytes.toString('base64')), bytes);
  assert.deepEqual(decodeBinary('0xabc'), Buffer.from([0x0a, 0xbc]), 'odd digit count: implied leading zero');
  assert.equal(encodeHex(bytes), '0x0001abff');
  for (const bad of ['', '0x', '0b', '1234', '0xzz', '0b####', '0bAAA', 'abc', '0b AAAA']) {
    assert.throws(() => decodeBinary(bad), protocolError, bad);
  }
  assert.throws(() => decodeBinary(`0x${'00'.repeat(17)}`, 16), protocolError, 'over the byte limit');
  assert.equal(decodeBinary(`0x${'00'.repeat(16)}`, 16).length, 16);
});

test('TextAccumulator joins C-bit parts, even a pair split mid-key, and enforces its limit', () => {
  const acc = new TextAccumulator(16);
  assert.equal(acc.push(txt('Initi'), true), null);
  assert.equal(acc.pending, true);
  const whole = acc.push(txt('ator=a\0'), false);
  assert.deepEqual(parseTextKeys(whole as Buffer), [['Initiator', 'a']]);
  assert.equal(acc.pending, false);
  assert.equal(acc.push(txt('1234567890'), true), null);
  assert.throws(() => acc.push(txt('1234567'), true), (e: unknown) => isTesseraError(e, 'ERR_LIMIT'));
  assert.equal(acc.pending, false, 'reset after an overflow');
  assert.equal(acc.push(txt('X=1\0'), false)?.length, 4);
});

test('fuzz: parseTextKeys on mutated texts returns pairs or throws ERR_PROTOCOL', () => {
  const seed = seedFromEnv();
  console.log(`text fuzz seed ${seed} (replay with TESSERA_SEED=${seed})`);
  const prng = new Prng(seed);
  const base = encodeTextKeys([
    ['InitiatorName', 'iqn.1994-05.com.example:host'],
    ['CHAP_C', '0x0123456789abcdef'],
    ['MaxRecvDataSegmentLength', '262144'],
  ]);
  for (let i = 0; i < 3000; i++) {
    const b = Buffer.from(base);
    const edits = 1 + prng.int(4);
    for (let e = 0; e < edits; e++) b[prng.int(b.length)] = prng.chance(0.3) ? [0, 0x3d, 0xff][prng.int(3)] : prng.int(256);
    const cut = prng.chance(0.2) ? b.subarray(0, prng.int(b.length)) : b;
    try {
      for (const [key, value] of parseTextKeys(cut)) {
        assert.ok(key.length > 0 && Buffer.byteLength(key) <= 63, `seed ${seed}`);
        if (value.startsWith('0x') || value.startsWith('0b')) {
          try {
            decodeBinary(value);
          } catch (err) {
            assert.ok(err instanceof TesseraError, `seed ${seed}: ${String(err)}`);
          }
        }
      }
    } catch (err) {
      assert.ok(protocolError(err), `seed ${seed}: ${String(err)}`);
    }
  }
});
