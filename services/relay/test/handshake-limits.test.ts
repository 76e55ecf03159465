/**
 * Handshake timers and bounds (issue 13, item 7), on a real relay with short
 * budgets: each step is timed from the relay's last message (a slow but
 * steady peer gets in although the steps add up to more than one budget),
 * while a silent peer, a peer trickling a frame, a peer whose steps add up to
 * more than the whole handshake's bound and a peer sending more than 1 KiB
 * before WELCOME are all cut off (slowloris protection).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Ed25519Identity } from '@libertaria/identity';
import { encodeFrame, errorCodeFromWire, type Frame } from '@libertaria/protocol';
import { RawPeer } from '../../../test-support/raw-peer.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

const STEP_MS = 1500;
const TOTAL_MS = 2200;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function errorOf(peer: RawPeer): { code: string; message: string } | undefined {
  const err = peer.frames.find((f): f is Extract<Frame, { type: 'ERROR' }> => f.type === 'ERROR');
  return err === undefined ? undefined : { code: errorCodeFromWire(err.code), message: err.message };
}

describe('handshake timers and bounds', { timeout: 120_000 }, () => {
  let redis: RedisHandle;
  let relay: RelayHandle;
  const peers: RawPeer[] = [];

  before(async () => {
    redis = await startRedis();
    relay = await startRelay({
      redisUrl: redis.url,
      env: {
        RELAY_HANDSHAKE_STEP_TIMEOUT_MS: String(STEP_MS),
        RELAY_HANDSHAKE_TIMEOUT_MS: String(TOTAL_MS),
        // Failed handshakes below are the point; do not let the limiter answer instead.
        RELAY_AUTH_FAILURES_PER_ADDRESS_PER_MINUTE: '100000',
      },
    });
  });
  after(async () => {
    for (const p of peers) p.close();
    await relay?.stop();
    await redis?.stop();
  });

  async function peer(url: string): Promise<RawPeer> {
    const p = await RawPeer.connect(url);
    peers.push(p);
    return p;
  }

  it('times each step from the relay’s last message: two slow steps that add up past one budget get in', async () => {
    const p = await peer(relay.tcpUrl);
    const id = Ed25519Identity.generate();
    await sleep(STEP_MS * 0.6);
    p.hello();
    const challenge = await p.next('CHALLENGE');
    await sleep(STEP_MS * 0.6);
    p.send(p.authFrame(id, challenge));
    const welcome = await p.next('WELCOME');
    assert.deepEqual(Buffer.from(welcome.hint), Buffer.from(id.hint));
  });

  for (const transport of ['tcp', 'ws'] as const) {
    it(`${transport}: a silent peer is cut after one step, naming it`, async () => {
      const p = await peer(transport === 'tcp' ? relay.tcpUrl : relay.wsUrl);
      const started = Date.now();
      await p.closedPromise;
      const took = Date.now() - started;
      assert.deepEqual(errorOf(p)?.code, 'AUTH_TIMEOUT');
      assert.match(errorOf(p)!.message, /no HELLO within RELAY_HANDSHAKE_STEP_TIMEOUT_MS/);
      assert.ok(took >= STEP_MS * 0.9 && took < STEP_MS + 5000, `closed after ${took} ms`);
    });
  }

  it('a peer trickling its AUTH byte by byte does not extend the step', async () => {
    const p = await peer(relay.tcpUrl);
    p.hello();
    const challenge = await p.next('CHALLENGE');
    const started = Date.now();
    const auth = encodeFrame(p.authFrame(Ed25519Identity.generate(), challenge));
    for (let i = 0; i < auth.length - 1 && !p.closed; i++) {
      p.send(auth.subarray(i, i + 1));
      await sleep(100);
    }
    await p.closedPromise;
    const took = Date.now() - started;
    assert.equal(errorOf(p)?.code, 'AUTH_TIMEOUT');
    assert.ok(took < STEP_MS + 5000, `closed after ${took} ms`);
  });

  it('steps that each fit but add up past RELAY_HANDSHAKE_TIMEOUT_MS are cut by the total bound', async () => {
    const p = await peer(relay.tcpUrl);
    await sleep(STEP_MS * 0.75);
    p.hello();
    const challenge = await p.next('CHALLENGE');
    await sleep(STEP_MS * 0.75);
    if (!p.closed) p.send(p.authFrame(Ed25519Identity.generate(), challenge));
    await p.closedPromise;
    assert.equal(errorOf(p)?.code, 'AUTH_TIMEOUT');
    assert.match(errorOf(p)!.message, /RELAY_HANDSHAKE_TIMEOUT_MS/);
  });

  for (const transport of ['tcp', 'ws'] as const) {
    it(`${transport}: more than 1 KiB before WELCOME is refused at once (HANDSHAKE_TOO_LARGE)`, async () => {
      const p = await peer(transport === 'tcp' ? relay.tcpUrl : relay.wsUrl);
      p.hello();
      await p.next('CHALLENGE');
      // A frame header announcing 4,000 bytes of AUTH, and 2 KiB of them: never a whole frame, never valid.
      const bytes = new Uint8Array(6 + 2048);
      bytes.set([2, 0x03, 0, 0, 0x0f, 0xa0]);
      p.send(bytes);
      await p.closedPromise;
      assert.equal(errorOf(p)?.code, 'HANDSHAKE_TOO_LARGE');
    });
  }
});
