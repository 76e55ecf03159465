/**
 * The on-disk key file of an identity (see docs/identity.md):
 *
 *   {"type":"libertaria-identity","version":1,"did":"did:libertaria:z…",
 *    "publicKey":"<base64url, no padding>","seed":"<base64url, no padding>",
 *    "created":"<ISO 8601 time>"}
 *
 * The seed is the secret. It is written only through a 0600 file that appears
 * atomically, and no error raised here ever quotes a field value, so a broken
 * file cannot leak the seed into logs.
 */
import { randomBytes } from 'node:crypto';
import { type FileHandle, link, lstat, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { IdentityError } from '@libertaria/protocol';
import { base64urlnopad } from '@scure/base';
import { parseDid } from './did.js';
import { Ed25519Identity, PUBLIC_KEY_LENGTH, SEED_LENGTH } from './keys.js';

export const KEY_FILE_TYPE = 'libertaria-identity';
export const KEY_FILE_VERSION = 1;
export const KEY_FILE_MODE = 0o600;
/** A valid key file is about 250 bytes; anything far larger is not one and is not read whole. */
const MAX_KEY_FILE_BYTES = 4096;

const FIELDS = ['type', 'version', 'did', 'publicKey', 'seed', 'created'] as const;
const BASE64URL_NOPAD = /^[A-Za-z0-9_-]*$/;
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

export interface KeyFileContents {
  type: typeof KEY_FILE_TYPE;
  version: typeof KEY_FILE_VERSION;
  did: string;
  publicKey: string;
  seed: string;
  created: string;
}

export interface WriteKeyFileOptions {
  /** Replace an existing file. Off by default so an identity is never lost by accident. */
  overwrite?: boolean;
  /** Creation time recorded in the file; defaults to now. */
  created?: Date;
}

function fail(path: string, problem: string): never {
  throw new IdentityError('INVALID_KEY_FILE', `key file ${path}: ${problem}`);
}

function errnoCode(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : 'unknown error';
}

/** The JSON text of a key file for `identity`, two-space indented with a final newline. */
export function encodeKeyFile(identity: Ed25519Identity, created: Date = new Date()): string {
  const contents: KeyFileContents = {
    type: KEY_FILE_TYPE,
    version: KEY_FILE_VERSION,
    did: identity.did,
    publicKey: base64urlnopad.encode(identity.publicKey),
    seed: base64urlnopad.encode(identity.exportSeed()),
    created: created.toISOString(),
  };
  return `${JSON.stringify(contents, null, 2)}\n`;
}

function decodeBytes(path: string, field: string, value: string, length: number): Uint8Array {
  let bytes: Uint8Array | undefined;
  if (BASE64URL_NOPAD.test(value)) {
    try {
      bytes = base64urlnopad.decode(value);
    } catch {
      // Non-canonical trailing bits or an impossible length: reported below.
    }
  }
  if (bytes === undefined) fail(path, `${field} is not base64url without padding`);
  if (bytes.length !== length) fail(path, `${field} decodes to ${bytes.length} bytes, expected ${length}`);
  return bytes;
}

/**
 * Validates key-file text and returns its identity. `path` only names the file
 * in error messages. Throws IdentityError INVALID_KEY_FILE on any problem.
 */
export function decodeKeyFile(text: string, path = '<memory>'): Ed25519Identity {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    // JSON.parse messages can quote the text around the error, i.e. the seed.
    fail(path, 'is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(path, 'is not a JSON object');
  const record = value as Record<string, unknown>;
  const unknown = Object.keys(record).filter((key) => !(FIELDS as readonly string[]).includes(key));
  if (unknown.length > 0) fail(path, `has ${unknown.length} unexpected field(s); allowed: ${FIELDS.join(', ')}`);

  if (record['type'] !== KEY_FILE_TYPE) fail(path, `type is not "${KEY_FILE_TYPE}"`);
  const version = record['version'];
  if (typeof version !== 'number') fail(path, 'version is missing or not a number');
  if (version !== KEY_FILE_VERSION) fail(path, `version ${version} is not supported (expected ${KEY_FILE_VERSION})`);
  for (const field of ['did', 'publicKey', 'seed', 'created'] as const) {
    if (typeof record[field] !== 'string') fail(path, `${field} is missing or not a string`);
  }
  const fields = record as unknown as KeyFileContents;

  if (!ISO_TIME.test(fields.created) || !Number.isFinite(Date.parse(fields.created))) {
    fail(path, 'created is not an ISO 8601 time');
  }
  let didMethod: string | undefined;
  try {
    didMethod = parseDid(fields.did).method;
  } catch {
    // Reported below without the parser's message, which would quote the field.
  }
  if (didMethod !== 'libertaria') fail(path, 'did is not a valid did:libertaria DID');
  const publicKey = decodeBytes(path, 'publicKey', fields.publicKey, PUBLIC_KEY_LENGTH);
  const seed = decodeBytes(path, 'seed', fields.seed, SEED_LENGTH);

  const identity = Ed25519Identity.fromSeed(seed);
  seed.fill(0); // fromSeed keeps its own copy
  if (!Buffer.from(identity.publicKey).equals(publicKey)) fail(path, 'publicKey is not the key of the seed');
  if (identity.did !== fields.did) fail(path, 'did is not the DID of the public key');
  return identity;
}

/** Reads at most `limit` + 1 bytes, so a huge or endless file (say /dev/zero) is rejected cheaply. */
async function readBounded(handle: FileHandle, limit: number): Promise<Buffer> {
  const buffer = Buffer.alloc(limit + 1);
  let length = 0;
  while (length < buffer.length) {
    const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
    if (bytesRead === 0) break;
    length += bytesRead;
  }
  return buffer.subarray(0, length);
}

/** Reads and fully validates a key file. Throws IdentityError INVALID_KEY_FILE naming the file and the problem. */
export async function readKeyFile(path: string): Promise<Ed25519Identity> {
  let bytes: Buffer;
  try {
    const handle = await open(path, 'r');
    try {
      bytes = await readBounded(handle, MAX_KEY_FILE_BYTES);
    } finally {
      await handle.close();
    }
  } catch (err) {
    fail(path, `cannot be read (${errnoCode(err)})`);
  }
  if (bytes.length > MAX_KEY_FILE_BYTES) fail(path, `is larger than ${MAX_KEY_FILE_BYTES} bytes`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    fail(path, 'is not UTF-8 text');
  }
  return decodeKeyFile(text, path);
}

/** Filesystems without hard links answer link() with one of these. */
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/**
 * Moves the finished temp file to `path`. Without `overwrite`, link() is used
 * because it fails with EEXIST atomically, so two writers cannot both "win".
 */
async function publish(tmp: string, path: string, overwrite: boolean): Promise<void> {
  if (overwrite) {
    await rename(tmp, path);
    return;
  }
  let linked = false;
  try {
    await link(tmp, path);
    linked = true;
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'EEXIST') fail(path, 'already exists; refusing to overwrite it (pass { overwrite: true })');
    if (!NO_HARD_LINKS.has(code)) throw err;
  }
  if (linked) {
    // The key is in place; a leftover temp name is untidy but harmless (and also 0600).
    await unlink(tmp).catch(() => undefined);
    return;
  }
  // Fallback: check, then rename. Not race-free, but only on filesystems that cannot do better.
  const existing = await lstat(path).catch(() => undefined);
  if (existing !== undefined) fail(path, 'already exists; refusing to overwrite it (pass { overwrite: true })');
  await rename(tmp, path);
}

/** Best effort: makes the rename itself durable. Some platforms cannot fsync a directory. */
async function syncDirectory(dir: string): Promise<void> {
  try {
    const handle = await open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // Durability of the directory entry is a bonus, not a requirement.
  }
}

/**
 * Writes `identity` to `path` with mode 0600. The file appears atomically
 * (written and fsynced under a temporary name in the same directory, then
 * renamed or linked into place), so a crash never leaves a half-written key.
 * Refuses to replace an existing file unless `overwrite` is set.
 */
export async function writeKeyFile(
  path: string,
  identity: Ed25519Identity,
  options: WriteKeyFileOptions = {},
): Promise<void> {
  const text = encodeKeyFile(identity, options.created);
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(8).toString('hex')}.tmp`);
  let created = false;
  try {
    const handle = await open(tmp, 'wx', KEY_FILE_MODE);
    created = true;
    try {
      // The umask can only clear bits, but set the mode explicitly anyway.
      await handle.chmod(KEY_FILE_MODE);
      await handle.writeFile(text, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await publish(tmp, path, options.overwrite === true);
    created = false;
    await syncDirectory(dirname(path));
  } catch (err) {
    if (err instanceof IdentityError) throw err;
    fail(path, `cannot be written (${errnoCode(err)})`);
  } finally {
    if (created) await unlink(tmp).catch(() => undefined);
  }
}
