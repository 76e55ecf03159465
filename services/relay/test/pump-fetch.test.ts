/**
 * Durable delivery pumps read Redis a bounded slice at a time, and only
 * PUMP_FETCH_CONCURRENCY of them per node at once (found by the adversarial
 * suite's case S03, docs/security.md#found-by-the-suite): many connections
 * that RESUME a large backlog and never read must not queue megabytes of
 * replies ahead of every other command on the node's one Redis connection.
 * Real PeerConnections around a store whose fetches the test holds open.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { authTranscript, Ed25519Identity } from '@libertaria/identity';
import { silentLogger } from '@libertaria/log';
import { decodeFrames, encodeFrame, type Frame } from '@libertaria/protocol';
import { loadRelayConfig } from '../src/config.js';
import { InFlightCount } from '../src/in-flight-count.js';
import { RelayMetrics } from '../src/metrics.js';
import { PeerConnection, PUMP_FETCH_BYTES, PUMP_FETCH_CONCURRENCY } from '../src/peer-connection.js';
import { ConcurrencyLimit, ConnectionsPerAddress, HandshakeFailureLimiter, WaitingSlots } from '../src/rate-limits.js';
import type { RelayContext } from '../src/relay-context.js';
import type { PeerTransport } from '../src/transport/types.js';

class FakeTransport implements PeerTransport {
  readonly kind = 'tcp' as const;
  readonly remoteAddress = '192.0.2.1';
  readonly out: Frame[] = [];
  write(bytes: Uint8Array): void {
    this.out.push(...decodeFrames(bytes));
  }
  bufferedBytes(): number {
    return 0;
  }
  socketBufferedBytes(): number {
    return 0;
  }
  end(): void {}
  destroy(): void {}
  channelBinding(): undefined {
    return undefined;
  }
}

const relayIdentity = Ed25519Identity.generate();
const clientNonce = new Uint8Array(32).fill(7);

const tick = () => new Promise((r) => setTimeout(r, 5));

describe('durable delivery pumps of one node', () => {
  it(`read at most ${PUMP_FETCH_BYTES} bytes per fetch and at most ${PUMP_FETCH_CONCURRENCY} fetches at once`, async () => {
    let inFlight = 0;
    let most = 0;
    const asked: number[] = [];
    const pending: Array<() => void> = [];
    const store = {
      ackUpTo: async () => undefined,
      fetchWithin: (_hint: Uint8Array, _after: number, _limit: number, maxBytes: number) => {
        inFlight++;
        most = Math.max(most, inFlight);
        asked.push(maxBytes);
        return new Promise((resolve) => {
          pending.push(() => {
            inFlight--;
            resolve({ frames: [], more: false });
          });
        });
      },
    };
    const ctx = {
      config: loadRelayConfig({}),
      identity: relayIdentity,
      nodeId: 'pump-test',
      log: silentLogger,
      metrics: new RelayMetrics('pump-test'),
      router: { attach: async () => undefined, detach: () => undefined },
      store,
      authLimiter: new HandshakeFailureLimiter({ perPeer: 1000, perAddress: 1000 }),
      anonSlots: new ConcurrencyLimit(10),
      connectionsPerAddress: new ConnectionsPerAddress(0),
      fetchSlots: new WaitingSlots(PUMP_FETCH_CONCURRENCY),
      membrane: undefined,
      isDraining: () => false,
      trackDurableWrite: () => undefined,
      durableWrites: new InFlightCount(),
    } as unknown as RelayContext;

    // One DID, many connections, each RESUMEs (with an empty transport: room for its whole budget).
    const id = Ed25519Identity.generate();
    const connections = 3 * PUMP_FETCH_CONCURRENCY;
    const conns: PeerConnection[] = [];
    for (let i = 0; i < connections; i++) {
      const transport = new FakeTransport();
      const conn = new PeerConnection(ctx, transport);
      conns.push(conn);
      conn.onFrame(Buffer.from(encodeFrame({ type: 'HELLO', minVersion: 2, maxVersion: 2, features: 0, clientNonce })));
      const challenge = transport.out.find((f) => f.type === 'CHALLENGE');
      assert.ok(challenge && challenge.type === 'CHALLENGE');
      const signature = id.sign(
        authTranscript({ relayNonce: challenge.nonce, clientNonce, relayKey: relayIdentity.publicKey, binding: 'tcp' }),
      );
      conn.onFrame(
        Buffer.from(encodeFrame({ type: 'AUTH', keyType: 1, publicKey: id.publicKey, signature, did: id.did })),
      );
      await tick();
      assert.ok(transport.out.some((f) => f.type === 'WELCOME'));
      conn.onFrame(Buffer.from(encodeFrame({ type: 'RESUME', lastAcked: 0 })));
    }
    await tick();
    assert.equal(inFlight, PUMP_FETCH_CONCURRENCY, 'the others wait their turn');
    // Answer them one by one: every connection gets its read, never more than the bound at once.
    while (pending.length > 0) {
      pending.shift()!();
      await tick();
    }
    assert.equal(asked.length, connections);
    assert.equal(most, PUMP_FETCH_CONCURRENCY);
    assert.ok(
      asked.every((b) => b <= PUMP_FETCH_BYTES),
      `asked ${Math.max(...asked)} bytes`,
    );
    for (const conn of conns) conn.onClose();
  });
});
