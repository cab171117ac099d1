// IO statistics: counters and a log-linear latency histogram, cheap enough for
// the hot path (no allocation per IO). Snapshots are plain JSON so the API can
// ship them and `tessera iostat` can diff two snapshots into rates/percentiles.

/** Histogram buckets: 4 sub-buckets per power of two of microseconds, up to ~2^26 us (67 s). */
const SUB_BUCKETS = 4;
const MAX_EXP = 27;
export const HISTOGRAM_BUCKETS = MAX_EXP * SUB_BUCKETS;

export function latencyBucket(latencyUs: number): number {
  if (latencyUs < 1) return 0;
  const exp = Math.min(MAX_EXP - 1, Math.floor(Math.log2(latencyUs)));
  const base = 2 ** exp;
  const sub = Math.min(SUB_BUCKETS - 1, Math.floor(((latencyUs - base) / base) * SUB_BUCKETS));
  return exp * SUB_BUCKETS + sub;
}

/** Upper bound in microseconds of a bucket (used to report percentiles). */
export function bucketUpperUs(bucket: number): number {
  const exp = Math.floor(bucket / SUB_BUCKETS);
  const sub = bucket % SUB_BUCKETS;
  return 2 ** exp * (1 + (sub + 1) / SUB_BUCKETS);
}

export interface OpStatsSnapshot {
  ops: number;
  bytes: number;
  errors: number;
  latencyUsSum: number;
  histogram: number[]; // sparse-friendly: full array of HISTOGRAM_BUCKETS counts
}

export class OpStats {
  ops = 0;
  bytes = 0;
  errors = 0;
  latencyUsSum = 0;
  readonly histogram = new Float64Array(HISTOGRAM_BUCKETS);

  record(bytes: number, latencyUs: number): void {
    this.ops++;
    this.bytes += bytes;
    this.latencyUsSum += latencyUs;
    this.histogram[latencyBucket(latencyUs)]++;
  }

  recordError(): void {
    this.errors++;
  }

  snapshot(): OpStatsSnapshot {
    return {
      ops: this.ops,
      bytes: this.bytes,
      errors: this.errors,
      latencyUsSum: this.latencyUsSum,
      histogram: Array.from(this.histogram),
    };
  }
}

export interface IoStatsSnapshot {
  read: OpStatsSnapshot;
  write: OpStatsSnapshot;
  flush: OpStatsSnapshot;
  discard: OpStatsSnapshot;
  inFlight: number;
}

/** Per device or per volume: one OpStats per kind of operation, plus the queue depth now. */
export class IoStats {
  readonly read = new OpStats();
  readonly write = new OpStats();
  readonly flush = new OpStats();
  readonly discard = new OpStats();
  inFlight = 0;

  snapshot(): IoStatsSnapshot {
    return {
      read: this.read.snapshot(),
      write: this.write.snapshot(),
      flush: this.flush.snapshot(),
      discard: this.discard.snapshot(),
      inFlight: this.inFlight,
    };
  }
}

/** Difference of two snapshots of the same counters (later minus earlier). */
export function diffOpStats(later: OpStatsSnapshot, earlier: OpStatsSnapshot | undefined): OpStatsSnapshot {
  if (!earlier) return later;
  return {
    ops: later.ops - earlier.ops,
    bytes: later.bytes - earlier.bytes,
    errors: later.errors - earlier.errors,
    latencyUsSum: later.latencyUsSum - earlier.latencyUsSum,
    histogram: later.histogram.map((v, i) => v - (earlier.histogram[i] ?? 0)),
  };
}

/** Latency percentile (0..1) in microseconds from a histogram; 0 when empty. */
export function percentileUs(histogram: readonly number[], p: number): number {
  let total = 0;
  for (const c of histogram) total += c;
  if (total === 0) return 0;
  const target = Math.ceil(total * p);
  let seen = 0;
  for (let i = 0; i < histogram.length; i++) {
    seen += histogram[i];
    if (seen >= target) return bucketUpperUs(i);
  }
  return bucketUpperUs(histogram.length - 1);
}
