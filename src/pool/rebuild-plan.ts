// Which containers a rebuild covers, and in what order (SPEC ENG8, FlashRAID
// 4.3-4.4): only containers that exist (data-aware: a member failure that hits
// no container starts no work), the most endangered first (two lost chunks
// before one), and those that lost more than their parity apart (unrecoverable:
// reported, never "rebuilt" into garbage). Chunks on a member being removed
// are moved the same way, after every container that lost redundancy. Pure.

export interface ContainerHealth {
  containerId: number;
  /** Positions whose chunk is unavailable (failed or missing member, stale or unplaced chunk). */
  lost: number;
  parityCount: number;
  /** Positions still readable that must move (their member is being removed). Default 0. */
  moving?: number;
  /** Bytes a rebuild writes for it: (lost + moving) chunks x chunk data bytes. */
  bytes: number;
}

export interface RebuildPlan {
  /** Container ids to rebuild, most lost chunks first, then by id. */
  order: number[];
  unrecoverable: number[];
  bytes: number;
}

export function planRebuild(containers: readonly ContainerHealth[]): RebuildPlan {
  // Moving chunks (a member being drained) come after every lost one: they are still redundant.
  const todo = containers.filter((c) => c.lost + (c.moving ?? 0) > 0 && c.lost <= c.parityCount);
  todo.sort((a, b) => b.lost - a.lost || (b.moving ?? 0) - (a.moving ?? 0) || a.containerId - b.containerId);
  return {
    order: todo.map((c) => c.containerId),
    unrecoverable: containers.filter((c) => c.lost > c.parityCount).map((c) => c.containerId).sort((a, b) => a - b),
    bytes: todo.reduce((a, c) => a + c.bytes, 0),
  };
}
