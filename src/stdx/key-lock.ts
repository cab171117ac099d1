// Per-key mutual exclusion for async work: run(key, fn) starts fn once every
// earlier run on the same key has settled; runs on different keys overlap.
// Keys with nothing queued take no memory. Used where a read-modify-write of one
// record must not interleave with another (PR stores, PR service).
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => {
      release = r;
    });
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  /** Resolves once every run started so far has settled. */
  async idle(): Promise<void> {
    await Promise.all([...this.tails.values()]);
  }

  /** Keys with a run in progress or queued. */
  get size(): number {
    return this.tails.size;
  }
}
