// Failure detection (SPEC CLU2, CLU5), pure: which OSDs the active monitor
// marks down (no heartbeat for osdDownAfterMs) and which it marks out (down for
// osdOutAfterMs, after which their PGs are re-placed and re-replicated).
// Time comes in as nowMs from the monitor's injected Clock; nothing here reads
// a clock or sets a timer, so tests drive it with plain numbers.
//
// Invariants:
// - A detector belongs to one term of one active monitor and is created when
//   it is elected (activeSinceMs). Heartbeats seen by an earlier monitor are
//   unknown to it, so every OSD gets a full osdDownAfterMs from activeSinceMs
//   before it can be marked down; likewise an OSD already down at election is
//   counted as down from the moment this detector first sees it, never earlier
//   (both err towards keeping an OSD, never towards moving data early).
// - Only up OSDs are marked down, only down OSDs that are in and not out by an
//   operator are marked out.
// - State is bounded by the OSDs of the map: ids no longer in it are dropped.
import type { ClusterMap } from './map-types.js';

export const OSD_DOWN_AFTER_MS_DEFAULT = 6000;
export const OSD_OUT_AFTER_MS_DEFAULT = 600_000;

export interface FailureTimeouts {
  /** No heartbeat (boot or report) for this long: the OSD is marked down. */
  osdDownAfterMs: number;
  /** Down for this long: the OSD is marked out and its PGs move. */
  osdOutAfterMs: number;
}

export interface FailureDecision {
  /** OSDs to mark down. */
  down: number[];
  /** OSDs to mark out. */
  out: number[];
}

export class FailureDetector {
  private readonly lastHeartbeatMs = new Map<number, number>();
  private readonly downSinceMs = new Map<number, number>();

  constructor(
    readonly timeouts: FailureTimeouts,
    /** When this monitor became active (its clock). */
    readonly activeSinceMs: number,
  ) {
    if (!(timeouts.osdDownAfterMs > 0) || !(timeouts.osdOutAfterMs > 0)) throw new RangeError('failure timeouts must be positive');
  }

  /** The OSD was heard from (boot or report): it stays up. */
  heartbeat(osdId: number, nowMs: number): void {
    this.lastHeartbeatMs.set(osdId, nowMs);
    this.downSinceMs.delete(osdId);
  }

  /** Restarts the out grace of a down OSD (an operator put it back in). */
  restartOutGrace(osdId: number, nowMs: number): void {
    if (this.downSinceMs.has(osdId)) this.downSinceMs.set(osdId, nowMs);
  }

  /** Last heartbeat of an OSD in this term, if any. */
  lastHeartbeat(osdId: number): number | undefined {
    return this.lastHeartbeatMs.get(osdId);
  }

  /**
   * What to mark at nowMs. Records the down-since time of OSDs it sees down (or
   * decides to mark down), so call it once per tick with the current map.
   */
  decide(map: ClusterMap, nowMs: number): FailureDecision {
    const down: number[] = [];
    const out: number[] = [];
    const present = new Set<number>();
    for (const o of map.osds) {
      present.add(o.id);
      if (o.up) {
        const last = Math.max(this.lastHeartbeatMs.get(o.id) ?? this.activeSinceMs, this.activeSinceMs);
        if (nowMs - last >= this.timeouts.osdDownAfterMs) {
          down.push(o.id);
          this.downSinceMs.set(o.id, nowMs);
        } else {
          this.downSinceMs.delete(o.id);
        }
        continue;
      }
      let since = this.downSinceMs.get(o.id);
      if (since === undefined) {
        since = nowMs;
        this.downSinceMs.set(o.id, since);
      }
      if (o.in && o.outByOperator !== true && nowMs - since >= this.timeouts.osdOutAfterMs) out.push(o.id);
    }
    for (const id of this.lastHeartbeatMs.keys()) if (!present.has(id)) this.lastHeartbeatMs.delete(id);
    for (const id of this.downSinceMs.keys()) if (!present.has(id)) this.downSinceMs.delete(id);
    return { down, out };
  }
}
