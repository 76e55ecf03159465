/**
 * A bounded FIFO of inbound messages with async-iterator consumers. The
 * client decides what to do when it is full (see inbound.ts); this class only
 * holds items and hands them to whoever awaits next().
 */

interface Waiter<T> {
  resolve: (r: IteratorResult<T>) => void;
  reject: (e: unknown) => void;
}

export class Inbox<T> {
  #items: T[] = [];
  #head = 0;
  #waiters: Waiter<T>[] = [];
  #ended = false;
  #error: unknown;
  readonly capacity: number;
  readonly #onTake: () => void;

  /** @param onTake runs after an item left the queue (the client may resume reading then). */
  constructor(capacity: number, onTake: () => void = () => {}) {
    this.capacity = capacity;
    this.#onTake = onTake;
  }

  get length(): number {
    return this.#items.length - this.#head;
  }

  get full(): boolean {
    return this.length >= this.capacity;
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Adds an item, or hands it straight to a waiting consumer. Returns false when full or ended (item not taken). */
  push(item: T): boolean {
    if (this.#ended) return false;
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) {
      waiter.resolve({ value: item, done: false });
      return true;
    }
    if (this.full) return false;
    this.#items.push(item);
    return true;
  }

  /** The next item; waits for one. Resolves done after end(), or rejects with end(error)'s error once drained. */
  next(): Promise<IteratorResult<T>> {
    return this.#next().promise;
  }

  #next(): { promise: Promise<IteratorResult<T>>; waiter?: Waiter<T> } {
    if (this.length > 0) {
      const item = this.#items[this.#head]!;
      this.#items[this.#head] = undefined as T; // let it be collected
      this.#head++;
      if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
        this.#items = this.#items.slice(this.#head);
        this.#head = 0;
      }
      this.#onTake();
      return { promise: Promise.resolve({ value: item, done: false }) };
    }
    if (this.#ended) {
      const promise: Promise<IteratorResult<T>> =
        this.#error === undefined ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(this.#error);
      return { promise };
    }
    let waiter: Waiter<T> | undefined;
    const promise = new Promise<IteratorResult<T>>((resolve, reject) => {
      waiter = { resolve, reject };
      this.#waiters.push(waiter);
    });
    return { promise, waiter: waiter! };
  }

  /** Stops accepting items; consumers get what is queued, then done (or `error`). */
  end(error?: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    if (this.length > 0) return;
    for (const w of this.#waiters.splice(0)) {
      if (error === undefined) w.resolve({ value: undefined, done: true });
      else w.reject(error);
    }
  }

  /** Drops queued items (close(): unacknowledged durable ones stay with the relay). */
  clear(): void {
    this.#items = [];
    this.#head = 0;
  }

  /**
   * An async iterator over the queue; several may share one inbox (each item
   * goes to one of them). return() (a `break` out of for-await) withdraws a
   * pending next(), so no item is ever handed to a consumer that left.
   */
  iterator(): AsyncIterableIterator<T> {
    let finished = false;
    let pending: Waiter<T> | undefined;
    const done: IteratorResult<T> = { value: undefined, done: true };
    return {
      next: () => {
        if (finished) return Promise.resolve(done);
        const { promise, waiter } = this.#next();
        pending = waiter;
        return promise;
      },
      return: () => {
        finished = true;
        if (pending !== undefined) {
          const at = this.#waiters.indexOf(pending);
          if (at >= 0) {
            this.#waiters.splice(at, 1);
            pending.resolve(done);
          }
          pending = undefined;
        }
        return Promise.resolve(done);
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }
}
