// Which containers a rebuild covers, and in what order (SPEC ENG8, FlashRAID
// 4.3-4.4): only containers that exist (data-aware: a member failure that hits
// no container starts no work), the most endangered first (two lost chunks
// before one), and those that lost more than their parity apart (unrecoverable:
// reported, never "rebuilt" into garbage). Pure.

export interface ContainerHealth {
  containerId: number;
  /** Positions whose chunk is unavailable (failed or missing member, stale or unplaced chunk). */
  lost: number;
  parityCount: number;
  /** Bytes a rebuild writes for it: lost chunks x chunk data bytes. */
  bytes: number;
}

export interface RebuildPlan {
  /** Container ids to rebuild, most lost chunks first, then by id. */
  order: number[];
  unrecoverable: number[];
  bytes: number;
}

export function planRebuild(containers: readonly ContainerHealth[]): RebuildPlan {
  const todo = containers.filter((c) => c.lost > 0 && c.lost <= c.parityCount);
  todo.sort((a, b) => b.lost - a.lost || a.containerId - b.containerId);
  return {
    order: todo.map((c) => c.containerId),
    unrecoverable: containers.filter((c) => c.lost > c.parityCount).map((c) => c.containerId).sort((a, b) => a - b),
    bytes: todo.reduce((a, c) => a + c.bytes, 0),
  };
}
