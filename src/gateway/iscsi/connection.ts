// One iSCSI connection as a state machine: login → full feature phase → logout /
// closed (RFC 7143 §6 login, §11 PDUs). Pure logic: bytes arrive through onData(),
// leave through a `Connection`; SCSI work goes to LogicalUnits of the session's
// target. No sockets, no timers.
//
// Invariants:
// - Nothing an initiator sends can throw out of onData(): framing errors and
//   protocol violations close this connection only (ERL 0 has no recovery);
//   SCSI failures become CHECK CONDITION.
// - Every task gets exactly one status (a SCSI Response, or a final Data-In with
//   status) unless it was aborted or the connection closed first.
// - StatSN advances once per status-carrying PDU (RFC 7143 §4.2.2.2); R2T and
//   unsolicited NOP-In carry it without advancing it.
// - Data-In PDUs never exceed the initiator's MaxRecvDataSegmentLength; we never
//   accept a PDU longer than the one we declared (PduReader enforces it).
// - Reading stops while the transport's write buffer is full or the session has
//   more than `bufferedBytesMax` of write data in flight (backpressure).
// - quietHooks (idle polling): busy() when this connection's first task opens,
//   quiet(stayOpen) when its last one is finished, exactly one quiet per busy,
//   also for tasks finished by a teardown (stayOpen false once closed or
//   logging out).
import type { QuietHooks } from '../idle-poll.js';
import { TesseraError, isTesseraError } from '../../stdx/errors.js';
import type { LogicalUnit, ScsiResult } from '../scsi/types.js';
import { SAM_CHECK_CONDITION, SAM_GOOD } from '../scsi/types.js';
import type { DataOutPdu, DigestSettings, InPdu, LoginResponseFields, ScsiCommandPdu, TmfRequestPdu } from './pdu-types.js';
import * as P from './pdu-types.js';
import {
  PduReader,
  PduFramingError,
  decodeDataOut,
  decodeLoginRequest,
  decodeLogoutRequest,
  decodeNopOut,
  decodeScsiCommand,
  decodeTextRequest,
  decodeTmfRequest,
  encodeDataIn,
  encodeLoginResponse,
  encodeLogoutResponse,
  encodeNopIn,
  encodeR2t,
  encodeReject,
  encodeScsiResponse,
  encodeSenseData,
  encodeTextResponse,
  encodeTmfResponse,
  framePdu,
  writePlainPdu,
} from './pdu.js';
import { snAdd } from './serial.js';
import { IscsiSession } from './session.js';
import type { SessionConnection, SessionTable, TargetView, OpenTask, SessionLimits } from './session.js';
import { Task } from './task.js';
import type { BufferRecycler } from '../../stdx/buffer-recycler.js';
import { largeReadBuffers } from '../buffers.js';
import type { DataOutLimits } from './task.js';

import type { Connection, LogFn } from '../transport.js';
export type { Connection, LogFn, LogLevel } from '../transport.js';

/** A login in progress, as login.ts drives it (injected so the server owns the context). */
export interface LoginDriver {
  handle(req: P.LoginRequestPdu, data: Buffer): LoginStepView;
}

export interface LoginStepView {
  response: Omit<LoginResponseFields, 'statSN' | 'expCmdSN' | 'maxCmdSN' | 'tsih'>;
  data: Buffer;
  outcome: 'continue' | 'fail' | 'complete';
  /** The login layer's result; ConnectionHost.outcome() normalizes it. */
  result?: unknown;
  reason?: string;
}

/** The negotiated result of a completed login, normalized for the connection. */
export interface LoginOutcome {
  sessionType: 'Normal' | 'Discovery';
  initiatorName: string;
  targetName: string | null;
  isid: Buffer;
  tsih: number;
  cid: number;
  digests: DigestSettings;
  /** What the initiator can receive per PDU (our Data-In size limit). */
  initiatorMaxRecvDataSegmentBytes: number;
  limits: SessionLimits;
}

/** Server-wide services a connection uses. */
export interface ConnectionHost {
  readonly sessions: SessionTable;
  readonly log: LogFn;
  /** Window of commands per session (MaxCmdSN − ExpCmdSN + 1). */
  readonly queueDepth: number;
  /** Our declared MaxRecvDataSegmentLength. */
  readonly maxRecvDataSegmentBytes: number;
  /** Largest write we buffer for one task. */
  readonly maxTaskDataBytes: number;
  /** Data (write buffers and read results) one connection's open tasks may hold before it stops reading. */
  readonly bufferedBytesMax: number;
  /** Reusable buffers for writes that arrive in several PDUs. */
  readonly writeBuffers: BufferRecycler;
  newLogin(): LoginDriver;
  /** Normalizes a completed login's negotiated parameters. */
  outcome(step: LoginStepView): LoginOutcome;
  target(name: string): TargetView | null;
  makeNexus(initiatorName: string, isid: Buffer, targetName: string): import('../scsi/types.js').Nexus;
  /** SendTargets answer pairs for a Text Request (RFC 7143 §13.3). */
  sendTargets(value: string, session: IscsiSession): Array<[string, string]>;
  encodeText(pairs: Array<[string, string]>): Buffer;
  parseText(data: Buffer): Array<[string, string]>;
  /** Answer for a command to a LUN the target does not have (INQUIRY, REPORT LUNS, others). */
  noSuchLun(cmd: ScsiCommandPdu, target: TargetView, nexus: import('../scsi/types.js').Nexus): ScsiResult;
  /** Runs a task management function that may reach other sessions. */
  taskManagement(session: IscsiSession, req: TmfRequestPdu): Promise<number>;
  sessionEnded(session: IscsiSession): void;
}

type Phase = 'login' | 'full' | 'closed';

/** RFC 7143 §11.17.1 Reject reasons. */
const REJECT_DATA_DIGEST = 0x02;
const REJECT_PROTOCOL = 0x04;
const REJECT_NOT_SUPPORTED = 0x05;
const REJECT_INVALID_FIELD = 0x09;
const REJECT_WAITING_FOR_LOGOUT = 0x0c;
/** During login the RFC default applies: 8192 bytes (RFC 7143 §13.12). */
const LOGIN_DATA_SEGMENT_BYTES_MAX = 8192;
/** Parts of a split SendTargets answer kept for continuation. */
const TEXT_PENDING_BYTES_MAX = 1024 * 1024;

export class IscsiConnection implements SessionConnection {
  private phase: Phase = 'login';
  private readonly reader: PduReader;
  private login: LoginDriver;
  private statSN = 1;
  private digests: DigestSettings = { header: false, data: false };
  private initiatorMrdslBytes = LOGIN_DATA_SEGMENT_BYTES_MAX;
  session: IscsiSession | null = null;
  cid = 0;
  private nextTtt = 1;
  private readonly byTtt = new Map<number, Task>();
  private transportFull = false;
  private paused = false;
  private logoutPending: { itt: number; session: boolean } | null = null;
  private textPending: { ttt: number; itt: number; data: Buffer; offset: number } | null = null;
  /** Tasks of this connection not yet answered (for logout and whenIdle). */
  private readonly mine = new Set<Task>();
  /** Bytes the open tasks of this connection may hold (kept write data + expected read data). */
  private taskBytes = 0;
  private readonly taskCost = new Map<Task, number>();
  /** Cached per session: the Data-Out limits never change after login. */
  private limitsCache: DataOutLimits | null = null;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly conn: Connection,
    private readonly host: ConnectionHost,
    readonly label: string,
    /** Open tasks 0 -> 1 and 1 -> 0, for the server's idle polling (gateway/idle-poll.ts). */
    private readonly quietHooks: QuietHooks = { busy: () => {}, quiet: () => {} },
  ) {
    this.reader = new PduReader({ maxDataSegmentBytes: LOGIN_DATA_SEGMENT_BYTES_MAX });
    this.login = host.newLogin();
  }

  state(): Phase {
    return this.phase;
  }

  /** Still logging in: the server's login timeout applies. */
  negotiating(): boolean {
    return this.phase === 'login';
  }

  // ---- transport events ----

  onData(chunk: Buffer): void {
    if (this.phase === 'closed') return;
    this.reader.push(chunk);
    this.pump();
  }

  onDrain(): void {
    this.transportFull = false;
    this.updateReading();
    this.pump();
  }

  onClose(): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.teardown();
  }

  /** Resolves when none of this connection's tasks is running. */
  whenIdle(): Promise<void> {
    if (this.mine.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  close(reason: string): void {
    if (this.phase === 'closed') return;
    this.host.log('info', `${this.label}: closing: ${reason}`);
    this.phase = 'closed';
    this.teardown();
    this.conn.close();
  }

  private teardown(): void {
    const s = this.session;
    if (s !== null) {
      s.dropConnection(this);
      if (s.ended) {
        this.host.sessions.remove(s);
        this.host.sessionEnded(s);
      }
    }
    // Tasks that never reached the volume end now; running ones end in complete().
    for (const t of [...this.mine]) {
      t.aborted = true;
      t.discard();
      if (t.state !== 'executing') this.finish(t);
    }
    this.byTtt.clear();
  }

  // ---- input ----

  private pump(): void {
    while (this.phase !== 'closed' && !this.paused) {
      let pdu: InPdu | null;
      try {
        pdu = this.reader.next();
      } catch (err) {
        this.protocolFailure(err);
        return;
      }
      if (pdu === null) return;
      try {
        if (this.phase === 'login') this.onLoginPdu(pdu);
        else this.onFullFeaturePdu(pdu);
      } catch (err) {
        this.protocolFailure(err);
        return;
      }
    }
  }

  private protocolFailure(err: unknown): void {
    if (err instanceof PduFramingError || isTesseraError(err, 'ERR_PROTOCOL')) {
      this.close(`protocol error: ${(err as Error).message}`);
      return;
    }
    throw err;
  }

  private updateReading(): void {
    if (this.phase === 'closed') return;
    const s = this.session;
    const busy = this.transportFull || this.taskBytes > this.host.bufferedBytesMax || (s !== null && s.tasks.size >= this.host.queueDepth * 2);
    if (busy && !this.paused) {
      this.paused = true;
      this.conn.pauseReading();
    } else if (!busy && this.paused) {
      this.paused = false;
      this.conn.resumeReading();
      // PDUs already framed wait in the reader: go on with them (not from inside a completion).
      setImmediate(() => this.pump());
    }
  }

  // ---- output ----

  private readonly writeOut = (b: Buffer, onSent?: () => void): void => {
    if (!this.conn.write(b, onSent)) this.transportFull = true;
  };

  /** onSent: runs once the transport no longer needs data (at once if nothing is sent). */
  private send(bhs: Buffer, data: Buffer | null, onSent?: () => void): void {
    if (this.phase === 'closed') {
      onSent?.();
      return;
    }
    if (!this.digests.header && !this.digests.data) writePlainPdu(bhs, data, this.writeOut, onSent);
    else {
      const parts = framePdu(bhs, null, data, this.digests);
      for (let i = 0; i < parts.length; i++) this.writeOut(parts[i], i === parts.length - 1 ? onSent : undefined);
    }
    if (this.transportFull) this.updateReading();
  }

  private nextStatSN(): number {
    const sn = this.statSN;
    this.statSN = snAdd(this.statSN, 1);
    return sn;
  }

  /** trio() into an existing field object (the per-IO PDUs). */
  private fillTrio(f: P.SnTrio, advance: boolean): void {
    const s = this.session!;
    f.statSN = advance ? this.nextStatSN() : this.statSN;
    f.expCmdSN = s.expCmdSN;
    f.maxCmdSN = s.maxCmdSN();
  }

  private trio(advance: boolean): P.SnTrio {
    const s = this.session!;
    return { statSN: advance ? this.nextStatSN() : this.statSN, expCmdSN: s.expCmdSN, maxCmdSN: s.maxCmdSN() };
  }

  private reject(bhs: Buffer, reason: number): void {
    if (this.session === null) return;
    this.send(encodeReject({ ...this.trio(true), reason, dataSN: 0 }, P.BHS_BYTES), bhs);
  }

  // ---- login (RFC 7143 §6.3) ----

  private onLoginPdu(pdu: InPdu): void {
    if (pdu.header.opcode !== P.OP_LOGIN_REQ) {
      this.close(`opcode 0x${pdu.header.opcode.toString(16)} before login completed`);
      return;
    }
    const req = decodeLoginRequest(pdu);
    const step = this.login.handle(req, pdu.data);
    let response = step.response;
    let tsih = req.tsih;
    let cmdSN = req.cmdSN;
    let maxCmdSN = snAdd(req.cmdSN, this.host.queueDepth - 1);
    const joining = req.tsih !== 0 ? this.host.sessions.byId(req.tsih) : null;
    if (joining !== null) {
      // A connection joining a session never sees its window move backwards.
      cmdSN = joining.expCmdSN;
      maxCmdSN = joining.maxCmdSN();
    }
    let joined: IscsiSession | null = null;
    let outcome: LoginOutcome | null = null;
    const fenced: Array<Promise<void>> = [];
    if (step.outcome === 'complete') {
      outcome = this.host.outcome(step);
      const placed = this.placeSession(outcome, req.cmdSN, fenced);
      if (typeof placed === 'string') {
        const [cls, detail] = placed === 'no-session' ? [2, 0x0a] : placed === 'too-many' ? [2, 0x06] : [3, 0x02];
        response = { ...response, transit: false, statusClass: cls, statusDetail: detail };
        outcome = null;
      } else {
        joined = placed;
        tsih = placed.tsih;
        cmdSN = placed.expCmdSN;
        maxCmdSN = placed.maxCmdSN();
      }
    }
    const answer = (): void => {
      const fields: LoginResponseFields = { ...response, tsih: step.outcome === 'complete' && joined !== null ? tsih : req.tsih, statSN: this.nextStatSN(), expCmdSN: cmdSN, maxCmdSN };
      const data = response.statusClass === 0 ? step.data : Buffer.alloc(0);
      this.send(encodeLoginResponse(fields, data.length), data);
      if (response.statusClass !== 0 || step.outcome === 'fail') {
        this.host.log('info', `${this.label}: login failed (${response.statusClass}/${response.statusDetail})${step.reason ? `: ${step.reason}` : ''}`);
        this.conn.close();
        this.phase = 'closed';
        return;
      }
      if (joined !== null && outcome !== null) this.enterFullFeature(joined, outcome);
    };
    if (fenced.length === 0) {
      answer();
      return;
    }
    // Reinstatement: the replaced session's (or connection's) writes still running on
    // the volume must settle before the initiator may issue new ones, or a stale
    // write could land after its replacement (RFC 7143 §6.3.5 / SAM-5 task set rules).
    this.paused = true;
    this.conn.pauseReading();
    void Promise.all(fenced).then(() => {
      if (this.phase === 'closed') return;
      answer();
      this.paused = false;
      this.conn.resumeReading();
      setImmediate(() => this.pump());
    });
  }

  /** Creates or joins the session of a completed login; a string names why not. */
  /**
   * Creates or joins the session of a completed login; a string names why not.
   * `fenced` receives what the login answer must wait for: the settling of writes
   * of a session or connection this login replaces.
   */
  private placeSession(o: LoginOutcome, cmdSN: number, fenced: Array<Promise<void>>): IscsiSession | 'no-session' | 'too-many' | 'no-resources' {
    const sessions = this.host.sessions;
    if (o.tsih !== 0) {
      const s = sessions.byId(o.tsih);
      if (s === null || s.initiatorName !== o.initiatorName || !s.isid.equals(o.isid) || (s.target?.name ?? null) !== o.targetName) return 'no-session';
      const old = s.connections.get(o.cid);
      if (old !== undefined) {
        // Connection reinstatement keeps the session even when this was its only connection.
        s.replacing = true;
        old.close('connection reinstated by a new login with the same CID');
        s.replacing = false;
        for (const z of s.zombies) if (z.settled !== null) fenced.push(z.settled);
      }
      else if (s.connections.size >= s.limits.maxConnections) return 'too-many';
      return s;
    }
    // Session reinstatement (RFC 7143 §6.3.5?): a new login from the same initiator port ends the old session.
    const old = sessions.find(o.initiatorName, o.isid, o.targetName);
    if (old !== null) {
      for (const c of [...old.connections.values()]) c.close('session reinstated by a new login from the same initiator port');
      for (const z of old.zombies) if (z.settled !== null) fenced.push(z.settled);
      sessions.remove(old);
    }
    const tsih = sessions.allocateTsih();
    if (tsih === 0) return 'no-resources';
    const target = o.targetName === null ? null : this.host.target(o.targetName);
    if (o.sessionType === 'Normal' && target === null) return 'no-session';
    const nexus = target === null ? null : this.host.makeNexus(o.initiatorName, o.isid, target.name);
    const s = new IscsiSession(tsih, o.sessionType, o.initiatorName, o.isid, target, nexus, o.limits, cmdSN, this.host.queueDepth);
    sessions.add(s);
    return s;
  }

  private enterFullFeature(s: IscsiSession, o: LoginOutcome): void {
    this.session = s;
    this.cid = o.cid;
    s.connections.set(o.cid, this);
    // Digests apply from the first PDU after the final Login Response (RFC 7143 §13.1).
    this.digests = o.digests;
    this.reader.setDigests(o.digests);
    this.reader.setMaxDataSegmentBytes(this.host.maxRecvDataSegmentBytes);
    if (o.sessionType === 'Normal') this.reader.setDataPlacement(this.placeDataOut);
    this.initiatorMrdslBytes = o.initiatorMaxRecvDataSegmentBytes;
    this.phase = 'full';
    this.host.log('info', `${this.label}: ${o.sessionType} session ${s.tsih} of ${o.initiatorName}${o.targetName ? ` to ${o.targetName}` : ''}, connection ${o.cid}`);
  }

  // ---- full feature phase ----

  /**
   * The reader's data placement: a Data-Out segment for one of this connection's
   * tasks goes straight into the task's buffer (Task.dataOutTarget says where, or
   * that it cannot). onDataOut checks the PDU as for any other.
   */
  private readonly placeDataOut = (bhs: Buffer, dataBytes: number): Buffer | null => {
    if ((bhs[0] & 0x3f) !== P.OP_DATA_OUT || this.session === null) return null;
    const open = this.session.tasks.get(bhs.readUInt32BE(16));
    if (open === undefined || open.conn !== this) return null;
    const ttt = bhs.readUInt32BE(20);
    if (ttt !== P.TAG_NONE && this.byTtt.get(ttt) !== open.task) return null;
    return open.task.dataOutTarget(bhs.readUInt32BE(40), dataBytes);
  };

  private onFullFeaturePdu(pdu: InPdu): void {
    const s = this.session!;
    const op = pdu.header.opcode;
    if (!pdu.dataDigestOk) {
      // RFC 7143 §7.8 at ERL 0: write data that failed its digest cannot be recovered
      // (no recovery R2T at ERL 0), so the connection ends and its tasks with it; any
      // other PDU is rejected and the initiator may resend it.
      if (op === P.OP_SCSI_CMD || op === P.OP_DATA_OUT) {
        this.close('data digest error in write data');
        return;
      }
      this.reject(pdu.bhs, REJECT_DATA_DIGEST);
      return;
    }
    if (s.type === 'Discovery' && op !== P.OP_TEXT_REQ && op !== P.OP_LOGOUT_REQ && op !== P.OP_NOP_OUT) {
      this.reject(pdu.bhs, REJECT_PROTOCOL);
      return;
    }
    switch (op) {
      case P.OP_SCSI_CMD:
        return this.onScsiCommand(pdu);
      case P.OP_DATA_OUT:
        return this.onDataOut(pdu);
      case P.OP_NOP_OUT:
        return this.onNopOut(pdu);
      case P.OP_TEXT_REQ:
        return this.onText(pdu);
      case P.OP_TMF_REQ:
        return this.onTmf(pdu);
      case P.OP_LOGOUT_REQ:
        return this.onLogout(pdu);
      case P.OP_LOGIN_REQ:
        this.reject(pdu.bhs, REJECT_PROTOCOL);
        return;
      case P.OP_SNACK:
        this.reject(pdu.bhs, REJECT_NOT_SUPPORTED);
        return;
      default:
        this.reject(pdu.bhs, REJECT_NOT_SUPPORTED);
    }
  }

  private onNopOut(pdu: InPdu): void {
    const s = this.session!;
    const nop = decodeNopOut(pdu);
    const run = (): void => {
      if (nop.itt === P.TAG_NONE) return; // an answer to our NOP-In, or a ping that wants no reply
      const data = pdu.data.length > this.initiatorMrdslBytes ? pdu.data.subarray(0, this.initiatorMrdslBytes) : pdu.data;
      this.send(encodeNopIn({ ...this.trio(true), lun: Math.max(0, nop.lun), itt: nop.itt, ttt: P.TAG_NONE }, data.length), data);
    };
    // A NOP-Out with I=0 and a reply wanted takes a CmdSN like any command.
    s.order(nop.cmdSN, nop.immediate || nop.itt === P.TAG_NONE, run, this);
  }

  private onScsiCommand(pdu: InPdu): void {
    const s = this.session!;
    if (this.logoutPending !== null) {
      this.reject(pdu.bhs, REJECT_WAITING_FOR_LOGOUT);
      return;
    }
    const cmd = decodeScsiCommand(pdu);
    const writeBytes = cmd.write ? cmd.expectedDataTransferLength : 0;
    if (!cmd.write && pdu.data.length > 0) throw violation(`SCSI command with ${pdu.data.length} bytes of immediate data but no W bit`);
    if (pdu.data.length > 0 && !s.limits.immediateData) throw violation('immediate data sent with ImmediateData=No');
    const task = new Task(cmd, writeBytes, Math.min(writeBytes, this.host.maxTaskDataBytes), this.host.writeBuffers);
    const lu = s.target?.lu(cmd.lun) ?? null;
    const open: OpenTask = { task, conn: this, lu };
    if (!s.addTask(open)) {
      this.reject(pdu.bhs, REJECT_INVALID_FIELD); // ITT already in use
      return;
    }
    this.mine.add(task);
    if (this.mine.size === 1) this.quietHooks.busy();
    const cost = Math.min(writeBytes, this.host.maxTaskDataBytes) + (cmd.read ? Math.min(cmd.expectedDataTransferLength, this.host.maxTaskDataBytes) : 0);
    this.taskCost.set(task, cost);
    this.taskBytes += cost;
    const err = task.begin(pdu.data, this.dataOutLimits());
    if (err !== null) throw violation(err);
    const accepted = s.order(
      cmd.cmdSN,
      cmd.immediate,
      () => {
        task.ordered = true;
        if (task.complete()) this.execute(open);
        else this.sendR2ts(open);
      },
      this,
    );
    if (!accepted) {
      this.host.log('warn', `${this.label}: CmdSN ${cmd.cmdSN} outside [${s.expCmdSN}, ${s.maxCmdSN()}]; dropped`);
      this.finish(task);
      return;
    }
    // R2Ts go out only once the command's turn came: a command held for CmdSN order
    // makes the initiator buffer its data, not us.
    this.updateReading();
  }

  private sendR2ts(open: OpenTask): void {
    const task = open.task;
    for (const seq of task.nextR2ts(this.dataOutLimits(), () => this.allocTtt())) {
      this.byTtt.set(seq.ttt, task);
      const f = this.r2tFields;
      this.fillTrio(f, false);
      f.lun = Math.max(0, task.cmd.lun);
      f.itt = task.itt;
      f.ttt = seq.ttt;
      f.r2tSN = seq.r2tSN;
      f.bufferOffset = seq.offsetBytes;
      f.desiredDataTransferLength = seq.lengthBytes;
      this.send(encodeR2t(f), null);
    }
  }

  private allocTtt(): number {
    for (;;) {
      const t = this.nextTtt;
      this.nextTtt = this.nextTtt >= 0x7fffffff ? 1 : this.nextTtt + 1;
      if (!this.byTtt.has(t)) return t;
    }
  }

  private dataOutLimits(): DataOutLimits {
    if (this.limitsCache === null) {
      const l = this.session!.limits;
      this.limitsCache = { initialR2t: l.initialR2t, firstBurstBytes: l.firstBurstBytes, maxBurstBytes: l.maxBurstBytes, maxOutstandingR2t: l.maxOutstandingR2t };
    }
    return this.limitsCache;
  }

  private onDataOut(pdu: InPdu): void {
    const s = this.session!;
    const d: DataOutPdu = decodeDataOut(pdu);
    const open = s.tasks.get(d.itt);
    if (open === undefined || open.conn !== this) {
      // Data for a task we no longer have (aborted): RFC 7143 lets the target drop it.
      if (d.ttt !== P.TAG_NONE && this.byTtt.has(d.ttt)) this.byTtt.delete(d.ttt);
      return;
    }
    const task = open.task;
    if (d.ttt !== P.TAG_NONE && this.byTtt.get(d.ttt) !== task) throw violation(`Data-Out TTT 0x${d.ttt.toString(16)} does not belong to task 0x${d.itt.toString(16)}`);
    const closed = task.acceptDataOut(d, pdu.data);
    if (closed !== P.TAG_NONE) this.byTtt.delete(closed);
    if (task.aborted) return;
    if (!task.complete()) {
      if (task.ordered) this.sendR2ts(open);
    } else if (task.ordered && task.state !== 'executing') this.execute(open);
  }

  // ---- execution ----

  private execute(open: OpenTask): void {
    const task = open.task;
    if (task.aborted) return;
    task.state = 'executing';
    const s = this.session!;
    const cmd = task.cmd;
    if (open.lu === null) {
      this.complete(open, this.host.noSuchLun(cmd, s.target!, s.nexus!));
      return;
    }
    const lu: LogicalUnit = open.lu;
    const p = lu.execute({ nexus: s.nexus!, lun: cmd.lun, cdb: cmd.cdb, dataOut: task.dataOut(), expectedInBytes: cmd.read ? cmd.expectedDataTransferLength : 0, taskTag: cmd.itt });
    task.settled = p.then(
      (r) => this.complete(open, r),
      (err) => {
        this.host.log('error', `${this.label}: SCSI layer threw (a bug): ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        this.complete(open, { status: SAM_CHECK_CONDITION, sense: internalFailureSense(), dataIn: null });
      },
    );
  }

  private complete(open: OpenTask, r: ScsiResult): void {
    const task = open.task;
    const live = !task.aborted && this.phase !== 'closed';
    // The volume's write resolved: nothing holds the buffer any more (an aborted
    // task dropped its reference in discard(), so it is never given back).
    if (task.pooled !== null) {
      this.host.writeBuffers.give(task.pooled);
      task.pooled = null;
    }
    this.finish(task);
    // A large read result goes back to its recycler once the socket sent it, or now if
    // it is not sent at all.
    const recycled = r.dataIn !== null && largeReadBuffers.owns(r.dataIn) ? r.dataIn : null;
    const giveBack = recycled === null ? undefined : () => largeReadBuffers.give(recycled);
    if (!live) {
      giveBack?.();
      return;
    }
    const cmd = task.cmd;
    const edtl = cmd.expectedDataTransferLength;
    const dataIn = cmd.read && r.dataIn !== null ? r.dataIn : null;
    const moved = r.transferBytes ?? (cmd.read ? (dataIn?.length ?? 0) : cmd.write ? edtl : 0);
    const overflow = moved > edtl;
    const underflow = moved < edtl;
    const residual = overflow ? moved - edtl : edtl - moved;
    const collapse = r.status === SAM_GOOD && r.sense === null;
    const residualCount = overflow || underflow ? residual : 0;
    if (dataIn !== null && dataIn.length > 0) {
      this.sendDataIn(cmd, dataIn, collapse, r.status, overflow, underflow, residualCount, giveBack);
      if (collapse) return;
    } else giveBack?.();
    const sense = r.sense !== null && r.sense.length > 0 ? encodeSenseData(r.sense) : null;
    const f = this.responseFields;
    this.fillTrio(f, true);
    f.itt = cmd.itt;
    f.response = 0;
    f.status = r.status;
    f.overflow = overflow;
    f.underflow = underflow;
    f.residualCount = residualCount;
    f.expDataSN = dataIn === null ? 0 : Math.ceil(dataIn.length / this.initiatorMrdslBytes);
    this.send(encodeScsiResponse(f, sense?.length ?? 0), sense);
  }

  /** Reused for every Data-In PDU: encodeDataIn reads it synchronously (no object per PDU). */
  private readonly dataIn: P.DataInFields = { statSN: 0, expCmdSN: 0, maxCmdSN: 0, final: false, hasStatus: false, status: 0, overflow: false, underflow: false, residualCount: 0, lun: 0, itt: 0, ttt: P.TAG_NONE, dataSN: 0, bufferOffset: 0 };

  /** Reused for every SCSI Response and R2T PDU, like dataIn: an object literal per IO showed in profiles. */
  private readonly responseFields: P.ScsiResponseFields = { statSN: 0, expCmdSN: 0, maxCmdSN: 0, itt: 0, response: 0, status: 0, overflow: false, underflow: false, residualCount: 0, expDataSN: 0 };
  private readonly r2tFields: P.R2tFields = { statSN: 0, expCmdSN: 0, maxCmdSN: 0, lun: 0, itt: 0, ttt: 0, r2tSN: 0, bufferOffset: 0, desiredDataTransferLength: 0 };

  /** With withStatus, the last Data-In carries the status (phase collapse, RFC 7143 §11.7.4). */
  private sendDataIn(cmd: ScsiCommandPdu, data: Buffer, withStatus: boolean, status: number, overflow: boolean, underflow: boolean, residualCount: number, onSent?: () => void): void {
    const s = this.session!;
    const chunk = this.initiatorMrdslBytes;
    const burst = s.limits.maxBurstBytes;
    const f = this.dataIn;
    f.lun = Math.max(0, cmd.lun); // an address we do not decode (-1) is answered as LUN 0
    f.itt = cmd.itt;
    let dataSN = 0;
    for (let off = 0; off < data.length; off += chunk) {
      // A Data-In sequence carries at most MaxBurstLength bytes (RFC 7143 §13.13): F ends each.
      const end = Math.min(data.length, off + chunk, (Math.floor(off / burst) + 1) * burst);
      const last = end === data.length;
      const carries = last && withStatus;
      f.final = last || end % burst === 0;
      f.hasStatus = carries;
      f.statSN = carries ? this.nextStatSN() : 0;
      f.expCmdSN = s.expCmdSN;
      f.maxCmdSN = s.maxCmdSN();
      f.status = carries ? status : 0;
      f.overflow = carries && overflow;
      f.underflow = carries && underflow;
      f.residualCount = carries ? residualCount : 0;
      f.dataSN = dataSN++;
      f.bufferOffset = off;
      this.send(encodeDataIn(f, end - off), off === 0 && end === data.length ? data : data.subarray(off, end), last ? onSent : undefined);
    }
  }

  /** Forgets a task: out of the session, its tags freed, logout and idle waiters woken. */
  private finish(task: Task): void {
    task.state = 'done';
    this.session?.removeTask(task);
    for (const r of task.r2ts) this.byTtt.delete(r.ttt);
    const wasMine = this.mine.delete(task);
    if (wasMine) {
      this.taskBytes -= this.taskCost.get(task) ?? 0;
      this.taskCost.delete(task);
    }
    this.updateReading();
    if (this.mine.size === 0) {
      const stayOpen = this.phase !== 'closed' && this.logoutPending === null;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
      if (this.logoutPending !== null && this.phase !== 'closed') this.answerLogout();
      if (wasMine) this.quietHooks.quiet(stayOpen);
    }
  }

  // ---- text (SendTargets, RFC 7143 §11.10, §13.3) ----

  private onText(pdu: InPdu): void {
    const s = this.session!;
    const req = decodeTextRequest(pdu);
    s.order(req.cmdSN, req.immediate, (): void => {
      if (req.ttt !== P.TAG_NONE) {
        const pending = this.textPending;
        if (pending === null || pending.ttt !== req.ttt || pending.itt !== req.itt) {
          this.reject(pdu.bhs, REJECT_INVALID_FIELD);
          return;
        }
        this.sendTextPart(req.itt, req.lun);
        return;
      }
      if (req.cont) {
        // A request text spread over several PDUs (C bit) is not supported: the keys we
        // answer (SendTargets) fit one PDU. Rejected, never half-parsed.
        this.reject(pdu.bhs, REJECT_NOT_SUPPORTED);
        return;
      }
      let pairs: Array<[string, string]>;
      try {
        pairs = this.host.parseText(pdu.data);
      } catch {
        this.reject(pdu.bhs, REJECT_PROTOCOL);
        return;
      }
      const out: Array<[string, string]> = [];
      for (const [k, v] of pairs) {
        if (k === 'SendTargets') out.push(...this.host.sendTargets(v, s));
        else out.push([k, 'NotUnderstood']);
      }
      let data = this.host.encodeText(out);
      if (data.length > TEXT_PENDING_BYTES_MAX) data = data.subarray(0, 0);
      this.textPending = { ttt: this.allocTtt(), itt: req.itt, data, offset: 0 };
      this.sendTextPart(req.itt, req.lun);
    }, this);
  }

  private sendTextPart(itt: number, lun: number): void {
    const p = this.textPending!;
    const end = Math.min(p.data.length, p.offset + this.initiatorMrdslBytes);
    const part = p.data.subarray(p.offset, end);
    p.offset = end;
    const more = end < p.data.length;
    if (!more) this.textPending = null;
    this.send(encodeTextResponse({ ...this.trio(true), final: !more, cont: more, lun: Math.max(0, lun), itt, ttt: more ? p.ttt : P.TAG_NONE }, part.length), part);
  }

  // ---- task management (RFC 7143 §11.5) ----

  private onTmf(pdu: InPdu): void {
    const s = this.session!;
    const req = decodeTmfRequest(pdu);
    s.order(req.cmdSN, req.immediate, (): void => {
      void this.host.taskManagement(s, req).then(
        (response) => this.send(encodeTmfResponse({ ...this.trio(true), itt: req.itt, response }), null),
        (err) => {
          this.host.log('error', `${this.label}: task management failed: ${err instanceof Error ? err.message : String(err)}`);
          this.send(encodeTmfResponse({ ...this.trio(true), itt: req.itt, response: 255 }), null);
        },
      );
    }, this);
  }

  /** Aborts one of this connection's tasks: its R2Ts end, data arriving later is dropped. */
  abortTask(task: Task): void {
    task.aborted = true;
    task.discard();
    for (const r of task.r2ts) this.byTtt.delete(r.ttt);
    // Its ITT is free again at once; a running one stays a zombie until the volume is done.
    this.session?.retire(task);
    if (task.state !== 'executing') this.finish(task);
  }

  // ---- logout (RFC 7143 §11.14) ----

  private onLogout(pdu: InPdu): void {
    const s = this.session!;
    const req = decodeLogoutRequest(pdu);
    s.order(req.cmdSN, req.immediate, (): void => {
      if (req.reason === 2) {
        this.send(encodeLogoutResponse({ ...this.trio(true), itt: req.itt, response: 2, time2Wait: 0, time2Retain: 0 }), null);
        return;
      }
      if (req.reason === 1 && req.cid !== this.cid) {
        const other = s.connections.get(req.cid);
        if (other === undefined) {
          this.send(encodeLogoutResponse({ ...this.trio(true), itt: req.itt, response: 1, time2Wait: 0, time2Retain: 0 }), null);
          return;
        }
        other.close(`logged out by connection ${this.cid}`);
        this.send(encodeLogoutResponse({ ...this.trio(true), itt: req.itt, response: 0, time2Wait: 0, time2Retain: 0 }), null);
        return;
      }
      if (req.reason === 0) {
        for (const c of [...s.connections.values()]) if (c !== this) c.close('session logged out');
      } else if (req.reason !== 1) {
        this.reject(pdu.bhs, REJECT_INVALID_FIELD);
        return;
      }
      this.logoutPending = { itt: req.itt, session: req.reason === 0 };
      // RFC 7143 §11.14: pending commands end; only those already on the volume are waited for.
      for (const t of [...this.mine]) if (t.state !== 'executing') this.abortTask(t);
      // (finish() may already have answered it when the last task ended above)
      if (this.logoutPending !== null && this.mine.size === 0) this.answerLogout();
    }, this);
  }

  private answerLogout(): void {
    const p = this.logoutPending!;
    this.logoutPending = null;
    this.send(encodeLogoutResponse({ ...this.trio(true), itt: p.itt, response: 0, time2Wait: 0, time2Retain: 0 }), null);
    this.phase = 'closed';
    this.teardown();
    this.conn.close();
  }
}

/** A protocol violation found after framing: closes the connection (ERL 0). */
function violation(message: string): TesseraError {
  return new TesseraError('ERR_PROTOCOL', message);
}

function internalFailureSense(): Buffer {
  // Fixed format, HARDWARE ERROR, INTERNAL TARGET FAILURE (44/00) (SPC-4 4.5.3).
  const b = Buffer.alloc(18);
  b[0] = 0x70;
  b[2] = 0x04;
  b[7] = 10;
  b[12] = 0x44;
  return b;
}
