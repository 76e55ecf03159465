/** The federated message codec, the registry contract and the derived ids (shared/bridge-kit/src/federation.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  checkRegistration,
  dashboardQueuesKey,
  decodeFederatedMessage,
  encodeFederatedMessage,
  type FederatedMessage,
  federatedMessageId,
  federationNetworkName,
  inboundJobId,
  isFederatedMessage,
  isServiceQueueName,
  MAX_FEDERATED_MESSAGE_BYTES,
  MAX_FEDERATED_TEXT_BYTES,
  outboundQueueName,
} from '@libertaria/bridge-kit';
import { Ed25519Identity, hintFromDid, hintToHex } from '@libertaria/identity';

const NPUB = 'nostr:npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6';

function raw(json: unknown): Uint8Array {
  const body = new TextEncoder().encode(typeof json === 'string' ? json : JSON.stringify(json));
  return Uint8Array.from([0x4c, 0x52, 0x46, 1, ...body]);
}

describe('federated messages', () => {
  it('round-trip every type', () => {
    const messages: FederatedMessage[] = [
      { type: 'send-dm', to: NPUB, text: 'hi ☕', session: 'ab'.repeat(16) },
      { type: 'send-dm', to: NPUB, text: '' },
      { type: 'send-note', text: 'public' },
      { type: 'received', kind: 'mention', from: NPUB, text: 'yo', sentAt: 1_700_000_000, id: 'f'.repeat(64) },
    ];
    for (const m of messages) {
      const bytes = encodeFederatedMessage(m);
      assert.ok(isFederatedMessage(bytes));
      assert.deepEqual(decodeFederatedMessage(bytes), m);
    }
  });

  it('refuse malformed input with FEDERATED_ENVELOPE_INVALID', () => {
    const bad: Uint8Array[] = [
      new TextEncoder().encode('plain application bytes'),
      Uint8Array.from([0x4c, 0x52, 0x46, 2, 0x7b, 0x7d]), // version 2
      raw('{not json'),
      Uint8Array.from([0x4c, 0x52, 0x46, 1, 0xff, 0xfe]), // not UTF-8
      raw([]),
      raw({ type: 'send-dm', to: NPUB }), // no text
      raw({ type: 'send-dm', to: NPUB, text: 'x', extra: 1 }),
      raw({ type: 'send-dm', to: NPUB, text: 'x', session: 'XYZ' }),
      raw({ type: 'send-dm', to: 'n'.repeat(321), text: 'x' }),
      raw({ type: 'received', kind: 'dm', from: NPUB, text: 'x', sentAt: -1, id: 'a' }),
      raw({ type: 'received', kind: 'reply', from: NPUB, text: 'x', sentAt: 1, id: 'a' }),
      raw({ type: 'received', kind: 'dm', from: NPUB, text: 'x', sentAt: 1, id: 'has space' }),
      raw({ type: 'delete' }),
      raw({ type: 'send-note', text: 'é'.repeat(MAX_FEDERATED_TEXT_BYTES / 2 + 1) }),
      new Uint8Array(MAX_FEDERATED_MESSAGE_BYTES + 1),
    ];
    for (const bytes of bad) {
      assert.throws(() => decodeFederatedMessage(bytes), { code: 'FEDERATED_ENVELOPE_INVALID' });
    }
    assert.throws(() => encodeFederatedMessage({ type: 'send-note', text: 'x'.repeat(MAX_FEDERATED_TEXT_BYTES + 1) }), {
      code: 'FEDERATED_ENVELOPE_INVALID',
    });
    // The text limit is in bytes, inclusive.
    const max = encodeFederatedMessage({ type: 'send-note', text: 'x'.repeat(MAX_FEDERATED_TEXT_BYTES) });
    assert.equal(decodeFederatedMessage(max).type, 'send-note');
  });
});

describe('registry and job ids', () => {
  const did = Ed25519Identity.generate().did;
  const good = {
    network: 'nostr',
    did,
    hint: hintToHex(hintFromDid(did)),
    queue: 'outbound-nostr',
    attempts: 8,
    backoffMs: 1000,
    jitter: 0.5,
    registeredAt: Date.now(),
  };

  it('accepts a valid registration and refuses each bad field', () => {
    assert.deepEqual(checkRegistration(good), good);
    for (const [field, value] of [
      ['network', 'No:Colons'],
      ['did', 'did:example:x'],
      ['hint', 'zz'],
      ['queue', 'outbound-other'],
      ['attempts', 0],
      ['attempts', 101],
      ['backoffMs', 0],
      ['jitter', 1.5],
      ['registeredAt', 'now'],
    ] as const) {
      assert.throws(() => checkRegistration({ ...good, [field]: value }), `${field}=${value}`);
    }
  });

  it('names queues and derives ids without the colons BullMQ refuses', () => {
    assert.equal(federationNetworkName('custom:matrix'), 'custom-matrix');
    assert.equal(outboundQueueName('custom:matrix'), 'outbound-custom-matrix');
    assert.throws(() => federationNetworkName('Bad Name'), { code: 'FEDERATED_ENVELOPE_INVALID' });
    const id = inboundJobId('nostr', 'e'.repeat(64));
    assert.match(id, /^nostr-[0-9a-f]{32}$/);
    assert.equal(id, inboundJobId('nostr', 'e'.repeat(64)), 'deterministic: the same foreign message, the same job');
    assert.notEqual(id, inboundJobId('nostr', 'd'.repeat(64)));
    // One foreign message to two bridged peers: two jobs; to one peer again: the same job.
    const [alice, bob] = ['did:example:alice', 'did:example:bob'];
    assert.notEqual(inboundJobId('nostr', 'e'.repeat(64), alice), inboundJobId('nostr', 'e'.repeat(64), bob));
    assert.equal(inboundJobId('nostr', 'e'.repeat(64), alice), inboundJobId('nostr', 'e'.repeat(64), alice));
    assert.match(inboundJobId('nostr', 'e'.repeat(64), alice), /^nostr-[0-9a-f]{32}$/);
    assert.equal(federatedMessageId('nostr', 'x').length, 16);
    assert.notDeepEqual(federatedMessageId('nostr', 'x'), federatedMessageId('xmtp', 'x'));
  });

  it("lists bridges' own queues for the dashboard, never under the federation's queue names", () => {
    assert.equal(dashboardQueuesKey(), '{lr-bridge}:dashboard-queues');
    assert.equal(dashboardQueuesKey('{x}'), '{x}:dashboard-queues');
    assert.ok(isServiceQueueName('activitypub-fedify'));
    for (const name of [
      'inbound',
      'outbound-nostr',
      'outbound-activitypub',
      'Fedify',
      'a:b',
      '',
      '-a',
      'a'.repeat(64),
    ]) {
      assert.equal(isServiceQueueName(name), false, name);
    }
  });
});
