// The OSD's object store on its local engine: cluster volume `id` is the engine
// volume `v<id>`, created lazily with the largest size the engine allows, so an
// OSD holds exactly the objects of that volume whose PGs it replicates (thin).
// Pool object size equals the engine's object size, so a cluster object is one
// engine object and a PG's data is a set of whole engine objects.
//
// Invariants: writes/zeroes of one PG are ordered by the caller (pg.ts); a
// volume id absent from the cluster map and below map.nextVolumeId was deleted
// and is never re-created here (late log entries for it are dropped).
import type { LocalEngine } from '../engine/engine.js';
import { objectToPg } from '../placement/placement.js';
import { TesseraError } from '../stdx/errors.js';
import type { Extent, Volume } from '../volume/types.js';
import type { Entry } from '../raft/types.js';
import { peekOpTarget, type OpTarget } from './op.js';

/** Engine volume size of a cluster volume: the engine's limit (sizes live in the cluster map). */
export const ENGINE_VOLUME_BYTES = 2 ** 50;

export class ObjectStore {
  private readonly handles = new Map<number, Volume>();
  private readonly creating = new Map<number, Promise<Volume>>();
  /** Volume ids known deleted: never re-created. */
  private readonly deleted = new Set<number>();
  /** prefetchEntries' scratch (no allocation per entry). */
  private readonly target: OpTarget = { volumeId: 0, offsetBytes: 0, lengthBytes: 0 };

  constructor(readonly engine: LocalEngine) {}

  get objectSizeBytes(): number {
    return this.engine.layout.objectSizeBytes;
  }

  private static nameOf(volumeId: number): string {
    return `v${volumeId}`;
  }

  /** The engine volume if it exists (no creation). */
  existing(volumeId: number): Volume | null {
    const h = this.handles.get(volumeId);
    if (h) return h;
    const name = ObjectStore.nameOf(volumeId);
    if (!this.engine.list().some((v) => v.name === name)) return null;
    const opened = this.engine.open(name);
    this.handles.set(volumeId, opened);
    return opened;
  }

  private async ensure(volumeId: number): Promise<Volume | null> {
    if (this.deleted.has(volumeId)) return null;
    const h = this.existing(volumeId);
    if (h) return h;
    let p = this.creating.get(volumeId);
    if (!p) {
      p = this.engine.create(ObjectStore.nameOf(volumeId), ENGINE_VOLUME_BYTES).then(() => this.existing(volumeId) as Volume);
      p.finally(() => this.creating.delete(volumeId)).catch(() => {});
      this.creating.set(volumeId, p);
    }
    return p;
  }

  async write(volumeId: number, offsetBytes: number, data: Buffer): Promise<void> {
    const v = await this.ensure(volumeId);
    if (v) await v.write(offsetBytes, data, false);
  }

  /**
   * Hint: these raft entries will be applied soon (they are being appended to the
   * WAL). Their writes' pages are read ahead where the engine volume is open
   * (Volume.prefetchWrite); never opens or creates a volume, never throws.
   */
  prefetchEntries(entries: readonly Entry[]): void {
    const t = this.target;
    for (const e of entries) {
      if (e.type === 'conf' || !peekOpTarget(e.data, t)) continue;
      this.handles.get(t.volumeId)?.prefetchWrite?.(t.offsetBytes, t.lengthBytes);
    }
  }

  async zero(volumeId: number, offsetBytes: number, lengthBytes: number, mayTrim: boolean): Promise<void> {
    const v = mayTrim ? this.existing(volumeId) : await this.ensure(volumeId);
    if (v) await v.writeZeroes(offsetBytes, lengthBytes, false, mayTrim);
  }

  async read(volumeId: number, offsetBytes: number, lengthBytes: number, out: Buffer, outOffset: number): Promise<void> {
    const v = this.existing(volumeId);
    if (!v) {
      out.fill(0, outOffset, outOffset + lengthBytes);
      return;
    }
    await v.read(offsetBytes, lengthBytes, out, outOffset);
  }

  async blockStatus(volumeId: number, offsetBytes: number, lengthBytes: number): Promise<Extent[]> {
    const v = this.existing(volumeId);
    if (!v) return [{ lengthBytes, hole: true, zero: true }];
    return v.blockStatus(offsetBytes, lengthBytes);
  }

  /** Allocated object indexes of a volume that belong to pool/pg, ascending. */
  pgObjects(poolId: number, pgCount: number, pg: number, volumeId: number): number[] {
    const state = this.engine.volumeById(this.idOf(volumeId));
    if (!state) return [];
    const out: number[] = [];
    for (const obj of state.objects.keys()) if (objectToPg(poolId, volumeId, obj, pgCount) === pg) out.push(obj);
    return out.sort((a, b) => a - b);
  }

  /** Engine volume ids (cluster volume ids) present on this OSD. */
  volumeIds(): number[] {
    const ids: number[] = [];
    for (const v of this.engine.list()) {
      const m = /^v(\d+)$/.exec(v.name);
      if (m) ids.push(Number(m[1]));
    }
    return ids;
  }

  /** Frees every object of the PG in every volume (before installing a snapshot, or when the PG leaves this OSD). */
  async dropPg(poolId: number, pgCount: number, pg: number): Promise<void> {
    for (const volumeId of this.volumeIds()) {
      const state = this.engine.volumeById(this.idOf(volumeId));
      if (!state) continue;
      for (const obj of this.pgObjects(poolId, pgCount, pg, volumeId)) await this.engine.freeObject(state, obj);
    }
  }

  /** A cluster volume is gone for good: drop its data here. */
  async deleteVolume(volumeId: number): Promise<void> {
    this.deleted.add(volumeId);
    const pending = this.creating.get(volumeId);
    if (pending) await pending.catch(() => {});
    this.handles.delete(volumeId);
    const name = ObjectStore.nameOf(volumeId);
    if (this.engine.list().some((v) => v.name === name)) {
      try {
        await this.engine.delete(name);
      } catch (err) {
        if (!(err instanceof TesseraError && err.code === 'ERR_NOT_FOUND')) throw err;
      }
    }
  }

  private idOf(volumeId: number): number {
    const info = this.engine.list().find((v) => v.name === ObjectStore.nameOf(volumeId));
    return info ? info.id : -1;
  }
}
