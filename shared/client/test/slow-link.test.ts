/**
 * Slow links (issue 13, item 7), through the latency proxy
 * (test-support/latency-proxy.ts, every byte each way delayed by the one-way
 * delay): with **default settings** on the relay and in the SDK and lrelay, a
 * peer behind 2.5 s of one-way delay connects over WebSocket (upgrade, HELLO
 * and AUTH: three round trips) or TCP and receives a durable frame, on its
 * first attempt. slow-link-scaled.test.ts runs the documented settings for
 * longer delays.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { RelayClient } from '@libertaria/client';
import { Ed25519Identity } from '@libertaria/identity';
import { writeKeyFile } from '@libertaria/identity/node';
import { cli, clientState, str, text, within } from '../../../test-support/client-harness.js';
import { type LatencyProxy, startLatencyProxy } from '../../../test-support/latency-proxy.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

const DEFAULT_CASE_MS = 2500;

describe('slow links, default settings', { timeout: 170_000 }, () => {
  let redis: RedisHandle;
  let dir: string;
  const relays: RelayHandle[] = [];
  const proxies: LatencyProxy[] = [];
  const clients: RelayClient[] = [];

  before(async () => {
    redis = await startRedis();
    dir = await mkdtemp(join(tmpdir(), 'slow-link-'));
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all(relays.map((r) => r.stop()));
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function relayBehind(oneWayMs: number, env: Record<string, string> = {}) {
    const relay = await startRelay({ redisUrl: redis.url, env });
    relays.push(relay);
    const ws = await startLatencyProxy({ target: relay.ports.ws, delayMs: oneWayMs, delayConnect: true });
    const tcp = await startLatencyProxy({ target: relay.ports.tcp, delayMs: oneWayMs, delayConnect: true });
    proxies.push(ws, tcp);
    return { relay, slowWs: `ws://127.0.0.1:${ws.port}`, slowTcp: `tcp://127.0.0.1:${tcp.port}` };
  }

  /** A durable frame stored for `to` over a fast path, before `to` connects. */
  async function queueFor(relay: RelayHandle, to: string, body: string): Promise<void> {
    const sender = new RelayClient({ relays: [relay.tcpUrl], identity: Ed25519Identity.generate(), sealing: false });
    clients.push(sender);
    await sender.connect();
    await sender.send(to, text(body));
  }

  it('default settings: the SDK behind 2.5 s one-way (WebSocket) connects and receives a durable frame', async () => {
    const { relay, slowWs } = await relayBehind(DEFAULT_CASE_MS);
    const receiverId = Ed25519Identity.generate();
    await queueFor(relay, receiverId.did, 'across a slow link');
    // Defaults everywhere, and no retry: the first attempt must get through.
    const receiver = new RelayClient({
      relays: [slowWs],
      identity: receiverId,
      sealing: false,
      reconnect: { maxAttempts: 1 },
    });
    clients.push(receiver);
    const started = Date.now();
    await within(receiver.connect(), 60_000, 'connect over 2.5 s', clientState(receiver));
    const connectMs = Date.now() - started;
    const it = receiver.messages()[Symbol.asyncIterator]();
    const m = (await within(it.next(), 30_000, 'the durable frame', clientState(receiver))).value;
    assert.equal(str(m.payload), 'across a slow link');
    assert.equal(m.durable, true);
    await m.ack();
    assert.equal(receiver.stats.connections, 1, 'one handshake, no retry');
    console.log(
      `# 2.5 s one-way, defaults, ws: connected after ${connectMs} ms, received after ${Date.now() - started} ms`,
    );
  });

  it('default settings: lrelay listen behind 2.5 s one-way (TCP) receives a durable frame', async () => {
    const { relay, slowTcp } = await relayBehind(DEFAULT_CASE_MS);
    const keyFile = join(dir, 'listener.key');
    const id = Ed25519Identity.generate();
    await writeKeyFile(keyFile, id);
    await queueFor(relay, id.did, 'lrelay over a slow link');
    const started = Date.now();
    const run = await cli(['listen', '--relay', slowTcp, '--key', keyFile, '--unsealed', '--count', '1']).done;
    assert.equal(run.code, 0, run.stderr);
    assert.equal((JSON.parse(run.stdout.trim()) as { text: string }).text, 'lrelay over a slow link');
    console.log(`# 2.5 s one-way, defaults, lrelay listen over tcp: done after ${Date.now() - started} ms`);
  });
});
