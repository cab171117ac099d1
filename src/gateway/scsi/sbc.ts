// Media commands of SBC-4 that move or compare data: READ (6/10/12/16), WRITE
// (6/10/12/16), WRITE AND VERIFY (10/12/16), VERIFY (10/12/16), COMPARE AND WRITE,
// ORWRITE (16), SYNCHRONIZE CACHE (10/16), PRE-FETCH (10/16).
//
// Invariants:
// - READ/WRITE are the IO hot path: fields are read straight from the CDB, the only
//   allocation besides the result is the read buffer, a write passes dataOut (or a
//   subarray of it) to the volume, and there is one await on the volume call.
// - Every range is checked against the capacity before any IO: LBA + blocks >
//   capacity → LBA OUT OF RANGE, a transfer longer than the block limits VPD allows →
//   INVALID FIELD IN CDB (SBC-4 4.x, 6.6.4).
// - Protection information is not supported: RDPROTECT/WRPROTECT/VRPROTECT/ORPROTECT
//   ≠ 0 → INVALID FIELD IN CDB. DPO is accepted and has nothing to act on (no cache
//   to keep blocks out of), so it is advertised in RSOC and mode sense (DPOFUA).
// - Data-Out shorter than the CDB asks for (WRITE, WRITE AND VERIFY, ORWRITE): the
//   whole blocks that arrived are written, status GOOD, transferBytes = the CDB's
//   length so the transport reports the residual (RFC 7143 §11.4.5.1; what libiscsi's
//   iSCSIResiduals tests and tgt expect). Extra bytes beyond what the CDB needs are
//   ignored. COMPARE AND WRITE is the exception: its Data-Out must be exactly 2 × N
//   blocks, because a compare half and a write half cut at the wrong place would
//   compare or write the wrong bytes.
// - Writes hold the LU's range lock while the volume works; read-modify-write
//   commands (COMPARE AND WRITE, ORWRITE) hold it exclusively from the read to the
//   end of the write, so no other write to the range lands in between. With WCE = 0
//   every write is FUA.
import type { ScsiCommand, ScsiResult } from './types.js';
import {
  OP_READ_6,
  OP_WRITE_6,
  be32,
  be64,
  cdbBlocks,
  cdbBlocksOffset,
  cdbLba,
} from './cdb.js';
import { deviceErrorResult } from './device-errors.js';
import { CHUNK_BYTES, capacityBlocks, checkRange, firstDifference } from './media.js';
import type { MediaContext } from './media.js';
import { SAM_GOOD } from './types.js';
import { good, invalidFieldInCdb, lbaOutOfRange, miscompare } from './sense.js';
import { largeReadBuffers } from '../buffers.js';
import { Slab } from '../../stdx/slab.js';

/** Read results up to 64 KiB are carved from 1 MiB slabs instead of one ArrayBuffer each. */
const readSlab = new Slab(1024 * 1024, 64 * 1024);

// Larger read results come from largeReadBuffers (gateway/buffers.ts).
// The transport gives one back (give()) once its socket sent it; one it never gives
// back is collected by the GC.

/** A buffer for a read result: small ones from the slab (a 4 KiB read costs no ArrayBuffer), large ones from largeReadBuffers. */
function readBuffer(lengthBytes: number): Buffer {
  return lengthBytes > readSlab.pieceBytesMax ? largeReadBuffers.take(lengthBytes) : readSlab.take(lengthBytes);
}

/** READ (6) 0x08, (10) 0x28, (12) 0xA8, (16) 0x88 (SBC-4 5.13-5.16). */
export async function read(ctx: MediaContext, cmd: ScsiCommand): Promise<ScsiResult> {
  const cdb = cmd.cdb;
  const op = cdb[0];
  if (op !== OP_READ_6 && (cdb[1] & 0xe0) !== 0) return invalidFieldInCdb(1, 7); // RDPROTECT
  const lba = cdbLba(cdb, op);
  const blocks = cdbBlocks(cdb, op);
  const limits = ctx.limits;
  const bad = checkRange(ctx, lba, blocks, limits.maxTransferBlocks, cdbBlocksOffset(op));
  if (bad !== null) return bad;
  const lbs = limits.blockSizeBytes;
  let lengthBytes = blocks * lbs;
  const expected = cmd.expectedInBytes;
  // A smaller initiator buffer gets a prefix (the transport reports the overflow);
  // read whole blocks covering it and no more.
  if (expected < lengthBytes) {
    lengthBytes = Math.ceil(Math.max(0, expected) / lbs) * lbs;
    if (lengthBytes === 0) return { status: SAM_GOOD, sense: null, dataIn: null, transferBytes: blocks * lbs };
  }
  const out = readBuffer(lengthBytes);
  try {
    await ctx.volume.read(lba * lbs, lengthBytes, out, 0);
  } catch (err) {
    if (largeReadBuffers.owns(out)) largeReadBuffers.give(out);
    return deviceErrorResult(err, 'read');
  }
  // transferBytes: what the CDB asked for, so the transport reports an over/underflow
  // residual against the initiator's expected length (RFC 7143 §11.4.5).
  return { status: SAM_GOOD, sense: null, dataIn: expected < lengthBytes ? out.subarray(0, expected) : out, transferBytes: blocks * lbs };
}

/** WRITE (6) 0x0A, (10) 0x2A, (12) 0xAA, (16) 0x8A (SBC-4 5.40-5.43); FUA → durable write. */
export async function write(ctx: MediaContext, cmd: ScsiCommand): Promise<ScsiResult> {
  const cdb = cmd.cdb;
  const op = cdb[0];
  let fua = !ctx.modes.writeCacheEnabled;
  if (op !== OP_WRITE_6) {
    if ((cdb[1] & 0xe0) !== 0) return invalidFieldInCdb(1, 7); // WRPROTECT
    if ((cdb[1] & 0x08) !== 0) fua = true;
  }
  const lba = cdbLba(cdb, op);
  const blocks = cdbBlocks(cdb, op);
  const limits = ctx.limits;
  const bad = checkRange(ctx, lba, blocks, limits.maxTransferBlocks, cdbBlocksOffset(op));
  if (bad !== null) return bad;
  const lbs = limits.blockSizeBytes;
  const lengthBytes = blocks * lbs;
  // The initiator may send less than the CDB names (iSCSI EDTL < transfer length): only
  // the whole blocks that arrived are written and the transport reports the overflow
  // residual (RFC 7143 §11.4.5.1; libiscsi's iSCSIResiduals tests expect exactly this).
  const data = arrivedBlocks(cmd.dataOut, lengthBytes, lbs);
  if (data === null) return { status: SAM_GOOD, sense: null, dataIn: null, transferBytes: lengthBytes };
  const failed = await lockedWrite(ctx, lba, data, fua);
  return failed ?? { status: SAM_GOOD, sense: null, dataIn: null, transferBytes: lengthBytes };
}

/** The whole blocks of a Data-Out buffer, at most lengthBytes of them; null when none arrived. */
function arrivedBlocks(d: Buffer | null, lengthBytes: number, lbs: number): Buffer | null {
  const bytes = d === null ? 0 : Math.min(lengthBytes, Math.floor(d.length / lbs) * lbs);
  if (bytes === 0) return null;
  return d!.length === bytes ? d! : d!.subarray(0, bytes);
}

/** Writes under a shared range lock (COMPARE AND WRITE and ORWRITE hold it exclusively); a failure as its SCSI answer. */
async function lockedWrite(ctx: MediaContext, lba: number, data: Buffer, fua: boolean): Promise<ScsiResult | null> {
  const lbs = ctx.limits.blockSizeBytes;
  const hold = ctx.lock.enter(lba, lba + data.length / lbs, false);
  try {
    if (!ctx.lock.ready(hold)) await ctx.lock.wait(hold);
    await ctx.volume.write(lba * lbs, data, fua);
    return null;
  } catch (err) {
    return deviceErrorResult(err, 'write');
  } finally {
    ctx.lock.leave(hold);
  }
}

/**
 * WRITE AND VERIFY (10) 0x2E / (16) 0x8E (SBC-4 5.47/5.48) and (12) 0xAE (the same
 * command in the 12-byte layout of WRITE (12), SBC-4 WRITE AND VERIFY (12)): a durable write, then the
 * blocks are read back; BYTCHK = 01b also compares them with the Data-Out buffer.
 */
export async function writeAndVerify(ctx: MediaContext, cmd: ScsiCommand): Promise<ScsiResult> {
  const cdb = cmd.cdb;
  const op = cdb[0];
  if ((cdb[1] & 0xe0) !== 0) return invalidFieldInCdb(1, 7); // WRPROTECT
  const bytchk = (cdb[1] >>> 1) & 0x03;
  if (bytchk > 1) return invalidFieldInCdb(1, 2);
  const lba = cdbLba(cdb, op);
  const blocks = cdbBlocks(cdb, op);
  const lenAt = cdbBlocksOffset(op);
  const bad = checkRange(ctx, lba, blocks, ctx.limits.maxTransferBlocks, lenAt);
  if (bad !== null) return bad;
  const lbs = ctx.limits.blockSizeBytes;
  const lengthBytes = blocks * lbs;
  // As WRITE: a shorter Data-Out writes (and verifies) the whole blocks that arrived.
  const data = arrivedBlocks(cmd.dataOut, lengthBytes, lbs);
  if (data === null) return { status: SAM_GOOD, sense: null, dataIn: null, transferBytes: lengthBytes };
  const failed = await lockedWrite(ctx, lba, data, true);
  if (failed !== null) return failed;
  const writeBytes = data.length;
  const r = await compareRange(ctx, lba * lbs, writeBytes, bytchk === 1 ? data : null);
  return r.status === SAM_GOOD ? { ...r, transferBytes: lengthBytes } : r;
}

/**
 * VERIFY (10) 0x2F / (16) 0x8F (SBC-4 5.33/5.34) and (12) 0xAF (SBC-4 VERIFY (12), the
 * 12-byte layout of READ (12)): BYTCHK = 00b reads the range to check
 * it is readable; 01b compares it with the Data-Out buffer (MISCOMPARE with the offset
 * of the first difference). 11b (one block compared against every block) is not
 * supported.
 */
export async function verify(ctx: MediaContext, cmd: ScsiCommand): Promise<ScsiResult> {
  const cdb = cmd.cdb;
  const op = cdb[0];
  if ((cdb[1] & 0xe0) !== 0) return invalidFieldInCdb(1, 7); // VRPROTECT
  const bytchk = (cdb[1] >>> 1) & 0x03;
  if (bytchk > 1) return invalidFieldInCdb(1, 2);
  const lba = cdbLba(cdb, op);
  const blocks = cdbBlocks(cdb, op);
  const lenAt = cdbBlocksOffset(op);
  const max = bytchk === 1 ? ctx.limits.maxTransferBlocks : ctx.limits.maxVerifyBlocks;
  const bad = checkRange(ctx, lba, blocks, max, lenAt);
  if (bad !== null) return bad;
  const lbs = ctx.limits.blockSizeBytes;
  const lengthBytes = blocks * lbs;
  let expected: Buffer | null = null;
  if (bytchk === 1) {
    const d = cmd.dataOut;
    if (d === null || d.length < lengthBytes) return invalidFieldInCdb(lenAt);
    expected = d;
  }
  return compareRange(ctx, lba * lbs, lengthBytes, expected);
}

/** Reads [offset, offset+length) in chunks; compares with `expected` when given. */
async function compareRange(ctx: MediaContext, offsetBytes: number, lengthBytes: number, expected: Buffer | null): Promise<ScsiResult> {
  const chunk = Buffer.allocUnsafe(Math.min(lengthBytes, CHUNK_BYTES));
  for (let done = 0; done < lengthBytes; ) {
    const n = Math.min(chunk.length, lengthBytes - done);
    try {
      await ctx.volume.read(offsetBytes + done, n, chunk, 0);
    } catch (err) {
      return deviceErrorResult(err, 'read');
    }
    if (expected !== null) {
      const at = firstDifference(chunk, 0, expected, done, n);
      if (at >= 0) return miscompare(done + at);
    }
    done += n;
  }
  return good();
}

/**
 * COMPARE AND WRITE 0x89 (SBC-4 5.3): the Data-Out buffer holds N blocks to compare,
 * then N blocks to write, and nothing else (any other length → INVALID FIELD IN CDB).
 * Atomic against every other write of this LU to an overlapping range (exclusive range
 * hold). NUMBER OF LOGICAL BLOCKS 0 does nothing.
 */
export async function compareAndWrite(ctx: MediaContext, cmd: ScsiCommand): Promise<ScsiResult> {
  const cdb = cmd.cdb;
  if ((cdb[1] & 0xe0) !== 0) return invalidFieldInCdb(1, 7); // WRPROTECT
  const fua = (cdb[1] & 0x08) !== 0 || !ctx.modes.writeCacheEnabled;
  const lba = be64(cdb, 2);
  const blocks = cdb[13];
  if (blocks > ctx.limits.maxCompareAndWriteBlocks) return invalidFieldInCdb(13);
  if (lba + blocks > capacityBlocks(ctx)) return lbaOutOfRange();
  // 0 blocks does nothing, but only with no Data-Out: data with N = 0 means the CDB and
  // the transfer disagree (e.g. an initiator that truncated 256 into the 8-bit field).
  if (blocks === 0) return cmd.dataOut === null || cmd.dataOut.length === 0 ? good() : invalidFieldInCdb(13);
  const lbs = ctx.limits.blockSizeBytes;
  const lengthBytes = blocks * lbs;
  const d = cmd.dataOut;
  if (d === null || d.length !== 2 * lengthBytes) return invalidFieldInCdb(13);
  const lock = ctx.lock;
  const hold = lock.enter(lba, lba + blocks, true);
  try {
    if (!lock.ready(hold)) await lock.wait(hold);
    const current = Buffer.allocUnsafe(lengthBytes);
    try {
      await ctx.volume.read(lba * lbs, lengthBytes, current, 0);
    } catch (err) {
      return deviceErrorResult(err, 'read');
    }
    const at = firstDifference(current, 0, d, 0, lengthBytes);
    if (at >= 0) return miscompare(at);
    try {
      await ctx.volume.write(lba * lbs, d.subarray(lengthBytes, 2 * lengthBytes), fua);
    } catch (err) {
      return deviceErrorResult(err, 'write');
    }
    return good();
  } finally {
    lock.leave(hold);
  }
}

/**
 * ORWRITE (16) 0x8B (SBC-4 5.8, BMOP 000b as ORWRITE (16) implies): each block of the
 * range becomes (old data) OR (Data-Out). Read, OR and write happen under an exclusive
 * range hold, like COMPARE AND WRITE, so a concurrent write to the range lands either
 * wholly before or wholly after and is never lost under the OR. DPO is ignored, FUA
 * (or WCE = 0) makes the write durable. A short Data-Out ORs the whole blocks that
 * arrived (see the header).
 */
export async function orWrite(ctx: MediaContext, cmd: ScsiCommand): Promise<ScsiResult> {
  const cdb = cmd.cdb;
  if ((cdb[1] & 0xe0) !== 0) return invalidFieldInCdb(1, 7); // ORPROTECT
  const fua = (cdb[1] & 0x08) !== 0 || !ctx.modes.writeCacheEnabled;
  const lba = be64(cdb, 2);
  const blocks = be32(cdb, 10);
  const bad = checkRange(ctx, lba, blocks, ctx.limits.maxTransferBlocks, 10);
  if (bad !== null) return bad;
  const lbs = ctx.limits.blockSizeBytes;
  const lengthBytes = blocks * lbs;
  const d = cmd.dataOut;
  const orBytes = d === null ? 0 : Math.min(lengthBytes, Math.floor(d.length / lbs) * lbs);
  if (orBytes === 0) return { status: SAM_GOOD, sense: null, dataIn: null, transferBytes: lengthBytes };
  const lock = ctx.lock;
  const hold = lock.enter(lba, lba + orBytes / lbs, true);
  try {
    if (!lock.ready(hold)) await lock.wait(hold);
    const merged = Buffer.allocUnsafe(orBytes);
    try {
      await ctx.volume.read(lba * lbs, orBytes, merged, 0);
    } catch (err) {
      return deviceErrorResult(err, 'read');
    }
    for (let i = 0; i < orBytes; i++) merged[i] |= d![i];
    try {
      await ctx.volume.write(lba * lbs, merged, fua);
    } catch (err) {
      return deviceErrorResult(err, 'write');
    }
  } finally {
    lock.leave(hold);
  }
  return { status: SAM_GOOD, sense: null, dataIn: null, transferBytes: lengthBytes };
}

/**
 * SYNCHRONIZE CACHE (10) 0x35 / (16) 0x91 (SBC-4 5.22/5.23): flushes the volume (a
 * flush covers every acknowledged write, so the range only gets its bounds checked;
 * NUMBER OF LOGICAL BLOCKS 0 means "to the end"). IMMED = 1 is answered after the
 * flush too: status before durability would gain nothing an initiator can use.
 */
export async function synchronizeCache(ctx: MediaContext, cmd: ScsiCommand): Promise<ScsiResult> {
  const cdb = cmd.cdb;
  const op = cdb[0];
  const lba = cdbLba(cdb, op);
  const blocks = cdbBlocks(cdb, op);
  if (lba + blocks > capacityBlocks(ctx)) return lbaOutOfRange();
  try {
    await ctx.volume.flush();
  } catch (err) {
    return deviceErrorResult(err, 'write');
  }
  return good();
}

/** PRE-FETCH (10) 0x34 / (16) 0x90 (SBC-4 5.11/5.12): nothing to stage; GOOD after the range check. */
export function preFetch(ctx: MediaContext, cmd: ScsiCommand): ScsiResult {
  const cdb = cmd.cdb;
  const op = cdb[0];
  if (cdbLba(cdb, op) + cdbBlocks(cdb, op) > capacityBlocks(ctx)) return lbaOutOfRange();
  return good();
}
