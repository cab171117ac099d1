// The ordering rule of the client library (SPEC CLU6: per-block read-after-write
// order): a write or zero must never overtake an earlier, overlapping write or
// zero of the same client, including the earlier one's retries.
//
// Each mutating request range is registered here, per (volume, object), at the
// moment the operation is submitted — so registration order is submission order.
// A new entry counts the registered entries it overlaps (`blockers`) and is
// appended to each one's `dependents`; it may be sent when `blockers` is 0. When
// an entry finishes (success, failure or cancellation — after its last request
// to an OSD has settled) it is removed and each dependent whose count drops to
// 0 becomes ready. Non-overlapping entries never wait on each other.
//
// Invariants:
// - An entry only ever waits for entries registered before it, so there is no
//   cycle and no deadlock; an entry's wait ends when those entries finish.
// - Two overlapping entries of one object are never both running.
// - Lists are per object and hold only unfinished entries; the caller bounds
//   how many entries exist (client.ts admission control).
import { assert } from '../stdx/assert.js';

export interface OrderEntry {
  /** Byte range [orderStartBytes, orderEndBytes) in the volume, sector-rounded. */
  orderStartBytes: number;
  orderEndBytes: number;
  /** Earlier overlapping entries still unfinished. */
  blockers: number;
  /** Later overlapping entries waiting for this one. */
  dependents: OrderEntry[] | null;
}

export class OrderTable<E extends OrderEntry> {
  private readonly byVolume = new Map<number, Map<number, E[]>>();
  private count = 0;

  /** Entries registered and not yet removed. */
  get size(): number {
    return this.count;
  }

  /** Registers `e` behind every overlapping entry of the object; returns true if it may run now. */
  add(volumeId: number, objectIndex: number, e: E): boolean {
    let objects = this.byVolume.get(volumeId);
    if (objects === undefined) {
      objects = new Map();
      this.byVolume.set(volumeId, objects);
    }
    let list = objects.get(objectIndex);
    if (list === undefined) {
      list = [];
      objects.set(objectIndex, list);
    }
    e.blockers = 0;
    for (const other of list) {
      if (other.orderStartBytes < e.orderEndBytes && e.orderStartBytes < other.orderEndBytes) {
        e.blockers++;
        (other.dependents ??= []).push(e);
      }
    }
    list.push(e);
    this.count++;
    return e.blockers === 0;
  }

  /** Removes a finished entry; `ready(d)` is called for each dependent it was the last blocker of, in registration order. */
  remove(volumeId: number, objectIndex: number, e: E, ready: (d: E) => void): void {
    const objects = this.byVolume.get(volumeId);
    const list = objects?.get(objectIndex);
    const i = list === undefined ? -1 : list.indexOf(e);
    assert(objects !== undefined && list !== undefined && i >= 0, 'OrderTable.remove: entry is not registered');
    list.splice(i, 1);
    this.count--;
    if (list.length === 0) {
      objects.delete(objectIndex);
      if (objects.size === 0) this.byVolume.delete(volumeId);
    }
    const deps = e.dependents;
    e.dependents = null;
    if (deps === null) return;
    for (const d of deps) {
      d.blockers--;
      if (d.blockers === 0) ready(d as E);
    }
  }
}
