// PG snapshot transfer, receiving side (raft InstallSnapshot, §7; the sender is
// snapshot.ts). The first chunk (seq 0) drops the PG's local objects (after it
// checked the snapshot is newer than its commit; a leader or candidate refuses)
// and makes the node await a snapshot, durably (WAL AWAIT_SNAP): appends are
// answered with a reset, so whichever leader there is sends one, and the node
// does not campaign. Later chunks write objects (or free zero ranges); the last
// one flushes the engine (the data must be durable before the WAL records the
// snapshot) and then steps the snap message into the node in the PG's next
// pass, which emits Ready.snapshot for the WAL.
//
// Invariants: a PG's chunks are processed one at a time, in seq order; only the
// transfer named by pg.installingTransfer writes (a newer transfer's first chunk,
// or the PG's removal, stops the one in progress before its next write); its
// snapshot is stepped only if it is still that transfer when the pass runs.
import type { MsgSnap } from '../raft/types.js';
import type { ObjectStore } from './objects.js';
import type { OsdCore } from './osd.js';
import type { PgReplica } from './pg.js';
import { Status, type ClientResponse, type SnapshotChunk } from './proto.js';

/** Completed (and superseded) transfer ids remembered per OSD, so a retried (duplicate) chunk of one is never applied again. */
const COMPLETED_TRANSFERS_MAX = 1024;

/** Adds id to a bounded set of remembered transfer ids (the oldest goes first). */
function remember(ids: Set<number>, id: number): void {
  ids.add(id);
  if (ids.size > COMPLETED_TRANSFERS_MAX) ids.delete(ids.values().next().value as number);
}

export class SnapshotReceiver {
  private readonly completed = new Set<number>();
  /** Transfers a newer one superseded (bounded like completed): a late copy of one of their chunks must not take over again. */
  private readonly superseded = new Set<number>();

  constructor(
    private readonly osd: OsdCore,
    private readonly store: ObjectStore,
  ) {}

  /**
   * Chunks of one PG are processed one at a time, in order (a per-PG chain):
   * a copy sends an object again in a later pass, so an earlier chunk that
   * finished after a later one would leave older data. A sender's retry of the
   * chunk being processed (its answer timed out) gets the original's answer; a
   * retry of a chunk already written is answered Ok without writing it again.
   */
  receive(pg: PgReplica, chunk: SnapshotChunk): Promise<ClientResponse> {
    // A sender retries a chunk whose answer timed out: a copy of a chunk of a
    // finished transfer must not overwrite data applied since (reproducer: sim seed 1078).
    if (this.completed.has(chunk.transferId)) return Promise.resolve({ status: Status.Ok });
    const cur = pg.installChunk;
    if (cur !== null && cur.transferId === chunk.transferId && cur.seq === chunk.seq) return cur.answer;
    // A snapshot the node would refuse (not newer than its commit) must not touch its data.
    if (chunk.snap && !pg.node.acceptsSnapshot(chunk.snap)) return Promise.resolve({ status: Status.NotReady, message: 'snapshot is not newer than this replica' });
    if (chunk.seq === 0) {
      if (pg.node.role !== 'follower') return Promise.resolve({ status: Status.NotReady, message: `a ${pg.node.role} does not take snapshots` });
      if (this.superseded.has(chunk.transferId)) return Promise.resolve({ status: Status.NotReady, message: `transfer ${chunk.transferId} was superseded` });
      if (pg.installingTransfer !== chunk.transferId) {
        // Supersedes the transfer being installed at once: its chunk in progress
        // stops before its next write, and the chain runs this one after it.
        if (pg.installingTransfer !== 0) remember(this.superseded, pg.installingTransfer);
        pg.installingTransfer = chunk.transferId;
        pg.installNextSeq = 0;
      }
    } else if (pg.installingTransfer !== chunk.transferId) {
      return Promise.resolve({ status: Status.NotReady, message: `transfer ${chunk.transferId} is not the one being installed` });
    }
    const answer = pg.installChain.then(() => this.process(pg, chunk));
    const entry = { transferId: chunk.transferId, seq: chunk.seq, answer };
    pg.installChunk = entry;
    pg.installChain = answer.then(
      () => {
        if (pg.installChunk === entry) pg.installChunk = null;
      },
      () => {
        if (pg.installChunk === entry) pg.installChunk = null;
      },
    );
    return answer;
  }

  private async process(pg: PgReplica, chunk: SnapshotChunk): Promise<ClientResponse> {
    const id = chunk.transferId;
    const superseded: ClientResponse = { status: Status.NotReady, message: `transfer ${id} was superseded` };
    // (A removed PG's installingTransfer is 0: osd.ts removeReplica.)
    if (pg.installingTransfer !== id || pg.removed) return superseded;
    if (chunk.seq < pg.installNextSeq) return { status: Status.Ok }; // a retry of a chunk written already
    if (chunk.seq > pg.installNextSeq) return { status: Status.NotReady, message: `transfer ${id}: chunk ${chunk.seq} out of order (expected ${pg.installNextSeq})` };
    if (chunk.seq === 0) {
      // From now on the node answers appends with a reset and does not campaign:
      // any leader (not only this sender, which may be gone) sends a snapshot.
      // Durably so (the WAL), before the data is dropped: a restart in the middle
      // of the copy must not take a partial copy for the state.
      await this.osd.awaitSnapshot(pg);
      if (pg.installingTransfer !== id) return superseded;
      this.osd.noteInstallStart();
      this.osd.logInfo(`PG ${pg.id.poolId}.${pg.id.pg}: installing snapshot transfer ${id} from osd.${chunk.fromOsd} (commit ${pg.node.commit}, term ${pg.node.term}): dropping the PG's data`);
      // No entry may still be applying (or start) once the old data is dropped: its
      // write would land on top of the snapshot's newer data (apply.ts header).
      await pg.apply.pause();
      if (pg.installingTransfer !== id) return superseded;
      await this.store.dropPg(pg.id.poolId, pg.id.pgCount, pg.id.pg);
    }
    for (const it of chunk.items) {
      // A newer transfer took over, or the PG left this OSD: none of this one's
      // data may land in the other copy (or in objects nobody owns any more).
      if (pg.installingTransfer !== id) return superseded;
      if (it.data !== undefined) await this.store.write(it.volumeId, it.offsetBytes, it.data);
      else await this.store.zero(it.volumeId, it.offsetBytes, it.zeroBytes, true);
    }
    if (pg.installingTransfer !== id) return superseded;
    if (chunk.done) {
      // The data must be durable before the WAL records the snapshot. (The seq
      // moves on after: a retry of a done chunk whose flush failed flushes again.)
      await this.store.engine.flush();
      if (pg.installingTransfer !== id) return superseded;
    }
    pg.installNextSeq = chunk.seq + 1;
    if (!chunk.done) return { status: Status.Ok };
    remember(this.completed, id);
    if (chunk.snap) {
      const snap = chunk.snap;
      this.osd.logInfo(`PG ${pg.id.poolId}.${pg.id.pg}: snapshot transfer ${id} written; stepping its index ${snap.snapshot.index} (commit ${pg.node.commit}, term ${pg.node.term})`);
      // Stepped in the PG's next pass, and only if no other transfer began to
      // replace the data meanwhile (its first chunk dropped what this one wrote).
      this.osd.runLater(pg, () => {
        if (pg.installingTransfer === id) pg.node.step(snap);
      });
    }
    return { status: Status.Ok };
  }
}
