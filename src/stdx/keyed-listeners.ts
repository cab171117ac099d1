// Listeners grouped by key: add(key, fn) returns the unsubscribe; emit(key, v)
// calls the key's listeners in order of subscription. A listener that throws
// does not stop the others (its error goes to onError): emitters report facts
// that already happened (a durable write), which a listener's bug must not undo.
// Keys without listeners take no memory.
export class KeyedListeners<T> {
  private readonly byKey = new Map<string, Set<(value: T) => void>>();

  add(key: string, listener: (value: T) => void): () => void {
    let set = this.byKey.get(key);
    if (set === undefined) {
      set = new Set();
      this.byKey.set(key, set);
    }
    set.add(listener);
    return () => {
      const s = this.byKey.get(key);
      s?.delete(listener);
      if (s !== undefined && s.size === 0) this.byKey.delete(key);
    };
  }

  emit(key: string, value: T, onError?: (err: unknown) => void): void {
    const set = this.byKey.get(key);
    if (set === undefined) return;
    for (const l of [...set]) {
      try {
        l(value);
      } catch (err) {
        onError?.(err);
      }
    }
  }
}
