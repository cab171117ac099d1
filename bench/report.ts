// Tables for bench/nbd.ts: per-system results, Tessera/peer ratios with the
// targets, as aligned text or markdown; and the dated section that `--record`
// writes into docs/benchmarks.md (replacing a section of the same date).
import * as fs from 'node:fs';

export type Target = { kind: 'iops'; min: number } | { kind: 'lat'; max: number } | { kind: 'bw'; min: number };

export interface Workload {
  name: string;
  rw: 'randread' | 'randwrite' | 'read' | 'write';
  bs: string;
  qd: number;
  target: Target;
}

/** What fio measured for one system and workload (both benchmarks). */
export interface FioFigures {
  workload: string;
  error?: string;
  iops: number;
  /** decimal MB/s */
  mbps: number;
  /** completion latency (fio clat) */
  latMeanUs: number;
  latP99Us: number;
}

export interface Result extends FioFigures {
  system: string;
  serverCpuPct: number;
  cpuSecPerGiB: number;
  fioCpuPct: number;
  /** CPU used by everything else on the machine in the window (% of one CPU): noise indicator. */
  otherCpuPct: number;
}

export interface Row {
  workload: Workload;
  peer?: Result;
  tessera?: Result;
}

const f0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : '-');
const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '-');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '-');

export function targetText(t: Target): string {
  if (t.kind === 'iops') return `IOPS >= ${t.min.toFixed(1)}x`;
  if (t.kind === 'lat') return `mean lat <= ${t.max.toFixed(1)}x`;
  return `MB/s >= ${t.min.toFixed(1)}x`;
}

export function ratios(r: Row): { iops: number; mbps: number; lat: number; p99: number; cpu: number } | undefined {
  const p = r.peer;
  const t = r.tessera;
  if (!p || !t || p.error || t.error) return undefined;
  return {
    iops: t.iops / p.iops,
    mbps: t.mbps / p.mbps,
    lat: t.latMeanUs / p.latMeanUs,
    p99: t.latP99Us / p.latP99Us,
    cpu: t.cpuSecPerGiB / p.cpuSecPerGiB,
  };
}

export function verdict(r: Row): 'PASS' | 'MISS' | '-' {
  const q = ratios(r);
  if (!q) return '-';
  const t = r.workload.target;
  const ok = t.kind === 'iops' ? q.iops >= t.min : t.kind === 'lat' ? q.lat <= t.max : q.mbps >= t.min;
  return ok ? 'PASS' : 'MISS';
}

function table(hdr: string[], rows: string[][], md: boolean, rightFrom = 2): string {
  if (md) {
    const align = hdr.map((_, i) => (i >= rightFrom ? '---:' : '---'));
    return [`| ${hdr.join(' | ')} |`, `|${align.join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
  }
  const w = hdr.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]): string => r.map((c, i) => (i >= rightFrom ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  ').trimEnd();
  return [line(hdr), ...rows.map(line)].join('\n');
}

export function resultsTable(rows: Row[], peerName: string, md: boolean): string {
  const hdr = ['workload', 'system', 'IOPS', 'MB/s', 'lat mean us', 'lat p99 us', 'server CPU %', 'CPU s/GiB', 'fio CPU %', 'other CPU %'];
  const out: string[][] = [];
  for (const r of rows) {
    for (const res of [r.peer, r.tessera]) {
      if (!res) continue;
      const sys = res.system === 'tessera' ? 'tessera' : peerName;
      if (res.error) {
        out.push([r.workload.name, sys, 'ERROR', res.error.slice(0, 60), '', '', '', '', '', '']);
        continue;
      }
      out.push([
        r.workload.name,
        sys,
        f0(res.iops),
        f1(res.mbps),
        f1(res.latMeanUs),
        f1(res.latP99Us),
        f0(res.serverCpuPct),
        f2(res.cpuSecPerGiB),
        f0(res.fioCpuPct),
        f0(res.otherCpuPct),
      ]);
    }
  }
  return table(hdr, out, md);
}

export function ratioTable(rows: Row[], peerName: string, md: boolean): string {
  const hdr = ['workload', `target (tessera/${peerName})`, 'IOPS x', 'MB/s x', 'lat mean x', 'lat p99 x', 'CPU/GiB x', 'verdict'];
  const out: string[][] = [];
  for (const r of rows) {
    const q = ratios(r);
    out.push([
      r.workload.name,
      targetText(r.workload.target),
      q ? f2(q.iops) : '-',
      q ? f2(q.mbps) : '-',
      q ? f2(q.lat) : '-',
      q ? f2(q.p99) : '-',
      q ? f2(q.cpu) : '-',
      verdict(r),
    ]);
  }
  return table(hdr, out, md);
}

const BEGIN = (date: string): string => `<!-- bench:nbd ${date} begin -->`;
const END = (date: string): string => `<!-- bench:nbd ${date} end -->`;
const RUNS_HEADING = '## Recorded runs';

/** Insert or replace the section for `date` under "## Recorded runs" (appended at the end). */
export function recordSection(docPath: string, date: string, body: string): void {
  let doc = fs.existsSync(docPath) ? fs.readFileSync(docPath, 'utf8') : '# Benchmarks\n';
  const section = `${BEGIN(date)}\n${body.trim()}\n${END(date)}`;
  const b = doc.indexOf(BEGIN(date));
  const e = doc.indexOf(END(date));
  if (b >= 0 && e > b) {
    doc = doc.slice(0, b) + section + doc.slice(e + END(date).length);
  } else {
    if (!doc.includes(RUNS_HEADING)) doc = `${doc.trimEnd()}\n\n${RUNS_HEADING}\n`;
    doc = `${doc.trimEnd()}\n\n${section}\n`;
  }
  fs.writeFileSync(docPath, doc.endsWith('\n') ? doc : doc + '\n');
}

/** The fio workloads every NBD/RBD comparison runs (numjobs=1): names, rw, bs, iodepth, pass targets as ratios to the peer. */
export const WORKLOADS: readonly Workload[] = [
  { name: 'rr4k-qd1', rw: 'randread', bs: '4k', qd: 1, target: { kind: 'lat', max: 1.2 } },
  { name: 'rr4k-qd32', rw: 'randread', bs: '4k', qd: 32, target: { kind: 'iops', min: 1.0 } },
  { name: 'rw4k-qd1', rw: 'randwrite', bs: '4k', qd: 1, target: { kind: 'lat', max: 1.2 } },
  { name: 'rw4k-qd32', rw: 'randwrite', bs: '4k', qd: 32, target: { kind: 'iops', min: 1.0 } },
  { name: 'sr1m-qd8', rw: 'read', bs: '1M', qd: 8, target: { kind: 'bw', min: 0.9 } },
  { name: 'sw1m-qd8', rw: 'write', bs: '1M', qd: 8, target: { kind: 'bw', min: 0.9 } },
];
