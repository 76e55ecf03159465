/**
 * Unit tests of the client SDK's pure parts: the payload envelope, relay
 * URLs, the backoff schedule, duplicate suppression and the RESUME
 * watermark, the event emitter and the bounded inbox. No sockets.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  backoffBounds,
  backoffDelay,
  ClientErrorCode,
  checkEnvelopeSender,
  DEFAULT_RECONNECT,
  DedupeTracker,
  decodeEnvelope,
  ENVELOPE_HEADER_SIZE,
  encodeEnvelope,
  envelopeOverhead,
  Inbox,
  isPermanentRefusal,
  openTransport,
  parseRelayUrl,
  parseRelayUrls,
  randomBytes,
  resolveReconnectOptions,
  TypedEmitter,
  toHex,
} from '@libertaria/client';
import { Ed25519Identity, hintFromDid } from '@libertaria/identity';
import { type LibertariaError, ProtocolError, RelayError } from '@libertaria/protocol';
import { repoPath } from '../../../test-support/paths.js';

const alice = Ed25519Identity.fromSeed(new Uint8Array(32).fill(1));
const bob = Ed25519Identity.fromSeed(new Uint8Array(32).fill(2));
const utf8 = new TextEncoder();

function expectCode(fn: () => unknown, klass: typeof LibertariaError, code: string, message?: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof klass, `expected ${klass.name}, got ${String(error)}`);
    assert.equal(error.code, code);
    if (message) assert.match(error.message, message);
    return true;
  });
}

describe('payload envelope', () => {
  it('round-trips the sender DID and body (both DID forms, empty body)', () => {
    for (const did of [alice.did, alice.didKey]) {
      for (const body of [new Uint8Array(0), utf8.encode('hello'), randomBytes(1000)]) {
        const bytes = encodeEnvelope(did, body);
        assert.equal(bytes.length, envelopeOverhead(did) + body.length);
        assert.equal(bytes[0], 1);
        assert.equal(bytes[1], did.length);
        const env = decodeEnvelope(bytes);
        assert.equal(env.version, 1);
        assert.equal(env.senderDid, did);
        assert.deepEqual(env.body, body);
        checkEnvelopeSender(env, alice.hint);
      }
    }
  });

  it('has the documented layout', () => {
    const did = alice.did;
    const bytes = encodeEnvelope(did, Uint8Array.of(0xaa, 0xbb));
    const expected = new Uint8Array([1, did.length, ...utf8.encode(did), 0xaa, 0xbb]);
    assert.deepEqual(bytes, expected);
    assert.equal(ENVELOPE_HEADER_SIZE, 2);
  });

  it('copies the body when encoding and views it when decoding', () => {
    const body = utf8.encode('abc');
    const bytes = encodeEnvelope(alice.did, body);
    body[0] = 0;
    assert.equal(bytes[bytes.length - 3], 'a'.charCodeAt(0));
    const env = decodeEnvelope(bytes);
    assert.equal(env.body.buffer, bytes.buffer);
  });

  it('refuses to encode an unusable DID or body', () => {
    expectCode(() => encodeEnvelope('', new Uint8Array()), ProtocolError, 'BAD_FIELD', /DID length 0/);
    expectCode(() => encodeEnvelope('x'.repeat(129), new Uint8Array()), ProtocolError, 'BAD_FIELD', /length 129/);
    expectCode(() => encodeEnvelope('did:libertaria:zé', new Uint8Array()), ProtocolError, 'BAD_FIELD', /ASCII/);
    expectCode(() => encodeEnvelope('did:web:example.com', new Uint8Array()), ProtocolError, 'BAD_FIELD');
    expectCode(() => encodeEnvelope('not a did', new Uint8Array()), ProtocolError, 'BAD_FIELD');
    expectCode(
      () => encodeEnvelope(alice.did, 'text' as unknown as Uint8Array),
      ProtocolError,
      'BAD_FIELD',
      /Uint8Array/,
    );
  });

  const good = encodeEnvelope(alice.did, utf8.encode('hi'));
  const cases: [string, Uint8Array, string, RegExp][] = [
    ['empty input', new Uint8Array(0), 'TRUNCATED', /header needs 2/],
    ['one byte', Uint8Array.of(1), 'TRUNCATED', /header needs 2/],
    ['version 0', Uint8Array.of(0, 1, 0x41), 'UNSUPPORTED_VERSION', /version 0/],
    ['version 2', Uint8Array.of(2, ...good.subarray(1)), 'UNSUPPORTED_VERSION', /version 2/],
    ['DID length 0', Uint8Array.of(1, 0), 'BAD_FIELD', /DID length 0/],
    ['DID length 129', Uint8Array.of(1, 129, ...new Uint8Array(129).fill(0x61)), 'BAD_FIELD', /length 129/],
    ['DID cut short', good.subarray(0, 10), 'TRUNCATED', /DID needs/],
    ['DID with a control byte', Uint8Array.of(1, 3, 0x64, 0x0a, 0x64), 'BAD_FIELD', /0xa is not printable/],
    ['DID with a space', Uint8Array.of(1, 3, 0x64, 0x20, 0x64), 'BAD_FIELD', /not printable/],
    ['DID with a high byte', Uint8Array.of(1, 2, 0xc3, 0xa9), 'BAD_FIELD', /not printable/],
    ['not a DID', Uint8Array.of(1, 3, ...utf8.encode('abc')), 'BAD_FIELD', /did:/],
    ['unsupported DID method', Uint8Array.of(1, 15, ...utf8.encode('did:web:example')), 'BAD_FIELD', /not supported/],
  ];
  for (const [name, bytes, code, message] of cases) {
    it(`rejects ${name} with ${code}`, () => expectCode(() => decodeEnvelope(bytes), ProtocolError, code, message));
  }

  it('rejects a sender DID whose hint is not the authenticated source hint (SOURCE_MISMATCH)', () => {
    const env = decodeEnvelope(encodeEnvelope(alice.did, utf8.encode('forged')));
    expectCode(() => checkEnvelopeSender(env, bob.hint), RelayError, 'SOURCE_MISMATCH', /does not own/);
    assert.deepEqual(hintFromDid(alice.didKey), alice.hint);
  });
});

describe('relay URLs', () => {
  it('parses every scheme with its binding and defaults', () => {
    const ws = parseRelayUrl('ws://127.0.0.1:8080');
    assert.deepEqual(
      { ...ws },
      {
        href: 'ws://127.0.0.1:8080/',
        scheme: 'ws',
        host: '127.0.0.1',
        port: 8080,
        path: '/',
        binding: 'ws',
        secure: false,
      },
    );
    const wss = parseRelayUrl('wss://Relay.Example/relay?x=1');
    assert.equal(wss.href, 'wss://relay.example:443/relay?x=1');
    assert.equal(wss.port, 443);
    assert.equal(wss.path, '/relay?x=1');
    assert.equal(wss.binding, 'ws');
    assert.equal(wss.secure, true);
    assert.equal(parseRelayUrl('ws://h').port, 80);
    const tcp = parseRelayUrl('tcp://H.example:8081');
    assert.equal(tcp.href, 'tcp://h.example:8081');
    assert.equal(tcp.binding, 'tcp');
    assert.equal(tcp.path, '');
    assert.equal(parseRelayUrl('tcp://h:1/').href, 'tcp://h:1');
    const tls = parseRelayUrl('tls://[::1]:8443');
    assert.equal(tls.host, '::1');
    assert.equal(tls.href, 'tls://[::1]:8443');
    assert.equal(tls.binding, 'tls');
    assert.equal(tls.secure, true);
    assert.equal(parseRelayUrl('TCP://h:5').scheme, 'tcp');
  });

  const bad: [string, RegExp][] = [
    ['', /empty/],
    ['http://h:80', /scheme "http"/],
    ['udp://h:1', /scheme "udp"/],
    ['h:1', /scheme/],
    ['not a url', /white space/],
    ['tcp://h', /needs an explicit port/],
    ['tls://h', /needs an explicit port/],
    ['tcp://h:0', /port must be/],
    ['tcp://h:99999', /not a valid URL/],
    ['tcp://:1', /not a valid URL/],
    ['tcp://h:1/path', /takes no path/],
    ['tls://h:1?q', /takes no path/],
    ['ws://u:p@h:1', /credentials/],
    ['ws://h:1/#frag', /fragment/],
  ];
  for (const [text, message] of bad) {
    it(`rejects ${JSON.stringify(text)}`, () =>
      expectCode(() => parseRelayUrl(text), RelayError, 'INVALID_RELAY_URL', message));
  }

  it('parses failover lists, dropping duplicates', () => {
    const list = parseRelayUrls('ws://a:1, tcp://b:2,ws://a:1/');
    assert.deepEqual(
      list.map((u) => u.href),
      ['ws://a:1/', 'tcp://b:2'],
    );
    assert.deepEqual(
      parseRelayUrls(['tls://c:3']).map((u) => u.href),
      ['tls://c:3'],
    );
    expectCode(() => parseRelayUrls([]), RelayError, 'INVALID_RELAY_URL', /no relay/);
    expectCode(() => parseRelayUrls('ws://a:1,,ws://b:2'), RelayError, 'INVALID_RELAY_URL', /empty/);
  });
});

describe('backoff schedule', () => {
  it('has the documented defaults', () => {
    assert.deepEqual(
      { ...DEFAULT_RECONNECT },
      { initialDelayMs: 250, maxDelayMs: 10_000, multiplier: 2, jitter: 0.2, maxAttempts: 0 },
    );
  });

  it('grows exponentially to the cap, with the jitter bounds', () => {
    const o = resolveReconnectOptions();
    const bases = [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000];
    bases.forEach((base, attempt) => {
      const { min, max } = backoffBounds(attempt, o);
      assert.equal(min, base * 0.8, `min of attempt ${attempt}`);
      assert.equal(max, Math.min(10_000, base * 1.2), `max of attempt ${attempt}`);
      assert.equal(
        backoffDelay(attempt, o, () => 0),
        Math.round(min),
      );
      assert.equal(
        backoffDelay(attempt, o, () => 0.999999),
        Math.round(max),
      );
    });
    assert.equal(backoffBounds(10_000, o).max, 10_000);
  });

  it('draws every delay within the bounds', () => {
    const o = resolveReconnectOptions({ jitter: 0.5, initialDelayMs: 100, maxDelayMs: 5000, multiplier: 3 });
    for (let attempt = 0; attempt < 8; attempt++) {
      const { min, max } = backoffBounds(attempt, o);
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(attempt, o);
        assert.ok(d >= Math.floor(min) && d <= Math.ceil(max), `attempt ${attempt}: ${d} outside ${min}..${max}`);
        assert.ok(d <= 5000);
      }
    }
  });

  it('is deterministic without jitter', () => {
    const o = resolveReconnectOptions({ jitter: 0 });
    assert.deepEqual(
      [0, 1, 2, 3].map((a) => backoffDelay(a, o)),
      [250, 500, 1000, 2000],
    );
  });

  it('rejects options that make no schedule', () => {
    for (const bad of [
      { initialDelayMs: -1 },
      { maxDelayMs: 10, initialDelayMs: 100 },
      { multiplier: 0.5 },
      { jitter: 1.5 },
      { jitter: -0.1 },
      { maxAttempts: 1.5 },
      { maxAttempts: -1 },
      { initialDelayMs: Number.NaN },
    ]) {
      expectCode(() => resolveReconnectOptions(bad), RelayError, 'BAD_FIELD', /reconnect/);
    }
  });
});

describe('duplicate suppression and the RESUME watermark', () => {
  const id = (n: number): string => `id-${n}`;

  it('yields new frames once and hides redeliveries', () => {
    const t = new DedupeTracker();
    assert.equal(t.check(id(1), 1), 'new');
    t.accept(id(1), 1);
    // Redelivered while the application still holds it: not yielded, not acked (its ack() will).
    assert.equal(t.check(id(1), 1), 'drop');
    t.ack(id(1), 1);
    assert.equal(t.lastAcked, 1);
    // Redelivered after the ack: acknowledge again so the relay deletes it.
    assert.equal(t.check(id(1), 1), 'ack-again');
    // Same id at a new position (a sender retry stored twice): still a duplicate.
    assert.equal(t.check(id(1), 7), 'ack-again');
  });

  it('treats any position at or below the watermark as acknowledged', () => {
    const t = new DedupeTracker();
    for (const p of [1, 2, 3]) {
      t.accept(id(p), p);
      t.ack(id(p), p);
    }
    assert.equal(t.lastAcked, 3);
    assert.equal(t.check('never-seen', 2), 'ack-again');
    assert.equal(t.check('never-seen', 4), 'new');
  });

  it('advances the watermark only over contiguous acknowledgements', () => {
    const t = new DedupeTracker();
    for (const p of [5, 6, 7, 9]) t.accept(id(p), p);
    assert.equal(t.lastAcked, 0);
    t.ack(id(7), 7);
    assert.equal(t.lastAcked, 4, 'positions below the first delivered one do not exist any more');
    t.ack(id(5), 5);
    assert.equal(t.lastAcked, 5);
    t.ack(id(9), 9);
    assert.equal(t.lastAcked, 5, '6 is still outstanding');
    t.ack(id(6), 6);
    assert.equal(t.lastAcked, 9);
    assert.equal(t.unacked, 0);
  });

  it('never moves the watermark back', () => {
    const t = new DedupeTracker();
    t.accept(id(10), 10);
    t.ack(id(10), 10);
    t.accept(id(3), 3); // out of order: ignored for the watermark, which RESUME already sent
    assert.equal(t.lastAcked, 10);
  });

  it('tracks fast frames by id only', () => {
    const t = new DedupeTracker();
    assert.equal(t.check(id(1), 0), 'new');
    t.accept(id(1), 0);
    assert.equal(t.check(id(1), 0), 'drop');
    assert.equal(t.unacked, 0);
    assert.equal(t.lastAcked, 0);
  });

  it('pins the watermark below frames left unread until a later connection passes them all', () => {
    const t = new DedupeTracker();
    t.accept(id(1), 1);
    t.ack(id(1), 1);
    t.leaveUnread(2);
    t.leaveUnread(3);
    assert.ok(t.hasHole);
    // A duplicate acked again above the hole must not lift the watermark past it.
    t.ack(id(99), 5);
    assert.equal(t.lastAcked, 1);
    t.newConnection();
    assert.equal(t.lastAcked, 1);
    // The relay redelivers from 2 in order.
    assert.equal(t.check(id(2), 2), 'new');
    t.accept(id(2), 2);
    t.ack(id(2), 2);
    assert.ok(t.hasHole, '3 has not come back yet');
    assert.equal(t.lastAcked, 1, 'a RESUME now must not acknowledge 3');
    t.accept(id(3), 3);
    assert.ok(!t.hasHole);
    assert.equal(t.lastAcked, 2);
    t.ack(id(3), 3);
    assert.equal(t.lastAcked, 5);
  });

  it('keeps the hole across acks on the same connection', () => {
    const t = new DedupeTracker();
    t.leaveUnread(4);
    t.ack(id(9), 6);
    assert.ok(t.hasHole, 'only a later connection can pass the hole');
    // In-order delivery: 1..3 were not delivered after RESUME 0, so they do not exist.
    assert.equal(t.lastAcked, 3);
    t.newConnection();
    t.ack(id(10), 7);
    assert.ok(!t.hasHole);
  });

  it('remembers a bounded number of ids (LRU)', () => {
    const t = new DedupeTracker({ maxIds: 3 });
    for (const n of [1, 2, 3]) t.accept(id(n), 0);
    t.check(id(1), 0);
    t.accept(id(1), 0); // refreshed: now the most recent
    t.accept(id(4), 0); // evicts id 2, the least recent
    assert.equal(t.size, 3);
    assert.equal(t.check(id(2), 0), 'new');
    assert.equal(t.check(id(1), 0), 'drop');
    assert.equal(t.check(id(3), 0), 'drop');
  });

  it('stays bounded under a long stream', () => {
    const t = new DedupeTracker({ maxIds: 1000 });
    for (let p = 1; p <= 50_000; p++) {
      assert.equal(t.check(id(p), p), 'new');
      t.accept(id(p), p);
      t.ack(id(p), p);
    }
    assert.equal(t.size, 1000);
    assert.equal(t.unacked, 0);
    assert.equal(t.lastAcked, 50_000);
    // Evicted ids are still hidden by the watermark.
    assert.equal(t.check(id(1), 1), 'ack-again');
  });
});

describe('TypedEmitter', () => {
  interface Events {
    a: { n: number };
    b: string;
  }
  it('calls listeners in order, once, and removes them', () => {
    const e = new TypedEmitter<Events>();
    const seen: string[] = [];
    const off = e.on('a', ({ n }) => seen.push(`on${n}`));
    e.once('a', ({ n }) => seen.push(`once${n}`));
    e.on('b', (s) => seen.push(s));
    assert.equal(e.emit('a', { n: 1 }), true);
    e.emit('a', { n: 2 });
    off();
    e.emit('a', { n: 3 });
    e.emit('b', 'x');
    assert.deepEqual(seen, ['on1', 'once1', 'on2', 'x']);
    assert.equal(e.listenerCount('a'), 0);
    assert.equal(e.emit('a', { n: 4 }), false);
  });

  it('reports a throwing listener instead of propagating it', () => {
    const reported: unknown[] = [];
    const e = new TypedEmitter<Events>((error) => reported.push(error));
    const seen: number[] = [];
    e.on('a', () => {
      throw new Error('boom');
    });
    e.on('a', ({ n }) => seen.push(n));
    e.emit('a', { n: 1 });
    assert.deepEqual(seen, [1]);
    assert.equal((reported[0] as Error).message, 'boom');
  });
});

describe('Inbox', () => {
  it('is a bounded FIFO that hands items to waiting consumers', async () => {
    let takes = 0;
    const box = new Inbox<number>(2, () => takes++);
    assert.equal(box.push(1), true);
    assert.equal(box.push(2), true);
    assert.equal(box.full, true);
    assert.equal(box.push(3), false);
    assert.deepEqual(await box.next(), { value: 1, done: false });
    assert.equal(takes, 1);
    assert.deepEqual(await box.next(), { value: 2, done: false });
    const waiting = box.next();
    box.push(4);
    assert.deepEqual(await waiting, { value: 4, done: false });
  });

  it('drains before ending, or rejects with the end error', async () => {
    const box = new Inbox<number>(10);
    box.push(1);
    box.end();
    assert.equal(box.push(2), false);
    assert.deepEqual(await box.next(), { value: 1, done: false });
    assert.deepEqual(await box.next(), { value: undefined, done: true });
    const failing = new Inbox<number>(10);
    const pending = failing.next();
    failing.end(new RelayError('INTERNAL', 'gave up'));
    await assert.rejects(pending, /gave up/);
  });

  it('withdraws the pending next() of an iterator that returns, so no item is lost', async () => {
    const box = new Inbox<number>(10);
    const it1 = box.iterator();
    const pending = it1.next();
    await it1.return?.();
    assert.deepEqual(await pending, { value: undefined, done: true });
    box.push(7);
    const it2 = box.iterator();
    assert.deepEqual(await it2.next(), { value: 7, done: false });
  });

  it('stays compact under a long stream', async () => {
    const box = new Inbox<number>(5);
    for (let i = 0; i < 10_000; i++) {
      box.push(i);
      assert.equal((await box.next()).value, i);
    }
    assert.equal(box.length, 0);
  });
});

describe('bytes', () => {
  it('hex-encodes and draws random ids', () => {
    assert.equal(toHex(Uint8Array.of(0, 15, 255)), '000fff');
    const a = randomBytes(16);
    const b = randomBytes(16);
    assert.equal(a.length, 16);
    assert.notDeepEqual(a, b);
  });
});

describe('browser safety', () => {
  it('the client package, with identity and crypto, bundles for a browser with no Node module', async () => {
    const { build } = await import('esbuild');
    // esbuild follows static and literal dynamic imports; a Node built-in or
    // `ws` anywhere in that graph fails a browser-platform bundle. The other
    // packages resolve through node_modules to their dist/ (built by tsc -b),
    // as in a web app; identity's package.json "browser" field swaps in the
    // pure-JS Ed25519 backend.
    const result = await build({
      stdin: {
        contents:
          "export * from './index.js';\n" +
          "export { ED25519_BACKEND, Ed25519Identity } from '@libertaria/identity';\n" +
          "export { nobleCrypto } from '@libertaria/crypto';\n",
        resolveDir: repoPath('shared/client/src'),
        loader: 'ts',
      },
      bundle: true,
      platform: 'browser',
      format: 'esm',
      write: false,
      logLevel: 'silent',
      metafile: true,
    });
    assert.equal(result.errors.length, 0);
    const code = result.outputFiles[0]!.text;
    assert.doesNotMatch(code, /require\(["']node:|from ["']node:/);
    assert.match(code, /ED25519_BACKEND = "noble"/, 'the browser bundle signs with the pure-JS backend');
    const inputs = Object.keys(result.metafile!.inputs);
    assert.ok(!inputs.some((f) => f.endsWith('ed25519-node.js')), 'ed25519-node.js stays out of the bundle');
    assert.ok(code.length > 10_000, 'the bundle holds the client');
  });
  it('tcp:// and tls:// relays are refused outside Node, before the Node-only import, for good', async () => {
    const saved = Object.getOwnPropertyDescriptor(globalThis, 'process')!;
    let opening: Promise<unknown>[];
    // As in a browser: no `process`. openTransport refuses synchronously, so it is hidden for no longer than the calls.
    Object.defineProperty(globalThis, 'process', { value: undefined, configurable: true, writable: true });
    try {
      opening = ['tcp://127.0.0.1:9', 'tls://relay.example:8443'].map((url) =>
        openTransport(parseRelayUrl(url), { timeoutMs: 1000, maxPayload: 1024 }),
      );
    } finally {
      Object.defineProperty(globalThis, 'process', saved);
    }
    for (const [i, scheme] of ['tcp', 'tls'].entries()) {
      await assert.rejects(opening[i]!, (error: unknown) => {
        assert.ok(error instanceof RelayError, String(error));
        assert.equal(error.code, ClientErrorCode.invalidUrl);
        assert.match(error.message, new RegExp(`${scheme}:// needs Node; use ws:// or wss://`));
        // The client skips such a relay from then on instead of retrying it every round.
        assert.ok(isPermanentRefusal(error));
        return true;
      });
    }
  });
  it('ws-transport.ts and the modules it needs import nothing from Node', () => {
    for (const file of ['ws-transport.ts', 'transport.ts', 'codes.ts', 'bytes.ts', 'url.ts']) {
      const source = readFileSync(repoPath('shared/client/src', file), 'utf8');
      assert.doesNotMatch(source, /from ['"](node:|ws['"])/, `${file} imports a Node module`);
      // A literal dynamic import is only allowed for the browser-safe WebSocket transport.
      const literal = [...source.matchAll(/(?<!typeof )import\((['"][^'"]+['"])\)/g)].map((m) => m[1]);
      assert.ok(
        literal.every((s) => s === "'./ws-transport.js'"),
        `${file} has a literal dynamic import a bundler would follow: ${literal.join(', ')}`,
      );
    }
  });
});
