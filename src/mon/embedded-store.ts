// EmbeddedStore: the single-monitor MetaStore (CLU1's default) — the whole key
// space in memory, every change made durable in a local KvLog (src/io/node/kvlog.ts)
// before it is acknowledged.
//
// Invariants:
// - Mutations apply to memory and hand their op to the log in the same synchronous
//   step, so memory = durable state + ops the log has queued, and the revision
//   counter, CAS checks and log order all agree. Concurrent mutations share one
//   fsync (the log's group commit).
// - Nothing un-durable is observable: get/list read memory but resolve only once
//   the revision they read is durable, and watch events are emitted only after
//   their fsync (so a crash can never un-happen something a caller saw).
// - An fsync failure poisons the store (ERR_DEVICE_FLUSH on every later call):
//   memory may now hold changes the disk lacks, so the process must reopen.
// - Elections always elect the (single) candidate at once; the term is a durable
//   put to ELECTION_KEY_PREFIX + name, so terms grow across restarts.
import { TesseraError } from '../stdx/errors.js';
import { KvLog, type KvOp } from '../io/node/kvlog.js';
import {
  checkElection,
  checkKey,
  checkValue,
  WatchQueue,
  type Campaign,
  type CasResult,
  type MetaStore,
  type StoredEntry,
  type StoredValue,
  type Watch,
  type WatchEvent,
  type WatchOptions,
} from './store.js';

/** Election terms live under this prefix (visible to list(''), like etcd's election keys). */
export const ELECTION_KEY_PREFIX = '\u0000election/';
/** Open watches per store; each costs a queue and a check per change. */
const WATCHES_MAX = 1024;

export interface EmbeddedStoreOptions {
  /** Passed to KvLog: compact after this much growth (tests use small values). */
  compactMinBytes?: number;
}

interface Entry {
  value: Buffer;
  revision: bigint;
}

interface WatchReg {
  prefix: string;
  queue: WatchQueue;
}

export class EmbeddedStore implements MetaStore {
  private readonly data = new Map<string, Entry>();
  private revision = 0n;
  private durableRevision = 0n;
  private readonly durableWaiters: Array<{ revision: bigint; resolve: () => void; reject: (e: Error) => void }> = [];
  private readonly watches = new Set<WatchReg>();
  private readonly campaigns = new Set<EmbeddedCampaign>();
  private log!: KvLog;
  private failure: TesseraError | null = null;
  private closed = false;
  /** Bytes of torn tail dropped when this store was opened. */
  tornTailBytes = 0;

  private constructor() {}

  static async open(path: string, options: EmbeddedStoreOptions = {}): Promise<EmbeddedStore> {
    const store = new EmbeddedStore();
    const opened = await KvLog.open(path, {
      compactMinBytes: options.compactMinBytes,
      snapshot: () => ({
        revision: store.revision,
        entries: [...store.data].map(([key, e]) => ({ key, revision: e.revision, value: e.value })),
      }),
    });
    store.log = opened.log;
    store.tornTailBytes = opened.tornTailBytes;
    for (const op of opened.ops) {
      if (op.value === null) store.data.delete(op.key);
      else store.data.set(op.key, { value: op.value, revision: op.revision });
    }
    store.revision = opened.revision;
    store.durableRevision = opened.revision;
    return store;
  }

  async get(key: string): Promise<StoredValue | null> {
    this.checkOpen();
    checkKey(key);
    const e = this.data.get(key);
    const result = e ? { value: Buffer.from(e.value), revision: e.revision } : null;
    await this.durable(this.revision);
    return result;
  }

  async list(prefix: string): Promise<StoredEntry[]> {
    this.checkOpen();
    const out: StoredEntry[] = [];
    for (const [key, e] of this.data) if (key.startsWith(prefix)) out.push({ key, value: Buffer.from(e.value), revision: e.revision });
    out.sort((a, b) => Buffer.compare(Buffer.from(a.key), Buffer.from(b.key))); // byte order, as etcd
    await this.durable(this.revision);
    return out;
  }

  async put(key: string, value: Buffer): Promise<bigint> {
    this.checkOpen();
    checkKey(key);
    checkValue(value);
    return this.commit({ key, value: Buffer.from(value), revision: ++this.revision });
  }

  async delete(key: string): Promise<boolean> {
    this.checkOpen();
    checkKey(key);
    if (!this.data.has(key)) {
      await this.durable(this.revision); // the absence we report must not be of an un-durable delete
      return false;
    }
    await this.commit({ key, value: null, revision: ++this.revision });
    return true;
  }

  async compareAndSet(key: string, expectedRevision: bigint | null, value: Buffer): Promise<CasResult> {
    this.checkOpen();
    checkKey(key);
    checkValue(value);
    const current = this.data.get(key);
    const matches = expectedRevision === null ? current === undefined : current !== undefined && current.revision === expectedRevision;
    if (!matches) {
      const rev = current?.revision ?? 0n;
      await this.durable(this.revision);
      return { ok: false, revision: rev };
    }
    const revision = await this.commit({ key, value: Buffer.from(value), revision: ++this.revision });
    return { ok: true, revision };
  }

  async watch(prefix: string, onEvent: (e: WatchEvent) => void, options: WatchOptions = {}): Promise<Watch> {
    this.checkOpen();
    if (this.watches.size >= WATCHES_MAX) throw new TesseraError('ERR_LIMIT', `store has ${WATCHES_MAX} watches open`);
    const reg: WatchReg = { prefix, queue: new WatchQueue(onEvent, options.onError, () => this.watches.delete(reg)) };
    this.watches.add(reg);
    return {
      close: async () => {
        reg.queue.close();
        this.watches.delete(reg);
      },
    };
  }

  async campaign(electionName: string, candidateId: string, ttlMs: number): Promise<Campaign> {
    this.checkOpen();
    checkElection(electionName, candidateId, ttlMs);
    const term = await this.put(ELECTION_KEY_PREFIX + electionName, Buffer.from(candidateId, 'utf8'));
    const c = new EmbeddedCampaign(electionName, candidateId, term, this);
    this.campaigns.add(c);
    return c;
  }

  async leader(electionName: string): Promise<string | null> {
    this.checkOpen();
    for (const c of this.campaigns) if (c.electionName === electionName && c.isLeader()) return c.candidateId;
    return null;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const c of [...this.campaigns]) c.dropped();
    for (const w of this.watches) w.queue.close();
    this.watches.clear();
    await this.log.close();
    const err = new TesseraError('ERR_CLOSED', 'store closed');
    for (const w of this.durableWaiters.splice(0)) w.reject(err);
  }

  /** @internal for EmbeddedCampaign */
  forgetCampaign(c: EmbeddedCampaign): void {
    this.campaigns.delete(c);
  }

  private checkOpen(): void {
    if (this.failure) throw this.failure;
    if (this.closed) throw new TesseraError('ERR_CLOSED', 'store closed');
  }

  /** Applies op to memory, queues it on the log, and resolves with its revision once durable. */
  private async commit(op: KvOp): Promise<bigint> {
    if (op.value === null) this.data.delete(op.key);
    else this.data.set(op.key, { value: op.value, revision: op.revision });
    try {
      await this.log.append([op]);
    } catch (err) {
      this.fail(err as TesseraError);
      throw err;
    }
    // The log resolves appends in order, so every op up to this one is durable.
    if (op.revision > this.durableRevision) this.durableRevision = op.revision;
    this.publish(op);
    this.wakeDurable();
    return op.revision;
  }

  private publish(op: KvOp): void {
    const e: WatchEvent =
      op.value === null ? { type: 'delete', key: op.key, revision: op.revision } : { type: 'put', key: op.key, value: Buffer.from(op.value), revision: op.revision };
    for (const w of this.watches) if (op.key.startsWith(w.prefix)) w.queue.push(e);
  }

  private durable(revision: bigint): Promise<void> {
    if (revision <= this.durableRevision) return Promise.resolve();
    return new Promise((resolve, reject) => this.durableWaiters.push({ revision, resolve, reject }));
  }

  private wakeDurable(): void {
    for (let i = this.durableWaiters.length - 1; i >= 0; i--) {
      const w = this.durableWaiters[i];
      if (w.revision <= this.durableRevision) {
        this.durableWaiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  private fail(err: TesseraError): void {
    if (this.failure) return;
    this.failure = err instanceof TesseraError ? err : new TesseraError('ERR_DEVICE_FLUSH', String(err));
    for (const w of this.durableWaiters.splice(0)) w.reject(this.failure);
    for (const w of this.watches) w.queue.fail(this.failure);
    this.watches.clear();
  }
}

/** The embedded store's campaign: elected at creation (one monitor, nobody to contend with). */
class EmbeddedCampaign implements Campaign {
  private leading = true;

  constructor(
    readonly electionName: string,
    readonly candidateId: string,
    private readonly term: bigint,
    private readonly store: EmbeddedStore,
  ) {}

  isLeader(): boolean {
    return this.leading;
  }

  elected(): Promise<bigint> {
    if (!this.leading) return Promise.reject(new TesseraError('ERR_CLOSED', 'campaign ended'));
    return Promise.resolve(this.term);
  }

  onLost(_cb: (err: TesseraError) => void): void {
    // One process holds the store and its only lease: leadership can end only by resign or close.
  }

  async resign(): Promise<void> {
    this.leading = false;
    this.store.forgetCampaign(this);
  }

  /** The store closed: leadership ends with it, as a resign (closing is deliberate, so onLost is not called). */
  dropped(): void {
    this.leading = false;
    this.store.forgetCampaign(this);
  }
}
