// The Node/V8 flags every long-running Tessera process should run with, and the
// check that tells an operator when a daemon was started without them.
//
// Why a flag at all: with its default limits V8 starts a full GC whenever the old
// generation's headroom falls under the young generation's size. A daemon whose
// live heap is small but which keeps thousands of requests and buffers in flight
// promotes them and then marks and compacts back to back: an OSD ran ~18 full GCs
// per second at 1 MiB writes and spent ~30 % of its CPU on them (session 10), and
// a cluster gateway started without the flag spent ~30 % of its CPU on full GCs at
// 4 KiB QD32 and served 4 KiB random reads at QD32 ~30 % slower (session 12). A
// 256 MB initial old-space limit removes that; the heap still grows only as the
// live data does.
//
// How it reaches the processes: bin/tessera.js's shebang carries it (so `npx
// tessera ...` and `./bin/tessera.js ...` have it), `tessera up` passes it to the
// monitor and OSD processes it spawns, and the benchmarks start Tessera with it.
// V8 reads heap limits when the isolate is created, so the flag cannot be set from
// inside the process (v8.setFlagsFromString measured no effect): a daemon started
// as `node bin/tessera.js ...` without it only gets a warning (warnMissingNodeArgs).

/** V8 flags for the daemons; bin/tessera.js's shebang has the same. */
export const DAEMON_NODE_ARGS: readonly string[] = ['--initial-old-space-size=256'];

/** The DAEMON_NODE_ARGS whose flag (the part before '=') is not in execArgv. */
export function missingDaemonNodeArgs(execArgv: readonly string[] = process.execArgv): string[] {
  const given = new Set(execArgv.map((a) => a.split('=')[0].replace(/_/g, '-')));
  return DAEMON_NODE_ARGS.filter((a) => !given.has(a.split('=')[0]));
}

/** Logs one warning when this process runs without DAEMON_NODE_ARGS (see the header). */
export function warnMissingNodeArgs(log: { warn(msg: string): void }, execArgv: readonly string[] = process.execArgv): void {
  const missing = missingDaemonNodeArgs(execArgv);
  if (missing.length === 0) return;
  log.warn(
    `Node runs without ${missing.join(' ')}: expect much more garbage-collection CPU under load (~30 % of a gateway's CPU measured). ` +
      `Start Tessera as \`npx tessera ...\` or \`bin/tessera.js ...\` (its shebang sets it), or as \`node ${DAEMON_NODE_ARGS.join(' ')} bin/tessera.js ...\``,
  );
}
