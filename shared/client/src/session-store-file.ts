/**
 * A SessionStore in a directory (Node only): one file per record, written
 * atomically (temporary file, fsync, rename) with mode 0600, in a directory
 * of mode 0700. `take` renames the file to a unique name first, so exactly
 * one caller (of any process) gets a one-time prekey.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { SessionStore } from './session-store.js';

const NAME = /^[a-z0-9-]+$/;

function checkName(name: string): string {
  if (!NAME.test(name)) throw new RangeError(`bad record name ${JSON.stringify(name)}`);
  return name;
}

function isMissing(error: unknown): boolean {
  return (error as NodeJS.ErrnoException)?.code === 'ENOENT';
}

/** The state directory the CLI keeps next to a key file: `<keyfile>.state`. */
export function stateDirForKeyFile(keyFile: string): string {
  return `${keyFile}.state`;
}

export class FileSessionStore implements SessionStore {
  readonly dir: string;
  #ready: Promise<void> | undefined;

  constructor(dir: string) {
    this.dir = dir;
  }

  #init(): Promise<void> {
    this.#ready ??= mkdir(this.dir, { recursive: true, mode: 0o700 }).then(() => undefined);
    return this.#ready;
  }

  async get(name: string): Promise<Uint8Array | undefined> {
    await this.#init();
    try {
      return new Uint8Array(await readFile(join(this.dir, checkName(name))));
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
  }

  async put(name: string, value: Uint8Array): Promise<void> {
    await this.#init();
    const target = join(this.dir, checkName(name));
    const temp = join(this.dir, `.tmp-${randomBytes(8).toString('hex')}`);
    const handle = await open(temp, 'wx', 0o600);
    try {
      await handle.writeFile(value);
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await rename(temp, target);
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
  }

  async take(name: string): Promise<Uint8Array | undefined> {
    await this.#init();
    const taken = join(this.dir, `.taken-${randomBytes(8).toString('hex')}`);
    try {
      await rename(join(this.dir, checkName(name)), taken);
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
    try {
      return new Uint8Array(await readFile(taken));
    } finally {
      await rm(taken, { force: true });
    }
  }

  async delete(name: string): Promise<void> {
    await this.#init();
    await rm(join(this.dir, checkName(name)), { force: true });
  }

  async list(prefix: string): Promise<string[]> {
    await this.#init();
    return (await readdir(this.dir)).filter((n) => !n.startsWith('.') && n.startsWith(prefix)).sort();
  }
}
