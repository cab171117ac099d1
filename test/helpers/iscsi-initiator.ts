// A small iSCSI initiator for tests that need what libiscsi's tools cannot do
// from the command line: PERSISTENT RESERVE commands through chosen gateways,
// task management against a command that is stuck, several connections in one
// session, data digests (Debian's libiscsi 1.19 never negotiates DataDigest).
// It speaks RFC 7143 at ERL 0 with our own PDU codec (src/gateway/iscsi/pdu.ts)
// over a real TCP socket. Test code only: simple, strict, no recovery.
//
// Invariants: commands get increasing CmdSNs (immediate ones reuse the next);
// every response is matched to its command by ITT; a protocol surprise rejects
// every pending call and closes the socket.
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import {
  PduReader,
  decodeDataIn,
  decodeLoginResponse,
  decodeLogoutResponse,
  decodeNopIn,
  decodeR2t,
  decodeReject,
  decodeScsiResponse,
  decodeSenseData,
  decodeTextResponse,
  decodeTmfResponse,
  encodeDataOut,
  encodeLoginRequest,
  encodeLogoutRequest,
  encodeNopOut,
  encodeScsiCommand,
  encodeTextRequest,
  encodeTmfRequest,
  framePdu,
} from '../../src/gateway/iscsi/pdu.js';
import * as P from '../../src/gateway/iscsi/pdu-types.js';
import { encodeTextKeys, parseTextKeys } from '../../src/gateway/iscsi/text.js';

export interface LoginOptions {
  initiatorName?: string;
  targetName?: string;
  sessionType?: 'Normal' | 'Discovery';
  /** 6 bytes; default random. */
  isid?: Buffer;
  tsih?: number;
  cid?: number;
  headerDigest?: boolean;
  dataDigest?: boolean;
  /** Extra operational keys to offer, e.g. [['ImmediateData', 'No']]. */
  keys?: Array<[string, string]>;
}

export interface ScsiReply {
  status: number;
  sense: Buffer | null;
  dataIn: Buffer;
  overflow: boolean;
  underflow: boolean;
  residual: number;
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  kind: 'scsi' | 'tmf' | 'nop' | 'text' | 'logout' | 'login';
  dataIn?: Buffer[];
  dataOut?: Buffer;
  lun?: number;
}

export class TestInitiator {
  private readonly reader = new PduReader({ maxDataSegmentBytes: 1 << 20 });
  private digests = { header: false, data: false };
  private cmdSN = 1;
  private expStatSN = 0;
  private nextItt = 1;
  private readonly pending = new Map<number, Pending>();
  private closedErr: Error | null = null;
  tsih = 0;
  cid = 0;
  /** Random (type 10b, "random" qualifier): two sessions of one initiator name must not share an ISID, or the second reinstates the first. */
  isid: Buffer = Buffer.concat([Buffer.from([0x80]), randomBytes(5)]);
  initiatorName = 'iqn.2026-11.io.tessera.test:initiator';
  /** What the target declared it accepts per PDU. */
  targetMrdsl = 8192;
  /** Tests: rewrites the fields of each solicited Data-Out before it is sent (n counts them per connection). */
  dataOutHook: ((f: { dataSN: number; bufferOffset: number }, n: number) => void) | null = null;
  private dataOutsSent = 0;
  /** Negotiated results. */
  params = new Map<string, string>();
  readonly closed: Promise<void>;

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.fail(new Error('connection closed by the target'));
        resolve();
      });
    });
    socket.on('error', (err) => this.fail(err));
  }

  static connect(host: string, port: number): Promise<TestInitiator> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port }, () => resolve(new TestInitiator(s)));
      s.once('error', reject);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  get isClosed(): boolean {
    return this.closedErr !== null;
  }

  /** Logs in straight to the operational stage and on to full feature (no authentication). */
  async login(o: LoginOptions = {}): Promise<{ statusClass: number; statusDetail: number; keys: Map<string, string> }> {
    if (o.isid) this.isid = o.isid;
    if (o.initiatorName) this.initiatorName = o.initiatorName;
    this.cid = o.cid ?? 0;
    const keys: Array<[string, string]> = [['InitiatorName', this.initiatorName], ['SessionType', o.sessionType ?? 'Normal']];
    if (o.targetName) keys.push(['TargetName', o.targetName]);
    keys.push(['HeaderDigest', o.headerDigest ? 'CRC32C' : 'None'], ['DataDigest', o.dataDigest ? 'CRC32C' : 'None']);
    if ((o.sessionType ?? 'Normal') === 'Normal') keys.push(['MaxRecvDataSegmentLength', '262144'], ['MaxBurstLength', '1048576'], ['FirstBurstLength', '65536'], ['MaxConnections', '4'], ...(o.keys ?? []));
    const data = encodeTextKeys(keys);
    const itt = this.nextItt++;
    const bhs = encodeLoginRequest(
      { transit: true, cont: false, csg: 1, nsg: 3, versionMax: 0, versionMin: 0, isid: this.isid, tsih: o.tsih ?? 0, itt, cid: o.cid ?? 0, cmdSN: this.cmdSN, expStatSN: this.expStatSN },
      data.length,
    );
    const resp = (await this.call(itt, 'login', bhs, data)) as { f: P.LoginResponseFields; data: Buffer };
    const got = new Map(parseTextKeys(resp.data));
    if (resp.f.statusClass === 0) {
      this.tsih = resp.f.tsih;
      this.params = got;
      this.targetMrdsl = Number(got.get('MaxRecvDataSegmentLength') ?? 8192);
      this.digests = { header: got.get('HeaderDigest') === 'CRC32C', data: got.get('DataDigest') === 'CRC32C' };
      this.reader.setDigests(this.digests);
    }
    return { statusClass: resp.f.statusClass, statusDetail: resp.f.statusDetail, keys: got };
  }

  /** Sends a SCSI command; dataOut goes as immediate data and then per R2T. */
  scsi(lun: number, cdb: Buffer, o: { dataOut?: Buffer; readBytes?: number; immediate?: boolean; edtl?: number } = {}): Promise<ScsiReply> {
    const itt = this.nextItt++;
    return this.scsiWithItt(itt, lun, cdb, o);
  }

  /** Skips CmdSNs (to leave a gap the target must wait for). */
  skipCmdSN(n: number): number {
    const first = this.cmdSN;
    this.cmdSN = (this.cmdSN + n) >>> 0;
    return first;
  }

  /** As scsi(), with a caller-chosen ITT (to abort it later). */
  scsiWithItt(itt: number, lun: number, cdb: Buffer, o: { dataOut?: Buffer; readBytes?: number; edtl?: number; immediate?: boolean } = {}): Promise<ScsiReply> {
    const write = o.dataOut !== undefined && o.dataOut.length > 0;
    const edtl = o.edtl ?? (write ? o.dataOut!.length : (o.readBytes ?? 0));
    const immediateOk = this.params.get('ImmediateData') !== 'No';
    const firstBurst = Number(this.params.get('FirstBurstLength') ?? 65536);
    const imm = write && immediateOk ? o.dataOut!.subarray(0, Math.min(firstBurst, this.targetMrdsl, o.dataOut!.length)) : Buffer.alloc(0);
    const cmdSN = this.cmdSN;
    // An immediate command carries the next CmdSN without taking it (RFC 7143 §4.2.2.1).
    if (!o.immediate) this.cmdSN = (this.cmdSN + 1) >>> 0;
    const { bhs, ahs } = encodeScsiCommand(
      { immediate: o.immediate ?? false, final: true, read: (o.readBytes ?? 0) > 0, write, attr: 1, lun, itt, expectedDataTransferLength: edtl, cmdSN, expStatSN: this.expStatSN, cdb, bidiReadLength: null },
      imm.length,
    );
    return this.call(itt, 'scsi', bhs, imm, ahs, { dataOut: o.dataOut, lun }) as Promise<ScsiReply>;
  }

  /** Task management (RFC 7143 §11.5); resolves with the response code. */
  tmf(func: number, lun: number, referencedTaskTag = P.TAG_NONE, refCmdSN = 0): Promise<number> {
    const itt = this.nextItt++;
    const bhs = encodeTmfRequest({ immediate: true, func, lun, itt, referencedTaskTag, cmdSN: this.cmdSN, expStatSN: this.expStatSN, refCmdSN, expDataSN: 0 });
    return this.call(itt, 'tmf', bhs, null) as Promise<number>;
  }

  /** NOP-Out ping with a payload; resolves with the echoed data. */
  nop(payload: Buffer = Buffer.alloc(0)): Promise<Buffer> {
    const itt = this.nextItt++;
    const bhs = encodeNopOut({ immediate: true, lun: 0, itt, ttt: P.TAG_NONE, cmdSN: this.cmdSN, expStatSN: this.expStatSN }, payload.length);
    return this.call(itt, 'nop', bhs, payload) as Promise<Buffer>;
  }

  /** A Text Request (e.g. SendTargets=All); follows continuations. */
  async text(pairs: Array<[string, string]>): Promise<Array<[string, string]>> {
    const parts: Buffer[] = [];
    let ttt = P.TAG_NONE;
    let data = encodeTextKeys(pairs);
    for (;;) {
      const itt = this.nextItt++;
      const bhs = encodeTextRequest({ immediate: true, final: true, cont: false, lun: 0, itt, ttt, cmdSN: this.cmdSN, expStatSN: this.expStatSN }, data.length);
      const r = (await this.call(itt, 'text', bhs, data)) as { f: P.TextResponseFields; data: Buffer };
      parts.push(r.data);
      if (!r.f.cont) break;
      ttt = r.f.ttt;
      data = Buffer.alloc(0);
    }
    return parseTextKeys(Buffer.concat(parts));
  }

  async logout(reason = 0, cid = this.cid): Promise<number> {
    const itt = this.nextItt++;
    const bhs = encodeLogoutRequest({ immediate: true, reason, itt, cid, cmdSN: this.cmdSN, expStatSN: this.expStatSN });
    return (await this.call(itt, 'logout', bhs, null)) as number;
  }

  // ---- plumbing ----

  private call(itt: number, kind: Pending['kind'], bhs: Buffer, data: Buffer | null, ahs: Buffer | null = null, extra: Partial<Pending> = {}): Promise<unknown> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    return new Promise((resolve, reject) => {
      this.pending.set(itt, { resolve, reject, kind, dataIn: [], ...extra });
      this.send(bhs, ahs, data, kind === 'login');
    });
  }

  private send(bhs: Buffer, ahs: Buffer | null, data: Buffer | null, login = false): void {
    for (const b of framePdu(bhs, ahs, data && data.length > 0 ? data : null, login ? { header: false, data: false } : this.digests)) this.socket.write(b);
  }

  private fail(err: Error): void {
    if (this.closedErr) return;
    this.closedErr = err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.reader.push(chunk);
    try {
      for (let pdu = this.reader.next(); pdu !== null; pdu = this.reader.next()) this.onPdu(pdu);
    } catch (err) {
      this.fail(err as Error);
    }
  }

  private statSeen(statSN: number): void {
    this.expStatSN = (statSN + 1) >>> 0;
  }

  private onPdu(pdu: P.InPdu): void {
    const op = pdu.header.opcode;
    const itt = pdu.header.itt;
    const p = this.pending.get(itt);
    switch (op) {
      case P.OP_LOGIN_RESP: {
        const f = decodeLoginResponse(pdu);
        this.statSeen(f.statSN);
        this.settle(itt, { f, data: pdu.data });
        return;
      }
      case P.OP_DATA_IN: {
        const f = decodeDataIn(pdu);
        if (!p) return;
        p.dataIn!.push(pdu.data);
        if (f.hasStatus) {
          this.statSeen(f.statSN);
          this.settle(itt, { status: f.status, sense: null, dataIn: Buffer.concat(p.dataIn!), overflow: f.overflow, underflow: f.underflow, residual: f.residualCount } satisfies ScsiReply);
        }
        return;
      }
      case P.OP_SCSI_RESP: {
        const f = decodeScsiResponse(pdu);
        this.statSeen(f.statSN);
        if (!p) return;
        const sense = pdu.data.length > 0 ? decodeSenseData(pdu.data) : null;
        this.settle(itt, { status: f.status, sense, dataIn: Buffer.concat(p.dataIn!), overflow: f.overflow, underflow: f.underflow, residual: f.residualCount } satisfies ScsiReply);
        return;
      }
      case P.OP_R2T: {
        const f = decodeR2t(pdu);
        if (!p?.dataOut) throw new Error(`R2T for a task without data (ITT ${itt})`);
        let dataSN = 0;
        for (let off = f.bufferOffset; off < f.bufferOffset + f.desiredDataTransferLength; off += this.targetMrdsl) {
          const end = Math.min(f.bufferOffset + f.desiredDataTransferLength, off + this.targetMrdsl);
          const seg = p.dataOut.subarray(off, end);
          const fields = { final: end === f.bufferOffset + f.desiredDataTransferLength, lun: p.lun ?? 0, itt, ttt: f.ttt, expStatSN: this.expStatSN, dataSN: dataSN++, bufferOffset: off };
          this.dataOutHook?.(fields, this.dataOutsSent++);
          const bhs = encodeDataOut(fields, seg.length);
          this.send(bhs, null, seg);
        }
        return;
      }
      case P.OP_TMF_RESP: {
        const f = decodeTmfResponse(pdu);
        this.statSeen(f.statSN);
        this.settle(itt, f.response);
        return;
      }
      case P.OP_NOP_IN: {
        const f = decodeNopIn(pdu);
        if (itt === P.TAG_NONE) {
          // A target ping: answer with its TTT (RFC 7143 §11.18).
          const bhs = encodeNopOut({ immediate: true, lun: f.lun, itt: P.TAG_NONE, ttt: f.ttt, cmdSN: this.cmdSN, expStatSN: this.expStatSN }, 0);
          this.send(bhs, null, null);
          return;
        }
        this.statSeen(f.statSN);
        this.settle(itt, pdu.data);
        return;
      }
      case P.OP_TEXT_RESP: {
        const f = decodeTextResponse(pdu);
        this.statSeen(f.statSN);
        this.settle(itt, { f, data: pdu.data });
        return;
      }
      case P.OP_LOGOUT_RESP: {
        const f = decodeLogoutResponse(pdu);
        this.statSeen(f.statSN);
        this.settle(itt, f.response);
        return;
      }
      case P.OP_REJECT: {
        const f = decodeReject(pdu);
        this.statSeen(f.statSN);
        const rejectedItt = pdu.data.length >= 20 ? pdu.data.readUInt32BE(16) : P.TAG_NONE;
        const rp = this.pending.get(rejectedItt);
        if (rp) {
          this.pending.delete(rejectedItt);
          rp.reject(new Error(`rejected with reason 0x${f.reason.toString(16)}`));
        }
        return;
      }
      default:
        throw new Error(`unexpected opcode 0x${op.toString(16)}`);
    }
  }

  private settle(itt: number, value: unknown): void {
    const p = this.pending.get(itt);
    if (!p) return;
    this.pending.delete(itt);
    p.resolve(value);
  }
}

/** CDB builders for the tests. */
export const cdb = {
  read10(lba: number, blocks: number): Buffer {
    const b = Buffer.alloc(10);
    b[0] = 0x28;
    b.writeUInt32BE(lba, 2);
    b.writeUInt16BE(blocks, 7);
    return b;
  },
  write10(lba: number, blocks: number): Buffer {
    const b = Buffer.alloc(10);
    b[0] = 0x2a;
    b.writeUInt32BE(lba, 2);
    b.writeUInt16BE(blocks, 7);
    return b;
  },
  testUnitReady(): Buffer {
    return Buffer.alloc(6);
  },
  /** PERSISTENT RESERVE OUT with the basic 24-byte parameter list (SPC-4 6.16). */
  prOut(serviceAction: number, type: number, key: bigint, saKey: bigint): { cdb: Buffer; params: Buffer } {
    const c = Buffer.alloc(10);
    c[0] = 0x5f;
    c[1] = serviceAction;
    c[2] = type & 0x0f;
    c.writeUInt32BE(24, 5);
    const p = Buffer.alloc(24);
    p.writeBigUInt64BE(key, 0);
    p.writeBigUInt64BE(saKey, 8);
    return { cdb: c, params: p };
  },
  /** PERSISTENT RESERVE IN (SPC-4 6.15). */
  prIn(serviceAction: number, allocBytes = 8192): Buffer {
    const c = Buffer.alloc(10);
    c[0] = 0x5e;
    c[1] = serviceAction;
    c.writeUInt16BE(allocBytes, 7);
    return c;
  },
};

/** READ KEYS data → the registered keys. */
export function parseReadKeys(data: Buffer): { generation: number; keys: bigint[] } {
  const len = data.readUInt32BE(4);
  const keys: bigint[] = [];
  for (let off = 8; off + 8 <= Math.min(data.length, 8 + len); off += 8) keys.push(data.readBigUInt64BE(off));
  return { generation: data.readUInt32BE(0), keys };
}

/** READ RESERVATION data → the reservation, if any. */
export function parseReadReservation(data: Buffer): { key: bigint; type: number } | null {
  if (data.readUInt32BE(4) === 0) return null;
  return { key: data.readBigUInt64BE(8), type: data[21] & 0x0f };
}
