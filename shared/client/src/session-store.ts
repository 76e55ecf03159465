/**
 * Where a SessionManager keeps its secrets: prekey private keys and
 * serialized PersistentSessions, as named binary records. Browser-safe (the
 * file implementation is session-store-file.ts).
 */

/** Named binary records. Names are `[a-z0-9-]+`. */
export interface SessionStore {
  get(name: string): Promise<Uint8Array | undefined>;
  /** Replaces the record atomically (a reader sees the old or the new bytes, never a mix). */
  put(name: string, value: Uint8Array): Promise<void>;
  /** Reads and removes the record, exactly once across concurrent callers: every later call returns undefined. */
  take(name: string): Promise<Uint8Array | undefined>;
  delete(name: string): Promise<void>;
  /** Names starting with `prefix`. */
  list(prefix: string): Promise<string[]>;
}

/** A SessionStore in memory (tests, short-lived peers). */
export class InMemorySessionStore implements SessionStore {
  readonly #records = new Map<string, Uint8Array>();

  async get(name: string): Promise<Uint8Array | undefined> {
    const value = this.#records.get(name);
    return value === undefined ? undefined : Uint8Array.from(value);
  }
  async put(name: string, value: Uint8Array): Promise<void> {
    this.#records.set(name, Uint8Array.from(value));
  }
  async take(name: string): Promise<Uint8Array | undefined> {
    const value = this.#records.get(name);
    this.#records.delete(name);
    return value;
  }
  async delete(name: string): Promise<void> {
    this.#records.delete(name);
  }
  async list(prefix: string): Promise<string[]> {
    return [...this.#records.keys()].filter((k) => k.startsWith(prefix)).sort();
  }
}

/** Length-prefixed fields (u32 big-endian length each): the records' only encoding. */
export function packFields(fields: readonly Uint8Array[]): Uint8Array {
  let size = 0;
  for (const f of fields) size += 4 + f.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const f of fields) {
    view.setUint32(at, f.length);
    out.set(f, at + 4);
    at += 4 + f.length;
  }
  return out;
}

export function unpackFields(bytes: Uint8Array): Uint8Array[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Uint8Array[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (at + 4 > bytes.length) throw new RangeError('truncated record');
    const n = view.getUint32(at);
    if (at + 4 + n > bytes.length) throw new RangeError('truncated record');
    out.push(bytes.slice(at + 4, at + 4 + n));
    at += 4 + n;
  }
  return out;
}

export function u32(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

export function readU32(bytes: Uint8Array | undefined): number {
  if (bytes === undefined || bytes.length !== 4) throw new RangeError('bad u32 field');
  return new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0);
}
