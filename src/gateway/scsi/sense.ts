// Fixed-format sense data (SPC-4 4.5.3) and the sense keys / additional sense codes
// the SCSI layer answers with. Every CHECK CONDITION this layer produces is built
// here, so the wire format lives in one place.
//
// Invariants:
// - Sense buffers are exactly SENSE_BYTES (18) long, response code 0x70 (current
//   error), ADDITIONAL SENSE LENGTH 10.
// - The INFORMATION field is only set (with VALID = 1) when the caller gives a value
//   that fits in 32 bits; a larger value leaves VALID = 0 (SPC-4 4.5.3: the field
//   holds the low bytes only when it fits).
// - A field pointer (sense-key specific, SKSV = 1) points into the CDB (C/D = 1) or
//   into the parameter list (C/D = 0); BPV = 1 when a bit is named.
import type { ScsiResult } from './types.js';
import { SAM_CHECK_CONDITION, SAM_GOOD } from './types.js';

export const SENSE_BYTES = 18;

// Sense keys (SPC-4 4.5.6).
export const SK_NO_SENSE = 0x0;
export const SK_RECOVERED_ERROR = 0x1;
export const SK_NOT_READY = 0x2;
export const SK_MEDIUM_ERROR = 0x3;
export const SK_HARDWARE_ERROR = 0x4;
export const SK_ILLEGAL_REQUEST = 0x5;
export const SK_UNIT_ATTENTION = 0x6;
export const SK_DATA_PROTECT = 0x7;
export const SK_ABORTED_COMMAND = 0xb;
export const SK_MISCOMPARE = 0xe;

// Additional sense code and qualifier, as (ASC << 8) | ASCQ (SPC-4 4.5.6 table of ASC/ASCQ).
export const ASC_NO_ADDITIONAL_SENSE = 0x0000;
export const ASC_LU_NOT_READY_CAUSE_NOT_REPORTABLE = 0x0400;
export const ASC_LU_NOT_READY_BECOMING_READY = 0x0401;
/** LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION. */
export const ASC_LU_NOT_ACCESSIBLE_TRANSITION = 0x040a;
export const ASC_WRITE_ERROR = 0x0c00;
export const ASC_UNRECOVERED_READ_ERROR = 0x1100;
export const ASC_PARAMETER_LIST_LENGTH_ERROR = 0x1a00;
export const ASC_MISCOMPARE_DURING_VERIFY = 0x1d00;
export const ASC_INVALID_COMMAND_OPERATION_CODE = 0x2000;
export const ASC_LBA_OUT_OF_RANGE = 0x2100;
export const ASC_INVALID_FIELD_IN_CDB = 0x2400;
export const ASC_LU_NOT_SUPPORTED = 0x2500;
export const ASC_INVALID_FIELD_IN_PARAMETER_LIST = 0x2600;
export const ASC_SPACE_ALLOCATION_FAILED_WRITE_PROTECT = 0x2707;
export const ASC_POWER_ON_RESET = 0x2900;
export const ASC_PARAMETERS_CHANGED = 0x2a00;
export const ASC_MODE_PARAMETERS_CHANGED = 0x2a01;
export const ASC_RESERVATIONS_PREEMPTED = 0x2a03;
export const ASC_RESERVATIONS_RELEASED = 0x2a04;
export const ASC_REGISTRATIONS_PREEMPTED = 0x2a05;
export const ASC_CAPACITY_DATA_CHANGED = 0x2a09;
export const ASC_SAVING_PARAMETERS_NOT_SUPPORTED = 0x3900;
export const ASC_REPORTED_LUNS_DATA_CHANGED = 0x3f0e;
export const ASC_INTERNAL_TARGET_FAILURE = 0x4400;

/** Where an INVALID FIELD points: the CDB or the parameter list, a byte, optionally a bit. */
export interface FieldPointer {
  inCdb: boolean;
  byte: number;
  /** 0..7; omitted when the whole byte (or a multi-byte field) is meant. */
  bit?: number;
}

export interface SenseOptions {
  /** INFORMATION field (e.g. offset of the first miscompare); VALID is set when it fits in 32 bits. */
  information?: number;
  field?: FieldPointer;
}

/** Builds 18 bytes of fixed-format, current sense data. */
export function buildSense(senseKey: number, ascq: number, opts?: SenseOptions): Buffer {
  const b = Buffer.alloc(SENSE_BYTES);
  b[0] = 0x70;
  b[2] = senseKey & 0x0f;
  b[7] = SENSE_BYTES - 8;
  b[12] = (ascq >>> 8) & 0xff;
  b[13] = ascq & 0xff;
  const info = opts?.information;
  if (info !== undefined && Number.isInteger(info) && info >= 0 && info <= 0xffffffff) {
    b[0] |= 0x80;
    b.writeUInt32BE(info, 3);
  }
  const f = opts?.field;
  if (f !== undefined && f.byte >= 0 && f.byte <= 0xffff) {
    let sks = 0x80; // SKSV
    if (f.inCdb) sks |= 0x40; // C/D
    if (f.bit !== undefined) sks |= 0x08 | (f.bit & 0x07); // BPV + BIT POINTER
    b[15] = sks;
    b.writeUInt16BE(f.byte, 16);
  }
  return b;
}

export function checkCondition(senseKey: number, ascq: number, opts?: SenseOptions): ScsiResult {
  return { status: SAM_CHECK_CONDITION, sense: buildSense(senseKey, ascq, opts), dataIn: null };
}

export function good(dataIn: Buffer | null = null): ScsiResult {
  return { status: SAM_GOOD, sense: null, dataIn };
}

/** GOOD with `data` cut to what both the CDB's allocation length and the initiator's buffer allow. */
export function goodTruncated(data: Buffer, allocationBytes: number, expectedInBytes: number): ScsiResult {
  const n = Math.min(data.length, allocationBytes, Math.max(0, expectedInBytes));
  return good(n === data.length ? data : data.subarray(0, n));
}

export function invalidFieldInCdb(byte: number, bit?: number): ScsiResult {
  return checkCondition(SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB, { field: { inCdb: true, byte, bit } });
}

export function invalidFieldInParameterList(byte: number, bit?: number): ScsiResult {
  return checkCondition(SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAMETER_LIST, { field: { inCdb: false, byte, bit } });
}

export function parameterListLengthError(): ScsiResult {
  return checkCondition(SK_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
}

export function invalidOpcode(): ScsiResult {
  return checkCondition(SK_ILLEGAL_REQUEST, ASC_INVALID_COMMAND_OPERATION_CODE, { field: { inCdb: true, byte: 0 } });
}

export function lbaOutOfRange(): ScsiResult {
  return checkCondition(SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
}

/** MISCOMPARE DURING VERIFY OPERATION; INFORMATION = offset of the first differing byte in the Data-Out buffer (SBC-4 5.3, 5.33). */
export function miscompare(offsetBytes: number): ScsiResult {
  return checkCondition(SK_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY, { information: offsetBytes });
}

/** The highest set bit of a non-zero byte: where a bit pointer should point. */
export function highestBit(x: number): number {
  for (let bit = 7; bit > 0; bit--) if ((x & (1 << bit)) !== 0) return bit;
  return 0;
}
