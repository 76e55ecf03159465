/**
 * What the real @xmtp/node-sdk (and its native libxmtp bindings) does on this
 * machine, which cannot reach any XMTP network: the parts the bridge relies on
 * that run offline, and the errors the bridge's adapter turns the rest into.
 * docs/bridges.md#xmtp-what-runs-offline records the same findings.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { BridgeError } from '@libertaria/bridge-kit';
import { createClient } from '@xmtp/node-bindings';
import { encodeReaction, encodeText, generateInboxId, type IdentifierKind, type Reaction } from '@xmtp/node-sdk';
import { eoaAddress, generateEoaSecret } from '../src/eoa.js';
import { mapSdkError, SdkXmtpNetwork } from '../src/sdk-network.js';
import { FakeXmtpNetwork } from './support/fake-network.js';

const ETHEREUM = 0 as IdentifierKind;

function account(dir: string) {
  const eoaSecret = generateEoaSecret();
  const address = eoaAddress(eoaSecret);
  return {
    eoaSecret,
    address,
    dbEncryptionKey: crypto.getRandomValues(new Uint8Array(32)),
    dbPath: join(dir, `${address}.db3`),
  };
}

describe('@xmtp/node-sdk offline (the real SDK and bindings, no network)', () => {
  it('loads its native bindings here and computes inbox ids offline, as the fake network does', () => {
    const address = eoaAddress(generateEoaSecret());
    const id = generateInboxId({ identifier: address, identifierKind: ETHEREUM });
    assert.match(id, /^[0-9a-f]{64}$/);
    assert.equal(id, createHash('sha256').update(`${address}1`).digest('hex'));
    assert.equal(new SdkXmtpNetwork({ env: 'dev', appVersion: 't' }).inboxIdOf(address), id);
    assert.equal(new FakeXmtpNetwork().inboxIdOf(address), id);
  });

  it('encodes content offline with its codecs (text, reaction)', () => {
    const text = encodeText('héllo ✓');
    assert.deepEqual(text.type, { authorityId: 'xmtp.org', typeId: 'text', versionMajor: 1, versionMinor: 0 });
    assert.equal(text.parameters.encoding, 'UTF-8');
    assert.equal(Buffer.from(text.content).toString('utf8'), 'héllo ✓');
    const reaction = encodeReaction({
      reference: 'ab'.repeat(32),
      referenceInboxId: 'cd'.repeat(32),
      action: 1 as Reaction['action'],
      content: '👍',
      schema: 1 as Reaction['schema'],
    });
    assert.equal(reaction.type?.typeId, 'reaction');
    assert.ok(reaction.content.length > 0);
  });

  it('creates an encrypted SQLCipher database offline and refuses it a wrong key (BRIDGE_KEY_STORE)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xmtp-sqlcipher-'));
    const a = account(dir);
    const identifier = { identifier: a.address, identifierKind: ETHEREUM };
    const inboxId = generateInboxId(identifier);
    // libxmtp's own createClient with allowOffline: it opens (creates) the database, then needs the network.
    const open = (key: Uint8Array) =>
      createClient(
        'http://127.0.0.1:9',
        null,
        false,
        a.dbPath,
        inboxId,
        identifier,
        key,
        null,
        'Disabled' as never,
        { level: 'Off' as never },
        true,
      );
    const first = await open(a.dbEncryptionKey).then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    assert.ok(first, 'an unregistered inbox cannot start without the network');
    assert.equal(mapSdkError('open', first).code, 'BRIDGE_UNAVAILABLE');
    assert.ok(existsSync(a.dbPath) && existsSync(`${a.dbPath}.sqlcipher_salt`));
    // Encrypted past its plaintext header: no schema text in the file.
    assert.ok(!readFileSync(a.dbPath).includes('CREATE TABLE'));
    const wrong = await open(new Uint8Array(32).fill(7)).then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    assert.match(String(wrong?.message), /PRAGMA key or salt has incorrect value/);
    const mapped = mapSdkError('open', wrong);
    assert.equal(mapped.code, 'BRIDGE_KEY_STORE');
    assert.equal(mapped.retryable, false);
  });

  it('Client.create without a reachable network fails retryable (BRIDGE_UNAVAILABLE), and a missing database of a recorded installation is refused before any network', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xmtp-sdk-'));
    // `local` points at localhost:5556, where nothing listens here.
    const network = new SdkXmtpNetwork({ env: 'local', appVersion: 'libertaria-test/0' });
    await assert.rejects(network.open(account(dir), { mayCreateInstallation: true }), (err: unknown) => {
      assert.ok(err instanceof BridgeError);
      assert.equal(err.code, 'BRIDGE_UNAVAILABLE');
      assert.equal(err.retryable, true);
      return true;
    });
    await assert.rejects(network.open(account(dir), { mayCreateInstallation: false }), {
      code: 'BRIDGE_STATE_MISSING',
    });
  });

  it('maps rate limiting to a rate-limited BridgeError', () => {
    for (const text of ['status: ResourceExhausted, message: "rate limit exceeded"', 'HTTP 429 Too Many Requests']) {
      const e = mapSdkError('publish', new Error(text));
      assert.equal(e.code, 'BRIDGE_UNAVAILABLE');
      assert.equal(e.rateLimited, true);
    }
    assert.equal(mapSdkError('publish', new Error('tcp connect error')).rateLimited, false);
  });
});
