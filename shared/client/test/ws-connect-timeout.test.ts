/**
 * Regression: a WebSocket connect that runs out of time (a server that
 * accepts TCP and never answers the upgrade) must reject, not crash the
 * process. Closing the still-connecting socket makes `ws` emit 'error'; with
 * no listener left that was an uncaught exception (found by the chaos suite).
 */
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { RelayClient } from '@libertaria/client';
import { Ed25519Identity } from '@libertaria/identity';

describe('WebSocket connect timeout', () => {
  it('rejects with AUTH_TIMEOUT and leaves the process alive', async () => {
    const sockets: Socket[] = [];
    const silent = createServer((s) => sockets.push(s)); // accepts, never answers the upgrade
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as { port: number }).port;
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown) => uncaught.push(error);
    process.on('uncaughtException', onUncaught);
    try {
      const client = new RelayClient({
        relays: [`ws://127.0.0.1:${port}`],
        identity: Ed25519Identity.generate(),
        handshakeTimeoutMs: 300,
        adaptiveTimeouts: false,
        reconnect: { maxAttempts: 2, initialDelayMs: 10, maxDelayMs: 20 },
      });
      await assert.rejects(client.connect(), (e: unknown) => (e as { code?: string }).code === 'AUTH_TIMEOUT');
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(uncaught, []);
    } finally {
      process.off('uncaughtException', onUncaught);
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });
});
