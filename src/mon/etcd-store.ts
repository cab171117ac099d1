// EtcdStore: the MetaStore over etcd (v3 API, via the npm `etcd3` client) for
// clusters with several monitors. Each operation maps to one etcd request:
// get/list → Range, put → Put, delete → DeleteRange, compareAndSet → Txn on the
// key's mod revision (or create revision 0 for "must not exist"), watch → Watch,
// campaign → the etcd election recipe (a lease-bound key per candidate; the
// lowest create revision leads), as implemented by etcd3's Election.
//
// Invariants:
// - All keys live under `options.prefix` (default 'tessera/'), so a shared etcd
//   can host several clusters; the prefix is stripped from what callers see.
// - Revisions are etcd's cluster revisions: they only grow, and etcd acknowledges
//   a write only after a quorum fsynced it.
// - A campaign's term is the create revision of its election key, unique and
//   growing across elections: the fencing token.
// - A leader whose lease is lost (keepalives failed past the TTL, or revoked) is
//   told through onLost; when a leader's process dies, its lease expires after
//   ttlMs (rounded up to whole seconds, etcd's unit) and the next candidate leads.
// - Every error leaving this file is a TesseraError (etcd's are wrapped, with cause).
import { Etcd3, type Campaign as Etcd3Campaign, type IOptions, type Watcher } from 'etcd3';
import { TesseraError, type ErrorCode } from '../stdx/errors.js';
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

export interface EtcdStoreOptions {
  /** e.g. ['http://127.0.0.1:2379'] */
  endpoints: string[];
  /** Key prefix for this cluster's keys; default 'tessera/'. */
  prefix?: string;
  /** Per-request deadline; default 5000 ms. */
  requestTimeoutMs?: number;
}

const REQUEST_TIMEOUT_MS_DEFAULT = 5000;
const WATCHES_MAX = 1024;

export class EtcdStore implements MetaStore {
  private readonly client: Etcd3;
  private readonly prefix: string;
  private readonly watches = new Set<{ watcher: Watcher; queue: WatchQueue }>();
  private readonly campaigns = new Set<EtcdCampaign>();
  private closed = false;

  private constructor(options: EtcdStoreOptions) {
    this.prefix = options.prefix ?? 'tessera/';
    const clientOptions: IOptions = {
      hosts: options.endpoints,
      defaultCallOptions: () => ({ deadline: Date.now() + (options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS_DEFAULT) }),
    };
    this.client = new Etcd3(clientOptions);
  }

  /** Connects and checks that etcd answers (one status call), so a bad endpoint fails here and not later. */
  static async connect(options: EtcdStoreOptions): Promise<EtcdStore> {
    const store = new EtcdStore(options);
    try {
      await store.client.maintenance.status();
    } catch (err) {
      store.client.close();
      throw wrap(err, `connect to etcd at ${options.endpoints.join(',')}`);
    }
    return store;
  }

  async get(key: string): Promise<StoredValue | null> {
    this.checkOpen();
    checkKey(key);
    const res = await call(`get ${key}`, () => this.client.get(this.prefix + key).exec());
    const kv = res.kvs[0];
    return kv ? { value: Buffer.from(kv.value), revision: BigInt(kv.mod_revision) } : null;
  }

  async list(prefix: string): Promise<StoredEntry[]> {
    this.checkOpen();
    const res = await call(`list ${prefix}`, () => this.client.getAll().prefix(this.prefix + prefix).exec());
    return res.kvs.map((kv) => ({ key: this.unprefix(kv.key), value: Buffer.from(kv.value), revision: BigInt(kv.mod_revision) }));
  }

  async put(key: string, value: Buffer): Promise<bigint> {
    this.checkOpen();
    checkKey(key);
    checkValue(value);
    const res = await call(`put ${key}`, () => this.client.put(this.prefix + key).value(value).exec());
    return BigInt(res.header.revision);
  }

  async delete(key: string): Promise<boolean> {
    this.checkOpen();
    checkKey(key);
    const res = await call(`delete ${key}`, () => this.client.delete().key(this.prefix + key).exec());
    return BigInt(res.deleted) > 0n;
  }

  async compareAndSet(key: string, expectedRevision: bigint | null, value: Buffer): Promise<CasResult> {
    this.checkOpen();
    checkKey(key);
    checkValue(value);
    const k = this.prefix + key;
    // expectedRevision null: "create revision 0" is etcd's way of saying the key does not exist.
    const cond =
      expectedRevision === null ? this.client.if(k, 'Create', '==', 0) : this.client.if(k, 'Mod', '==', expectedRevision.toString());
    const res = await call(`compareAndSet ${key}`, () => cond.then(this.client.put(k).value(value)).else(this.client.get(k)).commit());
    if (res.succeeded) return { ok: true, revision: BigInt(res.header.revision) };
    const kv = res.responses[0]?.response_range?.kvs[0];
    return { ok: false, revision: kv ? BigInt(kv.mod_revision) : 0n };
  }

  async watch(prefix: string, onEvent: (e: WatchEvent) => void, options: WatchOptions = {}): Promise<Watch> {
    this.checkOpen();
    if (this.watches.size >= WATCHES_MAX) throw new TesseraError('ERR_LIMIT', `store has ${WATCHES_MAX} watches open`);
    const watcher = await call(`watch ${prefix}`, () => this.client.watch().prefix(this.prefix + prefix).create());
    const reg = { watcher, queue: undefined as unknown as WatchQueue };
    const stop = (): void => {
      this.watches.delete(reg);
      void watcher.cancel().catch(() => undefined);
    };
    reg.queue = new WatchQueue(onEvent, options.onError, stop);
    this.watches.add(reg);
    // For a delete, etcd reports the deletion's revision as the kv's mod_revision.
    watcher.on('put', (kv) => reg.queue.push({ type: 'put', key: this.unprefix(kv.key), value: Buffer.from(kv.value), revision: BigInt(kv.mod_revision) }));
    watcher.on('delete', (kv) => reg.queue.push({ type: 'delete', key: this.unprefix(kv.key), revision: BigInt(kv.mod_revision) }));
    // etcd3 resumes a disconnected watch from its last revision by itself; 'error' is final (e.g. compacted).
    watcher.on('error', (err) => {
      reg.queue.fail(wrap(err, `watch ${prefix}`));
      stop();
    });
    return {
      close: async () => {
        reg.queue.close();
        this.watches.delete(reg);
        await watcher.cancel().catch(() => undefined);
      },
    };
  }

  async campaign(electionName: string, candidateId: string, ttlMs: number): Promise<Campaign> {
    this.checkOpen();
    checkElection(electionName, candidateId, ttlMs);
    const ttlSeconds = Math.ceil(ttlMs / 1000);
    // Namespaced so election keys live under this cluster's prefix: <prefix>election/<name>/<lease id>.
    const election = this.client.namespace(this.prefix).election(electionName, ttlSeconds);
    const c = new EtcdCampaign(electionName, candidateId, election.campaign(candidateId), this.client, () => this.campaigns.delete(c));
    this.campaigns.add(c);
    return c;
  }

  async leader(electionName: string): Promise<string | null> {
    this.checkOpen();
    const v = await call(`leader ${electionName}`, () => this.client.namespace(this.prefix).election(electionName).leader());
    return v ?? null;
  }

  /** Cancels watches, resigns campaigns (a successor is elected at once), closes the connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const c of [...this.campaigns]) await c.resign().catch(() => undefined);
    for (const w of [...this.watches]) {
      w.queue.close();
      await w.watcher.cancel().catch(() => undefined);
    }
    this.watches.clear();
    this.client.close();
  }

  /**
   * Drops the connection without resigning, as a crashed monitor would: leases
   * stop being renewed and expire after their TTL. For failover tests, and for
   * shutdown paths that must not hand leadership over early.
   */
  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    // Closing the client alone leaves etcd3's keepalive streams running for a while
    // (measured: the lease outlived a 2 s TTL by ~4.5 s); stop them as a dead process would.
    for (const c of [...this.campaigns]) c.abandon();
    for (const w of this.watches) w.queue.close();
    this.watches.clear();
    this.client.close();
  }

  private unprefix(key: Buffer): string {
    return key.subarray(Buffer.byteLength(this.prefix)).toString('utf8');
  }

  private checkOpen(): void {
    if (this.closed) throw new TesseraError('ERR_CLOSED', 'store closed');
  }
}

class EtcdCampaign implements Campaign {
  private state: 'waiting' | 'leading' | 'ended' = 'waiting';
  private readonly electedPromise: Promise<bigint>;
  private readonly lostCbs: Array<(err: TesseraError) => void> = [];
  private resolveElected!: (term: bigint) => void;
  private rejectElected!: (err: TesseraError) => void;

  constructor(
    readonly electionName: string,
    readonly candidateId: string,
    private readonly inner: Etcd3Campaign,
    private readonly client: Etcd3,
    private readonly forget: () => void,
  ) {
    this.electedPromise = new Promise((resolve, reject) => {
      this.resolveElected = resolve;
      this.rejectElected = reject;
    });
    this.electedPromise.catch(() => undefined); // a candidate nobody waits on must not crash the process
    // Listeners are attached at once: an 'error' without a listener would throw.
    inner.on('elected', () => void this.onElected());
    inner.on('error', (err) => this.end(wrap(err, `election ${electionName}: lease lost`), true));
  }

  isLeader(): boolean {
    return this.state === 'leading';
  }

  elected(): Promise<bigint> {
    return this.electedPromise;
  }

  onLost(cb: (err: TesseraError) => void): void {
    this.lostCbs.push(cb);
  }

  async resign(): Promise<void> {
    if (this.state === 'ended') return;
    this.end(new TesseraError('ERR_CLOSED', `resigned from election ${this.electionName}`), false);
    await call(`resign ${this.electionName}`, () => this.inner.resign());
  }

  /** Stops renewing the lease without revoking it (see EtcdStore.abandon). */
  abandon(): void {
    (this.inner as unknown as { lease: { release(): void } }).lease.release();
    this.end(new TesseraError('ERR_CLOSED', 'store abandoned'), false);
  }

  private async onElected(): Promise<void> {
    if (this.state !== 'waiting') return;
    try {
      // The term is our key's create revision: assigned once, when we entered, and larger than any earlier leader's.
      const key = await this.inner.getCampaignKey();
      const res = await this.client.get(key).exec();
      const kv = res.kvs[0];
      if (!kv) throw new TesseraError('ERR_NOT_FOUND', `election key ${key} vanished: lease expired`);
      if (this.state !== 'waiting') return;
      this.state = 'leading';
      this.resolveElected(BigInt(kv.create_revision));
    } catch (err) {
      this.end(wrap(err, `election ${this.electionName}`), true);
    }
  }

  private end(err: TesseraError, lost: boolean): void {
    if (this.state === 'ended') return;
    this.state = 'ended';
    this.forget();
    this.rejectElected(err);
    if (lost) for (const cb of this.lostCbs) cb(err);
  }
}

async function call<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw wrap(err, what);
  }
}

function wrap(err: unknown, what: string): TesseraError {
  if (err instanceof TesseraError) return err;
  const name = (err as Error)?.constructor?.name ?? '';
  let code: ErrorCode = 'ERR_PROTOCOL';
  if (name === 'GRPCUnavailableError' || name === 'GRPCDeadlineExceededError') code = 'ERR_TIMEOUT';
  else if (name === 'ClientClosedError') code = 'ERR_CLOSED';
  else if (name === 'EtcdLeaseInvalidError') code = 'ERR_NOT_FOUND';
  return new TesseraError(code, `etcd ${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
