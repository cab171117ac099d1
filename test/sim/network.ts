// The simulated network between OSDs and the client: every delivery is a
// scheduler event with a seeded random delay (so messages reorder), a seeded
// drop rate, and partitions (a set of nodes cut off from everyone else).
// Node ids: OSD ids are positive; the client is CLIENT_NODE. Messages carry
// objects (osd/proto.ts types), not bytes: the byte codec has its own tests.
import type { Prng } from '../../src/stdx/prng.js';
import type { Scheduler } from './scheduler.js';

export const CLIENT_NODE = 0;

export interface NetFaults {
  dropRate: number;
  delayMsMin: number;
  delayMsMax: number;
}

export class SimNetwork {
  readonly faults: NetFaults = { dropRate: 0, delayMsMin: 0.05, delayMsMax: 1 };
  private readonly isolated = new Set<number>();
  private readonly peerIsolated = new Set<number>();
  /** Nodes that are down (crashed): nothing reaches them, nothing leaves them. */
  private readonly down = new Set<number>();
  delivered = 0;
  dropped = 0;
  /** Per-link time of the last FIFO delivery: later sends never overtake earlier ones. */
  private readonly fifoAtMs = new Map<string, number>();

  constructor(
    private readonly sched: Scheduler,
    private readonly prng: Prng,
  ) {}

  isolate(node: number): void {
    this.isolated.add(node);
  }
  /** Cuts node off from the other OSDs only: the client still reaches it (a deposed leader clients can talk to). */
  isolateFromPeers(node: number): void {
    this.peerIsolated.add(node);
  }
  heal(): void {
    this.isolated.clear();
    this.peerIsolated.clear();
  }
  setDown(node: number, down: boolean): void {
    if (down) this.down.add(node);
    else this.down.delete(node);
  }
  isDown(node: number): boolean {
    return this.down.has(node);
  }

  private blocked(from: number, to: number): boolean {
    if (this.down.has(from) || this.down.has(to)) return true;
    if (from !== CLIENT_NODE && to !== CLIENT_NODE && this.peerIsolated.has(from) !== this.peerIsolated.has(to)) return true;
    return this.isolated.has(from) !== this.isolated.has(to);
  }

  /**
   * Like send(), but in order per link (a TCP connection: client → OSD requests
   * and their responses). A message may still be lost; later ones still come.
   */
  sendFifo(from: number, to: number, cb: () => void): void {
    if (this.blocked(from, to) || this.prng.chance(this.faults.dropRate)) {
      this.dropped++;
      return;
    }
    const { delayMsMin, delayMsMax } = this.faults;
    const key = `${from}>${to}`;
    const atMs = Math.max(this.fifoAtMs.get(key) ?? 0, this.sched.nowMs + delayMsMin + this.prng.float() * (delayMsMax - delayMsMin));
    this.fifoAtMs.set(key, atMs);
    this.sched.at(atMs, () => {
      if (this.blocked(from, to)) {
        this.dropped++;
        return;
      }
      this.delivered++;
      cb();
    });
  }

  /** Delivers cb at the receiver after a random delay, unless dropped or blocked (then never). */
  send(from: number, to: number, cb: () => void): void {
    if (this.blocked(from, to) || this.prng.chance(this.faults.dropRate)) {
      this.dropped++;
      return;
    }
    const { delayMsMin, delayMsMax } = this.faults;
    const delay = delayMsMin + this.prng.float() * (delayMsMax - delayMsMin);
    this.sched.at(this.sched.nowMs + delay, () => {
      // A node that went down or got cut off while the message flew never sees it.
      if (this.blocked(from, to)) {
        this.dropped++;
        return;
      }
      this.delivered++;
      cb();
    });
  }
}
