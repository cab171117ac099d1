// The ReservationGate of one volume: runs the pure PR state machine (pr.ts) over a
// PrStore, so that every gateway exporting the volume sees one serialized history
// of PERSISTENT RESERVE OUT commands, and delivers the unit attentions and PREEMPT
// AND ABORT aborts those commands raise to this gateway's LU (PrEffects).
//
// Invariants:
// - checkAccess and prIn read the store's current record and never wait; when the
//   store cannot vouch for its record, checkAccess says 'unavailable' for every access
//   class ('always' included: the LU asks for TUR and the like so that a gateway
//   without a lease fails them too) and PR commands answer NOT READY, LOGICAL UNIT NOT
//   ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION (04h/0Ah), as lu.ts does for
//   'unavailable': initiators retry it, then fail over to another path.
// - prOut is a compare-and-set loop: read the record, apply prOut() to its state,
//   write with the record's rev; on a lost race apply again to the newer record. At
//   most casRetriesMax retries, then BUSY. PR OUTs queued at one gate are group
//   committed: applied in arrival order to one state and written with one
//   compare-and-set (up to PR_GATE_BATCH_MAX, and a command that raises events ends
//   the batch so the ring cannot trim them). So races only happen between gateways,
//   and a gateway that lost a race carries all its waiting commands in its next
//   attempt instead of being overtaken command by command. The store resolves a write
//   only once every gateway has it (types.ts), so when prOut answers GOOD no gateway
//   lets IO through under the old state.
// - Events (pr.ts PrEvent) are delivered at most once per gate, in seq order: from
//   every record the store announces and from the gate's own successful writes. The
//   first load sets the starting point to the newest seq then known, so old events are
//   not replayed. Events trimmed from the ring before this gate saw them are lost
//   (logged); the ring keeps at least 64 and every event of the latest command.
// - Every gate delivers every event, whichever nexus it is for: only the gateway that
//   hosts a nexus will ever see that nexus ask for its unit attention.

import { assert } from '../../stdx/assert.js';
import { isTesseraError } from '../../stdx/errors.js';
import type { LogFn } from '../../stdx/log.js';
import { checkAccess as checkAccessPure, decodePrState, prIn as prInPure, prOut as prOutPure } from './pr.js';
import type { PrState } from './pr.js';
import type { AccessClass, Nexus, PrEffects, PrRecord, PrStore, ReservationGate, ScsiResult } from './types.js';
import { SAM_BUSY } from './types.js';
import { ASC_LU_NOT_ACCESSIBLE_TRANSITION, SK_NOT_READY, checkCondition } from './sense.js';

export interface PrGateOptions {
  /** Compare-and-set retries after the first attempt before answering BUSY; default 16. */
  casRetriesMax?: number;
  log?: LogFn;
}

export const PR_GATE_CAS_RETRIES_MAX_DEFAULT = 16;

/** What the gate answers when it cannot know the current PR state: what the LU answers for 'unavailable'. */
export function prUnavailableResult(): ScsiResult {
  return checkCondition(SK_NOT_READY, ASC_LU_NOT_ACCESSIBLE_TRANSITION);
}

interface QueuedPrOut {
  nexus: Nexus;
  cdb: Buffer;
  params: Buffer | null;
  resolve: (result: ScsiResult) => void;
  reject: (err: unknown) => void;
}

/** PR OUTs per group commit at most. */
export const PR_GATE_BATCH_MAX = 32;

/**
 * Applies queued commands in order (at most PR_GATE_BATCH_MAX, stopping after the
 * first that raised events). state is null when none changed anything.
 */
function applyBatch(start: PrState | null, queue: readonly QueuedPrOut[]): { state: PrState | null; results: ScsiResult[] } {
  let state = start;
  let changed = false;
  const results: ScsiResult[] = [];
  for (const cmd of queue.slice(0, PR_GATE_BATCH_MAX)) {
    const outcome = prOutPure(state, cmd.nexus, cmd.cdb, cmd.params);
    results.push(outcome.result);
    if (outcome.state === null) continue;
    const raisedEvents = outcome.state.eventSeq !== (state?.eventSeq ?? 0);
    state = outcome.state;
    changed = true;
    if (raisedEvents) break;
  }
  return { state: changed ? state : null, results };
}

function busy(): ScsiResult {
  return { status: SAM_BUSY, sense: null, dataIn: null };
}

export class PrGate implements ReservationGate {
  /** Aborts of PREEMPT AND ABORT delivered here whose tasks have not settled yet. */
  private readonly abortsInFlight: Array<Promise<void>> = [];
  private readonly casRetriesMax: number;
  private readonly log: LogFn;
  /** Seq of the newest event delivered; null until the first load finished. */
  private lastDeliveredSeq: number | null = null;
  /** Newest eventSeq announced while the first load was still under way. */
  private seqSeenBeforeLoad = 0;
  /** The decoded state of the newest record looked at, by rev (decoding is not free). */
  private decoded: { rev: number; state: PrState | null } | null = null;
  private unsubscribe: (() => void) | null = null;
  /** PR OUTs waiting for (or in) the current group commit, in arrival order. */
  private readonly queue: QueuedPrOut[] = [];
  private draining = false;

  constructor(
    private readonly store: PrStore,
    /** The volume id (decimal string) the record is stored under. */
    readonly key: string,
    private readonly effects: PrEffects,
    opts: PrGateOptions = {},
  ) {
    this.casRetriesMax = opts.casRetriesMax ?? PR_GATE_CAS_RETRIES_MAX_DEFAULT;
    assert(Number.isInteger(this.casRetriesMax) && this.casRetriesMax >= 0, 'PrGate: casRetriesMax');
    this.log = opts.log ?? (() => {});
  }

  /** Constructs and starts a gate. */
  static async open(store: PrStore, key: string, effects: PrEffects, opts?: PrGateOptions): Promise<PrGate> {
    const gate = new PrGate(store, key, effects, opts);
    await gate.start();
    return gate;
  }

  /**
   * Follows the record and loads it. Throws the store's error, or ERR_FORMAT when
   * the stored state is not one pr.ts wrote.
   */
  async start(): Promise<void> {
    assert(this.unsubscribe === null, 'PrGate: started twice');
    // Subscribe first so that no record slips between the load and the subscription;
    // records seen before the load finished only move the starting point.
    this.unsubscribe = this.store.subscribe(this.key, (rec) => this.onRecord(rec));
    const rec = await this.store.load(this.key);
    const state = this.stateOf(rec);
    this.lastDeliveredSeq = Math.max(state?.eventSeq ?? 0, this.seqSeenBeforeLoad);
  }

  /** Stops following the record (the store itself belongs to the caller). */
  close(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  checkAccess(nexus: Nexus, access: AccessClass): 'ok' | 'conflict' | 'unavailable' {
    const state = this.currentState();
    return state === 'unavailable' ? 'unavailable' : checkAccessPure(state, nexus, access);
  }

  async prIn(nexus: Nexus, cdb: Buffer, expectedInBytes: number): Promise<ScsiResult> {
    const state = this.currentState();
    if (state === 'unavailable') return prUnavailableResult();
    return prInPure(state, nexus, cdb, expectedInBytes);
  }

  prOut(nexus: Nexus, cdb: Buffer, params: Buffer | null): Promise<ScsiResult> {
    return new Promise<ScsiResult>((resolve, reject) => {
      this.queue.push({ nexus, cdb, params, resolve, reject });
      if (!this.draining) void this.drain();
    });
  }

  /** Commits the queue batch by batch until it is empty; one drain at a time. */
  private async drain(): Promise<void> {
    this.draining = true;
    try {
      while (this.queue.length > 0) {
        try {
          await this.commitBatch();
        } catch (err) {
          // A programmer error (pr.ts threw, the store broke its contract): fail the
          // batch's commands rather than leave them hanging; the next batch goes on.
          for (const cmd of this.queue.splice(0, PR_GATE_BATCH_MAX)) cmd.reject(err);
        }
      }
    } finally {
      this.draining = false;
    }
  }

  /**
   * One group commit: apply the queued commands in order to the current state, write
   * the result with one compare-and-set, answer them. A command that raises events
   * ends the batch, so no later command of the same write can trim them from the
   * ring. On a lost race everything is applied again to the newer record.
   */
  private async commitBatch(): Promise<void> {
    let rec = this.store.current(this.key);
    for (let attempt = 0; ; attempt++) {
      const state = rec === 'unavailable' ? 'unavailable' : this.tryStateOf(rec);
      if (rec === 'unavailable' || state === 'unavailable') {
        this.answer(Math.min(this.queue.length, PR_GATE_BATCH_MAX), () => prUnavailableResult());
        return;
      }
      const batch = applyBatch(state, this.queue);
      if (batch.state === null) {
        this.answer(batch.results.length, (i) => batch.results[i]);
        return;
      }
      let cas;
      try {
        cas = await this.store.compareAndSet(this.key, rec.rev, batch.state);
      } catch (err) {
        // Lease lost, monitor unreachable...: the write may or may not have happened;
        // the initiator retries after NOT READY and finds out with PR IN.
        if (!isTesseraError(err)) throw err;
        this.log('warn', `PR OUT on volume ${this.key}: store write failed (${err.code}): ${err.message}`);
        this.answer(batch.results.length, () => prUnavailableResult());
        return;
      }
      if (cas.ok) {
        this.decoded = { rev: cas.rev, state: batch.state };
        this.deliver(batch.state);
        // PREEMPT AND ABORT: answer only once the preempted tasks here can no longer write.
        const aborting = this.abortsInFlight.splice(0);
        if (aborting.length > 0) await Promise.all(aborting);
        this.answer(batch.results.length, (i) => batch.results[i]);
        return;
      }
      if (attempt >= this.casRetriesMax) {
        this.log('warn', `PR OUT on volume ${this.key}: gave up after ${attempt + 1} lost compare-and-set races`);
        this.answer(batch.results.length, () => busy());
        return;
      }
      rec = cas.current;
    }
  }

  /** Resolves the first `count` queued commands. */
  private answer(count: number, resultOf: (index: number) => ScsiResult): void {
    this.queue.splice(0, count).forEach((cmd, i) => cmd.resolve(resultOf(i)));
  }

  private currentState(): PrState | null | 'unavailable' {
    const rec = this.store.current(this.key);
    return rec === 'unavailable' ? 'unavailable' : this.tryStateOf(rec);
  }

  private stateOf(rec: PrRecord): PrState | null {
    if (this.decoded !== null && this.decoded.rev === rec.rev) return this.decoded.state;
    const state = decodePrState(rec.state);
    this.decoded = { rev: rec.rev, state };
    return state;
  }

  /** A record whose state does not decode is as good as no record: 'unavailable'. */
  private tryStateOf(rec: PrRecord): PrState | null | 'unavailable' {
    try {
      return this.stateOf(rec);
    } catch (err) {
      if (!isTesseraError(err, 'ERR_FORMAT')) throw err;
      this.log('error', `PR record of volume ${this.key} rev ${rec.rev}: ${err.message}`);
      return 'unavailable';
    }
  }

  private onRecord(rec: PrRecord): void {
    const state = this.tryStateOf(rec);
    if (state === 'unavailable' || state === null) return;
    if (this.lastDeliveredSeq === null) {
      this.seqSeenBeforeLoad = Math.max(this.seqSeenBeforeLoad, state.eventSeq);
      return;
    }
    this.deliver(state);
  }

  private deliver(state: PrState): void {
    let last = this.lastDeliveredSeq;
    if (last === null) return; // still loading: start() sets the starting point
    if (state.eventSeq < last) {
      // The record was rewritten from scratch (not by pr.ts's rules): start over from it.
      this.log('warn', `PR record of volume ${this.key}: event seq went back from ${last} to ${state.eventSeq}`);
      this.lastDeliveredSeq = state.eventSeq;
      return;
    }
    const oldestKept = state.events.length > 0 ? state.events[0].seq : state.eventSeq + 1;
    if (oldestKept > last + 1) {
      this.log('warn', `PR record of volume ${this.key}: ${oldestKept - last - 1} unit attention/abort events were missed`);
    }
    for (const event of state.events) {
      if (event.seq <= last) continue;
      if (event.kind === 'abort') {
        const settled = this.effects.abortNexus(event.nexusKey);
        if (settled) this.abortsInFlight.push(settled.catch(() => undefined));
      }
      else this.effects.unitAttention(event.nexusKey, event.asc ?? 0, event.ascq ?? 0);
      last = event.seq;
    }
    this.lastDeliveredSeq = Math.max(last, state.eventSeq);
  }
}
