// The monitor's metadata store (CLU1): a small revisioned key-value store with
// compare-and-set, prefix watches and leader election. Two backends implement it:
// EmbeddedStore (one process, a local fsynced log; the single-machine default) and
// EtcdStore (several monitors over etcd; production). The cluster map code sees only
// this interface, so the two are interchangeable and share one contract test suite.
//
// Invariants every backend keeps:
// - Keys are non-empty UTF-8 strings of at most KEY_BYTES_MAX bytes; values are
//   Buffers of at most VALUE_BYTES_MAX bytes (checked before any IO).
// - Every mutation gets a revision from one per-store counter that only grows
//   (etcd's cluster revision; the embedded log's own counter, which survives
//   restarts). A key's revision is the revision of its last put (its
//   "mod revision"); compareAndSet compares against exactly that.
// - put/delete/compareAndSet resolve only once the change is durable.
// - A watch delivers a prefix's changes in revision order, each at most once.
//   Delivery is queued per watch and bounded (WATCH_QUEUE_EVENTS_MAX); a consumer
//   that falls that far behind has its watch closed with ERR_LIMIT and must
//   re-list and re-watch. To avoid missing changes, watch first, then list, and
//   drop events whose revision is not newer than the listed one.
// - campaign() leadership is tied to a lease of ttlMs: when the leader dies or
//   stops renewing, another candidate is elected within about ttlMs. A leader's
//   `term` grows with every election and is the fencing token for its writes.
import { TesseraError } from '../stdx/errors.js';

export const KEY_BYTES_MAX = 1024;
export const VALUE_BYTES_MAX = 1024 * 1024;
/** Events queued for one watch consumer before the watch is closed with ERR_LIMIT. */
export const WATCH_QUEUE_EVENTS_MAX = 10_000;
/** Shortest lease the stores accept; etcd rounds leases up to whole seconds and has a 2 s floor by default. */
export const ELECTION_TTL_MS_MIN = 1000;
export const ELECTION_TTL_MS_MAX = 60_000;

export interface StoredValue {
  value: Buffer;
  /** The revision of the key's last put. */
  revision: bigint;
}

export interface StoredEntry extends StoredValue {
  key: string;
}

export interface WatchEvent {
  type: 'put' | 'delete';
  key: string;
  /** The new value, present for puts only. */
  value?: Buffer;
  /** The revision of the change itself (for a delete, the revision of the deletion). */
  revision: bigint;
}

export interface WatchOptions {
  /** Called once when the watch ends abnormally (queue overflow, store failure, lost connection for good). */
  onError?: (err: TesseraError) => void;
}

export interface Watch {
  close(): Promise<void>;
}

export interface CasResult {
  ok: boolean;
  /** On success the new revision; on conflict the key's current revision (0n when it does not exist). */
  revision: bigint;
}

/**
 * One candidate's participation in an election. Obtained from campaign(); the
 * candidate stays in the running until it resigns, its store closes, or its lease
 * is lost.
 */
export interface Campaign {
  readonly electionName: string;
  readonly candidateId: string;
  /** True between being elected and resigning / losing the lease. */
  isLeader(): boolean;
  /**
   * Resolves with the leader's term (fencing token) once this candidate leads;
   * rejects with ERR_CLOSED if it resigns or its store closes first, or with the
   * lease error if the lease is lost while waiting.
   */
  elected(): Promise<bigint>;
  /** Called once if leadership (or candidacy) is lost without resign(): lease expired or revoked. */
  onLost(cb: (err: TesseraError) => void): void;
  /** Leaves the election; a successor is elected promptly (no TTL wait). Idempotent. */
  resign(): Promise<void>;
}

export interface MetaStore {
  get(key: string): Promise<StoredValue | null>;
  /** Every key starting with prefix, in key order, as of one revision. */
  list(prefix: string): Promise<StoredEntry[]>;
  /** Durable put; returns the new revision. */
  put(key: string, value: Buffer): Promise<bigint>;
  /** Durable delete; false when the key did not exist (then nothing changes). */
  delete(key: string): Promise<boolean>;
  /**
   * Puts value only if the key's revision equals expectedRevision, or — with
   * expectedRevision null — only if the key does not exist. Atomic against every
   * other mutation of the store.
   */
  compareAndSet(key: string, expectedRevision: bigint | null, value: Buffer): Promise<CasResult>;
  watch(prefix: string, onEvent: (e: WatchEvent) => void, options?: WatchOptions): Promise<Watch>;
  /** Enters candidateId into electionName's election (see Campaign). */
  campaign(electionName: string, candidateId: string, ttlMs: number): Promise<Campaign>;
  /** The current leader's candidateId, or null when there is none. */
  leader(electionName: string): Promise<string | null>;
  /** Closes watches and campaigns (leadership is given up), then the backend. Idempotent. */
  close(): Promise<void>;
}

/** Throws ERR_INVALID for a key or value the stores do not accept. */
export function checkKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) throw new TesseraError('ERR_INVALID', 'store key must be a non-empty string');
  const keyBytes = Buffer.byteLength(key, 'utf8');
  if (keyBytes > KEY_BYTES_MAX) throw new TesseraError('ERR_INVALID', `store key is ${keyBytes} bytes, limit ${KEY_BYTES_MAX}`);
}

export function checkValue(value: Buffer): void {
  if (!Buffer.isBuffer(value)) throw new TesseraError('ERR_INVALID', 'store value must be a Buffer');
  if (value.length > VALUE_BYTES_MAX) {
    throw new TesseraError('ERR_INVALID', `store value is ${value.length} bytes, limit ${VALUE_BYTES_MAX}`);
  }
}

export function checkElection(electionName: string, candidateId: string, ttlMs: number): void {
  if (!/^[A-Za-z0-9_.-]{1,128}$/.test(electionName)) throw new TesseraError('ERR_INVALID', `bad election name ${JSON.stringify(electionName)}`);
  if (candidateId.length === 0 || Buffer.byteLength(candidateId) > KEY_BYTES_MAX) {
    throw new TesseraError('ERR_INVALID', 'candidate id must be a non-empty string of at most 1 KiB');
  }
  if (!Number.isInteger(ttlMs) || ttlMs < ELECTION_TTL_MS_MIN || ttlMs > ELECTION_TTL_MS_MAX) {
    throw new TesseraError('ERR_INVALID', `election ttlMs ${ttlMs} outside [${ELECTION_TTL_MS_MIN}, ${ELECTION_TTL_MS_MAX}]`);
  }
}

/**
 * A bounded per-watch delivery queue: events are pushed by the backend and handed
 * to the consumer on a later turn of the event loop, so consumer code never runs
 * inside the backend's commit path. Overflow closes the watch with ERR_LIMIT.
 */
export class WatchQueue {
  private readonly queue: WatchEvent[] = [];
  private scheduled = false;
  private closed = false;

  constructor(
    private readonly onEvent: (e: WatchEvent) => void,
    private readonly onError: ((err: TesseraError) => void) | undefined,
    private readonly onOverflow: () => void,
  ) {}

  push(e: WatchEvent): void {
    if (this.closed) return;
    if (this.queue.length >= WATCH_QUEUE_EVENTS_MAX) {
      this.fail(new TesseraError('ERR_LIMIT', `watch consumer fell ${WATCH_QUEUE_EVENTS_MAX} events behind; re-list and re-watch`));
      this.onOverflow();
      return;
    }
    this.queue.push(e);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.drain());
    }
  }

  /** Ends delivery with an error (once); queued events are discarded. */
  fail(err: TesseraError): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    this.onError?.(err);
  }

  close(): void {
    this.closed = true;
    this.queue.length = 0;
  }

  private drain(): void {
    this.scheduled = false;
    // Take the batch first: the consumer may push more (via its own writes) while we deliver.
    const batch = this.queue.splice(0, this.queue.length);
    for (const e of batch) {
      if (this.closed) return;
      this.onEvent(e);
    }
  }
}
