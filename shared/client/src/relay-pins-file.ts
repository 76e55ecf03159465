/**
 * Relay pins in one JSON file (Node only): lrelay keeps them in its state
 * directory, `<keyfile>.state/relay-pins.json`. Written atomically (temporary
 * file, fsync, rename). The file is meant to be read and edited by people: to
 * accept a relay's new key, delete its entry.
 *
 *   { "type": "libertaria-relay-pins", "version": 1,
 *     "pins": { "ws://relay.example:8080/": { "did": "did:libertaria:z…", "since": "2025-…Z" } } }
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parseDid } from '@libertaria/identity';
import { RelayError } from '@libertaria/protocol';
import type { RelayPin, RelayPinStore } from './relay-pins.js';

const TYPE = 'libertaria-relay-pins';

interface PinFile {
  type: typeof TYPE;
  version: 1;
  pins: Record<string, RelayPin>;
}

/** The pins file lrelay keeps in a state directory. */
export function relayPinsFile(stateDir: string): string {
  return join(stateDir, 'relay-pins.json');
}

export class FileRelayPinStore implements RelayPinStore {
  readonly location: string;
  /** Writes one after another, so two pins made at once both land. */
  #tail: Promise<void> = Promise.resolve();

  constructor(path: string) {
    this.location = path;
  }

  async #read(): Promise<PinFile> {
    let text: string;
    try {
      text = await readFile(this.location, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException)?.code === 'ENOENT') return { type: TYPE, version: 1, pins: {} };
      throw error;
    }
    const bad = (problem: string): never => {
      throw new RelayError('CONFIG_INVALID', `relay pins file ${this.location}: ${problem}`);
    };
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return bad('not JSON');
    }
    const file = parsed as Partial<PinFile>;
    if (typeof file !== 'object' || file === null || file.type !== TYPE || file.version !== 1) {
      return bad(`not a ${TYPE} file of version 1`);
    }
    if (typeof file.pins !== 'object' || file.pins === null) return bad('no "pins" object');
    const pins: Record<string, RelayPin> = Object.create(null);
    for (const [url, pin] of Object.entries(file.pins)) {
      if (typeof pin?.did !== 'string' || typeof pin.since !== 'string') return bad(`entry ${JSON.stringify(url)}`);
      try {
        parseDid(pin.did);
      } catch {
        return bad(`entry ${JSON.stringify(url)} holds no DID`);
      }
      pins[url] = { did: pin.did, since: pin.since };
    }
    return { type: TYPE, version: 1, pins };
  }

  async get(url: string): Promise<RelayPin | undefined> {
    await this.#tail;
    return (await this.#read()).pins[url];
  }

  set(url: string, did: string): Promise<void> {
    const write = this.#tail.then(async () => {
      const file = await this.#read();
      file.pins[url] = { did, since: new Date().toISOString() };
      await mkdir(dirname(this.location), { recursive: true, mode: 0o700 });
      const temp = `${this.location}.tmp-${randomBytes(8).toString('hex')}`;
      const handle = await open(temp, 'wx', 0o600);
      try {
        await handle.writeFile(`${JSON.stringify(file, null, 2)}\n`);
        await handle.sync();
      } finally {
        await handle.close();
      }
      try {
        await rename(temp, this.location);
      } catch (error) {
        await rm(temp, { force: true });
        throw error;
      }
    });
    this.#tail = write.catch(() => undefined);
    return write;
  }
}
