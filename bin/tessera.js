#!/usr/bin/env node
// Entry point of the `tessera` command: loads the compiled CLI (built by `npm install` via `prepare`).
import('../dist/src/cli/main.js').then((m) => m.main(process.argv)).catch((err) => {
  console.error(err);
  process.exit(1);
});
