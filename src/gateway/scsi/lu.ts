// The SCSI logical unit: one Tessera Volume served as a direct-access block device
// (SPC-4, SBC-4). execute() checks, in this order: unit attentions (SAM-5 5.14), the
// opcode, the CDB length and control byte, the SPC-2 reservation (reserve6.ts), the
// persistent reservation gate (SPC-4 5.9), then runs the command.
//
// Invariants:
// - execute() never rejects for an operating error (types.ts): CDB errors, range
//   errors, device errors and reservation conflicts all become a status + sense.
// - INQUIRY, REPORT LUNS and REQUEST SENSE are answered whatever the UA and
//   reservation state (they must work for an initiator to recover); every other
//   command first reports the oldest pending UA of its nexus.
// - Reservation classes (docs/iscsi.md §5, SPC-4 5.9 tables): reads (READ*, VERIFY,
//   PRE-FETCH, GET LBA STATUS) are 'read'; everything that changes the medium or LU
//   state (WRITE*, WRITE SAME, UNMAP, COMPARE AND WRITE, ORWRITE, SYNCHRONIZE CACHE, MODE
//   SELECT, START STOP UNIT unless it only starts) is 'write'; MODE SENSE is 'write'
//   too: SPC-4 lets only holders/registrants run it under WE and EA reservations, as
//   tgt does (memo §5, still to be checked against the SPC-4 table); TUR, READ
//   CAPACITY, RSOC and PR IN/OUT are 'always' (TUR is allowed under every
//   reservation type in SPC-4's table) — still asked, so a gate that lost its lease
//   answers them NOT READY.
// - 'unavailable' → NOT READY, LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE
//   TRANSITION (04/0A): it says "this path cannot serve the LU right now, retry",
//   which initiators (Linux sd, dm-multipath) retry and then fail over — exactly what
//   a gateway whose cluster lease expired needs. 04/0C (unavailable) would fail the
//   path for good.
// - The SPC-2 reservation (RESERVE/RELEASE (6)) is released by RELEASE (6), by
//   forgetNexus (the holder's I_T nexus is gone) and by reset() (LOGICAL UNIT RESET,
//   target reset): the transport must call those two.
import { assert } from '../../stdx/assert.js';
import type { Volume } from '../../volume/types.js';
import type { AccessClass, LogicalUnit, ReservationGate, ScsiCommand, ScsiResult } from './types.js';
import { SAM_RESERVATION_CONFLICT } from './types.js';
import * as op from './cdb.js';
import { allocationLength, cdbLength } from './cdb.js';
import { readCapacity10, readCapacity16 } from './capacity.js';
import { deviceErrorResult } from './device-errors.js';
import { inquiry, makeIdentity } from './inquiry.js';
import type { BlockLimits, LuIdentity } from './inquiry.js';
import { reportLuns } from './luns.js';
import { capacityBlocks } from './media.js';
import type { MediaContext, MediaLimits } from './media.js';
import { ModePages } from './modes.js';
import { getLbaStatus, unmap, writeSame } from './provisioning.js';
import { RangeLock } from './range-lock.js';
import { Spc2Reservation, release6, reserve6 } from './reserve6.js';
import { reportSupportedOpcodes } from './rsoc.js';
import { compareAndWrite, orWrite, preFetch, read, synchronizeCache, verify, write, writeAndVerify } from './sbc.js';
import {
  ASC_LU_NOT_ACCESSIBLE_TRANSITION,
  ASC_MODE_PARAMETERS_CHANGED,
  ASC_NO_ADDITIONAL_SENSE,
  ASC_REPORTED_LUNS_DATA_CHANGED,
  SK_NO_SENSE,
  SK_NOT_READY,
  SK_UNIT_ATTENTION,
  buildSense,
  checkCondition,
  good,
  goodTruncated,
  invalidFieldInCdb,
  invalidOpcode,
} from './sense.js';
import { UnitAttentions } from './ua.js';

export interface ScsiLogicalUnitOptions {
  lun: number;
  volume: Volume;
  /**
   * Stable id of the cluster (or of the single daemon): hashed into the NAA designator
   * with the volume id, so every gateway of the cluster reports the same LU identity.
   */
  clusterId: string;
  /** Persistent reservations; without it PR IN/OUT are INVALID COMMAND OPERATION CODE. */
  gate?: ReservationGate;
  /** LUN numbers of the target, for REPORT LUNS (default: just this LU's). */
  luns?: () => readonly number[];
  /** 512 (default) or 4096. */
  blockSizeBytes?: 512 | 4096;
  /** Reported physical block (READ CAPACITY 16 exponent, optimal granularity); default 4096. */
  physicalBlockSizeBytes?: number;
  /** The volume's object size: optimal unmap granularity and optimal transfer length; default 4 MiB. */
  objectSizeBytes?: number;
  /** MAXIMUM TRANSFER LENGTH (VPD B0); default 8 MiB. */
  maxTransferBytes?: number;
  /** MAXIMUM WRITE SAME LENGTH, also the bound of VERIFY without data; default 1 GiB. */
  maxWriteSameBytes?: number;
  /**
   * MAXIMUM UNMAP LBA COUNT in bytes; default 512 MiB (1 Mi blocks of 512 bytes: libiscsi
   * calls a limit above 2^20 blocks "insanely big", and initiators split larger trims).
   */
  maxUnmapBytes?: number;
  /** MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT; default 256. */
  maxUnmapDescriptors?: number;
  /** MAXIMUM COMPARE AND WRITE LENGTH in blocks, 1..255; default 1. */
  maxCompareAndWriteBlocks?: number;
  /** Queue POWER ON, RESET OR BUS DEVICE RESET OCCURRED for each new nexus; default false. */
  powerOnUa?: boolean;
  /**
   * The CAW range lock; pass the same one to every LU of this gateway serving the same
   * volume (e.g. the volume exported by two targets), so COMPARE AND WRITE stays atomic
   * across them. Default: a lock of this LU's own.
   */
  rangeLock?: RangeLock;
  /** The SPC-2 reservation; share it like rangeLock between LUs of this gateway serving one volume. */
  spc2Reservation?: Spc2Reservation;
  /** IEEE company id in the NAA 6 designator. Default 0x0A7E55: locally administered (U/L bit set), owned by nobody. */
  ieeeCompanyId?: number;
  /** INQUIRY T10 VENDOR IDENTIFICATION (8), PRODUCT IDENTIFICATION (16), PRODUCT REVISION LEVEL (4). */
  vendor?: string;
  product?: string;
  revision?: string;
}

const MiB = 1024 * 1024;

export class ScsiLogicalUnit implements LogicalUnit, MediaContext {
  readonly lun: number;
  readonly volume: Volume;
  readonly limits: MediaLimits;
  readonly lock: RangeLock;
  readonly modes = new ModePages();
  readonly identity: LuIdentity;
  readonly blockLimits: BlockLimits;
  readonly spc2: Spc2Reservation;
  private readonly gate: ReservationGate | undefined;
  private readonly luns: () => readonly number[];
  private readonly attentions: UnitAttentions;

  constructor(opts: ScsiLogicalUnitOptions) {
    const lbs = opts.blockSizeBytes ?? 512;
    assert(lbs === 512 || lbs === 4096, 'block size must be 512 or 4096');
    const physical = opts.physicalBlockSizeBytes ?? 4096;
    assert(physical >= lbs && physical % lbs === 0 && isPowerOfTwo(physical / lbs), 'physical block must be a power-of-two multiple of the logical block');
    const objectBytes = opts.objectSizeBytes ?? 4 * MiB;
    const maxTransferBlocks = Math.floor((opts.maxTransferBytes ?? 8 * MiB) / lbs);
    assert(maxTransferBlocks >= 1, 'max transfer below one block');
    const maxCaw = opts.maxCompareAndWriteBlocks ?? 1;
    assert(Number.isInteger(maxCaw) && maxCaw >= 1 && maxCaw <= 255 && 2 * maxCaw <= maxTransferBlocks, 'bad max COMPARE AND WRITE length');
    this.lun = opts.lun;
    this.volume = opts.volume;
    this.gate = opts.gate;
    this.lock = opts.rangeLock ?? new RangeLock();
    this.spc2 = opts.spc2Reservation ?? new Spc2Reservation();
    this.luns = opts.luns ?? (() => [opts.lun]);
    const maxWriteSameBlocks = Math.max(1, Math.floor((opts.maxWriteSameBytes ?? 1024 * MiB) / lbs));
    this.limits = {
      blockSizeBytes: lbs,
      physicalExponent: Math.log2(physical / lbs),
      maxTransferBlocks,
      maxWriteSameBlocks,
      maxUnmapBlocks: Math.max(1, Math.floor((opts.maxUnmapBytes ?? 512 * MiB) / lbs)),
      maxUnmapDescriptors: opts.maxUnmapDescriptors ?? 256,
      maxCompareAndWriteBlocks: maxCaw,
      maxVerifyBlocks: maxWriteSameBlocks,
    };
    // Optimal transfer granularity = the physical block (smaller writes cost a
    // read-modify-write); the object size is the unmap granularity (only whole objects
    // free space) and a good optimal transfer length.
    this.blockLimits = {
      maxCompareAndWriteBlocks: maxCaw,
      optimalTransferGranularityBlocks: physical / lbs,
      maxTransferBlocks,
      optimalTransferBlocks: Math.min(maxTransferBlocks, Math.max(1, Math.floor(objectBytes / lbs))),
      maxUnmapBlocks: this.limits.maxUnmapBlocks,
      maxUnmapDescriptors: this.limits.maxUnmapDescriptors,
      optimalUnmapGranularityBlocks: Math.max(1, Math.floor(objectBytes / lbs)),
      maxWriteSameBlocks,
    };
    this.identity = makeIdentity({
      clusterId: opts.clusterId,
      volumeId: opts.volume.id,
      ieeeCompanyId: opts.ieeeCompanyId ?? 0x0a7e55,
      vendor: opts.vendor ?? 'TESSERA',
      product: opts.product ?? 'VOLUME',
      revision: opts.revision ?? '0001',
    });
    this.attentions = new UnitAttentions(() => this.volume.sizeBytes(), opts.powerOnUa ?? false);
  }

  get volumeName(): string {
    return this.volume.name();
  }

  raiseUnitAttention(asc: number, ascq: number, except?: string): void {
    this.attentions.raiseAll(((asc & 0xff) << 8) | (ascq & 0xff), except);
  }

  /** Queues a UA for one nexus (PrEffects.unitAttention of the reservation gate). */
  unitAttentionFor(nexusKey: string, asc: number, ascq: number): void {
    this.attentions.raiseFor(nexusKey, ((asc & 0xff) << 8) | (ascq & 0xff));
  }

  /** Pending UAs of a nexus as (ASC << 8) | ASCQ, oldest first. */
  pendingUnitAttentions(nexusKey: string): readonly number[] {
    return this.attentions.pendingOf(nexusKey);
  }

  /** Drops a nexus that is gone for good (logout, I_T nexus loss): its UAs and its SPC-2 reservation (SPC-2 5.5). */
  forgetNexus(nexusKey: string): void {
    this.attentions.forget(nexusKey);
    this.spc2.release(nexusKey);
  }

  /**
   * This LU's part of a LOGICAL UNIT RESET or a target reset (SAM-5 task management):
   * the SPC-2 reservation is released (SPC-2 5.5). Persistent reservations survive
   * (SPC-4 5.9), and the transport raises the reset UA itself (raiseUnitAttention).
   */
  reset(): void {
    this.spc2.clear();
  }

  async execute(cmd: ScsiCommand): Promise<ScsiResult> {
    const cdb = cmd.cdb;
    if (cdb.length === 0) return invalidOpcode();
    const code = cdb[0];
    const reportsUa = code !== op.OP_INQUIRY && code !== op.OP_REPORT_LUNS && code !== op.OP_REQUEST_SENSE;
    const ua = this.attentions.onCommand(cmd.nexus.key, this.volume.sizeBytes(), reportsUa);
    if (ua >= 0) return checkCondition(SK_UNIT_ATTENTION, ua);
    const length = cdbLength(code);
    if (length === 0 || !this.supports(code)) return invalidOpcode();
    if (cdb.length < length) return invalidFieldInCdb(0);
    const control = cdb[length - 1];
    if ((control & 0x04) !== 0) return invalidFieldInCdb(length - 1, 2); // NACA: no ACA support
    if ((control & 0x01) !== 0) return invalidFieldInCdb(length - 1, 0); // LINK (obsolete)
    if (this.spc2.holder !== null && reportsUa && this.spc2.conflicts(cmd.nexus.key, code)) {
      return { status: SAM_RESERVATION_CONFLICT, sense: null, dataIn: null };
    }
    if (this.gate !== undefined && reportsUa) {
      const access = this.gate.checkAccess(cmd.nexus, accessClass(cdb));
      if (access === 'conflict') return { status: SAM_RESERVATION_CONFLICT, sense: null, dataIn: null };
      if (access === 'unavailable') return checkCondition(SK_NOT_READY, ASC_LU_NOT_ACCESSIBLE_TRANSITION);
    }
    return this.dispatch(cmd);
  }

  private supports(code: number): boolean {
    if (code === op.OP_PERSISTENT_RESERVE_IN || code === op.OP_PERSISTENT_RESERVE_OUT) return this.gate !== undefined;
    return SUPPORTED_OPCODES[code] === 1;
  }

  private dispatch(cmd: ScsiCommand): Promise<ScsiResult> | ScsiResult {
    const cdb = cmd.cdb;
    switch (cdb[0]) {
      case op.OP_READ_10:
      case op.OP_READ_16:
      case op.OP_READ_6:
      case op.OP_READ_12:
        return read(this, cmd);
      case op.OP_WRITE_10:
      case op.OP_WRITE_16:
      case op.OP_WRITE_6:
      case op.OP_WRITE_12:
        return write(this, cmd);
      case op.OP_TEST_UNIT_READY:
        return good();
      case op.OP_INQUIRY:
        return inquiry(cdb, cmd.expectedInBytes, this.identity, this.blockLimits, cmd.nexus);
      case op.OP_REQUEST_SENSE:
        return this.requestSense(cmd);
      case op.OP_REPORT_LUNS: {
        const result = reportLuns(cdb, this.luns(), cmd.expectedInBytes);
        // SPC-4 6.33: a successful REPORT LUNS clears REPORTED LUNS DATA HAS CHANGED.
        if (result.status === 0) this.attentions.clear(cmd.nexus.key, ASC_REPORTED_LUNS_DATA_CHANGED);
        return result;
      }
      case op.OP_READ_CAPACITY_10:
        return readCapacity10(this, cmd);
      case op.OP_SERVICE_ACTION_IN_16:
        return this.serviceActionIn(cmd);
      case op.OP_MAINTENANCE_IN:
        if ((cdb[1] & 0x1f) !== op.SA_REPORT_SUPPORTED_OPERATION_CODES) return invalidFieldInCdb(1, 4);
        return reportSupportedOpcodes(cdb, cmd.expectedInBytes, this.gate !== undefined);
      case op.OP_MODE_SENSE_6:
      case op.OP_MODE_SENSE_10:
        return this.modes.sense(cdb, cmd.expectedInBytes, this.geometry());
      case op.OP_MODE_SELECT_6:
      case op.OP_MODE_SELECT_10:
        return this.modeSelect(cmd);
      case op.OP_VERIFY_10:
      case op.OP_VERIFY_12:
      case op.OP_VERIFY_16:
        return verify(this, cmd);
      case op.OP_WRITE_AND_VERIFY_10:
      case op.OP_WRITE_AND_VERIFY_12:
      case op.OP_WRITE_AND_VERIFY_16:
        return writeAndVerify(this, cmd);
      case op.OP_COMPARE_AND_WRITE:
        return compareAndWrite(this, cmd);
      case op.OP_ORWRITE_16:
        return orWrite(this, cmd);
      case op.OP_RESERVE_6:
        return this.spc2Command(cmd, reserve6);
      case op.OP_RELEASE_6:
        return this.spc2Command(cmd, release6);
      case op.OP_WRITE_SAME_10:
      case op.OP_WRITE_SAME_16:
        return writeSame(this, cmd);
      case op.OP_UNMAP:
        return unmap(this, cmd);
      case op.OP_SYNCHRONIZE_CACHE_10:
      case op.OP_SYNCHRONIZE_CACHE_16:
        return synchronizeCache(this, cmd);
      case op.OP_PRE_FETCH_10:
      case op.OP_PRE_FETCH_16:
        return preFetch(this, cmd);
      case op.OP_START_STOP_UNIT:
        return this.startStop(cmd);
      case op.OP_PERSISTENT_RESERVE_IN:
        return this.persistentReserveIn(cmd);
      case op.OP_PERSISTENT_RESERVE_OUT:
        return this.persistentReserveOut(cmd);
      default:
        return invalidOpcode();
    }
  }

  private geometry(): { capacityBlocks: number; blockSizeBytes: number } {
    return { capacityBlocks: capacityBlocks(this), blockSizeBytes: this.limits.blockSizeBytes };
  }

  private serviceActionIn(cmd: ScsiCommand): Promise<ScsiResult> | ScsiResult {
    switch (cmd.cdb[1] & 0x1f) {
      case op.SA_READ_CAPACITY_16:
        return readCapacity16(this, cmd);
      case op.SA_GET_LBA_STATUS:
        return getLbaStatus(this, cmd);
      default:
        return invalidFieldInCdb(1, 4);
    }
  }

  /** REQUEST SENSE 0x03 (SPC-4 6.39): the pending UA (cleared) or NO SENSE, fixed format only. */
  private requestSense(cmd: ScsiCommand): ScsiResult {
    const cdb = cmd.cdb;
    if ((cdb[1] & 0x01) !== 0) return invalidFieldInCdb(1, 0); // DESC: descriptor format unsupported
    const ua = this.attentions.take(cmd.nexus.key);
    const data = ua >= 0 ? buildSense(SK_UNIT_ATTENTION, ua) : buildSense(SK_NO_SENSE, ASC_NO_ADDITIONAL_SENSE);
    return goodTruncated(data, allocationLength(cdb, op.OP_REQUEST_SENSE), cmd.expectedInBytes);
  }

  private modeSelect(cmd: ScsiCommand): ScsiResult {
    const { result, changed } = this.modes.select(cmd.cdb, cmd.dataOut, this.geometry());
    // SPC-4 (mode parameters): other nexuses learn of the change through a UA.
    if (changed) this.attentions.raiseAll(ASC_MODE_PARAMETERS_CHANGED, cmd.nexus.key);
    return result;
  }

  /**
   * START STOP UNIT 0x1B (SBC-4 5.25): the volume has no spindle or power states, so
   * starting is a no-op. Stopping with NO_FLUSH = 0 flushes first (cached data must
   * reach the medium); with IMMED = 1 the status does not wait for that flush.
   */
  private async startStop(cmd: ScsiCommand): Promise<ScsiResult> {
    const cdb = cmd.cdb;
    const immed = (cdb[1] & 0x01) !== 0;
    const powerCondition = cdb[4] >>> 4;
    const start = (cdb[4] & 0x01) !== 0;
    const noFlush = (cdb[4] & 0x04) !== 0;
    if (powerCondition !== 0 || start || noFlush) return good();
    const flushing = this.volume.flush();
    if (immed) {
      // The initiator was told not to wait; a failure will show on its next SYNCHRONIZE CACHE.
      flushing.catch(() => {});
      return good();
    }
    try {
      await flushing;
    } catch (err) {
      return deviceErrorResult(err, 'write');
    }
    return good();
  }

  private async spc2Command(cmd: ScsiCommand, run: typeof reserve6): Promise<ScsiResult> {
    try {
      return await run(this.spc2, this.gate, cmd.nexus, cmd.cdb);
    } catch (err) {
      return deviceErrorResult(err, 'read');
    }
  }

  private async persistentReserveIn(cmd: ScsiCommand): Promise<ScsiResult> {
    assert(this.gate !== undefined);
    let result: ScsiResult;
    try {
      result = await this.gate.prIn(cmd.nexus, cmd.cdb, cmd.expectedInBytes);
    } catch (err) {
      return deviceErrorResult(err, 'read');
    }
    // The contract caps data-in at expectedInBytes; enforce it here too.
    if (result.dataIn !== null && result.dataIn.length > cmd.expectedInBytes) {
      return { ...result, dataIn: result.dataIn.subarray(0, Math.max(0, cmd.expectedInBytes)) };
    }
    return result;
  }

  private async persistentReserveOut(cmd: ScsiCommand): Promise<ScsiResult> {
    assert(this.gate !== undefined);
    try {
      return await this.gate.prOut(cmd.nexus, cmd.cdb, cmd.dataOut);
    } catch (err) {
      return deviceErrorResult(err, 'write');
    }
  }
}

/** Opcodes dispatch() serves (PR IN/OUT depend on the gate and are checked apart). */
const SUPPORTED_OPCODES = new Uint8Array(256);
for (const code of [
  op.OP_TEST_UNIT_READY, op.OP_REQUEST_SENSE, op.OP_READ_6, op.OP_WRITE_6, op.OP_INQUIRY, op.OP_MODE_SELECT_6,
  op.OP_MODE_SENSE_6, op.OP_START_STOP_UNIT, op.OP_READ_CAPACITY_10, op.OP_READ_10, op.OP_WRITE_10,
  op.OP_WRITE_AND_VERIFY_10, op.OP_VERIFY_10, op.OP_PRE_FETCH_10, op.OP_SYNCHRONIZE_CACHE_10, op.OP_WRITE_SAME_10,
  op.OP_UNMAP, op.OP_MODE_SELECT_10, op.OP_MODE_SENSE_10, op.OP_READ_16, op.OP_COMPARE_AND_WRITE, op.OP_WRITE_16,
  op.OP_WRITE_AND_VERIFY_16, op.OP_VERIFY_16, op.OP_PRE_FETCH_16, op.OP_SYNCHRONIZE_CACHE_16, op.OP_WRITE_SAME_16,
  op.OP_SERVICE_ACTION_IN_16, op.OP_REPORT_LUNS, op.OP_MAINTENANCE_IN, op.OP_READ_12, op.OP_WRITE_12,
  op.OP_VERIFY_12, op.OP_WRITE_AND_VERIFY_12, op.OP_ORWRITE_16, op.OP_RESERVE_6, op.OP_RELEASE_6,
]) {
  SUPPORTED_OPCODES[code] = 1;
}

/** The reservation class of a command (see the header). */
export function accessClass(cdb: Buffer): AccessClass {
  switch (cdb[0]) {
    case op.OP_READ_6:
    case op.OP_READ_10:
    case op.OP_READ_12:
    case op.OP_READ_16:
    case op.OP_VERIFY_10:
    case op.OP_VERIFY_12:
    case op.OP_VERIFY_16:
    case op.OP_PRE_FETCH_10:
    case op.OP_PRE_FETCH_16:
      return 'read';
    case op.OP_SERVICE_ACTION_IN_16:
      return (cdb[1] & 0x1f) === op.SA_GET_LBA_STATUS ? 'read' : 'always';
    case op.OP_START_STOP_UNIT:
      // SBC-4 reservations table: only START = 1 with POWER CONDITION 0 is allowed to all.
      return (cdb[4] & 0x01) !== 0 && cdb[4] >>> 4 === 0 ? 'always' : 'write';
    case op.OP_TEST_UNIT_READY:
    case op.OP_INQUIRY:
    case op.OP_REQUEST_SENSE:
    case op.OP_REPORT_LUNS:
    case op.OP_READ_CAPACITY_10:
    case op.OP_MAINTENANCE_IN:
    case op.OP_PERSISTENT_RESERVE_IN:
    case op.OP_PERSISTENT_RESERVE_OUT:
      return 'always';
    default:
      return 'write';
  }
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}
