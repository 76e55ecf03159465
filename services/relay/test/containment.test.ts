/**
 * Containment (issue 12 items 1–3, docs/relay.md#containment): no frame from
 * a peer and no admin request may take the relay process down. Each case runs
 * against a real relay process; after it, the same relay must still serve an
 * honest pair of peers and answer /healthz.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Ed25519Identity } from '@libertaria/identity';
import { errorCodeFromWire, MAX_TEXT_BYTES, SendFlags } from '@libertaria/protocol';
import { repoPath } from '../../../test-support/paths.js';
import { RawPeer } from '../../../test-support/raw-peer.js';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { type RelayHandle, startRelay } from '../../../test-support/relay-process.js';

const ADMIN_TOKEN = 'test-admin-token-containment-0123';
const utf8Length = (s: string): number => Buffer.byteLength(s, 'utf8');

let redis: RedisHandle;
let relay: RelayHandle;
const peers: RawPeer[] = [];

before(async () => {
  redis = await startRedis();
  relay = await startRelay({ redisUrl: redis.url, env: { RELAY_ADMIN_TOKEN: ADMIN_TOKEN } });
});

after(async () => {
  for (const p of peers) p.close();
  await relay?.stop();
  await redis?.stop();
});

async function peer(url: string, id = Ed25519Identity.generate()): Promise<RawPeer> {
  return (await welcomed(url, id)).p;
}

async function welcomed(url: string, id = Ed25519Identity.generate()): Promise<{ p: RawPeer; hint: Uint8Array }> {
  const p = await RawPeer.connect(url);
  peers.push(p);
  const welcome = await p.authenticate(id);
  return { p, hint: welcome.hint };
}

/** The relay process is alive and an honest pair (one per transport) still exchanges fast and durable frames. */
async function assertRelayServes(): Promise<void> {
  assert.equal(relay.process.exitCode, null, `relay exited:\n${relay.logs.slice(-20).join('\n')}`);
  assert.equal((await fetch(`${relay.adminUrl}/healthz`)).status, 200);
  const alice = await welcomed(relay.wsUrl);
  const bob = await welcomed(relay.tcpUrl);
  bob.p.send({ type: 'RESUME', lastAcked: 0 });
  for (const flags of [0, SendFlags.DURABLE]) {
    const messageId = randomBytes(16);
    alice.p.send({
      type: 'SEND',
      dest: bob.hint,
      source: alice.hint,
      sessionId: new Uint8Array(16),
      messageId,
      flags,
      ttl: 0,
      position: 0,
      payload: new TextEncoder().encode('still here'),
    });
    const got = await bob.p.next((f) => f.type === 'DELIVER' && Buffer.from(f.messageId).equals(messageId));
    assert.equal(got.type, 'DELIVER');
  }
}

describe('containment', () => {
  for (const transport of ['ws', 'tcp'] as const) {
    it(`a POLICY_PUT with a long non-ASCII unknown key is NACKed within MAX_TEXT_BYTES, the node stays up (${transport})`, async () => {
      const p = await peer(transport === 'ws' ? relay.wsUrl : relay.tcpUrl);
      // 600 three-byte characters: 600 JavaScript characters, 1,800 UTF-8 bytes, in the refusal's text.
      const key = 'ü€'.repeat(300);
      const requestId = randomBytes(16);
      p.send({
        type: 'POLICY_PUT',
        requestId,
        policy: new TextEncoder().encode(JSON.stringify({ version: 1, capabilities: [], [key]: 1 })),
      });
      const nack = await p.next('NACK');
      assert.deepEqual(Buffer.from(nack.messageId), requestId);
      assert.notEqual(errorCodeFromWire(nack.code), 'INTERNAL');
      assert.ok(utf8Length(nack.message) <= MAX_TEXT_BYTES, `${utf8Length(nack.message)} bytes`);
      assert.ok(nack.message.endsWith('...'), 'the cut is marked');
      assert.ok(!nack.message.includes('\ufffd'), 'cut on a code-point boundary');
      // The same connection goes on.
      p.send({ type: 'PING', data: new Uint8Array(8) });
      await p.next('PONG');
      await assertRelayServes();
    });
  }

  it('astral characters (surrogate pairs) in the refusal are never split', async () => {
    const p = await peer(relay.wsUrl);
    const requestId = randomBytes(16);
    p.send({
      type: 'POLICY_PUT',
      requestId,
      policy: new TextEncoder().encode(JSON.stringify({ version: 1, capabilities: [], ['😀'.repeat(400)]: 1 })),
    });
    const nack = await p.next('NACK');
    assert.ok(utf8Length(nack.message) <= MAX_TEXT_BYTES);
    assert.ok(!nack.message.includes('\ufffd'));
    p.send({ type: 'PING', data: new Uint8Array(8) });
    await p.next('PONG');
  });

  it('the admin port answers 400 BAD_FIELD to a malformed percent-encoding in the path, and stays up', async () => {
    for (const bad of ['%E0%A4%A', '%ZZ', 'did%', '%C3%28']) {
      for (const method of ['PUT', 'DELETE']) {
        const res = await fetch(`${relay.adminUrl}/membrane/trust/${bad}`, {
          method,
          headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
          signal: AbortSignal.timeout(5000),
          ...(method === 'PUT' ? { body: '{"score":0.5}' } : {}),
        });
        assert.equal(res.status, 400, `${method} ${bad}`);
        assert.match(await res.text(), /^BAD_FIELD: /);
      }
    }
    // Without the token it is 401 before the path is looked at.
    const res = await fetch(`${relay.adminUrl}/membrane/trust/%ZZ`, { method: 'DELETE' });
    assert.equal(res.status, 401);
    // Other malformed admin inputs keep stable codes too.
    const notJson = await fetch(`${relay.adminUrl}/membrane/revocations`, {
      method: 'POST',
      body: 'not json',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    assert.equal(notJson.status, 400);
    assert.match(await notJson.text(), /^BAD_FIELD: /);
    // A body over the admin port's 4,096 bytes is answered (413), not reset (found by the adversarial suite, P03).
    const big = await fetch(`${relay.adminUrl}/membrane/trust/did%3Alibertaria%3Azx`, {
      method: 'PUT',
      body: JSON.stringify({ score: 0.5, pad: 'x'.repeat(5000) }),
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    assert.equal(big.status, 413);
    assert.match(await big.text(), /^BAD_FIELD: /);
    const nullBody = await fetch(`${relay.adminUrl}/membrane/trust/did%3Alibertaria%3Azx`, {
      method: 'PUT',
      body: 'null',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    assert.equal(nullBody.status, 400);
    const audit = await fetch(`${relay.adminUrl}/membrane/audit?peer=%ZZ`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    assert.ok(audit.status === 200 || audit.status === 400, String(audit.status));
    await assertRelayServes();
  });

  it('/metrics exposes relay_internal_errors_total, and nothing above was an internal error', async () => {
    const text = await (await fetch(`${relay.adminUrl}/metrics`)).text();
    assert.match(text, /# TYPE relay_internal_errors_total counter/);
    assert.deepEqual(
      text.split('\n').filter((l) => l.startsWith('relay_internal_errors_total{')),
      [],
      'every case above was answered on purpose, not contained as a bug',
    );
  });

  it('the process-level handlers count and log what escapes, and keep the process running', async () => {
    // The relay's own handlers, in a process of their own so a rejection and a throw can be provoked.
    const module = repoPath('services/relay/dist/containment.js');
    const script = `
      const { installProcessHandlers } = await import(${JSON.stringify(module)});
      const seen = [];
      installProcessHandlers({ internalError: (where, err) => seen.push(where + ':' + err.message) });
      Promise.reject(new Error('rejected'));
      setTimeout(() => { throw new Error('thrown'); }, 10);
      setTimeout(() => { process.stdout.write(JSON.stringify(seen)); process.exit(0); }, 100);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    assert.equal(code, 0, err);
    assert.deepEqual(JSON.parse(out), ['unhandled_rejection:rejected', 'uncaught_exception:thrown']);
  });
});
