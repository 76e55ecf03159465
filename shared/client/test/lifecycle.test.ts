/**
 * The session lifecycle table, the seed's reconnection schedule, and the
 * RelayClient's lifecycle against a real relay: established, a lost path
 * (suspended), reconnected to the same relay, migrated to another one, closed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { backoffDelay, fromReconnectionPolicy, RelayClient } from '@libertaria/client';
import {
  type LifecycleEvent,
  type LifecycleState,
  type LifecycleTransition,
  nextState,
  SessionLifecycle,
} from '@libertaria/crypto';
import { Ed25519Identity } from '@libertaria/identity';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

const STATES: LifecycleState[] = [
  'handshaking',
  'active',
  'degraded',
  'rotating',
  'migrating',
  'suspended',
  'closing',
  'closed',
];
const EVENTS: LifecycleEvent[] = [
  'established',
  'heartbeat_missed',
  'heartbeat_ok',
  'rotation_started',
  'rotation_done',
  'path_changed',
  'migrated',
  'path_lost',
  'reconnected',
  'close',
  'failed',
  'closed',
];

/** The whole table, written out independently of lifecycle.ts: every allowed move. */
const ALLOWED: Record<string, LifecycleState> = {
  'handshaking established': 'active',
  'handshaking failed': 'closed',
  'handshaking path_lost': 'suspended',
  'handshaking close': 'closing',
  'active heartbeat_missed': 'degraded',
  'active rotation_started': 'rotating',
  'active path_changed': 'migrating',
  'active path_lost': 'suspended',
  'active close': 'closing',
  'degraded heartbeat_ok': 'active',
  'degraded path_changed': 'migrating',
  'degraded path_lost': 'suspended',
  'degraded close': 'closing',
  'rotating rotation_done': 'active',
  'rotating path_lost': 'suspended',
  'rotating close': 'closing',
  'migrating migrated': 'active',
  'migrating path_lost': 'suspended',
  'migrating close': 'closing',
  'suspended reconnected': 'active',
  'suspended path_changed': 'migrating',
  'suspended failed': 'closed',
  'suspended close': 'closing',
  'closing closed': 'closed',
};

describe('session lifecycle', () => {
  it('allows exactly the moves of the table and refuses every other one', () => {
    let allowed = 0;
    for (const state of STATES) {
      for (const event of EVENTS) {
        const expected = ALLOWED[`${state} ${event}`];
        assert.equal(nextState(state, event), expected, `${state} + ${event}`);
        const lifecycle = new SessionLifecycle({ name: 't', initial: state });
        if (expected === undefined) {
          assert.throws(
            () => lifecycle.apply(event),
            (e: unknown) => (e as { code?: string }).code === 'ILLEGAL_TRANSITION',
          );
          assert.equal(lifecycle.state, state, 'a refused event changes nothing');
        } else {
          allowed++;
          assert.equal(lifecycle.apply(event).to, expected);
          assert.equal(lifecycle.state, expected);
        }
      }
    }
    assert.equal(allowed, Object.keys(ALLOWED).length);
  });

  it('logs and emits each transition in order', () => {
    const logged: unknown[] = [];
    const lifecycle = new SessionLifecycle({
      name: 'alice→bob',
      log: { info: (message, fields) => logged.push({ message, ...fields }) },
      clock: () => 42,
    });
    const seen: LifecycleTransition[] = [];
    const off = lifecycle.onTransition((t) => seen.push(t));
    lifecycle.apply('established');
    lifecycle.apply('rotation_started', 'message count');
    lifecycle.apply('rotation_done');
    off();
    lifecycle.apply('close');
    assert.deepEqual(
      seen.map((t) => [t.from, t.event, t.to, t.at]),
      [
        ['handshaking', 'established', 'active', 42],
        ['active', 'rotation_started', 'rotating', 42],
        ['rotating', 'rotation_done', 'active', 42],
      ],
    );
    assert.equal(seen[1]!.detail, 'message count');
    assert.equal(logged.length, 4);
    assert.deepEqual(logged[3], {
      message: 'session state',
      session: 'alice→bob',
      from: 'active',
      to: 'closing',
      event: 'close',
    });
    assert.equal(lifecycle.applyIfAllowed('established'), false);
  });
});

describe('ReconnectionPolicy', () => {
  it("reproduces the seed's schedule: 1 s, 2 s, 4 s, 8 s, 16 s, 30 s, 30 s, 30 s", () => {
    const o = fromReconnectionPolicy({
      maxAttempts: 0,
      initialDelay: 1000,
      maxDelay: 30_000,
      backoffMultiplier: 2,
      jitter: 0,
    });
    assert.deepEqual(
      Array.from({ length: 8 }, (_, i) => backoffDelay(i, o)),
      [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000],
    );
    // With the default jitter every delay stays within ±20% and never above the cap.
    const jittered = fromReconnectionPolicy({
      maxAttempts: 0,
      initialDelay: 1000,
      maxDelay: 30_000,
      backoffMultiplier: 2,
    });
    for (let i = 0; i < 8; i++) {
      const base = Math.min(30_000, 1000 * 2 ** i);
      for (let k = 0; k < 50; k++) {
        const d = backoffDelay(i, jittered);
        assert.ok(d >= base * 0.8 - 1 && d <= Math.min(30_000, base * 1.2) + 1, `attempt ${i}: ${d}`);
      }
    }
    assert.throws(() =>
      fromReconnectionPolicy({ maxAttempts: -1, initialDelay: 1, maxDelay: 2, backoffMultiplier: 2 }),
    );
  });

  it('a RelayClient retries an unreachable relay on that schedule (scaled to 1/20)', async () => {
    const { freePort } = await import('../../../test-support/redis.js');
    const port = await freePort(); // nothing listens there
    const attempts: number[] = [];
    const client = new RelayClient({
      relays: [`tcp://127.0.0.1:${port}`],
      identity: Ed25519Identity.generate(),
      sealing: false,
      reconnect: fromReconnectionPolicy({
        maxAttempts: 8,
        initialDelay: 50,
        maxDelay: 1500,
        backoffMultiplier: 2,
        jitter: 0,
      }),
      logger: { debug: (message) => message === 'relay connection failed' && attempts.push(performance.now()) },
    });
    await assert.rejects(client.connect(), (e: unknown) => (e as { code?: string }).code === 'CONNECTION_FAILED');
    assert.equal(attempts.length, 8);
    const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!);
    const expected = [50, 100, 200, 400, 800, 1500, 1500];
    for (const [i, gap] of gaps.entries()) {
      assert.ok(
        gap >= expected[i]! - 5 && gap < expected[i]! + 250,
        `gap ${i}: ${gap.toFixed(0)} ms, expected ${expected[i]}`,
      );
    }
    assert.equal(client.lifecycle.state, 'closed');
  });
});

describe('RelayClient lifecycle against real relays', { timeout: 60_000 }, () => {
  let redis: RedisHandle;
  let a: RelayHandle;
  let b: RelayHandle;

  before(async () => {
    redis = await startRedis();
    [a, b] = await Promise.all([startRelay({ redisUrl: redis.url }), startRelay({ redisUrl: redis.url })]);
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
  });

  it('establishes, loses its path, reconnects, migrates to another node, and closes', async () => {
    const client = new RelayClient({
      relays: [a.wsUrl, b.tcpUrl],
      identity: Ed25519Identity.generate(),
      sealing: false,
      reconnect: { initialDelayMs: 20, maxDelayMs: 100 },
    });
    const seen: string[] = [];
    client.events.on('state', (t) => seen.push(`${t.from}>${t.to}`));
    /** Resolves once `transition` ("from>to") has happened, before or after the call. */
    const reached = async (transition: string) => {
      // A drain, a reconnect and a handshake: several times their quiet-machine time, for loaded CI.
      const deadline = Date.now() + 30_000;
      while (!seen.includes(transition)) {
        assert.ok(Date.now() < deadline, `no ${transition}; seen ${seen.join(', ')}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    await client.connect();
    assert.equal(client.lifecycle.state, 'active');
    // Node A restarts (GOAWAY on drain): the client comes back to A if it can, else B.
    await a.stop();
    await reached('migrating>active');
    assert.equal(client.stats.state, 'active');
    assert.ok(typeof client.stats.rttMs === 'number' && client.stats.rttMs >= 0);
    await client.close();
    assert.deepEqual(seen, [
      'handshaking>active',
      'active>suspended',
      'suspended>migrating',
      'migrating>active',
      'active>closing',
      'closing>closed',
    ]);
    a = await startRelay({ redisUrl: redis.url });
  });
});
