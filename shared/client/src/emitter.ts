/**
 * A tiny typed event emitter. The SDK must run in browsers, so it cannot use
 * node:events; this is all it needs: on/once/off/emit with payload types
 * checked per event name.
 */

export type Listener<T> = (payload: T) => void;

export class TypedEmitter<Events extends object> {
  #listeners: { [K in keyof Events]?: Set<Listener<Events[K]>> } = {};
  readonly #onListenerError: (error: unknown, event: keyof Events) => void;

  /**
   * @param onListenerError called when a listener throws. A throwing listener
   *   must not break the client's frame handling, so the error is reported
   *   here instead of propagating (default: ignored).
   */
  constructor(onListenerError?: (error: unknown, event: keyof Events) => void) {
    this.#onListenerError = onListenerError ?? (() => {});
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    let set = this.#listeners[event];
    if (set === undefined) {
      set = new Set();
      this.#listeners[event] = set;
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  /** Adds a listener that runs for the next emission only. */
  once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    const wrapper: Listener<Events[K]> = (payload) => {
      this.off(event, wrapper);
      listener(payload);
    };
    return this.on(event, wrapper);
  }

  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): void {
    this.#listeners[event]?.delete(listener);
  }

  listenerCount<K extends keyof Events>(event: K): number {
    return this.#listeners[event]?.size ?? 0;
  }

  /** Calls every listener of `event` in registration order; returns whether there was any. */
  emit<K extends keyof Events>(event: K, payload: Events[K]): boolean {
    const set = this.#listeners[event];
    if (set === undefined || set.size === 0) return false;
    // A copy, so listeners that add or remove listeners do not disturb this round.
    for (const listener of [...set]) {
      try {
        listener(payload);
      } catch (error) {
        this.#onListenerError(error, event);
      }
    }
    return true;
  }
}
