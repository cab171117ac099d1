// Aggregate a V8 .cpuprofile (node --cpu-prof) by function: self time (the
// function itself was on top of the stack) and total time (it was anywhere on
// the stack, counted once per sample), plus self time per source file.
//
// Usage: node dist/bench/cpuprofile.js FILE.cpuprofile [--top N] [--md]
//
// Percentages are of the busy time: the profile's duration minus "(idle)",
// i.e. of the main thread's CPU as V8 saw it. libuv/io_uring worker threads and
// the kernel's share of syscalls made from other threads are not in a CPU
// profile (bench/nbd.ts reports per-thread CPU from /proc beside it).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface FnRow {
  name: string;
  where: string;
  selfMs: number;
  totalMs: number;
}

export interface ProfileSummary {
  durationMs: number;
  idleMs: number;
  busyMs: number;
  functions: FnRow[];
  files: Array<{ file: string; selfMs: number }>;
}

function shortUrl(url: string): string {
  if (!url) return '';
  let u = url.replace(/^file:\/\//, '');
  const i = u.indexOf('/dist/');
  if (i >= 0) u = u.slice(i + 1);
  const nm = u.indexOf('/node_modules/');
  if (nm >= 0) u = u.slice(nm + 1);
  return u;
}

export function summarize(p: CpuProfile): ProfileSummary {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) byId.set(n.id, n);
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const keyOf = new Map<number, string>();
  const rows = new Map<string, FnRow>();
  const fileSelf = new Map<string, number>();
  for (const n of p.nodes) {
    const cf = n.callFrame;
    const where = cf.url ? `${shortUrl(cf.url)}:${cf.lineNumber + 1}` : '';
    const name = cf.functionName || '(anonymous)';
    const key = `${name}\u0000${where}`;
    keyOf.set(n.id, key);
    if (!rows.has(key)) rows.set(key, { name, where, selfMs: 0, totalMs: 0 });
  }

  let idleMs = 0;
  let durationMs = 0;
  const n = p.samples.length;
  for (let i = 0; i < n; i++) {
    // time until the next sample belongs to this sample (as DevTools does)
    const dtUs = i + 1 < n ? p.timeDeltas[i + 1] : 0;
    const ms = Math.max(0, dtUs) / 1000;
    durationMs += ms;
    const id = p.samples[i];
    const node = byId.get(id);
    if (!node) continue;
    const row = rows.get(keyOf.get(id)!)!;
    row.selfMs += ms;
    if (node.callFrame.functionName === '(idle)') {
      idleMs += ms;
      continue;
    }
    const file = node.callFrame.url ? shortUrl(node.callFrame.url) : node.callFrame.functionName || '(native)';
    fileSelf.set(file, (fileSelf.get(file) ?? 0) + ms);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const k = keyOf.get(cur)!;
      if (seen.has(k)) continue;
      seen.add(k);
      rows.get(k)!.totalMs += ms;
    }
  }
  const functions = [...rows.values()].filter((r) => r.name !== '(idle)' && r.name !== '(root)' && (r.selfMs > 0 || r.totalMs > 0));
  functions.sort((a, b) => b.selfMs - a.selfMs);
  const files = [...fileSelf].map(([file, selfMs]) => ({ file, selfMs })).sort((a, b) => b.selfMs - a.selfMs);
  return { durationMs, idleMs, busyMs: durationMs - idleMs, functions, files };
}

export function loadProfile(file: string): CpuProfile {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
}

function pct(ms: number, of: number): string {
  return of > 0 ? `${((100 * ms) / of).toFixed(1)}%` : '-';
}

/** Text or markdown report of the top functions by self time. */
export function formatSummary(s: ProfileSummary, opts: { top?: number; md?: boolean; title?: string } = {}): string {
  const top = opts.top ?? 25;
  const out: string[] = [];
  const head = `${opts.title ? opts.title + ': ' : ''}profile ${(s.durationMs / 1000).toFixed(1)} s, main thread busy ${(s.busyMs / 1000).toFixed(1)} s (${pct(s.busyMs, s.durationMs)}), idle ${(s.idleMs / 1000).toFixed(1)} s`;
  const fnRows = s.functions.slice(0, top).map((r) => [pct(r.selfMs, s.busyMs), pct(r.totalMs, s.busyMs), r.name, r.where]);
  const fileRows = s.files.slice(0, 12).map((f) => [pct(f.selfMs, s.busyMs), f.file]);
  if (opts.md) {
    out.push(head, '', '| self | total | function | where |', '|---:|---:|---|---|');
    for (const r of fnRows) out.push(`| ${r[0]} | ${r[1]} | \`${r[2]}\` | ${r[3]} |`);
    out.push('', '| self | file |', '|---:|---|');
    for (const r of fileRows) out.push(`| ${r[0]} | ${r[1]} |`);
  } else {
    out.push(head, `${'self'.padStart(6)} ${'total'.padStart(6)}  function  (where)`);
    for (const r of fnRows) out.push(`${r[0].padStart(6)} ${r[1].padStart(6)}  ${r[2]}  ${r[3]}`);
    out.push('self time by file:');
    for (const r of fileRows) out.push(`${r[0].padStart(6)}  ${r[1]}`);
  }
  return out.join('\n');
}

function main(argv: string[]): void {
  const files: string[] = [];
  let top = 25;
  let md = false;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--top') top = Number(argv[++i]);
    else if (argv[i] === '--md') md = true;
    else files.push(argv[i]);
  }
  if (files.length === 0) {
    process.stderr.write('usage: node dist/bench/cpuprofile.js FILE.cpuprofile... [--top N] [--md]\n');
    process.exit(2);
  }
  for (const f of files) {
    process.stdout.write(formatSummary(summarize(loadProfile(f)), { top, md, title: path.basename(f) }) + '\n\n');
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main(process.argv.slice(2));
