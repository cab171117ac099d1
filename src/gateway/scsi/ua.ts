// Unit attention conditions per I_T nexus (SAM-5 5.14, SPC-4 "unit attention
// conditions"): a FIFO of (ASC, ASCQ) per nexus. A command other than INQUIRY,
// REPORT LUNS and REQUEST SENSE is answered CHECK CONDITION / UNIT ATTENTION with
// the oldest one, which is then cleared; REQUEST SENSE returns it as its data and
// clears it; INQUIRY and REPORT LUNS neither report nor clear.
//
// Invariants:
// - At most MAX_PENDING per nexus and no duplicates (queueing the same ASC/ASCQ twice
//   keeps the first). Overflow collapses the queue into one POWER ON, RESET, OR BUS
//   DEVICE RESET OCCURRED: after a reset the initiator re-reads everything (capacity,
//   mode pages, reservations), which covers whatever was dropped. With deduplication
//   and the handful of conditions this LU raises, overflow is a corner case.
// - Capacity: each nexus remembers the size it last saw; any command arriving after
//   sizeBytes() changed queues CAPACITY DATA HAS CHANGED (SBC-4 4.x) first.
// - A nexus is known from its first command (or from a targeted UA, e.g. a PR effect);
//   raiseAll() reaches known nexuses only. POWER ON/RESET on first contact is optional.
import { ASC_CAPACITY_DATA_CHANGED, ASC_POWER_ON_RESET } from './sense.js';

export const MAX_PENDING_UA = 16;

interface NexusAttention {
  seenSizeBytes: number;
  pending: number[];
}

export class UnitAttentions {
  private readonly nexuses = new Map<string, NexusAttention>();

  constructor(
    private readonly sizeBytes: () => number,
    private readonly powerOnUa: boolean,
  ) {}

  /**
   * Called for every command with the current size. Returns the ASC/ASCQ to report now
   * (and clears it) when `reportable`, else -1 (nothing to report, or a command that
   * does not report UAs).
   */
  onCommand(nexusKey: string, sizeBytes: number, reportable: boolean): number {
    const st = this.state(nexusKey, sizeBytes);
    if (st.seenSizeBytes !== sizeBytes) {
      st.seenSizeBytes = sizeBytes;
      this.push(st, ASC_CAPACITY_DATA_CHANGED);
    }
    if (!reportable || st.pending.length === 0) return -1;
    return st.pending.shift()!;
  }

  /** Oldest pending UA of the nexus, cleared (REQUEST SENSE), or -1. */
  take(nexusKey: string): number {
    const st = this.nexuses.get(nexusKey);
    if (st === undefined || st.pending.length === 0) return -1;
    return st.pending.shift()!;
  }

  /** Queues a UA for one nexus, learning it if new (PR effects name nexuses we may not have seen). */
  raiseFor(nexusKey: string, ascq: number): void {
    this.push(this.state(nexusKey, this.sizeBytes()), ascq);
  }

  /** Queues a UA for every known nexus except `except`. */
  raiseAll(ascq: number, except?: string): void {
    for (const [key, st] of this.nexuses) if (key !== except) this.push(st, ascq);
  }

  /** Drops a pending UA of one kind (REPORT LUNS clears REPORTED LUNS DATA HAS CHANGED, SPC-4 6.33). */
  clear(nexusKey: string, ascq: number): void {
    const st = this.nexuses.get(nexusKey);
    if (st === undefined) return;
    const i = st.pending.indexOf(ascq);
    if (i >= 0) st.pending.splice(i, 1);
  }

  forget(nexusKey: string): void {
    this.nexuses.delete(nexusKey);
  }

  /** Pending UAs of a nexus, oldest first (tests). */
  pendingOf(nexusKey: string): readonly number[] {
    return this.nexuses.get(nexusKey)?.pending ?? [];
  }

  private state(nexusKey: string, sizeBytes: number): NexusAttention {
    let st = this.nexuses.get(nexusKey);
    if (st === undefined) {
      st = { seenSizeBytes: sizeBytes, pending: this.powerOnUa ? [ASC_POWER_ON_RESET] : [] };
      this.nexuses.set(nexusKey, st);
    }
    return st;
  }

  private push(st: NexusAttention, ascq: number): void {
    if (st.pending.includes(ascq)) return;
    if (st.pending.length >= MAX_PENDING_UA) {
      st.pending.length = 0;
      st.pending.push(ASC_POWER_ON_RESET);
      return;
    }
    st.pending.push(ascq);
  }
}
