// Persistent reservations (SPC-4 5.12 "Reservations", PERSISTENT RESERVE IN 6.15 and
// OUT 6.16; numbers as best known for r37, titles given so they can be found in any
// revision) as a pure state machine:
// (state, nexus, CDB, parameter list) -> (new state, SCSI result). No IO, no clock,
// no randomness: every gateway that applies the same command to the same state gets
// the same answer, which is what lets pr-gate.ts run it under a compare-and-set.
//
// Invariants of a PrState (checked by the seeded test in pr.test.ts):
// - JSON-serializable and never mutated: prOut returns a fresh state or null
//   ("unchanged"); the stores freeze what they hand out.
// - At most one reservation. A non-all-registrants reservation's holder nexus is
//   covered by a registration; an all-registrants reservation exists only while at
//   least one registration does (SPC-4 5.12.10: every registrant is a holder).
// - At most one registration covers any nexus (see ALL_TG_PT below), so every
//   lookup is unambiguous; at most REGISTRATIONS_MAX registrations.
// - generation (PRgeneration) is a u32 that wraps; it increases by exactly one per
//   successful REGISTER, REGISTER AND IGNORE EXISTING KEY, CLEAR, PREEMPT, PREEMPT
//   AND ABORT and REGISTER AND MOVE, never for RESERVE, RELEASE, PR IN or a command
//   that ended in an error or a conflict (SPC-4 6.15.2; table of PR OUT service
//   actions in 6.16.2).
// - eventSeq only grows, across power cycles too, because gates remember the last
//   seq they delivered. `events` keeps the last EVENTS_KEPT events, but never drops
//   an event of the command that produced the state (one CLEAR may raise a unit
//   attention for every registrant at once).
//
// Design decisions (documented here because the spec leaves them to the device):
// - ALL_TG_PT (register every target port of the initiator port): a gateway cannot
//   enumerate the other gateways' target ports, so the registration is stored once,
//   marked allTgPt, and covers every nexus whose initiator port matches, through any
//   target port, on any gateway. It is therefore one entry in READ KEYS and READ FULL
//   STATUS (with the ALL_TG_PT bit set; SPC-4 6.15.5 leaves the RELATIVE TARGET PORT
//   IDENTIFIER undefined then). Changing its key or unregistering through any of those
//   nexuses acts on the whole registration. Registering with ALL_TG_PT replaces any
//   per-port registrations of the same initiator port (they would otherwise be two
//   registrations covering one nexus). REPORT CAPABILITIES says ATP_C = 1.
// - SPEC_I_PT is not supported (SIP_C = 0): INVALID FIELD IN PARAMETER LIST.
// - REGISTER AND MOVE names the destination's target port only by its relative
//   target port identifier; this gateway spells target ports `<target>,t,0x<tpgt>` with
//   identifier = TPGT + 1 (types.ts), so the destination's target port name is taken
//   from a known registration with that identifier or built from the source nexus's
//   target name. A format 00 TransportID (initiator name without ISID) can only name a
//   port this state already knows: it must match exactly one registered initiator port
//   of that name (other than the source's), else INVALID FIELD IN PARAMETER LIST.
// - Unit attentions and aborts are events addressed to nexus keys; a registration's
//   events go to the nexus that made it (for allTgPt registrations the other target
//   ports' nexuses do not get a copy).
// - APTPL: state is always stored durably; powerLoss() applies the rule for an LU
//   power cycle (re-export of the volume, cluster cold start).

import { assert } from '../../stdx/assert.js';
import { TesseraError } from '../../stdx/errors.js';
import {
  SK_ILLEGAL_REQUEST,
  checkCondition,
  good,
  goodTruncated,
  invalidFieldInCdb,
  invalidFieldInParameterList,
  parameterListLengthError,
} from './sense.js';
import type { AccessClass, Nexus, ScsiResult } from './types.js';
import { SAM_RESERVATION_CONFLICT } from './types.js';

// ---- wire constants ---------------------------------------------------------------

export const OPCODE_PR_IN = 0x5e;
export const OPCODE_PR_OUT = 0x5f;
/** Both PR CDBs are 10 bytes (SPC-4 6.15.1, 6.16.1). */
export const PR_CDB_BYTES = 10;

export const PR_IN_READ_KEYS = 0x00;
export const PR_IN_READ_RESERVATION = 0x01;
export const PR_IN_REPORT_CAPABILITIES = 0x02;
export const PR_IN_READ_FULL_STATUS = 0x03;

export const PR_OUT_REGISTER = 0x00;
export const PR_OUT_RESERVE = 0x01;
export const PR_OUT_RELEASE = 0x02;
export const PR_OUT_CLEAR = 0x03;
export const PR_OUT_PREEMPT = 0x04;
export const PR_OUT_PREEMPT_AND_ABORT = 0x05;
export const PR_OUT_REGISTER_AND_IGNORE = 0x06;
export const PR_OUT_REGISTER_AND_MOVE = 0x07;

/** Persistent reservation types (SPC-4 6.15.3.4). */
export const PR_TYPE_WE = 1;
export const PR_TYPE_EA = 3;
export const PR_TYPE_WE_RO = 5;
export const PR_TYPE_EA_RO = 6;
export const PR_TYPE_WE_AR = 7;
export const PR_TYPE_EA_AR = 8;
export type PrType = 1 | 3 | 5 | 6 | 7 | 8;

/** LU_SCOPE, the only scope SPC-4 still defines (6.15.3.3). */
export const PR_SCOPE_LU = 0;

/** Basic PR OUT parameter list (SPC-4 6.16.3). */
export const PR_OUT_BASIC_LIST_BYTES = 24;
/** REGISTER AND MOVE list header before the TransportID (SPC-4 6.16.4). */
export const PR_OUT_MOVE_HEADER_BYTES = 24;

// Unit attention additional sense codes (ASC 2Ah, SPC-4 annex of ASC/ASCQ).
export const ASC_PR_CHANGED = 0x2a;
export const ASCQ_RESERVATIONS_PREEMPTED = 0x03;
export const ASCQ_RESERVATIONS_RELEASED = 0x04;
export const ASCQ_REGISTRATIONS_PREEMPTED = 0x05;

// Additional sense codes sense.ts does not name, as (ASC << 8) | ASCQ.
const ASC_INVALID_RELEASE_OF_PR = 0x2604;
const ASC_INSUFFICIENT_REGISTRATION_RESOURCES = 0x5504;

/** iSCSI protocol identifier in a TransportID (SPC-4 7.6.2). */
const PROTOCOL_ID_ISCSI = 0x5;
/** ",i,0x" between the iSCSI name and the ISID in an initiator port name (SPC-4 7.6.4.6). */
const ISCSI_PORT_SEPARATOR = ',i,0x';
const ISCSI_TARGET_PORT_SEPARATOR = ',t,0x';
/** An iSCSI name is at most 223 bytes (RFC 7143 §4.2.7.1). */
const ISCSI_NAME_BYTES_MAX = 223;
const ISID_HEX_DIGITS = 12;

// ---- limits --------------------------------------------------------------------------

/** Registrations per LU; one more is INSUFFICIENT REGISTRATION RESOURCES (SPC-4 5.12.7). */
export const REGISTRATIONS_MAX = 128;
/** Events kept in the ring (more when one command produced more). */
export const EVENTS_KEPT = 64;
const U32_MODULUS = 0x1_0000_0000;

// ---- state ---------------------------------------------------------------------------

export interface PrRegistration {
  /** The I_T nexus that registered (`${initiatorPort}|${targetPort}`). */
  nexusKey: string;
  initiatorPort: string;
  targetPort: string;
  relativeTargetPortId: number;
  /** Reservation key as 16 lowercase hex digits (JSON has no u64); never all zero. */
  key: string;
  /** Registered with ALL_TG_PT: covers this initiator port through every target port. */
  allTgPt?: true;
}

export interface PrReservation {
  /** The holder's nexus key; null for the all-registrants types (every registrant holds). */
  holderNexusKey: string | null;
  type: PrType;
  scope: typeof PR_SCOPE_LU;
}

export interface PrEvent {
  /** Increases by one per event, never reused (also across powerLoss). */
  seq: number;
  kind: 'ua' | 'abort';
  nexusKey: string;
  /** For 'ua': the additional sense code and qualifier. */
  asc?: number;
  ascq?: number;
}

export interface PrState {
  /** PRgeneration, u32. */
  generation: number;
  /** The last valid APTPL bit received (SPC-4 5.12.5). */
  aptpl: boolean;
  registrations: PrRegistration[];
  reservation: PrReservation | null;
  /** Seq of the newest event ever produced (0 = none). */
  eventSeq: number;
  events: PrEvent[];
}

export interface PrOutOutcome {
  /** The new state, or null when the command changed nothing. */
  state: PrState | null;
  result: ScsiResult;
}

export function emptyPrState(): PrState {
  return { generation: 0, aptpl: false, registrations: [], reservation: null, eventSeq: 0, events: [] };
}

// ---- results ----------------------------------------------------------------------------

function conflict(): ScsiResult {
  return { status: SAM_RESERVATION_CONFLICT, sense: null, dataIn: null };
}

function insufficientRegistrationResources(): ScsiResult {
  return checkCondition(SK_ILLEGAL_REQUEST, ASC_INSUFFICIENT_REGISTRATION_RESOURCES);
}

// ---- small helpers ---------------------------------------------------------------------

const ZERO_KEY = '0000000000000000';

function keyAt(buf: Buffer, offset: number): string {
  return buf.toString('hex', offset, offset + 8);
}

export function isValidPrType(type: number): type is PrType {
  return type === 1 || type === 3 || type === 5 || type === 6 || type === 7 || type === 8;
}

export function isAllRegistrants(type: PrType): boolean {
  return type === PR_TYPE_WE_AR || type === PR_TYPE_EA_AR;
}

function isRegistrantsOnly(type: PrType): boolean {
  return type === PR_TYPE_WE_RO || type === PR_TYPE_EA_RO;
}

/** The initiator port part of a nexus key (`${initiatorPort}|${targetPort}`; iSCSI names have no '|'). */
function initiatorPortOfNexusKey(nexusKey: string): string {
  const bar = nexusKey.indexOf('|');
  return bar < 0 ? nexusKey : nexusKey.slice(0, bar);
}

/** Does registration `reg` cover the nexus with this key? */
function covers(reg: PrRegistration, nexusKey: string): boolean {
  return reg.nexusKey === nexusKey || (reg.allTgPt === true && reg.initiatorPort === initiatorPortOfNexusKey(nexusKey));
}

function findRegistrationIndex(state: PrState, nexusKey: string): number {
  const exact = state.registrations.findIndex((r) => r.nexusKey === nexusKey);
  if (exact >= 0) return exact;
  const port = initiatorPortOfNexusKey(nexusKey);
  return state.registrations.findIndex((r) => r.allTgPt === true && r.initiatorPort === port);
}

export function findRegistration(state: PrState | null, nexusKey: string): PrRegistration | undefined {
  if (state === null) return undefined;
  const i = findRegistrationIndex(state, nexusKey);
  return i < 0 ? undefined : state.registrations[i];
}

/** Is this nexus a reservation holder (SPC-4 5.12.10)? */
export function isHolder(state: PrState | null, nexusKey: string): boolean {
  const res = state?.reservation ?? null;
  if (res === null) return false;
  if (res.holderNexusKey === null) return findRegistration(state, nexusKey) !== undefined;
  return res.holderNexusKey === nexusKey;
}

/** The registration under which the reservation is held (non-all-registrants types). */
function holderRegistration(state: PrState): PrRegistration | undefined {
  const holder = state.reservation?.holderNexusKey ?? null;
  return holder === null ? undefined : findRegistration(state, holder);
}

// ---- access check ----------------------------------------------------------------------

/**
 * May this nexus run a command of this access class now (SPC-4 5.12.1, table of
 * commands allowed in the presence of each reservation type)? A holder may do
 * anything; for others:
 *   WE: read ok, write conflict.  EA: both conflict.
 *   WE-RO, WE-AR: registered ok; unregistered read ok, write conflict.
 *   EA-RO, EA-AR: registered ok; unregistered both conflict.
 */
export function checkAccess(state: PrState | null, nexus: Nexus, access: AccessClass): 'ok' | 'conflict' {
  const res = state?.reservation ?? null;
  if (access === 'always' || res === null) return 'ok';
  if (isHolder(state, nexus.key)) return 'ok';
  switch (res.type) {
    case PR_TYPE_WE:
      return access === 'read' ? 'ok' : 'conflict';
    case PR_TYPE_EA:
      return 'conflict';
    case PR_TYPE_WE_RO:
    case PR_TYPE_WE_AR:
      if (findRegistration(state, nexus.key) !== undefined) return 'ok';
      return access === 'read' ? 'ok' : 'conflict';
    case PR_TYPE_EA_RO:
    case PR_TYPE_EA_AR:
      return findRegistration(state, nexus.key) !== undefined ? 'ok' : 'conflict';
  }
}

// ---- a draft: a private mutable copy plus the events of one command ----------------------

interface Draft {
  s: PrState;
  events: Array<Omit<PrEvent, 'seq'>>;
}

function draftOf(state: PrState | null): Draft {
  const base = state ?? emptyPrState();
  return {
    s: {
      generation: base.generation,
      aptpl: base.aptpl,
      registrations: base.registrations.map((r) => ({ ...r })),
      reservation: base.reservation === null ? null : { ...base.reservation },
      eventSeq: base.eventSeq,
      events: base.events,
    },
    events: [],
  };
}

function raiseUa(d: Draft, nexusKey: string, ascq: number): void {
  d.events.push({ kind: 'ua', nexusKey, asc: ASC_PR_CHANGED, ascq });
}

/** UA to every registration's nexus except the one the command came from. */
function raiseUaToOthers(d: Draft, issuerKey: string, ascq: number): void {
  for (const reg of d.s.registrations) {
    if (reg.nexusKey !== issuerKey) raiseUa(d, reg.nexusKey, ascq);
  }
}

/** Seals a draft: generation, event seqs, bounded ring. */
function finish(d: Draft, bumpGeneration: boolean): PrState {
  const s = d.s;
  if (bumpGeneration) s.generation = (s.generation + 1) % U32_MODULUS;
  if (d.events.length > 0) {
    const added = d.events.map((e, i) => ({ seq: s.eventSeq + 1 + i, ...e }));
    s.eventSeq += added.length;
    const kept = Math.max(EVENTS_KEPT, added.length);
    s.events = [...s.events, ...added].slice(-kept);
  }
  return s;
}

function changed(d: Draft, bumpGeneration: boolean, result: ScsiResult = good()): PrOutOutcome {
  return { state: finish(d, bumpGeneration), result };
}

function unchanged(result: ScsiResult): PrOutOutcome {
  return { state: null, result };
}

/**
 * After registrations were removed: an all-registrants reservation without
 * registrants is gone; a holder that lost its registration lost its reservation.
 * Returns the reservation that was dropped, if any.
 */
function dropOrphanReservation(d: Draft): PrReservation | null {
  const res = d.s.reservation;
  if (res === null) return null;
  const orphan =
    res.holderNexusKey === null
      ? d.s.registrations.length === 0
      : !d.s.registrations.some((r) => covers(r, res.holderNexusKey as string));
  if (!orphan) return null;
  d.s.reservation = null;
  return res;
}

// ---- PERSISTENT RESERVE OUT ----------------------------------------------------------------

interface BasicParams {
  reservationKey: string;
  serviceActionKey: string;
  allTgPt: boolean;
  aptpl: boolean;
}

/**
 * PERSISTENT RESERVE OUT (SPC-4 6.16). `params` is the data the initiator sent;
 * only the first PARAMETER LIST LENGTH bytes are read, and fewer is an error.
 */
export function prOut(state: PrState | null, nexus: Nexus, cdb: Buffer, params: Buffer | null): PrOutOutcome {
  if (cdb.length < PR_CDB_BYTES) return unchanged(invalidFieldInCdb(0));
  assert(cdb[0] === OPCODE_PR_OUT, 'prOut: not a PERSISTENT RESERVE OUT CDB');
  const serviceAction = cdb[1] & 0x1f;
  const scope = cdb[2] >> 4;
  const type = cdb[2] & 0x0f;
  const paramListBytes = cdb.readUInt32BE(5);
  if (serviceAction > PR_OUT_REGISTER_AND_MOVE) return unchanged(invalidFieldInCdb(1, 4));
  if ((params?.length ?? 0) < paramListBytes) return unchanged(parameterListLengthError());
  const list = params === null ? Buffer.alloc(0) : params.subarray(0, paramListBytes);
  if (serviceAction === PR_OUT_REGISTER_AND_MOVE) return registerAndMove(state, nexus, list);

  // Basic parameter list (SPC-4 6.16.3): exactly 24 bytes without SPEC_I_PT.
  if (list.length < PR_OUT_BASIC_LIST_BYTES) return unchanged(parameterListLengthError());
  if ((list[20] & 0x08) !== 0) return unchanged(invalidFieldInParameterList(20, 3)); // SPEC_I_PT: SIP_C = 0
  if (list.length !== PR_OUT_BASIC_LIST_BYTES) return unchanged(parameterListLengthError());
  const p: BasicParams = {
    reservationKey: keyAt(list, 0),
    serviceActionKey: keyAt(list, 8),
    allTgPt: (list[20] & 0x04) !== 0,
    aptpl: (list[20] & 0x01) !== 0,
  };

  switch (serviceAction) {
    case PR_OUT_REGISTER:
      return register(state, nexus, p, false);
    case PR_OUT_REGISTER_AND_IGNORE:
      return register(state, nexus, p, true);
    case PR_OUT_RESERVE:
      if (scope !== PR_SCOPE_LU) return unchanged(invalidFieldInCdb(2, 7));
      if (!isValidPrType(type)) return unchanged(invalidFieldInCdb(2, 3));
      return reserve(state, nexus, p, type);
    case PR_OUT_RELEASE:
      if (scope !== PR_SCOPE_LU) return unchanged(invalidFieldInCdb(2, 7));
      if (!isValidPrType(type)) return unchanged(invalidFieldInCdb(2, 3));
      return release(state, nexus, p, type);
    case PR_OUT_CLEAR:
      return clear(state, nexus, p);
    case PR_OUT_PREEMPT:
      return preempt(state, nexus, p, scope, type, false);
    case PR_OUT_PREEMPT_AND_ABORT:
      return preempt(state, nexus, p, scope, type, true);
    default:
      return unchanged(invalidFieldInCdb(1, 4));
  }
}

/**
 * The common gate of every service action but REGISTER/REGISTER AND IGNORE: the
 * nexus must be registered and name its own key (SPC-4 6.16.3, RESERVATION KEY).
 */
function registrationFor(state: PrState | null, nexus: Nexus, reservationKey: string): PrRegistration | null {
  const reg = findRegistration(state, nexus.key);
  if (reg === undefined || reg.key !== reservationKey) return null;
  return reg;
}

/** REGISTER and REGISTER AND IGNORE EXISTING KEY (SPC-4 5.12.7, 5.12.11.3). */
function register(state: PrState | null, nexus: Nexus, p: BasicParams, ignoreKey: boolean): PrOutOutcome {
  const d = draftOf(state);
  const index = findRegistrationIndex(d.s, nexus.key);
  if (index < 0) {
    // Unregistered nexus: REGISTER must carry a zero reservation key.
    if (!ignoreKey && p.reservationKey !== ZERO_KEY) return unchanged(conflict());
    // A zero service-action key from an unregistered nexus does nothing, yet the
    // command completed, so PRgeneration still counts it (6.15.2 "requests a REGISTER").
    if (p.serviceActionKey === ZERO_KEY) return changed(d, true);
    if (p.allTgPt) {
      // One allTgPt registration replaces the port's per-target-port registrations.
      d.s.registrations = d.s.registrations.filter((r) => r.initiatorPort !== nexus.initiatorPort);
    }
    if (d.s.registrations.length >= REGISTRATIONS_MAX) return unchanged(insufficientRegistrationResources());
    const reg: PrRegistration = {
      nexusKey: nexus.key,
      initiatorPort: nexus.initiatorPort,
      targetPort: nexus.targetPort,
      relativeTargetPortId: nexus.relativeTargetPortId,
      key: p.serviceActionKey,
    };
    if (p.allTgPt) reg.allTgPt = true;
    d.s.registrations.push(reg);
    d.s.aptpl = p.aptpl;
    return changed(d, true);
  }
  const reg = d.s.registrations[index];
  if (!ignoreKey && p.reservationKey !== reg.key) return unchanged(conflict());
  d.s.aptpl = p.aptpl;
  if (p.serviceActionKey !== ZERO_KEY) {
    reg.key = p.serviceActionKey;
    return changed(d, true);
  }
  unregister(d, index, nexus.key);
  return changed(d, true);
}

/**
 * Removes registration `index` (SPC-4 5.12.11.3): the holder of a non-all-registrants
 * reservation releases it, and for registrants-only types every other registrant
 * gets RESERVATIONS RELEASED; an all-registrants reservation goes with its last
 * registrant (nobody is left to notify).
 */
function unregister(d: Draft, index: number, issuerKey: string): void {
  d.s.registrations.splice(index, 1);
  const dropped = dropOrphanReservation(d);
  if (dropped !== null && isRegistrantsOnly(dropped.type)) {
    raiseUaToOthers(d, issuerKey, ASCQ_RESERVATIONS_RELEASED);
  }
}

/** RESERVE (SPC-4 5.12.9). Never changes PRgeneration. */
function reserve(state: PrState | null, nexus: Nexus, p: BasicParams, type: PrType): PrOutOutcome {
  if (registrationFor(state, nexus, p.reservationKey) === null) return unchanged(conflict());
  const res = state?.reservation ?? null;
  if (res !== null) {
    // The holder asking again for the same type and scope: nothing to do. Anything
    // else while a reservation exists conflicts (no upgrade, no second reservation).
    if (isHolder(state, nexus.key) && res.type === type) return unchanged(good());
    return unchanged(conflict());
  }
  const d = draftOf(state);
  d.s.reservation = { holderNexusKey: isAllRegistrants(type) ? null : nexus.key, type, scope: PR_SCOPE_LU };
  return changed(d, false);
}

/** RELEASE (SPC-4 5.12.11.2). Never changes PRgeneration. */
function release(state: PrState | null, nexus: Nexus, p: BasicParams, type: PrType): PrOutOutcome {
  if (registrationFor(state, nexus, p.reservationKey) === null) return unchanged(conflict());
  const res = state?.reservation ?? null;
  // No reservation, or held by someone else: GOOD, and nothing happens.
  if (res === null || !isHolder(state, nexus.key)) return unchanged(good());
  if (res.type !== type) {
    return unchanged(checkCondition(SK_ILLEGAL_REQUEST, ASC_INVALID_RELEASE_OF_PR));
  }
  const d = draftOf(state);
  d.s.reservation = null;
  if (isRegistrantsOnly(res.type) || isAllRegistrants(res.type)) {
    raiseUaToOthers(d, nexus.key, ASCQ_RESERVATIONS_RELEASED);
  }
  return changed(d, false);
}

/** CLEAR (SPC-4 5.12.11.6): everything goes; the others hear RESERVATIONS PREEMPTED. */
function clear(state: PrState | null, nexus: Nexus, p: BasicParams): PrOutOutcome {
  if (registrationFor(state, nexus, p.reservationKey) === null) return unchanged(conflict());
  const d = draftOf(state);
  raiseUaToOthers(d, nexus.key, ASCQ_RESERVATIONS_PREEMPTED);
  d.s.registrations = [];
  d.s.reservation = null;
  return changed(d, true);
}

/**
 * PREEMPT and PREEMPT AND ABORT (SPC-4 5.12.11.4 and 5.12.11.5, figure "device server
 * interpretation of PREEMPT"):
 * - no reservation, or SA key names no holder: remove the registrations with the SA
 *   key (the issuer's own too), SCOPE/TYPE ignored; SA key 0 is INVALID FIELD IN
 *   PARAMETER LIST, no registration with that key is RESERVATION CONFLICT;
 * - all-registrants reservation: SA key 0 preempts (every other registration goes,
 *   the issuer gets a new reservation of the CDB's type); a non-zero SA key only
 *   removes registrations;
 * - SA key = the holder's key: remove those registrations except the issuer's, and
 *   the issuer holds a new reservation of the CDB's scope and type; if the type
 *   changed, the remaining registrants hear RESERVATIONS RELEASED.
 * Everyone who lost a registration hears REGISTRATIONS PREEMPTED; with ABORT their
 * tasks are aborted too.
 */
function preempt(
  state: PrState | null,
  nexus: Nexus,
  p: BasicParams,
  scope: number,
  type: number,
  abort: boolean,
): PrOutOutcome {
  if (registrationFor(state, nexus, p.reservationKey) === null) return unchanged(conflict());
  const s = state as PrState; // registered, so there is a state
  const res = s.reservation;
  const saKey = p.serviceActionKey;
  const preemptsAllRegistrants = res !== null && res.holderNexusKey === null && saKey === ZERO_KEY;
  const preemptsHolder = res !== null && res.holderNexusKey !== null && holderRegistration(s)?.key === saKey;
  if (!preemptsAllRegistrants && !preemptsHolder) return removeRegistrations(s, nexus, saKey, abort);

  if (scope !== PR_SCOPE_LU) return unchanged(invalidFieldInCdb(2, 7));
  if (!isValidPrType(type)) return unchanged(invalidFieldInCdb(2, 3));
  const d = draftOf(s);
  const issuer = d.s.registrations[findRegistrationIndex(d.s, nexus.key)];
  const lost = d.s.registrations.filter((r) => r !== issuer && (preemptsAllRegistrants || r.key === saKey));
  d.s.registrations = d.s.registrations.filter((r) => !lost.includes(r));
  for (const r of lost) {
    raiseUa(d, r.nexusKey, ASCQ_REGISTRATIONS_PREEMPTED);
    if (abort) d.events.push({ kind: 'abort', nexusKey: r.nexusKey });
  }
  const old = res as PrReservation;
  d.s.reservation = { holderNexusKey: isAllRegistrants(type) ? null : nexus.key, type, scope: PR_SCOPE_LU };
  if (old.type !== type) raiseUaToOthers(d, nexus.key, ASCQ_RESERVATIONS_RELEASED);
  return changed(d, true);
}

function removeRegistrations(state: PrState, nexus: Nexus, saKey: string, abort: boolean): PrOutOutcome {
  if (saKey === ZERO_KEY) return unchanged(invalidFieldInParameterList(8));
  const d = draftOf(state);
  const lost = d.s.registrations.filter((r) => r.key === saKey);
  if (lost.length === 0) return unchanged(conflict());
  d.s.registrations = d.s.registrations.filter((r) => r.key !== saKey);
  for (const r of lost) {
    if (r.nexusKey !== nexus.key) raiseUa(d, r.nexusKey, ASCQ_REGISTRATIONS_PREEMPTED);
    if (abort && r.nexusKey !== nexus.key) d.events.push({ kind: 'abort', nexusKey: r.nexusKey });
  }
  // Only an all-registrants reservation can lose its last holder this way (a
  // non-all-registrants holder's key would have taken the preempt path).
  dropOrphanReservation(d);
  return changed(d, true);
}

// ---- REGISTER AND MOVE ------------------------------------------------------------------

/** A parsed iSCSI TransportID (SPC-4 7.6.4.6). */
export interface IscsiTransportId {
  /** The iSCSI name, lowercased (RFC 3722 names compare case-insensitively). */
  name: string;
  /** 12 lowercase hex digits for format 01, null for format 00 (initiator device). */
  isid: string | null;
}

/**
 * Parses an iSCSI TransportID: FORMAT CODE 00 (name) or 01 (name ",i,0x" ISID);
 * null when malformed. ADDITIONAL LENGTH must be at least 20, a multiple of 4 and
 * fit in `buf`; the name must be NUL-terminated inside it.
 */
export function parseIscsiTransportId(buf: Buffer): IscsiTransportId | null {
  if (buf.length < 4) return null;
  const format = buf[0] >> 6;
  if ((buf[0] & 0x0f) !== PROTOCOL_ID_ISCSI || format > 1) return null;
  const additionalBytes = buf.readUInt16BE(2);
  if (additionalBytes < 20 || additionalBytes % 4 !== 0 || 4 + additionalBytes > buf.length) return null;
  const field = buf.subarray(4, 4 + additionalBytes);
  const nul = field.indexOf(0);
  if (nul <= 0) return null;
  const text = field.toString('utf8', 0, nul).toLowerCase();
  if (format === 0) {
    if (text.includes(ISCSI_PORT_SEPARATOR) || !validIscsiName(text)) return null;
    return { name: text, isid: null };
  }
  const sep = text.indexOf(ISCSI_PORT_SEPARATOR);
  if (sep <= 0) return null;
  const name = text.slice(0, sep);
  const isid = text.slice(sep + ISCSI_PORT_SEPARATOR.length);
  if (!validIscsiName(name) || !/^[0-9a-f]{1,12}$/.test(isid)) return null;
  return { name, isid: isid.padStart(ISID_HEX_DIGITS, '0') };
}

function validIscsiName(name: string): boolean {
  return name.length > 0 && Buffer.byteLength(name, 'utf8') <= ISCSI_NAME_BYTES_MAX && !/[\s,|\0]/.test(name);
}

/** An iSCSI TransportID for an initiator port: format 01 when it carries an ISID, else 00. */
export function encodeIscsiTransportId(initiatorPort: string): Buffer {
  const format = initiatorPort.includes(ISCSI_PORT_SEPARATOR) ? 1 : 0;
  const text = Buffer.from(initiatorPort, 'utf8');
  const additionalBytes = Math.max(20, Math.ceil((text.length + 1) / 4) * 4); // NUL-terminated, padded to 4
  const tid = Buffer.alloc(4 + additionalBytes);
  tid[0] = (format << 6) | PROTOCOL_ID_ISCSI;
  tid.writeUInt16BE(additionalBytes, 2);
  text.copy(tid, 4);
  return tid;
}

function nameOfInitiatorPort(initiatorPort: string): string {
  const sep = initiatorPort.toLowerCase().indexOf(ISCSI_PORT_SEPARATOR);
  return (sep < 0 ? initiatorPort : initiatorPort.slice(0, sep)).toLowerCase();
}

/** The target port with this relative identifier (see the header on how it is named). */
function targetPortFor(state: PrState | null, source: Nexus, relativeTargetPortId: number): string {
  if (source.relativeTargetPortId === relativeTargetPortId) return source.targetPort;
  const known = state?.registrations.find((r) => r.relativeTargetPortId === relativeTargetPortId && r.allTgPt !== true);
  if (known !== undefined) return known.targetPort;
  const sep = source.targetPort.indexOf(ISCSI_TARGET_PORT_SEPARATOR);
  const targetName = sep < 0 ? source.targetPort : source.targetPort.slice(0, sep);
  const tpgt = (relativeTargetPortId - 1).toString(16).padStart(4, '0');
  return `${targetName}${ISCSI_TARGET_PORT_SEPARATOR}${tpgt}`;
}

/** The destination initiator port, spelled as a registration already spells it if one matches. */
function destinationInitiatorPort(state: PrState | null, source: Nexus, tid: IscsiTransportId): string | null {
  const regs = state?.registrations ?? [];
  if (tid.isid !== null) {
    const port = `${tid.name}${ISCSI_PORT_SEPARATOR}${tid.isid}`;
    return regs.find((r) => r.initiatorPort.toLowerCase() === port)?.initiatorPort ?? port;
  }
  // Format 00: only a port this state knows, and only if exactly one matches.
  const sourcePort = source.initiatorPort.toLowerCase();
  const ports = new Set(
    regs
      .map((r) => r.initiatorPort)
      .filter((port) => nameOfInitiatorPort(port) === tid.name && port.toLowerCase() !== sourcePort),
  );
  return ports.size === 1 ? [...ports][0] : null;
}

/** REGISTER AND MOVE (SPC-4 5.12.8, parameter list 6.16.4). */
function registerAndMove(state: PrState | null, nexus: Nexus, list: Buffer): PrOutOutcome {
  if (list.length < PR_OUT_MOVE_HEADER_BYTES) return unchanged(parameterListLengthError());
  const reservationKey = keyAt(list, 0);
  const saKey = keyAt(list, 8);
  const unreg = (list[17] & 0x02) !== 0;
  const aptpl = (list[17] & 0x01) !== 0;
  const relativeTargetPortId = list.readUInt16BE(18);
  const tidBytes = list.readUInt32BE(20);
  if (PR_OUT_MOVE_HEADER_BYTES + tidBytes > list.length) return unchanged(parameterListLengthError());

  const source = registrationFor(state, nexus, reservationKey);
  if (source === null) return unchanged(conflict());
  if (saKey === ZERO_KEY) return unchanged(invalidFieldInParameterList(8));
  const s = state as PrState;
  const res = s.reservation;
  // Only the holder of a reservation that has a single holder can move it; an
  // all-registrants reservation cannot be moved (RESERVATION CONFLICT, 5.12.8).
  if (res === null || res.holderNexusKey !== nexus.key) return unchanged(conflict());

  if (relativeTargetPortId === 0) return unchanged(invalidFieldInParameterList(18));
  const tid = parseIscsiTransportId(list.subarray(PR_OUT_MOVE_HEADER_BYTES, PR_OUT_MOVE_HEADER_BYTES + tidBytes));
  if (tid === null) return unchanged(invalidFieldInParameterList(PR_OUT_MOVE_HEADER_BYTES));
  // Moving to the initiator port the command came through is not a move.
  if (tid.isid !== null && `${tid.name}${ISCSI_PORT_SEPARATOR}${tid.isid}` === nexus.initiatorPort.toLowerCase()) {
    return unchanged(invalidFieldInParameterList(PR_OUT_MOVE_HEADER_BYTES));
  }
  const destPort = destinationInitiatorPort(s, nexus, tid);
  if (destPort === null) return unchanged(invalidFieldInParameterList(PR_OUT_MOVE_HEADER_BYTES));
  const destTargetPort = targetPortFor(s, nexus, relativeTargetPortId);
  const destKey = `${destPort}|${destTargetPort}`;

  const d = draftOf(s);
  const destIndex = findRegistrationIndex(d.s, destKey);
  if (destIndex >= 0) {
    // Already registered: not an error; it takes the service-action key.
    d.s.registrations[destIndex].key = saKey;
  } else {
    if (d.s.registrations.length >= REGISTRATIONS_MAX) return unchanged(insufficientRegistrationResources());
    d.s.registrations.push({
      nexusKey: destKey,
      initiatorPort: destPort,
      targetPort: destTargetPort,
      relativeTargetPortId,
      key: saKey,
    });
  }
  // Same scope and type; the CDB's SCOPE and TYPE are ignored.
  d.s.reservation = { holderNexusKey: destKey, type: res.type, scope: PR_SCOPE_LU };
  if (unreg) {
    const sourceIndex = findRegistrationIndex(d.s, nexus.key);
    // The source no longer holds anything, so unregistering it releases nothing.
    d.s.registrations.splice(sourceIndex, 1);
  }
  d.s.aptpl = aptpl;
  return changed(d, true);
}

// ---- PERSISTENT RESERVE IN -------------------------------------------------------------------

/**
 * PERSISTENT RESERVE IN (SPC-4 6.15). The data is cut to the allocation length and
 * to expectedInBytes; the length fields inside still describe the whole data.
 */
export function prIn(state: PrState | null, nexus: Nexus, cdb: Buffer, expectedInBytes: number): ScsiResult {
  if (cdb.length < PR_CDB_BYTES) return invalidFieldInCdb(0);
  assert(cdb[0] === OPCODE_PR_IN, 'prIn: not a PERSISTENT RESERVE IN CDB');
  const serviceAction = cdb[1] & 0x1f;
  const allocationBytes = cdb.readUInt16BE(7);
  const s = state ?? emptyPrState();
  let data: Buffer;
  switch (serviceAction) {
    case PR_IN_READ_KEYS:
      data = readKeys(s);
      break;
    case PR_IN_READ_RESERVATION:
      data = readReservation(s);
      break;
    case PR_IN_REPORT_CAPABILITIES:
      data = reportCapabilities(s);
      break;
    case PR_IN_READ_FULL_STATUS:
      data = readFullStatus(s);
      break;
    default:
      return invalidFieldInCdb(1, 4);
  }
  void nexus; // every PR IN answer is the same for every nexus
  return goodTruncated(data, allocationBytes, expectedInBytes);
}

/** READ KEYS (SPC-4 6.15.2): PRgeneration, ADDITIONAL LENGTH, one 8-byte key per registration. */
function readKeys(s: PrState): Buffer {
  const data = Buffer.alloc(8 + 8 * s.registrations.length);
  data.writeUInt32BE(s.generation, 0);
  data.writeUInt32BE(8 * s.registrations.length, 4);
  s.registrations.forEach((r, i) => data.write(r.key, 8 + 8 * i, 'hex'));
  return data;
}

/**
 * READ RESERVATION (SPC-4 6.15.3): the key under which the reservation is held,
 * zero for the all-registrants types (6.15.3; libiscsi prin_verify_reserved_as expects 0 too).
 */
function readReservation(s: PrState): Buffer {
  const res = s.reservation;
  if (res === null) {
    const data = Buffer.alloc(8);
    data.writeUInt32BE(s.generation, 0);
    return data;
  }
  const data = Buffer.alloc(24);
  data.writeUInt32BE(s.generation, 0);
  data.writeUInt32BE(16, 4);
  const key = res.holderNexusKey === null ? ZERO_KEY : (holderRegistration(s)?.key ?? ZERO_KEY);
  data.write(key, 8, 'hex');
  data[21] = (res.scope << 4) | res.type;
  return data;
}

/** REPORT CAPABILITIES (SPC-4 6.15.4). */
function reportCapabilities(s: PrState): Buffer {
  const data = Buffer.alloc(8);
  data.writeUInt16BE(8, 0); // LENGTH
  // RLR_C 0, CRH 0 (RESERVE/RELEASE(6/10) handled as SPC-4 says, if at all), SIP_C 0,
  // ATP_C 1 (see the header), PTPL_C 1.
  data[2] = 0x04 | 0x01;
  // TMV 1; ALLOW COMMANDS 000b (no claim about commands the LU, not this file, classifies); PTPL_A.
  data[3] = 0x80 | (s.aptpl ? 0x01 : 0);
  // Type mask: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX in byte 4; EX_AC_AR in byte 5.
  data[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02;
  data[5] = 0x01;
  return data;
}

/** READ FULL STATUS (SPC-4 6.15.5): one full status descriptor per registration. */
function readFullStatus(s: PrState): Buffer {
  const res = s.reservation;
  const descriptors = s.registrations.map((r) => {
    const tid = encodeIscsiTransportId(r.initiatorPort);
    const desc = Buffer.alloc(24 + tid.length);
    desc.write(r.key, 0, 'hex');
    const holds = res !== null && (res.holderNexusKey === null || covers(r, res.holderNexusKey));
    desc[12] = (r.allTgPt === true ? 0x02 : 0) | (holds ? 0x01 : 0);
    if (holds) desc[13] = ((res as PrReservation).scope << 4) | (res as PrReservation).type;
    desc.writeUInt16BE(r.relativeTargetPortId & 0xffff, 18);
    desc.writeUInt32BE(tid.length, 20);
    tid.copy(desc, 24);
    return desc;
  });
  const body = Buffer.concat(descriptors);
  const header = Buffer.alloc(8);
  header.writeUInt32BE(s.generation, 0);
  header.writeUInt32BE(body.length, 4);
  return Buffer.concat([header, body]);
}

// ---- power loss ----------------------------------------------------------------------------

/**
 * What survives a power cycle of the LU (SPC-4 5.12.5): with the last APTPL = 1 the
 * registrations and the reservation; with APTPL = 0 nothing. PRgeneration restarts
 * at zero either way (6.15.2). Pending events are dropped (the LU raises its own
 * POWER ON unit attention), but eventSeq is kept so gates that follow the record keep
 * delivering. A gateway restart is not a power cycle: the state is durable and stays
 * as it is; this is for re-exporting a volume or a cluster cold start.
 */
export function powerLoss(state: PrState | null): PrState | null {
  if (state === null) return null;
  if (state.aptpl) {
    return { ...state, generation: 0, events: [] };
  }
  return { ...state, generation: 0, registrations: [], reservation: null, events: [] };
}

// ---- decoding a stored state ------------------------------------------------------------------

function formatError(what: string): TesseraError {
  return new TesseraError('ERR_FORMAT', `persistent reservation state: ${what}`);
}

function isU32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < U32_MODULUS;
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function isKeyString(v: unknown): v is string {
  return typeof v === 'string' && /^[0-9a-f]{16}$/.test(v) && v !== ZERO_KEY;
}

function decodeRegistration(v: unknown): PrRegistration {
  if (typeof v !== 'object' || v === null) throw formatError('registration is not an object');
  const r = v as Record<string, unknown>;
  if (typeof r.nexusKey !== 'string' || typeof r.initiatorPort !== 'string' || typeof r.targetPort !== 'string') {
    throw formatError('registration names');
  }
  if (!isU32(r.relativeTargetPortId) || r.relativeTargetPortId > 0xffff) throw formatError('relativeTargetPortId');
  if (!isKeyString(r.key)) throw formatError('registration key');
  if (r.allTgPt !== undefined && r.allTgPt !== true) throw formatError('allTgPt');
  const reg: PrRegistration = {
    nexusKey: r.nexusKey,
    initiatorPort: r.initiatorPort,
    targetPort: r.targetPort,
    relativeTargetPortId: r.relativeTargetPortId,
    key: r.key,
  };
  if (r.allTgPt === true) reg.allTgPt = true;
  return reg;
}

function decodeReservation(v: unknown): PrReservation | null {
  if (v === null) return null;
  if (typeof v !== 'object') throw formatError('reservation is not an object');
  const r = v as Record<string, unknown>;
  if (typeof r.type !== 'number' || !isValidPrType(r.type)) throw formatError('reservation type');
  if (r.scope !== PR_SCOPE_LU) throw formatError('reservation scope');
  const holder = r.holderNexusKey;
  if (isAllRegistrants(r.type) ? holder !== null : typeof holder !== 'string') throw formatError('reservation holder');
  return { holderNexusKey: holder as string | null, type: r.type, scope: PR_SCOPE_LU };
}

function decodeEvent(v: unknown): PrEvent {
  if (typeof v !== 'object' || v === null) throw formatError('event is not an object');
  const e = v as Record<string, unknown>;
  if (!isCount(e.seq) || typeof e.nexusKey !== 'string') throw formatError('event seq or nexus');
  if (e.kind === 'abort') return { seq: e.seq, kind: 'abort', nexusKey: e.nexusKey };
  if (e.kind !== 'ua' || !isU32(e.asc) || !isU32(e.ascq) || e.asc > 0xff || e.ascq > 0xff) {
    throw formatError('event kind or sense code');
  }
  return { seq: e.seq, kind: 'ua', nexusKey: e.nexusKey, asc: e.asc, ascq: e.ascq };
}

/**
 * Checks a state read from a store (an opaque JSON value) and returns it typed; null
 * stays null (never written). Throws TesseraError ERR_FORMAT when it is not a state
 * this file wrote.
 */
export function decodePrState(value: unknown): PrState | null {
  if (value === null || value === undefined) return null;
  if (typeof value !== 'object') throw formatError('not an object');
  const v = value as Record<string, unknown>;
  if (!isU32(v.generation)) throw formatError('generation');
  if (typeof v.aptpl !== 'boolean') throw formatError('aptpl');
  if (!Array.isArray(v.registrations) || v.registrations.length > REGISTRATIONS_MAX) throw formatError('registrations');
  if (!isCount(v.eventSeq)) throw formatError('eventSeq');
  if (!Array.isArray(v.events)) throw formatError('events');
  const state: PrState = {
    generation: v.generation,
    aptpl: v.aptpl,
    registrations: v.registrations.map(decodeRegistration),
    reservation: decodeReservation(v.reservation),
    eventSeq: v.eventSeq,
    events: v.events.map(decodeEvent),
  };
  const seqs = state.events.map((e) => e.seq);
  if (seqs.some((seq, i) => seq > state.eventSeq || (i > 0 && seq <= seqs[i - 1]))) throw formatError('event order');
  checkStateInvariants(state);
  return state;
}

/** The invariants of the header that a decoded state must also keep. */
function checkStateInvariants(state: PrState): void {
  const nexusKeys = new Set(state.registrations.map((r) => r.nexusKey));
  if (nexusKeys.size !== state.registrations.length) throw formatError('two registrations of one nexus');
  const allTgPtPorts = state.registrations.filter((r) => r.allTgPt === true).map((r) => r.initiatorPort);
  const coveredTwice = state.registrations.some(
    (r) => allTgPtPorts.filter((port) => port === r.initiatorPort).length > (r.allTgPt === true ? 1 : 0),
  );
  if (coveredTwice) throw formatError('an ALL_TG_PT registration overlaps another');
  const res = state.reservation;
  if (res === null) return;
  const held = res.holderNexusKey === null ? state.registrations.length > 0 : findRegistration(state, res.holderNexusKey) !== undefined;
  if (!held) throw formatError('reservation without a registered holder');
}
