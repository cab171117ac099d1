// Runs every compiled test file (dist/**/*.test.js) with node's test runner.
// Usage: node scripts/run-tests.mjs [substring-filter ...]
// Unit tests run in parallel; conformance tests (real clients, real daemons) run
// with limited concurrency because the machine has 2 cores.
import { readdirSync, statSync } from 'node:fs';
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
const res = spawnSync(process.execPath, ['--test', '--test-concurrency=2', `--test-timeout=${TEST_TIMEOUT_MS}`, '--test-reporter=spec', ...files], {
  stdio: 'inherit',
  env: { ...process.env, UV_USE_IO_URING: process.env.UV_USE_IO_URING ?? '1' },
});
process.exit(res.status ?? 1);
