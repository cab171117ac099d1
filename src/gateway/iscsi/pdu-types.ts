// Decoded fields of the iSCSI PDUs Tessera receives and sends (RFC 7143 §11).
// pdu.ts turns bytes into these and back; login.ts, session.ts and the tests use
// them. Plain data, no behaviour: the contract between the iSCSI modules.
//
// Invariants: every sequence number and tag is an unsigned 32-bit integer
// (0..0xffffffff); lengths are bytes; `lun` is the single-level LUN number
// (SAM-5 peripheral/flat addressing, 0..16383) decoded from the 8-byte LUN field;
// `data` never includes padding or digests.

/** Initiator opcodes (RFC 7143 §11.2.1.2). */
export const OP_NOP_OUT = 0x00;
export const OP_SCSI_CMD = 0x01;
export const OP_TMF_REQ = 0x02;
export const OP_LOGIN_REQ = 0x03;
export const OP_TEXT_REQ = 0x04;
export const OP_DATA_OUT = 0x05;
export const OP_LOGOUT_REQ = 0x06;
export const OP_SNACK = 0x10;
/** Target opcodes. */
export const OP_NOP_IN = 0x20;
export const OP_SCSI_RESP = 0x21;
export const OP_TMF_RESP = 0x22;
export const OP_LOGIN_RESP = 0x23;
export const OP_TEXT_RESP = 0x24;
export const OP_DATA_IN = 0x25;
export const OP_LOGOUT_RESP = 0x26;
export const OP_R2T = 0x31;
export const OP_ASYNC = 0x32;
export const OP_REJECT = 0x3f;

/** The reserved tag value (ITT/TTT "none"). */
export const TAG_NONE = 0xffffffff;
export const BHS_BYTES = 48;

/** Fields every initiator PDU has, read by PduReader for dispatch. */
export interface PduHeader {
  opcode: number;
  /** I bit: immediate delivery. */
  immediate: boolean;
  /** F bit (byte 1, bit 7). */
  final: boolean;
  totalAhsBytes: number;
  dataSegmentBytes: number;
  itt: number;
}

/** A framed PDU as received: the 48-byte BHS, the AHS (if any), the data segment. */
export interface InPdu {
  header: PduHeader;
  /** The 48 bytes of the BHS (a private copy: safe to keep). */
  bhs: Buffer;
  /** Concatenated AHS bytes, or null. */
  ahs: Buffer | null;
  /** Data segment without padding (empty Buffer when none): a view of the received chunk or a copy; never modify it. */
  data: Buffer;
  /** False when a negotiated DataDigest did not match (framing is still intact). */
  dataDigestOk: boolean;
}

export interface ScsiCommandPdu {
  immediate: boolean;
  final: boolean;
  read: boolean;
  write: boolean;
  /** Task attribute, bits 2-0 of byte 1 (0 untagged, 1 simple, 2 ordered, 3 head of queue, 4 ACA). */
  attr: number;
  lun: number;
  itt: number;
  expectedDataTransferLength: number;
  cmdSN: number;
  expStatSN: number;
  /** Full CDB: 16 bytes from the BHS, extended by an AHS of type 1 when present. */
  cdb: Buffer;
  /** AHS type 2 (bidirectional read length), or null. */
  bidiReadLength: number | null;
}

export interface DataOutPdu {
  final: boolean;
  lun: number;
  itt: number;
  ttt: number;
  expStatSN: number;
  dataSN: number;
  bufferOffset: number;
}

export interface NopOutPdu {
  immediate: boolean;
  lun: number;
  itt: number;
  ttt: number;
  cmdSN: number;
  expStatSN: number;
}

export interface TmfRequestPdu {
  immediate: boolean;
  /** 1 ABORT TASK, 2 ABORT TASK SET, 3 CLEAR ACA, 4 CLEAR TASK SET, 5 LU RESET, 6 TARGET WARM RESET, 7 TARGET COLD RESET, 8 TASK REASSIGN. */
  func: number;
  lun: number;
  itt: number;
  referencedTaskTag: number;
  cmdSN: number;
  expStatSN: number;
  refCmdSN: number;
  expDataSN: number;
}

export interface LoginRequestPdu {
  transit: boolean;
  cont: boolean;
  /** Current stage: 0 security, 1 operational, 3 full feature. */
  csg: number;
  nsg: number;
  versionMax: number;
  versionMin: number;
  /** 6 bytes. */
  isid: Buffer;
  tsih: number;
  itt: number;
  cid: number;
  cmdSN: number;
  expStatSN: number;
}

export interface TextRequestPdu {
  immediate: boolean;
  final: boolean;
  cont: boolean;
  lun: number;
  itt: number;
  ttt: number;
  cmdSN: number;
  expStatSN: number;
}

export interface LogoutRequestPdu {
  immediate: boolean;
  /** 0 close session, 1 close connection, 2 remove connection for recovery. */
  reason: number;
  itt: number;
  cid: number;
  cmdSN: number;
  expStatSN: number;
}

/** StatSN, ExpCmdSN, MaxCmdSN: carried by every target PDU below that has them. */
export interface SnTrio {
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
}

export interface ScsiResponseFields extends SnTrio {
  itt: number;
  /** 0 command completed at target, 1 target failure. */
  response: number;
  status: number;
  /** Residual overflow / underflow (byte 1 O and U bits) with the residual count. */
  overflow: boolean;
  underflow: boolean;
  residualCount: number;
  expDataSN: number;
}

export interface DataInFields extends SnTrio {
  final: boolean;
  /** S bit: this PDU carries status (then statSN and status are meaningful). */
  hasStatus: boolean;
  status: number;
  overflow: boolean;
  underflow: boolean;
  residualCount: number;
  lun: number;
  itt: number;
  ttt: number;
  dataSN: number;
  bufferOffset: number;
}

export interface R2tFields extends SnTrio {
  lun: number;
  itt: number;
  ttt: number;
  r2tSN: number;
  bufferOffset: number;
  desiredDataTransferLength: number;
}

export interface NopInFields extends SnTrio {
  lun: number;
  itt: number;
  ttt: number;
}

export interface TmfResponseFields extends SnTrio {
  itt: number;
  /** 0 complete, 1 task does not exist, 2 LUN does not exist, 3 task still allegiant, 4 reassignment unsupported, 5 function unsupported, 6 authorization failed, 255 rejected. */
  response: number;
}

export interface LoginResponseFields extends SnTrio {
  transit: boolean;
  cont: boolean;
  csg: number;
  nsg: number;
  versionMax: number;
  versionActive: number;
  isid: Buffer;
  tsih: number;
  itt: number;
  statusClass: number;
  statusDetail: number;
}

export interface TextResponseFields extends SnTrio {
  final: boolean;
  cont: boolean;
  lun: number;
  itt: number;
  ttt: number;
}

export interface LogoutResponseFields extends SnTrio {
  itt: number;
  /** 0 closed, 1 CID not found, 2 recovery not supported, 3 cleanup failed. */
  response: number;
  time2Wait: number;
  time2Retain: number;
}

export interface RejectFields extends SnTrio {
  /** RFC 7143 §11.17.1 reason code. */
  reason: number;
  dataSN: number;
}

/** Digests negotiated for a connection; login PDUs never carry them. */
export interface DigestSettings {
  header: boolean;
  data: boolean;
}
