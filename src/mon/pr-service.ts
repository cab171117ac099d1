// PrService: the monitor side of SCSI persistent reservations in a cluster (the
// PrStore contract is in gateway/scsi/types.ts; the gateway side is
// gateway/scsi/pr-store-cluster.ts). Every gateway exporting a volume (multipath)
// must enforce one reservation, so a volume's PR state lives here, not in a gateway.
//
// Stored keys: `pr/<key>` (key = the volume id as a canonical decimal string) →
// UTF-8 JSON {rev, ops, state}: rev counts successful compare-and-sets (0 = never
// written, no stored key), state is opaque (at most PR_STATE_BYTES_MAX bytes of
// JSON), ops are the ids of the last PR_OPS_KEPT writes with their revs.
//
// Protocol (routes in http.ts):
// - A gateway (id chosen at its start) long-polls GET /v1/pr/watch with the revs it
//   has of the keys it follows. Every request of a gateway (watch or GET with
//   ?gateway=) renews its lease of leaseMs, measured from the request's arrival; the
//   watch answers at once when a followed key has a newer rev than the gateway
//   acknowledged, else after min(waitMs, leaseMs / 2) with nothing.
// - GET /v1/pr/:key?gateway=ID registers the follow BEFORE reading the record, so a
//   compare-and-set committed after that read waits for this gateway.
// - POST /v1/pr/:key/cas commits with the store's compare-and-set, then answers only
//   once every gateway that follows the key with a live lease acknowledged (in a
//   later watch) a rev ≥ the new one — or leaseMs + PR_ACK_MARGIN_MS after the
//   commit, whichever is first. Why the bound is safe: a gateway vouches for its
//   records only until (send time of its last poll that got an answer) + leaseMs −
//   its safety margin. A poll sent after the commit is answered at once with the new
//   record (the follow exists since the gateway's GET), so a gateway that never got
//   it stopped vouching by commit + leaseMs. A conflict answer waits the same way for
//   the rev it returns, so whatever this service hands out is propagated.
// - Monitor failover: leases live in the active monitor's memory. A newly active
//   monitor holds every CAS until leaseMs + PR_ACK_MARGIN_MS after it became active:
//   by then every gateway that followed a key under the old monitor has either
//   polled this one (re-registering its follows, from the revs it sends) or stopped
//   vouching. Watches and reads are served during the hold. When this monitor stops
//   being active, waiting CAS calls fail with ERR_NOT_ACTIVE even if the write was
//   committed: the client retries at the new monitor with the same op id, finds the
//   op applied, and waits there for the acknowledgements.
// - Residual risk: two monitors that both believe they are active (an old one that
//   has not yet noticed it lost the election) both write through the store's
//   compare-and-set, so no update is lost, and each sees the other's writes through a
//   store watch; but the old one may answer a CAS without the acknowledgements of
//   gateways already polling the new one. The election lease makes that window short.
//
// Invariants:
// - Only an active monitor serves (MonNotActiveError otherwise); activate() and
//   deactivate() come from MonService's election in the same turn as its own change.
// - CAS calls of one key run one at a time here (a promise chain per key); the
//   store's compare-and-set is still what makes them atomic against other monitors.
// - The cache holds records of followed keys (and keys with a CAS in progress),
//   kept current by our writes and a store watch on `pr/`; newer store revision wins.
// - Bounded: gateways (PR_GATEWAYS_MAX), follows per gateway
//   (PR_FOLLOWS_PER_GATEWAY_MAX), followed keys (PR_FOLLOWED_KEYS_MAX), one waiting
//   watch per gateway, CAS calls in progress (PR_CAS_IN_PROGRESS_MAX), state size,
//   answer size (PR_ANSWER_BYTES_MAX; the rest comes with the next watch).
// - Time only from the injected Clock.
import { KeyedLock } from '../stdx/key-lock.js';
import { TesseraError } from '../stdx/errors.js';
import type { Logger } from '../stdx/log.js';
import type { Clock, TimerHandle } from '../io/clock.js';
import { nodeClock } from '../io/node/clock.js';
import type { MetaStore, Watch, WatchEvent } from './store.js';
import type { PrCasAnswer, PrGetAnswer, PrRecordWire, PrWatchAnswer } from './api-types.js';
import { MonNotActiveError } from './errors.js';

export const PR_KEY_PREFIX = 'pr/';
export const PR_LEASE_MS_DEFAULT = 3000;
export const PR_LEASE_MS_MIN = 100;
export const PR_LEASE_MS_MAX = 60_000;
/** Slack on the monitor's side of a lease bound (CAS acknowledgement wait, failover hold). */
export const PR_ACK_MARGIN_MS = 250;
/** JSON bytes of one PR state. */
export const PR_STATE_BYTES_MAX = 64 * 1024;
export const PR_GATEWAYS_MAX = 1024;
/** Keys one gateway follows (also keeps the watch URL under Node's 16 KiB header limit). */
export const PR_FOLLOWS_PER_GATEWAY_MAX = 256;
/** Distinct followed keys (each cached with its state). */
export const PR_FOLLOWED_KEYS_MAX = 16_384;
export const PR_CAS_IN_PROGRESS_MAX = 1024;
/** Op ids remembered per key for idempotent retries. */
export const PR_OPS_KEPT = 8;
/** Longest waitMs a watch may ask (it is cut to leaseMs / 2 anyway). */
export const PR_WAIT_MS_MAX = 60_000;
/** State bytes in one watch answer; further records follow with the next watch. */
export const PR_ANSWER_BYTES_MAX = 4 * 1024 * 1024;
/** Canonical decimal volume ids (types.ts: "Keys are volume ids as decimal strings"). */
export const PR_KEY_RE = /^(0|[1-9][0-9]{0,15})$/;
/** Gateway ids and op ids. */
export const PR_ID_RE = /^[A-Za-z0-9_.-]{1,64}$/;
/** Store compare-and-set races lost (to another monitor) before a CAS gives up with ERR_BUSY. */
const STORE_CAS_RETRIES_MAX = 8;
/** Pause before re-establishing a failed store watch. */
const RESYNC_DELAY_MS = 200;

export interface PrServiceOptions {
  store: MetaStore;
  clock?: Clock;
  /** Gateway lease; default PR_LEASE_MS_DEFAULT. */
  leaseMs?: number;
  /** Extra activity check per call (MonService's); throws MonNotActiveError when not active. */
  checkActive?: () => void;
  log?: Logger;
}

interface GatewayState {
  readonly id: string;
  /** key → rev the gateway acknowledged (-1: registered by a GET, not acknowledged yet). */
  readonly follows: Map<string, number>;
  expiry: TimerHandle;
  poll: PollWaiter | null;
}

interface PollWaiter {
  resolve: (a: PrWatchAnswer) => void;
  reject: (err: unknown) => void;
  timer: TimerHandle;
  detach: () => void;
}

interface CacheEntry {
  rec: PrRecordWire;
  /** The store revision of the record; null when the key does not exist (rev 0). */
  storeRev: bigint | null;
  ops: Array<[string, number]>;
  stateBytes: number;
}

interface AckWaiter {
  rev: number;
  done: (err?: unknown) => void;
}

interface StoredPr {
  rev: number;
  ops: Array<[string, number]>;
  state: unknown;
}

export function checkPrKey(key: unknown): asserts key is string {
  if (typeof key !== 'string' || !PR_KEY_RE.test(key)) throw new TesseraError('ERR_INVALID', `PR key must be a volume id (decimal, no leading zeros), got ${JSON.stringify(key)}`);
}

function checkId(what: string, id: unknown): asserts id is string {
  if (typeof id !== 'string' || !PR_ID_RE.test(id)) throw new TesseraError('ERR_INVALID', `${what} must match ${PR_ID_RE.source}, got ${JSON.stringify(id)}`);
}

/** The state as JSON text, size-checked (ERR_LIMIT) and JSON-checked (ERR_INVALID). */
export function prStateText(state: unknown): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(state);
  } catch (err) {
    throw new TesseraError('ERR_INVALID', `PR state is not JSON-serializable: ${(err as Error).message}`);
  }
  if (text === undefined) throw new TesseraError('ERR_INVALID', 'PR state must be a JSON value (null before the first write)');
  const bytes = Buffer.byteLength(text);
  if (bytes > PR_STATE_BYTES_MAX) throw new TesseraError('ERR_LIMIT', `PR state is ${bytes} bytes of JSON, limit ${PR_STATE_BYTES_MAX}`);
  return text;
}

const storeKey = (key: string): string => PR_KEY_PREFIX + key;

function encodePr(v: StoredPr, stateText: string): Buffer {
  // The state's text is spliced in as serialized once (its size was checked on that text).
  return Buffer.from(`{"rev":${v.rev},"ops":${JSON.stringify(v.ops)},"state":${stateText}}`, 'utf8');
}

function decodePr(key: string, value: Buffer, revision: bigint): CacheEntry {
  const where = `stored PR record ${storeKey(key)} (store revision ${revision})`;
  let v: Partial<StoredPr>;
  try {
    v = JSON.parse(value.toString('utf8')) as Partial<StoredPr>;
  } catch (err) {
    throw new TesseraError('ERR_FORMAT', `${where} is not JSON`, { cause: err });
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new TesseraError('ERR_FORMAT', `${where} is not a JSON object`);
  const opsOk = Array.isArray(v.ops) && v.ops.every((o) => Array.isArray(o) && o.length === 2 && typeof o[0] === 'string' && Number.isSafeInteger(o[1]));
  if (!Number.isSafeInteger(v.rev) || (v.rev as number) < 1 || !opsOk || !('state' in v)) {
    throw new TesseraError('ERR_FORMAT', `${where} is not {rev >= 1, ops, state}`);
  }
  const rev = v.rev as number;
  return { rec: { rev, state: v.state }, storeRev: revision, ops: v.ops as Array<[string, number]>, stateBytes: Buffer.byteLength(JSON.stringify(v.state)) };
}

const EMPTY: Omit<CacheEntry, 'rec'> & { rec: PrRecordWire } = { rec: { rev: 0, state: null }, storeRev: null, ops: [], stateBytes: 4 };

function newerStoreRev(a: bigint | null, than: bigint | null): boolean {
  if (a === null) return false;
  return than === null || a > than;
}

export class PrService {
  readonly leaseMs: number;
  private readonly store: MetaStore;
  private readonly clock: Clock;
  private readonly checkActiveHook: (() => void) | undefined;
  private readonly log: Logger | undefined;

  private active = false;
  /** Bumped on every activation change: async work started under another generation stops. */
  private gen = 0;
  private holdUntilMs = 0;
  private readonly gateways = new Map<string, GatewayState>();
  private readonly followers = new Map<string, Set<GatewayState>>();
  private readonly cache = new Map<string, CacheEntry>();
  private readonly loading = new Map<string, Promise<CacheEntry>>();
  private readonly locks = new KeyedLock();
  /** key → CAS calls in progress on it (its cache entry stays). */
  private readonly casBusy = new Map<string, number>();
  private casInProgress = 0;
  private readonly ackWaiters = new Map<string, Set<AckWaiter>>();
  private readonly holdWaiters = new Set<(err?: unknown) => void>();
  private watch: Watch | null = null;
  private watchReady: Promise<void> | null = null;
  private resyncTimer: TimerHandle | null = null;

  constructor(opts: PrServiceOptions) {
    this.leaseMs = opts.leaseMs ?? PR_LEASE_MS_DEFAULT;
    if (!Number.isInteger(this.leaseMs) || this.leaseMs < PR_LEASE_MS_MIN || this.leaseMs > PR_LEASE_MS_MAX) {
      throw new TesseraError('ERR_INVALID', `PR leaseMs must be an integer in [${PR_LEASE_MS_MIN}, ${PR_LEASE_MS_MAX}], got ${this.leaseMs}`);
    }
    this.store = opts.store;
    this.clock = opts.clock ?? nodeClock;
    this.checkActiveHook = opts.checkActive;
    this.log = opts.log;
  }

  // ---------- activity ----------

  /** This monitor became active: start empty, hold CAS calls for one lease. */
  activate(): void {
    this.reset(new MonNotActiveError('PR service re-activated', null));
    this.active = true;
    this.holdUntilMs = this.clock.nowMs() + this.leaseMs + PR_ACK_MARGIN_MS;
    this.ensureWatch().catch((err: unknown) => this.log?.warn(`PR store watch: ${(err as Error).message}`));
  }

  /** This monitor stopped being active: everything waiting fails with err. */
  deactivate(err: unknown): void {
    this.reset(err);
  }

  isHolding(): boolean {
    return this.active && this.clock.nowMs() < this.holdUntilMs;
  }

  counters(): { gateways: number; followedKeys: number; cachedKeys: number; polls: number; casInProgress: number } {
    let polls = 0;
    for (const g of this.gateways.values()) if (g.poll !== null) polls++;
    return { gateways: this.gateways.size, followedKeys: this.followers.size, cachedKeys: this.cache.size, polls, casInProgress: this.casInProgress };
  }

  private reset(err: unknown): void {
    this.gen++;
    this.active = false;
    for (const done of [...this.holdWaiters]) done(err);
    this.holdWaiters.clear();
    for (const set of this.ackWaiters.values()) for (const w of [...set]) w.done(err);
    this.ackWaiters.clear();
    for (const g of this.gateways.values()) {
      g.expiry.cancel();
      const p = g.poll;
      g.poll = null;
      if (p !== null) {
        p.timer.cancel();
        p.detach();
        p.reject(err);
      }
    }
    this.gateways.clear();
    this.followers.clear();
    this.cache.clear();
    this.loading.clear();
    this.resyncTimer?.cancel();
    this.resyncTimer = null;
    const w = this.watch;
    this.watch = null;
    this.watchReady = null;
    void w?.close().catch(() => undefined);
  }

  private check(): void {
    if (!this.active) throw new MonNotActiveError('this monitor is not the active monitor', null);
    this.checkActiveHook?.();
    if (!this.active) throw new MonNotActiveError('this monitor is not the active monitor', null);
  }

  private checkGen(gen: number): void {
    if (gen !== this.gen || !this.active) throw new MonNotActiveError('this monitor stopped being active during the request', null);
  }

  // ---------- store watch and cache ----------

  private ensureWatch(): Promise<void> {
    if (this.watchReady === null) {
      const gen = this.gen;
      const ready = this.store
        .watch(PR_KEY_PREFIX, (e) => this.onStoreEvent(gen, e), { onError: (err) => this.onWatchError(gen, err) })
        .then(async (w) => {
          if (gen !== this.gen) {
            await w.close().catch(() => undefined);
            throw new MonNotActiveError('this monitor stopped being active', null);
          }
          this.watch = w;
        });
      this.watchReady = ready;
      ready.catch(() => {
        if (this.watchReady === ready) this.watchReady = null;
      });
    }
    return this.watchReady;
  }

  private onStoreEvent(gen: number, e: WatchEvent): void {
    if (gen !== this.gen || !e.key.startsWith(PR_KEY_PREFIX)) return;
    const key = e.key.slice(PR_KEY_PREFIX.length);
    if (!this.cache.has(key) && !this.loading.has(key) && !this.followers.has(key)) return;
    if (e.type === 'delete' || e.value === undefined) {
      // Nothing here deletes PR records; someone did by hand. Re-read rather than guess.
      this.cache.delete(key);
      this.log?.warn(`PR record ${e.key} was deleted from the store behind the monitor's back`);
      return;
    }
    let entry: CacheEntry;
    try {
      entry = decodePr(key, e.value, e.revision);
    } catch (err) {
      this.log?.error((err as Error).message);
      return;
    }
    if (this.merge(key, entry)) this.wakeFollowers(key);
  }

  private onWatchError(gen: number, err: TesseraError): void {
    if (gen !== this.gen) return;
    this.log?.warn(`PR store watch ended (${err.message}); re-reading followed records`);
    // Changes may have been missed: forget the cache; followed keys are re-read.
    const w = this.watch;
    this.watch = null;
    this.watchReady = null;
    void w?.close().catch(() => undefined);
    this.cache.clear();
    this.loading.clear();
    this.scheduleResync(gen);
  }

  private scheduleResync(gen: number): void {
    this.resyncTimer?.cancel();
    this.resyncTimer = this.clock.setTimer(RESYNC_DELAY_MS, () => {
      this.resyncTimer = null;
      if (gen !== this.gen) return;
      const keys = [...this.followers.keys()];
      Promise.all(keys.map((k) => this.ensureCached(k).then(() => this.wakeFollowers(k)))).catch((err: unknown) => {
        if (gen !== this.gen) return;
        this.log?.warn(`PR resync failed: ${(err as Error).message}`);
        this.scheduleResync(gen);
      });
    });
  }

  /** Keeps the entry with the newer store revision; true when `e` replaced the cached one. */
  private merge(key: string, e: CacheEntry): boolean {
    const cur = this.cache.get(key);
    if (cur !== undefined && !newerStoreRev(e.storeRev, cur.storeRev)) return false;
    this.cache.set(key, e);
    return cur === undefined || cur.rec.rev !== e.rec.rev;
  }

  private async ensureCached(key: string): Promise<CacheEntry> {
    const hit = this.cache.get(key);
    if (hit !== undefined) return hit;
    const gen = this.gen;
    let p = this.loading.get(key);
    if (p === undefined) {
      const loadP = this.readStore(key);
      p = loadP;
      this.loading.set(key, loadP);
      const forget = (): void => {
        if (this.loading.get(key) === loadP) this.loading.delete(key);
      };
      loadP.then(forget, forget);
    }
    const e = await p;
    this.checkGen(gen);
    this.merge(key, e);
    return this.cache.get(key) ?? e;
  }

  /** Reads the record from the store (after the watch is up, so no later change is missed). */
  private async readStore(key: string): Promise<CacheEntry> {
    await this.ensureWatch();
    const sv = await this.store.get(storeKey(key));
    return sv === null ? { ...EMPTY } : decodePr(key, sv.value, sv.revision);
  }

  private maybeEvict(key: string): void {
    if (this.followers.has(key) || this.casBusy.has(key)) return;
    this.cache.delete(key);
  }

  // ---------- gateways ----------

  private touchGateway(id: string): GatewayState {
    let g = this.gateways.get(id);
    if (g === undefined) {
      if (this.gateways.size >= PR_GATEWAYS_MAX) throw new TesseraError('ERR_LIMIT', `${PR_GATEWAYS_MAX} gateways hold PR leases already`);
      const created: GatewayState = { id, follows: new Map(), expiry: { cancel: () => undefined }, poll: null };
      this.gateways.set(id, created);
      g = created;
    }
    g.expiry.cancel();
    const gw = g;
    g.expiry = this.clock.setTimer(this.leaseMs, () => this.dropGateway(gw, 'lease expired'));
    return g;
  }

  /** Throws ERR_LIMIT, before any change, when following `keys` would pass a limit. */
  private checkFollowLimits(g: GatewayState, keys: string[]): void {
    let newForGateway = 0;
    let newKeys = 0;
    for (const k of keys) {
      if (!g.follows.has(k)) newForGateway++;
      if (!this.followers.has(k)) newKeys++;
    }
    if (g.follows.size + newForGateway > PR_FOLLOWS_PER_GATEWAY_MAX) {
      throw new TesseraError('ERR_LIMIT', `gateway ${g.id} would follow ${g.follows.size + newForGateway} PR keys, limit ${PR_FOLLOWS_PER_GATEWAY_MAX}`);
    }
    if (this.followers.size + newKeys > PR_FOLLOWED_KEYS_MAX) throw new TesseraError('ERR_LIMIT', `${PR_FOLLOWED_KEYS_MAX} PR keys are followed already`);
  }

  private follow(g: GatewayState, key: string, acked: number): void {
    g.follows.set(key, acked);
    let set = this.followers.get(key);
    if (set === undefined) {
      set = new Set();
      this.followers.set(key, set);
    }
    set.add(g);
  }

  private dropGateway(g: GatewayState, why: string): void {
    if (this.gateways.get(g.id) !== g) return;
    this.gateways.delete(g.id);
    g.expiry.cancel();
    this.answerPoll(g, []);
    this.log?.debug(`PR gateway ${g.id}: ${why}`);
    for (const key of g.follows.keys()) {
      const set = this.followers.get(key);
      set?.delete(g);
      if (set !== undefined && set.size === 0) this.followers.delete(key);
      this.checkAcks(key);
      this.maybeEvict(key);
    }
  }

  private pendingFor(g: GatewayState): PrWatchAnswer['records'] {
    const out: PrWatchAnswer['records'] = [];
    let bytes = 0;
    for (const [key, acked] of g.follows) {
      const e = this.cache.get(key);
      if (e === undefined || e.rec.rev <= acked) continue;
      if (out.length > 0 && bytes + e.stateBytes > PR_ANSWER_BYTES_MAX) break;
      bytes += e.stateBytes;
      out.push({ key, rev: e.rec.rev, state: e.rec.state });
    }
    return out;
  }

  private answerPoll(g: GatewayState, records: PrWatchAnswer['records']): void {
    const p = g.poll;
    if (p === null) return;
    g.poll = null;
    p.timer.cancel();
    p.detach();
    p.resolve({ leaseMs: this.leaseMs, records });
  }

  private wakeFollowers(key: string): void {
    for (const g of this.followers.get(key) ?? []) {
      if (g.poll === null) continue;
      const recs = this.pendingFor(g);
      if (recs.length > 0) this.answerPoll(g, recs);
    }
  }

  // ---------- acknowledgements ----------

  private allAcked(key: string, rev: number): boolean {
    for (const g of this.followers.get(key) ?? []) if ((g.follows.get(key) ?? rev) < rev) return false;
    return true;
  }

  private checkAcks(key: string): void {
    const set = this.ackWaiters.get(key);
    if (set === undefined) return;
    for (const w of [...set]) if (this.allAcked(key, w.rev)) w.done();
  }

  /** Resolves once every live follower acknowledged rev, or after leaseMs + margin (see the header). */
  private waitAcks(key: string, rev: number): Promise<void> {
    if (this.allAcked(key, rev)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      let set = this.ackWaiters.get(key);
      if (set === undefined) {
        set = new Set();
        this.ackWaiters.set(key, set);
      }
      const waiters = set;
      const w: AckWaiter = {
        rev,
        done: (err?: unknown) => {
          timer.cancel();
          waiters.delete(w);
          if (waiters.size === 0 && this.ackWaiters.get(key) === waiters) this.ackWaiters.delete(key);
          if (err === undefined) resolve();
          else reject(err);
        },
      };
      const timer = this.clock.setTimer(this.leaseMs + PR_ACK_MARGIN_MS, () => {
        const lagging = [...(this.followers.get(key) ?? [])].filter((g) => (g.follows.get(key) ?? rev) < rev).map((g) => g.id);
        this.log?.warn(`PR ${key} rev ${rev}: gateway(s) ${lagging.join(', ')} did not acknowledge within ${this.leaseMs + PR_ACK_MARGIN_MS} ms; they no longer vouch for older revs`);
        w.done();
      });
      waiters.add(w);
    });
  }

  private waitHold(): Promise<void> {
    const leftMs = this.holdUntilMs - this.clock.nowMs();
    if (leftMs <= 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (err?: unknown): void => {
        timer.cancel();
        this.holdWaiters.delete(done);
        if (err === undefined) resolve();
        else reject(err);
      };
      const timer = this.clock.setTimer(leftMs, () => done());
      this.holdWaiters.add(done);
    });
  }

  // ---------- API ----------

  /**
   * The record of key. With gatewayId: renews that gateway's lease and makes it follow
   * key (registered before the read, acknowledged at the rev returned).
   */
  async get(key: string, gatewayId?: string): Promise<PrGetAnswer> {
    this.check();
    checkPrKey(key);
    if (gatewayId !== undefined) checkId('gateway id', gatewayId);
    const gen = this.gen;
    let g: GatewayState | undefined;
    if (gatewayId !== undefined) {
      g = this.touchGateway(gatewayId);
      if (!g.follows.has(key)) {
        this.checkFollowLimits(g, [key]);
        this.follow(g, key, -1);
      }
    }
    const e = await this.ensureCached(key);
    this.checkGen(gen);
    if (g !== undefined && this.gateways.get(g.id) === g && g.follows.has(key)) {
      g.follows.set(key, Math.max(g.follows.get(key) ?? -1, e.rec.rev));
      this.checkAcks(key);
    } else {
      this.maybeEvict(key);
    }
    return { rev: e.rec.rev, state: e.rec.state, leaseMs: this.leaseMs };
  }

  /**
   * A gateway's long poll: renews its lease, follows the keys of `known` and records
   * their revs as acknowledged; answers the followed records newer than acknowledged,
   * at once or when one changes, else after min(waitMs, leaseMs / 2) with none (at
   * once too for a gateway that held no lease here).
   */
  async watchKeys(gatewayId: string, known: ReadonlyArray<readonly [string, number]>, waitMs: number, signal?: AbortSignal): Promise<PrWatchAnswer> {
    this.check();
    checkId('gateway id', gatewayId);
    if (!Number.isSafeInteger(waitMs) || waitMs < 0 || waitMs > PR_WAIT_MS_MAX) throw new TesseraError('ERR_INVALID', `waitMs must be an integer in [0, ${PR_WAIT_MS_MAX}], got ${waitMs}`);
    const seen = new Set<string>();
    for (const [key, rev] of known) {
      checkPrKey(key);
      if (seen.has(key)) throw new TesseraError('ERR_INVALID', `PR key ${key} is listed twice`);
      seen.add(key);
      if (!Number.isSafeInteger(rev) || rev < 0) throw new TesseraError('ERR_INVALID', `known rev of PR key ${key} must be a non-negative integer, got ${rev}`);
    }
    const gen = this.gen;
    // A gateway without a lease here (its first poll, or its first at this monitor after
    // a restart or failover) is answered at once: it stops vouching on its old lease
    // soon and must not wait out a long poll to get a new one.
    const leaseless = !this.gateways.has(gatewayId);
    const g = this.touchGateway(gatewayId);
    this.checkFollowLimits(g, [...seen]);
    for (const [key, rev] of known) this.follow(g, key, rev);
    for (const [key] of known) this.checkAcks(key);
    this.answerPoll(g, []); // a newer poll supersedes the gateway's previous one
    const missing = [...g.follows.keys()].filter((k) => !this.cache.has(k));
    if (missing.length > 0) await Promise.all(missing.map((k) => this.ensureCached(k)));
    this.checkGen(gen);
    if (this.gateways.get(gatewayId) !== g) return { leaseMs: this.leaseMs, records: [] }; // released meanwhile
    this.answerPoll(g, []);
    const records = this.pendingFor(g);
    const holdMs = leaseless ? 0 : Math.min(waitMs, Math.floor(this.leaseMs / 2));
    if (records.length > 0 || holdMs === 0 || signal?.aborted === true) return { leaseMs: this.leaseMs, records };
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        if (g.poll === p) this.answerPoll(g, []);
      };
      const p: PollWaiter = {
        resolve,
        reject,
        timer: this.clock.setTimer(holdMs, () => this.answerPoll(g, this.pendingFor(g))),
        detach: () => signal?.removeEventListener('abort', onAbort),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      g.poll = p;
    });
  }

  /** Ends a gateway's lease at once (it closed): CAS calls stop waiting for it. */
  release(gatewayId: string): void {
    this.check();
    checkId('gateway id', gatewayId);
    const g = this.gateways.get(gatewayId);
    if (g !== undefined) this.dropGateway(g, 'released');
  }

  /**
   * Replaces key's record if its rev is still expectRev; answers once the result is
   * propagated (see the header). `op` makes a retry of an applied write answer ok.
   */
  async compareAndSet(key: string, expectRev: number, state: unknown, op?: string): Promise<PrCasAnswer> {
    this.check();
    checkPrKey(key);
    if (!Number.isSafeInteger(expectRev) || expectRev < 0) throw new TesseraError('ERR_INVALID', `expectRev must be a non-negative integer, got ${expectRev}`);
    if (op !== undefined) checkId('op id', op);
    const stateText = prStateText(state);
    if (this.casInProgress >= PR_CAS_IN_PROGRESS_MAX) throw new TesseraError('ERR_LIMIT', `${PR_CAS_IN_PROGRESS_MAX} PR compare-and-sets are in progress; retry later`);
    const gen = this.gen;
    this.casInProgress++;
    this.casBusy.set(key, (this.casBusy.get(key) ?? 0) + 1);
    try {
      await this.waitHold();
      this.checkGen(gen);
      const answer = await this.locks.run(key, () => this.casLocked(key, expectRev, stateText, op, gen));
      this.checkGen(gen);
      await this.waitAcks(key, answer.ok ? answer.rev : answer.current.rev);
      this.checkGen(gen);
      return answer;
    } finally {
      this.casInProgress--;
      const n = (this.casBusy.get(key) ?? 1) - 1;
      if (n > 0) this.casBusy.set(key, n);
      else this.casBusy.delete(key);
      if (gen === this.gen) this.maybeEvict(key);
    }
  }

  private async casLocked(key: string, expectRev: number, stateText: string, op: string | undefined, gen: number): Promise<PrCasAnswer> {
    for (let attempt = 0; ; attempt++) {
      const e = await this.ensureCached(key);
      this.checkGen(gen);
      const applied = op === undefined ? undefined : e.ops.find(([o]) => o === op);
      if (applied !== undefined) return { ok: true, rev: applied[1] }; // a retry of a write that was committed
      if (e.rec.rev !== expectRev) return { ok: false, current: e.rec };
      const rev = expectRev + 1;
      const ops: Array<[string, number]> = op === undefined ? e.ops : [...e.ops, [op, rev] as [string, number]].slice(-PR_OPS_KEPT);
      const state: unknown = JSON.parse(stateText);
      const res = await this.store.compareAndSet(storeKey(key), e.storeRev, encodePr({ rev, ops, state }, stateText));
      // Committed even if we stopped being active meanwhile: the caller retries with op.
      this.checkGen(gen);
      if (res.ok) {
        this.merge(key, { rec: { rev, state }, storeRev: res.revision, ops, stateBytes: Buffer.byteLength(stateText) });
        this.wakeFollowers(key);
        return { ok: true, rev };
      }
      // Another writer (a monitor that still believes it is active) got there first.
      if (attempt + 1 >= STORE_CAS_RETRIES_MAX) throw new TesseraError('ERR_BUSY', `PR record ${key} keeps changing under this monitor; retry later`);
      this.cache.delete(key);
      const fresh = await this.readStore(key);
      this.checkGen(gen);
      if (this.merge(key, fresh)) this.wakeFollowers(key);
    }
  }
}

