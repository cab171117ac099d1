// The login phase of one iSCSI connection, target side (RFC 7143 §6.3, Login
// Request/Response §11.12/§11.13), as a pure state machine over decoded Login
// Request fields and data segments; plus the SendTargets answer (RFC 7143 §13.3).
// The session layer frames PDUs, fills TSIH and the sequence numbers, and decides
// whether a login creates a session or joins one; this file decides everything
// the login text and the stage flags say.
//
// Invariants:
// - handle() never throws on input from the wire: every malformed or
//   unexpected request becomes a final Login Response with an error status
//   (outcome 'fail'); the caller sends it and closes the connection.
// - Stages only move forward: Security (0) → Operational (1) → Full Feature (3),
//   never to the reserved stage 2. Our T bit is set only when the initiator set
//   it, with the initiator's NSG; a response with T = 1 and NSG = 3 ends the
//   login ('complete').
// - A target with CHAP configured is never reached without CHAP succeeding:
//   skipping the security stage, declining CHAP, or asking to leave the
//   security stage before CHAP completed fails with 2/1.
// - ISID, TSIH, ITT, CID and the versions stay those of the first request
//   (checked like LIO does: 2/0 otherwise).
// - Work is bounded: at most `maxLoginPdus` requests, 8192 bytes of data per
//   request (the MaxRecvDataSegmentLength default that holds during login),
//   64 KiB of text joined over C-bit requests, 8192 bytes per response.
import { TesseraError } from '../../stdx/errors.js';
import { ChapAuthenticator } from './chap.js';
import type { ChapConfig } from './chap.js';
import { Negotiator } from './negotiate.js';
import type { SessionParams, TargetLimits } from './negotiate.js';
import type { LoginRequestPdu, LoginResponseFields } from './pdu-types.js';
import { TextAccumulator, encodeTextKeys, parseTextKeys } from './text.js';

/** Login Response Status-Class / Status-Detail (RFC 7143 §11.13.5). */
export const LoginStatus = {
  SUCCESS: [0x00, 0x00],
  INITIATOR_ERROR: [0x02, 0x00],
  AUTH_FAILED: [0x02, 0x01],
  FORBIDDEN: [0x02, 0x02],
  NOT_FOUND: [0x02, 0x03],
  UNSUPPORTED_VERSION: [0x02, 0x05],
  MISSING_PARAMETER: [0x02, 0x07],
  SESSION_TYPE_UNSUPPORTED: [0x02, 0x09],
  INVALID_DURING_LOGIN: [0x02, 0x0b],
  OUT_OF_RESOURCES: [0x03, 0x02],
} as const;
export type LoginStatusCode = (typeof LoginStatus)[keyof typeof LoginStatus];

/** Login stages (CSG/NSG values, RFC 7143 §11.12.3). */
export const STAGE_SECURITY = 0;
export const STAGE_OPERATIONAL = 1;
export const STAGE_FULL_FEATURE = 3;

/** MaxRecvDataSegmentLength default (RFC 7143 §13.12): it bounds login data both ways. */
export const LOGIN_DATA_LIMIT_BYTES = 8192;
export const LOGIN_TEXT_LIMIT_BYTES = 64 * 1024;
export const DEFAULT_MAX_LOGIN_PDUS = 32;
/** RFC 7143 §4.2.7.1 (§?): iSCSI names are at most 223 bytes. */
const MAX_ISCSI_NAME_BYTES = 223;

export interface LoginPortal {
  /** host:port ([v6]:port for IPv6), as TargetAddress spells it. */
  address: string;
  tpgt: number;
}

export interface LoginTarget {
  name: string;
  alias?: string;
  allowInitiator(initiatorName: string): boolean;
  /** Credentials the initiator must prove; null = no authentication. */
  chap: ChapConfig | null;
  portals: LoginPortal[];
}

export interface LoginTargets {
  find(name: string): LoginTarget | null;
  /** The targets this initiator may see (SendTargets=All). */
  listFor(initiatorName: string): LoginTarget[];
}

export interface LoginContext {
  /** The portal this connection came in on. */
  portal: LoginPortal;
  targetLimits: TargetLimits;
  targets: LoginTargets;
  randomBytes: (n: number) => Buffer;
  /** CHAP_A values we accept (default MD5 and SHA-256). */
  chapAlgorithms?: number[];
  maxLoginPdus?: number;
}

export type SessionType = 'Normal' | 'Discovery';

export interface LoginResult {
  sessionType: SessionType;
  initiatorName: string;
  initiatorAlias?: string;
  targetName: string | null;
  isid: Buffer;
  /** From the request: 0 = new session, otherwise the session to join. */
  tsih: number;
  cid: number;
  params: SessionParams;
}

export type LoginResponse = Omit<LoginResponseFields, 'statSN' | 'expCmdSN' | 'maxCmdSN' | 'tsih'>;

export interface LoginStep {
  response: LoginResponse;
  data: Buffer;
  /** continue: send and wait for the next request; fail: send and close; complete: send, then full feature phase. */
  outcome: 'continue' | 'fail' | 'complete';
  result?: LoginResult;
  /** Why the login failed (for the log; never sent). */
  reason?: string;
}

/** Keys login.ts handles itself; the rest go to the Negotiator. */
const IDENTITY_KEYS = new Set(['InitiatorName', 'InitiatorAlias', 'TargetName', 'SessionType']);
const SECURITY_KEYS = new Set(['AuthMethod', 'CHAP_A', 'CHAP_I', 'CHAP_C', 'CHAP_N', 'CHAP_R']);

interface FirstRequest {
  isid: Buffer;
  tsih: number;
  itt: number;
  cid: number;
  versionMax: number;
  versionMin: number;
}

interface Identity {
  sessionType: SessionType;
  initiatorName: string;
  initiatorAlias?: string;
  target: LoginTarget | null;
  /** The identity keys as first declared, to check repeats against. */
  declared: Map<string, string>;
}

/** A failure decided while processing one request. */
class LoginFailure {
  constructor(
    readonly status: LoginStatusCode,
    readonly reason: string,
  ) {}
}

type State = 'start' | 'security' | 'operational' | 'complete' | 'failed';

export class LoginMachine {
  private state: State = 'start';
  private first: FirstRequest | null = null;
  private pduCount = 0;
  private readonly text = new TextAccumulator(LOGIN_TEXT_LIMIT_BYTES);
  private identity: Identity | null = null;
  private negotiator: Negotiator | null = null;
  private authMethod: 'CHAP' | 'None' | null = null;
  private chap: ChapAuthenticator | null = null;
  private firstResponseSent = false;

  constructor(private readonly ctx: LoginContext) {}

  /** One Login Request (decoded BHS fields and its data segment) → our response. */
  handle(req: LoginRequestPdu, data: Buffer): LoginStep {
    try {
      return this.process(req, data);
    } catch (err) {
      if (err instanceof LoginFailure) return this.fail(req, err.status, err.reason);
      if (err instanceof TesseraError) return this.fail(req, LoginStatus.INITIATOR_ERROR, err.message);
      throw err;
    }
  }

  private process(req: LoginRequestPdu, data: Buffer): LoginStep {
    if (this.state === 'complete' || this.state === 'failed') {
      throw new LoginFailure(LoginStatus.INVALID_DURING_LOGIN, `login request after the login ${this.state === 'complete' ? 'completed' : 'failed'}`);
    }
    this.pduCount += 1;
    const maxPdus = this.ctx.maxLoginPdus ?? DEFAULT_MAX_LOGIN_PDUS;
    if (this.pduCount > maxPdus) throw new LoginFailure(LoginStatus.INITIATOR_ERROR, `more than ${maxPdus} login requests`);
    this.checkHeader(req, data);
    if (this.state === 'start') this.state = req.csg === STAGE_SECURITY ? 'security' : 'operational';

    // RFC 7143 §11.12.2 (§?): while the initiator sends C = 1 the text is
    // incomplete; we answer each part with an empty response and C = 0, T = 0.
    const text = this.text.push(data, req.cont);
    if (text === null) return this.reply(req, [], false);

    const pairs = parseTextKeys(text);
    const keys = uniqueKeys(pairs);
    const identity = this.identity ?? this.establishIdentity(keys);
    this.checkRepeatedIdentity(identity, keys);

    const security = pairs.filter(([k]) => SECURITY_KEYS.has(k));
    const operational = pairs.filter(([k]) => !SECURITY_KEYS.has(k) && !IDENTITY_KEYS.has(k));
    const response: Array<[string, string]> = this.firstResponseDeclarations(identity);
    if (req.csg === STAGE_SECURITY) {
      response.push(...this.securityStage(identity, new Map(security)));
    } else {
      if (this.authRequired(identity) && !this.chap?.done) {
        throw new LoginFailure(LoginStatus.AUTH_FAILED, 'authentication required: the security stage may not be skipped');
      }
      if (security.length > 0) throw new LoginFailure(LoginStatus.INITIATOR_ERROR, `${security[0][0]} outside the security stage`);
    }
    const negotiation = this.negotiatorFor(identity, req).negotiate(operational, req.csg === STAGE_SECURITY ? 'security' : 'operational');
    if (negotiation.errors.length > 0) throw new LoginFailure(LoginStatus.INITIATOR_ERROR, negotiation.errors.join('; '));
    response.push(...negotiation.response);

    const transit = req.transit && this.mayLeaveStage(identity, req);
    return this.reply(req, response, transit);
  }

  /** Header rules (RFC 7143 §11.12): flags, stages, versions, and fields fixed for the whole login. */
  private checkHeader(req: LoginRequestPdu, data: Buffer): void {
    const first = this.first;
    if (first === null) {
      // Version 0 is the only one defined (RFC 7143 §11.12.4).
      if (req.versionMin > 0) throw new LoginFailure(LoginStatus.UNSUPPORTED_VERSION, `version-min ${req.versionMin}`);
      if (req.isid.length !== 6) throw new LoginFailure(LoginStatus.INITIATOR_ERROR, 'ISID is not 6 bytes');
      this.first = { isid: Buffer.from(req.isid), tsih: req.tsih, itt: req.itt, cid: req.cid, versionMax: req.versionMax, versionMin: req.versionMin };
    } else {
      const same =
        req.isid.equals(first.isid) &&
        req.tsih === first.tsih &&
        req.itt === first.itt &&
        req.cid === first.cid &&
        req.versionMax === first.versionMax &&
        req.versionMin === first.versionMin;
      if (!same) throw new LoginFailure(LoginStatus.INITIATOR_ERROR, 'ISID, TSIH, ITT, CID or version changed during login');
    }
    if (req.transit && req.cont) throw new LoginFailure(LoginStatus.INITIATOR_ERROR, 'T and C both set');
    if (req.csg !== STAGE_SECURITY && req.csg !== STAGE_OPERATIONAL) throw new LoginFailure(LoginStatus.INITIATOR_ERROR, `CSG ${req.csg} in a login request`);
    const expected = this.state === 'security' ? STAGE_SECURITY : this.state === 'operational' ? STAGE_OPERATIONAL : req.csg;
    if (req.csg !== expected) throw new LoginFailure(LoginStatus.INITIATOR_ERROR, `CSG ${req.csg} while in stage ${expected}`);
    if (req.transit && ((req.nsg !== STAGE_OPERATIONAL && req.nsg !== STAGE_FULL_FEATURE) || req.nsg <= req.csg)) {
      throw new LoginFailure(LoginStatus.INITIATOR_ERROR, `transit from stage ${req.csg} to ${req.nsg}`);
    }
    if (data.length > LOGIN_DATA_LIMIT_BYTES) throw new LoginFailure(LoginStatus.INITIATOR_ERROR, `login data segment of ${data.length} bytes`);
  }

  /** The first complete text names the initiator, the session type and the target (RFC 7143 §6.3.1 (§?)). */
  private establishIdentity(keys: Map<string, string>): Identity {
    const initiatorName = keys.get('InitiatorName');
    if (initiatorName === undefined) throw new LoginFailure(LoginStatus.MISSING_PARAMETER, 'no InitiatorName');
    checkName('InitiatorName', initiatorName);
    const typeText = keys.get('SessionType') ?? 'Normal';
    if (typeText !== 'Normal' && typeText !== 'Discovery') throw new LoginFailure(LoginStatus.SESSION_TYPE_UNSUPPORTED, `SessionType=${typeText.slice(0, 32)}`);
    let target: LoginTarget | null = null;
    if (typeText === 'Normal') {
      const targetName = keys.get('TargetName');
      if (targetName === undefined) throw new LoginFailure(LoginStatus.MISSING_PARAMETER, 'no TargetName in a Normal session');
      checkName('TargetName', targetName);
      target = this.ctx.targets.find(targetName);
      if (target === null) throw new LoginFailure(LoginStatus.NOT_FOUND, `no target ${targetName}`);
      if (!target.allowInitiator(initiatorName)) throw new LoginFailure(LoginStatus.FORBIDDEN, `${initiatorName} may not log in to ${targetName}`);
    }
    const declared = new Map<string, string>();
    for (const key of IDENTITY_KEYS) {
      const value = keys.get(key);
      if (value !== undefined) declared.set(key, value);
    }
    const alias = keys.get('InitiatorAlias');
    const identity: Identity = { sessionType: typeText, initiatorName, target, declared };
    if (alias !== undefined) identity.initiatorAlias = alias;
    this.identity = identity;
    return identity;
  }

  /** Identity keys may be repeated in later texts (some initiators do), but not changed. */
  private checkRepeatedIdentity(identity: Identity, keys: Map<string, string>): void {
    for (const key of IDENTITY_KEYS) {
      const value = keys.get(key);
      if (value === undefined) continue;
      const before = identity.declared.get(key);
      if (before === undefined) {
        // Only InitiatorAlias may come late; names and type are fixed by the first text.
        if (key !== 'InitiatorAlias') throw new LoginFailure(LoginStatus.INITIATOR_ERROR, `${key} after the first login request`);
        identity.declared.set(key, value);
        identity.initiatorAlias = value;
      } else if (before !== value) {
        throw new LoginFailure(LoginStatus.INITIATOR_ERROR, `${key} changed during login`);
      }
    }
  }

  private negotiatorFor(identity: Identity, req: LoginRequestPdu): Negotiator {
    if (this.negotiator === null) {
      this.negotiator = new Negotiator(this.ctx.targetLimits, { sessionType: identity.sessionType, leadingConnection: req.tsih === 0 });
    }
    return this.negotiator;
  }

  private authRequired(identity: Identity): boolean {
    return identity.sessionType === 'Normal' && identity.target !== null && identity.target.chap !== null;
  }

  /**
   * TargetPortalGroupTag (RFC 7143 §13.9) and TargetAlias go in the first
   * response that carries text in a Normal session.
   */
  private firstResponseDeclarations(identity: Identity): Array<[string, string]> {
    if (this.firstResponseSent) return [];
    this.firstResponseSent = true;
    if (identity.sessionType !== 'Normal' || identity.target === null) return [];
    const out: Array<[string, string]> = [['TargetPortalGroupTag', String(this.ctx.portal.tpgt)]];
    if (identity.target.alias !== undefined && identity.target.alias !== '') out.push(['TargetAlias', identity.target.alias]);
    return out;
  }

  /** AuthMethod (RFC 7143 §12.1) and the CHAP keys of one text. */
  private securityStage(identity: Identity, keys: Map<string, string>): Array<[string, string]> {
    const response: Array<[string, string]> = [];
    const offer = keys.get('AuthMethod');
    keys.delete('AuthMethod');
    if (offer !== undefined) response.push(['AuthMethod', this.chooseAuthMethod(identity, offer)]);
    if (keys.size === 0) return response;
    if (this.chap === null) throw new LoginFailure(LoginStatus.INITIATOR_ERROR, 'CHAP keys without AuthMethod=CHAP');
    const step = this.chap.handle(keys);
    if (!step.ok) throw new LoginFailure(LoginStatus.AUTH_FAILED, step.reason);
    response.push(...step.response);
    return response;
  }

  private chooseAuthMethod(identity: Identity, offer: string): string {
    if (this.authMethod !== null) throw new LoginFailure(LoginStatus.INITIATOR_ERROR, 'AuthMethod offered twice');
    const offered = offer.split(',');
    const target = identity.target;
    if (this.authRequired(identity) && target !== null && target.chap !== null) {
      if (!offered.includes('CHAP')) throw new LoginFailure(LoginStatus.AUTH_FAILED, `target requires CHAP; initiator offered ${offer.slice(0, 64)}`);
      this.authMethod = 'CHAP';
      this.chap = new ChapAuthenticator(target.chap, this.ctx.randomBytes, { algorithms: this.ctx.chapAlgorithms });
      return 'CHAP';
    }
    if (!offered.includes('None')) throw new LoginFailure(LoginStatus.AUTH_FAILED, `no authentication configured; initiator offered ${offer.slice(0, 64)}`);
    this.authMethod = 'None';
    return 'None';
  }

  /**
   * Whether we answer the initiator's T = 1 with T = 1. Out of the security
   * stage only once authentication is done; while the CHAP exchange is under
   * way we answer T = 0 and stay (RFC 7143 §6.3 (§?)).
   */
  private mayLeaveStage(identity: Identity, req: LoginRequestPdu): boolean {
    if (req.csg !== STAGE_SECURITY || !this.authRequired(identity) || this.chap?.done) return true;
    // CHAP chosen but not finished (challenge not yet asked for, or not yet answered).
    if (this.chap !== null) return false;
    throw new LoginFailure(LoginStatus.AUTH_FAILED, 'leaving the security stage without authenticating');
  }

  private reply(req: LoginRequestPdu, pairs: Array<[string, string]>, transit: boolean): LoginStep {
    const data = encodeTextKeys(pairs);
    if (data.length > LOGIN_DATA_LIMIT_BYTES) {
      throw new LoginFailure(LoginStatus.INITIATOR_ERROR, `login response of ${data.length} bytes (too many keys offered)`);
    }
    const response = this.responseFields(req, LoginStatus.SUCCESS, transit);
    if (!transit) return { response, data, outcome: 'continue' };
    this.state = req.nsg === STAGE_FULL_FEATURE ? 'complete' : 'operational';
    if (this.state !== 'complete') return { response, data, outcome: 'continue' };
    return { response, data, outcome: 'complete', result: this.result() };
  }

  private result(): LoginResult {
    const identity = this.identity;
    const first = this.first;
    const negotiator = this.negotiator;
    if (identity === null || first === null || negotiator === null) {
      throw new LoginFailure(LoginStatus.INITIATOR_ERROR, 'login completed without identity');
    }
    const result: LoginResult = {
      sessionType: identity.sessionType,
      initiatorName: identity.initiatorName,
      targetName: identity.target?.name ?? null,
      isid: Buffer.from(first.isid),
      tsih: first.tsih,
      cid: first.cid,
      params: negotiator.result(),
    };
    if (identity.initiatorAlias !== undefined) result.initiatorAlias = identity.initiatorAlias;
    return result;
  }

  private fail(req: LoginRequestPdu, status: LoginStatusCode, reason: string): LoginStep {
    this.state = 'failed';
    this.text.reset();
    return { response: this.responseFields(req, status, false), data: Buffer.alloc(0), outcome: 'fail', reason };
  }

  private responseFields(req: LoginRequestPdu, status: LoginStatusCode, transit: boolean): LoginResponse {
    return {
      transit,
      cont: false,
      // A request with a reserved CSG still gets an answer with a valid stage.
      csg: req.csg === STAGE_SECURITY || req.csg === STAGE_OPERATIONAL ? req.csg : STAGE_SECURITY,
      nsg: transit ? req.nsg : 0,
      versionMax: 0,
      versionActive: 0,
      isid: Buffer.from(req.isid),
      itt: req.itt,
      statusClass: status[0],
      statusDetail: status[1],
    };
  }
}

/** Keys of one text as a map; a key repeated in one text is a protocol error (RFC 7143 §6.2 (§?)). */
function uniqueKeys(pairs: ReadonlyArray<readonly [string, string]>): Map<string, string> {
  const keys = new Map<string, string>();
  for (const [key, value] of pairs) {
    if (keys.has(key)) throw new LoginFailure(LoginStatus.INITIATOR_ERROR, `${key} twice in one text`);
    keys.set(key, value);
  }
  return keys;
}

function checkName(key: string, name: string): void {
  const bytes = Buffer.byteLength(name);
  if (bytes === 0 || bytes > MAX_ISCSI_NAME_BYTES) throw new LoginFailure(LoginStatus.INITIATOR_ERROR, `${key} of ${bytes} bytes`);
}

/**
 * The answer to `SendTargets=<value>` (RFC 7143 §13.3, Appendix C (§?)): for each
 * target, TargetName= followed by one TargetAddress=host:port,tpgt per portal.
 * Discovery: `All` lists every target the initiator may see, a name lists that
 * target if it may see it. Normal session: empty means the current target; a
 * name must be the current target; `All` is answered Reject. Splitting the
 * answer over Text PDUs is the session layer's job.
 */
export function sendTargetsResponse(
  value: string,
  initiatorName: string,
  sessionType: SessionType,
  currentTarget: LoginTarget | null,
  targets: LoginTargets,
): Array<[string, string]> {
  let chosen: LoginTarget[];
  if (sessionType === 'Discovery') {
    if (value === 'All') chosen = targets.listFor(initiatorName);
    else if (value === '') chosen = [];
    else chosen = [targets.find(value)].filter((t): t is LoginTarget => t !== null);
  } else {
    if (value === 'All') return [['SendTargets', 'Reject']];
    chosen = currentTarget !== null && (value === '' || value === currentTarget.name) ? [currentTarget] : [];
  }
  const out: Array<[string, string]> = [];
  for (const target of chosen) {
    // listFor should already filter; the ACL is checked again so a lax listFor leaks nothing.
    if (!target.allowInitiator(initiatorName)) continue;
    out.push(['TargetName', target.name]);
    for (const portal of target.portals) out.push(['TargetAddress', `${portal.address},${portal.tpgt}`]);
  }
  return out;
}
