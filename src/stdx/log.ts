// A tiny leveled logger: one line per event on stderr, as
// `2025-01-01T00:00:00.000Z INFO  nbd: message`. Daemons log here; the CLI's
// own output (tables, JSON) goes to stdout and never through this logger, so a
// script can parse stdout while a human still sees diagnostics.
//
// Invariants: a line never contains a raw newline (they are escaped, so one
// event is one line for grep and log shippers); the clock and the sink are
// injectable so tests can assert exact lines.

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** The callback shape the gateway and the engine accept (`log?: (level, msg) => void`). */
export type LogFn = (level: 'info' | 'warn' | 'error', msg: string) => void;

const LEVEL_RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LoggerOptions {
  /** Lowest level written; default from TESSERA_LOG_LEVEL or 'info'. */
  level?: LogLevel;
  /** Where lines go; default process.stderr. */
  sink?: (line: string) => void;
  /** Wall clock in ms, injectable for tests. */
  nowMs?: () => number;
}

export class Logger {
  private readonly minRank: number;
  private readonly sink: (line: string) => void;
  private readonly nowMs: () => number;

  constructor(
    readonly component: string,
    private readonly opts: LoggerOptions = {},
  ) {
    this.minRank = LEVEL_RANK[opts.level ?? levelFromEnv()];
    this.sink = opts.sink ?? ((line) => process.stderr.write(line));
    this.nowMs = opts.nowMs ?? (() => Date.now());
  }

  /** A logger for a sub-component sharing level, sink and clock. */
  child(component: string): Logger {
    return new Logger(component, this.opts);
  }

  debug(msg: string): void {
    this.write('debug', msg);
  }
  info(msg: string): void {
    this.write('info', msg);
  }
  warn(msg: string): void {
    this.write('warn', msg);
  }
  error(msg: string): void {
    this.write('error', msg);
  }

  /** Adapter for subsystems that take a `(level, msg)` callback. */
  fn(): LogFn {
    return (level, msg) => this.write(level, msg);
  }

  write(level: LogLevel, msg: string): void {
    if (LEVEL_RANK[level] < this.minRank) return;
    const ts = new Date(this.nowMs()).toISOString();
    const oneLine = msg.replace(/\r?\n/g, '\\n');
    this.sink(`${ts} ${level.toUpperCase().padEnd(5)} ${this.component}: ${oneLine}\n`);
  }
}

function levelFromEnv(): LogLevel {
  const v = process.env.TESSERA_LOG_LEVEL;
  return v === 'debug' || v === 'info' || v === 'warn' || v === 'error' ? v : 'info';
}
