// The production Clock: performance.now() and setTimeout (timers unref'd so they
// never keep a process alive on their own).
import { performance } from 'node:perf_hooks';
import type { Clock, TimerHandle } from '../clock.js';

export const nodeClock: Clock = {
  nowMs: () => performance.now(),
  setTimer(delayMs: number, cb: () => void): TimerHandle {
    const t = setTimeout(cb, Math.max(0, delayMs));
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};

/**
 * Like nodeClock, but its timers keep the process alive: for a command-line
 * client whose only pending work may be a retry backoff (with unref'd timers
 * the process would end mid-command, silently, with status 0).
 */
export const refClock: Clock = {
  nowMs: () => performance.now(),
  setTimer(delayMs: number, cb: () => void): TimerHandle {
    const t = setTimeout(cb, Math.max(0, delayMs));
    return { cancel: () => clearTimeout(t) };
  },
};
