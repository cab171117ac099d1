// One SCSI task of an iSCSI session and the bookkeeping of its Data-Out phase
// (RFC 7143 §4.? "Data Transfer": immediate data, the unsolicited burst, and
// R2T-solicited sequences). Pure: it decides which bytes are expected next and
// which R2Ts to send; the connection moves the bytes.
//
// Invariants:
// - Data lands only inside [0, expectedBytes) of the task's buffer, in order
//   (DataPDUInOrder = DataSequenceInOrder = Yes): each accepted Data-Out PDU
//   continues exactly where the previous one of its sequence ended.
// - At most `maxOutstandingR2t` R2T sequences are open; each asks for at most
//   `maxBurstBytes`; together with the unsolicited part they cover the buffer once.
// - At most `keepBytes` of the data are kept (the prefix the SCSI layer can use:
//   a CDB never moves more than the LU's maximum transfer length); the rest is
//   checked for offsets and dropped. An aborted task keeps nothing.
import { TesseraError } from '../../stdx/errors.js';
import type { DataOutPdu, ScsiCommandPdu } from './pdu-types.js';
import { TAG_NONE } from './pdu-types.js';
import type { BufferRecycler } from '../../stdx/buffer-recycler.js';
import { copyBytes } from '../../stdx/shared-copy.js';
import { LARGE_BUFFER_BYTES } from '../buffers.js';

export type TaskState = 'data-out' | 'waiting-order' | 'executing' | 'done';

export interface R2tSeq {
  ttt: number;
  r2tSN: number;
  offsetBytes: number;
  lengthBytes: number;
  /** Bytes received so far in this sequence. */
  receivedBytes: number;
  nextDataSN: number;
}

export interface DataOutLimits {
  initialR2t: boolean;
  firstBurstBytes: number;
  maxBurstBytes: number;
  maxOutstandingR2t: number;
}

export class Task {
  state: TaskState = 'data-out';
  aborted = false;
  /** The session's CmdSN order has reached this task: it may execute once its data is in. */
  ordered = false;
  /** Buffer for write data; null until the first byte arrives or when discarding. */
  data: Buffer | null = null;
  /** Bytes received contiguously from offset 0 (immediate + unsolicited + solicited). */
  receivedBytes = 0;
  /** End of the unsolicited window: immediate data plus unsolicited Data-Out stop here. */
  private unsolicitedEndBytes = 0;
  private unsolicitedNextDataSN = 0;
  /** Offset up to which R2Ts have been sent. */
  private solicitedEndBytes = 0;
  private nextR2tSN = 0;
  readonly r2ts: R2tSeq[] = [];
  /** Settles when the backend work of this task is over (for aborts that must wait). */
  settled: Promise<void> | null = null;

  constructor(
    readonly cmd: ScsiCommandPdu,
    /** Bytes to collect from the initiator (EDTL of a write; 0 for reads). */
    readonly expectedBytes: number,
    /** Bytes of the data to keep (≤ expectedBytes): the prefix the SCSI layer may use. */
    private readonly keepBytes: number,
    /** Where a multi-PDU write's buffer comes from (default: a fresh allocation). */
    private readonly buffers: BufferRecycler | null = null,
  ) {}

  /** The pooled buffer this task took, to give back once its write resolved (null: none). */
  pooled: Buffer | null = null;

  get itt(): number {
    return this.cmd.itt;
  }

  /** True once every expected byte arrived. */
  complete(): boolean {
    return this.receivedBytes === this.expectedBytes;
  }

  /**
   * Sets up the Data-Out phase from the command PDU and its immediate data.
   * Returns a protocol error message, or null.
   */
  begin(immediate: Buffer, limits: DataOutLimits): string | null {
    if (immediate.length > this.expectedBytes) return `immediate data (${immediate.length} bytes) beyond the expected transfer length ${this.expectedBytes}`;
    if (immediate.length > limits.firstBurstBytes) return `immediate data (${immediate.length} bytes) beyond FirstBurstLength ${limits.firstBurstBytes}`;
    if (immediate.length > 0) this.store(0, immediate);
    this.receivedBytes = immediate.length;
    // Unsolicited Data-Out follows only when InitialR2T=No and F=0 (RFC 7143 §11.3.? "F bit").
    const unsolicited = !limits.initialR2t && !this.cmd.final;
    if (!unsolicited && !this.cmd.final) return 'F bit clear on a command without unsolicited data (InitialR2T=Yes)';
    this.unsolicitedEndBytes = unsolicited ? Math.min(this.expectedBytes, limits.firstBurstBytes) : immediate.length;
    if (unsolicited && this.unsolicitedEndBytes === immediate.length) return 'F bit clear but the unsolicited burst is already complete';
    this.solicitedEndBytes = this.unsolicitedEndBytes;
    return null;
  }

  /** Whether unsolicited Data-Out may still arrive (then R2Ts wait for it, keeping data in order). */
  awaitingUnsolicited(): boolean {
    return this.receivedBytes < this.unsolicitedEndBytes;
  }

  /**
   * The R2Ts to send now (possibly none), each registered as open. `newTtt` hands
   * out target transfer tags.
   */
  nextR2ts(limits: DataOutLimits, newTtt: () => number): R2tSeq[] {
    const out: R2tSeq[] = [];
    if (this.aborted || this.awaitingUnsolicited()) return out;
    while (this.r2ts.length < limits.maxOutstandingR2t && this.solicitedEndBytes < this.expectedBytes) {
      const lengthBytes = Math.min(limits.maxBurstBytes, this.expectedBytes - this.solicitedEndBytes);
      const seq: R2tSeq = { ttt: newTtt(), r2tSN: this.nextR2tSN++, offsetBytes: this.solicitedEndBytes, lengthBytes, receivedBytes: 0, nextDataSN: 0 };
      this.solicitedEndBytes += lengthBytes;
      this.r2ts.push(seq);
      out.push(seq);
    }
    return out;
  }

  /**
   * Accepts one Data-Out PDU. Returns the closed R2T sequence's TTT when the PDU
   * completed one (the caller frees the tag), TAG_NONE otherwise. Throws
   * ERR_PROTOCOL for data the initiator was not entitled to send.
   */
  acceptDataOut(pdu: DataOutPdu, data: Buffer): number {
    if (pdu.ttt === TAG_NONE) return this.acceptUnsolicited(pdu, data);
    const seq = this.r2ts.find((s) => s.ttt === pdu.ttt);
    if (seq === undefined) throw new TesseraError('ERR_PROTOCOL', `Data-Out for unknown target transfer tag 0x${pdu.ttt.toString(16)}`);
    if (pdu.dataSN !== seq.nextDataSN) throw new TesseraError('ERR_PROTOCOL', `Data-Out DataSN ${pdu.dataSN}, expected ${seq.nextDataSN}`);
    const at = seq.offsetBytes + seq.receivedBytes;
    if (pdu.bufferOffset !== at) throw new TesseraError('ERR_PROTOCOL', `Data-Out offset ${pdu.bufferOffset}, expected ${at}`);
    if (seq.receivedBytes + data.length > seq.lengthBytes) throw new TesseraError('ERR_PROTOCOL', `Data-Out beyond the R2T's desired length ${seq.lengthBytes}`);
    if (at !== this.receivedBytes) throw new TesseraError('ERR_PROTOCOL', `Data-Out at ${at} while ${this.receivedBytes} bytes are in (out of order)`);
    this.store(at, data);
    seq.receivedBytes += data.length;
    seq.nextDataSN++;
    this.receivedBytes += data.length;
    const done = seq.receivedBytes === seq.lengthBytes;
    if (pdu.final !== done) throw new TesseraError('ERR_PROTOCOL', pdu.final ? `Data-Out sequence ended after ${seq.receivedBytes} of ${seq.lengthBytes} bytes` : 'Data-Out sequence complete without the F bit');
    if (!done) return TAG_NONE;
    this.r2ts.splice(this.r2ts.indexOf(seq), 1);
    return seq.ttt;
  }

  private acceptUnsolicited(pdu: DataOutPdu, data: Buffer): number {
    if (pdu.dataSN !== this.unsolicitedNextDataSN) throw new TesseraError('ERR_PROTOCOL', `unsolicited Data-Out DataSN ${pdu.dataSN}, expected ${this.unsolicitedNextDataSN}`);
    if (pdu.bufferOffset !== this.receivedBytes) throw new TesseraError('ERR_PROTOCOL', `unsolicited Data-Out offset ${pdu.bufferOffset}, expected ${this.receivedBytes}`);
    if (this.receivedBytes + data.length > this.unsolicitedEndBytes) throw new TesseraError('ERR_PROTOCOL', `unsolicited Data-Out beyond FirstBurstLength (${this.unsolicitedEndBytes} bytes)`);
    this.store(this.receivedBytes, data);
    this.receivedBytes += data.length;
    this.unsolicitedNextDataSN++;
    const done = this.receivedBytes === this.unsolicitedEndBytes;
    if (pdu.final !== done) throw new TesseraError('ERR_PROTOCOL', pdu.final ? `unsolicited burst ended after ${this.receivedBytes} of ${this.unsolicitedEndBytes} bytes` : 'unsolicited burst complete without the F bit');
    return TAG_NONE;
  }

  /**
   * Where a Data-Out segment of dataBytes at bufferOffset may be copied before it is
   * accepted: the part of this task's buffer it would be stored at, when the segment
   * continues the data in order and lies within the kept bytes; else null (the
   * segment then arrives as its own buffer and acceptDataOut copies or rejects it).
   * acceptDataOut still checks the PDU; one it rejects ends the connection, and the
   * bytes it left lie past receivedBytes, where nothing reads them.
   */
  dataOutTarget(bufferOffset: number, dataBytes: number): Buffer | null {
    if (this.aborted || bufferOffset !== this.receivedBytes || dataBytes === 0 || bufferOffset + dataBytes > this.keepBytes) return null;
    // One segment carrying all the data is used as received (no copy at all).
    if (this.data === null && bufferOffset === 0 && dataBytes >= this.keepBytes) return null;
    const data = this.data ?? this.allocate();
    return data.subarray(bufferOffset, bufferOffset + dataBytes);
  }

  /** The write data kept: the first keepBytes of what arrived (null when none). */
  dataOut(): Buffer | null {
    if (this.keepBytes === 0 || this.data === null) return null;
    return this.data.length === this.keepBytes ? this.data : this.data.subarray(0, this.keepBytes);
  }

  /** Drops the data buffer: after an abort nothing more is kept (a pooled one is not given back: the write may run). */
  discard(): void {
    this.data = null;
    this.pooled = null;
  }

  private store(offsetBytes: number, chunk: Buffer): void {
    if (this.aborted || offsetBytes >= this.keepBytes) return;
    // A write whose data arrives in one piece (immediate data, the common 4 KiB
    // case) uses the received buffer itself: no copy.
    if (this.data === null && offsetBytes === 0 && chunk.length >= this.keepBytes) {
      this.data = chunk;
      return;
    }
    const data = this.data ?? this.allocate();
    // Already in place: the reader copied it there (dataOutTarget).
    if (chunk.buffer === data.buffer && chunk.byteOffset === data.byteOffset + offsetBytes) return;
    copyBytes(chunk, 0, Math.min(chunk.length, this.keepBytes - offsetBytes), data, offsetBytes);
  }

  private allocate(): Buffer {
    if (this.buffers !== null && this.keepBytes >= LARGE_BUFFER_BYTES) {
      this.pooled = this.buffers.take(this.keepBytes);
      this.data = this.pooled;
    } else {
      this.data = Buffer.allocUnsafe(this.keepBytes);
    }
    return this.data;
  }
}
