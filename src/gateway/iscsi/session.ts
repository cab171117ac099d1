// An iSCSI session: the connections that share one TSIH, the command window
// (CmdSN ordering across connections), the task table and the logical units of
// its target (RFC 7143 §4.2.2.? command numbering, §6.? multiple connections).
// Pure: connections call in; the session never touches a socket.
//
// Invariants:
// - Non-immediate commands are delivered to the SCSI layer in CmdSN order, even
//   when they arrive out of order on different connections; commands outside
//   [ExpCmdSN, MaxCmdSN] are dropped (RFC 7143 §4.2.2.1 "the target MUST silently
//   ignore"); held commands are bounded by the window.
// - The advertised MaxCmdSN never moves backwards, and the window leaves room for
//   at most `queueDepth` tasks beyond those already running.
// - ITTs are unique among the session's open tasks.
import type { LogicalUnit, Nexus } from '../scsi/types.js';
import { snAdd, snLe, snLt, snMax } from './serial.js';
import type { Task } from './task.js';

export type SessionType = 'Normal' | 'Discovery';

/** Operational parameters of a session as negotiated at login (RFC 7143 §13). */
export interface SessionLimits {
  initialR2t: boolean;
  immediateData: boolean;
  firstBurstBytes: number;
  maxBurstBytes: number;
  maxOutstandingR2t: number;
  maxConnections: number;
}

/** What a session needs from its target. */
export interface TargetView {
  readonly name: string;
  /** The LU at this LUN, or null. */
  lu(lun: number): LogicalUnit | null;
  /** Every LUN of the target, ascending. */
  luns(): number[];
}

/** One connection as the session sees it. */
export interface SessionConnection {
  readonly cid: number;
  /** Closes the connection (its tasks are aborted). */
  close(reason: string): void;
  /** Aborts one of this connection's tasks (task management): no status will be sent for it. */
  abortTask(task: Task): void;
}

export interface OpenTask {
  task: Task;
  conn: SessionConnection;
  lu: LogicalUnit | null;
}

export class IscsiSession {
  readonly connections = new Map<number, SessionConnection>();
  readonly tasks = new Map<number, OpenTask>();
  expCmdSN: number;
  private advertisedMaxCmdSN: number;
  /** Commands received ahead of ExpCmdSN, keyed by CmdSN. */
  private readonly held = new Map<number, () => void>();
  ended = false;

  constructor(
    readonly tsih: number,
    readonly type: SessionType,
    readonly initiatorName: string,
    readonly isid: Buffer,
    readonly target: TargetView | null,
    readonly nexus: Nexus | null,
    readonly limits: SessionLimits,
    initialCmdSN: number,
    private readonly queueDepth: number,
  ) {
    this.expCmdSN = initialCmdSN >>> 0;
    this.advertisedMaxCmdSN = snAdd(this.expCmdSN, queueDepth - 1);
  }

  /** MaxCmdSN to put in the next PDU (never lower than one already sent). */
  maxCmdSN(): number {
    const room = Math.max(0, this.queueDepth - this.tasks.size);
    this.advertisedMaxCmdSN = snMax(this.advertisedMaxCmdSN, snAdd(this.expCmdSN, room - 1));
    return this.advertisedMaxCmdSN;
  }

  /**
   * Orders a command: `run` is called now, later (when the commands before it
   * arrived) or never (outside the window). Returns false when it was dropped.
   */
  order(cmdSN: number, immediate: boolean, run: () => void): boolean {
    if (immediate) {
      run();
      return true;
    }
    if (cmdSN === this.expCmdSN) {
      this.expCmdSN = snAdd(this.expCmdSN, 1);
      run();
      this.releaseHeld();
      return true;
    }
    if (snLt(this.expCmdSN, cmdSN) && snLe(cmdSN, this.advertisedMaxCmdSN) && !this.held.has(cmdSN)) {
      this.held.set(cmdSN, run);
      return true;
    }
    return false;
  }

  private releaseHeld(): void {
    for (;;) {
      const next = this.held.get(this.expCmdSN);
      if (next === undefined) return;
      this.held.delete(this.expCmdSN);
      this.expCmdSN = snAdd(this.expCmdSN, 1);
      next();
    }
  }

  /** Commands waiting for an earlier CmdSN. */
  heldCount(): number {
    return this.held.size;
  }

  addTask(open: OpenTask): boolean {
    if (this.tasks.has(open.task.itt)) return false;
    this.tasks.set(open.task.itt, open);
    return true;
  }

  removeTask(task: Task): void {
    const open = this.tasks.get(task.itt);
    if (open !== undefined && open.task === task) this.tasks.delete(task.itt);
  }

  /** Tasks of this session, optionally only those of one LUN. */
  tasksOn(lun: number | null): OpenTask[] {
    const out: OpenTask[] = [];
    for (const t of this.tasks.values()) if (lun === null || t.task.cmd.lun === lun) out.push(t);
    return out;
  }

  /** Drops the tasks a closed connection owned (ERL 0: they are aborted). */
  dropConnection(conn: SessionConnection): void {
    if (this.connections.get(conn.cid) === conn) this.connections.delete(conn.cid);
    for (const t of [...this.tasks.values()]) {
      if (t.conn !== conn) continue;
      t.task.aborted = true;
      t.task.discard();
      this.tasks.delete(t.task.itt);
    }
    if (this.connections.size === 0) {
      this.ended = true;
      this.held.clear();
    }
  }
}

/** The server's sessions, by TSIH and by initiator port (RFC 7143 §4.? session identification). */
export class SessionTable {
  private readonly byTsih = new Map<number, IscsiSession>();
  private nextTsih = 1;

  constructor(readonly sessionsMax: number) {}

  get size(): number {
    return this.byTsih.size;
  }

  all(): IscsiSession[] {
    return [...this.byTsih.values()];
  }

  byId(tsih: number): IscsiSession | null {
    return this.byTsih.get(tsih) ?? null;
  }

  /** The session of this initiator port (name + ISID) and target, if any. */
  find(initiatorName: string, isid: Buffer, targetName: string | null): IscsiSession | null {
    for (const s of this.byTsih.values()) {
      if (s.initiatorName === initiatorName && s.isid.equals(isid) && (s.target?.name ?? null) === targetName) return s;
    }
    return null;
  }

  /** A fresh non-zero TSIH, or 0 when the table is full. */
  allocateTsih(): number {
    if (this.byTsih.size >= this.sessionsMax) return 0;
    for (let i = 0; i < 0x10000; i++) {
      const t = this.nextTsih;
      this.nextTsih = this.nextTsih >= 0xffff ? 1 : this.nextTsih + 1;
      if (!this.byTsih.has(t)) return t;
    }
    return 0;
  }

  add(s: IscsiSession): void {
    this.byTsih.set(s.tsih, s);
  }

  remove(s: IscsiSession): void {
    if (this.byTsih.get(s.tsih) === s) this.byTsih.delete(s.tsih);
  }
}
