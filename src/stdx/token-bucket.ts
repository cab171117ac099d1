// A token bucket for IO limits (DEV4 partitions, rebuild pacing): `ratePerSec`
// tokens accrue up to `burst`; take(n) spends n tokens and says how long the
// caller must wait first. Taking more than is there runs into debt, so callers
// are served in the order they asked and a request larger than the burst still
// goes through (at the rate). Pure: the caller passes the time.
import { assert } from './assert.js';

export class TokenBucket {
  private tokens: number;
  private lastMs: number | null = null;

  constructor(
    readonly ratePerSec: number,
    readonly burst: number,
  ) {
    assert(ratePerSec > 0 && burst > 0, 'token bucket rate and burst must be positive');
    this.tokens = burst;
  }

  /** Spends n tokens at nowMs; returns the milliseconds to wait before acting (0: now). */
  take(n: number, nowMs: number): number {
    if (this.lastMs !== null) this.tokens = Math.min(this.burst, this.tokens + ((nowMs - this.lastMs) * this.ratePerSec) / 1000);
    this.lastMs = nowMs;
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.ratePerSec;
  }
}
