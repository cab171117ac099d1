// INQUIRY (SPC-4 6.6): standard data and the vital product data pages a
// direct-access block device on Tessera reports — 0x00 supported pages, 0x80 unit
// serial number, 0x83 device identification (SPC-4 7.8.6), 0xB0 block limits,
// 0xB1 block device characteristics, 0xB2 logical block provisioning (SBC-4 6.6).
//
// Invariants:
// - The LU designators (NAA 6, serial) depend only on the cluster id and the volume
//   id, so every gateway exporting a volume reports the same identity and multipath
//   merges the paths; a re-created volume (new id) is a new LU.
// - Target-port designators come from the nexus the command arrived on.
// - Data is cut to min(ALLOCATION LENGTH, expectedInBytes) (SPC-4 4.2.5.6).
import { createHash } from 'node:crypto';
import { assert } from '../../stdx/assert.js';
import type { Nexus, ScsiResult } from './types.js';
import { be16, writeBe64 } from './cdb.js';
import { goodTruncated, invalidFieldInCdb } from './sense.js';

/** What identifies the LU, computed once per LU. */
export interface LuIdentity {
  vendor: string;
  product: string;
  revision: string;
  /** The 16-byte NAA IEEE Registered Extended designator. */
  naa: Buffer;
  /** PRODUCT SERIAL NUMBER (VPD 0x80): the NAA designator in hex. */
  serial: string;
}

/** Numbers of VPD 0xB0, in logical blocks unless the name says otherwise. */
export interface BlockLimits {
  maxCompareAndWriteBlocks: number;
  optimalTransferGranularityBlocks: number;
  maxTransferBlocks: number;
  optimalTransferBlocks: number;
  maxUnmapBlocks: number;
  maxUnmapDescriptors: number;
  optimalUnmapGranularityBlocks: number;
  maxWriteSameBlocks: number;
}

/**
 * Builds the identity. NAA 6 = 4-bit NAA, 24-bit IEEE company id, 36-bit vendor
 * specific id (here: a hash of the cluster id, so two clusters reusing volume ids
 * still differ), 64-bit extension (the volume id).
 */
export function makeIdentity(opts: { clusterId: string; volumeId: number; ieeeCompanyId: number; vendor: string; product: string; revision: string }): LuIdentity {
  assert(opts.ieeeCompanyId >= 0 && opts.ieeeCompanyId <= 0xffffff, 'IEEE company id is 24 bits');
  assert(Number.isSafeInteger(opts.volumeId) && opts.volumeId >= 0, 'volume id must be a non-negative safe integer');
  const h = createHash('sha256').update(opts.clusterId, 'utf8').digest();
  const naa = Buffer.alloc(16);
  const cid = opts.ieeeCompanyId;
  naa[0] = 0x60 | ((cid >>> 20) & 0x0f);
  naa[1] = (cid >>> 12) & 0xff;
  naa[2] = (cid >>> 4) & 0xff;
  naa[3] = ((cid & 0x0f) << 4) | (h[0] & 0x0f);
  h.copy(naa, 4, 1, 5);
  writeBe64(naa, opts.volumeId, 8);
  return { vendor: opts.vendor, product: opts.product, revision: opts.revision, naa, serial: naa.toString('hex') };
}

export const SUPPORTED_VPD_PAGES = [0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2] as const;

/** INQUIRY: CMDDT set, or a page code without EVPD, or an unknown page → INVALID FIELD IN CDB (SPC-4 6.6.1). */
export function inquiry(cdb: Buffer, expectedInBytes: number, id: LuIdentity, limits: BlockLimits, nexus: Nexus): ScsiResult {
  const evpd = (cdb[1] & 0x01) !== 0;
  if ((cdb[1] & 0x02) !== 0) return invalidFieldInCdb(1, 1); // CMDDT (obsolete)
  if ((cdb[1] & 0xfc) !== 0) return invalidFieldInCdb(1, 7);
  const page = cdb[2];
  const alloc = be16(cdb, 3);
  if (!evpd) {
    if (page !== 0) return invalidFieldInCdb(2);
    return goodTruncated(standardInquiry(id), alloc, expectedInBytes);
  }
  const data = vpdPage(page, id, limits, nexus);
  if (data === null) return invalidFieldInCdb(2);
  return goodTruncated(data, alloc, expectedInBytes);
}

/** Standard INQUIRY data, 96 bytes (SPC-4 6.6.2). */
export function standardInquiry(id: LuIdentity, peripheral = 0x00): Buffer {
  const b = Buffer.alloc(96);
  b[0] = peripheral; // qualifier 000b, direct access block device
  b[2] = 0x06; // VERSION: SPC-4
  b[3] = 0x10 | 0x02; // HISUP (hierarchical LUNs in REPORT LUNS) | RESPONSE DATA FORMAT 2
  b[4] = b.length - 5; // ADDITIONAL LENGTH
  // Byte 5: TPGS 00b — we serve no REPORT TARGET PORT GROUPS, so no ALUA; PROTECT 0.
  b[7] = 0x02; // CMDQUE: commands are queued and may run concurrently
  writeAscii(b, 8, 8, id.vendor);
  writeAscii(b, 16, 16, id.product);
  writeAscii(b, 32, 4, id.revision);
  // Version descriptors (SPC-4 6.6.2 table): SAM-5, iSCSI, SPC-4, SBC-4, then SBC-3,
  // each "no version claimed". SBC-3 too because initiators and test suites (libiscsi)
  // look for 0x04C0 to decide whether SBC-3 features (READ CAPACITY (16), the 60-byte
  // block limits page) exist; SBC-4 only adds to SBC-3, so the claim holds.
  b.writeUInt16BE(0x00a0, 58);
  b.writeUInt16BE(0x0960, 60);
  b.writeUInt16BE(0x0460, 62);
  b.writeUInt16BE(0x0600, 64);
  b.writeUInt16BE(0x04c0, 66);
  return b;
}

function writeAscii(b: Buffer, offset: number, width: number, text: string): void {
  b.fill(0x20, offset, offset + width);
  // Printable ASCII only (SPC-4 4.3.1): anything else becomes '?'.
  for (let i = 0; i < width && i < text.length; i++) {
    const c = text.charCodeAt(i);
    b[offset + i] = c >= 0x20 && c < 0x7f ? c : 0x3f;
  }
}

export function vpdPage(page: number, id: LuIdentity, limits: BlockLimits, nexus: Nexus): Buffer | null {
  switch (page) {
    case 0x00:
      return vpd(0x00, Buffer.from(SUPPORTED_VPD_PAGES));
    case 0x80:
      return vpd(0x80, Buffer.from(id.serial, 'ascii'));
    case 0x83:
      return vpd(0x83, deviceIdentification(id, nexus));
    case 0xb0:
      return vpd(0xb0, blockLimits(limits));
    case 0xb1:
      return vpd(0xb1, blockDeviceCharacteristics());
    case 0xb2:
      return vpd(0xb2, logicalBlockProvisioning());
    default:
      return null;
  }
}

/** 4-byte VPD header (qualifier/type, page code, PAGE LENGTH) + payload. */
function vpd(page: number, payload: Buffer): Buffer {
  const b = Buffer.alloc(4 + payload.length);
  b[1] = page;
  b.writeUInt16BE(payload.length, 2);
  payload.copy(b, 4);
  return b;
}

const PROTOCOL_ISCSI = 0x5;
const CODE_SET_BINARY = 0x1;
const CODE_SET_UTF8 = 0x3;
const ASSOC_LU = 0x0;
const ASSOC_TARGET_PORT = 0x1;
const ASSOC_TARGET_DEVICE = 0x2;
const DESIGNATOR_NAA = 0x3;
const DESIGNATOR_RELATIVE_TARGET_PORT = 0x4;
const DESIGNATOR_TARGET_PORT_GROUP = 0x5;
const DESIGNATOR_SCSI_NAME = 0x8;

/** One designation descriptor (SPC-4 7.8.6.1). PIV is set with a protocol for port/device associations. */
function designator(protocol: number | null, codeSet: number, association: number, type: number, value: Buffer): Buffer {
  assert(value.length <= 255, 'designator too long');
  const b = Buffer.alloc(4 + value.length);
  b[0] = ((protocol ?? 0) << 4) | codeSet;
  b[1] = (protocol !== null ? 0x80 : 0) | (association << 4) | type;
  b[3] = value.length;
  value.copy(b, 4);
  return b;
}

/** SCSI name string: UTF-8, NUL-terminated, padded with NULs to a multiple of 4 (SPC-4 7.8.6.11). */
function scsiName(name: string): Buffer | null {
  const raw = Buffer.from(name, 'utf8');
  const len = (raw.length + 4) & ~3;
  if (len > 255) return null;
  const b = Buffer.alloc(len);
  raw.copy(b);
  return b;
}

function u16Designator(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(value & 0xffff, 2);
  return b;
}

function deviceIdentification(id: LuIdentity, nexus: Nexus): Buffer {
  const parts: Buffer[] = [designator(null, CODE_SET_BINARY, ASSOC_LU, DESIGNATOR_NAA, id.naa)];
  const rtpi = nexus.relativeTargetPortId;
  parts.push(designator(PROTOCOL_ISCSI, CODE_SET_BINARY, ASSOC_TARGET_PORT, DESIGNATOR_RELATIVE_TARGET_PORT, u16Designator(rtpi)));
  // One target port per group: the group number is the port's relative id.
  parts.push(designator(PROTOCOL_ISCSI, CODE_SET_BINARY, ASSOC_TARGET_PORT, DESIGNATOR_TARGET_PORT_GROUP, u16Designator(rtpi)));
  const port = scsiName(nexus.targetPort);
  if (port !== null) parts.push(designator(PROTOCOL_ISCSI, CODE_SET_UTF8, ASSOC_TARGET_PORT, DESIGNATOR_SCSI_NAME, port));
  const comma = nexus.targetPort.indexOf(',');
  const device = scsiName(comma >= 0 ? nexus.targetPort.slice(0, comma) : nexus.targetPort);
  if (device !== null) parts.push(designator(PROTOCOL_ISCSI, CODE_SET_UTF8, ASSOC_TARGET_DEVICE, DESIGNATOR_SCSI_NAME, device));
  return Buffer.concat(parts);
}

/** VPD 0xB0 payload, 60 bytes (SBC-4 6.6.4). */
function blockLimits(l: BlockLimits): Buffer {
  const b = Buffer.alloc(60);
  b[0] = 0x01; // WSNZ: WRITE SAME with NUMBER OF LOGICAL BLOCKS 0 is not supported (provisioning.ts)
  b[1] = Math.min(l.maxCompareAndWriteBlocks, 0xff);
  b.writeUInt16BE(Math.min(l.optimalTransferGranularityBlocks, 0xffff), 2);
  b.writeUInt32BE(Math.min(l.maxTransferBlocks, 0xffffffff), 4);
  b.writeUInt32BE(Math.min(l.optimalTransferBlocks, 0xffffffff), 8);
  // MAXIMUM PREFETCH LENGTH (12..15) 0: PRE-FETCH moves no data here.
  b.writeUInt32BE(Math.min(l.maxUnmapBlocks, 0xffffffff), 16);
  b.writeUInt32BE(Math.min(l.maxUnmapDescriptors, 0xffffffff), 20);
  b.writeUInt32BE(Math.min(l.optimalUnmapGranularityBlocks, 0xffffffff), 24);
  b.writeUInt32BE(0x80000000, 28); // UGAVALID, UNMAP GRANULARITY ALIGNMENT 0
  writeBe64(b, l.maxWriteSameBlocks, 32);
  // Atomic transfer fields (40..59) 0: no WRITE ATOMIC.
  return b;
}

/** VPD 0xB1 payload, 60 bytes (SBC-4 6.6.2): non-rotating medium, form factor not reported. */
function blockDeviceCharacteristics(): Buffer {
  const b = Buffer.alloc(60);
  b.writeUInt16BE(0x0001, 0); // MEDIUM ROTATION RATE: non-rotating
  return b;
}

/** VPD 0xB2 payload, 4 bytes (SBC-4 6.6.6): thin, UNMAP and WRITE SAME (10/16) with UNMAP, unmapped reads zero. */
function logicalBlockProvisioning(): Buffer {
  const b = Buffer.alloc(4);
  // b[0] THRESHOLD EXPONENT 0: no thresholds.
  b[1] = 0x80 | 0x40 | 0x20 | 0x04; // LBPU | LBPWS | LBPWS10 | LBPRZ 001b; ANC_SUP 0, DP 0
  b[2] = 0x02; // PROVISIONING TYPE: thin
  return b;
}
