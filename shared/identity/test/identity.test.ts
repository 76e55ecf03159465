import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { inspect } from 'node:util';
import {
  AUTH_DOMAIN,
  authTranscript,
  CHALLENGE_DOMAIN,
  didMatchesKey,
  Ed25519Identity,
  formatDidKey,
  formatLibertariaDid,
  HINT_LENGTH,
  hintFromDid,
  hintFromHex,
  hintToHex,
  parseDid,
  relayChallengeTranscript,
  routingHint,
  signAuth,
  verifyAuth,
  verifyEd25519,
  verifyRelayChallenge,
} from '@libertaria/identity';
import {
  decodeKeyFile,
  encodeKeyFile,
  type KeyFileContents,
  publicKeyObject,
  readKeyFile,
  writeKeyFile,
} from '@libertaria/identity/node';
import { IdentityError } from '@libertaria/protocol';
import { blake3 } from '@noble/hashes/blake3.js';
import { base58, base64urlnopad } from '@scure/base';
import { repoPath } from '../../../test-support/paths.js';

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const unhex = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'hex'));

const RFC8032_SEED = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
const RFC8032_PUBLIC_KEY = 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a';
const RFC8032_EMPTY_SIGNATURE =
  'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b';
const BLAKE3_EMPTY = 'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262';

interface Vector {
  seed: string;
  publicKey: string;
  didLibertaria: string;
  didKey: string;
  hint: string;
}

/** Asserts that `fn` throws an IdentityError with `code` and, optionally, a message matching `message`. */
function throwsIdentity(fn: () => unknown, code: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof IdentityError, `expected IdentityError, got ${String(err)}`);
    assert.equal(err.code, code);
    if (message) assert.match(err.message, message);
    return true;
  });
}

/** Every encoding of a seed that could leak it. */
function seedForms(seed: Uint8Array): string[] {
  return [hex(seed), base64urlnopad.encode(seed), Buffer.from(seed).toString('base64')];
}

describe('Ed25519 keys', () => {
  it('matches RFC 8032 test 1', () => {
    const id = Ed25519Identity.fromSeed(unhex(RFC8032_SEED));
    assert.equal(hex(id.publicKey), RFC8032_PUBLIC_KEY);
    const signature = id.sign(new Uint8Array(0));
    assert.equal(hex(signature), RFC8032_EMPTY_SIGNATURE);
    assert.equal(verifyEd25519(id.publicKey, new Uint8Array(0), signature), true);
  });

  it('generates distinct identities that sign and verify', () => {
    const a = Ed25519Identity.generate();
    const b = Ed25519Identity.generate();
    assert.notEqual(a.did, b.did);
    assert.equal(a.publicKey.length, 32);
    assert.equal(a.exportSeed().length, 32);
    const data = new TextEncoder().encode('hello');
    const signature = a.sign(data);
    assert.equal(signature.length, 64);
    assert.equal(verifyEd25519(a.publicKey, data, signature), true);
    assert.equal(verifyEd25519(b.publicKey, data, signature), false);
    // A seed round trip gives the same identity back.
    assert.equal(Ed25519Identity.fromSeed(a.exportSeed()).did, a.did);
  });

  it('rejects seeds that are not 32 bytes', () => {
    throwsIdentity(() => Ed25519Identity.fromSeed(new Uint8Array(31)), 'INVALID_KEY');
    throwsIdentity(() => Ed25519Identity.fromSeed(new Uint8Array(33)), 'INVALID_KEY');
    throwsIdentity(() => Ed25519Identity.fromSeed('x'.repeat(32) as unknown as Uint8Array), 'INVALID_KEY');
  });

  it('hands out copies, so callers cannot alter the identity', () => {
    const id = Ed25519Identity.fromSeed(unhex(RFC8032_SEED));
    id.publicKey.fill(0);
    id.exportSeed().fill(0);
    id.hint.fill(0);
    assert.equal(hex(id.publicKey), RFC8032_PUBLIC_KEY);
    assert.equal(hex(id.exportSeed()), RFC8032_SEED);
    const seed = unhex(RFC8032_SEED);
    const fromBuffer = Ed25519Identity.fromSeed(seed);
    seed.fill(0);
    assert.equal(hex(fromBuffer.exportSeed()), RFC8032_SEED);
  });

  it('verifyEd25519 returns false on malformed input and never throws', () => {
    const id = Ed25519Identity.fromSeed(unhex(RFC8032_SEED));
    const data = new Uint8Array([1, 2, 3]);
    const signature = id.sign(data);
    assert.equal(verifyEd25519(id.publicKey.subarray(0, 31), data, signature), false);
    assert.equal(verifyEd25519(new Uint8Array(33), data, signature), false);
    assert.equal(verifyEd25519(id.publicKey, data, signature.subarray(0, 63)), false);
    assert.equal(verifyEd25519(id.publicKey, data, new Uint8Array(65)), false);
    assert.equal(verifyEd25519(new Uint8Array(32).fill(0xff), data, signature), false);
    assert.equal(verifyEd25519(null as unknown as Uint8Array, data, signature), false);
    assert.equal(verifyEd25519(id.publicKey, 'abc' as unknown as Uint8Array, signature), false);
    const flipped = Uint8Array.from(signature);
    flipped[0] = (flipped[0] ?? 0) ^ 1;
    assert.equal(verifyEd25519(id.publicKey, data, flipped), false);
  });

  it('publicKeyObject imports raw keys and rejects wrong lengths', () => {
    const key = publicKeyObject(unhex(RFC8032_PUBLIC_KEY));
    assert.equal(key.asymmetricKeyType, 'ed25519');
    // Imported as JWK (the fast path): the same key as the SPKI DER import would give.
    assert.deepEqual(
      key.export({ format: 'der', type: 'spki' }),
      Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), unhex(RFC8032_PUBLIC_KEY)]),
    );
    for (let i = 0; i < 50; i++) {
      const id = Ed25519Identity.generate();
      const der = publicKeyObject(id.publicKey).export({ format: 'der', type: 'spki' });
      assert.deepEqual(new Uint8Array(der.subarray(12)), id.publicKey);
    }
    throwsIdentity(() => publicKeyObject(new Uint8Array(31)), 'INVALID_KEY');
  });

  it('never prints the seed', () => {
    const id = Ed25519Identity.generate();
    const printed = [
      JSON.stringify(id),
      JSON.stringify({ nested: [id] }),
      String(id),
      `${id}`,
      inspect(id),
      inspect({ nested: id }, { depth: 5 }),
      inspect(id, { showHidden: true, depth: Number.POSITIVE_INFINITY }),
      Object.keys(id).join(','),
    ];
    for (const text of printed) {
      assert.ok(text.includes(id.did) || text === Object.keys(id).join(','), `shows the DID: ${text}`);
      for (const secret of seedForms(id.exportSeed())) assert.ok(!text.includes(secret), `leaks the seed: ${text}`);
    }
    assert.deepEqual(JSON.parse(JSON.stringify(id)), { did: id.did });
  });
});

describe('BLAKE3', () => {
  it('matches the empty-input vector', () => {
    assert.equal(hex(blake3(new Uint8Array(0))), BLAKE3_EMPTY);
  });
});

describe('test vectors', () => {
  const vectors = JSON.parse(readFileSync(repoPath('shared/identity/test/vectors/identity.json'), 'utf8')) as Vector[];

  /** The table between the markers in docs/identity.md, cell backticks removed. */
  function vectorsFromDoc(): Vector[] {
    const markdown = readFileSync(repoPath('docs/identity.md'), 'utf8');
    const begin = markdown.indexOf('<!-- identity-vectors:begin -->');
    const end = markdown.indexOf('<!-- identity-vectors:end -->');
    assert.ok(begin >= 0 && end > begin, 'docs/identity.md has the vector table markers');
    const cells = (line: string): string[] =>
      line
        .split('|')
        .slice(1, -1)
        .map((cell) => cell.trim().replace(/^`(.*)`$/, '$1'));
    const [header, separator, ...rows] = markdown
      .slice(begin, end)
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line.startsWith('|'));
    assert.deepEqual(cells(header ?? ''), ['seed', 'public key', 'did:libertaria', 'did:key', 'hint']);
    assert.match(separator ?? '', /^\|( *-+ *\|){5}$/);
    return rows.map((row) => {
      const [seed = '', publicKey = '', didLibertaria = '', didKey = '', hint = ''] = cells(row);
      return { seed, publicKey, didLibertaria, didKey, hint };
    });
  }

  it('cover the required seeds', () => {
    assert.deepEqual(
      vectors.map((v) => v.seed),
      ['00'.repeat(32), hex(Uint8Array.from({ length: 32 }, (_, i) => i + 1)), 'ff'.repeat(32), RFC8032_SEED],
    );
    assert.equal(vectors[3]?.publicKey, RFC8032_PUBLIC_KEY);
  });

  it('are reproduced by the code end to end', () => {
    for (const v of vectors) {
      const id = Ed25519Identity.fromSeed(unhex(v.seed));
      assert.equal(hex(id.publicKey), v.publicKey);
      assert.equal(id.did, v.didLibertaria);
      assert.equal(id.didKey, v.didKey);
      assert.equal(hintToHex(id.hint), v.hint);
      const pk = unhex(v.publicKey);
      assert.equal(formatLibertariaDid(pk), v.didLibertaria);
      assert.equal(formatDidKey(pk), v.didKey);
      assert.equal(hintToHex(routingHint(pk)), v.hint);
      assert.equal(hintToHex(hintFromDid(v.didLibertaria)), v.hint);
      assert.equal(hintToHex(hintFromDid(v.didKey)), v.hint);
      assert.equal(didMatchesKey(v.didLibertaria, pk), true);
      assert.equal(didMatchesKey(v.didKey, pk), true);
      // The byte-level definitions, computed independently of the formatting code.
      assert.equal(v.didLibertaria, `did:libertaria:z${base58.encode(blake3(pk))}`);
      assert.equal(v.didKey, `did:key:z${base58.encode(Uint8Array.of(0xed, 0x01, ...pk))}`);
      assert.equal(v.hint, hex(blake3(pk).subarray(0, 24)));
    }
  });

  it('equal the table in docs/identity.md', () => {
    assert.deepEqual(vectorsFromDoc(), vectors);
  });
});

describe('DIDs', () => {
  const id = Ed25519Identity.fromSeed(unhex(RFC8032_SEED));
  const other = Ed25519Identity.fromSeed(new Uint8Array(32));

  it('round-trip did:libertaria', () => {
    const parsed = parseDid(id.did);
    assert.equal(parsed.method, 'libertaria');
    assert.ok(parsed.method === 'libertaria');
    assert.equal(hex(parsed.keyHash), hex(blake3(id.publicKey)));
    assert.equal(parsed.did, id.did);
    assert.equal(`did:libertaria:z${base58.encode(parsed.keyHash)}`, id.did);
  });

  it('round-trip did:key', () => {
    const parsed = parseDid(id.didKey);
    assert.ok(parsed.method === 'key');
    assert.equal(hex(parsed.publicKey), RFC8032_PUBLIC_KEY);
    assert.equal(formatDidKey(parsed.publicKey), id.didKey);
  });

  it('reject every malformed form with a clear message', () => {
    const hash = blake3(id.publicKey);
    const cases: [string, string, RegExp][] = [
      [`libertaria:z${base58.encode(hash)}`, 'INVALID_DID', /missing 'did:' prefix/],
      [`DID:key:z${base58.encode(hash)}`, 'INVALID_DID', /missing 'did:' prefix/],
      ['did:libertaria', 'INVALID_DID', /did:<method>:<identifier>/],
      ['did::zabc', 'INVALID_DID', /did:<method>:<identifier>/],
      ['did:web:example.com', 'UNSUPPORTED_DID_METHOD', /'?"web"'? is not supported/],
      ['did:peer:z6Mk', 'UNSUPPORTED_DID_METHOD', /not supported/],
      [`did:libertaria:${base58.encode(hash)}`, 'INVALID_DID', /'z' \(base58btc\) multibase prefix/],
      [`did:key:u${base64urlnopad.encode(hash)}`, 'INVALID_DID', /multibase prefix/],
      ['did:key:z', 'INVALID_DID', /base58btc alphabet/],
      ['did:key:z6Mk0OIl', 'INVALID_DID', /base58btc alphabet/],
      ['did:libertaria:z6Mk+/', 'INVALID_DID', /base58btc alphabet/],
      [`${id.didKey}#key-1`, 'INVALID_DID', /base58btc alphabet/],
      [`did:libertaria:z${base58.encode(hash.subarray(0, 31))}`, 'INVALID_DID', /decodes to 31 bytes, expected 32/],
      [`did:libertaria:z${base58.encode(Uint8Array.of(...hash, 0))}`, 'INVALID_DID', /decodes to 33 bytes/],
      [
        `did:key:z${base58.encode(Uint8Array.of(0xec, 0x01, ...id.publicKey))}`,
        'INVALID_DID',
        /multicodec is not ed25519-pub/,
      ],
      [`did:key:z${base58.encode(Uint8Array.of(0xed))}`, 'INVALID_DID', /multicodec is not ed25519-pub/],
      [
        `did:key:z${base58.encode(Uint8Array.of(0xed, 0x01, ...id.publicKey.subarray(1)))}`,
        'INVALID_DID',
        /decodes to 33 bytes, expected 34/,
      ],
      [`did:key:z${'1'.repeat(200)}`, 'INVALID_DID', /at most 128 characters/],
    ];
    for (const [did, code, message] of cases) {
      throwsIdentity(() => parseDid(did), code, message);
      assert.equal(didMatchesKey(did, id.publicKey), false, did);
    }
    throwsIdentity(() => parseDid(42 as unknown as string), 'INVALID_DID', /must be a string/);
  });

  it('escape hostile DIDs in messages', () => {
    throwsIdentity(() => parseDid('did:evil\nFAKE LOG LINE:z1'), 'UNSUPPORTED_DID_METHOD', /\\n/);
  });

  it('didMatchesKey accepts the right key and nothing else', () => {
    assert.equal(didMatchesKey(id.did, id.publicKey), true);
    assert.equal(didMatchesKey(id.didKey, id.publicKey), true);
    assert.equal(didMatchesKey(id.did, other.publicKey), false);
    assert.equal(didMatchesKey(id.didKey, other.publicKey), false);
    assert.equal(didMatchesKey(other.did, id.publicKey), false);
    assert.equal(didMatchesKey(id.did, id.publicKey.subarray(0, 31)), false);
    assert.equal(didMatchesKey(id.did, new Uint8Array(33)), false);
    assert.equal(didMatchesKey(id.did, undefined as unknown as Uint8Array), false);
    assert.equal(didMatchesKey(undefined as unknown as string, id.publicKey), false);
  });

  it('format rejects keys that are not 32 bytes', () => {
    throwsIdentity(() => formatLibertariaDid(new Uint8Array(31)), 'INVALID_KEY');
    throwsIdentity(() => formatDidKey(new Uint8Array(33)), 'INVALID_KEY');
    throwsIdentity(() => routingHint(new Uint8Array(0)), 'INVALID_KEY');
  });
});

describe('routing hints', () => {
  const id = Ed25519Identity.fromSeed(unhex(RFC8032_SEED));

  it('are the first 24 bytes of BLAKE3-256(pk), the same for both DID forms', () => {
    assert.equal(HINT_LENGTH, 24);
    assert.equal(id.hint.length, 24);
    assert.equal(hex(id.hint), hex(blake3(id.publicKey).subarray(0, 24)));
    assert.equal(hex(hintFromDid(id.did)), hex(id.hint));
    assert.equal(hex(hintFromDid(id.didKey)), hex(id.hint));
    throwsIdentity(() => hintFromDid('did:web:x'), 'UNSUPPORTED_DID_METHOD');
  });

  it('round-trip through hex', () => {
    const text = hintToHex(id.hint);
    assert.match(text, /^[0-9a-f]{48}$/);
    assert.equal(hex(hintFromHex(text)), text);
    assert.equal(hex(hintFromHex(text.toUpperCase())), text);
    throwsIdentity(() => hintFromHex(text.slice(2)), 'INVALID_HINT');
    throwsIdentity(() => hintFromHex(`${text.slice(2)}zz`), 'INVALID_HINT');
    throwsIdentity(() => hintToHex(new Uint8Array(23)), 'INVALID_HINT');
  });
});

describe('key files', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'libertaria-identity-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('round-trip with mode 0600 and the documented fields', async () => {
    const id = Ed25519Identity.generate();
    const path = join(dir, 'roundtrip.json');
    const created = new Date('2025-01-02T03:04:05.678Z');
    await writeKeyFile(path, id, { created });
    if (process.platform !== 'win32') assert.equal((await stat(path)).mode & 0o777, 0o600);
    const contents = JSON.parse(await readFile(path, 'utf8')) as KeyFileContents;
    assert.deepEqual(contents, {
      type: 'libertaria-identity',
      version: 1,
      did: id.did,
      publicKey: base64urlnopad.encode(id.publicKey),
      seed: base64urlnopad.encode(id.exportSeed()),
      created: '2025-01-02T03:04:05.678Z',
    });
    const back = await readKeyFile(path);
    assert.equal(back.did, id.did);
    assert.equal(hex(back.exportSeed()), hex(id.exportSeed()));
    assert.deepEqual(await readdir(dir), ['roundtrip.json'], 'no temporary file is left behind');
  });

  it('refuse to overwrite unless asked', async () => {
    const first = Ed25519Identity.generate();
    const second = Ed25519Identity.generate();
    const path = join(dir, 'overwrite.json');
    await writeKeyFile(path, first);
    await assert.rejects(writeKeyFile(path, second), (err: unknown) => {
      assert.ok(err instanceof IdentityError);
      assert.equal(err.code, 'INVALID_KEY_FILE');
      assert.match(err.message, /already exists/);
      assert.ok(err.message.includes(path));
      return true;
    });
    assert.equal((await readKeyFile(path)).did, first.did);
    await writeKeyFile(path, second, { overwrite: true });
    assert.equal((await readKeyFile(path)).did, second.did);
    if (process.platform !== 'win32') assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.deepEqual(
      (await readdir(dir)).filter((name) => name.includes('overwrite')),
      ['overwrite.json'],
    );
  });

  it('report write failures as INVALID_KEY_FILE', async () => {
    const path = join(dir, 'missing-dir', 'key.json');
    await assert.rejects(writeKeyFile(path, Ed25519Identity.generate()), (err: unknown) => {
      assert.ok(err instanceof IdentityError);
      assert.equal(err.code, 'INVALID_KEY_FILE');
      assert.match(err.message, /cannot be written \(ENOENT\)/);
      return true;
    });
  });

  describe('reject invalid files', () => {
    const id = Ed25519Identity.fromSeed(unhex(RFC8032_SEED));
    const other = Ed25519Identity.fromSeed(new Uint8Array(32).fill(7));
    const valid = JSON.parse(encodeKeyFile(id)) as Record<string, unknown>;
    const secrets = [...seedForms(id.exportSeed()), ...seedForms(other.exportSeed())];
    const edit = (changes: Record<string, unknown>): string => JSON.stringify({ ...valid, ...changes });
    const without = (field: string): string => {
      const copy = { ...valid };
      delete copy[field];
      return JSON.stringify(copy);
    };

    const cases: [string, string | Buffer, RegExp][] = [
      ['bad JSON', `{"seed":"${base64urlnopad.encode(id.exportSeed())}", oops}`, /not valid JSON/],
      ['truncated JSON', encodeKeyFile(id).slice(0, 120), /not valid JSON/],
      ['empty file', '', /not valid JSON/],
      ['not an object', '[]', /not a JSON object/],
      ['null', 'null', /not a JSON object/],
      ['wrong type', edit({ type: 'something-else' }), /type is not "libertaria-identity"/],
      ['missing type', without('type'), /type is not/],
      ['wrong version', edit({ version: 2 }), /version 2 is not supported/],
      ['version as string', edit({ version: '1' }), /version is missing or not a number/],
      ['missing seed', without('seed'), /seed is missing or not a string/],
      ['seed not a string', edit({ seed: 42 }), /seed is missing or not a string/],
      ['missing did', without('did'), /did is missing/],
      ['unknown field', edit({ comment: 'hi' }), /unexpected field/],
      ['bad created', edit({ created: 'yesterday' }), /created is not an ISO 8601 time/],
      ['impossible created', edit({ created: '2025-13-45T99:00:00Z' }), /created is not an ISO 8601 time/],
      [
        'seed in standard base64 with padding',
        edit({ seed: Buffer.from(id.exportSeed()).toString('base64') }),
        /seed is not base64url without padding/,
      ],
      ['seed with bad characters', edit({ seed: `${String(valid['seed']).slice(0, 42)}!` }), /seed is not base64url/],
      [
        'seed with non-canonical bits',
        edit({ seed: `${String(valid['seed']).slice(0, 42)}B` }),
        /seed is not base64url/,
      ],
      ['publicKey bad base64', edit({ publicKey: 'not*base64' }), /publicKey is not base64url/],
      ['seed too short', edit({ seed: base64urlnopad.encode(id.exportSeed().subarray(0, 31)) }), /seed decodes to 31/],
      ['seed too long', edit({ seed: base64urlnopad.encode(new Uint8Array(33).fill(9)) }), /seed decodes to 33/],
      [
        'publicKey wrong length',
        edit({ publicKey: base64urlnopad.encode(new Uint8Array(31)) }),
        /publicKey decodes to 31/,
      ],
      [
        'publicKey of another key',
        edit({ publicKey: base64urlnopad.encode(other.publicKey) }),
        /not the key of the seed/,
      ],
      ['seed of another key', edit({ seed: base64urlnopad.encode(other.exportSeed()) }), /not the key of the seed/],
      ['did of another key', edit({ did: other.did }), /did is not the DID of the public key/],
      ['did in did:key form', edit({ did: id.didKey }), /not a valid did:libertaria DID/],
      ['did malformed', edit({ did: `did:libertaria:${String(valid['seed'])}` }), /not a valid did:libertaria DID/],
      ['not UTF-8', Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), /not UTF-8/],
      ['too large', `${encodeKeyFile(id)}${' '.repeat(5000)}`, /larger than 4096 bytes/],
    ];

    for (const [name, content, message] of cases) {
      it(name, async () => {
        const path = join(dir, `invalid-${name.replaceAll(' ', '-')}.json`);
        await writeFile(path, content);
        await assert.rejects(readKeyFile(path), (err: unknown) => {
          assert.ok(err instanceof IdentityError, String(err));
          assert.equal(err.code, 'INVALID_KEY_FILE');
          assert.match(err.message, message);
          assert.ok(err.message.includes(path), 'names the file');
          for (const secret of secrets) assert.ok(!err.message.includes(secret), `leaks a seed: ${err.message}`);
          assert.equal(err.cause, undefined, 'carries no cause that could hold the text');
          return true;
        });
      });
    }

    it('missing file', async () => {
      const path = join(dir, 'does-not-exist.json');
      await assert.rejects(readKeyFile(path), (err: unknown) => {
        assert.ok(err instanceof IdentityError);
        assert.equal(err.code, 'INVALID_KEY_FILE');
        assert.match(err.message, /cannot be read \(ENOENT\)/);
        return true;
      });
    });

    it('decodeKeyFile validates text in memory too', () => {
      assert.equal(decodeKeyFile(encodeKeyFile(id)).did, id.did);
      throwsIdentity(() => decodeKeyFile(edit({ version: 3 }), 'mem.json'), 'INVALID_KEY_FILE', /^key file mem\.json:/);
    });
  });
});

describe('relay auth transcript (version 2)', () => {
  const peer = Ed25519Identity.fromSeed(unhex(RFC8032_SEED));
  const stranger = Ed25519Identity.fromSeed(new Uint8Array(32).fill(0xff));
  const relay = Ed25519Identity.fromSeed(new Uint8Array(32).fill(0x01));
  const otherRelay = Ed25519Identity.fromSeed(new Uint8Array(32).fill(0x02));
  const relayNonce = Uint8Array.from({ length: 32 }, (_, i) => i);
  const clientNonce = Uint8Array.from({ length: 32 }, (_, i) => 0x80 + i);
  const params = { relayNonce, clientNonce, relayKey: relay.publicKey, binding: 'ws' };
  const signature = signAuth(peer, params);
  const good = { ...params, did: peer.did, publicKey: peer.publicKey, signature };

  it('has the documented byte layout', () => {
    const bytes = authTranscript(params);
    const expected = Buffer.concat([
      Buffer.from(AUTH_DOMAIN, 'ascii'),
      Buffer.of(0),
      relayNonce,
      clientNonce,
      relay.publicKey,
      Buffer.of(2),
      Buffer.from('ws'),
      Buffer.of(0),
    ]);
    assert.equal(AUTH_DOMAIN, 'libertaria-relay-auth/2');
    assert.equal(hex(bytes), expected.toString('hex'));
    const exporter = new Uint8Array(32).fill(0xee);
    const bound = authTranscript({ ...params, binding: 'tls', channelBinding: exporter });
    assert.equal(
      hex(bound),
      Buffer.concat([bytes.subarray(0, 120), Buffer.of(3), Buffer.from('tls'), Buffer.of(32), exporter]).toString(
        'hex',
      ),
    );
  });

  it("the relay's CHALLENGE transcript has its own domain and the client's nonce first", () => {
    const bytes = relayChallengeTranscript(params);
    const expected = Buffer.concat([
      Buffer.from(CHALLENGE_DOMAIN, 'ascii'),
      Buffer.of(0),
      clientNonce,
      relayNonce,
      relay.publicKey,
      Buffer.of(2),
      Buffer.from('ws'),
      Buffer.of(0),
    ]);
    assert.equal(CHALLENGE_DOMAIN, 'libertaria-relay-challenge/2');
    assert.equal(hex(bytes), expected.toString('hex'));
    const relaySig = relay.sign(bytes);
    const challenge = { ...params, relayDid: relay.did, signature: relaySig };
    assert.equal(verifyRelayChallenge(challenge), true);
    assert.equal(verifyRelayChallenge({ ...challenge, relayDid: relay.didKey }), true);
    // Another client's nonce (a CHALLENGE passed through from another connection), another DID, another transport.
    assert.equal(verifyRelayChallenge({ ...challenge, clientNonce: relayNonce }), false);
    assert.equal(verifyRelayChallenge({ ...challenge, relayDid: otherRelay.did }), false);
    assert.equal(verifyRelayChallenge({ ...challenge, binding: 'tcp' }), false);
    assert.equal(verifyRelayChallenge({ ...challenge, channelBinding: new Uint8Array(32) }), false);
    // A peer's AUTH signature is never a relay's CHALLENGE signature, even over the same inputs.
    assert.equal(verifyRelayChallenge({ ...challenge, signature: relay.sign(authTranscript(params)) }), false);
  });

  it('signs and verifies with both DID forms', () => {
    assert.equal(signature.length, 64);
    assert.equal(verifyAuth(good), true);
    assert.equal(verifyAuth({ ...good, did: peer.didKey }), true);
  });

  it('fails on a flipped bit of either nonce', () => {
    const flipped = Uint8Array.from(relayNonce);
    flipped[31] = (flipped[31] ?? 0) ^ 0x01;
    assert.equal(verifyAuth({ ...good, relayNonce: flipped }), false);
    assert.equal(verifyAuth({ ...good, clientNonce: flipped }), false);
  });

  it('fails for another relay key, binding or channel binding', () => {
    assert.equal(verifyAuth({ ...good, relayKey: otherRelay.publicKey }), false);
    assert.equal(verifyAuth({ ...good, binding: 'tls' }), false);
    assert.equal(verifyAuth({ ...good, binding: 'tcp' }), false);
    assert.equal(verifyAuth({ ...good, channelBinding: new Uint8Array(32) }), false);
  });

  it('fails when the DID does not name the key', () => {
    assert.equal(verifyAuth({ ...good, did: stranger.did }), false);
    assert.equal(verifyAuth({ ...good, did: stranger.didKey }), false);
    // A stranger's DID and key with the peer's signature: the key matches the DID, the signature does not.
    assert.equal(verifyAuth({ ...good, did: stranger.did, publicKey: stranger.publicKey }), false);
    assert.equal(verifyAuth({ ...good, did: 'did:web:example.com' }), false);
    assert.equal(verifyAuth({ ...good, did: 'not a did' }), false);
    assert.equal(verifyAuth({ ...good, did: `did:key:z${'1'.repeat(500)}` }), false);
  });

  it('fails on a wrong key length or a bad signature', () => {
    assert.equal(verifyAuth({ ...good, publicKey: peer.publicKey.subarray(0, 31) }), false);
    assert.equal(verifyAuth({ ...good, publicKey: Uint8Array.of(...peer.publicKey, 0) }), false);
    assert.equal(verifyAuth({ ...good, signature: signature.subarray(0, 63) }), false);
    assert.equal(verifyAuth({ ...good, signature: new Uint8Array(0) }), false);
    assert.equal(verifyAuth({ ...good, signature: undefined as unknown as Uint8Array }), false);
    assert.equal(verifyAuth({ ...good, signature: signAuth(stranger, params) }), false);
  });

  it('throws IdentityError on malformed params (a programmer error)', () => {
    throwsIdentity(
      () => authTranscript({ ...params, relayNonce: new Uint8Array(31) }),
      'INVALID_AUTH_PARAMS',
      /relayNonce/,
    );
    throwsIdentity(
      () => authTranscript({ ...params, clientNonce: new Uint8Array(33) }),
      'INVALID_AUTH_PARAMS',
      /clientNonce/,
    );
    throwsIdentity(
      () => authTranscript({ ...params, relayKey: new Uint8Array(31) }),
      'INVALID_AUTH_PARAMS',
      /relayKey/,
    );
    throwsIdentity(() => authTranscript({ ...params, binding: 'x'.repeat(256) }), 'INVALID_AUTH_PARAMS', /binding/);
    throwsIdentity(() => authTranscript({ ...params, binding: '\ud800' }), 'INVALID_AUTH_PARAMS', /well-formed/);
    throwsIdentity(
      () => authTranscript({ ...params, channelBinding: new Uint8Array(16) }),
      'INVALID_AUTH_PARAMS',
      /channelBinding/,
    );
    assert.equal(authTranscript({ ...params, binding: 'x'.repeat(255) }).length, 24 + 96 + 1 + 255 + 1);
    throwsIdentity(() => verifyAuth({ ...good, relayNonce: new Uint8Array(0) }), 'INVALID_AUTH_PARAMS');
  });
});
