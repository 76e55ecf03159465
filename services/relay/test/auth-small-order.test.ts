/**
 * A small-order Ed25519 key cannot log in (issue 12 item 7): with the public
 * key a point of small order (the identity, say) and the signature
 * (R = a small-order point, S = 0), the verification equation holds for every
 * transcript, so without the strict rules (docs/identity.md#signature-rules)
 * such a DID would belong to everyone. Real relay, raw sockets, both transports.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Ed25519Identity, formatDidKey, formatLibertariaDid } from '@libertaria/identity';
import { ErrorFlags, errorCodeFromWire } from '@libertaria/protocol';
import { RawPeer } from '../../../test-support/raw-peer.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'));
/** The identity point, and the two of order 8 with the sign bit clear and set (vectors/ed25519-edge-cases.json). */
const SMALL_ORDER_KEYS = [
  '0100000000000000000000000000000000000000000000000000000000000000',
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a',
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa',
];

let redis: RedisHandle;
let relay: RelayHandle;
const peers: RawPeer[] = [];

before(async () => {
  redis = await startRedis();
  relay = await startRelay({ redisUrl: redis.url });
});

after(async () => {
  for (const p of peers) p.close();
  await relay?.stop();
  await redis?.stop();
});

describe('AUTH with a small-order key', () => {
  for (const transport of ['ws', 'tcp'] as const) {
    for (const key of SMALL_ORDER_KEYS) {
      for (const didOf of [formatLibertariaDid, formatDidKey]) {
        it(`is refused with AUTH_FAILED: ${transport}, ${key.slice(0, 8)}…, ${didOf === formatDidKey ? 'did:key' : 'did:libertaria'}`, async () => {
          const p = await RawPeer.connect(transport === 'ws' ? relay.wsUrl : relay.tcpUrl);
          peers.push(p);
          p.hello(0);
          await p.next('CHALLENGE');
          const publicKey = hex(key);
          // R = the identity, S = 0: [0]B = identity = R + [k]A for every k when A is the identity.
          const signature = new Uint8Array(64);
          signature[0] = 1;
          p.send({ type: 'AUTH', keyType: 1, publicKey, signature, did: didOf(publicKey) });
          const err = await p.next('ERROR');
          assert.equal(errorCodeFromWire(err.code), 'AUTH_FAILED');
          assert.ok(err.flags & ErrorFlags.FATAL);
          await p.closedPromise;
          assert.equal(
            p.frames.find((f) => f.type === 'WELCOME'),
            undefined,
          );
        });
      }
    }
  }

  it('an honest key still logs in', async () => {
    const p = await RawPeer.connect(relay.wsUrl);
    peers.push(p);
    const welcome = await p.authenticate(Ed25519Identity.generate());
    assert.equal(welcome.type, 'WELCOME');
  });
});
