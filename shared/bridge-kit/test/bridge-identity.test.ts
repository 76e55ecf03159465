import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  BridgeError,
  BridgeProtocols,
  bridgeProtocolFor,
  bridgeProtocolName,
  encodeNpub,
  ForeignIdentityError,
  federatedSession,
  isForeignIdentity,
  nostrIdentity,
  parseForeignIdentity,
  protocolServes,
} from '@libertaria/bridge-kit';
import { Ed25519Identity } from '@libertaria/identity';

// The x coordinate of the secp256k1 generator: a valid x-only key.
const G = '79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798';

function code(c: string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof ForeignIdentityError || err instanceof BridgeError, String(err));
    assert.equal((err as BridgeError).code, c);
    return true;
  };
}

describe('foreign identity URIs', () => {
  it('parse nostr:npub1… to the x-only key and back', () => {
    const npub = encodeNpub(G);
    const id = parseForeignIdentity(`nostr:${npub}`);
    assert.deepEqual(id, { type: 'nostr', uri: `nostr:${npub}`, npub, pubkeyHex: G });
    assert.deepEqual(nostrIdentity(G), id);
  });

  it('refuse npubs with a bad checksum, wrong length, uppercase, a key off the curve, or nprofile', () => {
    const npub = encodeNpub(G);
    const flipped = npub.slice(0, -1) + (npub.endsWith('q') ? 'p' : 'q');
    assert.throws(() => parseForeignIdentity(`nostr:${flipped}`), code('FOREIGN_IDENTITY_INVALID'));
    assert.throws(() => parseForeignIdentity(`nostr:${npub.slice(0, -2)}`), code('FOREIGN_IDENTITY_INVALID'));
    assert.throws(() => parseForeignIdentity(`nostr:${npub.toUpperCase()}`), code('FOREIGN_IDENTITY_INVALID'));
    // x = 0xff…ff is above the field prime: no point has it.
    assert.throws(() => parseForeignIdentity(`nostr:${encodeNpub('ff'.repeat(32))}`), code('FOREIGN_IDENTITY_INVALID'));
    assert.throws(() => parseForeignIdentity('nostr:nprofile1qqsw'), code('FOREIGN_IDENTITY_INVALID'));
  });

  it('parse acct:user@host, lowercasing the host, with an optional port', () => {
    assert.deepEqual(parseForeignIdentity('acct:Alice@Social.Example'), {
      type: 'activitypub',
      kind: 'acct',
      uri: 'acct:Alice@social.example',
      user: 'Alice',
      host: 'social.example',
    });
    assert.equal(parseForeignIdentity('acct:bob@127.0.0.1:8443').uri, 'acct:bob@127.0.0.1:8443');
    for (const bad of [
      'acct:@host',
      'acct:bob@',
      'acct:bob',
      'acct:b ob@host',
      'acct:bob@-bad-.example',
      'acct:bob@host:99999',
    ]) {
      assert.throws(() => parseForeignIdentity(bad), code('FOREIGN_IDENTITY_INVALID'), bad);
    }
  });

  it('parse an ActivityPub actor by its URL, canonical as the URL parser writes it', () => {
    assert.deepEqual(parseForeignIdentity('HTTPS://Social.Example:443/users/Bob'), {
      type: 'activitypub',
      kind: 'actor',
      uri: 'https://social.example/users/Bob',
      host: 'social.example',
    });
    const local = parseForeignIdentity('http://127.0.0.1:8080/users/bob?x=1');
    assert.deepEqual(
      [local.uri, local.type === 'activitypub' && local.host],
      ['http://127.0.0.1:8080/users/bob?x=1', '127.0.0.1:8080'],
    );
    for (const bad of [
      'https://social.example',
      'https://social.example/',
      'https://bob:secret@social.example/users/bob',
      'https://social.example/users/bob#main-key',
      'https://-bad-.example/users/bob',
      'https://[::1]/users/bob',
      `https://social.example/${'a'.repeat(400)}`,
      'https://',
    ]) {
      assert.throws(() => parseForeignIdentity(bad), code('FOREIGN_IDENTITY_INVALID'), bad);
    }
    assert.throws(() => parseForeignIdentity('ftp://social.example/bob'), code('FOREIGN_PROTOCOL_UNSUPPORTED'));
  });

  it('parse xmtp: addresses and inbox ids, canonical in lowercase', () => {
    const addr = parseForeignIdentity(`xmtp:0x${'AB'.repeat(20)}`);
    assert.deepEqual(addr, {
      type: 'xmtp',
      uri: `xmtp:0x${'ab'.repeat(20)}`,
      kind: 'address',
      value: `0x${'ab'.repeat(20)}`,
    });
    assert.equal(parseForeignIdentity(`xmtp:${'c'.repeat(64)}`).type, 'xmtp');
    assert.throws(() => parseForeignIdentity('xmtp:0x1234'), code('FOREIGN_IDENTITY_INVALID'));
  });

  it('name unknown schemes FOREIGN_PROTOCOL_UNSUPPORTED unless a custom bridge claims them', () => {
    assert.throws(() => parseForeignIdentity('matrix:@a:b.org'), code('FOREIGN_PROTOCOL_UNSUPPORTED'));
    const custom = parseForeignIdentity('matrix:@a:b.org', { customSchemes: ['matrix'] });
    assert.equal(custom.type, 'custom');
    assert.equal(bridgeProtocolName(bridgeProtocolFor(custom)), 'custom:matrix');
    assert.ok(!isForeignIdentity('no-colon'));
  });

  it('bound the input before any decoding', () => {
    assert.throws(() => parseForeignIdentity(`nostr:${'q'.repeat(10000)}`), code('FOREIGN_IDENTITY_INVALID'));
  });
});

describe('federated sessions', () => {
  const did = Ed25519Identity.generate().did;
  const remote = nostrIdentity(G);
  const sessionId = '00'.repeat(16);

  it('take the bridge from the remote identity, and refuse a bridge that does not serve it', () => {
    const session = federatedSession({ sessionId, localPeer: did, remotePeer: remote });
    assert.deepEqual(session.bridge, BridgeProtocols.Nostr);
    assert.ok(protocolServes(BridgeProtocols.Nostr, remote));
    assert.throws(
      () => federatedSession({ sessionId, localPeer: did, remotePeer: remote, bridge: BridgeProtocols.Xmtp }),
      (err: unknown) => err instanceof BridgeError && err.code === 'BRIDGE_PROTOCOL_MISMATCH' && !err.retryable,
    );
  });

  it('refuse a bad DID or session id', () => {
    assert.throws(() => federatedSession({ sessionId, localPeer: 'did:nope', remotePeer: remote }), {
      code: 'INVALID_DID',
    });
    assert.throws(() => federatedSession({ sessionId: 'xyz', localPeer: did, remotePeer: remote }), {
      code: 'BAD_FIELD',
    });
  });
});
