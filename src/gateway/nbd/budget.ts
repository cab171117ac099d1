// A byte budget shared by every NBD connection of one server. Each connection
// already bounds what it buffers (write payloads, read replies); this bounds
// the sum, so many connections cannot together exhaust memory. A connection
// that finds the budget spent stops reading its socket and is woken when any
// connection returns bytes. Pure: no IO, no timers.
import { assert } from '../../stdx/assert.js';

export class SharedBudget {
  private usedBytes = 0;
  private readonly waiters = new Set<() => void>();

  constructor(readonly maxBytes: number) {
    assert(maxBytes > 0, 'budget must be positive');
  }

  get used(): number {
    return this.usedBytes;
  }

  exhausted(): boolean {
    return this.usedBytes >= this.maxBytes;
  }

  take(bytes: number): void {
    this.usedBytes += bytes;
  }

  give(bytes: number): void {
    const wasExhausted = this.exhausted();
    this.usedBytes -= bytes;
    assert(this.usedBytes >= 0, 'budget returned more than taken');
    if (wasExhausted && !this.exhausted() && this.waiters.size > 0) {
      const waiters = [...this.waiters];
      this.waiters.clear();
      for (const w of waiters) w();
    }
  }

  /** Call `wake` once the budget is no longer exhausted (at most once per registration). */
  waitForRoom(wake: () => void): void {
    this.waiters.add(wake);
  }

  forget(wake: () => void): void {
    this.waiters.delete(wake);
  }
}
