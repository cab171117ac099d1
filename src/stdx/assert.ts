// Assertions for programmer errors. They stay on in production: a broken
// invariant in a storage system must stop the process, not corrupt data.

export class AssertionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AssertionError';
  }
}

export function assert(condition: unknown, message = 'assertion failed'): asserts condition {
  if (!condition) throw new AssertionError(message);
}

/**
 * Throws an AssertionError. For hot paths: `if (!ok) fail(\`...\`)` builds its message
 * only when the check fails, where `assert(ok, \`...\`)` builds it on every call.
 */
export function fail(message: string): never {
  throw new AssertionError(message);
}

export function unreachable(value: never): never {
  throw new AssertionError(`unreachable: ${String(value)}`);
}
