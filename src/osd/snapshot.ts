// PG snapshot transfer, sending side (raft InstallSnapshot, §7) for followers and new
// replicas that need entries the leader no longer has. The leader ships the
// PG's objects as they are in its engine once it has applied at least the
// snapshot index: a "fuzzy" copy that may already contain some later writes,
// which is correct because the follower then receives and re-applies every
// entry after the snapshot index in order, and block writes are idempotent.
// A copy takes time while writes go on. The first pass ships every object
// while the leader keeps the log after the snapshot's index; if what was
// written meanwhile fits recoveryRetainBytes, the copy ends there and the peer
// catches up from that log. Otherwise it goes on in passes (like a live
// migration's pre-copy): the apply queue tells the sender which objects were
// written behind the copy, and later passes ship those again; the final pass
// first moves the snapshot's index up to the applied point of then
// (RaftNode.snapshotPoint), then ships what was written since the previous
// pass read it. Every object it leaves out was last written before its copy
// was read, so the copy holds the state as of the final index. A final pass of
// at most FINAL_PASS_OBJECTS_MAX objects goes unthrottled (its bytes are charged
// to the rate afterwards): the shorter it takes, the less is written meanwhile.
// A final pass whose kept log overflows stops and starts again from a newer
// index with what it had not sent plus what was written since (up to
// FINAL_PASS_ATTEMPTS_MAX passes): the receiver keeps what it has.
//
// Sender: throttled to recoveryBytesPerSec and paused (up to YIELD_MAX_MS per
// chunk) while the OSD has more than recoveryYieldInFlight client requests in
// flight (user IO first, but the IO may be waiting for this copy). One
// transfer per (PG, peer), at most recoveryTransfersMax at once (Ceph's
// osd_max_backfills); more wait in a FIFO queue, and a queued one starts from a
// fresh snapshot point (raft's renewSnapshot), since the leader may have
// compacted past the point raft named when it asked. Transfers that shared the
// rate each took N times as long and, under writes, arrived stale (session 21:
// the cluster conformance test's part 7 copied every PG twice).
// The log kept after the snapshot's index (retainIndex, called before each
// compaction) stays until the peer caught up to where the leader stood when
// the copy arrived. Once more than recoveryRetainBytes were written after that
// index, it is dropped: during the first pass the copy then goes on in passes;
// during a final pass that pass starts again (above), and after
// FINAL_PASS_ATTEMPTS_MAX of them the transfer is cancelled (its snapshot
// would arrive stale) and raft asks again, from a newer point. A failure
// reports the snapshot as failed so raft probes again.
// The receiver is snapshot-receiver.ts.
import type { Clock } from '../io/clock.js';
import { assert } from '../stdx/assert.js';
import type { MsgSnap } from '../raft/types.js';
import type { ObjectStore } from './objects.js';
import type { OsdConfig, OsdCore, OsdNet } from './osd.js';
import type { PgReplica } from './pg.js';
import { SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_CHUNK_ITEMS_MAX, Status, type SnapshotChunk, type SnapshotItem } from './proto.js';

const CHUNK_TIMEOUT_RETRIES = 3;
const YIELD_WAIT_MS = 20;
/** A chunk yields to client IO at most this long (then it is sent anyway). */
const YIELD_MAX_MS = 1000;

interface Transfer {
  id: number;
  /** `${pg key}:${peer}` */
  key: string;
  pg: PgReplica;
  to: number;
  bytesLeft: number;
  /** Why it should stop, once it should (checked between chunks). */
  cancelled: string | null;
  /** Next chunk's seq. */
  seq: number;
  pgEpoch: number;
  /** Objects written since the pass that sent them read them. */
  dirty: ObjectSet;
  /** The snapshot's index: raft's, then the applied point at the final pass. */
  index: number;
  /**
   * Set (why) when more was written after the final pass's index than the log
   * kept for it holds, before the pass ended: the pass stops at its next chunk
   * and starts again from a newer index (see run()).
   */
  finalStale: string | null;
  /** The objects a final pass stopped by finalStale had not sent yet. */
  unsent: ObjectRef[];
}

/** An object of a cluster volume. */
interface ObjectRef {
  volumeId: number;
  obj: number;
}

/** A set of objects, per volume (any volume id and object index: no packed key that could overflow). */
class ObjectSet {
  private readonly byVolume = new Map<number, Set<number>>();
  size = 0;

  add(volumeId: number, obj: number): void {
    let objs = this.byVolume.get(volumeId);
    if (objs === undefined) this.byVolume.set(volumeId, (objs = new Set()));
    if (objs.has(obj)) return;
    objs.add(obj);
    this.size++;
  }

  /** Every object, the set left empty. */
  take(): ObjectRef[] {
    const out: ObjectRef[] = [];
    for (const [volumeId, objs] of this.byVolume) for (const obj of objs) out.push({ volumeId, obj });
    this.byVolume.clear();
    this.size = 0;
    return out;
  }
}

/** Passes that send again the objects written behind the copy, before the final one. */
const CATCH_UP_PASSES_MAX = 3;
/** The final pass begins once at most this many objects were written behind the copy. */
const FINAL_PASS_OBJECTS_MAX = 4;
/**
 * Final passes a copy makes, each from a newer index, when the log after the
 * previous one's outgrew recoveryRetainBytes before it ended; then the transfer
 * is cancelled as stale and raft asks again (a new copy from scratch).
 */
const FINAL_PASS_ATTEMPTS_MAX = 3;

/**
 * The log a leader keeps for a peer it sends a snapshot to: entries (index,
 * countedTo], `bytes` of entry data, while the transfer runs and then until the
 * peer's match reaches catchUpTo (it catches up from the log). `index` rises
 * with the peer's match meanwhile.
 */
interface Hold {
  pg: PgReplica;
  to: number;
  term: number;
  index: number;
  countedTo: number;
  bytes: number;
  /** 0 while the snapshot is on its way; then the commit index when it arrived. */
  catchUpTo: number;
  transfer: Transfer;
  /**
   * Held from the index the copy began at while its first pass runs: if the
   * log after it fits the budget when that pass ends, the peer catches up from
   * it and nothing is sent again; past the budget it is dropped quietly and the
   * copy goes on in passes.
   */
  tentative: boolean;
}

interface Queued {
  pg: PgReplica;
  m: MsgSnap;
}

export class SnapshotSender {
  private nextTransferId = 1;
  /** Running transfers by `${pg key}:${peer}`: at most recoveryTransfersMax (with `starting`). */
  private readonly transfers = new Map<string, Transfer>();
  /**
   * Waiting for a slot, in arrival order; at most one per (PG, peer), so bounded
   * by the PGs this OSD leads times their peers.
   */
  private readonly queue = new Map<string, Queued>();
  /** Given a slot, waiting for the PG's next pass to renew their snapshot point. */
  private readonly starting = new Map<string, PgReplica>();
  /** Logs kept for peers being sent a snapshot or catching up after one: at most one per (PG, peer). */
  private readonly holds = new Map<string, Hold>();
  /** Token bucket for recovery bandwidth. */
  private tokensBytes = 0;
  private tokensAtMs = -1;

  constructor(
    private readonly osd: OsdCore,
    private readonly store: ObjectStore,
    private readonly net: OsdNet,
    private readonly clock: Clock,
    private readonly config: OsdConfig,
    /** Where this process's transfer ids start (random per start: see transferId). */
    private readonly transferIdBase = 0,
  ) {
    assert(config.recoveryTransfersMax >= 1, `recoveryTransfersMax ${config.recoveryTransfersMax} < 1`);
    this.chunkBytes = Math.min(SNAPSHOT_CHUNK_BYTES_MAX, config.snapshotChunkBytes);
  }

  private readonly chunkBytes: number;

  /**
   * A transfer id no receiver has seen from this OSD: the sender's id in the high
   * bits, then a count from a base drawn at start. Receivers remember completed
   * ids (and answer their chunks Ok without writing them); a count that began
   * at 1 again after a restart met those and its copies were acknowledged unwritten.
   */
  private transferId(): number {
    const n = (this.transferIdBase + this.nextTransferId++) % 2 ** 32;
    return (this.osd.id % 2 ** 20) * 2 ** 32 + n;
  }

  /** Bytes still to send to pg's peers: the running transfers' rest, and a whole copy for each queued one. */
  bytesLeft(pg: PgReplica): number {
    let n = 0;
    for (const t of this.transfers.values()) if (t.pg === pg) n += t.bytesLeft;
    let waiting = 0;
    for (const q of this.queue.values()) if (q.pg === pg) waiting++;
    for (const p of this.starting.values()) if (p === pg) waiting++;
    if (waiting > 0) n += waiting * this.pgBytes(pg);
    return n;
  }

  /** Transfers running or about to (at most recoveryTransfersMax), and waiting for a slot. */
  get counts(): { running: number; queued: number } {
    return { running: this.transfers.size + this.starting.size, queued: this.queue.size };
  }

  stopAll(): void {
    for (const t of this.transfers.values()) t.cancelled = 'cancelled';
    this.queue.clear();
    this.starting.clear();
    this.holds.clear();
  }

  /** Holds of log kept for peers (retainIndex), all PGs. */
  get holdCount(): number {
    return this.holds.size;
  }

  /** pg's replica here is no longer leader: the log it kept for peers may go (a later term's leader keeps its own). */
  dropHolds(pg: PgReplica): void {
    for (const [k, h] of this.holds) if (h.pg === pg) this.holds.delete(k);
  }

  /** pg left this OSD: its queued transfers go (running ones stop at their next chunk). */
  forgetPg(pg: PgReplica): void {
    for (const [k, q] of this.queue) if (q.pg === pg) this.queue.delete(k);
    for (const [k, p] of this.starting) if (p === pg) this.starting.delete(k);
    for (const t of this.transfers.values()) if (t.pg === pg) t.cancelled = 'the PG left this OSD';
    this.dropHolds(pg);
    this.pump();
  }

  /** Raft asked for a snapshot to be sent (Ready.messages): now, or once a slot frees. */
  start(pg: PgReplica, m: MsgSnap): void {
    const k = `${pg.id.key}:${m.to}`;
    if (this.transfers.has(k) || this.starting.has(k)) return;
    pg.sendingSnapshotTo.add(m.to);
    if (this.transfers.size + this.starting.size < this.config.recoveryTransfersMax && this.queue.size === 0) {
      this.begin(pg, m, k);
      return;
    }
    // Replaces an older request for the same peer (raft asked again) in place.
    if (!this.queue.has(k)) this.osd.counters.snapshotsQueued++;
    this.queue.set(k, { pg, m });
    this.pump();
  }

  /**
   * The index below which pg's log may be compacted without making a snapshot
   * being sent stale, or a peer that installed one fall behind the log again;
   * null when none needs the log kept. Counts the entry bytes each hold of pg
   * needs, up to `top`. A hold that needs more than recoveryRetainBytes is
   * dropped: during a first pass quietly (the copy goes on in passes), during a
   * final pass that pass stops and starts again from a newer index (finalStale),
   * after the copy the peer is logged as fallen behind. Called before compacting
   * a leader's log; `matchOf` gives a peer's raft match index.
   */
  retainIndex(pg: PgReplica, top: number, bytesAt: (index: number) => number | undefined, matchOf: (peer: number) => number | undefined): number | null {
    const limit = this.config.recoveryRetainBytes;
    let hold: number | null = null;
    for (const [k, h] of this.holds) {
      if (h.pg !== pg) continue;
      const match = matchOf(h.to);
      if (pg.node.term !== h.term || match === undefined || (h.catchUpTo > 0 && match >= h.catchUpTo)) {
        this.holds.delete(k); // leadership moved, the peer left, or it caught up
        continue;
      }
      // The peer's match moved up (it caught up a part): those entries may go.
      for (const upTo = Math.min(match, h.countedTo); h.index < upTo; h.index++) h.bytes -= bytesAt(h.index + 1) ?? 0;
      for (; h.countedTo < top && h.bytes <= limit; h.countedTo++) {
        const b = bytesAt(h.countedTo + 1);
        if (b === undefined) {
          h.bytes = Infinity;
          break;
        }
        h.bytes += b;
      }
      if (h.bytes > limit) {
        this.holds.delete(k);
        if (h.tentative) continue;
        this.osd.counters.snapshotsStale++;
        const why = `stale: more than ${limit} bytes of entries were written after index ${h.index}`;
        if (h.catchUpTo === 0) h.transfer.finalStale ??= why;
        else this.osd.logInfo(`PG ${pg.id.poolId}.${pg.id.pg}: osd.${h.to} fell behind the log kept for it after its snapshot (${why})`);
        continue;
      }
      hold = hold === null ? h.index : Math.min(hold, h.index);
    }
    return hold;
  }

  private begin(pg: PgReplica, m: MsgSnap, k: string): void {
    const t: Transfer = {
      id: this.transferId(),
      key: k,
      pg,
      to: m.to,
      bytesLeft: 0,
      cancelled: null,
      seq: 0,
      pgEpoch: 0,
      dirty: new ObjectSet(),
      index: m.snapshot.index,
      finalStale: null,
      unsent: [],
    };
    this.transfers.set(k, t);
    pg.sendingSnapshotTo.add(m.to);
    this.run(pg, m, t).then(
      (why) => this.finish(pg, k, t, m, why),
      (err: Error) => this.finish(pg, k, t, m, `error: ${err.message}`),
    );
  }

  /** Gives free slots to queued requests, oldest first; each renews its snapshot point in the PG's next pass. */
  private pump(): void {
    while (this.transfers.size + this.starting.size < this.config.recoveryTransfersMax && this.queue.size > 0) {
      const [k, q] = this.queue.entries().next().value as [string, Queued];
      this.queue.delete(k);
      if (q.pg.removed) continue;
      this.starting.set(k, q.pg);
      this.osd.runLater(q.pg, () => {
        // Forgotten meanwhile (stopAll, forgetPg): the slot is already free.
        if (this.starting.get(k) !== q.pg) return;
        this.starting.delete(k);
        const fresh = q.pg.node.renewSnapshot(q.m.to, q.m.term);
        if (fresh !== null) this.begin(q.pg, fresh, k);
        else {
          // Not the leader of that term any more, or the peer no longer waits.
          if (!this.queue.has(k)) q.pg.sendingSnapshotTo.delete(q.m.to);
          this.pump();
        }
      });
    }
  }

  /** why: null when the transfer completed, else why it stopped (logged: recovery is what an operator watches). */
  private finish(pg: PgReplica, k: string, t: Transfer, m: MsgSnap, why: string | null): void {
    const ok = why === null;
    this.osd.logInfo(`PG ${pg.id.poolId}.${pg.id.pg}: snapshot at index ${t.index} (term ${m.term}) to osd.${t.to}, transfer ${t.id}: ${ok ? 'sent' : `not completed (${why})`}`);
    this.transfers.delete(k);
    const h = this.holds.get(k);
    if (h?.transfer === t) {
      if (ok) h.catchUpTo = Math.max(1, pg.node.commit);
      else this.holds.delete(k);
    }
    if (!this.queue.has(k)) pg.sendingSnapshotTo.delete(t.to);
    // Only to the term that asked (a later term has its own request), and with
    // the index shipped: a final pass moved it up from the one raft asked for, and
    // the peer is probed from there (from raft's, the log before it may be gone
    // and the probe would ask for another copy).
    this.osd.runLater(pg, () => {
      if (pg.node.term === m.term) pg.node.reportSnapshot(t.to, ok, t.index);
    });
    this.pump();
  }

  private pgBytes(pg: PgReplica): number {
    const map = this.osd.clusterMap;
    if (!map) return 0;
    let n = 0;
    for (const v of map.volumes) if (v.poolId === pg.id.poolId) n += this.store.pgObjects(pg.id.poolId, pg.id.pgCount, pg.id.pg, v.id).length;
    return n * this.store.objectSizeBytes;
  }

  /**
   * Ships pg's objects as of at least m's index. Unless the log kept after that
   * index covers what was written meanwhile, ships again those written behind
   * the copy (up to CATCH_UP_PASSES_MAX passes, until few are), then — after
   * moving the snapshot's index up to the applied point of then — the last ones
   * written, with the snap message. Every object the final pass leaves out was
   * last written before its copy was read, so the receiver holds the state as of
   * that index (or newer, which the entries after it rewrite in order).
   */
  private async run(pg: PgReplica, m: MsgSnap, t: Transfer): Promise<string | null> {
    // The shipped state must include everything up to the snapshot index.
    await this.applied(pg, m.snapshot.index);
    const map = this.osd.clusterMap;
    if (!map) return 'no cluster map';
    const work: ObjectRef[] = [];
    for (const v of map.volumes) {
      if (v.poolId !== pg.id.poolId) continue;
      for (const obj of this.store.pgObjects(pg.id.poolId, pg.id.pgCount, pg.id.pg, v.id)) work.push({ volumeId: v.id, obj });
    }
    t.pgEpoch = map.pgs[String(pg.id.poolId)]?.[pg.id.pg]?.epoch ?? 0;
    this.track(pg);
    const first = this.hold(t, m.term, m.snapshot.index, true);
    try {
      t.bytesLeft = work.length * this.store.objectSizeBytes;
      let why = await this.sendObjects(pg, t, m, work, null);
      if (why !== null) return why;
      if (this.holds.get(t.key) === first) {
        // What was written behind the first pass fits the log kept after its
        // index: the peer catches up from there, nothing is sent again.
        first.tentative = false;
        why = await this.sendObjects(pg, t, m, [], m);
        if (t.finalStale === null || why !== t.finalStale) return why;
        // The log outgrew the budget before the (empty) last chunk went: final
        // passes from a newer index, as below.
        why = null;
      }
      for (let pass = 0; why === null && pass < CATCH_UP_PASSES_MAX && t.dirty.size > FINAL_PASS_OBJECTS_MAX; pass++) {
        why = await this.sendObjects(pg, t, m, this.takeDirty(t), null);
      }
      if (why !== null) return why;
      // Final pass: the snapshot moves up to the applied point now, and the log
      // after it is kept from here on (retainIndex). If more is written meanwhile
      // than that log may hold, the pass stops and starts again from a newer
      // index, with what it had not sent and what was written since: the
      // receiver keeps what it has (a new transfer would drop it and copy the
      // whole PG again).
      for (let attempt = 1; ; attempt++) {
        if (!pg.isLeader || pg.node.term !== m.term) return 'no longer the leader';
        const point = pg.node.snapshotPoint();
        t.index = point.index;
        t.finalStale = null;
        this.hold(t, m.term, point.index, false);
        await this.applied(pg, point.index);
        const keys = new ObjectSet();
        for (const o of t.unsent.splice(0)) keys.add(o.volumeId, o.obj);
        for (const o of t.dirty.take()) keys.add(o.volumeId, o.obj);
        // All that is left to send (an object both unsent and written again counts once).
        t.bytesLeft = keys.size * this.store.objectSizeBytes;
        // A small final pass goes at once, unthrottled: the shorter it takes, the
        // less is written meanwhile (a hot object written faster than the rate
        // sends it would make every final pass stale).
        const burst = keys.size <= FINAL_PASS_OBJECTS_MAX;
        why = await this.sendObjects(pg, t, m, keys.take(), { ...m, snapshot: point }, burst);
        if (t.finalStale === null || why !== t.finalStale) return why;
        if (attempt >= FINAL_PASS_ATTEMPTS_MAX) return `${why} (${attempt} final passes)`;
        this.osd.logInfo(`PG ${pg.id.poolId}.${pg.id.pg}: snapshot transfer ${t.id} to osd.${t.to}: final pass from index ${point.index} went ${why}; another from a newer index (${t.unsent.length} object(s) not sent yet)`);
      }
    } finally {
      this.untrack(pg, t);
    }
  }

  /**
   * Sends the objects `keys` in chunks; with `last`, the final chunk is marked
   * done and carries it (an empty one if there is nothing to send). The first
   * chunk of a transfer carries m, so the receiver can refuse before dropping
   * its data. null once all were taken, else why not.
   */
  private async sendObjects(pg: PgReplica, t: Transfer, m: MsgSnap, keys: ObjectRef[], last: MsgSnap | null, burst = false): Promise<string | null> {
    const objBytes = this.store.objectSizeBytes;
    let k = 0;
    do {
      const items: SnapshotItem[] = [];
      const chunkStart = k;
      let bytes = 0;
      let counted = 0;
      while (k < keys.length && items.length < SNAPSHOT_CHUNK_ITEMS_MAX && (bytes === 0 || bytes + objBytes <= this.chunkBytes)) {
        const { volumeId, obj } = keys[k++];
        const offsetBytes = obj * objBytes;
        counted += objBytes;
        // An object this OSD no longer holds (trimmed while the copy ran) is sent
        // as a zero range: as data (zeros) it would allocate a whole object on
        // the receiver.
        const [extent] = await this.store.blockStatus(volumeId, offsetBytes, objBytes);
        if (extent.hole) {
          items.push({ volumeId, offsetBytes, zeroBytes: objBytes });
          continue;
        }
        const data = Buffer.allocUnsafe(objBytes);
        await this.store.read(volumeId, offsetBytes, objBytes, data, 0);
        items.push({ volumeId, offsetBytes, data });
        bytes += objBytes;
      }
      await this.throttle(bytes, t, burst);
      if (t.cancelled !== null) return t.cancelled;
      if (t.finalStale !== null && last !== null) {
        // This chunk's objects and the rest go in the next final pass.
        t.unsent = keys.slice(chunkStart);
        return t.finalStale;
      }
      // Leadership lost (and maybe regained in a later term, whose own request
      // for a snapshot must not wait behind this one).
      if (!pg.isLeader || pg.node.term !== m.term) return 'no longer the leader';
      const done = last !== null && k >= keys.length;
      const seq = t.seq++;
      const chunk: SnapshotChunk = {
        poolId: pg.id.poolId,
        pg: pg.id.pg,
        pgEpoch: t.pgEpoch,
        fromOsd: this.osd.id,
        transferId: t.id,
        seq,
        done,
        items,
        // In the first chunk too: the receiver refuses a snapshot that is not
        // newer than its commit before it drops anything.
        snap: done ? (last ?? undefined) : seq === 0 ? m : undefined,
      };
      const refused = await this.sendChunk(t.to, chunk);
      if (refused !== null) return `chunk ${chunk.seq}: ${refused}`;
      t.bytesLeft = Math.max(0, t.bytesLeft - counted);
    } while (k < keys.length);
    return null;
  }

  /** Keeps pg's log after `index` for t's peer (retainIndex), replacing what was kept for it. */
  private hold(t: Transfer, term: number, index: number, tentative: boolean): Hold {
    const h: Hold = { pg: t.pg, to: t.to, term, index, countedTo: index, bytes: 0, catchUpTo: 0, transfer: t, tentative };
    this.holds.set(t.key, h);
    return h;
  }

  private applied(pg: PgReplica, index: number): Promise<void> {
    return new Promise<void>((resolve) => pg.apply.whenDone(index, resolve));
  }

  /** The objects written behind the copy so far (to send again); tracking goes on. */
  private takeDirty(t: Transfer): ObjectRef[] {
    const keys = t.dirty.take();
    t.bytesLeft += keys.length * this.store.objectSizeBytes;
    return keys;
  }

  /** pg's applied writes mark the objects they touch dirty in each of its running transfers. */
  private track(pg: PgReplica): void {
    const objBytes = this.store.objectSizeBytes;
    pg.apply.onWritten = (volumeId, startBytes, endBytes) => {
      for (const t of this.transfers.values()) {
        if (t.pg !== pg) continue;
        for (let obj = Math.floor(startBytes / objBytes); obj * objBytes < endBytes; obj++) t.dirty.add(volumeId, obj);
      }
    };
  }

  private untrack(pg: PgReplica, t: Transfer): void {
    for (const o of this.transfers.values()) if (o !== t && o.pg === pg) return;
    pg.apply.onWritten = null;
  }

  /** null once the receiver took the chunk, else why not. */
  private async sendChunk(to: number, chunk: SnapshotChunk): Promise<string | null> {
    let last = '';
    for (let attempt = 0; attempt < CHUNK_TIMEOUT_RETRIES; attempt++) {
      try {
        const resp = await this.net.sendSnapshotChunk(to, chunk);
        return resp.status === Status.Ok ? null : `refused: ${resp.message ?? `status ${resp.status}`}`;
      } catch (err) {
        last = (err as Error).message;
        await this.sleep(YIELD_WAIT_MS * (attempt + 1));
      }
    }
    return `${CHUNK_TIMEOUT_RETRIES} attempts failed, last: ${last}`;
  }

  /**
   * Waits for the recovery rate (and, bounded, for client IO to drop). A burst
   * does not wait: its bytes are charged, so the transfers after it wait for
   * them instead (the rate holds on average).
   */
  private async throttle(bytes: number, t: Transfer, burst: boolean): Promise<void> {
    // Bounded: the client IO may be waiting for this very copy (a PG whose other
    // replicas are down or installing has no quorum until it arrives).
    const yieldUntilMs = this.clock.nowMs() + YIELD_MAX_MS;
    while (!burst && t.cancelled === null && this.osd.clientInFlight > this.config.recoveryYieldInFlight && this.clock.nowMs() < yieldUntilMs) await this.sleep(YIELD_WAIT_MS);
    const rate = this.config.recoveryBytesPerSec;
    for (;;) {
      const now = this.clock.nowMs();
      if (this.tokensAtMs < 0) this.tokensAtMs = now;
      this.tokensBytes = Math.min(rate, this.tokensBytes + ((now - this.tokensAtMs) * rate) / 1000);
      this.tokensAtMs = now;
      if (burst || this.tokensBytes >= bytes || bytes > rate) {
        this.tokensBytes -= bytes;
        return;
      }
      await this.sleep(Math.max(1, ((bytes - this.tokensBytes) * 1000) / rate));
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.clock.setTimer(ms, resolve));
  }
}
