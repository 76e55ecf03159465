/**
 * The script of the page that shared/client/test/browser.test.ts opens in
 * headless Chromium, bundled by esbuild for the browser from the packages'
 * dist/ (as a web app bundles them). It runs README.md's "In a web app"
 * lines (`start`, `send`, `receive`: the test checks that each of those
 * lines is here) and exposes them as `globalThis.peer`, which the test calls
 * through CDP Runtime.evaluate. Everything `peer` returns is JSON data.
 */
import { type InboundMessage, InMemorySessionStore, RelayClient, SessionManager } from '@libertaria/client';
import { nobleCrypto } from '@libertaria/crypto';
import { ED25519_BACKEND, Ed25519Identity } from '@libertaria/identity';

export interface Received {
  from: string;
  to: string;
  text: string;
  durable: boolean;
  sealed: boolean;
  messageId: string;
}

export interface Connection {
  url: string;
  nodeId: string;
  relayDid: string | undefined;
}

/** The client `start` made. */
let active: RelayClient | undefined;
const connections: Connection[] = [];
const disconnections: { url: string; error?: string }[] = [];
const errors: string[] = [];
let receiveEnded: string | undefined;

const received: Received[] = [];
let taken = 0;

/** Waiters woken when something changed (a message, a connection, the end of messages()); each re-checks. */
let waiters: (() => void)[] = [];
function changed(): void {
  const woken = waiters;
  waiters = [];
  for (const wake of woken) wake();
}
function nextChange(): Promise<void> {
  return new Promise((resolve) => waiters.push(resolve));
}
/** The message `show` is called for (page only: what it records besides the text). */
let current: InboundMessage | undefined;

const hex = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

/** What the web app does with a message: here, keep it for the test. */
function show(from: string, text: string): void {
  const m = current as InboundMessage;
  received.push({ from, to: m.to, text, durable: m.durable, sealed: m.sealed, messageId: hex(m.messageId) });
  changed();
}

/** Page only: the client's connections and errors, for the test's assertions. */
function watch(c: RelayClient): void {
  c.events.on('connected', (e) => {
    connections.push({ url: e.url, nodeId: e.nodeId, relayDid: e.relayDid });
    changed();
  });
  c.events.on('disconnected', (e) => {
    disconnections.push({ url: e.url, ...(e.error !== undefined ? { error: e.error.message } : {}) });
  });
  c.events.on('error', (e) => {
    errors.push(`${e.error.code} ${e.error.message}`);
  });
}

async function receive(client: RelayClient): Promise<void> {
  for await (const m of client.messages()) {
    current = m;
    show(m.from, new TextDecoder().decode(m.payload));
    await m.ack();
  }
}

export const peer = {
  /** The page's runtime: no Node globals, the Web APIs the SDK needs, the Ed25519 backend the bundle got. */
  environment() {
    const g = globalThis as Record<string, unknown>;
    return {
      process: typeof g.process,
      Buffer: typeof g.Buffer,
      require: typeof g.require,
      WebSocket: typeof g.WebSocket,
      getRandomValues: typeof globalThis.crypto?.getRandomValues,
      isSecureContext: g.isSecureContext,
      ed25519Backend: ED25519_BACKEND,
    };
  },

  /** README.md, "In a web app": an identity made here, a sealing client over `relays`, connected, prekeys published. */
  async start(relays: string[]) {
    const identity = Ed25519Identity.generate();
    const sessions = new SessionManager({
      identity,
      store: new InMemorySessionStore(),
      provider: nobleCrypto,
      verify: nobleCrypto.verifyEd25519,
    });
    const client = new RelayClient({ relays, identity, sessions });
    active = client;
    watch(client);
    await client.connect();
    await sessions.ensurePublished(client);
    receive(client).catch((error: Error) => {
      receiveEnded = `${(error as { code?: string }).code ?? ''} ${error.message}`;
      changed();
    });
    return { did: identity.did, sealed: client.sealed, ...this.state() };
  },

  /** README.md, "In a web app": a sealed durable send, resolved once the relay has stored it. */
  async send(peerDid: string, text: string) {
    const client = active;
    if (client === undefined) throw new Error('start first');
    const { messageId, position } = await client.send(peerDid, new TextEncoder().encode(text));
    return { messageId: hex(messageId), position };
  },

  /** The next message `show` got (waits for it). */
  async nextMessage(): Promise<Received> {
    while (taken >= received.length) {
      if (receiveEnded !== undefined) throw new Error(`messages() ended: ${receiveEnded}`);
      await nextChange();
    }
    return received[taken++] as Received;
  },

  /** Resolves once the client is connected to relay node `nodeId` (now or later). */
  async connectedTo(nodeId: string): Promise<Connection> {
    for (;;) {
      const last = connections.at(-1);
      if (active?.connected && last?.nodeId === nodeId) return last;
      await nextChange();
    }
  },

  state() {
    return {
      connected: active?.connected ?? false,
      connections: connections.slice(),
      disconnections: disconnections.slice(),
      errors: errors.slice(),
      received: received.length,
      receiveEnded,
      stats: active === undefined ? undefined : { ...active.stats },
    };
  },

  /** A client whose only relay is `url` (tcp:// or tls://): what connect() rejects with in a browser. */
  async connectOnly(url: string) {
    const c = new RelayClient({ relays: [url], identity: Ed25519Identity.generate(), sealing: false });
    try {
      await c.connect();
      return 'connected';
    } catch (error) {
      return `${(error as { code?: string }).code} ${(error as Error).message}`;
    } finally {
      await c.close();
    }
  },

  async close() {
    await active?.close();
    return true;
  },
};

(globalThis as { peer?: typeof peer }).peer = peer;
