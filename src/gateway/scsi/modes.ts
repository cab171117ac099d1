// Mode parameters (SPC-4 7.5, SBC-4 6.5): MODE SENSE (6)/(10) and MODE SELECT (6)/(10)
// over three pages — 0x08 Caching, 0x0A Control, 0x1C Informational Exceptions
// Control — plus the block descriptor.
//
// Invariants:
// - The only changeable field is WCE (Caching page). With WCE = 0 the LU makes every
//   write FUA; with WCE = 1 (default) writes are acknowledged when the volume has
//   them and SYNCHRONIZE CACHE / FUA make them durable — both are honoured, so both
//   settings are truthful.
// - MODE SELECT validates the whole parameter list before applying any of it.
// - Saved values are not supported: PC = 11b answers SAVING PARAMETERS NOT SUPPORTED;
//   SP = 1 answers INVALID FIELD IN CDB (SPC-4 6.11/6.12).
// - Mode parameters are shared by every I_T nexus (one set per LU); a change made
//   through one nexus is announced to the others with MODE PARAMETERS CHANGED (the
//   caller raises it when modeSelect reports `changed`).
import type { ScsiResult } from './types.js';
import { be16, writeBe64 } from './cdb.js';
import {
  ASC_SAVING_PARAMETERS_NOT_SUPPORTED,
  SK_ILLEGAL_REQUEST,
  checkCondition,
  good,
  goodTruncated,
  highestBit,
  invalidFieldInCdb,
  invalidFieldInParameterList,
  parameterListLengthError,
} from './sense.js';

export const PAGE_CACHING = 0x08;
export const PAGE_CONTROL = 0x0a;
export const PAGE_INFORMATIONAL_EXCEPTIONS = 0x1c;
export const PAGE_ALL = 0x3f;

const PC_CURRENT = 0;
const PC_CHANGEABLE = 1;
const PC_DEFAULT = 2;
const PC_SAVED = 3;

/** DPOFUA in the device-specific parameter (SBC-4 6.5.1): DPO and FUA are supported. */
const DEVICE_SPECIFIC_DPOFUA = 0x10;

interface PageDef {
  code: number;
  /** Whole page, header included. */
  defaults: Buffer;
  /** Same length and header; 1-bits in the parameters mark what MODE SELECT may change. */
  changeable: Buffer;
}

function page(code: number, body: number[], changeableBody: number[]): PageDef {
  const defaults = Buffer.from([code, body.length, ...body]);
  // The changeable-values page keeps the page code and length; the rest is a bit mask.
  const changeable = Buffer.alloc(defaults.length);
  defaults.copy(changeable, 0, 0, 2);
  Buffer.from(changeableBody).copy(changeable, 2);
  return { code, defaults, changeable };
}

function pageDefs(): PageDef[] {
  // Caching (SBC-4 6.5.5), 20 bytes: WCE = 1, RCD = 0 (we do read from cache).
  const caching = page(PAGE_CACHING, [0x04, ...new Array<number>(17).fill(0)], [0x04]);
  // Control (SPC-4 7.5.8), 12 bytes: TST 000b (one task set), GLTSD = 1 (no implicit
  // log saving), D_SENSE = 0 (fixed sense), QUEUE ALGORITHM MODIFIER 1 (commands may run
  // in any order: the volume reorders concurrent IO), QERR 00b, TAS 0.
  const control = page(PAGE_CONTROL, [0x02, 0x10, 0, 0, 0, 0, 0, 0, 0, 0], []);
  // Informational Exceptions Control (SPC-4 7.5.x), 12 bytes: DEXCPT = 1 (we report no
  // failure predictions), MRIE 0.
  const ie = page(PAGE_INFORMATIONAL_EXCEPTIONS, [0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0], []);
  return [caching, control, ie];
}

/** Geometry the block descriptor reports. */
export interface ModeGeometry {
  capacityBlocks: number;
  blockSizeBytes: number;
}

/** The LU's mode pages (current values) and the MODE SENSE / MODE SELECT logic. */
export class ModePages {
  private readonly defs = pageDefs();
  private readonly current = new Map<number, Buffer>();

  constructor() {
    for (const d of this.defs) this.current.set(d.code, Buffer.from(d.defaults));
  }

  /** WCE of the Caching page: false → every write is FUA. */
  get writeCacheEnabled(): boolean {
    return (this.current.get(PAGE_CACHING)![2] & 0x04) !== 0;
  }

  /** MODE SENSE (6) 0x1A / (10) 0x5A. */
  sense(cdb: Buffer, expectedInBytes: number, geo: ModeGeometry): ScsiResult {
    const ten = cdb[0] === 0x5a;
    const dbd = (cdb[1] & 0x08) !== 0;
    const llbaa = ten && (cdb[1] & 0x10) !== 0;
    const pc = cdb[2] >>> 6;
    const code = cdb[2] & 0x3f;
    const subpage = cdb[3];
    const alloc = ten ? be16(cdb, 7) : cdb[4];
    if (pc === PC_SAVED) return checkCondition(SK_ILLEGAL_REQUEST, ASC_SAVING_PARAMETERS_NOT_SUPPORTED);
    // Subpage 0x00 = the page itself; 0xFF = it and all its subpages (we have none).
    if (subpage !== 0x00 && subpage !== 0xff) return invalidFieldInCdb(3);
    const pages: Buffer[] = [];
    for (const d of this.defs) {
      if (code !== PAGE_ALL && code !== d.code) continue;
      pages.push(pc === PC_CHANGEABLE ? d.changeable : pc === PC_DEFAULT ? d.defaults : this.current.get(d.code)!);
    }
    if (pages.length === 0) return invalidFieldInCdb(2, 5);
    const bd = dbd ? null : blockDescriptor(geo, llbaa, pc === PC_CHANGEABLE);
    const headerBytes = ten ? 8 : 4;
    const total = headerBytes + (bd?.length ?? 0) + pages.reduce((n, p) => n + p.length, 0);
    const b = Buffer.alloc(total);
    if (ten) {
      b.writeUInt16BE(total - 2, 0); // MODE DATA LENGTH excludes itself
      b[3] = DEVICE_SPECIFIC_DPOFUA;
      if (bd !== null && bd.length === 16) b[4] = 0x01; // LONGLBA
      b.writeUInt16BE(bd?.length ?? 0, 6);
    } else {
      b[0] = total - 1;
      b[2] = DEVICE_SPECIFIC_DPOFUA;
      b[3] = bd?.length ?? 0;
    }
    let off = headerBytes;
    if (bd !== null) off += bd.copy(b, off);
    for (const p of pages) off += p.copy(b, off);
    return goodTruncated(b, alloc, expectedInBytes);
  }

  /**
   * MODE SELECT (6) 0x15 / (10) 0x55 with its parameter list. Accepts only values equal
   * to the current ones except in changeable fields.
   */
  select(cdb: Buffer, dataOut: Buffer | null, geo: ModeGeometry): { result: ScsiResult; changed: boolean } {
    const ten = cdb[0] === 0x55;
    const fail = (result: ScsiResult) => ({ result, changed: false });
    const pf = (cdb[1] & 0x10) !== 0;
    if ((cdb[1] & 0x01) !== 0) return fail(invalidFieldInCdb(1, 0)); // SP: no saved pages
    const listBytes = ten ? be16(cdb, 7) : cdb[4];
    if (listBytes === 0) return { result: good(), changed: false };
    // PF = 0 means vendor-specific page formats (SCSI-1); we only know the SPC ones.
    if (!pf) return fail(invalidFieldInCdb(1, 4));
    if (dataOut === null || dataOut.length < listBytes) return fail(parameterListLengthError());
    const list = dataOut.subarray(0, listBytes);
    const headerBytes = ten ? 8 : 4;
    if (list.length < headerBytes) return fail(parameterListLengthError());
    const mediumTypeAt = ten ? 2 : 1;
    if (list[mediumTypeAt] !== 0) return fail(invalidFieldInParameterList(mediumTypeAt));
    const longLba = ten && (list[4] & 0x01) !== 0;
    const bdBytes = ten ? be16(list, 6) : list[3];
    const bdSize = longLba ? 16 : 8;
    if (bdBytes !== 0 && bdBytes !== bdSize) return fail(invalidFieldInParameterList(ten ? 6 : 3));
    if (headerBytes + bdBytes > list.length) return fail(parameterListLengthError());
    if (bdBytes !== 0) {
      const bad = checkBlockDescriptor(list, headerBytes, longLba, geo);
      if (bad !== null) return fail(bad);
    }
    // Pass 1: validate every page; pass 2: apply.
    const updates: Array<{ code: number; at: number; length: number }> = [];
    let off = headerBytes + bdBytes;
    while (off < list.length) {
      if (off + 2 > list.length) return fail(parameterListLengthError());
      if ((list[off] & 0x40) !== 0) return fail(invalidFieldInParameterList(off, 6)); // SPF: no subpages here
      const code = list[off] & 0x3f; // PS (bit 7) is reserved in MODE SELECT: ignored
      const def = this.defs.find((d) => d.code === code);
      if (def === undefined) return fail(invalidFieldInParameterList(off, 5));
      const length = list[off + 1] + 2;
      if (length !== def.defaults.length) return fail(invalidFieldInParameterList(off + 1));
      if (off + length > list.length) return fail(parameterListLengthError());
      const cur = this.current.get(code)!;
      for (let i = 2; i < length; i++) {
        const diff = (list[off + i] ^ cur[i]) & ~def.changeable[i] & 0xff;
        if (diff !== 0) return fail(invalidFieldInParameterList(off + i, highestBit(diff)));
      }
      updates.push({ code, at: off, length });
      off += length;
    }
    let changed = false;
    for (const u of updates) {
      const cur = this.current.get(u.code)!;
      const def = this.defs.find((d) => d.code === u.code)!;
      for (let i = 2; i < u.length; i++) {
        const next = (cur[i] & ~def.changeable[i]) | (list[u.at + i] & def.changeable[i]);
        if (next !== cur[i]) {
          cur[i] = next;
          changed = true;
        }
      }
    }
    return { result: good(), changed };
  }
}

/** Short (8-byte) or long (16-byte) LBA block descriptor (SBC-4 6.5.2). */
function blockDescriptor(geo: ModeGeometry, long: boolean, changeable: boolean): Buffer {
  const b = Buffer.alloc(long ? 16 : 8);
  if (changeable) return b; // nothing in it may change
  if (long) {
    writeBe64(b, geo.capacityBlocks, 0);
    b.writeUInt32BE(geo.blockSizeBytes, 12);
  } else {
    b.writeUInt32BE(Math.min(geo.capacityBlocks, 0xffffffff), 0);
    b.writeUIntBE(geo.blockSizeBytes, 5, 3);
  }
  return b;
}

/** A MODE SELECT block descriptor may repeat the geometry (or give 0 blocks = no change); nothing else. */
function checkBlockDescriptor(list: Buffer, at: number, long: boolean, geo: ModeGeometry): ScsiResult | null {
  const blocks = long ? list.readUInt32BE(at) * 0x100000000 + list.readUInt32BE(at + 4) : list.readUInt32BE(at);
  const sizeAt = long ? at + 12 : at + 5;
  const size = long ? list.readUInt32BE(sizeAt) : list.readUIntBE(sizeAt, 3);
  const shown = long ? geo.capacityBlocks : Math.min(geo.capacityBlocks, 0xffffffff);
  if (blocks !== 0 && blocks !== shown) return invalidFieldInParameterList(at);
  if (size !== geo.blockSizeBytes) return invalidFieldInParameterList(sizeAt);
  return null;
}
