// Tests of the login state machine (RFC 7143 §6.3, §11.12, §11.13) and the
// SendTargets answer (§13.3): whole logins with and without CHAP, discovery,
// every failure status, C-bit text, and a seeded fuzz of request sequences that
// must only ever produce Login Responses. Replay with TESSERA_SEED=<seed>.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Prng, seedFromEnv } from '../../stdx/prng.js';
import { defaultTargetLimits } from './negotiate.js';
import { LoginMachine, LoginStatus, sendTargetsResponse } from './login.js';
import type { LoginContext, LoginStep, LoginTarget, LoginTargets } from './login.js';
import type { LoginRequestPdu } from './pdu-types.js';
import { decodeBinary, encodeTextKeys, parseTextKeys } from './text.js';

const INITIATOR = 'iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test';
const OPEN = 'iqn.2024-01.org.tessera:open';
const SECURE = 'iqn.2024-01.org.tessera:secure';
const PRIVATE = 'iqn.2024-01.org.tessera:private';

function target(name: string, extra: Partial<LoginTarget> = {}): LoginTarget {
  return {
    name,
    allowInitiator: () => true,
    chap: null,
    portals: [
      { address: '10.0.0.1:3260', tpgt: 1 },
      { address: '[fd00::2]:3260', tpgt: 2 },
    ],
    ...extra,
  };
}

const TARGETS: LoginTarget[] = [
  target(OPEN, { alias: 'open disk' }),
  target(SECURE, { chap: { user: 'alice', secret: 'alice-secret-123', mutualUser: 'tgt', mutualSecret: 'target-secret-456' } }),
  target(PRIVATE, { allowInitiator: (n) => n === 'iqn.2024-01.org.example:only' }),
];

const targets: LoginTargets = {
  find: (name) => TARGETS.find((t) => t.name === name) ?? null,
  listFor: (initiator) => TARGETS.filter((t) => t.allowInitiator(initiator)),
};

function context(seed = 1, extra: Partial<LoginContext> = {}): LoginContext {
  const prng = new Prng(seed);
  return {
    portal: { address: '10.0.0.1:3260', tpgt: 1 },
    targetLimits: defaultTargetLimits(),
    targets,
    randomBytes: (n) => {
      const b = Buffer.alloc(n);
      prng.fill(b);
      return b;
    },
    ...extra,
  };
}

const ISID = Buffer.from([0x80, 0x12, 0x34, 0x56, 0x78, 0x9a]);

function req(fields: Partial<LoginRequestPdu> = {}): LoginRequestPdu {
  return { transit: false, cont: false, csg: 0, nsg: 0, versionMax: 0, versionMin: 0, isid: ISID, tsih: 0, itt: 7, cid: 1, cmdSN: 1, expStatSN: 0, ...fields };
}

function send(m: LoginMachine, fields: Partial<LoginRequestPdu>, pairs: Array<[string, string]> = []): LoginStep & { keys: Map<string, string> } {
  const step = m.handle(req(fields), encodeTextKeys(pairs));
  return { ...step, keys: new Map(parseTextKeys(step.data)) };
}

function assertStatus(step: LoginStep, status: readonly [number, number], what: string): void {
  assert.equal(step.outcome, 'fail', `${what}: ${step.reason ?? ''}`);
  assert.deepEqual([step.response.statusClass, step.response.statusDetail], [...status], `${what}: ${step.reason ?? ''}`);
  assert.equal(step.response.transit, false);
  assert.equal(step.data.length, 0);
}

const SEC_TO_OP = { csg: 0, nsg: 1, transit: true };
const OP_TO_FFP = { csg: 1, nsg: 3, transit: true };

test('RFC 7143 §6.3: full login without authentication: security → operational → full feature', () => {
  const m = new LoginMachine(context());
  const sec = send(m, SEC_TO_OP, [
    ['InitiatorName', INITIATOR],
    ['InitiatorAlias', 'host1'],
    ['TargetName', OPEN],
    ['SessionType', 'Normal'],
    ['AuthMethod', 'CHAP,None'],
  ]);
  assert.equal(sec.outcome, 'continue');
  assert.deepEqual([sec.response.statusClass, sec.response.statusDetail], [0, 0]);
  assert.deepEqual({ t: sec.response.transit, c: sec.response.cont, csg: sec.response.csg, nsg: sec.response.nsg }, { t: true, c: false, csg: 0, nsg: 1 });
  assert.equal(sec.response.itt, 7);
  assert.deepEqual(sec.response.isid, ISID);
  assert.equal(sec.response.versionActive, 0);
  // §13.9: TargetPortalGroupTag in the first response of a Normal session.
  assert.equal(sec.keys.get('TargetPortalGroupTag'), '1');
  assert.equal(sec.keys.get('TargetAlias'), 'open disk');
  assert.equal(sec.keys.get('AuthMethod'), 'None');

  const op = send(m, OP_TO_FFP, [
    ['HeaderDigest', 'CRC32C,None'],
    ['DataDigest', 'None'],
    ['MaxRecvDataSegmentLength', '131072'],
    ['MaxBurstLength', '262144'],
    ['FirstBurstLength', '65536'],
    ['InitialR2T', 'Yes'],
    ['ImmediateData', 'Yes'],
    ['MaxOutstandingR2T', '1'],
    ['ErrorRecoveryLevel', '0'],
  ]);
  assert.equal(op.outcome, 'complete', op.reason);
  assert.deepEqual({ t: op.response.transit, csg: op.response.csg, nsg: op.response.nsg }, { t: true, csg: 1, nsg: 3 });
  assert.equal(op.keys.has('TargetPortalGroupTag'), false, 'declared once');
  assert.equal(op.keys.get('HeaderDigest'), 'CRC32C');
  assert.equal(op.keys.get('MaxRecvDataSegmentLength'), '262144');
  const r = op.result;
  assert.ok(r);
  assert.equal(r.sessionType, 'Normal');
  assert.equal(r.initiatorName, INITIATOR);
  assert.equal(r.initiatorAlias, 'host1');
  assert.equal(r.targetName, OPEN);
  assert.deepEqual(r.isid, ISID);
  assert.equal(r.tsih, 0);
  assert.equal(r.cid, 1);
  assert.equal(r.params.headerDigest, true);
  assert.equal(r.params.initiatorMaxRecvDataSegmentLength, 131072);
  assert.equal(r.params.targetMaxRecvDataSegmentLength, 262144);
  assert.equal(r.params.maxOutstandingR2T, 1);
  // §6.3: nothing after the final response.
  assertStatus(send(m, OP_TO_FFP), LoginStatus.INVALID_DURING_LOGIN, 'request after completion');
});

test('RFC 7143 §6.3: without authentication the initiator may start in the operational stage', () => {
  const m = new LoginMachine(context());
  const op = send(m, OP_TO_FFP, [
    ['InitiatorName', INITIATOR],
    ['TargetName', OPEN],
    ['MaxRecvDataSegmentLength', '65536'],
  ]);
  assert.equal(op.outcome, 'complete', op.reason);
  assert.equal(op.keys.get('TargetPortalGroupTag'), '1');
  assert.equal(op.keys.get('MaxRecvDataSegmentLength'), '262144');
  assert.equal(op.result?.params.initiatorMaxRecvDataSegmentLength, 65536);
});

test('RFC 7143 §6.3: security straight to full feature keeps the default data segment lengths', () => {
  const m = new LoginMachine(context());
  const step = send(m, { csg: 0, nsg: 3, transit: true }, [['InitiatorName', INITIATOR], ['TargetName', OPEN], ['AuthMethod', 'None']]);
  assert.equal(step.outcome, 'complete', step.reason);
  assert.equal(step.result?.params.targetMaxRecvDataSegmentLength, 8192);
  assert.equal(step.result?.params.initiatorMaxRecvDataSegmentLength, 8192);
});

test('RFC 7143 §6.3: T = 0 keeps the stage, and we answer T only when the initiator sets it', () => {
  const m = new LoginMachine(context());
  const a = send(m, { csg: 0 }, [['InitiatorName', INITIATOR], ['TargetName', OPEN], ['AuthMethod', 'None']]);
  assert.equal(a.outcome, 'continue');
  assert.equal(a.response.transit, false);
  const b = send(m, SEC_TO_OP);
  assert.equal(b.response.transit, true);
  assert.equal(b.response.nsg, 1);
  const c = send(m, { csg: 1 }, [['MaxBurstLength', '65536']]);
  assert.equal(c.response.transit, false);
  assert.equal(c.keys.get('MaxBurstLength'), '65536');
  const d = send(m, OP_TO_FFP);
  assert.equal(d.outcome, 'complete');
  assert.equal(d.result?.params.maxBurstLength, 65536);
});

test('discovery login (RFC 7143 §13.21): no TargetName, no TPGT, SCSI keys Irrelevant; SendTargets=All', () => {
  const m = new LoginMachine(context());
  const sec = send(m, SEC_TO_OP, [['InitiatorName', INITIATOR], ['SessionType', 'Discovery'], ['AuthMethod', 'None']]);
  assert.equal(sec.outcome, 'continue', sec.reason);
  assert.equal(sec.keys.has('TargetPortalGroupTag'), false);
  const op = send(m, OP_TO_FFP, [['MaxBurstLength', '8192'], ['HeaderDigest', 'None']]);
  assert.equal(op.outcome, 'complete', op.reason);
  assert.equal(op.keys.get('MaxBurstLength'), 'Irrelevant');
  assert.equal(op.result?.sessionType, 'Discovery');
  assert.equal(op.result?.targetName, null);
  // Discovery ignores target CHAP: SECURE is listed, PRIVATE (ACL) is not.
  assert.deepEqual(sendTargetsResponse('All', INITIATOR, 'Discovery', null, targets), [
    ['TargetName', OPEN],
    ['TargetAddress', '10.0.0.1:3260,1'],
    ['TargetAddress', '[fd00::2]:3260,2'],
    ['TargetName', SECURE],
    ['TargetAddress', '10.0.0.1:3260,1'],
    ['TargetAddress', '[fd00::2]:3260,2'],
  ]);
});

test('RFC 7143 §13.3: SendTargets values in discovery and normal sessions', () => {
  const open = targets.find(OPEN);
  assert.deepEqual(sendTargetsResponse(OPEN, INITIATOR, 'Discovery', null, targets).map(([k]) => k), ['TargetName', 'TargetAddress', 'TargetAddress']);
  assert.deepEqual(sendTargetsResponse(PRIVATE, INITIATOR, 'Discovery', null, targets), [], 'ACL hides a named target');
  assert.deepEqual(sendTargetsResponse('iqn.none', INITIATOR, 'Discovery', null, targets), []);
  assert.deepEqual(sendTargetsResponse('', INITIATOR, 'Normal', open, targets)[0], ['TargetName', OPEN]);
  assert.deepEqual(sendTargetsResponse(OPEN, INITIATOR, 'Normal', open, targets)[0], ['TargetName', OPEN]);
  assert.deepEqual(sendTargetsResponse(SECURE, INITIATOR, 'Normal', open, targets), []);
  assert.deepEqual(sendTargetsResponse('All', INITIATOR, 'Normal', open, targets), [['SendTargets', 'Reject']]);
  // A lax listFor does not leak targets past the ACL.
  const lax: LoginTargets = { find: targets.find, listFor: () => TARGETS };
  assert.equal(sendTargetsResponse('All', INITIATOR, 'Discovery', null, lax).some(([, v]) => v === PRIVATE), false);
});

function md5(id: number, secret: string, challenge: Buffer): string {
  return `0x${createHash('md5').update(Buffer.of(id)).update(secret).update(challenge).digest('hex')}`;
}

test('RFC 7143 §12.1.3: CHAP login in several steps, mutual, then operational', () => {
  const m = new LoginMachine(context(5));
  const a = send(m, SEC_TO_OP, [['InitiatorName', INITIATOR], ['TargetName', SECURE], ['AuthMethod', 'CHAP,None']]);
  assert.equal(a.keys.get('AuthMethod'), 'CHAP');
  assert.equal(a.response.transit, false, 'not before CHAP is done');
  const b = send(m, { csg: 0, nsg: 1, transit: true }, [['CHAP_A', '5']]);
  assert.equal(b.outcome, 'continue', b.reason);
  assert.equal(b.response.transit, false);
  const id = Number(b.keys.get('CHAP_I'));
  const challenge = decodeBinary(b.keys.get('CHAP_C') as string);
  const mine = Buffer.from('0102030405060708090a0b0c0d0e0f10', 'hex');
  const c = send(m, SEC_TO_OP, [
    ['CHAP_N', 'alice'],
    ['CHAP_R', md5(id, 'alice-secret-123', challenge)],
    ['CHAP_I', '9'],
    ['CHAP_C', `0x${mine.toString('hex')}`],
  ]);
  assert.equal(c.outcome, 'continue', c.reason);
  assert.equal(c.response.transit, true);
  assert.equal(c.keys.get('CHAP_N'), 'tgt');
  assert.equal(c.keys.get('CHAP_R'), md5(9, 'target-secret-456', mine));
  const d = send(m, OP_TO_FFP, [['ImmediateData', 'No']]);
  assert.equal(d.outcome, 'complete', d.reason);
  assert.equal(d.result?.params.immediateData, false);
});

test('RFC 7143 §11.13.5: CHAP failures are 2/1', () => {
  const ids: Array<[string, string]> = [['InitiatorName', INITIATOR], ['TargetName', SECURE]];
  // Initiator offers only None.
  assertStatus(send(new LoginMachine(context()), SEC_TO_OP, [...ids, ['AuthMethod', 'None']]), LoginStatus.AUTH_FAILED, 'None only');
  // Skips the security stage.
  assertStatus(send(new LoginMachine(context()), OP_TO_FFP, ids), LoginStatus.AUTH_FAILED, 'skipped security');
  // Asks to leave the security stage without any AuthMethod.
  assertStatus(send(new LoginMachine(context()), SEC_TO_OP, ids), LoginStatus.AUTH_FAILED, 'transit without auth');
  // Wrong response.
  const m = new LoginMachine(context());
  send(m, { csg: 0 }, [...ids, ['AuthMethod', 'CHAP']]);
  send(m, { csg: 0 }, [['CHAP_A', '5']]);
  assertStatus(send(m, SEC_TO_OP, [['CHAP_N', 'alice'], ['CHAP_R', `0x${'00'.repeat(16)}`]]), LoginStatus.AUTH_FAILED, 'wrong CHAP_R');
  // Unsupported algorithm.
  const n = new LoginMachine(context());
  send(n, { csg: 0 }, [...ids, ['AuthMethod', 'CHAP']]);
  assertStatus(send(n, { csg: 0 }, [['CHAP_A', '6']]), LoginStatus.AUTH_FAILED, 'CHAP_A 6');
  // No CHAP configured, initiator insists on CHAP.
  assertStatus(send(new LoginMachine(context()), SEC_TO_OP, [['InitiatorName', INITIATOR], ['TargetName', OPEN], ['AuthMethod', 'CHAP']]), LoginStatus.AUTH_FAILED, 'CHAP not configured');
});

test('RFC 7143 §11.13.5: identity and header failures', () => {
  const ids: Array<[string, string]> = [['InitiatorName', INITIATOR], ['TargetName', OPEN]];
  const first = (fields: Partial<LoginRequestPdu>, pairs: Array<[string, string]>): LoginStep => send(new LoginMachine(context()), fields, pairs);
  assertStatus(first(SEC_TO_OP, [['TargetName', OPEN]]), LoginStatus.MISSING_PARAMETER, 'no InitiatorName');
  assertStatus(first(SEC_TO_OP, [['InitiatorName', INITIATOR]]), LoginStatus.MISSING_PARAMETER, 'no TargetName');
  assertStatus(first(SEC_TO_OP, [['InitiatorName', INITIATOR], ['TargetName', 'iqn.2024-01.org.tessera:none']]), LoginStatus.NOT_FOUND, 'unknown target');
  assertStatus(first(SEC_TO_OP, [['InitiatorName', INITIATOR], ['TargetName', PRIVATE]]), LoginStatus.FORBIDDEN, 'ACL');
  assertStatus(first(SEC_TO_OP, [...ids, ['SessionType', 'Mystery']]), LoginStatus.SESSION_TYPE_UNSUPPORTED, 'SessionType');
  assertStatus(first({ ...SEC_TO_OP, versionMin: 1, versionMax: 1 }, ids), LoginStatus.UNSUPPORTED_VERSION, 'version-min 1');
  assertStatus(first({ ...SEC_TO_OP, cont: true }, ids), LoginStatus.INITIATOR_ERROR, 'T and C');
  assertStatus(first({ csg: 0, nsg: 2, transit: true }, ids), LoginStatus.INITIATOR_ERROR, 'NSG 2');
  assertStatus(first({ csg: 1, nsg: 1, transit: true }, ids), LoginStatus.INITIATOR_ERROR, 'NSG not after CSG');
  assertStatus(first({ csg: 3, nsg: 3, transit: true }, ids), LoginStatus.INITIATOR_ERROR, 'CSG 3');
  assertStatus(first({ csg: 2 }, ids), LoginStatus.INITIATOR_ERROR, 'CSG 2');
  assertStatus(first(SEC_TO_OP, [...ids, ['AuthMethod', 'None'], ['AuthMethod', 'None']]), LoginStatus.INITIATOR_ERROR, 'key twice');
  assertStatus(send(new LoginMachine(context()), SEC_TO_OP, []), LoginStatus.MISSING_PARAMETER, 'empty first text');
  const big = new LoginMachine(context());
  assertStatus(big.handle(req(SEC_TO_OP), Buffer.alloc(8193)), LoginStatus.INITIATOR_ERROR, 'data over 8192 bytes');
  const bad = new LoginMachine(context());
  assertStatus(bad.handle(req(SEC_TO_OP), Buffer.from('InitiatorName')), LoginStatus.INITIATOR_ERROR, 'malformed text');
});

test('RFC 7143 §11.12: ISID, TSIH, ITT, CID and version stay fixed; stages only move forward', () => {
  const start = (): LoginMachine => {
    const m = new LoginMachine(context());
    assert.equal(send(m, { csg: 0 }, [['InitiatorName', INITIATOR], ['TargetName', OPEN], ['AuthMethod', 'None']]).outcome, 'continue');
    return m;
  };
  const changes: Array<[string, Partial<LoginRequestPdu>]> = [
    ['ISID', { isid: Buffer.from([0x80, 0, 0, 0, 0, 1]) }],
    ['TSIH', { tsih: 5 }],
    ['ITT', { itt: 8 }],
    ['CID', { cid: 2 }],
    ['version-max', { versionMax: 1 }],
    ['CSG', { csg: 1 }],
  ];
  for (const [what, fields] of changes) assertStatus(send(start(), { csg: 0, ...fields }), LoginStatus.INITIATOR_ERROR, what);
  // Identity keys may be repeated unchanged but not changed.
  const m = start();
  assert.equal(send(m, { csg: 0 }, [['InitiatorName', INITIATOR]]).outcome, 'continue');
  assertStatus(send(m, { csg: 0 }, [['TargetName', SECURE]]), LoginStatus.INITIATOR_ERROR, 'TargetName changed');
  // Back to the security stage after leaving it.
  const n = start();
  send(n, SEC_TO_OP);
  assertStatus(send(n, { csg: 0 }), LoginStatus.INITIATOR_ERROR, 'back to security');
  // Security keys in the operational stage.
  const o = start();
  send(o, SEC_TO_OP);
  assertStatus(send(o, { csg: 1 }, [['AuthMethod', 'None']]), LoginStatus.INITIATOR_ERROR, 'AuthMethod in operational stage');
  // An operational key negotiated twice.
  const p = start();
  send(p, SEC_TO_OP);
  send(p, { csg: 1 }, [['MaxBurstLength', '8192']]);
  assertStatus(send(p, { csg: 1 }, [['MaxBurstLength', '8192']]), LoginStatus.INITIATOR_ERROR, 'renegotiated');
  // After a failure nothing more is accepted.
  assertStatus(send(p, OP_TO_FFP), LoginStatus.INVALID_DURING_LOGIN, 'after failure');
});

test('at most 32 login requests', () => {
  const m = new LoginMachine(context());
  send(m, { csg: 0 }, [['InitiatorName', INITIATOR], ['TargetName', OPEN]]);
  for (let i = 1; i < 32; i++) assert.equal(send(m, { csg: 0 }).outcome, 'continue');
  assertStatus(send(m, { csg: 0 }), LoginStatus.INITIATOR_ERROR, 'request 33');
});

test('RFC 7143 §11.12.2 (§?): text split over C-bit requests gets empty C = 0 answers until complete', () => {
  const m = new LoginMachine(context());
  const text = encodeTextKeys([
    ['InitiatorName', INITIATOR],
    ['TargetName', OPEN],
    ['MaxRecvDataSegmentLength', '65536'],
  ]);
  const parts = [text.subarray(0, 10), text.subarray(10, 40), text.subarray(40)];
  for (const part of parts.slice(0, 2)) {
    const step = m.handle(req({ csg: 1, nsg: 0, cont: true }), part);
    assert.equal(step.outcome, 'continue', step.reason);
    assert.deepEqual({ t: step.response.transit, c: step.response.cont, csg: step.response.csg, len: step.data.length }, { t: false, c: false, csg: 1, len: 0 });
  }
  const last = m.handle(req({ ...OP_TO_FFP }), parts[2]);
  assert.equal(last.outcome, 'complete', last.reason);
  assert.equal(last.result?.params.initiatorMaxRecvDataSegmentLength, 65536);
  assert.equal(new Map(parseTextKeys(last.data)).get('TargetPortalGroupTag'), '1');
});

test('a response that would exceed 8192 bytes fails the login instead of being sent', () => {
  const m = new LoginMachine(context());
  const pairs: Array<[string, string]> = [['InitiatorName', INITIATOR], ['TargetName', OPEN]];
  for (let i = 0; i < 180; i++) pairs.push([`X-${'k'.repeat(35)}${String(i).padStart(3, '0')}`, '1']);
  const data = encodeTextKeys(pairs);
  assert.ok(data.length <= 8192, 'the request itself is within the limit');
  const step = m.handle(req({ csg: 1 }), data);
  assertStatus(step, LoginStatus.INITIATOR_ERROR, 'oversized response');
});

/**
 * A plausible login request sequence (mostly following the stage rules, so
 * some logins complete), with random deviations and mutated bytes.
 */
function randomSequence(prng: Prng): Array<{ req: LoginRequestPdu; data: Buffer }> {
  const name = [OPEN, OPEN, SECURE, PRIVATE, 'iqn.x'][prng.int(5)];
  const identity: Array<[string, string]> = [
    ['InitiatorName', INITIATOR],
    ['TargetName', name],
  ];
  if (prng.chance(0.2)) identity.push(['SessionType', prng.chance(0.8) ? 'Discovery' : 'Bogus']);
  const keyPool: Array<[string, string]> = [
    ['AuthMethod', ['None', 'CHAP,None', 'CHAP', 'X'][prng.int(4)]],
    ['CHAP_A', ['5', '7', '5,7', 'x'][prng.int(4)]],
    ['CHAP_N', 'alice'],
    ['CHAP_R', prng.chance(0.5) ? `0x${'ab'.repeat(16)}` : '0bAAAA'],
    ['CHAP_I', String(prng.int(300))],
    ['CHAP_C', `0x${'cd'.repeat(prng.int(20))}`],
    ['HeaderDigest', 'CRC32C,None'],
    ['MaxRecvDataSegmentLength', String(prng.int(1 << 25))],
    ['MaxBurstLength', String(prng.int(1 << 25))],
    ['FirstBurstLength', String(prng.int(1 << 20))],
    ['InitialR2T', prng.chance(0.5) ? 'Yes' : 'No'],
    ['X-Foo', 'bar'],
  ];
  const out: Array<{ req: LoginRequestPdu; data: Buffer }> = [];
  const count = 1 + prng.int(6);
  let stage = prng.chance(0.5) ? 0 : 1;
  for (let i = 0; i < count; i++) {
    const pairs = [...(i === 0 && prng.chance(0.9) ? identity : []), ...keyPool.filter(() => prng.chance(0.2))];
    let data = encodeTextKeys(pairs);
    if (prng.chance(0.1) && data.length > 0) {
      data = Buffer.from(data);
      for (let e = 0; e < 1 + prng.int(3); e++) data[prng.int(data.length)] = prng.int(256);
    }
    if (prng.chance(0.05)) data = data.subarray(0, prng.int(data.length + 1));
    const wild = prng.chance(0.1);
    const csg = wild ? prng.int(4) : stage;
    const transit = prng.chance(0.6);
    const nsg = wild ? prng.int(4) : stage === 0 && prng.chance(0.6) ? 1 : 3;
    if (transit && !wild) stage = nsg;
    out.push({
      req: req({
        csg,
        nsg,
        transit,
        cont: prng.chance(0.1),
        versionMin: prng.chance(0.03) ? 1 : 0,
        itt: prng.chance(0.03) ? 99 : 7,
        cid: prng.chance(0.03) ? 9 : 1,
        tsih: prng.chance(0.03) ? 3 : 0,
      }),
      data,
    });
  }
  return out;
}

test('fuzz: random and mutated login sequences only ever produce Login Responses', () => {
  const seed = seedFromEnv();
  console.log(`login fuzz seed ${seed} (replay with TESSERA_SEED=${seed})`);
  const prng = new Prng(seed);
  const outcomes = { continue: 0, fail: 0, complete: 0 };
  for (let i = 0; i < 3000; i++) {
    const m = new LoginMachine(context(i));
    for (const { req: r, data } of randomSequence(prng)) {
      let step: LoginStep;
      try {
        step = m.handle(r, data);
      } catch (err) {
        assert.fail(`seed ${seed}, run ${i}: handle threw ${String(err)}`);
      }
      outcomes[step.outcome] += 1;
      const res = step.response;
      assert.ok(!res.transit || r.transit, `seed ${seed}: T only when the initiator set it`);
      assert.ok(!res.transit || res.nsg === r.nsg, `seed ${seed}: our NSG is the initiator's`);
      assert.notEqual(res.nsg, 2, `seed ${seed}: never NSG 2`);
      assert.ok(res.csg === 0 || res.csg === 1, `seed ${seed}: CSG`);
      assert.equal(res.cont, false);
      assert.ok(step.data.length <= 8192, `seed ${seed}: response size`);
      if (step.outcome === 'complete') {
        assert.ok(r.transit && r.nsg === 3 && step.result !== undefined, `seed ${seed}: completion`);
        if (step.result.targetName === SECURE && step.result.sessionType === 'Normal') assert.fail(`seed ${seed}: CHAP target reached without CHAP`);
      }
      if (step.outcome !== 'continue') break;
    }
  }
  console.log(`login fuzz outcomes ${JSON.stringify(outcomes)}`);
  assert.ok(outcomes.fail > 0 && outcomes.continue > 0 && outcomes.complete > 0, `seed ${seed}: ${JSON.stringify(outcomes)}`);
});
