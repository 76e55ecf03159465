/**
 * A failure inside one connection's handling closes that connection with a
 * fatal ERROR INTERNAL, a log line and relay_internal_errors_total{where},
 * and never escapes to the transport callback or as an unhandled rejection
 * (issue 12, docs/relay.md#containment). Bugs cannot be provoked from the
 * wire once they are fixed, so these cases inject one into the connection's
 * context (a logger or metric that throws) around a real PeerConnection.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { authTranscript, Ed25519Identity } from '@libertaria/identity';
import { silentLogger } from '@libertaria/log';
import { decodeFrames, ErrorFlags, encodeFrame, errorCodeFromWire, type Frame } from '@libertaria/protocol';
import { loadRelayConfig } from '../src/config.js';
import { InFlightCount } from '../src/in-flight-count.js';
import { RelayMetrics } from '../src/metrics.js';
import { PeerConnection } from '../src/peer-connection.js';
import { ConcurrencyLimit, ConnectionsPerAddress, HandshakeFailureLimiter } from '../src/rate-limits.js';
import type { RelayContext } from '../src/relay-context.js';
import type { PeerTransport } from '../src/transport/types.js';

class FakeTransport implements PeerTransport {
  readonly kind = 'tcp' as const;
  readonly remoteAddress = '192.0.2.1';
  readonly out: Frame[] = [];
  ended = false;
  destroyed = false;
  write(bytes: Uint8Array): void {
    this.out.push(...decodeFrames(bytes));
  }
  bufferedBytes(): number {
    return 0;
  }
  socketBufferedBytes(): number {
    return 0;
  }
  channelBinding(): undefined {
    return undefined;
  }
  end(): void {
    this.ended = true;
  }
  destroy(): void {
    this.destroyed = true;
  }
}

const relayIdentity = Ed25519Identity.generate();
const clientNonce = new Uint8Array(32).fill(7);

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => {
  unhandled.push(reason);
};
before(() => {
  process.on('unhandledRejection', onUnhandled);
});
after(() => {
  process.off('unhandledRejection', onUnhandled);
});

function context(overrides: { log?: RelayContext['log']; metrics?: RelayMetrics } = {}): {
  ctx: RelayContext;
  metrics: RelayMetrics;
  errors: Array<{ msg: string; fields: Record<string, unknown> | undefined }>;
} {
  const metrics = overrides.metrics ?? new RelayMetrics('containment-test');
  const errors: Array<{ msg: string; fields: Record<string, unknown> | undefined }> = [];
  const base = overrides.log ?? silentLogger;
  const log = {
    ...base,
    error: (msg: string, fields?: Record<string, unknown>) => {
      errors.push({ msg, fields });
    },
  };
  const ctx = {
    config: loadRelayConfig({}),
    nodeId: 'containment-test',
    identity: relayIdentity,
    log,
    metrics,
    router: {
      attach: async () => undefined,
      detach: () => undefined,
    },
    authLimiter: new HandshakeFailureLimiter({ perPeer: 1000, perAddress: 1000 }),
    anonSlots: new ConcurrencyLimit(10),
    connectionsPerAddress: new ConnectionsPerAddress(0),
    membrane: undefined,
    isDraining: () => false,
    trackDurableWrite: () => undefined,
    durableWrites: new InFlightCount(),
  } as unknown as RelayContext;
  return { ctx, metrics, errors };
}

async function internalErrors(metrics: RelayMetrics, where: string): Promise<number> {
  const m = await metrics.internalErrors.get();
  return m.values.find((v) => v.labels.where === where)?.value ?? 0;
}

describe('per-connection containment', () => {
  it('a throw while handling a frame closes that connection with INTERNAL, counted and logged', async () => {
    const metrics = new RelayMetrics('containment-test');
    const frameCount = metrics.frame.bind(metrics);
    // A bug on the inbound path: counting an incoming frame throws.
    metrics.frame = (type, direction, size) => {
      if (direction === 'in') throw new Error('injected bug');
      frameCount(type, direction, size);
    };
    const { ctx, errors } = context({ metrics });
    const transport = new FakeTransport();
    const conn = new PeerConnection(ctx, transport);
    assert.doesNotThrow(() =>
      conn.onFrame(Buffer.from(encodeFrame({ type: 'HELLO', minVersion: 2, maxVersion: 2, features: 0, clientNonce }))),
    );
    const err = transport.out.find((f) => f.type === 'ERROR');
    assert.ok(err && err.type === 'ERROR');
    assert.equal(errorCodeFromWire(err.code), 'INTERNAL');
    assert.ok(err.flags & ErrorFlags.FATAL);
    assert.ok(transport.ended);
    assert.equal(await internalErrors(metrics, 'frame'), 1);
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.fields?.where, 'frame');
    conn.onClose();
  });

  it('a throw in a promise continuation (after AUTH) closes the connection instead of an unhandled rejection', async () => {
    const before = unhandled.length;
    // The "peer authenticated" debug line runs inside the attach promise's continuation.
    const throwingLog = {
      ...silentLogger,
      debug: (msg: string) => {
        if (msg === 'peer authenticated') throw new Error('injected bug');
      },
    };
    const { ctx, metrics, errors } = context({ log: throwingLog });
    const transport = new FakeTransport();
    const conn = new PeerConnection(ctx, transport);
    conn.onFrame(Buffer.from(encodeFrame({ type: 'HELLO', minVersion: 2, maxVersion: 2, features: 0, clientNonce })));
    const challenge = transport.out.find((f) => f.type === 'CHALLENGE');
    assert.ok(challenge && challenge.type === 'CHALLENGE');
    const id = Ed25519Identity.generate();
    const signature = id.sign(
      authTranscript({ relayNonce: challenge.nonce, clientNonce, relayKey: relayIdentity.publicKey, binding: 'tcp' }),
    );
    conn.onFrame(
      Buffer.from(encodeFrame({ type: 'AUTH', keyType: 1, publicKey: id.publicKey, signature, did: id.did })),
    );
    await new Promise((r) => setTimeout(r, 50));
    const err = transport.out.find((f) => f.type === 'ERROR');
    assert.ok(err && err.type === 'ERROR', transport.out.map((f) => f.type).join(','));
    assert.equal(errorCodeFromWire(err.code), 'INTERNAL');
    assert.ok(transport.ended);
    assert.equal(await internalErrors(metrics, 'async'), 1);
    assert.equal(errors[0]?.fields?.where, 'async');
    assert.equal(unhandled.length, before, 'no unhandled rejection');
    conn.onClose();
  });
});
