// Test helpers for the SCSI layer (used by the *.test.ts files next to it, not by the
// product): nexuses, CDB builders, an LU over a MemoryVolumeStore, sense decoding and
// a Volume wrapper that can hold calls back or make them fail.
import assert from 'node:assert/strict';
import { TesseraError } from '../../stdx/errors.js';
import type { ErrorCode } from '../../stdx/errors.js';
import { MemoryVolumeStore } from '../../volume/memory.js';
import type { Extent, Volume } from '../../volume/types.js';
import { ScsiLogicalUnit } from './lu.js';
import type { ScsiLogicalUnitOptions } from './lu.js';
import type { Nexus, ScsiCommand, ScsiResult } from './types.js';

export function makeNexus(isid = 1, tpgt = 1, initiatorName = 'iqn.2024-01.org.example:host'): Nexus {
  const initiatorPort = `${initiatorName},i,0x${isid.toString(16).padStart(12, '0')}`;
  const targetPort = `iqn.2024-01.io.tessera:vol,t,0x${tpgt.toString(16).padStart(4, '0')}`;
  return { key: `${initiatorPort}|${targetPort}`, initiatorPort, initiatorName, targetPort, relativeTargetPortId: tpgt + 1 };
}

export const NEXUS_A = makeNexus(1);
export const NEXUS_B = makeNexus(2);

export function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ''), 'hex');
}

export interface CmdOptions {
  nexus?: Nexus;
  dataOut?: Buffer | null;
  expectedInBytes?: number;
}

export function scsiCmd(cdb: Buffer | number[], o: CmdOptions = {}): ScsiCommand {
  const c = Buffer.isBuffer(cdb) ? cdb : Buffer.from(cdb);
  return { nexus: o.nexus ?? NEXUS_A, lun: 0, cdb: c, dataOut: o.dataOut ?? null, expectedInBytes: o.expectedInBytes ?? 1 << 24, taskTag: 1 };
}

/** 10-byte CDB with a 32-bit LBA at 2 and a 16-bit length at 7. */
export function cdb10(opcode: number, lba: number, blocks: number, byte1 = 0): Buffer {
  const b = Buffer.alloc(10);
  b[0] = opcode;
  b[1] = byte1;
  b.writeUInt32BE(lba, 2);
  b.writeUInt16BE(blocks, 7);
  return b;
}

/** 12-byte CDB with a 32-bit LBA at 2 and a 32-bit length at 6. */
export function cdb12(opcode: number, lba: number, blocks: number, byte1 = 0): Buffer {
  const b = Buffer.alloc(12);
  b[0] = opcode;
  b[1] = byte1;
  b.writeUInt32BE(lba, 2);
  b.writeUInt32BE(blocks, 6);
  return b;
}

/** 16-byte CDB with a 64-bit LBA at 2 and a 32-bit length at 10. */
export function cdb16(opcode: number, lba: number | bigint, blocks: number, byte1 = 0): Buffer {
  const b = Buffer.alloc(16);
  b[0] = opcode;
  b[1] = byte1;
  b.writeBigUInt64BE(BigInt(lba), 2);
  b.writeUInt32BE(blocks, 10);
  return b;
}

/** READ(6)/WRITE(6): 21-bit LBA, 8-bit length (0 = 256). */
export function cdb6(opcode: number, lba: number, blocks: number): Buffer {
  return Buffer.from([opcode, (lba >>> 16) & 0x1f, (lba >>> 8) & 0xff, lba & 0xff, blocks & 0xff, 0]);
}

export interface Sense {
  key: number;
  ascq: number;
  information: number | null;
  sks: number;
  fieldPointer: number;
}

export function decodeSense(b: Buffer): Sense {
  return {
    key: b[2] & 0x0f,
    ascq: (b[12] << 8) | b[13],
    information: (b[0] & 0x80) !== 0 ? b.readUInt32BE(3) : null,
    sks: b[15],
    fieldPointer: b.readUInt16BE(16),
  };
}

/** Asserts CHECK CONDITION with this sense key and (ASC << 8 | ASCQ). */
export function assertCheck(r: ScsiResult, key: number, ascq: number, message?: string): Sense {
  assert.equal(r.status, 0x02, message ?? `expected CHECK CONDITION, got status ${r.status}`);
  assert.ok(r.sense !== null, 'CHECK CONDITION without sense');
  assertWellFormedSense(r.sense);
  const s = decodeSense(r.sense);
  assert.equal(s.key, key, `${message ?? ''} sense key`);
  assert.equal(s.ascq.toString(16), ascq.toString(16), `${message ?? ''} ASC/ASCQ`);
  return s;
}

export function assertGood(r: ScsiResult, message?: string): void {
  const detail = r.sense !== null ? ` sense ${r.sense.toString('hex')}` : '';
  assert.equal(r.status, 0x00, `${message ?? 'expected GOOD'}: status ${r.status}${detail}`);
  assert.equal(r.sense, null);
}

/** SPC-4 4.5.3 shape: 18 bytes, response code 70h, ADDITIONAL SENSE LENGTH 10, a defined sense key. */
export function assertWellFormedSense(b: Buffer): void {
  assert.equal(b.length, 18, 'sense length');
  assert.equal(b[0] & 0x7f, 0x70, 'response code');
  assert.equal(b[7], 10, 'additional sense length');
  assert.equal(b[2] & 0xf0, 0, 'byte 2 high bits');
}

/**
 * A Volume wrapper for fault and timing tests: `hold` makes the next calls of a kind
 * wait until released; `fail` makes calls of a kind throw a TesseraError.
 */
export class ControlledVolume implements Volume {
  readonly id: number;
  failRead: ErrorCode | null = null;
  failWrite: ErrorCode | null = null;
  failFlush: ErrorCode | null = null;
  /** When set, write() waits for this promise before writing. */
  writeGate: Promise<void> | null = null;
  /** When set, read() waits for this promise before reading. */
  readGate: Promise<void> | null = null;
  readonly calls: string[] = [];

  constructor(private readonly inner: Volume) {
    this.id = inner.id;
  }
  name(): string {
    return this.inner.name();
  }
  sizeBytes(): number {
    return this.inner.sizeBytes();
  }
  stats() {
    return this.inner.stats();
  }
  async read(offsetBytes: number, lengthBytes: number, out: Buffer, outOffset: number): Promise<void> {
    this.calls.push(`read ${offsetBytes} ${lengthBytes}`);
    if (this.readGate !== null) await this.readGate;
    if (this.failRead !== null) throw new TesseraError(this.failRead, 'injected read failure');
    return this.inner.read(offsetBytes, lengthBytes, out, outOffset);
  }
  async write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void> {
    this.calls.push(`write ${offsetBytes} ${data.length} fua=${fua}`);
    if (this.writeGate !== null) await this.writeGate;
    if (this.failWrite !== null) throw new TesseraError(this.failWrite, 'injected write failure');
    return this.inner.write(offsetBytes, data, fua);
  }
  async flush(): Promise<void> {
    this.calls.push('flush');
    if (this.failFlush !== null) throw new TesseraError(this.failFlush, 'injected flush failure');
    return this.inner.flush();
  }
  async trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    this.calls.push(`trim ${offsetBytes} ${lengthBytes}`);
    if (this.failWrite !== null) throw new TesseraError(this.failWrite, 'injected trim failure');
    return this.inner.trim(offsetBytes, lengthBytes, fua);
  }
  async writeZeroes(offsetBytes: number, lengthBytes: number, fua: boolean, mayTrim: boolean): Promise<void> {
    this.calls.push(`writeZeroes ${offsetBytes} ${lengthBytes} mayTrim=${mayTrim}`);
    if (this.failWrite !== null) throw new TesseraError(this.failWrite, 'injected writeZeroes failure');
    return this.inner.writeZeroes(offsetBytes, lengthBytes, fua, mayTrim);
  }
  async blockStatus(offsetBytes: number, lengthBytes: number): Promise<Extent[]> {
    if (this.failRead !== null) throw new TesseraError(this.failRead, 'injected blockStatus failure');
    return this.inner.blockStatus(offsetBytes, lengthBytes);
  }
}

export interface TestLu {
  lu: ScsiLogicalUnit;
  store: MemoryVolumeStore;
  volume: ControlledVolume;
}

/** An LU over a fresh in-memory volume 'v' of `sizeBytes` (default 1 MiB) behind a ControlledVolume. */
export async function makeTestLu(opts: Partial<ScsiLogicalUnitOptions> & { sizeBytes?: number } = {}): Promise<TestLu> {
  const store = new MemoryVolumeStore();
  await store.create('v', opts.sizeBytes ?? 1024 * 1024);
  const volume = new ControlledVolume(store.open('v'));
  const lu = new ScsiLogicalUnit({ lun: 0, clusterId: 'test-cluster', objectSizeBytes: 64 * 1024, ...opts, volume });
  return { lu, store, volume };
}

export function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}
