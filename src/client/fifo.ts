// A first-in first-out queue on an array with a moving head: O(1) push and
// shift without Array.prototype.shift's O(n) copy. The array is compacted when
// the consumed prefix is at least half of it, so memory stays proportional to
// the items held.
//
// Invariant: items are returned in push order. The queue has no bound of its
// own: every user bounds what it admits before pushing (client.ts counts
// admitted requests against inFlightRequestsMax + waitingRequestsMax).
export class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  /** The oldest item, or undefined when empty. */
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head++;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}
