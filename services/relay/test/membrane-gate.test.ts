/**
 * The relay's per-connection membrane gate (services/relay/src/membrane/enforcer.ts)
 * on the real Redis stores: SENDs leave in arrival order whatever their
 * decisions cost, cached allows decide without Redis and are dropped when a
 * policy changes, the queue is bounded, and the async-work count (PING's
 * barrier) always returns to zero.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Ed25519Identity, routingHint } from '@libertaria/identity';
import { createRedisMembrane, type RedisMembrane } from '@libertaria/membrane/redis';
import { type ErrorCode, encodeFrame } from '@libertaria/protocol';
import { Redis } from 'ioredis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { DurableStore } from '../src/durable-store.js';
import { Enforcer, type EnforcerOptions, type SendHost } from '../src/membrane/enforcer.js';

let redis: RedisHandle;
let c: Redis;
let sub: Redis;
let rm: RedisMembrane;

const OPTIONS: EnforcerOptions = {
  whenNoPolicy: 'allow',
  connectionCacheEntries: 16,
  cacheMaxAgeMs: 60_000,
  ownerCacheEntries: 100,
  pendingSends: 1000,
  grantsPerConnection: 4,
};

before(async () => {
  redis = await startRedis();
  c = new Redis(redis.url);
  sub = new Redis(redis.url);
  rm = createRedisMembrane(c, sub, { prefix: 'gt', whenNoPolicy: 'allow' });
  await rm.start();
});

after(async () => {
  await rm?.stop();
  c?.disconnect();
  sub?.disconnect();
  await redis?.stop();
});

class Host implements SendHost {
  readonly out: string[] = [];
  async = 0;
  maxAsync = 0;
  constructor(readonly membraneDid: string) {}
  isOpen(): boolean {
    return true;
  }
  passSend(frame: Buffer): void {
    this.out.push(`pass ${frame.readUInt32BE(6 + 64)}`);
  }
  refuseSend(frame: Buffer, code: ErrorCode): void {
    this.out.push(`${code} ${frame.readUInt32BE(6 + 64)}`);
  }
  beginAsync(): void {
    this.maxAsync = Math.max(this.maxAsync, ++this.async);
  }
  endAsync(): void {
    this.async--;
  }
  internalError(where: string, err: unknown): void {
    this.out.push(`internal ${where} ${String(err)}`);
  }
}

/** A SEND to `to` whose message id starts with the number n (read back by Host). */
function send(from: Ed25519Identity, to: Ed25519Identity, n: number, flags = 0): Buffer {
  const messageId = new Uint8Array(16);
  new DataView(messageId.buffer).setUint32(0, n);
  return Buffer.from(
    encodeFrame({
      type: 'SEND',
      dest: routingHint(to.publicKey),
      source: routingHint(from.publicKey),
      sessionId: new Uint8Array(16),
      messageId,
      flags,
      ttl: 0,
      position: 0,
      payload: new Uint8Array(8),
    }),
  );
}

async function settled(host: Host): Promise<void> {
  // Redis round trips: a deadline for a loaded CI machine.
  const deadline = Date.now() + 20_000;
  while (host.async > 0) {
    if (Date.now() > deadline) throw new Error(`gate did not settle within 20 s: ${host.async} decision(s) pending`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('membrane gate', () => {
  it('releases SENDs in arrival order across cached, counted and refused recipients', async () => {
    const enforcer = new Enforcer(rm, OPTIONS);
    const sender = Ed25519Identity.generate();
    const open = Ed25519Identity.generate(); // no policy: the default allows, then cached
    const counted = Ed25519Identity.generate(); // a rate policy: Redis on every frame
    await rm.policies.put(counted.did, {
      version: 1,
      capabilities: [{ resource: counted.did, action: 'send' }],
      constraints: [{ type: 'rate', limit: 5, windowSeconds: 3600 }],
    });
    const host = new Host(sender.did);
    const gate = enforcer.gate(host);
    for (let n = 1; n <= 20; n++) {
      const to = n % 2 === 0 ? counted : open;
      // Only a cached allow with nothing queued before it passes at once (the caller forwards it).
      if (gate.admit(send(sender, to, n), 0)) host.passSend(send(sender, to, n));
    }
    await settled(host);
    const numbers = host.out.map((x) => Number(x.split(' ')[1]));
    assert.deepEqual(
      numbers,
      Array.from({ length: 20 }, (_, i) => i + 1),
      'arrival order',
    );
    const even = host.out.filter((_, i) => i % 2 === 1);
    assert.equal(even.filter((x) => x.startsWith('pass')).length, 5, 'the rate limit: 5 of the counted sends');
    assert.equal(even.filter((x) => x.startsWith('ACCESS_RATE_LIMITED')).length, 5);
    assert.ok(host.out.filter((_, i) => i % 2 === 0).every((x) => x.startsWith('pass')));
    assert.ok(host.maxAsync >= 2, 'frames were held');
    // Everything decided: the next frame to the open recipient is a cache hit, synchronous.
    const hits = enforcer.stats.cacheHits;
    assert.equal(gate.admit(send(sender, open, 99), 0), true);
    assert.equal(enforcer.stats.cacheHits, hits + 1);
    enforcer.stop();
  });

  it('drops a cached allow when the recipient sets a policy, and bounds the queue', async () => {
    const enforcer = new Enforcer(rm, { ...OPTIONS, pendingSends: 3 });
    const sender = Ed25519Identity.generate();
    const owner = Ed25519Identity.generate();
    const host = new Host(sender.did);
    const gate = enforcer.gate(host);
    assert.equal(gate.admit(send(sender, owner, 1), 0), false, 'the first send is decided');
    await settled(host);
    assert.deepEqual(host.out, ['pass 1']);
    assert.equal(gate.admit(send(sender, owner, 2), 0), true, 'then cached');

    await rm.policies.put(owner.did, { version: 1, capabilities: [{ resource: owner.did, action: 'open' }] });
    assert.equal(gate.admit(send(sender, owner, 3), 0), false, 'the policy change voids the cached allow');
    for (let n = 4; n <= 6; n++) gate.admit(send(sender, owner, n), 0);
    await settled(host);
    // The fourth queued frame exceeds pendingSends = 3: refused at once, ahead of the three still deciding.
    assert.deepEqual(host.out, [
      'pass 1',
      'RATE_LIMITED 6',
      'ACCESS_NO_GRANT 3',
      'ACCESS_NO_GRANT 4',
      'ACCESS_NO_GRANT 5',
    ]);
    enforcer.stop();
  });

  it('passes a durable retry of a stored frame without a decision, and decides a new one', async () => {
    const store = new DurableStore(c, { prefix: 'gt', maxFrames: 100, maxBytes: 1 << 20, maxTtlSeconds: 3600 });
    const enforcer = new Enforcer(rm, {
      ...OPTIONS,
      isStoredDuplicate: (dest, source, messageId) => store.isStored(dest, source, messageId),
    });
    const sender = Ed25519Identity.generate();
    const owner = Ed25519Identity.generate();
    await rm.policies.put(owner.did, {
      version: 1,
      capabilities: [{ resource: owner.did, action: 'send', constraints: [{ type: 'quota', units: 1 }] }],
    });
    const host = new Host(sender.did);
    const gate = enforcer.gate(host);
    const first = send(sender, owner, 1, 1);
    gate.admit(first, 1);
    await settled(host);
    first[1] = 0x11; // as the relay stores it: DELIVER
    await store.enqueue(routingHint(owner.publicKey), first.subarray(6 + 64, 6 + 80), first, 0);
    const decisions = enforcer.stats.decisions;
    gate.admit(send(sender, owner, 1, 1), 1); // the same message id again
    gate.admit(send(sender, owner, 2, 1), 1);
    await settled(host);
    assert.deepEqual(host.out, ['pass 1', 'pass 1', 'ACCESS_QUOTA_EXHAUSTED 2']);
    assert.equal(enforcer.stats.decisions, decisions + 1, 'the retry was not decided');
    enforcer.stop();
  });
});
