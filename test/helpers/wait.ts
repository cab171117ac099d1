// Polling wait for tests that watch real sockets and processes: resolves once
// cond() holds, fails the test with `what` after timeoutMs.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';

export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000, pollMs = 5): Promise<void> {
  const start = performance.now();
  while (!cond()) {
    if (performance.now() - start > timeoutMs) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
