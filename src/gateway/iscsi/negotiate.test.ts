// Table tests of operational key negotiation (RFC 7143 §6.2 and §13): every key's
// result function, range and default, Irrelevant, NotUnderstood, Reject, repeated
// keys, and the MaxRecvDataSegmentLength declarations.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Negotiator, defaultSessionParams, defaultTargetLimits } from './negotiate.js';
import type { NegotiatorOptions, SessionParams, TargetLimits } from './negotiate.js';

const NORMAL: NegotiatorOptions = { sessionType: 'Normal', leadingConnection: true };

function negotiator(limits: Partial<TargetLimits> = {}, options: NegotiatorOptions = NORMAL): Negotiator {
  return new Negotiator({ ...defaultTargetLimits(), ...limits }, options);
}

/** The answer to one offered key (our MaxRecvDataSegmentLength declaration left out). */
function answer(n: Negotiator, key: string, value: string): string | undefined {
  const { response, errors } = n.negotiate([[key, value]], 'operational');
  assert.deepEqual(errors, []);
  const answers = response.filter(([k]) => k === key && !(k === 'MaxRecvDataSegmentLength'));
  assert.ok(answers.length <= 1);
  return answers[0]?.[1];
}

interface Row {
  key: string;
  offer: string;
  /** Our limits for this row. */
  limits?: Partial<TargetLimits>;
  want: string;
  /** The resulting field and value, if the key was negotiated. */
  field?: keyof SessionParams;
  value?: number | boolean;
  rfc: string;
}

const ROWS: Row[] = [
  // List negotiation: the first value in the initiator's order that we accept (§6.2.1, §13.1).
  { key: 'HeaderDigest', offer: 'CRC32C,None', want: 'CRC32C', field: 'headerDigest', value: true, rfc: '§13.1' },
  { key: 'HeaderDigest', offer: 'None,CRC32C', want: 'None', field: 'headerDigest', value: false, rfc: '§13.1' },
  { key: 'DataDigest', offer: 'CRC32C', limits: { digests: ['None'] }, want: 'Reject', rfc: '§6.2.1 no common value' },
  { key: 'DataDigest', offer: 'Foo,CRC32C', want: 'CRC32C', field: 'dataDigest', value: true, rfc: '§6.2.1 unknown values skipped' },
  { key: 'DataDigest', offer: 'None,,CRC32C', want: 'Reject', rfc: '§6.2.1 empty list value' },
  // min (§13.2, §13.13, §13.14, §13.16, §13.17, §13.20)
  { key: 'MaxConnections', offer: '16', want: '4', field: 'maxConnections', value: 4, rfc: '§13.2 min' },
  { key: 'MaxConnections', offer: '1', want: '1', field: 'maxConnections', value: 1, rfc: '§13.2 min' },
  { key: 'MaxConnections', offer: '0', want: 'Reject', rfc: '§13.2 range 1..65535' },
  { key: 'MaxConnections', offer: '65536', want: 'Reject', rfc: '§13.2 range 1..65535' },
  { key: 'MaxBurstLength', offer: '16776192', want: '1048576', field: 'maxBurstLength', value: 1048576, rfc: '§13.13 min' },
  { key: 'MaxBurstLength', offer: '262144', want: '262144', field: 'maxBurstLength', value: 262144, rfc: '§13.13 min' },
  { key: 'MaxBurstLength', offer: '511', want: 'Reject', rfc: '§13.13 range 512..2^24-1' },
  { key: 'MaxBurstLength', offer: '16777216', want: 'Reject', rfc: '§13.13 range 512..2^24-1' },
  { key: 'MaxBurstLength', offer: 'lots', want: 'Reject', rfc: '§6.1 numerical value' },
  { key: 'MaxBurstLength', offer: '0x40000', want: '262144', field: 'maxBurstLength', value: 262144, rfc: '§6.1 hex numerical value' },
  { key: 'FirstBurstLength', offer: '262144', want: '65536', field: 'firstBurstLength', value: 65536, rfc: '§13.14 min' },
  { key: 'FirstBurstLength', offer: '4096', want: '4096', field: 'firstBurstLength', value: 4096, rfc: '§13.14 min' },
  { key: 'FirstBurstLength', offer: '100', want: 'Reject', rfc: '§13.14 range' },
  { key: 'DefaultTime2Retain', offer: '20', want: '0', field: 'defaultTime2Retain', value: 0, rfc: '§13.16 min' },
  { key: 'DefaultTime2Retain', offer: '3601', want: 'Reject', rfc: '§13.16 range 0..3600' },
  { key: 'MaxOutstandingR2T', offer: '1', want: '1', field: 'maxOutstandingR2T', value: 1, rfc: '§13.17 min' },
  { key: 'MaxOutstandingR2T', offer: '64', want: '8', field: 'maxOutstandingR2T', value: 8, rfc: '§13.17 min' },
  { key: 'MaxOutstandingR2T', offer: '0', want: 'Reject', rfc: '§13.17 range 1..65535' },
  { key: 'ErrorRecoveryLevel', offer: '2', want: '0', field: 'errorRecoveryLevel', value: 0, rfc: '§13.20 min' },
  { key: 'ErrorRecoveryLevel', offer: '3', want: 'Reject', rfc: '§13.20 range 0..2' },
  // max (§13.15)
  { key: 'DefaultTime2Wait', offer: '0', want: '2', field: 'defaultTime2Wait', value: 2, rfc: '§13.15 max' },
  { key: 'DefaultTime2Wait', offer: '10', want: '10', field: 'defaultTime2Wait', value: 10, rfc: '§13.15 max' },
  { key: 'DefaultTime2Wait', offer: '-1', want: 'Reject', rfc: '§13.15 range 0..3600' },
  // OR (§13.10, §13.18, §13.19)
  { key: 'InitialR2T', offer: 'No', want: 'Yes', field: 'initialR2T', value: true, rfc: '§13.10 OR, we prefer Yes' },
  { key: 'InitialR2T', offer: 'No', limits: { initialR2T: false }, want: 'No', field: 'initialR2T', value: false, rfc: '§13.10 OR' },
  { key: 'InitialR2T', offer: 'Yes', limits: { initialR2T: false }, want: 'Yes', field: 'initialR2T', value: true, rfc: '§13.10 OR' },
  { key: 'InitialR2T', offer: 'yes', want: 'Reject', rfc: '§6.1 boolean is Yes or No' },
  { key: 'DataPDUInOrder', offer: 'No', want: 'Yes', field: 'dataPduInOrder', value: true, rfc: '§13.18 OR' },
  { key: 'DataSequenceInOrder', offer: 'No', want: 'Yes', field: 'dataSequenceInOrder', value: true, rfc: '§13.19 OR' },
  // AND (§13.11)
  { key: 'ImmediateData', offer: 'Yes', want: 'Yes', field: 'immediateData', value: true, rfc: '§13.11 AND' },
  { key: 'ImmediateData', offer: 'No', want: 'No', field: 'immediateData', value: false, rfc: '§13.11 AND' },
  { key: 'ImmediateData', offer: 'Yes', limits: { immediateData: false }, want: 'No', field: 'immediateData', value: false, rfc: '§13.11 AND' },
  // Unknown and private keys (§6.2, §13.22 (§?)).
  { key: 'X-com.example.Foo', offer: 'bar', want: 'NotUnderstood', rfc: '§6.2 private key' },
  { key: 'X#NodeArchitecture', offer: 'x', want: 'NotUnderstood', rfc: '§6.2 private key' },
  { key: 'NoSuchKey', offer: '1', want: 'NotUnderstood', rfc: '§6.2 unknown key' },
  // Obsolete markers stay off.
  { key: 'IFMarker', offer: 'Yes', want: 'No', rfc: '§13.25 (§?) obsolete' },
  { key: 'OFMarkInt', offer: '1~65535', want: 'Irrelevant', rfc: '§13.25 (§?) obsolete' },
];

test('RFC 7143 §13: every negotiated key answers with its result function, range and default', () => {
  for (const row of ROWS) {
    const n = negotiator(row.limits);
    const label = `${row.key}=${row.offer} (${row.rfc})`;
    assert.equal(answer(n, row.key, row.offer), row.want, label);
    const params = n.result();
    const defaults = defaultSessionParams();
    if (row.field !== undefined) assert.equal(params[row.field], row.value, label);
    else {
      // Reject / NotUnderstood / Irrelevant leave every value at its default.
      const { targetMaxRecvDataSegmentLength: _ours, ...rest } = params;
      const { targetMaxRecvDataSegmentLength: _d, ...restDefaults } = defaults;
      assert.deepEqual(rest, restDefaults, label);
    }
  }
});

test('RFC 7143 §13: keys not offered keep their defaults, not our preferences', () => {
  const n = negotiator({ maxBurstBytes: 4 * 1024 * 1024, maxConnections: 8, initialR2T: false, defaultTime2Retain: 0 });
  const { response } = n.negotiate([], 'operational');
  assert.deepEqual(response, [['MaxRecvDataSegmentLength', '262144']]);
  assert.deepEqual(n.result(), { ...defaultSessionParams(), targetMaxRecvDataSegmentLength: 262144 });
});

test('RFC 7143 §13.12: MaxRecvDataSegmentLength is declared by each side, ours once in the operational stage', () => {
  const n = negotiator({ maxRecvDataSegmentBytes: 131072 });
  const first = n.negotiate([['MaxRecvDataSegmentLength', '65536'], ['HeaderDigest', 'None']], 'operational');
  assert.deepEqual(first.response, [['HeaderDigest', 'None'], ['MaxRecvDataSegmentLength', '131072']]);
  const second = n.negotiate([['DataDigest', 'None']], 'operational');
  assert.deepEqual(second.response, [['DataDigest', 'None']], 'declared once');
  const p = n.result();
  assert.equal(p.initiatorMaxRecvDataSegmentLength, 65536);
  assert.equal(p.targetMaxRecvDataSegmentLength, 131072);
  // Without an operational stage nothing was declared: both stay 8192.
  assert.equal(negotiator().result().targetMaxRecvDataSegmentLength, 8192);
  // A bad declaration is a protocol error, not a Reject next to our own declaration.
  for (const bad of ['511', '16777216', 'big']) {
    assert.equal(negotiator().negotiate([['MaxRecvDataSegmentLength', bad]], 'operational').errors.length, 1, bad);
  }
});

test('RFC 7143 §13.14: FirstBurstLength is Irrelevant with InitialR2T=Yes and ImmediateData=No, whatever the order', () => {
  const n = negotiator();
  const { response } = n.negotiate(
    [
      ['FirstBurstLength', '8192'],
      ['InitialR2T', 'Yes'],
      ['ImmediateData', 'No'],
    ],
    'operational',
  );
  assert.deepEqual(response.slice(0, 3), [
    ['FirstBurstLength', 'Irrelevant'],
    ['InitialR2T', 'Yes'],
    ['ImmediateData', 'No'],
  ]);
  assert.equal(n.result().firstBurstLength, 65536, 'default kept');
  // ImmediateData=Yes keeps it relevant; it never exceeds MaxBurstLength (§13.14).
  const m = negotiator({ firstBurstBytes: 262144, maxBurstBytes: 1048576 });
  const r = m.negotiate([['FirstBurstLength', '200000'], ['MaxBurstLength', '100000']], 'operational');
  assert.deepEqual(r.response.slice(0, 2), [['FirstBurstLength', '100000'], ['MaxBurstLength', '100000']]);
  assert.equal(m.result().firstBurstLength, 100000);
});

test('RFC 7143 §6.2: a key offered twice (in one text or again later) is a protocol error', () => {
  const n = negotiator();
  assert.equal(n.negotiate([['MaxBurstLength', '512'], ['MaxBurstLength', '1024']], 'operational').errors.length, 1);
  const m = negotiator();
  assert.deepEqual(m.negotiate([['MaxBurstLength', '8192']], 'operational').errors, []);
  assert.equal(m.negotiate([['MaxBurstLength', '8192']], 'operational').errors.length, 1);
  // A Rejected or NotUnderstood key was not negotiated: offering it again is allowed.
  const k = negotiator();
  k.negotiate([['MaxBurstLength', '1']], 'operational');
  assert.deepEqual(k.negotiate([['MaxBurstLength', '4096']], 'operational').errors, []);
  assert.equal(k.result().maxBurstLength, 4096);
});

test('Discovery sessions: keys about SCSI data transfer are Irrelevant; digests and time values are negotiated', () => {
  const n = negotiator({}, { sessionType: 'Discovery', leadingConnection: true });
  const { response } = n.negotiate(
    [
      ['MaxConnections', '2'],
      ['InitialR2T', 'No'],
      ['ImmediateData', 'Yes'],
      ['MaxBurstLength', '8192'],
      ['FirstBurstLength', '8192'],
      ['MaxOutstandingR2T', '2'],
      ['DataPDUInOrder', 'Yes'],
      ['DataSequenceInOrder', 'Yes'],
      ['HeaderDigest', 'CRC32C'],
      ['DefaultTime2Wait', '3'],
      ['ErrorRecoveryLevel', '0'],
    ],
    'operational',
  );
  const answers = new Map(response);
  for (const key of ['MaxConnections', 'InitialR2T', 'ImmediateData', 'MaxBurstLength', 'FirstBurstLength', 'MaxOutstandingR2T', 'DataPDUInOrder', 'DataSequenceInOrder']) {
    assert.equal(answers.get(key), 'Irrelevant', key);
  }
  assert.equal(answers.get('HeaderDigest'), 'CRC32C');
  assert.equal(answers.get('DefaultTime2Wait'), '3');
  assert.equal(answers.get('ErrorRecoveryLevel'), '0');
  assert.equal(answers.get('MaxRecvDataSegmentLength'), '262144');
});

test('a connection joining a session (TSIH ≠ 0): leading-only keys are Irrelevant, per-connection keys negotiated', () => {
  const n = negotiator({}, { sessionType: 'Normal', leadingConnection: false });
  const { response } = n.negotiate([['MaxBurstLength', '8192'], ['DataDigest', 'CRC32C']], 'operational');
  assert.deepEqual(response.slice(0, 2), [['MaxBurstLength', 'Irrelevant'], ['DataDigest', 'CRC32C']]);
});

test('security stage: operational keys are answered Irrelevant and may be offered again later', () => {
  const n = negotiator();
  const sec = n.negotiate([['MaxBurstLength', '8192'], ['X-Foo', '1']], 'security');
  assert.deepEqual(sec, { response: [['MaxBurstLength', 'Irrelevant'], ['X-Foo', 'NotUnderstood']], errors: [] });
  const op = n.negotiate([['MaxBurstLength', '8192']], 'operational');
  assert.deepEqual(op.errors, []);
  assert.equal(n.result().maxBurstLength, 8192);
});
