// The `tessera` command (SPEC MGT1): `up` runs the daemon; every other command
// is a client of the daemon's management API on its unix socket. Built on
// commander; every command has --help with examples, listings have --json.
// Exit statuses: see cli/exit.ts (0 ok, 1 operational, 2 usage, 3 unreachable).
//
// runCli() is the testable core (injected IO, returns the status); main() binds
// it to the process and sets process.exitCode (never process.exit, so stdout
// piped to another program is flushed before the process ends).
import { Command, CommanderError } from 'commander';
import type { UpDeps } from '../main/up.js';
import { TESSERA_VERSION } from '../main/version.js';
import { classifyError, EXIT_OK, EXIT_USAGE } from './exit.js';
import { addClusterCommands } from './cluster.js';
import { addInfoCommands } from './info.js';
import { addIscsiCommands } from './iscsi.js';
import { processIo, type CliIo } from './io.js';
import { addPoolCommands } from './pool.js';
import { addUpCommand } from './up.js';
import { addVolumeCommands } from './volume.js';

export interface CliOptions {
  /** Replaces the real engine and NBD server for `up` (tests). */
  upDeps?: () => Promise<UpDeps>;
}

export function buildProgram(io: CliIo, setStatus: (s: number) => void, opts: CliOptions = {}): Command {
  const program = new Command('tessera');
  program
    .description('Tessera block storage: thin volumes exported over NBD and iSCSI')
    .version(TESSERA_VERSION, '-V, --version')
    .option('--data-dir <dir>', 'data directory of the daemon (default ./tessera-data)')
    .option('--socket <path>', 'API socket of the daemon (default <data-dir>/tessera.sock; env TESSERA_SOCKET)')
    .option('--config <file>', 'JSON config file (see docs/cli.md); flags override it')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.out(s),
      writeErr: (s) => io.err(s),
      outputError: (s, write) => write(`tessera: ${s}`),
    })
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText(
      'after',
      `
Exit status: 0 ok, 1 operational error, 2 usage error, 3 daemon not reachable.

Examples:
  $ tessera up --data-dir /srv/tessera           # start the daemon
  $ tessera volume create data1 --size 1T
  $ tessera volume list
  $ tessera pool create fast --devices /dev/nvme1n1,/dev/nvme2n1,/dev/nvme3n1 --protection raid5
  $ tessera iostat 1 5
  $ TESSERA_SOCKET=/srv/tessera/tessera.sock tessera status --json`,
    );
  addUpCommand(program, { io, setStatus, deps: opts.upDeps });
  addVolumeCommands(program, { io });
  addInfoCommands(program, { io });
  addPoolCommands(program, { io });
  addIscsiCommands(program, { io });
  addClusterCommands(program, { io, setStatus });
  return program;
}

/** Run the CLI with `args` (without node and script path); resolves with the exit status. */
export async function runCli(args: string[], io: CliIo, opts: CliOptions = {}): Promise<number> {
  let status = EXIT_OK;
  const program = buildProgram(io, (s) => (status = s), opts);
  try {
    await program.parseAsync(args, { from: 'user' });
    return status;
  } catch (err) {
    // commander already printed its message (or the help) through configureOutput
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    const report = classifyError(err);
    io.err(`tessera: error: ${report.message}\n`);
    if (report.hint) io.err(`hint: ${report.hint}\n`);
    return report.status;
  }
}

/** Entry point used by bin/tessera.js. */
export async function main(argv: string[]): Promise<void> {
  // `tessera ... | head`: a reader that went away is not an error worth a stack trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
  process.exitCode = await runCli(argv.slice(2), processIo());
  // Normally the event loop is empty now and the process ends by itself. If a
  // leaked handle kept a stopped daemon alive, end it anyway; unref'd, so this
  // timer never delays a clean exit.
  setTimeout(() => process.exit(), 5_000).unref();
}
