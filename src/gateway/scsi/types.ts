// The contract between an iSCSI transport (gateway/iscsi) and the SCSI layer
// (gateway/scsi): the transport frames PDUs, orders commands and moves data; the
// SCSI layer executes one CDB against a Volume and answers status, sense and data.
// Persistent reservations reach the SCSI layer through PrStore, which keeps the
// state of a volume either on the daemon's disk or in the cluster (monitor).
//
// Invariants:
// - execute() never throws for an operating error: every failure (bad CDB, range,
//   device EIO, reservation conflict) becomes a status with sense data; a throw is a
//   programmer error and the transport answers it with TARGET FAILURE.
// - dataIn is never longer than the command's expectedInBytes (the transport
//   reports the residual); dataOut is exactly what the initiator sent.
// - A nexus is identified by its key (initiator port + target port): registrations
//   and reservations belong to nexuses, not to initiator names (SPC-4 5.9 "I_T nexus").

/** One I_T nexus (SPC-4 "I_T nexus"; iSCSI: initiator name + ISID, target name + TPGT). */
export interface Nexus {
  /** Stable identifier: `${initiatorPort}|${targetPort}`. */
  readonly key: string;
  /** iSCSI initiator port name: `iqn...,i,0x<isid hex 12>` (RFC 7143 §13.? / SPC-4 TransportID). */
  readonly initiatorPort: string;
  /** iSCSI initiator name (the part before `,i,`). */
  readonly initiatorName: string;
  /** Target port name: `iqn...,t,0x<tpgt hex 4>`. */
  readonly targetPort: string;
  /** Relative target port identifier (VPD 0x83, READ FULL STATUS): the TPGT + 1 here. */
  readonly relativeTargetPortId: number;
}

export interface ScsiCommand {
  readonly nexus: Nexus;
  readonly lun: number;
  /** The whole CDB (6..16 bytes from the BHS, longer ones from an extended-CDB AHS). */
  readonly cdb: Buffer;
  /** Data the initiator sent (WRITE, UNMAP, MODE SELECT, PR OUT, ...), or null. */
  readonly dataOut: Buffer | null;
  /** Bytes of data-in the initiator's buffer holds (iSCSI EDTL for reads). */
  readonly expectedInBytes: number;
  /** Transport task tag, unique among the nexus's open tasks (used by aborts). */
  readonly taskTag: number;
}

export interface ScsiResult {
  /** SAM status: 0x00 GOOD, 0x02 CHECK CONDITION, 0x08 BUSY, 0x18 RESERVATION CONFLICT, 0x28 TASK SET FULL. */
  status: number;
  /** Fixed-format sense data (SPC-4 4.5.3), only with CHECK CONDITION. */
  sense: Buffer | null;
  /** Data for the initiator; at most expectedInBytes. */
  dataIn: Buffer | null;
  /**
   * Bytes the CDB itself asked to move (READ: blocks × block size, INQUIRY: the
   * allocation length's worth of data it has, WRITE: blocks × block size), when it
   * differs from what moved; the transport reports the difference to the initiator's
   * expected length as an overflow/underflow residual (RFC 7143 §11.4.5). Omitted:
   * the transport uses dataIn's length (reads) or dataOut's length (writes).
   */
  transferBytes?: number;
}

export const SAM_GOOD = 0x00;
export const SAM_CHECK_CONDITION = 0x02;
export const SAM_BUSY = 0x08;
export const SAM_RESERVATION_CONFLICT = 0x18;
export const SAM_TASK_SET_FULL = 0x28;
export const SAM_TASK_ABORTED = 0x40;

/** A logical unit: one volume as the SCSI layer serves it. */
export interface LogicalUnit {
  readonly lun: number;
  readonly volumeName: string;
  execute(cmd: ScsiCommand): Promise<ScsiResult>;
  /** Queues a unit attention for every nexus except `except` (e.g. after a LUN RESET). */
  raiseUnitAttention(asc: number, ascq: number, except?: string): void;
  /** Drops per-nexus state (pending unit attentions, an SPC-2 RESERVE(6)) when a nexus logs out for good. */
  forgetNexus(nexusKey: string): void;
  /** LU reset / target warm reset (SAM-5 7.7): releases an SPC-2 RESERVE(6); the caller raises the unit attention. */
  reset(): void;
}

/** What a command does to the medium, for reservation checks (SPC-4 5.9.1 table of commands). */
export type AccessClass = 'read' | 'write' | 'always';

/**
 * Persistent reservations of one volume as the LU sees them (SPC-4 5.9). Implemented
 * by gateway/scsi/pr-gate.ts over a PrStore; the LU calls it, never the store.
 */
export interface ReservationGate {
  /**
   * Synchronous check on the IO path: 'ok', 'conflict' (answer RESERVATION CONFLICT),
   * or 'unavailable' (the gateway cannot know the current state, e.g. its cluster
   * lease expired: answer NOT READY so the initiator retries or fails over).
   */
  checkAccess(nexus: Nexus, access: AccessClass): 'ok' | 'conflict' | 'unavailable';
  /** PERSISTENT RESERVE IN (0x5E). */
  prIn(nexus: Nexus, cdb: Buffer, expectedInBytes: number): Promise<ScsiResult>;
  /** PERSISTENT RESERVE OUT (0x5F); serialized with every other PR OUT on the volume, on every gateway. */
  prOut(nexus: Nexus, cdb: Buffer, params: Buffer | null): Promise<ScsiResult>;
}

/** Effects of a PR change that other nexuses must see (delivered by the gate to the LUs). */
export interface PrEffects {
  /** Queue a unit attention (asc, ascq) for this nexus. */
  unitAttention(nexusKey: string, asc: number, ascq: number): void;
  /**
   * PREEMPT AND ABORT: abort every task of this nexus on this LU. The promise (if
   * any) settles once none of them can still change the medium; the gate answers
   * the PR OUT only after it (SPC-4 5.9.11.5: the preempted tasks are aborted).
   */
  abortNexus(nexusKey: string): Promise<void> | void;
}

/** One volume's persistent-reservation record as stored: an opaque JSON value and its revision. */
export interface PrRecord {
  /** 0 = never written (state null). Increases by one on every successful compareAndSet. */
  rev: number;
  /** JSON-serializable state owned by gateway/scsi/pr.ts; null before the first write. */
  state: unknown;
}

export type PrCasResult = { ok: true; rev: number } | { ok: false; current: PrRecord };

/**
 * Where PR records live: the daemon's data dir (one gateway) or the monitor (every
 * gateway of a cluster). Keys are volume ids as decimal strings, so a rename keeps
 * the reservation and a re-created volume of the same name does not inherit it.
 */
export interface PrStore {
  /**
   * The newest record this gateway knows, synchronously (IO path). 'unavailable' when
   * the gateway cannot vouch that it is current (cluster: its lease at the monitor
   * may have expired, or it has not loaded the key yet — call load() first).
   */
  current(key: string): PrRecord | 'unavailable';
  /** Loads (and from then on follows) the key; resolves once current(key) is a record. */
  load(key: string): Promise<PrRecord>;
  /**
   * Replaces the record if its revision is still expectRev. Resolves only once the new
   * record is durable and every gateway that follows the key has it, or has lost its
   * lease (cluster) — so no gateway lets IO through under the old state afterwards.
   */
  compareAndSet(key: string, expectRev: number, state: unknown): Promise<PrCasResult>;
  /** Called with every newer record of a followed key (own writes included). Returns an unsubscribe. */
  subscribe(key: string, listener: (rec: PrRecord) => void): () => void;
  close(): Promise<void>;
}
