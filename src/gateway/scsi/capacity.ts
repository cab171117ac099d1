// READ CAPACITY (10) 0x25 and (16) SERVICE ACTION IN 0x9E / 0x10 (SBC-4 5.17, 5.18).
//
// Invariants:
// - RETURNED LOGICAL BLOCK ADDRESS is the last LBA (capacity - 1); READ CAPACITY (10)
//   answers 0xFFFFFFFF when that does not fit in 32 bits, telling the initiator to use
//   the 16-byte form.
// - PMI = 0 with a non-zero LOGICAL BLOCK ADDRESS → INVALID FIELD IN CDB. With PMI = 1
//   the answer is the same last LBA: no block is ever slower to reach than another.
// - READ CAPACITY (16) reports LBPME = 1 (thin: UNMAP works) and LBPRZ = 1 (unmapped
//   blocks read zeros), and the logical-per-physical exponent from the LU config.
import type { ScsiCommand, ScsiResult } from './types.js';
import { be32, be64, writeBe64 } from './cdb.js';
import { capacityBlocks } from './media.js';
import type { MediaContext } from './media.js';
import { goodTruncated, invalidFieldInCdb } from './sense.js';

export function readCapacity10(ctx: MediaContext, cmd: ScsiCommand): ScsiResult {
  const cdb = cmd.cdb;
  const pmi = (cdb[8] & 0x01) !== 0;
  if (!pmi && be32(cdb, 2) !== 0) return invalidFieldInCdb(2);
  const last = Math.max(0, capacityBlocks(ctx) - 1);
  const b = Buffer.alloc(8);
  b.writeUInt32BE(last > 0xfffffffe ? 0xffffffff : last, 0);
  b.writeUInt32BE(ctx.limits.blockSizeBytes, 4);
  return goodTruncated(b, b.length, cmd.expectedInBytes);
}

export function readCapacity16(ctx: MediaContext, cmd: ScsiCommand): ScsiResult {
  const cdb = cmd.cdb;
  const pmi = (cdb[14] & 0x01) !== 0;
  if (!pmi && be64(cdb, 2) !== 0) return invalidFieldInCdb(2);
  const alloc = be32(cdb, 10);
  const b = Buffer.alloc(32);
  writeBe64(b, Math.max(0, capacityBlocks(ctx) - 1), 0);
  b.writeUInt32BE(ctx.limits.blockSizeBytes, 8);
  b[12] = 0x10; // RC BASIS 01b: the returned LBA is the last LBA of the LU; P_TYPE 0, PROT_EN 0
  b[13] = ctx.limits.physicalExponent & 0x0f;
  b[14] = 0x80 | 0x40; // LBPME | LBPRZ; LOWEST ALIGNED LBA 0
  return goodTruncated(b, alloc, cmd.expectedInBytes);
}
