// Exit statuses of the `tessera` command, following Linux tool conventions.
// Scripts rely on them; they are part of the CLI contract (docs/cli.md).
//   0  success
//   1  operational error: unknown volume, name taken, bad size, shrink below
//      data, no space, daemon already running, device errors
//   2  usage error: unknown command or option, missing argument, bad config
//      or flag value, refusing a destructive action without --yes
//   3  the daemon is not reachable (not running, wrong --data-dir/--socket)
import { ApiError } from '../api/errors.js';
import { isTesseraError } from '../stdx/errors.js';

export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
export const EXIT_USAGE = 2;
export const EXIT_UNREACHABLE = 3;

/** A usage problem found by a command itself (not by commander's parser). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** No server answered (exit status 3), with advice on where to point the command. */
export class UnreachableError extends Error {
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = 'UnreachableError';
  }
}

export interface ExitReport {
  status: number;
  message: string;
  hint?: string;
}

/** Turn an error thrown by a command into an exit status, message and hint. */
export function classifyError(err: unknown): ExitReport {
  if (err instanceof UsageError) return { status: EXIT_USAGE, message: err.message };
  if (err instanceof UnreachableError) return { status: EXIT_UNREACHABLE, message: err.message, hint: err.hint };
  if (err instanceof ApiError) {
    if (err.code === 'ERR_UNREACHABLE') {
      return {
        status: EXIT_UNREACHABLE,
        message: err.message,
        hint: 'is the daemon running? Start it with `tessera up` (same --data-dir), or point to it with --data-dir, --socket or TESSERA_SOCKET',
      };
    }
    return { status: EXIT_ERROR, message: `${err.message} [${err.code}]`, hint: hintFor(err.code) };
  }
  if (isTesseraError(err)) {
    return { status: EXIT_ERROR, message: `${err.message} [${err.code}]`, hint: hintFor(err.code) };
  }
  return { status: EXIT_ERROR, message: `unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}` };
}

function hintFor(code: string): string | undefined {
  switch (code) {
    case 'ERR_ADDRESS_IN_USE':
      return 'another server holds that address: stop it or pick another port (tessera up --nbd-port N)';
    case 'ERR_SHRINK':
      return 'the volume has data beyond the new size; add --discard-data to shrink anyway (that data is lost)';
    case 'ERR_EXISTS':
      return 'pick another name (see `tessera volume list`)';
    case 'ERR_NOT_FOUND':
      return 'see `tessera volume list` for the volumes that exist';
    case 'ERR_NO_SPACE':
      return 'the device is full: delete or shrink volumes, or trim unused data';
    default:
      return undefined;
  }
}
