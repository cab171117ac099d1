// Maps a failure of a Volume call to the SCSI answer the initiator sees. The choice
// decides whether the initiator retries, fails over to another path or reports a
// media error to the application, so every branch says why.
//
// Invariants:
// - Never throws for a TesseraError or a foreign Error: the LU's execute() must not
//   reject for an operating error (types.ts). An AssertionError (a broken invariant
//   of ours) is rethrown so it surfaces as a bug, as the contract asks.
import { AssertionError } from '../../stdx/assert.js';
import { isTesseraError } from '../../stdx/errors.js';
import type { ScsiResult } from './types.js';
import { SAM_BUSY } from './types.js';
import {
  ASC_INTERNAL_TARGET_FAILURE,
  ASC_LBA_OUT_OF_RANGE,
  ASC_LU_NOT_READY_CAUSE_NOT_REPORTABLE,
  ASC_LU_NOT_SUPPORTED,
  ASC_SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
  ASC_UNRECOVERED_READ_ERROR,
  ASC_WRITE_ERROR,
  SK_DATA_PROTECT,
  SK_HARDWARE_ERROR,
  SK_ILLEGAL_REQUEST,
  SK_MEDIUM_ERROR,
  SK_NOT_READY,
  checkCondition,
} from './sense.js';

/** Whether the failed call moved data from the medium ('read') or to it ('write'). */
export type IoDirection = 'read' | 'write';

export function deviceErrorResult(err: unknown, direction: IoDirection): ScsiResult {
  if (err instanceof AssertionError) throw err;
  if (!isTesseraError(err)) return checkCondition(SK_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE);
  switch (err.code) {
    case 'ERR_DEVICE_IO':
    case 'ERR_CHECKSUM':
      // SBC-4 4.x: an unreadable block is UNRECOVERED READ ERROR; a failed write (or the
      // read half of a read-modify-write under it) is WRITE ERROR.
      return checkCondition(SK_MEDIUM_ERROR, direction === 'read' ? ASC_UNRECOVERED_READ_ERROR : ASC_WRITE_ERROR);
    case 'ERR_DEVICE_FLUSH':
      // The data did not reach stable storage: a write error whatever the command was.
      return checkCondition(SK_MEDIUM_ERROR, ASC_WRITE_ERROR);
    case 'ERR_NO_SPACE':
      // SBC-4 4.7.3.x (thin provisioning): a write that needs space the pool lacks.
      return checkCondition(SK_DATA_PROTECT, ASC_SPACE_ALLOCATION_FAILED_WRITE_PROTECT);
    case 'ERR_NOT_FOUND':
      // The volume was deleted under the export: the LU no longer exists.
      return checkCondition(SK_ILLEGAL_REQUEST, ASC_LU_NOT_SUPPORTED);
    case 'ERR_RANGE':
      // We checked the range against sizeBytes(); it shrank while the command ran.
      return checkCondition(SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
    case 'ERR_TIMEOUT':
    case 'ERR_BUSY':
    case 'ERR_LIMIT':
      // Transient: SAM BUSY asks the initiator to retry later without counting a
      // medium or path error (Linux requeues BUSY until the command's timeout), which
      // is what a slow replica or a full buffer pool needs. NOT READY would burn the
      // initiator's few sense-based retries and then fail the IO.
      return { status: SAM_BUSY, sense: null, dataIn: null };
    case 'ERR_CLOSED':
      // The daemon is shutting the store down: the LU is going away.
      return checkCondition(SK_NOT_READY, ASC_LU_NOT_READY_CAUSE_NOT_REPORTABLE);
    default:
      return checkCondition(SK_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE);
  }
}
