// An in-memory VolumeStore for protocol and API tests: same contract as the local
// engine (volume/types.ts), no device. Objects of 64 KiB are allocated on first
// write and freed when a discard covers them, so block status and usedBytes behave
// like the engine's.
import { TesseraError } from '../stdx/errors.js';
import { IoStats } from '../stdx/stats.js';
import type { Extent, Volume, VolumeInfo, VolumeStore, StatsSnapshot, DeviceInfo } from './types.js';
import { VOLUME_NAME_RE } from './types.js';

const OBJECT_BYTES = 64 * 1024;

interface MemVolume {
  id: number;
  name: string;
  sizeBytes: number;
  createdAt: string;
  objects: Map<number, Buffer>;
  stats: IoStats;
  deleted: boolean;
}

export class MemoryVolumeStore implements VolumeStore {
  private readonly byName = new Map<string, MemVolume>();
  private nextId = 1;

  list(): VolumeInfo[] {
    return [...this.byName.values()].sort((a, b) => a.name.localeCompare(b.name)).map(toInfo);
  }

  info(name: string): VolumeInfo {
    return toInfo(this.get(name));
  }

  async create(name: string, sizeBytes: number): Promise<VolumeInfo> {
    checkName(name);
    if (this.byName.has(name)) throw new TesseraError('ERR_EXISTS', `volume "${name}" already exists`);
    checkSize(sizeBytes);
    const v: MemVolume = { id: this.nextId++, name, sizeBytes, createdAt: new Date().toISOString(), objects: new Map(), stats: new IoStats(), deleted: false };
    this.byName.set(name, v);
    return toInfo(v);
  }

  async resize(name: string, sizeBytes: number, opts?: { discardData?: boolean }): Promise<VolumeInfo> {
    const v = this.get(name);
    checkSize(sizeBytes);
    if (sizeBytes < v.sizeBytes) {
      const firstGone = Math.ceil(sizeBytes / OBJECT_BYTES);
      const beyond = [...v.objects.keys()].filter((i) => i * OBJECT_BYTES + OBJECT_BYTES > sizeBytes && i >= Math.floor(sizeBytes / OBJECT_BYTES));
      if (beyond.length > 0 && !opts?.discardData) throw new TesseraError('ERR_SHRINK', `volume "${name}" has data beyond ${sizeBytes} bytes`);
      for (const i of beyond) {
        if (i >= firstGone) v.objects.delete(i);
        else v.objects.get(i)!.fill(0, sizeBytes - i * OBJECT_BYTES);
      }
    }
    v.sizeBytes = sizeBytes;
    return toInfo(v);
  }

  async rename(name: string, newName: string): Promise<VolumeInfo> {
    checkName(newName);
    const v = this.get(name);
    if (this.byName.has(newName)) throw new TesseraError('ERR_EXISTS', `volume "${newName}" already exists`);
    this.byName.delete(name);
    v.name = newName;
    this.byName.set(newName, v);
    return toInfo(v);
  }

  async delete(name: string): Promise<void> {
    const v = this.get(name);
    v.deleted = true;
    this.byName.delete(name);
  }

  open(name: string): Volume {
    return new MemVolumeHandle(this.get(name));
  }

  devices(): DeviceInfo[] {
    return [];
  }

  stats(): StatsSnapshot {
    return { atMs: Date.now(), devices: [], volumes: [...this.byName.values()].map((v) => ({ name: v.name, stats: v.stats.snapshot() })) };
  }

  async close(): Promise<void> {}

  private get(name: string): MemVolume {
    const v = this.byName.get(name);
    if (!v) throw new TesseraError('ERR_NOT_FOUND', `no volume named "${name}"`);
    return v;
  }
}

class MemVolumeHandle implements Volume {
  readonly id: number;
  constructor(private readonly v: MemVolume) {
    this.id = v.id;
  }
  name(): string {
    return this.v.name;
  }
  sizeBytes(): number {
    return this.v.sizeBytes;
  }
  stats() {
    return this.v.stats.snapshot();
  }
  async read(offsetBytes: number, lengthBytes: number, out: Buffer, outOffset: number): Promise<void> {
    this.check(offsetBytes, lengthBytes);
    forEachPiece(offsetBytes, lengthBytes, (obj, inObj, len, done) => {
      const o = this.v.objects.get(obj);
      if (o) o.copy(out, outOffset + done, inObj, inObj + len);
      else out.fill(0, outOffset + done, outOffset + done + len);
    });
    this.v.stats.read.record(lengthBytes, 1);
  }
  async write(offsetBytes: number, data: Buffer): Promise<void> {
    this.check(offsetBytes, data.length);
    forEachPiece(offsetBytes, data.length, (obj, inObj, len, done) => {
      let o = this.v.objects.get(obj);
      if (!o) {
        o = Buffer.alloc(OBJECT_BYTES);
        this.v.objects.set(obj, o);
      }
      data.copy(o, inObj, done, done + len);
    });
    this.v.stats.write.record(data.length, 1);
  }
  async flush(): Promise<void> {
    this.check(0, 0);
  }
  async trim(offsetBytes: number, lengthBytes: number): Promise<void> {
    await this.writeZeroes(offsetBytes, lengthBytes, false, true);
  }
  async writeZeroes(offsetBytes: number, lengthBytes: number, _fua: boolean, mayTrim: boolean): Promise<void> {
    this.check(offsetBytes, lengthBytes);
    forEachPiece(offsetBytes, lengthBytes, (obj, inObj, len) => {
      const o = this.v.objects.get(obj);
      if (!o) return;
      if (mayTrim && len === OBJECT_BYTES) this.v.objects.delete(obj);
      else o.fill(0, inObj, inObj + len);
    });
  }
  async blockStatus(offsetBytes: number, lengthBytes: number): Promise<Extent[]> {
    this.check(offsetBytes, lengthBytes);
    const out: Extent[] = [];
    forEachPiece(offsetBytes, lengthBytes, (obj, _inObj, len) => {
      const hole = !this.v.objects.has(obj);
      const last = out[out.length - 1];
      if (last && last.hole === hole) last.lengthBytes += len;
      else out.push({ lengthBytes: len, hole, zero: hole });
    });
    return out;
  }
  private check(offsetBytes: number, lengthBytes: number): void {
    if (this.v.deleted) throw new TesseraError('ERR_NOT_FOUND', `volume "${this.v.name}" was deleted`);
    if (offsetBytes < 0 || lengthBytes < 0 || offsetBytes + lengthBytes > this.v.sizeBytes) {
      throw new TesseraError('ERR_RANGE', `range ${offsetBytes}+${lengthBytes} is outside volume "${this.v.name}"`);
    }
  }
}

function forEachPiece(offsetBytes: number, lengthBytes: number, fn: (obj: number, inObj: number, len: number, done: number) => void): void {
  let done = 0;
  while (done < lengthBytes) {
    const pos = offsetBytes + done;
    const obj = Math.floor(pos / OBJECT_BYTES);
    const inObj = pos - obj * OBJECT_BYTES;
    const len = Math.min(OBJECT_BYTES - inObj, lengthBytes - done);
    fn(obj, inObj, len, done);
    done += len;
  }
}

function toInfo(v: MemVolume): VolumeInfo {
  return { name: v.name, id: v.id, sizeBytes: v.sizeBytes, usedBytes: v.objects.size * OBJECT_BYTES, objectSizeBytes: OBJECT_BYTES, createdAt: v.createdAt };
}

export function checkName(name: string): void {
  if (!VOLUME_NAME_RE.test(name)) {
    throw new TesseraError('ERR_INVALID', `bad volume name "${name}": 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
}

export function checkSize(sizeBytes: number): void {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % 512 !== 0) {
    throw new TesseraError('ERR_INVALID', `bad volume size ${sizeBytes}: must be a positive multiple of 512 bytes`);
  }
  if (sizeBytes > 2 ** 50) throw new TesseraError('ERR_INVALID', `volume size ${sizeBytes} exceeds the 1 PiB limit`);
}
