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
