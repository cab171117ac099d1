// Tests of the pure persistent-reservation state machine (pr.ts): one test per rule
// of SPC-4 5.12 and the PERSISTENT RESERVE IN/OUT commands (6.15/6.16; numbers as
// best known for r37, titles given), the access table for every type, golden bytes
// for the PR IN data, REGISTER AND MOVE with iSCSI TransportIDs, events, generation
// counting, truncation, JSON round trips, and a seeded random run of PR OUT from four
// nexuses checking the state's invariants (TESSERA_SEED=<seed> replays a run).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prng, seedFromEnv } from '../../stdx/prng.js';
import { isTesseraError } from '../../stdx/errors.js';
import {
  ASCQ_REGISTRATIONS_PREEMPTED,
  ASCQ_RESERVATIONS_PREEMPTED,
  ASCQ_RESERVATIONS_RELEASED,
  ASC_PR_CHANGED,
  EVENTS_KEPT,
  OPCODE_PR_IN,
  OPCODE_PR_OUT,
  PR_IN_READ_FULL_STATUS,
  PR_IN_READ_KEYS,
  PR_IN_READ_RESERVATION,
  PR_IN_REPORT_CAPABILITIES,
  PR_OUT_CLEAR,
  PR_OUT_PREEMPT,
  PR_OUT_PREEMPT_AND_ABORT,
  PR_OUT_REGISTER,
  PR_OUT_REGISTER_AND_IGNORE,
  PR_OUT_REGISTER_AND_MOVE,
  PR_OUT_RELEASE,
  PR_OUT_RESERVE,
  PR_TYPE_EA,
  PR_TYPE_EA_AR,
  PR_TYPE_EA_RO,
  PR_TYPE_WE,
  PR_TYPE_WE_AR,
  PR_TYPE_WE_RO,
  REGISTRATIONS_MAX,
  checkAccess,
  decodePrState,
  encodeIscsiTransportId,
  findRegistration,
  isAllRegistrants,
  isHolder,
  parseIscsiTransportId,
  powerLoss,
  prIn,
  prOut,
} from './pr.js';
import type { PrEvent, PrOutOutcome, PrState } from './pr.js';
import type { AccessClass, Nexus, ScsiResult } from './types.js';
import { SAM_CHECK_CONDITION, SAM_GOOD, SAM_RESERVATION_CONFLICT } from './types.js';

// ---- fixtures -------------------------------------------------------------------------

const TARGET = 'iqn.2026-01.io.tessera:vol1';
const INITIATOR_1 = 'iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test';
const INITIATOR_2 = 'iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2';

function makeNexus(initiatorName: string, isid: string, tpgt: number, target = TARGET): Nexus {
  const initiatorPort = `${initiatorName},i,0x${isid}`;
  const targetPort = `${target},t,0x${tpgt.toString(16).padStart(4, '0')}`;
  return { key: `${initiatorPort}|${targetPort}`, initiatorPort, initiatorName, targetPort, relativeTargetPortId: tpgt + 1 };
}

// Two initiator ports, each seen through two target ports (gateway 1: TPGT 1, gateway 2: TPGT 2).
const A = makeNexus(INITIATOR_1, '23d000000001', 1);
const B = makeNexus(INITIATOR_2, '23d000000002', 1);
const C = makeNexus(INITIATOR_1, '23d000000001', 2); // A's initiator port, other target port
const D = makeNexus(INITIATOR_2, '23d000000002', 2); // B's initiator port, other target port
const E = makeNexus(INITIATOR_1, '23d000000003', 1); // same initiator name as A, another ISID

const ALL_TYPES = [PR_TYPE_WE, PR_TYPE_EA, PR_TYPE_WE_RO, PR_TYPE_EA_RO, PR_TYPE_WE_AR, PR_TYPE_EA_AR];
const FLAG_APTPL = 0x01;
const FLAG_ALL_TG_PT = 0x04;
const FLAG_SPEC_I_PT = 0x08;

function outCdb(serviceAction: number, type = 0, paramBytes = 24, scope = 0): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = OPCODE_PR_OUT;
  cdb[1] = serviceAction;
  cdb[2] = (scope << 4) | type;
  cdb.writeUInt32BE(paramBytes, 5);
  return cdb;
}

function basicParams(reservationKey: bigint, serviceActionKey: bigint, flags = 0): Buffer {
  const p = Buffer.alloc(24);
  p.writeBigUInt64BE(reservationKey, 0);
  p.writeBigUInt64BE(serviceActionKey, 8);
  p[20] = flags;
  return p;
}

function inCdb(serviceAction: number, allocationBytes = 8192): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = OPCODE_PR_IN;
  cdb[1] = serviceAction;
  cdb.writeUInt16BE(allocationBytes, 7);
  return cdb;
}

function moveParams(rk: bigint, sak: bigint, rtpi: number, tid: Buffer, flags = 0): Buffer {
  const p = Buffer.alloc(24 + tid.length);
  p.writeBigUInt64BE(rk, 0);
  p.writeBigUInt64BE(sak, 8);
  p[17] = flags;
  p.writeUInt16BE(rtpi, 18);
  p.writeUInt32BE(tid.length, 20);
  tid.copy(p, 24);
  return p;
}

interface OutArgs {
  rk?: bigint;
  sak?: bigint;
  type?: number;
  scope?: number;
  flags?: number;
}

/** One LU's PR state, driven through prOut/prIn as the gate would. */
class Lu {
  state: PrState | null = null;

  out(nexus: Nexus, serviceAction: number, a: OutArgs = {}): ScsiResult {
    const cdb = outCdb(serviceAction, a.type ?? 0, 24, a.scope ?? 0);
    return this.raw(nexus, cdb, basicParams(a.rk ?? 0n, a.sak ?? 0n, a.flags ?? 0));
  }

  raw(nexus: Nexus, cdb: Buffer, params: Buffer | null): ScsiResult {
    const outcome = prOut(this.state, nexus, cdb, params);
    if (outcome.state !== null) this.state = outcome.state;
    return outcome.result;
  }

  move(nexus: Nexus, rk: bigint, sak: bigint, rtpi: number, tid: Buffer, flags = 0): ScsiResult {
    const params = moveParams(rk, sak, rtpi, tid, flags);
    return this.raw(nexus, outCdb(PR_OUT_REGISTER_AND_MOVE, 0, params.length), params);
  }

  register(nexus: Nexus, key: bigint, flags = 0): void {
    expectGood(this.out(nexus, PR_OUT_REGISTER_AND_IGNORE, { sak: key, flags }));
  }

  keys(): bigint[] {
    const data = prIn(this.state, A, inCdb(PR_IN_READ_KEYS), 8192).dataIn as Buffer;
    const count = data.readUInt32BE(4) / 8;
    return Array.from({ length: count }, (_, i) => data.readBigUInt64BE(8 + 8 * i));
  }

  generation(): number {
    return this.state?.generation ?? 0;
  }

  /** READ RESERVATION as {key, type} or null. */
  reservation(): { key: bigint; type: number } | null {
    const data = prIn(this.state, A, inCdb(PR_IN_READ_RESERVATION), 8192).dataIn as Buffer;
    if (data.readUInt32BE(4) === 0) return null;
    return { key: data.readBigUInt64BE(8), type: data[21] & 0x0f };
  }

  eventSeq(): number {
    return this.state?.eventSeq ?? 0;
  }

  eventsAfter(seq: number): PrEvent[] {
    return (this.state?.events ?? []).filter((e) => e.seq > seq);
  }
}

function expectGood(r: ScsiResult): void {
  assert.equal(r.status, SAM_GOOD, `expected GOOD, got status 0x${r.status.toString(16)} sense ${r.sense?.toString('hex')}`);
}

function expectConflict(r: ScsiResult): void {
  assert.equal(r.status, SAM_RESERVATION_CONFLICT, `expected RESERVATION CONFLICT, got 0x${r.status.toString(16)}`);
  assert.equal(r.sense, null);
}

function expectSense(r: ScsiResult, senseKey: number, asc: number, ascq: number): void {
  assert.equal(r.status, SAM_CHECK_CONDITION, `expected CHECK CONDITION, got 0x${r.status.toString(16)}`);
  const sense = r.sense as Buffer;
  assert.equal(sense[0], 0x70);
  assert.deepEqual([sense[2] & 0x0f, sense[12], sense[13]], [senseKey, asc, ascq]);
}

const ILLEGAL_REQUEST = 0x05;
const expectInvalidFieldInCdb = (r: ScsiResult): void => expectSense(r, ILLEGAL_REQUEST, 0x24, 0x00);
const expectInvalidFieldInParams = (r: ScsiResult): void => expectSense(r, ILLEGAL_REQUEST, 0x26, 0x00);
const expectParamListLengthError = (r: ScsiResult): void => expectSense(r, ILLEGAL_REQUEST, 0x1a, 0x00);

function uas(events: PrEvent[]): Array<[string, number]> {
  return events.filter((e) => e.kind === 'ua').map((e) => [e.nexusKey, e.ascq as number]);
}

// ---- REGISTER / REGISTER AND IGNORE EXISTING KEY (SPC-4 5.12.7) -----------------------------

test('SPC-4 5.12.7: REGISTER from an unregistered nexus with reservation key 0 registers the service-action key', () => {
  const lu = new Lu();
  expectGood(lu.out(A, PR_OUT_REGISTER, { rk: 0n, sak: 0x1234n }));
  assert.deepEqual(lu.keys(), [0x1234n]);
  assert.equal(lu.generation(), 1);
  assert.equal(findRegistration(lu.state, A.key)?.key, '0000000000001234');
});

test('SPC-4 6.16.3: REGISTER from an unregistered nexus with a non-zero reservation key is a RESERVATION CONFLICT', () => {
  const lu = new Lu();
  expectConflict(lu.out(A, PR_OUT_REGISTER, { rk: 7n, sak: 0x1234n }));
  assert.equal(lu.state, null);
});

test('SPC-4 5.12.7: REGISTER from a registered nexus with a wrong reservation key conflicts (libiscsi ProutRegister)', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  expectConflict(lu.out(A, PR_OUT_REGISTER, { rk: 0n, sak: 0x11n }));
  expectConflict(lu.out(A, PR_OUT_REGISTER, { rk: 0x99n, sak: 0x11n }));
  assert.deepEqual(lu.keys(), [0x10n]);
  assert.equal(lu.generation(), 1);
});

test('SPC-4 5.12.7: REGISTER with the right key changes it; REGISTER AND IGNORE EXISTING KEY ignores the reservation key', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  expectGood(lu.out(A, PR_OUT_REGISTER, { rk: 0x10n, sak: 0x20n }));
  assert.deepEqual(lu.keys(), [0x20n]);
  expectGood(lu.out(A, PR_OUT_REGISTER_AND_IGNORE, { rk: 0xdeadn, sak: 0x30n }));
  assert.deepEqual(lu.keys(), [0x30n]);
  assert.equal(lu.generation(), 3);
});

test('SPC-4 5.12.11.3: REGISTER with service-action key 0 unregisters; from an unregistered nexus it is GOOD and does nothing', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  expectGood(lu.out(A, PR_OUT_REGISTER, { rk: 0x10n, sak: 0n }));
  assert.deepEqual(lu.keys(), []);
  expectGood(lu.out(B, PR_OUT_REGISTER, { rk: 0n, sak: 0n }));
  assert.deepEqual(lu.keys(), []);
  // 6.15.2: PRgeneration counts every REGISTER that completes, the no-op one included.
  assert.equal(lu.generation(), 3);
});

test('SPC-4 5.9 nexus: the same initiator name with another ISID is another nexus', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  assert.equal(findRegistration(lu.state, E.key), undefined);
  expectConflict(lu.out(E, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE }));
  lu.register(E, 0x11n);
  assert.deepEqual(lu.keys(), [0x10n, 0x11n]);
});

test('SPC-4 5.12.7: a registration beyond REGISTRATIONS_MAX is INSUFFICIENT REGISTRATION RESOURCES', () => {
  const lu = new Lu();
  for (let i = 0; i < REGISTRATIONS_MAX; i++) lu.register(makeNexus(INITIATOR_1, i.toString(16).padStart(12, '0'), 1), BigInt(i + 1));
  const extra = makeNexus(INITIATOR_2, '000000000001', 1);
  expectSense(lu.out(extra, PR_OUT_REGISTER, { sak: 5n }), ILLEGAL_REQUEST, 0x55, 0x04);
  assert.equal(lu.keys().length, REGISTRATIONS_MAX);
});

// ---- RESERVE (SPC-4 5.12.9) -----------------------------------------------------------------

test('SPC-4 5.12.9: RESERVE from an unregistered nexus, or with a wrong key, is a RESERVATION CONFLICT', () => {
  const lu = new Lu();
  expectConflict(lu.out(A, PR_OUT_RESERVE, { rk: 0n, type: PR_TYPE_WE }));
  lu.register(A, 0x10n);
  expectConflict(lu.out(A, PR_OUT_RESERVE, { rk: 0x11n, type: PR_TYPE_WE }));
  assert.equal(lu.reservation(), null);
});

test('SPC-4 5.12.9: RESERVE while another nexus holds conflicts; the holder may repeat the same type, not another', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  lu.register(B, 0x20n);
  const generation = lu.generation();
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_EA }));
  assert.deepEqual(lu.reservation(), { key: 0x10n, type: PR_TYPE_EA });
  expectConflict(lu.out(B, PR_OUT_RESERVE, { rk: 0x20n, type: PR_TYPE_EA }));
  expectConflict(lu.out(B, PR_OUT_RESERVE, { rk: 0x20n, type: PR_TYPE_WE }));
  const before = lu.state;
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_EA }));
  assert.equal(lu.state, before, 'same type again changes nothing');
  expectConflict(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE }));
  assert.deepEqual(lu.reservation(), { key: 0x10n, type: PR_TYPE_EA });
  assert.equal(lu.generation(), generation, '6.15.2: RESERVE does not count');
});

test('SPC-4 5.12.9: in an all-registrants reservation every registrant holds; another type conflicts', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  lu.register(B, 0x20n);
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE_AR }));
  assert.ok(isHolder(lu.state, B.key));
  expectGood(lu.out(B, PR_OUT_RESERVE, { rk: 0x20n, type: PR_TYPE_WE_AR }));
  expectConflict(lu.out(B, PR_OUT_RESERVE, { rk: 0x20n, type: PR_TYPE_EA_AR }));
  assert.deepEqual(lu.reservation(), { key: 0n, type: PR_TYPE_WE_AR });
});

test('SPC-4 6.16.1: RESERVE with a scope other than LU_SCOPE or an undefined type is INVALID FIELD IN CDB', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  expectInvalidFieldInCdb(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE, scope: 1 }));
  for (const type of [0, 2, 4, 9, 15]) expectInvalidFieldInCdb(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type }));
  assert.equal(lu.reservation(), null);
});

// ---- RELEASE (SPC-4 5.12.11.2) -------------------------------------------------------------

test('SPC-4 5.12.11.2: RELEASE by a registered non-holder, or with no reservation, is GOOD and changes nothing', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  lu.register(B, 0x20n);
  expectGood(lu.out(B, PR_OUT_RELEASE, { rk: 0x20n, type: PR_TYPE_WE }));
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE }));
  const before = lu.state;
  expectGood(lu.out(B, PR_OUT_RELEASE, { rk: 0x20n, type: PR_TYPE_WE }));
  assert.equal(lu.state, before);
  assert.deepEqual(lu.reservation(), { key: 0x10n, type: PR_TYPE_WE });
});

test('SPC-4 5.12.11.2: RELEASE from an unregistered nexus or with a wrong key is a RESERVATION CONFLICT', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE }));
  expectConflict(lu.out(B, PR_OUT_RELEASE, { rk: 0n, type: PR_TYPE_WE }));
  expectConflict(lu.out(A, PR_OUT_RELEASE, { rk: 0x11n, type: PR_TYPE_WE }));
  assert.deepEqual(lu.reservation(), { key: 0x10n, type: PR_TYPE_WE });
});

test('SPC-4 5.12.11.2: RELEASE by the holder with another type is INVALID RELEASE OF PERSISTENT RESERVATION (26h/04h)', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE }));
  expectSense(lu.out(A, PR_OUT_RELEASE, { rk: 0x10n, type: PR_TYPE_EA }), ILLEGAL_REQUEST, 0x26, 0x04);
  assert.deepEqual(lu.reservation(), { key: 0x10n, type: PR_TYPE_WE });
  const generation = lu.generation();
  expectGood(lu.out(A, PR_OUT_RELEASE, { rk: 0x10n, type: PR_TYPE_WE }));
  assert.equal(lu.reservation(), null);
  assert.deepEqual(lu.keys(), [0x10n], 'registrations stay');
  assert.equal(lu.generation(), generation, '6.15.2: RELEASE does not count');
});

test('SPC-4 5.12.11.2: releasing a registrants-only or all-registrants reservation tells the other registrants RESERVATIONS RELEASED', () => {
  for (const type of ALL_TYPES) {
    const lu = new Lu();
    lu.register(A, 0x10n);
    lu.register(B, 0x20n);
    expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type }));
    const seq = lu.eventSeq();
    expectGood(lu.out(A, PR_OUT_RELEASE, { rk: 0x10n, type }));
    const expected: Array<[string, number]> = type === PR_TYPE_WE || type === PR_TYPE_EA ? [] : [[B.key, ASCQ_RESERVATIONS_RELEASED]];
    assert.deepEqual(uas(lu.eventsAfter(seq)), expected, `type ${type}`);
  }
});

test('SPC-4 5.12.11.2: any registrant may release an all-registrants reservation (libiscsi ProutReserve Ownership*AR)', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  lu.register(B, 0x20n);
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_EA_AR }));
  expectGood(lu.out(B, PR_OUT_RELEASE, { rk: 0x20n, type: PR_TYPE_EA_AR }));
  assert.equal(lu.reservation(), null);
  assert.deepEqual(uas(lu.eventsAfter(0)), [[A.key, ASCQ_RESERVATIONS_RELEASED]]);
});

// ---- unregistering a holder (SPC-4 5.12.11.3) --------------------------------------------------

test('SPC-4 5.12.11.3: unregistering the holder releases a WE/EA reservation silently, an RO reservation with RESERVATIONS RELEASED', () => {
  for (const type of [PR_TYPE_WE, PR_TYPE_EA, PR_TYPE_WE_RO, PR_TYPE_EA_RO]) {
    const lu = new Lu();
    lu.register(A, 0x10n);
    lu.register(B, 0x20n);
    expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type }));
    const seq = lu.eventSeq();
    expectGood(lu.out(A, PR_OUT_REGISTER, { rk: 0x10n, sak: 0n }));
    assert.equal(lu.reservation(), null, `type ${type}`);
    const expected: Array<[string, number]> = type === PR_TYPE_WE_RO || type === PR_TYPE_EA_RO ? [[B.key, ASCQ_RESERVATIONS_RELEASED]] : [];
    assert.deepEqual(uas(lu.eventsAfter(seq)), expected, `type ${type}`);
  }
});

test('SPC-4 5.12.11.3: an all-registrants reservation stays until its last registrant unregisters', () => {
  for (const type of [PR_TYPE_WE_AR, PR_TYPE_EA_AR]) {
    const lu = new Lu();
    lu.register(A, 0x10n);
    lu.register(B, 0x20n);
    expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type }));
    expectGood(lu.out(A, PR_OUT_REGISTER, { rk: 0x10n, sak: 0n }));
    assert.deepEqual(lu.reservation(), { key: 0n, type });
    expectGood(lu.out(B, PR_OUT_REGISTER, { rk: 0x20n, sak: 0n }));
    assert.equal(lu.reservation(), null);
  }
});

// ---- CLEAR (SPC-4 5.12.11.6) ------------------------------------------------------------------

test('SPC-4 5.12.11.6: CLEAR drops every registration and the reservation, RESERVATIONS PREEMPTED to the others, generation + 1 (libiscsi ProutClear)', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  lu.register(B, 0x20n);
  lu.register(C, 0x30n);
  const generation = lu.generation();
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_EA }));
  expectConflict(lu.out(D, PR_OUT_CLEAR, { rk: 0n }));
  expectConflict(lu.out(B, PR_OUT_CLEAR, { rk: 0x21n }));
  const seq = lu.eventSeq();
  expectGood(lu.out(B, PR_OUT_CLEAR, { rk: 0x20n }));
  assert.deepEqual(lu.keys(), []);
  assert.equal(lu.reservation(), null);
  assert.equal(lu.generation(), generation + 1);
  assert.deepEqual(uas(lu.eventsAfter(seq)), [
    [A.key, ASCQ_RESERVATIONS_PREEMPTED],
    [C.key, ASCQ_RESERVATIONS_PREEMPTED],
  ]);
});

// ---- PREEMPT / PREEMPT AND ABORT (SPC-4 5.12.11.4, 5.12.11.5) ------------------------------------

test('SPC-4 5.12.11.4: with no reservation PREEMPT removes the registrations with the service-action key (libiscsi ProutPreempt)', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  lu.register(B, 0x20n);
  const generation = lu.generation();
  const seq = lu.eventSeq();
  expectGood(lu.out(B, PR_OUT_PREEMPT, { rk: 0x20n, sak: 0x10n, type: PR_TYPE_EA }));
  assert.deepEqual(lu.keys(), [0x20n]);
  assert.equal(lu.generation(), generation + 1);
  assert.equal(lu.reservation(), null, 'SCOPE and TYPE are ignored when no reservation is preempted');
  assert.deepEqual(uas(lu.eventsAfter(seq)), [[A.key, ASCQ_REGISTRATIONS_PREEMPTED]]);
});

test('SPC-4 5.12.11.4: PREEMPT with service-action key 0 and no all-registrants reservation is INVALID FIELD IN PARAMETER LIST', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  lu.register(B, 0x20n);
  expectInvalidFieldInParams(lu.out(B, PR_OUT_PREEMPT, { rk: 0x20n, sak: 0n, type: PR_TYPE_EA }));
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE }));
  expectInvalidFieldInParams(lu.out(B, PR_OUT_PREEMPT, { rk: 0x20n, sak: 0n, type: PR_TYPE_EA }));
  assert.deepEqual(lu.keys(), [0x10n, 0x20n]);
});

test('SPC-4 5.12.11.4: PREEMPT naming a key nobody holds is a RESERVATION CONFLICT; so is PREEMPT from an unregistered nexus', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  lu.register(B, 0x20n);
  const generation = lu.generation();
  expectConflict(lu.out(B, PR_OUT_PREEMPT, { rk: 0x20n, sak: 0x77n, type: PR_TYPE_EA }));
  expectConflict(lu.out(D, PR_OUT_PREEMPT, { rk: 0n, sak: 0x10n, type: PR_TYPE_EA }));
  assert.equal(lu.generation(), generation);
});

test('SPC-4 5.12.11.4: preempting the holder moves the reservation to the preempting nexus with the CDB type', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  lu.register(B, 0x20n);
  lu.register(E, 0x30n);
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE }));
  let seq = lu.eventSeq();
  // Same type: the preempted holder hears REGISTRATIONS PREEMPTED, nobody else anything.
  expectGood(lu.out(B, PR_OUT_PREEMPT, { rk: 0x20n, sak: 0x10n, type: PR_TYPE_WE }));
  assert.deepEqual(lu.reservation(), { key: 0x20n, type: PR_TYPE_WE });
  assert.ok(isHolder(lu.state, B.key));
  assert.deepEqual(lu.keys(), [0x20n, 0x30n]);
  assert.deepEqual(uas(lu.eventsAfter(seq)), [[A.key, ASCQ_REGISTRATIONS_PREEMPTED]]);
  // Another type: the remaining registrants (not the issuer) hear RESERVATIONS RELEASED.
  lu.register(A, 0x11n);
  seq = lu.eventSeq();
  expectGood(lu.out(E, PR_OUT_PREEMPT, { rk: 0x30n, sak: 0x20n, type: PR_TYPE_EA_RO }));
  assert.deepEqual(lu.reservation(), { key: 0x30n, type: PR_TYPE_EA_RO });
  assert.deepEqual(uas(lu.eventsAfter(seq)), [
    [B.key, ASCQ_REGISTRATIONS_PREEMPTED],
    [A.key, ASCQ_RESERVATIONS_RELEASED],
  ]);
});

test('SPC-4 5.12.11.4: the holder may preempt its own reservation to change its type; its registration stays', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  lu.register(B, 0x10n); // same key as the holder: preempted with it
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE }));
  expectGood(lu.out(A, PR_OUT_PREEMPT, { rk: 0x10n, sak: 0x10n, type: PR_TYPE_EA }));
  assert.deepEqual(lu.reservation(), { key: 0x10n, type: PR_TYPE_EA });
  assert.deepEqual(lu.keys(), [0x10n]);
  assert.ok(findRegistration(lu.state, A.key) !== undefined);
});

test('SPC-4 5.12.11.4: preempting the holder with an undefined type is INVALID FIELD IN CDB', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  lu.register(B, 0x20n);
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE }));
  expectInvalidFieldInCdb(lu.out(B, PR_OUT_PREEMPT, { rk: 0x20n, sak: 0x10n, type: 2 }));
  expectInvalidFieldInCdb(lu.out(B, PR_OUT_PREEMPT, { rk: 0x20n, sak: 0x10n, type: PR_TYPE_WE, scope: 2 }));
  assert.deepEqual(lu.reservation(), { key: 0x10n, type: PR_TYPE_WE });
});

test('SPC-4 5.12.11.4: an all-registrants reservation is preempted by service-action key 0; a non-zero key only removes registrations', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  lu.register(B, 0x20n);
  lu.register(E, 0x30n);
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE_AR }));
  let seq = lu.eventSeq();
  expectGood(lu.out(B, PR_OUT_PREEMPT, { rk: 0x20n, sak: 0x30n, type: PR_TYPE_EA }));
  assert.deepEqual(lu.reservation(), { key: 0n, type: PR_TYPE_WE_AR }, 'the reservation stays');
  assert.deepEqual(lu.keys(), [0x10n, 0x20n]);
  assert.deepEqual(uas(lu.eventsAfter(seq)), [[E.key, ASCQ_REGISTRATIONS_PREEMPTED]]);
  seq = lu.eventSeq();
  expectGood(lu.out(B, PR_OUT_PREEMPT, { rk: 0x20n, sak: 0n, type: PR_TYPE_EA }));
  assert.deepEqual(lu.reservation(), { key: 0x20n, type: PR_TYPE_EA });
  assert.deepEqual(lu.keys(), [0x20n]);
  assert.deepEqual(uas(lu.eventsAfter(seq)), [[A.key, ASCQ_REGISTRATIONS_PREEMPTED]]);
});

test('SPC-4 5.12.11.5: PREEMPT AND ABORT also aborts the preempted nexuses\' tasks (abort events), never the issuer\'s', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  lu.register(B, 0x20n);
  lu.register(C, 0x10n);
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE }));
  const seq = lu.eventSeq();
  expectGood(lu.out(B, PR_OUT_PREEMPT_AND_ABORT, { rk: 0x20n, sak: 0x10n, type: PR_TYPE_EA }));
  const events = lu.eventsAfter(seq).map((e) => [e.kind, e.nexusKey, e.ascq]);
  assert.deepEqual(events, [
    ['ua', A.key, ASCQ_REGISTRATIONS_PREEMPTED],
    ['abort', A.key, undefined],
    ['ua', C.key, ASCQ_REGISTRATIONS_PREEMPTED],
    ['abort', C.key, undefined],
  ]);
  assert.deepEqual(lu.reservation(), { key: 0x20n, type: PR_TYPE_EA });
  // Without a reservation it removes registrations and aborts the same way.
  lu.register(D, 0x40n);
  const seq2 = lu.eventSeq();
  expectGood(lu.out(B, PR_OUT_PREEMPT_AND_ABORT, { rk: 0x20n, sak: 0x40n, type: PR_TYPE_EA }));
  assert.deepEqual(
    lu.eventsAfter(seq2).map((e) => [e.kind, e.nexusKey]),
    [['ua', D.key], ['abort', D.key]],
  );
});

test('SPC-4 5.12.11.4: PREEMPT may remove the issuer\'s own registration when no reservation is preempted (no UA to itself)', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  lu.register(B, 0x10n);
  expectGood(lu.out(A, PR_OUT_PREEMPT, { rk: 0x10n, sak: 0x10n, type: PR_TYPE_WE }));
  assert.deepEqual(lu.keys(), []);
  assert.deepEqual(uas(lu.eventsAfter(0)), [[B.key, ASCQ_REGISTRATIONS_PREEMPTED]]);
});

// ---- PRgeneration (SPC-4 6.15.2) ------------------------------------------------------------------

test('SPC-4 6.15.2: PRgeneration counts REGISTER, RIEK, CLEAR, PREEMPT, PREEMPT AND ABORT, REGISTER AND MOVE; not RESERVE, RELEASE or failures', () => {
  const lu = new Lu();
  const steps: Array<[string, () => ScsiResult, number]> = [
    ['REGISTER', () => lu.out(A, PR_OUT_REGISTER, { sak: 0x10n }), 1],
    ['RIEK', () => lu.out(B, PR_OUT_REGISTER_AND_IGNORE, { sak: 0x20n }), 1],
    ['RESERVE', () => lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE }), 0],
    ['RESERVE conflict', () => lu.out(B, PR_OUT_RESERVE, { rk: 0x20n, type: PR_TYPE_WE }), 0],
    ['REGISTER conflict', () => lu.out(B, PR_OUT_REGISTER, { rk: 0x21n, sak: 0x22n }), 0],
    [
      'REGISTER AND MOVE',
      () => lu.move(A, 0x10n, 0x20n, B.relativeTargetPortId, encodeIscsiTransportId(B.initiatorPort)),
      1,
    ],
    ['RELEASE', () => lu.out(B, PR_OUT_RELEASE, { rk: 0x20n, type: PR_TYPE_WE }), 0],
    ['PREEMPT', () => lu.out(B, PR_OUT_PREEMPT, { rk: 0x20n, sak: 0x10n }), 1],
    ['PREEMPT AND ABORT', () => (lu.register(A, 0x11n), lu.out(B, PR_OUT_PREEMPT_AND_ABORT, { rk: 0x20n, sak: 0x11n })), 2],
    ['CLEAR', () => lu.out(B, PR_OUT_CLEAR, { rk: 0x20n }), 1],
    ['PR IN', () => prIn(lu.state, A, inCdb(PR_IN_READ_FULL_STATUS), 8192), 0],
  ];
  for (const [name, step, delta] of steps) {
    const before = lu.generation();
    step();
    assert.equal(lu.generation(), before + delta, name);
  }
});

test('SPC-4 6.15.2: PRgeneration is a 32-bit counter that wraps', () => {
  const state: PrState = { generation: 0xffffffff, aptpl: false, registrations: [], reservation: null, eventSeq: 0, events: [] };
  const outcome = prOut(state, A, outCdb(PR_OUT_REGISTER), basicParams(0n, 5n));
  assert.equal(outcome.state?.generation, 0);
  const data = prIn(outcome.state, A, inCdb(PR_IN_READ_KEYS), 100).dataIn as Buffer;
  assert.equal(data.readUInt32BE(0), 0);
});

// ---- parameter list checks (SPC-4 6.16.1, 6.16.3) ---------------------------------------------------

test('SPC-4 6.16.3: a basic parameter list that is not exactly 24 bytes is PARAMETER LIST LENGTH ERROR', () => {
  const lu = new Lu();
  for (const bytes of [0, 8, 23, 25, 28]) {
    const params = Buffer.alloc(bytes);
    if (bytes >= 16) params.writeBigUInt64BE(5n, 8);
    expectParamListLengthError(lu.raw(A, outCdb(PR_OUT_REGISTER, 0, bytes), params));
  }
  // Fewer bytes than the CDB announces: the wire length is not trusted.
  expectParamListLengthError(lu.raw(A, outCdb(PR_OUT_REGISTER, 0, 24), Buffer.alloc(20)));
  expectParamListLengthError(lu.raw(A, outCdb(PR_OUT_REGISTER, 0, 24), null));
  expectParamListLengthError(lu.raw(A, outCdb(PR_OUT_REGISTER, 0, 0xffffffff), Buffer.alloc(24)));
  assert.equal(lu.state, null);
});

test('SPC-4 6.16.3: SPEC_I_PT is not supported (SIP_C = 0): INVALID FIELD IN PARAMETER LIST', () => {
  const lu = new Lu();
  expectInvalidFieldInParams(lu.out(A, PR_OUT_REGISTER, { sak: 5n, flags: FLAG_SPEC_I_PT }));
  const longer = Buffer.concat([basicParams(0n, 5n, FLAG_SPEC_I_PT), Buffer.alloc(4)]);
  expectInvalidFieldInParams(lu.raw(A, outCdb(PR_OUT_REGISTER, 0, 28), longer));
  assert.equal(lu.state, null);
});

test('SPC-4 6.16.1: undefined PR OUT service actions and short CDBs are INVALID FIELD IN CDB', () => {
  const lu = new Lu();
  for (let sa = 8; sa < 0x20; sa++) expectInvalidFieldInCdb(lu.out(A, sa, { sak: 5n }));
  expectInvalidFieldInCdb(lu.raw(A, outCdb(PR_OUT_REGISTER).subarray(0, 6), basicParams(0n, 5n)));
  const sense = lu.out(A, 9).sense as Buffer;
  assert.deepEqual([...sense.subarray(15, 18)], [0xc0 | 0x08 | 4, 0, 1], 'field pointer: CDB byte 1 bit 4');
  assert.equal(lu.state, null);
});

// ---- ALL_TG_PT (design in pr.ts) -------------------------------------------------------------------

test('ALL_TG_PT: one registration covers the initiator port through every target port (every gateway)', () => {
  const lu = new Lu();
  lu.register(A, 0x10n, FLAG_ALL_TG_PT);
  assert.equal(findRegistration(lu.state, C.key)?.key, '0000000000000010');
  assert.equal(findRegistration(lu.state, B.key), undefined);
  // C (same initiator port, other gateway) reserves under A's key and holds.
  expectGood(lu.out(C, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_EA_RO }));
  assert.ok(isHolder(lu.state, C.key));
  assert.ok(!isHolder(lu.state, A.key));
  assert.equal(checkAccess(lu.state, A, 'write'), 'ok', 'A is registered (EA-RO)');
  assert.equal(checkAccess(lu.state, B, 'read'), 'conflict');
  assert.deepEqual(lu.keys(), [0x10n], 'one entry in READ KEYS');
  const full = prIn(lu.state, A, inCdb(PR_IN_READ_FULL_STATUS), 8192).dataIn as Buffer;
  assert.equal(full[8 + 12], 0x02 | 0x01, 'ALL_TG_PT and R_HOLDER');
  // Unregistering through either port removes it, and the holder (C) loses its reservation.
  expectGood(lu.out(A, PR_OUT_REGISTER, { rk: 0x10n, sak: 0n }));
  assert.deepEqual(lu.keys(), []);
  assert.equal(lu.reservation(), null);
});

test('ALL_TG_PT: registering with it replaces the port\'s per-target-port registrations', () => {
  const lu = new Lu();
  lu.register(C, 0x10n);
  lu.register(B, 0x20n);
  lu.register(A, 0x30n, FLAG_ALL_TG_PT);
  assert.deepEqual(lu.keys(), [0x20n, 0x30n]);
  assert.equal(findRegistration(lu.state, C.key)?.key, '0000000000000030');
  const report = prIn(null, A, inCdb(PR_IN_REPORT_CAPABILITIES), 8).dataIn as Buffer;
  assert.equal(report[2] & 0x04, 0x04, 'ATP_C');
});

// ---- REGISTER AND MOVE (SPC-4 5.12.8, 6.16.4) and TransportIDs (7.6.4.6) ----------------------------

test('SPC-4 7.6.4.6: iSCSI TransportIDs, format 00 and 01, encode and parse', () => {
  const tid01 = encodeIscsiTransportId('iqn.a,i,0x000000000001');
  assert.equal(tid01.toString('hex'), '45000018' + Buffer.from('iqn.a,i,0x000000000001').toString('hex') + '0000');
  assert.deepEqual(parseIscsiTransportId(tid01), { name: 'iqn.a', isid: '000000000001' });
  const tid00 = encodeIscsiTransportId('iqn.a');
  assert.equal(tid00.toString('hex'), '05000014' + Buffer.from('iqn.a').toString('hex') + '00'.repeat(15));
  assert.deepEqual(parseIscsiTransportId(tid00), { name: 'iqn.a', isid: null });
  // Case and short ISIDs are normalized.
  const upper = encodeIscsiTransportId('IQN.A,i,0xABC');
  assert.deepEqual(parseIscsiTransportId(upper), { name: 'iqn.a', isid: '000000000abc' });
  const bad = (mutate: (b: Buffer) => Buffer): void => assert.equal(parseIscsiTransportId(mutate(Buffer.from(tid01))), null);
  bad((b) => ((b[0] = 0x40), b)); // protocol 0 (Fibre Channel)
  bad((b) => ((b[0] = 0x85), b)); // format 10b
  bad((b) => (b.writeUInt16BE(16, 2), b)); // ADDITIONAL LENGTH below 20
  bad((b) => (b.writeUInt16BE(26, 2), b)); // not a multiple of 4
  bad((b) => (b.writeUInt16BE(28, 2), b)); // beyond the buffer
  bad((b) => b.fill(0x41, 4)); // no NUL terminator
  bad((b) => ((b[4] = 0), b)); // empty name
  bad((b) => (b.write('g', 4 + 'iqn.a,i,0x'.length), b)); // ISID not hex
  bad((b) => b.subarray(0, 3));
  assert.equal(parseIscsiTransportId(encodeIscsiTransportId('iqn.a,i,0x1234567890abc')), null, 'ISID over 12 digits');
  assert.equal(parseIscsiTransportId(Buffer.concat([Buffer.from([0x45, 0, 0, 20]), Buffer.alloc(20, 0x41)])), null);
});

test('SPC-4 5.12.8: REGISTER AND MOVE registers the destination, moves the reservation with its type, keeps or drops the source', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_EA_RO }));
  const generation = lu.generation();
  const tid = encodeIscsiTransportId(B.initiatorPort);
  const params = moveParams(0x10n, 0x20n, B.relativeTargetPortId, tid, FLAG_APTPL);
  // CDB type says WE: ignored, the reservation keeps EA-RO.
  expectGood(lu.raw(A, outCdb(PR_OUT_REGISTER_AND_MOVE, PR_TYPE_WE, params.length), params));
  assert.deepEqual(lu.reservation(), { key: 0x20n, type: PR_TYPE_EA_RO });
  assert.ok(isHolder(lu.state, B.key));
  assert.deepEqual(lu.keys(), [0x10n, 0x20n]);
  assert.equal(lu.generation(), generation + 1);
  assert.equal(lu.state?.aptpl, true);
  // Back to A, already registered: it takes the service-action key; UNREG drops B.
  expectGood(lu.move(B, 0x20n, 0x11n, A.relativeTargetPortId, encodeIscsiTransportId(A.initiatorPort), 0x02));
  assert.deepEqual(lu.reservation(), { key: 0x11n, type: PR_TYPE_EA_RO });
  assert.deepEqual(lu.keys(), [0x11n]);
  assert.equal(lu.state?.aptpl, false);
});

test('SPC-4 5.12.8: REGISTER AND MOVE to another target port names it from the relative target port identifier', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE }));
  expectGood(lu.move(A, 0x10n, 0x20n, D.relativeTargetPortId, encodeIscsiTransportId(D.initiatorPort)));
  assert.ok(isHolder(lu.state, D.key), 'TPGT 2 = relative target port 3');
  assert.equal(findRegistration(lu.state, D.key)?.targetPort, D.targetPort);
  assert.equal(findRegistration(lu.state, B.key), undefined);
});

test('SPC-4 5.12.8: REGISTER AND MOVE with a format 00 TransportID needs exactly one known port of that initiator', () => {
  const lu = new Lu();
  lu.register(A, 0x10n);
  lu.register(B, 0x20n);
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE }));
  expectInvalidFieldInParams(lu.move(A, 0x10n, 0x30n, 2, encodeIscsiTransportId('iqn.unknown')));
  expectInvalidFieldInParams(lu.move(A, 0x10n, 0x30n, 2, encodeIscsiTransportId(INITIATOR_1))); // only A itself
  expectGood(lu.move(A, 0x10n, 0x30n, 2, encodeIscsiTransportId(INITIATOR_2)));
  assert.ok(isHolder(lu.state, B.key));
  assert.deepEqual(lu.keys(), [0x10n, 0x30n]);
});

test('SPC-4 5.12.8: REGISTER AND MOVE refusals', () => {
  const lu = new Lu();
  const tidB = encodeIscsiTransportId(B.initiatorPort);
  lu.register(A, 0x10n);
  lu.register(E, 0x30n);
  // No reservation, or not the holder: RESERVATION CONFLICT (unverified for "no reservation").
  expectConflict(lu.move(A, 0x10n, 0x20n, 2, tidB));
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE }));
  expectConflict(lu.move(E, 0x30n, 0x20n, 2, tidB));
  // Unregistered source or wrong key: RESERVATION CONFLICT.
  expectConflict(lu.move(B, 0n, 0x20n, 2, tidB));
  expectConflict(lu.move(A, 0x11n, 0x20n, 2, tidB));
  // Service-action key 0, own initiator port, bad TransportID, relative port 0: INVALID FIELD IN PARAMETER LIST.
  expectInvalidFieldInParams(lu.move(A, 0x10n, 0n, 2, tidB));
  expectInvalidFieldInParams(lu.move(A, 0x10n, 0x20n, 3, encodeIscsiTransportId(A.initiatorPort)));
  const fc = Buffer.from(tidB);
  fc[0] = 0x40;
  expectInvalidFieldInParams(lu.move(A, 0x10n, 0x20n, 2, fc));
  expectInvalidFieldInParams(lu.move(A, 0x10n, 0x20n, 0, tidB));
  // TransportID longer than the list, or a list shorter than the header: PARAMETER LIST LENGTH ERROR.
  const truncated = moveParams(0x10n, 0x20n, 2, tidB).subarray(0, 30);
  expectParamListLengthError(lu.raw(A, outCdb(PR_OUT_REGISTER_AND_MOVE, 0, truncated.length), truncated));
  expectParamListLengthError(lu.raw(A, outCdb(PR_OUT_REGISTER_AND_MOVE, 0, 20), Buffer.alloc(20)));
  assert.ok(isHolder(lu.state, A.key));
  // An all-registrants reservation cannot be moved.
  expectGood(lu.out(A, PR_OUT_RELEASE, { rk: 0x10n, type: PR_TYPE_WE }));
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE_AR }));
  expectConflict(lu.move(A, 0x10n, 0x20n, 2, tidB));
});

// ---- access (SPC-4 5.12.1) ------------------------------------------------------------------------

test('SPC-4 5.12.1: access by type x (holder, registered non-holder, unregistered) x (read, write)', () => {
  // [holder read, holder write, registered read, registered write, unregistered read, unregistered write]
  const table: Record<number, string> = {
    [PR_TYPE_WE]: 'ok ok | ok conflict | ok conflict',
    [PR_TYPE_EA]: 'ok ok | conflict conflict | conflict conflict',
    [PR_TYPE_WE_RO]: 'ok ok | ok ok | ok conflict',
    [PR_TYPE_EA_RO]: 'ok ok | ok ok | conflict conflict',
    [PR_TYPE_WE_AR]: 'ok ok | ok ok | ok conflict',
    [PR_TYPE_EA_AR]: 'ok ok | ok ok | conflict conflict',
  };
  for (const type of ALL_TYPES) {
    const lu = new Lu();
    lu.register(A, 0x10n); // holder
    lu.register(B, 0x20n); // registered (a holder too for the all-registrants types)
    expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type }));
    const got = [A, B, D]
      .map((n) => (['read', 'write'] as AccessClass[]).map((access) => checkAccess(lu.state, n, access)).join(' '))
      .join(' | ');
    assert.equal(got, table[type], `type ${type}`);
    assert.equal(isHolder(lu.state, B.key), isAllRegistrants(type as 7 | 8));
    for (const n of [A, B, D]) assert.equal(checkAccess(lu.state, n, 'always'), 'ok');
  }
});

test('SPC-4 5.12.1: without a reservation everyone may read and write, registered or not', () => {
  const lu = new Lu();
  assert.equal(checkAccess(null, A, 'write'), 'ok');
  lu.register(A, 0x10n);
  for (const n of [A, B]) for (const access of ['read', 'write'] as AccessClass[]) assert.equal(checkAccess(lu.state, n, access), 'ok');
});

// ---- PR IN (SPC-4 6.15) -----------------------------------------------------------------------------

const GOLDEN_A = makeNexus('iqn.a', '000000000001', 0, 'iqn.t');
const GOLDEN_B = makeNexus('iqn.bb', '000000000002', 1, 'iqn.t');

function goldenLu(type: number | null, allTgPtB = false): Lu {
  const lu = new Lu();
  lu.register(GOLDEN_A, 0x1122334455667788n);
  lu.register(GOLDEN_B, 0xaabbn, allTgPtB ? FLAG_ALL_TG_PT : 0);
  if (type !== null) expectGood(lu.out(GOLDEN_A, PR_OUT_RESERVE, { rk: 0x1122334455667788n, type }));
  return lu;
}

function hex(text: string): string {
  return text.replace(/\s+/g, '');
}

test('SPC-4 6.15.2: READ KEYS golden bytes', () => {
  const data = prIn(goldenLu(null).state, GOLDEN_A, inCdb(PR_IN_READ_KEYS), 8192).dataIn as Buffer;
  // PRgeneration 2 | ADDITIONAL LENGTH 16 | two keys
  assert.equal(data.toString('hex'), hex('00000002 00000010 1122334455667788 000000000000aabb'));
  const none = prIn(null, GOLDEN_A, inCdb(PR_IN_READ_KEYS), 8192).dataIn as Buffer;
  assert.equal(none.toString('hex'), hex('00000000 00000000'));
});

test('SPC-4 6.15.3: READ RESERVATION golden bytes (none, WE-RO held by A, all-registrants key 0)', () => {
  const none = prIn(goldenLu(null).state, GOLDEN_A, inCdb(PR_IN_READ_RESERVATION), 8192).dataIn as Buffer;
  assert.equal(none.toString('hex'), hex('00000002 00000000'));
  const held = prIn(goldenLu(PR_TYPE_WE_RO).state, GOLDEN_A, inCdb(PR_IN_READ_RESERVATION), 8192).dataIn as Buffer;
  // PRgeneration | ADDITIONAL LENGTH 16 | key | obsolete | reserved | scope 0, type 5 | obsolete
  assert.equal(held.toString('hex'), hex('00000002 00000010 1122334455667788 00000000 00 05 0000'));
  const ar = prIn(goldenLu(PR_TYPE_EA_AR).state, GOLDEN_A, inCdb(PR_IN_READ_RESERVATION), 8192).dataIn as Buffer;
  assert.equal(ar.toString('hex'), hex('00000002 00000010 0000000000000000 00000000 00 08 0000'));
});

test('SPC-4 6.15.4: REPORT CAPABILITIES golden bytes (ATP_C, PTPL_C, TMV, type mask, PTPL_A)', () => {
  const data = prIn(null, GOLDEN_A, inCdb(PR_IN_REPORT_CAPABILITIES), 8192).dataIn as Buffer;
  // LENGTH 8 | RLR_C 0 CRH 0 SIP_C 0 ATP_C 1 PTPL_C 1 | TMV 1, ALLOW COMMANDS 000b, PTPL_A 0 | mask ea 01 | reserved
  assert.equal(data.toString('hex'), hex('0008 05 80 ea01 0000'));
  const lu = new Lu();
  lu.register(A, 1n, FLAG_APTPL);
  const withAptpl = prIn(lu.state, A, inCdb(PR_IN_REPORT_CAPABILITIES), 8192).dataIn as Buffer;
  assert.equal(withAptpl[3], 0x81);
});

test('SPC-4 6.15.5: READ FULL STATUS golden bytes (R_HOLDER, ALL_TG_PT, scope/type, relative port, TransportID)', () => {
  const data = prIn(goldenLu(PR_TYPE_WE, true).state, GOLDEN_A, inCdb(PR_IN_READ_FULL_STATUS), 8192).dataIn as Buffer;
  const tidA = '45000018' + Buffer.from('iqn.a,i,0x000000000001').toString('hex') + '0000'; // 22 chars + NUL -> 24
  const tidB = '45000018' + Buffer.from('iqn.bb,i,0x000000000002').toString('hex') + '00'; // 23 chars + NUL -> 24
  const expected = hex(`
    00000002 00000068
    1122334455667788 00000000 01 01 00000000 0001 0000001c ${tidA}
    000000000000aabb 00000000 02 00 00000000 0002 0000001c ${tidB}`);
  assert.equal(data.toString('hex'), expected);
  assert.equal(data.length, 8 + 0x68);
});

test('SPC-4 6.15.5: READ FULL STATUS marks every registrant R_HOLDER in an all-registrants reservation', () => {
  const data = prIn(goldenLu(PR_TYPE_WE_AR).state, GOLDEN_A, inCdb(PR_IN_READ_FULL_STATUS), 8192).dataIn as Buffer;
  assert.deepEqual([data[8 + 12], data[8 + 13]], [0x01, PR_TYPE_WE_AR]);
  assert.deepEqual([data[8 + 52 + 12], data[8 + 52 + 13]], [0x01, PR_TYPE_WE_AR]);
});

test('SPC-4 4.2.5.6: allocation length truncates; ADDITIONAL LENGTH still reports everything (libiscsi PrinReadKeys Truncate)', () => {
  const state = goldenLu(PR_TYPE_WE).state;
  const header = prIn(state, A, inCdb(PR_IN_READ_KEYS, 8), 8192).dataIn as Buffer;
  assert.equal(header.length, 8);
  assert.equal(header.readUInt32BE(4), 16);
  assert.equal((prIn(state, A, inCdb(PR_IN_READ_KEYS, 12), 8192).dataIn as Buffer).length, 12);
  assert.equal((prIn(state, A, inCdb(PR_IN_READ_KEYS, 4), 8192).dataIn as Buffer).toString('hex'), '00000002');
  assert.equal(prIn(state, A, inCdb(PR_IN_READ_KEYS, 0), 8192).dataIn?.length ?? 0, 0);
  // The transport's buffer (expectedInBytes) caps it too.
  assert.equal((prIn(state, A, inCdb(PR_IN_READ_FULL_STATUS, 8192), 30).dataIn as Buffer).length, 30);
  assert.equal((prIn(state, A, inCdb(PR_IN_REPORT_CAPABILITIES, 6), 8192).dataIn as Buffer).length, 6);
  assert.equal((prIn(state, A, inCdb(PR_IN_READ_RESERVATION, 9), 8192).dataIn as Buffer).length, 9);
});

test('SPC-4 6.15.1: PR IN service actions 04h..1Fh and short CDBs are INVALID FIELD IN CDB (libiscsi PrinServiceactionRange)', () => {
  for (let sa = 0; sa < 0x20; sa++) {
    const r = prIn(null, A, inCdb(sa), 16384);
    if (sa < 4) expectGood(r);
    else expectInvalidFieldInCdb(r);
  }
  expectInvalidFieldInCdb(prIn(null, A, inCdb(0).subarray(0, 9), 100));
});

// ---- APTPL and power loss (SPC-4 5.12.5) ---------------------------------------------------------------

test('SPC-4 5.12.5: with APTPL = 1 registrations and the reservation survive a power cycle; PRgeneration restarts at 0', () => {
  const lu = new Lu();
  lu.register(A, 0x10n, FLAG_APTPL);
  lu.register(B, 0x20n, FLAG_APTPL);
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE }));
  expectGood(lu.out(B, PR_OUT_PREEMPT, { rk: 0x20n, sak: 0x10n, type: PR_TYPE_EA }));
  const after = powerLoss(lu.state) as PrState;
  assert.deepEqual(after.registrations, lu.state?.registrations);
  assert.deepEqual(after.reservation, lu.state?.reservation);
  assert.equal(after.generation, 0);
  assert.deepEqual(after.events, []);
  assert.equal(after.eventSeq, lu.state?.eventSeq, 'gates keep counting from here');
});

test('SPC-4 5.12.5: with the last APTPL = 0 a power cycle drops everything; the last APTPL received wins', () => {
  const lu = new Lu();
  lu.register(A, 0x10n, FLAG_APTPL);
  lu.register(B, 0x20n); // APTPL 0 now
  expectGood(lu.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE }));
  const after = powerLoss(lu.state) as PrState;
  assert.deepEqual(after.registrations, []);
  assert.equal(after.reservation, null);
  assert.equal(after.generation, 0);
  assert.equal(powerLoss(null), null);
  // RESERVE's parameter list APTPL is ignored (valid only for the REGISTER kinds).
  const lu2 = new Lu();
  lu2.register(A, 0x10n);
  expectGood(lu2.out(A, PR_OUT_RESERVE, { rk: 0x10n, type: PR_TYPE_WE, flags: FLAG_APTPL }));
  assert.equal(lu2.state?.aptpl, false);
});

// ---- events and JSON ----------------------------------------------------------------------------------

test('events: seqs increase by one; the ring keeps EVENTS_KEPT, or all of the newest command\'s events', () => {
  const lu = new Lu();
  const many = Array.from({ length: 100 }, (_, i) => makeNexus(INITIATOR_2, i.toString(16).padStart(12, '0'), 1));
  lu.register(A, 0x10n);
  for (const n of many) lu.register(n, 0x20n);
  expectGood(lu.out(A, PR_OUT_CLEAR, { rk: 0x10n }));
  const state = lu.state as PrState;
  assert.equal(state.events.length, 100, 'one CLEAR: every UA kept');
  assert.equal(state.eventSeq, 100);
  assert.deepEqual(state.events.map((e) => e.seq), Array.from({ length: 100 }, (_, i) => i + 1));
  lu.register(A, 0x10n);
  lu.register(B, 0x20n);
  expectGood(lu.out(A, PR_OUT_CLEAR, { rk: 0x10n }));
  assert.equal(lu.state?.events.length, EVENTS_KEPT);
  assert.equal(lu.state?.events.at(-1)?.seq, 101);
  assert.deepEqual(lu.state?.events.at(-1), { seq: 101, kind: 'ua', nexusKey: B.key, asc: ASC_PR_CHANGED, ascq: ASCQ_RESERVATIONS_PREEMPTED });
});

test('JSON: a state survives JSON.stringify/parse and decodePrState unchanged; malformed states are ERR_FORMAT', () => {
  const lu = goldenLu(PR_TYPE_EA_RO, true);
  expectGood(lu.out(GOLDEN_B, PR_OUT_PREEMPT_AND_ABORT, { rk: 0xaabbn, sak: 0x1122334455667788n, type: PR_TYPE_WE }));
  const state = lu.state as PrState;
  assert.deepEqual(decodePrState(JSON.parse(JSON.stringify(state))), state);
  assert.equal(decodePrState(null), null);
  const bad = (mutate: (s: Record<string, unknown>) => void): void => {
    const copy = JSON.parse(JSON.stringify(state)) as Record<string, unknown>;
    mutate(copy);
    assert.throws(() => decodePrState(copy), (err) => isTesseraError(err, 'ERR_FORMAT'));
  };
  bad((s) => (s.generation = -1));
  bad((s) => (s.generation = 2 ** 32));
  bad((s) => (s.aptpl = 'yes'));
  bad((s) => ((s.registrations as Array<Record<string, unknown>>)[0].key = '0000000000000000'));
  bad((s) => ((s.registrations as Array<Record<string, unknown>>)[0].key = 'AABB'));
  bad((s) => ((s.registrations as Array<Record<string, unknown>>)[0].allTgPt = false));
  bad((s) => (s.reservation = { holderNexusKey: null, type: PR_TYPE_WE, scope: 0 }));
  bad((s) => (s.reservation = { holderNexusKey: 'x', type: PR_TYPE_WE_AR, scope: 0 }));
  bad((s) => (s.reservation = { holderNexusKey: 'x', type: 2, scope: 0 }));
  bad((s) => (s.events = [{ seq: 99, kind: 'ua', nexusKey: 'x', asc: 0x2a, ascq: 5 }]));
  bad((s) => (s.events = [{ seq: 1, kind: 'boom', nexusKey: 'x' }]));
  bad((s) => (s.registrations = {}));
  // Well-formed but breaking the invariants: a holder without registration, an
  // all-registrants reservation without registrants, two registrations for one nexus.
  bad((s) => ((s.reservation as Record<string, unknown>).holderNexusKey = 'iqn.x,i,0x1|iqn.t,t,0x0001'));
  bad((s) => ((s.registrations = []), (s.reservation = { holderNexusKey: null, type: PR_TYPE_EA_AR, scope: 0 })));
  bad((s) => (s.registrations as unknown[]).push((s.registrations as unknown[])[0]));
  bad((s) => {
    const regs = s.registrations as Array<Record<string, unknown>>;
    regs.push({ ...regs[0], nexusKey: `${regs[0].initiatorPort as string}|iqn.t,t,0x0009`, allTgPt: true });
  });
  assert.throws(() => decodePrState(42), (err) => isTesseraError(err, 'ERR_FORMAT'));
});

test('purity: prOut never mutates the state it is given', () => {
  const lu = goldenLu(PR_TYPE_WE);
  const frozen = JSON.parse(JSON.stringify(lu.state)) as PrState;
  const deepFreeze = (v: unknown): void => {
    if (typeof v === 'object' && v !== null) {
      Object.freeze(v);
      Object.values(v).forEach(deepFreeze);
    }
  };
  deepFreeze(frozen);
  const before = JSON.stringify(frozen);
  const outcome = prOut(frozen, GOLDEN_B, outCdb(PR_OUT_PREEMPT_AND_ABORT, PR_TYPE_EA), basicParams(0xaabbn, 0x1122334455667788n));
  expectGood(outcome.result);
  assert.equal(JSON.stringify(frozen), before);
});

// ---- seeded random sequences ---------------------------------------------------------------------------

const RANDOM_NEXUSES = [A, B, C, D];
const COUNTING_ACTIONS = new Set([
  PR_OUT_REGISTER,
  PR_OUT_REGISTER_AND_IGNORE,
  PR_OUT_CLEAR,
  PR_OUT_PREEMPT,
  PR_OUT_PREEMPT_AND_ABORT,
  PR_OUT_REGISTER_AND_MOVE,
]);

function randomCommand(prng: Prng, state: PrState | null): { nexus: Nexus; cdb: Buffer; params: Buffer | null; sa: number } {
  const nexus = RANDOM_NEXUSES[prng.int(RANDOM_NEXUSES.length)];
  const sa = prng.chance(0.05) ? 8 + prng.int(24) : prng.int(8);
  const types = [0, 1, 2, 3, 5, 6, 7, 8, 9];
  const type = prng.chance(0.9) ? ALL_TYPES[prng.int(ALL_TYPES.length)] : types[prng.int(types.length)];
  const scope = prng.chance(0.03) ? 1 + prng.int(15) : 0;
  // Keys: mostly the small pool or a registered key, so commands often succeed.
  const registered = state?.registrations.map((r) => BigInt('0x' + r.key)) ?? [];
  const pickKey = (): bigint => {
    const roll = prng.int(10);
    if (roll < 4 && registered.length > 0) return registered[prng.int(registered.length)];
    if (roll < 6) return 0n;
    return BigInt(1 + prng.int(4));
  };
  const own = findRegistration(state, nexus.key);
  const rk = own !== undefined && prng.chance(0.7) ? BigInt('0x' + own.key) : pickKey();
  let params: Buffer;
  if (sa === PR_OUT_REGISTER_AND_MOVE) {
    const dest = RANDOM_NEXUSES[prng.int(RANDOM_NEXUSES.length)];
    const tid = encodeIscsiTransportId(prng.chance(0.8) ? dest.initiatorPort : dest.initiatorName);
    params = moveParams(rk, pickKey(), prng.chance(0.9) ? dest.relativeTargetPortId : prng.int(4), tid, prng.int(4));
    if (prng.chance(0.05)) params = params.subarray(0, prng.int(params.length));
  } else {
    let flags = 0;
    if (prng.chance(0.2)) flags |= FLAG_ALL_TG_PT;
    if (prng.chance(0.2)) flags |= FLAG_APTPL;
    if (prng.chance(0.02)) flags |= FLAG_SPEC_I_PT;
    params = basicParams(rk, pickKey(), flags);
    if (prng.chance(0.03)) params = Buffer.concat([params, Buffer.alloc(prng.int(8))]).subarray(0, prng.int(32));
  }
  const declared = prng.chance(0.02) ? prng.int(64) : params.length;
  return { nexus, cdb: outCdb(sa, type, declared, scope), params: prng.chance(0.01) ? null : params, sa };
}

function checkInvariants(state: PrState, label: string): void {
  assert.ok(state.registrations.length <= REGISTRATIONS_MAX, label);
  const nexusKeys = state.registrations.map((r) => r.nexusKey);
  assert.equal(new Set(nexusKeys).size, nexusKeys.length, `${label}: one registration per nexus key`);
  for (const n of [...RANDOM_NEXUSES, E]) {
    const covering = state.registrations.filter((r) => r.nexusKey === n.key || (r.allTgPt === true && r.initiatorPort === n.initiatorPort));
    assert.ok(covering.length <= 1, `${label}: ${covering.length} registrations cover ${n.key}`);
  }
  for (const r of state.registrations) assert.match(r.key, /^[0-9a-f]{16}$/, label);
  const res = state.reservation;
  if (res !== null) {
    if (isAllRegistrants(res.type)) {
      assert.equal(res.holderNexusKey, null, label);
      assert.ok(state.registrations.length > 0, `${label}: all-registrants reservation without registrants`);
    } else {
      assert.notEqual(res.holderNexusKey, null, label);
      assert.ok(findRegistration(state, res.holderNexusKey as string) !== undefined, `${label}: holder not registered`);
      const holderKey = res.holderNexusKey;
      const holder: Nexus | undefined = RANDOM_NEXUSES.find((n) => n.key === holderKey);
      for (const access of ['read', 'write'] as AccessClass[]) {
        if (holder !== undefined) assert.equal(checkAccess(state, holder, access), 'ok', `${label}: holder ${access}`);
      }
    }
  }
  for (let i = 0; i < state.events.length; i++) {
    if (i > 0) assert.equal(state.events[i].seq, state.events[i - 1].seq + 1, `${label}: event seqs`);
  }
  if (state.events.length > 0) assert.equal(state.events.at(-1)?.seq, state.eventSeq, label);
  assert.deepEqual(decodePrState(JSON.parse(JSON.stringify(state))), state, `${label}: JSON round trip`);
}

test('random PR OUT sequences from four nexuses keep the state invariants (seeded)', (t) => {
  const seed = seedFromEnv();
  t.diagnostic(`seed ${seed} (replay with TESSERA_SEED=${seed})`);
  const prng = new Prng(seed);
  let goods = 0;
  const goodsByAction = new Array<number>(8).fill(0);
  for (let run = 0; run < 200; run++) {
    let state: PrState | null = null;
    for (let step = 0; step < 80; step++) {
      const label = `seed ${seed} run ${run} step ${step}`;
      const cmd = randomCommand(prng, state);
      let outcome: PrOutOutcome;
      try {
        outcome = prOut(state, cmd.nexus, cmd.cdb, cmd.params);
      } catch (err) {
        assert.fail(`${label}: prOut threw ${String(err)}`);
      }
      const { result } = outcome;
      assert.ok([SAM_GOOD, SAM_CHECK_CONDITION, SAM_RESERVATION_CONFLICT].includes(result.status), label);
      assert.equal(result.sense !== null, result.status === SAM_CHECK_CONDITION, label);
      const before: PrState | null = state;
      const after: PrState | null = outcome.state ?? state;
      if (result.status !== SAM_GOOD) assert.equal(outcome.state, null, `${label}: a failed command changed the state`);
      else {
        goods += 1;
        goodsByAction[cmd.sa] += 1;
      }
      const genBefore: number = before?.generation ?? 0;
      const genAfter: number = after?.generation ?? 0;
      const counts = result.status === SAM_GOOD && COUNTING_ACTIONS.has(cmd.sa);
      assert.equal(genAfter, counts ? (genBefore + 1) % 2 ** 32 : genBefore, `${label}: generation (sa ${cmd.sa})`);
      assert.ok((after?.eventSeq ?? 0) >= (before?.eventSeq ?? 0), `${label}: eventSeq went back`);
      if (after !== null) checkInvariants(after, label);
      for (const sa of [0, 1, 2, 3]) {
        const r = prIn(after, cmd.nexus, inCdb(sa, prng.int(300)), 8192);
        assert.equal(r.status, SAM_GOOD, label);
      }
      state = after;
    }
  }
  t.diagnostic(`GOOD per service action 0..7: ${goodsByAction.join(' ')}`);
  assert.ok(goods > 2000, `only ${goods} commands succeeded: the generator is too hostile to test much`);
  assert.ok(goodsByAction.every((n) => n > 0), 'every service action succeeded at least once');
});
