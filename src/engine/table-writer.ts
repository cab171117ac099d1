// Serialised, coalescing writer of chunk-table sectors. Several entries share a
// sector and every write sends the sector's current in-memory image; two writes
// of one sector in flight at once could land in either order and the older image
// would win. So each sector has at most one write in flight; updates arriving
// meanwhile are coalesced into one follow-up write, and each caller's promise
// resolves when a write that contains its update has completed in every copy.
import type { BlockDevice } from '../device/device.js';
import type { BufferPool } from '../stdx/buffer-pool.js';

interface Waiter {
  resolve: () => void;
  reject: (err: unknown) => void;
}

interface SectorState {
  next: Waiter[]; // waiting for a write that has not started yet
}

export class TableWriter {
  private readonly sectors = new Map<number, SectorState>();
  metadataWrites = 0;

  constructor(
    private readonly device: BlockDevice,
    private readonly pool: BufferPool,
    private readonly image: Buffer,
    private readonly copyOffsets: number[],
  ) {}

  /** Persist sector `sector` of the image (the caller has already updated the image). */
  write(sector: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const st = this.sectors.get(sector);
      if (st) {
        st.next.push({ resolve, reject });
        return;
      }
      const fresh: SectorState = { next: [] };
      this.sectors.set(sector, fresh);
      this.run(sector, fresh, [{ resolve, reject }]);
    });
  }

  private run(sector: number, st: SectorState, waiters: Waiter[]): void {
    void this.writeCopies(sector).then(
      () => {
        for (const w of waiters) w.resolve();
        this.continue(sector, st);
      },
      (err) => {
        for (const w of waiters) w.reject(err);
        this.continue(sector, st);
      },
    );
  }

  private continue(sector: number, st: SectorState): void {
    if (st.next.length === 0) {
      this.sectors.delete(sector);
      return;
    }
    const batch = st.next;
    st.next = [];
    this.run(sector, st, batch);
  }

  private async writeCopies(sector: number): Promise<void> {
    const buf = await this.pool.acquire(512);
    try {
      this.image.copy(buf, 0, sector * 512, sector * 512 + 512);
      this.metadataWrites += this.copyOffsets.length;
      await Promise.all(this.copyOffsets.map((base) => this.device.write(buf, base + sector * 512)));
    } finally {
      this.pool.release(buf);
    }
  }
}
