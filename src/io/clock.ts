// Time as the core sees it: injected, so a simulation drives it from a seed and
// production from the event loop (src/io/node/clock.ts). Nothing under src/raft,
// src/osd, src/mon (decisions) or src/client calls Date.now() or setTimeout itself.
export interface TimerHandle {
  cancel(): void;
}

export interface Clock {
  /** Monotonic milliseconds (may be fractional). */
  nowMs(): number;
  /** Runs cb once after delayMs (>= 0). */
  setTimer(delayMs: number, cb: () => void): TimerHandle;
}
