// REPORT LUNS (SPC-4 6.33) and the answers for a LUN that does not exist. Exported as
// plain functions because the transport must answer them without an LU: REPORT LUNS
// may be sent to any LUN, including LUN 0 when the target has no LUN 0.
//
// Invariants:
// - LUN encoding (SAM-5 4.7): single level, peripheral device addressing (00b) for
//   LUN < 256, flat space addressing (01b) for 256..16383. The transport decodes the
//   BHS LUN field the same way (decodeLun is the inverse).
// - The list is sorted and deduplicated; LIST LENGTH counts all LUNs even when the
//   allocation length truncates the data (the initiator retries with a larger one).
import { assert, fail } from '../../stdx/assert.js';
import type { ScsiCommand, ScsiResult } from './types.js';
import { OP_INQUIRY, OP_REPORT_LUNS, OP_REQUEST_SENSE, be16, be32 } from './cdb.js';
import { standardInquiry } from './inquiry.js';
import type { LuIdentity } from './inquiry.js';
import {
  ASC_LU_NOT_SUPPORTED,
  SK_ILLEGAL_REQUEST,
  buildSense,
  checkCondition,
  goodTruncated,
  invalidFieldInCdb,
} from './sense.js';

export const MAX_LUN = 16383;

/** Writes the 8-byte LUN structure of `lun` at `offset`. */
export function writeLun(b: Buffer, offset: number, lun: number): void {
  if (!(Number.isInteger(lun) && lun >= 0 && lun <= MAX_LUN)) fail(`LUN ${lun} out of range`);
  b.fill(0, offset, offset + 8);
  if (lun < 256) {
    b[offset + 1] = lun;
  } else {
    b[offset] = 0x40 | (lun >>> 8);
    b[offset + 1] = lun & 0xff;
  }
}

export function encodeLun(lun: number): Buffer {
  const b = Buffer.alloc(8);
  writeLun(b, 0, lun);
  return b;
}

/** The LUN number of an 8-byte LUN structure, or -1 when it is not single-level peripheral/flat. */
export function decodeLun(b: Buffer, offset = 0): number {
  for (let i = 2; i < 8; i++) if (b[offset + i] !== 0) return -1;
  const method = b[offset] >>> 6;
  if (method === 0) return b[offset] === 0 ? b[offset + 1] : -1; // bus id must be 0
  if (method === 1) return ((b[offset] & 0x3f) << 8) | b[offset + 1];
  return -1;
}

/** REPORT LUNS 0xA0: SELECT REPORT 00h (all LUs), 01h (well known: none), 02h (all). */
export function reportLuns(cdb: Buffer, luns: readonly number[], expectedInBytes: number): ScsiResult {
  const select = cdb[2];
  if (select > 0x02) return invalidFieldInCdb(2);
  const alloc = be32(cdb, 6);
  const list = select === 0x01 ? [] : [...new Set(luns)].filter((l) => Number.isInteger(l) && l >= 0 && l <= MAX_LUN).sort((a, b) => a - b);
  const b = Buffer.alloc(8 + list.length * 8);
  b.writeUInt32BE(list.length * 8, 0);
  list.forEach((lun, i) => writeLun(b, 8 + i * 8, lun));
  return goodTruncated(b, alloc, expectedInBytes);
}

/**
 * The answer to a command addressed to a LUN the target does not have (SPC-4 4.x,
 * 6.6.2): INQUIRY gets standard data with PERIPHERAL QUALIFIER 011b / type 1Fh,
 * REPORT LUNS works, REQUEST SENSE returns LOGICAL UNIT NOT SUPPORTED as data, and
 * everything else is CHECK CONDITION, ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED.
 */
export function answerMissingLun(cmd: ScsiCommand, luns: readonly number[], id: Pick<LuIdentity, 'vendor' | 'product' | 'revision'>): ScsiResult {
  const cdb = cmd.cdb;
  if (cdb.length >= 6 && cdb[0] === OP_INQUIRY && (cdb[1] & 0x03) === 0 && cdb[2] === 0) {
    const data = standardInquiry({ ...id, naa: Buffer.alloc(16), serial: '' }, 0x7f);
    return goodTruncated(data, be16(cdb, 3), cmd.expectedInBytes);
  }
  if (cdb.length >= 12 && cdb[0] === OP_REPORT_LUNS) return reportLuns(cdb, luns, cmd.expectedInBytes);
  if (cdb.length >= 6 && cdb[0] === OP_REQUEST_SENSE) {
    return goodTruncated(buildSense(SK_ILLEGAL_REQUEST, ASC_LU_NOT_SUPPORTED), cdb[4], cmd.expectedInBytes);
  }
  return checkCondition(SK_ILLEGAL_REQUEST, ASC_LU_NOT_SUPPORTED);
}
