// What a CLI command may touch of the outside world, injectable so tests run
// the whole CLI in-process: output streams, environment, working directory,
// terminal detection, confirmation prompts, and sleeping (iostat).
import { createInterface } from 'node:readline/promises';

export interface CliIo {
  /** Write to stdout (the command's result: tables, JSON). */
  out(text: string): void;
  /** Write to stderr (errors, hints, prompts). */
  err(text: string): void;
  env: Record<string, string | undefined>;
  cwd: string;
  /** True when a human can answer a prompt (stdin and stderr are terminals). */
  interactive: boolean;
  /** Ask a question on the terminal; resolves with the answer line. */
  prompt(question: string): Promise<string>;
  sleepMs(ms: number): Promise<void>;
  nowMs(): number;
}

export function processIo(): CliIo {
  return {
    out: (t) => void process.stdout.write(t),
    err: (t) => void process.stderr.write(t),
    env: process.env,
    cwd: process.cwd(),
    interactive: process.stdin.isTTY === true && process.stderr.isTTY === true,
    prompt: async (question) => {
      const rl = createInterface({ input: process.stdin, output: process.stderr });
      try {
        return await rl.question(question);
      } finally {
        rl.close();
      }
    },
    sleepMs: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    nowMs: () => Date.now(),
  };
}
