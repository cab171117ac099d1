// Runs every compiled test file (dist/**/*.test.js) with node's test runner.
// Usage: node scripts/run-tests.mjs [substring-filter ...]
// Unit tests run in parallel; conformance tests (real clients, real daemons) run
// with limited concurrency because the machine has 2 cores.
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

function walk(dir, out) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const filters = process.argv.slice(2);
const files = walk('dist', []).filter((f) => filters.length === 0 || filters.some((s) => f.includes(s))).sort();
if (files.length === 0) {
  console.error('no test files found (did the build run?)');
  process.exit(1);
}
// A hung test fails after TEST_TIMEOUT_MS instead of holding CI until its limit.
const TEST_TIMEOUT_MS = Number(process.env.TESSERA_TEST_TIMEOUT_MS ?? 600_000);
// Besides the spec output, a short entry per failure (scripts/failure-summary-reporter.mjs)
// is printed last, so the tail of a CI log names every failure and why.
const summaryDir = mkdtempSync(join(tmpdir(), 'tessera-test-summary-'));
const summaryPath = join(summaryDir, 'failures.txt');
const reporters = ['--test-reporter=spec', '--test-reporter-destination=stdout', `--test-reporter=${new URL('./failure-summary-reporter.mjs', import.meta.url).href}`, `--test-reporter-destination=${summaryPath}`];
const res = spawnSync(process.execPath, ['--test', '--test-concurrency=2', `--test-timeout=${TEST_TIMEOUT_MS}`, ...reporters, ...files], {
  stdio: 'inherit',
  env: { ...process.env, UV_USE_IO_URING: process.env.UV_USE_IO_URING ?? '1' },
});
let summary = '';
try {
  summary = readFileSync(summaryPath, 'utf8');
} catch {
  // no failures were reported (or the runner died before writing): nothing to add
}
rmSync(summaryDir, { recursive: true, force: true });
if (summary.trim() !== '') process.stdout.write(summary);
process.exit(res.status ?? 1);
