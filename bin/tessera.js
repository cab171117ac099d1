#!/usr/bin/env -S node --initial-old-space-size=256
// The V8 flag: see src/main/node-flags.ts (fewer full GCs in the daemons).
// Entry point of the `tessera` command: loads the compiled CLI (built by `npm install` via `prepare`).
import('../dist/src/cli/main.js').then((m) => m.main(process.argv)).catch((err) => {
  console.error(err);
  process.exit(1);
});
