// `tessera iostat`: live per-device and per-volume IO rates (SPEC DEV3), in the
// manner of `iostat -x`. Each tick fetches GET /v1/stats and reports the
// difference from the previous snapshot: r/s, w/s, rMB/s, wMB/s, read/write
// latency percentiles (p50, p99), the queue depth now, and errors.
//
// Invariants: rates divide by the interval measured by the daemon's clock
// (snapshot atMs), not by how long the HTTP round trip took; a counter that went
// backwards (daemon restarted) resets the baseline to zero instead of printing
// negative rates; MB means 2^20 bytes, as in sysstat.
// computeIostat/formatIostat are pure; runIostat does the polling.
import { diffOpStats, percentileUs, type IoStatsSnapshot, type OpStatsSnapshot } from '../stdx/stats.js';
import type { StatsSnapshot } from '../volume/types.js';
import type { ApiClient } from '../api/client.js';
import { formatTable, type Column } from './format.js';
import type { CliIo } from './io.js';

const BYTES_PER_MB = 2 ** 20;
export const IOSTAT_INTERVAL_S_MIN = 0.1;

export interface IostatRow {
  kind: 'device' | 'volume';
  name: string;
  readOpsPerS: number;
  writeOpsPerS: number;
  readMBPerS: number;
  writeMBPerS: number;
  readP50Us: number;
  readP99Us: number;
  writeP50Us: number;
  writeP99Us: number;
  /** Requests in flight at the time of the later snapshot (queue depth). */
  inFlight: number;
  /** Failed requests (read, write, flush, discard) during the interval. */
  errors: number;
}

export interface IostatReport {
  atMs: number;
  intervalS: number;
  devices: IostatRow[];
  volumes: IostatRow[];
}

/** Rates and percentiles between two snapshots (later minus earlier). */
export function computeIostat(earlier: StatsSnapshot, later: StatsSnapshot): IostatReport {
  // Guard against a zero or negative interval (same snapshot twice, clock step).
  const intervalS = Math.max(later.atMs - earlier.atMs, 1) / 1000;
  const rows = (kind: IostatRow['kind'], now: StatsSnapshot['devices'], before: StatsSnapshot['devices']): IostatRow[] => {
    const prevByName = new Map(before.map((e) => [e.name, e.stats]));
    return now.map((e) => row(kind, e.name, e.stats, prevByName.get(e.name), intervalS));
  };
  return {
    atMs: later.atMs,
    intervalS,
    devices: rows('device', later.devices, earlier.devices),
    volumes: rows('volume', later.volumes, earlier.volumes),
  };
}

function row(kind: IostatRow['kind'], name: string, now: IoStatsSnapshot, before: IoStatsSnapshot | undefined, intervalS: number): IostatRow {
  const base = before && !wentBackwards(now, before) ? before : undefined;
  const d = (op: 'read' | 'write' | 'flush' | 'discard'): OpStatsSnapshot => diffOpStats(now[op], base?.[op]);
  const read = d('read');
  const write = d('write');
  return {
    kind,
    name,
    readOpsPerS: read.ops / intervalS,
    writeOpsPerS: write.ops / intervalS,
    readMBPerS: read.bytes / BYTES_PER_MB / intervalS,
    writeMBPerS: write.bytes / BYTES_PER_MB / intervalS,
    readP50Us: percentileUs(read.histogram, 0.5),
    readP99Us: percentileUs(read.histogram, 0.99),
    writeP50Us: percentileUs(write.histogram, 0.5),
    writeP99Us: percentileUs(write.histogram, 0.99),
    inFlight: now.inFlight,
    errors: read.errors + write.errors + d('flush').errors + d('discard').errors,
  };
}

function wentBackwards(now: IoStatsSnapshot, before: IoStatsSnapshot): boolean {
  return (['read', 'write', 'flush', 'discard'] as const).some((op) => now[op].ops < before[op].ops || now[op].errors < before[op].errors);
}

/** "0", "87us", "1.25ms", "2.10s": latency in the largest unit that keeps it readable. */
export function formatLatencyUs(us: number): string {
  if (us <= 0) return '0';
  if (us < 1000) return `${Math.round(us)}us`;
  if (us < 1_000_000) return `${(us / 1000).toFixed(us < 10_000 ? 2 : 1)}ms`;
  return `${(us / 1_000_000).toFixed(2)}s`;
}

function rate(v: number, digits: number): string {
  return v.toFixed(digits);
}

const STAT_COLUMNS: Column[] = ['r/s', 'w/s', 'rMB/s', 'wMB/s', 'r_p50', 'r_p99', 'w_p50', 'w_p99', 'inflight', 'errors'].map((header) => ({ header, align: 'right' as const }));

/** One tick as text: a timestamp line, then a DEVICE table and a VOLUME table (each omitted when empty). */
export function formatIostat(report: IostatReport): string {
  const cells = (r: IostatRow): string[] => [
    r.name,
    rate(r.readOpsPerS, 1),
    rate(r.writeOpsPerS, 1),
    rate(r.readMBPerS, 2),
    rate(r.writeMBPerS, 2),
    formatLatencyUs(r.readP50Us),
    formatLatencyUs(r.readP99Us),
    formatLatencyUs(r.writeP50Us),
    formatLatencyUs(r.writeP99Us),
    String(r.inFlight),
    String(r.errors),
  ];
  let text = `${new Date(report.atMs).toISOString()}  interval ${report.intervalS.toFixed(2)} s\n`;
  // One table for both sections, the VOLUME header being a row of it, so the
  // columns of devices and volumes line up.
  const sections = (
    [
      ['DEVICE', report.devices],
      ['VOLUME', report.volumes],
    ] as const
  ).filter(([, rows]) => rows.length > 0);
  if (sections.length === 0) return text + '(no devices or volumes)\n\n';
  const rows: string[][] = [];
  sections.forEach(([title, sectionRows], i) => {
    if (i > 0) rows.push([title, ...STAT_COLUMNS.map((c) => c.header)]);
    rows.push(...sectionRows.map(cells));
  });
  text += formatTable([{ header: sections[0][0] }, ...STAT_COLUMNS], rows);
  return text + '\n';
}

export interface IostatOptions {
  intervalS: number;
  /** Number of reports; undefined = until interrupted. */
  count: number | undefined;
  json: boolean;
}

/**
 * Poll and print. The first report covers the first interval (not the time
 * since the daemon started, unlike sysstat's first report). Ticks follow a
 * fixed schedule so that slow round trips do not make the period drift.
 */
export async function runIostat(client: ApiClient, io: CliIo, opts: IostatOptions): Promise<void> {
  const intervalMs = opts.intervalS * 1000;
  let prev = await client.stats();
  const startMs = io.nowMs();
  for (let tick = 1; opts.count === undefined || tick <= opts.count; tick++) {
    const waitMs = startMs + tick * intervalMs - io.nowMs();
    if (waitMs > 0) await io.sleepMs(waitMs);
    const cur = await client.stats();
    const report = computeIostat(prev, cur);
    io.out(opts.json ? JSON.stringify(report) + '\n' : formatIostat(report));
    prev = cur;
  }
}
