// REPORT SUPPORTED OPERATION CODES, MAINTENANCE IN 0xA3 / 0x0C (SPC-4 6.35): the
// table of commands this LU executes, each with its CDB USAGE DATA (1-bits = bits the
// device server looks at; reserved and ignored bits are 0).
//
// Invariants:
// - The table is the LU's dispatch list: lu.test.ts sends every entry and checks it
//   is not answered INVALID COMMAND OPERATION CODE, and checks that a few opcodes
//   outside it are.
// - PERSISTENT RESERVE IN/OUT are listed only when the LU has a reservation gate.
// - DPO (byte 1 bit 4) is marked wherever the CDB has it: it is accepted and honoured
//   trivially (there is no cache to keep blocks out of), and libiscsi's *.Dpo tests
//   require the usage data to agree with the DPOFUA bit mode sense reports.
// - Timeout descriptors (RCTD = 1) report no nominal time and a recommended timeout
//   of RECOMMENDED_TIMEOUT_S for every command.
import type { ScsiResult } from './types.js';
import { be16, be32 } from './cdb.js';
import { goodTruncated, invalidFieldInCdb } from './sense.js';

export interface CommandInfo {
  opcode: number;
  /** Service action, for opcodes that have them. */
  serviceAction: number | null;
  name: string;
  usage: readonly number[];
}

const C = 0x04; // control byte: NACA is evaluated (and refused)
const FF4 = [0xff, 0xff, 0xff, 0xff];
const FF8 = [...FF4, ...FF4];

function cmd(opcode: number, name: string, usageAfterOpcode: number[], serviceAction: number | null = null): CommandInfo {
  return { opcode, serviceAction, name, usage: [opcode, ...usageAfterOpcode] };
}

/** In opcode order, then service action order. */
const BASE: CommandInfo[] = [
  cmd(0x00, 'TEST UNIT READY', [0, 0, 0, 0, C]),
  cmd(0x03, 'REQUEST SENSE', [0x01, 0, 0, 0xff, C]),
  cmd(0x08, 'READ(6)', [0x1f, 0xff, 0xff, 0xff, C]),
  cmd(0x0a, 'WRITE(6)', [0x1f, 0xff, 0xff, 0xff, C]),
  cmd(0x12, 'INQUIRY', [0x03, 0xff, 0xff, 0xff, C]),
  cmd(0x15, 'MODE SELECT(6)', [0x11, 0, 0, 0xff, C]),
  cmd(0x16, 'RESERVE(6)', [0x11, 0, 0, 0, C]),
  cmd(0x17, 'RELEASE(6)', [0x11, 0, 0, 0, C]),
  cmd(0x1a, 'MODE SENSE(6)', [0x08, 0xff, 0xff, 0xff, C]),
  cmd(0x1b, 'START STOP UNIT', [0x01, 0, 0x0f, 0xf7, C]),
  cmd(0x25, 'READ CAPACITY(10)', [0, ...FF4, 0, 0, 0x01, C]),
  cmd(0x28, 'READ(10)', [0xf8, ...FF4, 0, 0xff, 0xff, C]),
  cmd(0x2a, 'WRITE(10)', [0xf8, ...FF4, 0, 0xff, 0xff, C]),
  cmd(0x2e, 'WRITE AND VERIFY(10)', [0xf6, ...FF4, 0, 0xff, 0xff, C]),
  cmd(0x2f, 'VERIFY(10)', [0xf6, ...FF4, 0, 0xff, 0xff, C]),
  cmd(0x34, 'PRE-FETCH(10)', [0, ...FF4, 0, 0xff, 0xff, C]),
  cmd(0x35, 'SYNCHRONIZE CACHE(10)', [0, ...FF4, 0, 0xff, 0xff, C]),
  cmd(0x41, 'WRITE SAME(10)', [0xfe, ...FF4, 0, 0xff, 0xff, C]),
  cmd(0x42, 'UNMAP', [0x01, 0, 0, 0, 0, 0, 0xff, 0xff, C]),
  cmd(0x55, 'MODE SELECT(10)', [0x11, 0, 0, 0, 0, 0, 0xff, 0xff, C]),
  cmd(0x5a, 'MODE SENSE(10)', [0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, C]),
  cmd(0x88, 'READ(16)', [0xf8, ...FF8, ...FF4, 0, C]),
  cmd(0x89, 'COMPARE AND WRITE', [0xe8, ...FF8, 0, 0, 0, 0xff, 0, C]),
  cmd(0x8a, 'WRITE(16)', [0xf8, ...FF8, ...FF4, 0, C]),
  cmd(0x8b, 'ORWRITE(16)', [0xf8, ...FF8, ...FF4, 0, C]),
  cmd(0x8e, 'WRITE AND VERIFY(16)', [0xf6, ...FF8, ...FF4, 0, C]),
  cmd(0x8f, 'VERIFY(16)', [0xf6, ...FF8, ...FF4, 0, C]),
  cmd(0x90, 'PRE-FETCH(16)', [0, ...FF8, ...FF4, 0, C]),
  cmd(0x91, 'SYNCHRONIZE CACHE(16)', [0, ...FF8, ...FF4, 0, C]),
  cmd(0x93, 'WRITE SAME(16)', [0xff, ...FF8, ...FF4, 0, C]),
  cmd(0x9e, 'READ CAPACITY(16)', [0x1f, ...FF8, ...FF4, 0x01, C], 0x10),
  cmd(0x9e, 'GET LBA STATUS', [0x1f, ...FF8, ...FF4, 0, C], 0x12),
  cmd(0xa0, 'REPORT LUNS', [0, 0xff, 0, 0, 0, ...FF4, 0, C]),
  cmd(0xa3, 'REPORT SUPPORTED OPERATION CODES', [0x1f, 0x87, 0xff, 0xff, 0xff, ...FF4, 0, C], 0x0c),
  cmd(0xa8, 'READ(12)', [0xf8, ...FF4, ...FF4, 0, C]),
  cmd(0xaa, 'WRITE(12)', [0xf8, ...FF4, ...FF4, 0, C]),
  cmd(0xae, 'WRITE AND VERIFY(12)', [0xf6, ...FF4, ...FF4, 0, C]),
  cmd(0xaf, 'VERIFY(12)', [0xf6, ...FF4, ...FF4, 0, C]),
];

const PR: CommandInfo[] = [
  ...[0, 1, 2, 3].map((sa) => cmd(0x5e, 'PERSISTENT RESERVE IN', [0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, C], sa)),
  ...[0, 1, 2, 3, 4, 5, 6, 7].map((sa) => cmd(0x5f, 'PERSISTENT RESERVE OUT', [0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, C], sa)),
];

export function supportedCommands(withReservations: boolean): CommandInfo[] {
  const all = withReservations ? [...BASE, ...PR] : [...BASE];
  return all.sort((a, b) => a.opcode - b.opcode || (a.serviceAction ?? 0) - (b.serviceAction ?? 0));
}

export const RECOMMENDED_TIMEOUT_S = 30;

function timeoutsDescriptor(): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(0x000a, 0); // DESCRIPTOR LENGTH
  // NOMINAL COMMAND PROCESSING TIMEOUT (4..7) 0: not specified.
  b.writeUInt32BE(RECOMMENDED_TIMEOUT_S, 8);
  return b;
}

/** REPORT SUPPORTED OPERATION CODES: REPORTING OPTIONS 000b (all), 001b/010b/011b (one command). */
export function reportSupportedOpcodes(cdb: Buffer, expectedInBytes: number, withReservations: boolean): ScsiResult {
  const rctd = (cdb[2] & 0x80) !== 0;
  const options = cdb[2] & 0x07;
  const opcode = cdb[3];
  const sa = be16(cdb, 4);
  const alloc = be32(cdb, 6);
  const table = supportedCommands(withReservations);
  if (options === 0) return goodTruncated(allCommands(table, rctd), alloc, expectedInBytes);
  if (options > 3) return invalidFieldInCdb(2, 2);
  const hasSa = table.some((c) => c.opcode === opcode && c.serviceAction !== null);
  // 001b: opcode without service actions; 010b: opcode with them; 011b: either (SPC-4 r37).
  if (options === 1 && hasSa) return invalidFieldInCdb(2, 2);
  if (options === 2 && !hasSa && table.some((c) => c.opcode === opcode)) return invalidFieldInCdb(2, 2);
  const useSa = options === 2 || (options === 3 && hasSa);
  const found = table.find((c) => c.opcode === opcode && (!useSa || c.serviceAction === sa));
  return goodTruncated(oneCommand(found ?? null, rctd), alloc, expectedInBytes);
}

function allCommands(table: CommandInfo[], rctd: boolean): Buffer {
  const each = 8 + (rctd ? 12 : 0);
  const b = Buffer.alloc(4 + table.length * each);
  b.writeUInt32BE(b.length - 4, 0); // COMMAND DATA LENGTH
  table.forEach((c, i) => {
    const at = 4 + i * each;
    b[at] = c.opcode;
    b.writeUInt16BE(c.serviceAction ?? 0, at + 2);
    b[at + 5] = (rctd ? 0x02 : 0) | (c.serviceAction !== null ? 0x01 : 0); // CTDP | SERVACTV
    b.writeUInt16BE(c.usage.length, at + 6);
    if (rctd) timeoutsDescriptor().copy(b, at + 8);
  });
  return b;
}

function oneCommand(c: CommandInfo | null, rctd: boolean): Buffer {
  if (c === null) {
    const b = Buffer.alloc(4);
    b[1] = 0x01; // SUPPORT 001b: not supported
    return b;
  }
  const b = Buffer.alloc(4 + c.usage.length + (rctd ? 12 : 0));
  b[1] = (rctd ? 0x80 : 0) | 0x03; // CTDP | SUPPORT 011b: supported as the standard says
  b.writeUInt16BE(c.usage.length, 2);
  Buffer.from(c.usage).copy(b, 4);
  if (rctd) timeoutsDescriptor().copy(b, 4 + c.usage.length);
  return b;
}
