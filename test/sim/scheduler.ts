// A deterministic scheduler for the cluster simulation: virtual time, a timer
// queue ordered by (time, sequence), and a Clock (src/io/clock.ts) on top of it.
// run() advances time event by event; between two events it lets every pending
// promise continuation run (a macrotask boundary drains the microtask queue), so
// everything the simulated OSDs do happens at a virtual instant and a seed fully
// determines the run. Nothing here touches real time except that boundary.
import type { Clock, TimerHandle } from '../../src/io/clock.js';

interface Timer {
  atMs: number;
  seq: number;
  cb: () => void;
  cancelled: boolean;
}

const drain = () => new Promise<void>((resolve) => setImmediate(resolve));

export class Scheduler {
  nowMs = 0;
  private seq = 0;
  private heap: Timer[] = [];
  eventsRun = 0;

  readonly clock: Clock = {
    nowMs: () => this.nowMs,
    setTimer: (delayMs, cb) => this.at(this.nowMs + Math.max(0, delayMs), cb),
  };

  at(atMs: number, cb: () => void): TimerHandle {
    const t: Timer = { atMs, seq: this.seq++, cb, cancelled: false };
    this.push(t);
    return { cancel: () => (t.cancelled = true) };
  }

  /** Defer to "the next turn": the same virtual instant, after what is queued now. */
  defer = (cb: () => void): void => {
    this.at(this.nowMs, cb);
  };

  /** Runs events until virtual time passes untilMs (or nothing is left). */
  async runUntil(untilMs: number, stop?: () => boolean): Promise<void> {
    await drain();
    while (this.heap.length > 0 && this.heap[0].atMs <= untilMs) {
      const t = this.pop();
      if (t.cancelled) continue;
      this.nowMs = t.atMs;
      this.eventsRun++;
      t.cb();
      await drain();
      if (stop?.()) return;
    }
    this.nowMs = Math.max(this.nowMs, untilMs);
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.at(this.nowMs + ms, resolve));
  }

  private push(t: Timer): void {
    const h = this.heap;
    h.push(t);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(h[p], h[i])) break;
      [h[p], h[i]] = [h[i], h[p]];
      i = p;
    }
  }

  private pop(): Timer {
    const h = this.heap;
    const top = h[0];
    const last = h.pop() as Timer;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && less(h[l], h[m])) m = l;
        if (r < h.length && less(h[r], h[m])) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i], h[m]];
        i = m;
      }
    }
    return top;
  }
}

function less(a: Timer, b: Timer): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
}
