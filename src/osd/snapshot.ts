// PG snapshot transfer (raft InstallSnapshot, §7) for followers and new
// replicas that need entries the leader no longer has. The leader ships the
// PG's objects as they are in its engine once it has applied at least the
// snapshot index: a "fuzzy" copy that may already contain some later writes,
// which is correct because the follower then receives and re-applies every
// entry after the snapshot index in order, and block writes are idempotent.
//
// Sender: throttled to recoveryBytesPerSec and paused while the OSD has more
// than recoveryYieldInFlight client requests in flight (user IO first). One
// transfer per (PG, peer); a failure reports the snapshot as failed so raft
// probes again later.
// Receiver: the first chunk (seq 0) drops the PG's local objects, later chunks
// write objects; the last one flushes the engine (the data must be durable
// before the WAL records the snapshot) and then steps the snap message into the
// node, which emits Ready.snapshot for the WAL.
import type { Clock } from '../io/clock.js';
import type { MsgSnap } from '../raft/types.js';
import type { ObjectStore } from './objects.js';
import type { OsdConfig, OsdCore, OsdNet } from './osd.js';
import type { PgReplica } from './pg.js';
import { SNAPSHOT_CHUNK_BYTES_MAX, Status, type ClientResponse, type SnapshotChunk, type SnapshotItem } from './proto.js';

const CHUNK_TIMEOUT_RETRIES = 3;
const YIELD_WAIT_MS = 20;

interface Transfer {
  id: number;
  to: number;
  bytesLeft: number;
  cancelled: boolean;
}

export class SnapshotSender {
  private nextTransferId = 1;
  private readonly transfers = new Map<string, Transfer>();
  /** Token bucket for recovery bandwidth. */
  private tokensBytes = 0;
  private tokensAtMs = -1;

  constructor(
    private readonly osd: OsdCore,
    private readonly store: ObjectStore,
    private readonly net: OsdNet,
    private readonly clock: Clock,
    private readonly config: OsdConfig,
  ) {}

  bytesLeft(pg: PgReplica): number {
    let n = 0;
    for (const [k, t] of this.transfers) if (k.startsWith(`${pg.id.key}:`)) n += t.bytesLeft;
    return n;
  }

  stopAll(): void {
    for (const t of this.transfers.values()) t.cancelled = true;
  }

  start(pg: PgReplica, m: MsgSnap): void {
    const k = `${pg.id.key}:${m.to}`;
    if (this.transfers.has(k)) return;
    const t: Transfer = { id: this.osd.id * 1_000_000 + this.nextTransferId++, to: m.to, bytesLeft: 0, cancelled: false };
    this.transfers.set(k, t);
    pg.sendingSnapshotTo.add(m.to);
    this.run(pg, m, t).then(
      (why) => this.finish(pg, k, t, m, why),
      (err: Error) => this.finish(pg, k, t, m, `error: ${err.message}`),
    );
  }

  /** why: null when the transfer completed, else why it stopped (logged: recovery is what an operator watches). */
  private finish(pg: PgReplica, k: string, t: Transfer, m: MsgSnap, why: string | null): void {
    const ok = why === null;
    this.osd.logInfo(`PG ${pg.id.poolId}.${pg.id.pg}: snapshot at index ${m.snapshot.index} (term ${m.term}) to osd.${t.to}, transfer ${t.id}: ${ok ? 'sent' : `not completed (${why})`}`);
    this.transfers.delete(k);
    pg.sendingSnapshotTo.delete(t.to);
    this.osd.runLater(pg, () => pg.node.reportSnapshot(t.to, ok));
  }

  private async run(pg: PgReplica, m: MsgSnap, t: Transfer): Promise<string | null> {
    // The shipped state must include everything up to the snapshot index.
    await new Promise<void>((resolve) => pg.apply.whenDone(m.snapshot.index, resolve));
    const map = this.osd.clusterMap;
    if (!map) return 'no cluster map';
    const objBytes = this.store.objectSizeBytes;
    const work: { volumeId: number; obj: number }[] = [];
    for (const v of map.volumes) {
      if (v.poolId !== pg.id.poolId) continue;
      for (const obj of this.store.pgObjects(pg.id.poolId, pg.id.pgCount, pg.id.pg, v.id)) work.push({ volumeId: v.id, obj });
    }
    t.bytesLeft = work.length * objBytes;
    let seq = 0;
    let k = 0;
    const pgEpoch = map.pgs[String(pg.id.poolId)]?.[pg.id.pg]?.epoch ?? 0;
    do {
      const items: SnapshotItem[] = [];
      let bytes = 0;
      while (k < work.length && bytes + objBytes <= SNAPSHOT_CHUNK_BYTES_MAX) {
        const w = work[k++];
        const data = Buffer.allocUnsafe(objBytes);
        await this.store.read(w.volumeId, w.obj * objBytes, objBytes, data, 0);
        items.push({ volumeId: w.volumeId, offsetBytes: w.obj * objBytes, data });
        bytes += objBytes;
      }
      await this.throttle(bytes, t);
      if (t.cancelled || !pg.isLeader) return t.cancelled ? 'cancelled' : 'no longer the leader';
      const done = k >= work.length;
      const chunk: SnapshotChunk = {
        poolId: pg.id.poolId,
        pg: pg.id.pg,
        pgEpoch,
        fromOsd: this.osd.id,
        transferId: t.id,
        seq: seq++,
        done,
        items,
        snap: done ? m : undefined,
      };
      const refused = await this.sendChunk(t.to, chunk);
      if (refused !== null) return `chunk ${chunk.seq}: ${refused}`;
      t.bytesLeft = Math.max(0, t.bytesLeft - bytes);
    } while (k < work.length);
    return null;
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

  private async throttle(bytes: number, t: Transfer): Promise<void> {
    while (!t.cancelled && this.osd.clientInFlight > this.config.recoveryYieldInFlight) await this.sleep(YIELD_WAIT_MS);
    const rate = this.config.recoveryBytesPerSec;
    for (;;) {
      const now = this.clock.nowMs();
      if (this.tokensAtMs < 0) this.tokensAtMs = now;
      this.tokensBytes = Math.min(rate, this.tokensBytes + ((now - this.tokensAtMs) * rate) / 1000);
      this.tokensAtMs = now;
      if (this.tokensBytes >= bytes || bytes > rate) {
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

/** Completed transfer ids remembered per OSD, so a retried (duplicate) chunk of one is never applied again. */
const COMPLETED_TRANSFERS_MAX = 1024;

export class SnapshotReceiver {
  private readonly completed = new Set<number>();

  constructor(
    private readonly osd: OsdCore,
    private readonly store: ObjectStore,
  ) {}

  async receive(pg: PgReplica, chunk: SnapshotChunk): Promise<ClientResponse> {
    // A sender retries a chunk whose answer timed out: a copy of a chunk of a
    // finished transfer must not overwrite data applied since (reproducer: sim seed 1078).
    if (this.completed.has(chunk.transferId)) return { status: Status.Ok };
    // A snapshot the node would refuse (not newer than its commit) must not touch its data.
    if (chunk.snap && !pg.node.acceptsSnapshot(chunk.snap)) return { status: Status.NotReady, message: 'snapshot is not newer than this replica' };
    if (chunk.seq === 0) {
      if (pg.isLeader) return { status: Status.NotReady, message: 'a leader does not take snapshots' };
      pg.installingTransfer = chunk.transferId;
      this.osd.noteInstallStart();
      this.osd.logInfo(`PG ${pg.id.poolId}.${pg.id.pg}: installing snapshot transfer ${chunk.transferId} from osd.${chunk.fromOsd} (commit ${pg.node.commit}, term ${pg.node.term}): dropping the PG's data`);
      // No entry may still be applying (or start) once the old data is dropped: its
      // write would land on top of the snapshot's newer data (apply.ts header).
      await pg.apply.pause();
      if (pg.installingTransfer !== chunk.transferId) return { status: Status.NotReady, message: `transfer ${chunk.transferId} was superseded` };
      await this.store.dropPg(pg.id.poolId, pg.id.pgCount, pg.id.pg);
    } else if (pg.installingTransfer !== chunk.transferId) {
      return { status: Status.NotReady, message: `transfer ${chunk.transferId} is not the one being installed` };
    }
    for (const it of chunk.items) await this.store.write(it.volumeId, it.offsetBytes, it.data);
    if (chunk.done) {
      this.completed.add(chunk.transferId);
      if (this.completed.size > COMPLETED_TRANSFERS_MAX) this.completed.delete(this.completed.values().next().value as number);
      await this.store.engine.flush();
      if (chunk.snap) {
        this.osd.logInfo(`PG ${pg.id.poolId}.${pg.id.pg}: snapshot transfer ${chunk.transferId} written; stepping its index ${chunk.snap.snapshot.index} (commit ${pg.node.commit}, term ${pg.node.term})`);
        this.osd.stepLater(pg, chunk.snap);
      }
    }
    return { status: Status.Ok };
  }
}
