// One iSCSI portal of a gateway: its targets (from the iscsi.json config and the
// volume list), their logical units, the session table, logins, SendTargets and
// task management across sessions. It is the ConnectionHost every connection of
// the server talks to. No sockets: server.ts feeds it connections.
//
// Invariants:
// - A LU object lives as long as its (target, LUN, volume) mapping: refresh()
//   keeps existing LUs (their unit attentions, reservations view) and only adds
//   or drops what changed.
// - One reservation gate per volume, shared by every LU that maps the volume,
//   on every target of this portal; other gateways share it through the PrStore.
// - Task management answers only after the aborted tasks can no longer touch
//   the medium: writes already handed to the volume are waited for (bounded by
//   abortWaitMs); reads and tasks still collecting data end at once.
import { randomBytes as cryptoRandomBytes } from 'node:crypto';
import type { Volume, VolumeInfo, VolumeStore } from '../../volume/types.js';
import type { AccessClass, LogicalUnit, Nexus, PrEffects, PrStore, ReservationGate, ScsiResult } from '../scsi/types.js';
import { SK_ILLEGAL_REQUEST, checkCondition } from '../scsi/sense.js';
import { answerMissingLun } from '../scsi/luns.js';
import { accessClass } from '../scsi/lu.js';
import type { Task } from './task.js';
import type { LoginDriver, LoginOutcome, LoginStepView, LogFn, ConnectionHost } from './connection.js';
import { LoginMachine, sendTargetsResponse } from './login.js';
import type { LoginResult, LoginTarget, LoginTargets } from './login.js';
import type { TargetLimits } from './negotiate.js';
import { defaultTargetLimits } from './negotiate.js';
import type { ScsiCommandPdu, TmfRequestPdu } from './pdu-types.js';
import { snLt } from './serial.js';
import type { IscsiSession, OpenTask, TargetView } from './session.js';
import { SessionTable } from './session.js';
import { DEFAULT_TARGET_NAME, syncDefaultLuns } from './targets.js';
import type { IscsiConfig, LunMapping } from './targets.js';
import { encodeTextKeys, parseTextKeys } from './text.js';
import { writePayloadBuffers } from '../buffers.js';

/** What the portal needs to build a LU for one volume. */
export interface LuSpec {
  lun: number;
  volume: Volume;
  info: VolumeInfo;
  targetName: string;
  gate: ReservationGate;
}

/** A LU and the per-nexus unit attention hook PR effects need. */
export interface LuHandle {
  lu: LogicalUnit;
  queueUnitAttention(nexusKey: string, asc: number, ascq: number): void;
}

export interface PortalOptions {
  address: { host: string; port: number };
  /** Target portal group tag of this gateway (1..65535); gateways of one cluster should differ. */
  tpgt: number;
  store: VolumeStore;
  /** The current configuration (main/iscsi.ts owns and persists it). */
  config: () => IscsiConfig;
  /** Called when the default target gave LUNs to new volumes: persist it. */
  onDefaultLunsChanged?: (cfg: IscsiConfig) => void;
  /** Called once a volume the portal served is gone (per-volume state may go). */
  onVolumeGone?: (volumeId: number) => void;
  prStore: PrStore | null;
  makeLu: (spec: LuSpec) => LuHandle;
  log?: LogFn;
  limits?: Partial<TargetLimits>;
  queueDepth?: number;
  maxTaskDataBytes?: number;
  /** Bytes one connection's open tasks may hold before it stops reading (backpressure). */
  bufferedBytesMax?: number;
  sessionsMax?: number;
  randomBytes?: (n: number) => Buffer;
  nowMs?: () => number;
}

const QUEUE_DEPTH_DEFAULT = 128;
/** INQUIRY identification for LUNs that do not exist (peripheral qualifier 011b). */
const MISSING_LUN_ID = { vendor: 'TESSERA', product: 'VOLUME', revision: '0001' };
/** The LU never moves more than its maximum transfer length (8 MiB) per command. */
const TASK_DATA_BYTES_MAX_DEFAULT = 8 * 1024 * 1024;
const BUFFERED_BYTES_MAX_DEFAULT = 64 * 1024 * 1024;
const SESSIONS_MAX_DEFAULT = 1024;

/** TMF function codes and responses (RFC 7143 §11.5.1, §11.6.1). */
const TMF_ABORT_TASK = 1;
const TMF_ABORT_TASK_SET = 2;
const TMF_CLEAR_ACA = 3;
const TMF_CLEAR_TASK_SET = 4;
const TMF_LU_RESET = 5;
const TMF_TARGET_WARM_RESET = 6;
const TMF_TARGET_COLD_RESET = 7;
const TMF_TASK_REASSIGN = 8;
const TMF_COMPLETE = 0;
const TMF_NO_TASK = 1;
const TMF_NO_LUN = 2;
const TMF_REASSIGN_UNSUPPORTED = 4;
const TMF_UNSUPPORTED = 5;

/** Unit attentions of task management (SPC-4 Annex / SAM-5 §5.?). */
const UA_COMMANDS_CLEARED_BY_ANOTHER = [0x2f, 0x00] as const;
const UA_BUS_DEVICE_RESET = [0x29, 0x03] as const;
const UA_TARGET_RESET = [0x29, 0x00] as const;

class PortalTarget implements TargetView, LoginTarget {
  readonly lus = new Map<number, LuHandle>();
  readonly volumeOfLun = new Map<number, number>();
  portals: Array<{ address: string; tpgt: number }>;
  chap: LoginTarget['chap'];
  alias?: string;
  private initiators: Set<string>;

  constructor(
    readonly name: string,
    portal: { address: string; tpgt: number },
  ) {
    this.portals = [portal];
    this.chap = null;
    this.initiators = new Set();
  }

  configure(initiators: string[], chap: LoginTarget['chap'], alias: string | undefined): void {
    this.initiators = new Set(initiators);
    this.chap = chap;
    if (alias !== undefined) this.alias = alias;
    else delete this.alias;
  }

  allowInitiator(initiatorName: string): boolean {
    return this.initiators.size === 0 || this.initiators.has(initiatorName);
  }

  lu(lun: number): LogicalUnit | null {
    return this.lus.get(lun)?.lu ?? null;
  }

  luns(): number[] {
    return [...this.lus.keys()].sort((a, b) => a - b);
  }
}

/** A ReservationGate that answers 'unavailable' until the real gate has loaded its record. */
class LazyGate implements ReservationGate {
  private gate: (ReservationGate & { close?(): void }) | null = null;
  private closed = false;
  /** Settles when the current attempt to open the gate settled (resolved or failed). */
  ready: Promise<void>;
  failed: Error | null = null;
  private retryMs = LAZY_GATE_RETRY_MS_MIN;

  constructor(
    private readonly open: () => Promise<ReservationGate & { close?(): void }>,
    private readonly log: LogFn,
    private readonly what: string,
  ) {
    this.ready = this.attempt();
  }

  /**
   * Opens the gate; a failure (monitor unreachable at start, a damaged record) is
   * retried with backoff while the LU answers NOT READY, instead of for good.
   */
  private attempt(): Promise<void> {
    return this.open().then(
      (g) => {
        this.gate = g;
        this.failed = null;
        if (this.closed) g.close?.();
      },
      (err: Error) => {
        this.failed = err;
        if (this.closed) return;
        this.log('error', `reservations of ${this.what} could not be loaded (retrying in ${this.retryMs} ms): ${err.message}`);
        const t = setTimeout(() => {
          if (!this.closed) this.ready = this.attempt();
        }, this.retryMs);
        t.unref();
        this.retryMs = Math.min(LAZY_GATE_RETRY_MS_MAX, this.retryMs * 2);
      },
    );
  }

  checkAccess(nexus: Nexus, access: AccessClass): 'ok' | 'conflict' | 'unavailable' {
    return this.gate === null ? 'unavailable' : this.gate.checkAccess(nexus, access);
  }

  /** The volume is gone: stop following its record. */
  close(): void {
    this.closed = true;
    this.gate?.close?.();
  }

  async prIn(nexus: Nexus, cdb: Buffer, expectedInBytes: number): Promise<ScsiResult> {
    await this.ready;
    if (this.gate === null) return notReady();
    return this.gate.prIn(nexus, cdb, expectedInBytes);
  }

  async prOut(nexus: Nexus, cdb: Buffer, params: Buffer | null): Promise<ScsiResult> {
    await this.ready;
    if (this.gate === null) return notReady();
    return this.gate.prOut(nexus, cdb, params);
  }
}

const LAZY_GATE_RETRY_MS_MIN = 500;
const LAZY_GATE_RETRY_MS_MAX = 10_000;

/** NOT READY, LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION (04/0A): retryable. */
function notReady(): ScsiResult {
  return checkCondition(0x02, 0x040a);
}

/** A gate for gateways without a PR store: every access allowed, PR commands unsupported. */
class NoReservations implements ReservationGate {
  checkAccess(): 'ok' {
    return 'ok';
  }
  async prIn(): Promise<ScsiResult> {
    return checkCondition(SK_ILLEGAL_REQUEST, 0x2000);
  }
  async prOut(): Promise<ScsiResult> {
    return checkCondition(SK_ILLEGAL_REQUEST, 0x2000);
  }
}

export type GateOpener = (store: PrStore, key: string, effects: PrEffects) => Promise<ReservationGate & { close?(): void }>;

export class Portal implements ConnectionHost, LoginTargets {
  readonly sessions: SessionTable;
  readonly log: LogFn;
  readonly queueDepth: number;
  readonly maxRecvDataSegmentBytes: number;
  readonly maxTaskDataBytes: number;
  readonly bufferedBytesMax: number;
  /** The gateways' one recycler of write payloads (gateway/buffers.ts), shared with NBD. */
  readonly writeBuffers = writePayloadBuffers;
  private readonly limits: TargetLimits;
  private readonly targets = new Map<string, PortalTarget>();
  private readonly gates = new Map<number, ReservationGate>();
  private readonly address: string;
  private readonly randomBytes: (n: number) => Buffer;
  private closed = false;

  constructor(
    private readonly opts: PortalOptions,
    private readonly openGate: GateOpener | null,
  ) {
    this.log = opts.log ?? (() => {});
    this.limits = { ...defaultTargetLimits(), ...opts.limits };
    this.queueDepth = opts.queueDepth ?? QUEUE_DEPTH_DEFAULT;
    this.maxRecvDataSegmentBytes = this.limits.maxRecvDataSegmentBytes;
    this.maxTaskDataBytes = opts.maxTaskDataBytes ?? TASK_DATA_BYTES_MAX_DEFAULT;
    this.bufferedBytesMax = opts.bufferedBytesMax ?? BUFFERED_BYTES_MAX_DEFAULT;
    this.sessions = new SessionTable(opts.sessionsMax ?? SESSIONS_MAX_DEFAULT);
    const h = opts.address.host;
    this.address = `${h.includes(':') ? `[${h}]` : h}:${opts.address.port}`;
    this.randomBytes = opts.randomBytes ?? cryptoRandomBytes;
    this.refresh();
  }

  get tpgt(): number {
    return this.opts.tpgt;
  }

  // ---- targets and LUs ----

  /** Rebuilds the targets from the config and the volume list (keeping LUs that did not change). */
  refresh(): void {
    if (this.closed) return;
    let cfg = this.opts.config();
    const volumes = this.opts.store.list();
    const synced = syncDefaultLuns(cfg, volumes.map((v) => v.id));
    if (synced.changed) {
      cfg = synced.cfg;
      this.opts.onDefaultLunsChanged?.(cfg);
    }
    const byId = new Map(volumes.map((v) => [v.id, v]));
    // Gates of deleted volumes stop following their PR record (ids are never reused).
    for (const [id, g] of this.gates) {
      if (byId.has(id)) continue;
      (g as { close?(): void }).close?.();
      this.gates.delete(id);
      this.opts.onVolumeGone?.(id);
    }
    const wanted = new Map<string, { luns: LunMapping[]; initiators: string[]; chap: LoginTarget['chap']; alias?: string }>();
    wanted.set(DEFAULT_TARGET_NAME, { luns: cfg.defaultLuns, initiators: cfg.defaultInitiators, chap: cfg.defaultChap });
    for (const t of cfg.targets) wanted.set(t.name, { luns: t.luns, initiators: t.initiators, chap: t.chap, ...(t.alias !== undefined ? { alias: t.alias } : {}) });
    for (const name of [...this.targets.keys()]) if (!wanted.has(name)) this.dropTarget(name);
    for (const [name, w] of wanted) {
      let t = this.targets.get(name);
      if (t === undefined) {
        t = new PortalTarget(name, { address: this.address, tpgt: this.opts.tpgt });
        this.targets.set(name, t);
      }
      t.configure(w.initiators, w.chap, w.alias);
      this.syncLus(t, w.luns, byId);
    }
  }

  private syncLus(t: PortalTarget, luns: LunMapping[], byId: Map<number, VolumeInfo>): void {
    const keep = new Set<number>();
    let changed = false;
    for (const m of luns) {
      const info = byId.get(m.volumeId);
      if (info === undefined) continue; // the volume is gone: the LUN disappears
      keep.add(m.lun);
      if (t.volumeOfLun.get(m.lun) === m.volumeId) continue;
      const volume = this.opts.store.open(info.name);
      const handle = this.opts.makeLu({ lun: m.lun, volume, info, targetName: t.name, gate: this.gateFor(info.id) });
      t.lus.set(m.lun, handle);
      t.volumeOfLun.set(m.lun, m.volumeId);
      changed = true;
    }
    for (const lun of [...t.lus.keys()]) {
      if (keep.has(lun)) continue;
      t.lus.delete(lun);
      t.volumeOfLun.delete(lun);
      changed = true;
    }
    // Initiators logged in must rescan: REPORTED LUNS DATA HAS CHANGED (SPC-4 Annex; 3F/0E).
    if (changed) for (const h of t.lus.values()) h.lu.raiseUnitAttention(0x3f, 0x0e);
  }

  private gateFor(volumeId: number): ReservationGate {
    let g = this.gates.get(volumeId);
    if (g !== undefined) return g;
    if (this.opts.prStore === null || this.openGate === null) {
      g = new NoReservations();
    } else {
      const store = this.opts.prStore;
      const open = this.openGate;
      g = new LazyGate(() => open(store, String(volumeId), this.effectsFor(volumeId)), this.log, `volume id ${volumeId}`);
    }
    this.gates.set(volumeId, g);
    return g;
  }

  private effectsFor(volumeId: number): PrEffects {
    return {
      unitAttention: (nexusKey, asc, ascq) => {
        for (const t of this.targets.values()) {
          for (const [lun, id] of t.volumeOfLun) if (id === volumeId) t.lus.get(lun)?.queueUnitAttention(nexusKey, asc, ascq);
        }
      },
      abortNexus: (nexusKey) => {
        const victims: OpenTask[] = [];
        const zombies: Task[] = [];
        for (const s of this.sessions.all()) {
          if (s.nexus?.key !== nexusKey || s.target === null) continue;
          const target = this.targets.get(s.target.name);
          for (const open of s.tasksOn(null)) if (target?.volumeOfLun.get(open.task.cmd.lun) === volumeId) victims.push(open);
          for (const z of s.zombies) if (target?.volumeOfLun.get(z.cmd.lun) === volumeId) zombies.push(z);
        }
        return this.abortAll(victims, zombies);
      },
    };
  }

  /** Every LU (of any target) that serves this volume. */
  private lusOfVolume(volumeId: number | undefined): LogicalUnit[] {
    const out: LogicalUnit[] = [];
    for (const t of this.targets.values()) for (const [lun, id] of t.volumeOfLun) if (id === volumeId) out.push(t.lus.get(lun)!.lu);
    return out;
  }

  private dropTarget(name: string): void {
    this.targets.delete(name);
    for (const s of this.sessions.all()) if (s.target?.name === name) for (const c of [...s.connections.values()]) c.close(`target ${name} was deleted`);
  }

  /** Sessions logged in to a target. */
  sessionCount(targetName: string): number {
    return this.sessions.all().filter((s) => s.target?.name === targetName).length;
  }

  /** Ends every session of a target (before it is deleted or its ACL tightened). */
  closeSessions(targetName: string, reason: string): void {
    for (const s of this.sessions.all()) if (s.target?.name === targetName) for (const c of [...s.connections.values()]) c.close(reason);
  }

  /** Ends the sessions of a target whose initiator fails the predicate. */
  closeSessionsWhere(targetName: string, drop: (initiatorName: string) => boolean, reason: string): void {
    for (const s of this.sessions.all()) if (s.target?.name === targetName && drop(s.initiatorName)) for (const c of [...s.connections.values()]) c.close(reason);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  // ---- LoginTargets ----

  find(name: string): LoginTarget | null {
    return this.targets.get(name) ?? null;
  }

  listFor(initiatorName: string): LoginTarget[] {
    return [...this.targets.values()].filter((t) => t.allowInitiator(initiatorName));
  }

  target(name: string): TargetView | null {
    return this.targets.get(name) ?? null;
  }

  // ---- ConnectionHost ----

  newLogin(): LoginDriver {
    return new LoginMachine({ portal: { address: this.address, tpgt: this.opts.tpgt }, targetLimits: this.limits, targets: this, randomBytes: this.randomBytes });
  }

  outcome(step: LoginStepView): LoginOutcome {
    const r = step.result as LoginResult;
    const p = r.params;
    return {
      sessionType: r.sessionType,
      initiatorName: r.initiatorName,
      targetName: r.targetName,
      isid: r.isid,
      tsih: r.tsih,
      cid: r.cid,
      digests: { header: p.headerDigest, data: p.dataDigest },
      initiatorMaxRecvDataSegmentBytes: p.initiatorMaxRecvDataSegmentLength,
      limits: {
        initialR2t: p.initialR2T,
        immediateData: p.immediateData,
        firstBurstBytes: p.firstBurstLength,
        maxBurstBytes: p.maxBurstLength,
        maxOutstandingR2t: p.maxOutstandingR2T,
        maxConnections: p.maxConnections,
      },
    };
  }

  /** The I_T nexus of a session; the relative target port id is TPGT + 1 (types.ts, pr.ts rely on it). */
  makeNexus(initiatorName: string, isid: Buffer, targetName: string): Nexus {
    const initiatorPort = `${initiatorName},i,0x${isid.toString('hex')}`;
    const targetPort = `${targetName},t,0x${this.opts.tpgt.toString(16).padStart(4, '0')}`;
    return { key: `${initiatorPort}|${targetPort}`, initiatorPort, initiatorName, targetPort, relativeTargetPortId: this.opts.tpgt + 1 };
  }

  sendTargets(value: string, session: IscsiSession): Array<[string, string]> {
    const current = session.target === null ? null : (this.targets.get(session.target.name) ?? null);
    return sendTargetsResponse(value, session.initiatorName, session.type, current, this);
  }

  encodeText(pairs: Array<[string, string]>): Buffer {
    return encodeTextKeys(pairs);
  }

  parseText(data: Buffer): Array<[string, string]> {
    return parseTextKeys(data);
  }

  noSuchLun(cmd: ScsiCommandPdu, target: TargetView, nexus: Nexus): ScsiResult {
    const scsi = { nexus, lun: cmd.lun, cdb: cmd.cdb, dataOut: null, expectedInBytes: cmd.read ? cmd.expectedDataTransferLength : 0, taskTag: cmd.itt };
    return answerMissingLun(scsi, target.luns(), MISSING_LUN_ID);
  }

  /**
   * The I_T nexus is gone (logout, or the last connection dropped): per-nexus LU
   * state ends with it — pending unit attentions and an SPC-2 RESERVE(6) (SPC-2
   * 7.21: released on I_T nexus loss). Persistent reservations stay.
   */
  sessionEnded(session: IscsiSession): void {
    if (session.target === null || session.nexus === null) return;
    const target = this.targets.get(session.target.name);
    for (const h of target?.lus.values() ?? []) h.lu.forgetNexus(session.nexus.key);
    this.log('info', `session ${session.tsih} of ${session.initiatorName} ended`);
  }

  // ---- task management (RFC 7143 §11.5) ----

  async taskManagement(s: IscsiSession, req: TmfRequestPdu): Promise<number> {
    const target = s.target === null ? null : (this.targets.get(s.target.name) ?? null);
    if (target === null) return TMF_UNSUPPORTED;
    switch (req.func) {
      case TMF_ABORT_TASK:
        return this.abortTask(s, req);
      case TMF_ABORT_TASK_SET: {
        if (target.lu(req.lun) === null) return TMF_NO_LUN;
        await this.abortAll(s.tasksOn(req.lun), [...s.zombies].filter((z) => z.cmd.lun === req.lun));
        return TMF_COMPLETE;
      }
      case TMF_CLEAR_TASK_SET:
      case TMF_LU_RESET: {
        const handle = target.lus.get(req.lun);
        if (handle === undefined) return TMF_NO_LUN;
        const volumeId = target.volumeOfLun.get(req.lun);
        const onVolume = (other: IscsiSession, lun: number) => {
          const ot = other.target === null ? undefined : this.targets.get(other.target.name);
          return ot?.volumeOfLun.get(lun) === volumeId;
        };
        const victims: OpenTask[] = [];
        const zombies: Task[] = [];
        for (const other of this.sessions.all()) {
          for (const open of other.tasksOn(null)) if (onVolume(other, open.task.cmd.lun)) victims.push(open);
          for (const z of other.zombies) if (onVolume(other, z.cmd.lun)) zombies.push(z);
        }
        await this.abortAll(victims, zombies);
        const [asc, ascq] = req.func === TMF_LU_RESET ? UA_BUS_DEVICE_RESET : UA_COMMANDS_CLEARED_BY_ANOTHER;
        for (const lu of this.lusOfVolume(volumeId)) {
          if (req.func === TMF_LU_RESET) lu.reset();
          lu.raiseUnitAttention(asc, ascq, req.func === TMF_LU_RESET ? undefined : s.nexus?.key);
        }
        if (req.func === TMF_LU_RESET) this.log('info', `LU reset of ${target.name} LUN ${req.lun} by ${s.initiatorName}`);
        return TMF_COMPLETE;
      }
      case TMF_TARGET_WARM_RESET: {
        const victims: OpenTask[] = [];
        const zombies: Task[] = [];
        for (const other of this.sessions.all()) {
          if (other.target?.name !== target.name) continue;
          victims.push(...other.tasksOn(null));
          zombies.push(...other.zombies);
        }
        await this.abortAll(victims, zombies);
        for (const h of target.lus.values()) {
          h.lu.reset();
          h.lu.raiseUnitAttention(UA_TARGET_RESET[0], UA_TARGET_RESET[1]);
        }
        this.log('info', `target warm reset of ${target.name} by ${s.initiatorName}`);
        return TMF_COMPLETE;
      }
      case TMF_CLEAR_ACA:
      case TMF_TARGET_COLD_RESET:
        return TMF_UNSUPPORTED;
      case TMF_TASK_REASSIGN:
        return TMF_REASSIGN_UNSUPPORTED;
      default:
        return TMF_UNSUPPORTED;
    }
  }

  private async abortTask(s: IscsiSession, req: TmfRequestPdu): Promise<number> {
    const open = s.tasks.get(req.referencedTaskTag);
    if (open === undefined || open.task.cmd.lun !== req.lun) {
      // RFC 7143 §11.5.1: no such task, but RefCmdSN is inside the window and before
      // this request: the command counts as received (a late arrival is dropped) and
      // the answer is "function complete"; otherwise "task does not exist".
      const before = snLt(req.refCmdSN, req.cmdSN);
      return before && s.tombstone(req.refCmdSN) ? TMF_COMPLETE : TMF_NO_TASK;
    }
    await this.abortAll([open], []);
    return TMF_COMPLETE;
  }

  private abort(open: OpenTask): void {
    open.conn.abortTask(open.task);
  }

  /**
   * Aborts tasks; resolves once none of them (nor the zombies given) can still
   * change the medium. Reads are not waited for: their result is simply dropped.
   */
  private async abortAll(victims: OpenTask[], zombies: Task[]): Promise<void> {
    const waits: Array<Promise<void>> = [];
    for (const open of victims) {
      const running = open.task.state === 'executing' && open.task.settled !== null ? open.task.settled : null;
      this.abort(open);
      if (running !== null && accessClass(open.task.cmd.cdb) !== 'read') waits.push(running);
    }
    for (const z of zombies) if (z.settled !== null && accessClass(z.cmd.cdb) !== 'read') waits.push(z.settled);
    if (waits.length > 0) await Promise.all(waits);
  }
}
