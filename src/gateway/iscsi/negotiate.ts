// Operational parameter negotiation at login (RFC 7143 §6.2, §13): the key table,
// the result functions, and the SessionParams a login ends with. Pure.
//
// The target is always the responder here: it answers the keys the initiator
// offers and never offers negotiated keys of its own, so no answer from the
// initiator ever has to be matched. The one exception is the declarative
// MaxRecvDataSegmentLength, which we announce once in the operational stage.
//
// Invariants:
// - Every offered key gets exactly one answer: a value, NotUnderstood (unknown
//   and private X-/X# keys), Irrelevant (a key that does not apply here), or
//   Reject (value malformed or out of range; the key keeps its default).
// - Answers come from the result functions of RFC 7143 §13 (min, max, OR, AND,
//   first acceptable list entry), so the initiator, applying the same function,
//   arrives at the same value; params() reports exactly those values.
// - A key negotiated once may not be offered again in the same login (RFC 7143
//   §6.2 (§?)): that, and a key repeated inside one text, is a protocol error.
// - Keys the initiator did not offer keep the RFC 7143 §13 defaults, never our
//   preferences: the initiator does not know our preferences.
import { assert } from '../../stdx/assert.js';

export interface SessionParams {
  headerDigest: boolean;
  dataDigest: boolean;
  maxConnections: number;
  initialR2T: boolean;
  immediateData: boolean;
  maxBurstLength: number;
  firstBurstLength: number;
  /** Seconds. */
  defaultTime2Wait: number;
  /** Seconds. */
  defaultTime2Retain: number;
  maxOutstandingR2T: number;
  dataPduInOrder: boolean;
  dataSequenceInOrder: boolean;
  errorRecoveryLevel: number;
  /** What the initiator declared it can receive: our Data-In and other PDUs' data segments must not exceed it. */
  initiatorMaxRecvDataSegmentLength: number;
  /** What we declared (8192, the default, if the login never reached the operational stage). */
  targetMaxRecvDataSegmentLength: number;
}

/** RFC 7143 §13 defaults (§13.1–§13.20). */
export function defaultSessionParams(): SessionParams {
  return {
    headerDigest: false,
    dataDigest: false,
    maxConnections: 1,
    initialR2T: true,
    immediateData: true,
    maxBurstLength: 262144,
    firstBurstLength: 65536,
    defaultTime2Wait: 2,
    defaultTime2Retain: 20,
    maxOutstandingR2T: 1,
    dataPduInOrder: true,
    dataSequenceInOrder: true,
    errorRecoveryLevel: 0,
    initiatorMaxRecvDataSegmentLength: 8192,
    targetMaxRecvDataSegmentLength: 8192,
  };
}

export type Digest = 'CRC32C' | 'None';

/** Our limits and preferences; each answer is the result function over the offer and these. */
export interface TargetLimits {
  /** Declared MaxRecvDataSegmentLength: the largest data segment we accept (512..2^24-1). */
  maxRecvDataSegmentBytes: number;
  maxBurstBytes: number;
  firstBurstBytes: number;
  maxConnections: number;
  /** ImmediateData (AND): false forces No. */
  immediateData: boolean;
  /**
   * InitialR2T (OR): true forces Yes; false lets the initiator choose No (then
   * unsolicited Data-Out must be handled).
   */
  initialR2T: boolean;
  maxOutstandingR2T: number;
  /** Digests we accept; the initiator's order decides among them (RFC 7143 §6.2.1). */
  digests: Digest[];
  /** Seconds; DefaultTime2Wait result is max(offer, ours). */
  defaultTime2Wait: number;
  /** Seconds; DefaultTime2Retain result is min(offer, ours): 0 at ErrorRecoveryLevel 0. */
  defaultTime2Retain: number;
  /** Highest ErrorRecoveryLevel we implement. */
  maxErrorRecoveryLevel: number;
}

/**
 * Defaults. InitialR2T = Yes, like LIO and tgt: with ImmediateData = Yes a write
 * up to min(FirstBurstLength, MaxRecvDataSegmentLength) already skips the R2T
 * round trip, and Yes keeps unsolicited Data-Out (a second buffering path) off
 * until it is measured to matter. MaxBurstLength 1 MiB and MaxOutstandingR2T 8
 * only take effect when the initiator offers as much (result = min).
 */
export function defaultTargetLimits(): TargetLimits {
  return {
    maxRecvDataSegmentBytes: 262144,
    maxBurstBytes: 1024 * 1024,
    firstBurstBytes: 65536,
    maxConnections: 4,
    immediateData: true,
    initialR2T: true,
    maxOutstandingR2T: 8,
    digests: ['CRC32C', 'None'],
    defaultTime2Wait: 2,
    defaultTime2Retain: 0,
    maxErrorRecoveryLevel: 0,
  };
}

export type NegotiationStage = 'security' | 'operational';

export interface NegotiatorOptions {
  sessionType: 'Normal' | 'Discovery';
  /** False when the connection joins an existing session (TSIH ≠ 0): leading-only keys don't apply. */
  leadingConnection: boolean;
}

export interface NegotiationResult {
  /** Our answers, in the order of the offer, plus our declarations. */
  response: Array<[string, string]>;
  /** Protocol errors (repeated keys): the login must fail (status 2/0). */
  errors: string[];
}

const MAX_NUMERIC = 2 ** 24 - 1;

type BoolKey = 'initialR2T' | 'immediateData' | 'dataPduInOrder' | 'dataSequenceInOrder';
type NumKey =
  | 'maxConnections'
  | 'maxBurstLength'
  | 'firstBurstLength'
  | 'defaultTime2Wait'
  | 'defaultTime2Retain'
  | 'maxOutstandingR2T'
  | 'errorRecoveryLevel';

/** How a key is answered (RFC 7143 §6.2.1 list, §6.2.2 simple values, §13 per key). */
type KeySpec =
  | { kind: 'digest'; field: 'headerDigest' | 'dataDigest' }
  | { kind: 'or' | 'and'; field: BoolKey; leadingOnly: boolean; discovery: boolean }
  | { kind: 'min' | 'max'; field: NumKey; lo: number; hi: number; leadingOnly: boolean; discovery: boolean }
  | { kind: 'declared-mrdsl' }
  /** Obsolete marker keys (RFC 7143 §13.25 (§?)): answered so that markers stay off. */
  | { kind: 'obsolete'; answer: string };

/**
 * The operational keys (RFC 7143 §13.1–§13.20). `discovery: false` marks keys
 * that are Irrelevant in a Discovery session (the session carries no SCSI data);
 * RFC 7143 §13 (§?) lists them per key.
 */
const KEYS: ReadonlyMap<string, KeySpec> = new Map<string, KeySpec>([
  ['HeaderDigest', { kind: 'digest', field: 'headerDigest' }],
  ['DataDigest', { kind: 'digest', field: 'dataDigest' }],
  ['MaxConnections', { kind: 'min', field: 'maxConnections', lo: 1, hi: 65535, leadingOnly: true, discovery: false }],
  ['InitialR2T', { kind: 'or', field: 'initialR2T', leadingOnly: true, discovery: false }],
  ['ImmediateData', { kind: 'and', field: 'immediateData', leadingOnly: true, discovery: false }],
  ['MaxRecvDataSegmentLength', { kind: 'declared-mrdsl' }],
  ['MaxBurstLength', { kind: 'min', field: 'maxBurstLength', lo: 512, hi: MAX_NUMERIC, leadingOnly: true, discovery: false }],
  ['FirstBurstLength', { kind: 'min', field: 'firstBurstLength', lo: 512, hi: MAX_NUMERIC, leadingOnly: true, discovery: false }],
  ['DefaultTime2Wait', { kind: 'max', field: 'defaultTime2Wait', lo: 0, hi: 3600, leadingOnly: true, discovery: true }],
  ['DefaultTime2Retain', { kind: 'min', field: 'defaultTime2Retain', lo: 0, hi: 3600, leadingOnly: true, discovery: true }],
  ['MaxOutstandingR2T', { kind: 'min', field: 'maxOutstandingR2T', lo: 1, hi: 65535, leadingOnly: true, discovery: false }],
  ['DataPDUInOrder', { kind: 'or', field: 'dataPduInOrder', leadingOnly: true, discovery: false }],
  ['DataSequenceInOrder', { kind: 'or', field: 'dataSequenceInOrder', leadingOnly: true, discovery: false }],
  ['ErrorRecoveryLevel', { kind: 'min', field: 'errorRecoveryLevel', lo: 0, hi: 2, leadingOnly: true, discovery: true }],
  ['IFMarker', { kind: 'obsolete', answer: 'No' }],
  ['OFMarker', { kind: 'obsolete', answer: 'No' }],
  ['IFMarkInt', { kind: 'obsolete', answer: 'Irrelevant' }],
  ['OFMarkInt', { kind: 'obsolete', answer: 'Irrelevant' }],
]);

/** True for a key negotiate() answers (the rest belong to login.ts or are unknown). */
export function isOperationalKey(key: string): boolean {
  return KEYS.has(key);
}

/** A decimal (or 0x hex) numerical value (RFC 7143 §6.1), or null when malformed. */
export function parseNumber(value: string): number | null {
  if (/^[0-9]{1,10}$/.test(value)) return Number(value);
  if (/^0[xX][0-9A-Fa-f]{1,8}$/.test(value)) return Number.parseInt(value.slice(2), 16);
  return null;
}

function validMrdsl(value: string): boolean {
  const n = parseNumber(value);
  return n !== null && n >= 512 && n <= MAX_NUMERIC;
}

function parseBoolean(value: string): boolean | null {
  if (value === 'Yes') return true;
  if (value === 'No') return false;
  return null;
}

function yesNo(b: boolean): string {
  return b ? 'Yes' : 'No';
}

function checkLimits(limits: TargetLimits): void {
  const inRange = (n: number, lo: number, hi: number): boolean => Number.isInteger(n) && n >= lo && n <= hi;
  assert(inRange(limits.maxRecvDataSegmentBytes, 512, MAX_NUMERIC), 'maxRecvDataSegmentBytes out of range');
  assert(inRange(limits.maxBurstBytes, 512, MAX_NUMERIC), 'maxBurstBytes out of range');
  assert(inRange(limits.firstBurstBytes, 512, limits.maxBurstBytes), 'firstBurstBytes out of range');
  assert(inRange(limits.maxConnections, 1, 65535), 'maxConnections out of range');
  assert(inRange(limits.maxOutstandingR2T, 1, 65535), 'maxOutstandingR2T out of range');
  assert(inRange(limits.defaultTime2Wait, 0, 3600) && inRange(limits.defaultTime2Retain, 0, 3600), 'Time2Wait/Retain out of range');
  assert(inRange(limits.maxErrorRecoveryLevel, 0, 2), 'maxErrorRecoveryLevel out of range');
  assert(limits.digests.includes('None') || limits.digests.includes('CRC32C'), 'no digest allowed');
}

/** Operational negotiation of one connection's login. */
export class Negotiator {
  private readonly params = defaultSessionParams();
  /** Keys negotiated (answered with a value) in this login. */
  private readonly negotiated = new Set<string>();
  private announcedMrdsl = false;

  constructor(
    private readonly limits: TargetLimits,
    private readonly options: NegotiatorOptions,
  ) {
    checkLimits(limits);
  }

  /**
   * Answers one complete text's operational keys. In the security stage
   * operational keys are answered Irrelevant and not recorded: the initiator may
   * offer them again in the operational stage, and both sides keep the default
   * meanwhile. Keys this table does not know are answered NotUnderstood: the
   * caller passes only keys it did not handle itself.
   */
  negotiate(pairs: ReadonlyArray<readonly [string, string]>, stage: NegotiationStage): NegotiationResult {
    const errors: string[] = [];
    const seen = new Set<string>();
    for (const [key] of pairs) {
      if (seen.has(key)) errors.push(`${key} offered twice in one text`);
      else if (this.negotiated.has(key)) errors.push(`${key} offered again after it was negotiated`);
      seen.add(key);
    }
    // A bad declaration cannot be answered with Reject: our own declaration of
    // the same key follows in this response, and the two would be ambiguous.
    const mrdsl = pairs.find(([key]) => key === 'MaxRecvDataSegmentLength');
    if (stage === 'operational' && mrdsl !== undefined && !validMrdsl(mrdsl[1])) {
      errors.push(`MaxRecvDataSegmentLength=${mrdsl[1].slice(0, 32)} is not 512..2^24-1`);
    }
    if (errors.length > 0) return { response: [], errors };

    // Answer FirstBurstLength last: its result depends on InitialR2T,
    // ImmediateData and MaxBurstLength, wherever they appear in the text.
    const answers = new Map<string, string>();
    const first = pairs.find(([key]) => key === 'FirstBurstLength');
    for (const [key, value] of pairs) {
      if (key !== 'FirstBurstLength') answers.set(key, this.answer(key, value, stage));
    }
    if (first !== undefined) answers.set(first[0], this.answer(first[0], first[1], stage));

    const response: Array<[string, string]> = [];
    for (const [key] of pairs) {
      // The initiator's MaxRecvDataSegmentLength is declarative: it gets no echo.
      if (key === 'MaxRecvDataSegmentLength' && answers.get(key) === '') continue;
      response.push([key, answers.get(key) as string]);
    }
    if (stage === 'operational' && !this.announcedMrdsl) {
      this.announcedMrdsl = true;
      this.params.targetMaxRecvDataSegmentLength = this.limits.maxRecvDataSegmentBytes;
      response.push(['MaxRecvDataSegmentLength', String(this.limits.maxRecvDataSegmentBytes)]);
    }
    return { response, errors };
  }

  /** The values both sides now hold (a copy). */
  result(): SessionParams {
    const p = { ...this.params };
    // Only reachable when the two keys arrived in different PDUs in the wrong
    // order; FirstBurstLength must never exceed MaxBurstLength (RFC 7143 §13.14).
    p.firstBurstLength = Math.min(p.firstBurstLength, p.maxBurstLength);
    return p;
  }

  /** One answer; records the result when the key was negotiated. '' = declaration accepted, no echo. */
  private answer(key: string, value: string, stage: NegotiationStage): string {
    const spec = KEYS.get(key);
    if (spec === undefined) return 'NotUnderstood';
    if (stage === 'security') return 'Irrelevant';
    switch (spec.kind) {
      case 'digest':
        return this.answerDigest(key, spec.field, value);
      case 'or':
      case 'and':
        return this.answerBoolean(key, spec, value);
      case 'min':
      case 'max':
        return this.answerNumber(key, spec, value);
      case 'declared-mrdsl':
        return this.acceptInitiatorMrdsl(key, value);
      case 'obsolete':
        return spec.answer;
    }
  }

  private irrelevantHere(spec: { leadingOnly: boolean; discovery: boolean }): boolean {
    if (spec.leadingOnly && !this.options.leadingConnection) return true;
    return this.options.sessionType === 'Discovery' && !spec.discovery;
  }

  /** List negotiation (RFC 7143 §6.2.1): the first offered value we accept. */
  private answerDigest(key: string, field: 'headerDigest' | 'dataDigest', value: string): string {
    const offered = value.split(',');
    if (offered.some((v) => v.length === 0 || v.length > 255)) return 'Reject';
    const chosen = offered.find((v): v is Digest => (v === 'CRC32C' || v === 'None') && this.limits.digests.includes(v));
    if (chosen === undefined) return 'Reject';
    this.negotiated.add(key);
    this.params[field] = chosen === 'CRC32C';
    return chosen;
  }

  private answerBoolean(key: string, spec: { kind: 'or' | 'and'; field: BoolKey; leadingOnly: boolean; discovery: boolean }, value: string): string {
    const offer = parseBoolean(value);
    if (offer === null) return 'Reject';
    if (this.irrelevantHere(spec)) return 'Irrelevant';
    const ours = this.ourBoolean(spec.field);
    const result = spec.kind === 'or' ? offer || ours : offer && ours;
    this.negotiated.add(key);
    this.params[spec.field] = result;
    return yesNo(result);
  }

  private ourBoolean(field: BoolKey): boolean {
    switch (field) {
      case 'initialR2T':
        return this.limits.initialR2T;
      case 'immediateData':
        return this.limits.immediateData;
      case 'dataPduInOrder':
      case 'dataSequenceInOrder':
        // We only implement in-order data (memo §3): Yes wins under OR.
        return true;
    }
  }

  private answerNumber(key: string, spec: { kind: 'min' | 'max'; field: NumKey; lo: number; hi: number; leadingOnly: boolean; discovery: boolean }, value: string): string {
    const offer = parseNumber(value);
    if (offer === null || offer < spec.lo || offer > spec.hi) return 'Reject';
    if (this.irrelevantHere(spec)) return 'Irrelevant';
    if (spec.field === 'firstBurstLength' && this.params.initialR2T && !this.params.immediateData) {
      return 'Irrelevant'; // no unsolicited data at all (RFC 7143 §13.14)
    }
    const ours = this.ourNumber(spec.field);
    const result = spec.kind === 'min' ? Math.min(offer, ours) : Math.max(offer, ours);
    this.negotiated.add(key);
    this.params[spec.field] = result;
    return String(result);
  }

  private ourNumber(field: NumKey): number {
    switch (field) {
      case 'maxConnections':
        return this.limits.maxConnections;
      case 'maxBurstLength':
        return this.limits.maxBurstBytes;
      case 'firstBurstLength':
        return Math.min(this.limits.firstBurstBytes, this.params.maxBurstLength);
      case 'defaultTime2Wait':
        return this.limits.defaultTime2Wait;
      case 'defaultTime2Retain':
        return this.limits.defaultTime2Retain;
      case 'maxOutstandingR2T':
        return this.limits.maxOutstandingR2T;
      case 'errorRecoveryLevel':
        return this.limits.maxErrorRecoveryLevel;
    }
  }

  /** The initiator's declaration (RFC 7143 §13.12): what it can receive. */
  private acceptInitiatorMrdsl(key: string, value: string): string {
    assert(validMrdsl(value), 'MaxRecvDataSegmentLength checked before answering');
    this.negotiated.add(key);
    this.params.initiatorMaxRecvDataSegmentLength = parseNumber(value) as number;
    return '';
  }
}
