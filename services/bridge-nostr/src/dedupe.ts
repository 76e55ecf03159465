/**
 * A bounded set of recently seen ids: the same event arriving from several
 * relays (or again after a reconnect) is handed over once. The oldest ids are
 * forgotten first (a Map iterates in insertion order), so memory stays at
 * `capacity` ids whatever the traffic.
 */
export class RecentIds {
  private readonly ids = new Map<string, true>();
  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError('capacity must be a positive integer');
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  /** Adds `id`; returns false when it was already there. */
  add(id: string): boolean {
    if (this.ids.has(id)) return false;
    this.ids.set(id, true);
    if (this.ids.size > this.capacity) this.ids.delete(this.ids.keys().next().value as string);
    return true;
  }

  delete(id: string): void {
    this.ids.delete(id);
  }

  get size(): number {
    return this.ids.size;
  }
}
