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
  /** Commands received ahead of ExpCmdSN, keyed by CmdSN; run null = its connection closed (slot kept). */
  private readonly held = new Map<number, { conn: SessionConnection | null; run: (() => void) | null }>();
  /**
   * CmdSNs that count as received without ever running: ABORT TASK named a command
   * that had not arrived (RFC 7143 §11.5.1 b). A late arrival is dropped.
   */
  private readonly tombstones = new Set<number>();
  /**
   * Tasks taken out of the task table (aborted, or their connection closed) whose
   * medium access is still running: task management and reinstatement wait for them.
   */
  readonly zombies = new Set<Task>();
  /** Set while a connection with the same CID replaces the only one: the session must not end. */
  replacing = false;
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
  order(cmdSN: number, immediate: boolean, run: () => void, conn: SessionConnection | null = null): boolean {
    if (immediate) {
      run();
      return true;
    }
    if (this.tombstones.delete(cmdSN)) return false; // aborted before it arrived
    if (cmdSN === this.expCmdSN && snLe(cmdSN, this.advertisedMaxCmdSN)) {
      this.expCmdSN = snAdd(this.expCmdSN, 1);
      run();
      this.releaseHeld();
      return true;
    }
    if (snLt(this.expCmdSN, cmdSN) && snLe(cmdSN, this.advertisedMaxCmdSN) && !this.held.has(cmdSN)) {
      this.held.set(cmdSN, { conn, run });
      return true;
    }
    return false;
  }

  /**
   * ABORT TASK for a command not received yet: its CmdSN counts as received
   * (RFC 7143 §11.5.1), so the window moves on and a late arrival is dropped.
   * Returns false when cmdSN is not inside the window.
   */
  tombstone(cmdSN: number): boolean {
    if (!snLe(this.expCmdSN, cmdSN) || !snLe(cmdSN, this.advertisedMaxCmdSN) || this.held.has(cmdSN)) return false;
    if (cmdSN === this.expCmdSN) {
      this.expCmdSN = snAdd(this.expCmdSN, 1);
      this.releaseHeld();
    } else {
      this.tombstones.add(cmdSN);
    }
    return true;
  }

  private releaseHeld(): void {
    for (;;) {
      const sn = this.expCmdSN;
      if (this.tombstones.delete(sn)) {
        this.expCmdSN = snAdd(sn, 1);
        continue;
      }
      const next = this.held.get(sn);
      if (next === undefined) return;
      this.held.delete(sn);
      this.expCmdSN = snAdd(sn, 1);
      next.run?.();
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

  /**
   * Takes a task out of the table (its ITT may be reused at once); one whose
   * medium access still runs stays a zombie until that settles.
   */
  retire(task: Task): void {
    this.removeTask(task);
    if (task.state !== 'executing' || task.settled === null) return;
    this.zombies.add(task);
    void task.settled.then(() => this.zombies.delete(task));
  }

  /** Tasks of this session, optionally only those of one LUN. */
  tasksOn(lun: number | null): OpenTask[] {
    const out: OpenTask[] = [];
    for (const t of this.tasks.values()) if (lun === null || t.task.cmd.lun === lun) out.push(t);
    return out;
  }

  /** Drops the tasks a closed connection owned (ERL 0: they are aborted) and its held commands' work. */
  dropConnection(conn: SessionConnection): void {
    if (this.connections.get(conn.cid) === conn) this.connections.delete(conn.cid);
    for (const t of [...this.tasks.values()]) {
      if (t.conn !== conn) continue;
      t.task.aborted = true;
      t.task.discard();
      this.retire(t.task);
    }
    // Their CmdSN slots stay, so the window still moves past them.
    for (const h of this.held.values()) if (h.conn === conn) h.run = null;
    if (this.connections.size === 0 && !this.replacing) {
      this.ended = true;
      this.held.clear();
      this.tombstones.clear();
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
