// Thin-provisioning capacity alarms (SPEC ENG12, issue 4 part 7): a pool's
// used capacity (chunks in use over the chunks of its in-service members) is
// compared with two thresholds; crossing one raises the alarm, falling back
// below it (less a hysteresis margin, so a pool hovering at a threshold does
// not flap) clears it. Pure: the owner feeds fractions and logs the changes.
import { TesseraError } from '../stdx/errors.js';

export type AlarmLevel = 'ok' | 'warning' | 'critical';

export interface CapacityThresholds {
  /** Fraction of capacity used that raises a warning (default 0.8). */
  warning: number;
  /** Fraction that raises a critical alarm (default 0.95). */
  critical: number;
}

export const DEFAULT_THRESHOLDS: CapacityThresholds = { warning: 0.8, critical: 0.95 };
/** An alarm clears only this far below its threshold. */
export const HYSTERESIS = 0.02;

export function checkThresholds(t: CapacityThresholds): void {
  if (!(t.warning > 0 && t.warning < t.critical && t.critical <= 1)) {
    throw new TesseraError('ERR_INVALID', `capacity thresholds must satisfy 0 < warning < critical <= 1 (got warning ${t.warning}, critical ${t.critical})`);
  }
}

const RANK: Record<AlarmLevel, number> = { ok: 0, warning: 1, critical: 2 };

export class CapacityWatch {
  private current: AlarmLevel = 'ok';

  constructor(
    private t: CapacityThresholds,
    private readonly onChange: (level: AlarmLevel, usedFraction: number, was: AlarmLevel) => void,
  ) {
    checkThresholds(t);
  }

  get level(): AlarmLevel {
    return this.current;
  }

  get thresholds(): CapacityThresholds {
    return { ...this.t };
  }

  /** New thresholds (operator change); the next update() applies them. */
  setThresholds(t: CapacityThresholds): void {
    checkThresholds(t);
    this.t = { ...t };
  }

  /** Feeds the used fraction; calls onChange when the level changes. */
  update(usedFraction: number): AlarmLevel {
    const raw: AlarmLevel = usedFraction >= this.t.critical ? 'critical' : usedFraction >= this.t.warning ? 'warning' : 'ok';
    let next = raw;
    // Going down needs the margin below the threshold of the current level.
    if (RANK[raw] < RANK[this.current]) {
      const threshold = this.current === 'critical' ? this.t.critical : this.t.warning;
      if (usedFraction > threshold - HYSTERESIS) next = this.current;
    }
    if (next !== this.current) {
      const was = this.current;
      this.current = next;
      this.onChange(next, usedFraction, was);
    }
    return this.current;
  }
}
