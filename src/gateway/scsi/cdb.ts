// CDB decoding: operation codes, CDB lengths by group code, and big-endian field
// readers for the LBA / transfer-length fields of the media commands (SBC-4 5.x).
//
// Invariants:
// - Readers never allocate and never read past the CDB's length: callers check
//   cdb.length >= cdbLength(opcode) once before decoding.
// - 64-bit LBAs are returned as JS numbers. Values at or above 2^53 lose precision
//   but stay >= 2^53, far beyond any capacity (volumes are <= 2^50 bytes), so range
//   checks on them still answer LBA OUT OF RANGE.

export const OP_TEST_UNIT_READY = 0x00;
export const OP_REQUEST_SENSE = 0x03;
export const OP_READ_6 = 0x08;
export const OP_WRITE_6 = 0x0a;
export const OP_INQUIRY = 0x12;
export const OP_MODE_SELECT_6 = 0x15;
export const OP_RESERVE_6 = 0x16;
export const OP_RELEASE_6 = 0x17;
export const OP_MODE_SENSE_6 = 0x1a;
export const OP_START_STOP_UNIT = 0x1b;
export const OP_READ_CAPACITY_10 = 0x25;
export const OP_READ_10 = 0x28;
export const OP_WRITE_10 = 0x2a;
export const OP_WRITE_AND_VERIFY_10 = 0x2e;
export const OP_VERIFY_10 = 0x2f;
export const OP_PRE_FETCH_10 = 0x34;
export const OP_SYNCHRONIZE_CACHE_10 = 0x35;
export const OP_WRITE_SAME_10 = 0x41;
export const OP_UNMAP = 0x42;
export const OP_MODE_SELECT_10 = 0x55;
export const OP_MODE_SENSE_10 = 0x5a;
export const OP_PERSISTENT_RESERVE_IN = 0x5e;
export const OP_PERSISTENT_RESERVE_OUT = 0x5f;
export const OP_READ_16 = 0x88;
export const OP_COMPARE_AND_WRITE = 0x89;
export const OP_WRITE_16 = 0x8a;
export const OP_ORWRITE_16 = 0x8b;
export const OP_WRITE_AND_VERIFY_16 = 0x8e;
export const OP_VERIFY_16 = 0x8f;
export const OP_PRE_FETCH_16 = 0x90;
export const OP_SYNCHRONIZE_CACHE_16 = 0x91;
export const OP_WRITE_SAME_16 = 0x93;
export const OP_SERVICE_ACTION_IN_16 = 0x9e;
export const OP_REPORT_LUNS = 0xa0;
export const OP_MAINTENANCE_IN = 0xa3;
export const OP_READ_12 = 0xa8;
export const OP_WRITE_12 = 0xaa;
export const OP_WRITE_AND_VERIFY_12 = 0xae;
export const OP_VERIFY_12 = 0xaf;

/** SERVICE ACTION IN (16) service actions (SBC-4 5.16, 5.7). */
export const SA_READ_CAPACITY_16 = 0x10;
export const SA_GET_LBA_STATUS = 0x12;
/** MAINTENANCE IN service action (SPC-4 6.35). */
export const SA_REPORT_SUPPORTED_OPERATION_CODES = 0x0c;

/**
 * CDB length from the GROUP CODE (SPC-4 4.2.5.1): 6, 10, 10, reserved, 16, 12, vendor,
 * vendor. 0 for groups whose length we cannot know.
 */
export function cdbLength(opcode: number): number {
  switch (opcode >>> 5) {
    case 0:
      return 6;
    case 1:
    case 2:
      return 10;
    case 4:
      return 16;
    case 5:
      return 12;
    default:
      return 0;
  }
}

export function be16(b: Buffer, o: number): number {
  return (b[o] << 8) | b[o + 1];
}

export function be24(b: Buffer, o: number): number {
  return (b[o] << 16) | (b[o + 1] << 8) | b[o + 2];
}

export function be32(b: Buffer, o: number): number {
  return ((b[o] << 24) >>> 0) + ((b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]);
}

/** 64-bit big-endian as a number (see the precision note in the header). */
export function be64(b: Buffer, o: number): number {
  return be32(b, o) * 0x100000000 + be32(b, o + 4);
}

/** Writes a non-negative integer < 2^64 as 8 big-endian bytes. */
export function writeBe64(b: Buffer, value: number, o: number): void {
  const hi = Math.floor(value / 0x100000000);
  b.writeUInt32BE(hi >>> 0, o);
  b.writeUInt32BE(value - hi * 0x100000000, o + 4);
}

/**
 * LOGICAL BLOCK ADDRESS of the LBA-addressed commands (READ/WRITE/VERIFY/WRITE SAME/
 * SYNC CACHE/PRE-FETCH/COMPARE AND WRITE): 21 bits in 6-byte CDBs, bytes 2-5 in 10-
 * and 12-byte CDBs, bytes 2-9 in 16-byte CDBs.
 */
export function cdbLba(cdb: Buffer, opcode: number): number {
  switch (cdbLength(opcode)) {
    case 6:
      return ((cdb[1] & 0x1f) << 16) | be16(cdb, 2);
    case 10:
    case 12:
      return be32(cdb, 2);
    default:
      return be64(cdb, 2);
  }
}

/**
 * TRANSFER LENGTH / NUMBER OF LOGICAL BLOCKS / VERIFICATION LENGTH / PREFETCH LENGTH:
 * byte 4 of READ(6)/WRITE(6) (0 means 256, SBC-4 5.13/5.45), bytes 7-8 of 10-byte
 * CDBs, 6-9 of 12-byte, 10-13 of 16-byte. COMPARE AND WRITE has its own (byte 13).
 */
export function cdbBlocks(cdb: Buffer, opcode: number): number {
  switch (cdbLength(opcode)) {
    case 6:
      return cdb[4] === 0 ? 256 : cdb[4];
    case 10:
      return be16(cdb, 7);
    case 12:
      return be32(cdb, 6);
    default:
      return be32(cdb, 10);
  }
}

/** Byte offset of the transfer-length field, for field pointers. */
export function cdbBlocksOffset(opcode: number): number {
  switch (cdbLength(opcode)) {
    case 6:
      return 4;
    case 10:
      return 7;
    case 12:
      return 6;
    default:
      return 10;
  }
}

/** ALLOCATION LENGTH of the data-in commands we serve (SPC-4 4.2.5.6). */
export function allocationLength(cdb: Buffer, opcode: number): number {
  switch (opcode) {
    case OP_INQUIRY:
      return be16(cdb, 3);
    case OP_REQUEST_SENSE:
    case OP_MODE_SENSE_6:
      return cdb[4];
    case OP_MODE_SENSE_10:
    case OP_PERSISTENT_RESERVE_IN:
      return be16(cdb, 7);
    case OP_REPORT_LUNS:
    case OP_MAINTENANCE_IN:
      return be32(cdb, 6);
    case OP_SERVICE_ACTION_IN_16:
      return be32(cdb, 10);
    default:
      return 0;
  }
}
