// An in-memory PrStore for tests: one instance stands for the shared record store of
// a whole cluster, so two PrGates on one MemoryPrStore behave like two gateways.
//
// Invariants (the PrStore contract in types.ts):
// - A key's rev starts at 0 (state null) and increases by exactly one per successful
//   compareAndSet; a compareAndSet with a stale rev fails and returns the current
//   record, changing nothing.
// - Every subscriber of the key is called with the new record before compareAndSet
//   resolves (that is what "every gateway has it" means here), in subscription order.
// - Records are immutable: the state goes through a JSON round trip (as it would to
//   etcd or a file) and is deep-frozen, so a caller that mutates a state it was given
//   fails loudly in a test instead of changing another gateway's view.
// - current() is 'unavailable' for a key that was never loaded and while a test has
//   marked the key (or the whole store) unavailable; compareAndSet is refused then.
// - compareAndSet yields to the event loop before it compares, so concurrent callers
//   interleave as they would over a network.

import { TesseraError } from '../../stdx/errors.js';
import type { PrCasResult, PrRecord, PrStore } from './types.js';

type Listener = (rec: PrRecord) => void;

const NEVER_WRITTEN: PrRecord = Object.freeze({ rev: 0, state: null });

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

function yieldTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class MemoryPrStore implements PrStore {
  private readonly records = new Map<string, PrRecord>();
  private readonly loaded = new Set<string>();
  private readonly listeners = new Map<string, Listener[]>();
  private readonly unavailableKeys = new Set<string>();
  private allUnavailable = false;
  private closed = false;
  /** Successful compareAndSet calls, for tests. */
  casCommits = 0;
  /** Failed (stale rev) compareAndSet calls, for tests. */
  casConflicts = 0;

  /** Test hook: make current() answer 'unavailable' (one key, or every key with no argument). */
  setUnavailable(unavailable: boolean, key?: string): void {
    if (key === undefined) this.allUnavailable = unavailable;
    else if (unavailable) this.unavailableKeys.add(key);
    else this.unavailableKeys.delete(key);
  }

  /** Test hook: the stored record regardless of availability. */
  peek(key: string): PrRecord {
    return this.records.get(key) ?? NEVER_WRITTEN;
  }

  private available(key: string): boolean {
    return this.loaded.has(key) && !this.allUnavailable && !this.unavailableKeys.has(key);
  }

  private checkOpen(): void {
    if (this.closed) throw new TesseraError('ERR_CLOSED', 'memory PR store is closed');
  }

  current(key: string): PrRecord | 'unavailable' {
    if (this.closed || !this.available(key)) return 'unavailable';
    return this.peek(key);
  }

  async load(key: string): Promise<PrRecord> {
    this.checkOpen();
    this.loaded.add(key);
    return this.peek(key);
  }

  async compareAndSet(key: string, expectRev: number, state: unknown): Promise<PrCasResult> {
    this.checkOpen();
    // Serialize now, as a real store would before sending: a caller that changes the
    // object after the call must not change what was written.
    const json = JSON.stringify(state);
    await yieldTurn();
    this.checkOpen();
    if (!this.available(key)) throw new TesseraError('ERR_TIMEOUT', `PR record ${key} is unavailable`);
    const cur = this.peek(key);
    if (cur.rev !== expectRev) {
      this.casConflicts += 1;
      return { ok: false, current: cur };
    }
    const next: PrRecord = deepFreeze({ rev: cur.rev + 1, state: json === undefined ? null : JSON.parse(json) });
    this.records.set(key, next);
    this.casCommits += 1;
    for (const listener of [...(this.listeners.get(key) ?? [])]) listener(next);
    return { ok: true, rev: next.rev };
  }

  subscribe(key: string, listener: Listener): () => void {
    const list = this.listeners.get(key) ?? [];
    list.push(listener);
    this.listeners.set(key, list);
    return () => {
      const now = this.listeners.get(key) ?? [];
      const i = now.indexOf(listener);
      if (i >= 0) now.splice(i, 1);
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
  }
}
