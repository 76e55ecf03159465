/**
 * An independent ActivityPub server for the bridge's tests, written with Node
 * built-ins only (node:http, node:crypto): no Fedify, no code of the bridge.
 * It does what Mastodon does on the wire:
 *
 * - WebFinger (`/.well-known/webfinger?resource=acct:<user>@<host>`) and actor
 *   documents (`/users/<user>`: a Person with `publicKey.publicKeyPem`, an
 *   inbox, the shared inbox);
 * - inboxes that verify draft-cavage HTTP Signatures like Mastodon: the
 *   `Signature` header must sign `(request-target)`, `host`, `date` and
 *   `digest`; the date must be within an hour; the `Digest` must be the
 *   body's SHA-256; the key is fetched from `keyId` and must belong to the
 *   activity's actor. Anything else is 401 (400 for a body that is not JSON);
 * - signed delivery (rsa-sha256 over the same headers) of `Create(Note)`
 *   direct messages, `Follow` and `Undo(Follow)`;
 * - optionally "secure mode" (authorized fetch): actor documents are served
 *   only to signed GETs, verified the same way.
 *
 * Test controls: `stop()`/`start()` (down, then back on the same port), and
 * an inbox answer to force (410, 429 with Retry-After).
 */
import { createHash, createSign, createVerify, generateKeyPairSync, type KeyObject, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

const AS = 'https://www.w3.org/ns/activitystreams';
const PUBLIC = `${AS}#Public`;

export interface Received {
  readonly inbox: string;
  readonly activity: Record<string, unknown>;
  readonly signer: string;
}

export interface Refusal {
  readonly status: number;
  readonly why: string;
}

interface User {
  readonly name: string;
  readonly privateKey: KeyObject;
  readonly publicKeyPem: string;
}

function asArray(value: unknown): unknown[] {
  return value === undefined || value === null ? [] : Array.isArray(value) ? value : [value];
}

function idOf(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { id?: unknown }).id === 'string')
    return (value as { id: string }).id;
  return undefined;
}

/** Text of note HTML, written here independently of the bridge: tags dropped, <br> and paragraphs as line breaks. */
export function noteText(html: string): string {
  return html
    .replace(/<br\s*\/?>/gi, '\n')
    .replace(/<\/p>\s*<p>/gi, '\n\n')
    .replace(/<[^>]*>/g, '')
    .replace(/&#(\d+);/g, (_, n: string) => String.fromCodePoint(Number(n)))
    .replace(/&#x([0-9a-f]+);/gi, (_, n: string) => String.fromCodePoint(Number.parseInt(n, 16)))
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&amp;/g, '&');
}

function parseSignature(header: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of header.matchAll(/([a-zA-Z]+)="([^"]*)"/g)) out[m[1] as string] = m[2] as string;
  return out;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export class ApServer {
  private server: Server | undefined;
  private port = 0;
  private readonly users = new Map<string, User>();
  readonly received: Received[] = [];
  readonly refused: Refusal[] = [];
  private waiters: (() => void)[] = [];
  /** Inbox requests seen, answered or not (retries show here), and when each came. */
  inboxHits = 0;
  readonly inboxTimes: number[] = [];
  /**
   * Forced answer for inbox POSTs, e.g. `{ status: 410 }`; with `forMs`, only for that long from the first
   * request it answers (a rate limiter's window), whose time is then in `startedAt`.
   */
  forceInbox: { status: number; headers?: Record<string, string>; forMs?: number; startedAt?: number } | undefined;
  /** Authorized fetch: actor documents only for signed GETs. */
  secureMode = false;
  /** Users WebFinger does not know (their actors still answer): an account that cannot be verified. */
  readonly unlisted = new Set<string>();
  readonly keyCache = new Map<string, string>();

  constructor(names: readonly string[]) {
    for (const name of names) {
      const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      this.users.set(name, {
        name,
        privateKey,
        publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
      });
    }
  }

  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }
  get host(): string {
    return `127.0.0.1:${this.port}`;
  }
  actorId(name: string): string {
    return `${this.origin}/users/${name}`;
  }
  acct(name: string): string {
    return `acct:${name}@${this.host}`;
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(500);
        res.end(String(err));
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Down: the port refuses connections until start() again. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves with the first received activity matching `pred`, waiting up to `timeoutMs`. */
  async waitFor(pred: (r: Received) => boolean, timeoutMs: number, what = 'an activity'): Promise<Received> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.received.find(pred);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `no ${what} within ${timeoutMs} ms (received: ${this.received.map((r) => r.activity.type).join(', ') || 'nothing'}; refused: ${JSON.stringify(this.refused)})`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1000));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.origin);
    if (req.method === 'GET' && url.pathname === '/.well-known/webfinger') {
      const resource = url.searchParams.get('resource') ?? '';
      const m = /^acct:([^@]+)@(.+)$/.exec(resource);
      if (!m || m[2] !== this.host || !this.users.has(m[1] as string) || this.unlisted.has(m[1] as string)) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/jrd+json' }).end(
        JSON.stringify({
          subject: resource,
          links: [{ rel: 'self', type: 'application/activity+json', href: this.actorId(m[1] as string) }],
        }),
      );
      return;
    }
    const actorMatch = /^\/users\/([a-z0-9_]+)$/.exec(url.pathname);
    if (req.method === 'GET' && actorMatch) {
      const user = this.users.get(actorMatch[1] as string);
      if (!user) {
        res.writeHead(404).end();
        return;
      }
      if (this.secureMode) {
        const why = await this.verify(req, undefined);
        if (why !== undefined) {
          this.refused.push({ status: 401, why: `actor fetch: ${why}` });
          res.writeHead(401).end(why);
          return;
        }
      }
      res.writeHead(200, { 'content-type': 'application/activity+json' }).end(JSON.stringify(this.actorDoc(user)));
      return;
    }
    const inboxMatch = /^\/(?:users\/([a-z0-9_]+)\/)?inbox$/.exec(url.pathname);
    if (req.method === 'POST' && inboxMatch) {
      this.inboxHits++;
      this.inboxTimes.push(Date.now());
      const body = await readBody(req);
      const forced = this.forceInbox;
      if (forced) forced.startedAt ??= Date.now();
      if (forced && (forced.forMs === undefined || Date.now() < (forced.startedAt as number) + forced.forMs)) {
        res.writeHead(forced.status, forced.headers ?? {}).end();
        return;
      }
      let activity: Record<string, unknown>;
      try {
        activity = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
      } catch {
        this.refused.push({ status: 400, why: 'not JSON' });
        res.writeHead(400).end();
        return;
      }
      const why = await this.verify(req, body, idOf(activity.actor));
      if (why !== undefined) {
        this.refused.push({ status: 401, why });
        res.writeHead(401).end(why);
        return;
      }
      this.received.push({ inbox: url.pathname, activity, signer: idOf(activity.actor) as string });
      this.wake();
      res.writeHead(202).end();
      return;
    }
    res.writeHead(404).end();
  }

  private actorDoc(user: User): Record<string, unknown> {
    const id = this.actorId(user.name);
    return {
      '@context': [AS, 'https://w3id.org/security/v1'],
      id,
      type: 'Person',
      preferredUsername: user.name,
      name: user.name,
      inbox: `${id}/inbox`,
      outbox: `${id}/outbox`,
      endpoints: { sharedInbox: `${this.origin}/inbox` },
      publicKey: { id: `${id}#main-key`, owner: id, publicKeyPem: user.publicKeyPem },
    };
  }

  /** Mastodon's check of a draft-cavage signature; undefined when it holds, else why not. */
  private async verify(req: IncomingMessage, body: Buffer | undefined, actor?: string): Promise<string | undefined> {
    const header = req.headers.signature;
    if (typeof header !== 'string') return 'no Signature header';
    const sig = parseSignature(header);
    if (!sig.keyId || !sig.signature) return 'Signature lacks keyId or signature';
    const signed = (sig.headers ?? 'date').toLowerCase().split(' ');
    const required =
      body === undefined ? ['(request-target)', 'host', 'date'] : ['(request-target)', 'host', 'date', 'digest'];
    for (const h of required) if (!signed.includes(h)) return `${h} is not signed`;
    const date = Date.parse(String(req.headers.date ?? ''));
    if (Number.isNaN(date) || Math.abs(Date.now() - date) > 3600_000) return 'date missing or off by more than an hour';
    if (body !== undefined) {
      const digest = `SHA-256=${createHash('sha256').update(body).digest('base64')}`;
      if (req.headers.digest !== digest) return 'digest does not match the body';
    }
    const lines = signed.map((h) => {
      if (h === '(request-target)') return `(request-target): ${(req.method ?? 'GET').toLowerCase()} ${req.url}`;
      const value = req.headers[h];
      return `${h}: ${Array.isArray(value) ? value.join(', ') : (value ?? '')}`;
    });
    const keyOwner = sig.keyId.split('#')[0] as string;
    if (actor !== undefined && keyOwner !== actor) return 'the key is not the actor’s';
    const pem = await this.fetchKey(sig.keyId);
    if (!pem) return 'the key could not be fetched';
    const verifier = createVerify('RSA-SHA256');
    verifier.update(lines.join('\n'));
    return verifier.verify(pem, sig.signature, 'base64') ? undefined : 'the signature does not verify';
  }

  private async fetchKey(keyId: string): Promise<string | undefined> {
    const cached = this.keyCache.get(keyId);
    if (cached) return cached;
    const response = await this.signedFetch(keyId.split('#')[0] as string, 'GET');
    if (!response.ok) return undefined;
    const doc = (await response.json()) as Record<string, unknown>;
    // The bridge's actor gives its RSA key as publicKey (one object or a list).
    for (const key of asArray(doc.publicKey) as Record<string, unknown>[]) {
      if (key && key.id === keyId && typeof key.publicKeyPem === 'string') {
        this.keyCache.set(keyId, key.publicKeyPem);
        return key.publicKeyPem;
      }
    }
    return undefined;
  }

  /** Headers of a request signed by `as` (default: the first user), rsa-sha256 over (request-target) host date [digest]. */
  signHeaders(target: string, method: 'GET' | 'POST', body?: string, as?: string): Record<string, string> {
    const user = as ? this.users.get(as) : this.users.values().next().value;
    if (!user) throw new Error(`no user ${as}`);
    const url = new URL(target);
    const headers: Record<string, string> = {
      host: url.host,
      date: new Date().toUTCString(),
      accept: 'application/activity+json',
    };
    const names = ['(request-target)', 'host', 'date'];
    if (body !== undefined) {
      headers.digest = `SHA-256=${createHash('sha256').update(body).digest('base64')}`;
      headers['content-type'] = 'application/activity+json';
      names.push('digest');
    }
    const lines = names.map((h) =>
      h === '(request-target)'
        ? `(request-target): ${method.toLowerCase()} ${url.pathname}${url.search}`
        : `${h}: ${headers[h]}`,
    );
    const signer = createSign('RSA-SHA256');
    signer.update(lines.join('\n'));
    const signature = signer.sign(user.privateKey, 'base64');
    headers.signature = `keyId="${this.actorId(user.name)}#main-key",algorithm="rsa-sha256",headers="${names.join(' ')}",signature="${signature}"`;
    return headers;
  }

  /** A request signed by `as` (see signHeaders). */
  signedFetch(target: string, method: 'GET' | 'POST', body?: string, as?: string): Promise<Response> {
    const headers = this.signHeaders(target, method, body, as);
    return fetch(target, { method, headers, ...(body === undefined ? {} : { body }) });
  }

  /** WebFinger then the actor, as a Mastodon resolving `@user@host` (plain HTTP here). */
  async resolve(acct: string): Promise<{ id: string; inbox: string }> {
    const host = acct.slice(acct.lastIndexOf('@') + 1);
    const finger = await fetch(`http://${host}/.well-known/webfinger?resource=${encodeURIComponent(acct)}`);
    if (!finger.ok) throw new Error(`WebFinger of ${acct}: ${finger.status}`);
    const jrd = (await finger.json()) as { links: { rel: string; type?: string; href: string }[] };
    const self = jrd.links.find((l) => l.rel === 'self' && l.type === 'application/activity+json');
    if (!self) throw new Error(`WebFinger of ${acct}: no self link`);
    const actor = await this.signedFetch(self.href, 'GET');
    if (!actor.ok) throw new Error(`actor ${self.href}: ${actor.status}`);
    const doc = (await actor.json()) as { id: string; inbox: string };
    return { id: doc.id, inbox: doc.inbox };
  }

  /** A Mastodon-style direct message: Create(Note) to the actor only, with a Mention tag and an h-card mention in the content. */
  note(
    from: string,
    to: { id: string; acct: string },
    text: string,
    options: { public?: boolean; inReplyTo?: string } = {},
  ) {
    const actor = this.actorId(from);
    const id = `${actor}/statuses/${randomUUID()}`;
    const [user] = to.acct.slice(5).split('@');
    const mention = `<span class="h-card"><a href="${to.id}" class="u-url mention">@<span>${user}</span></a></span>`;
    const escaped = text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
    const toList = options.public ? [PUBLIC] : [to.id];
    const ccList = options.public ? [to.id] : [];
    return {
      '@context': AS,
      id: `${id}/activity`,
      type: 'Create',
      actor,
      published: new Date().toISOString(),
      to: toList,
      cc: ccList,
      object: {
        id,
        type: 'Note',
        attributedTo: actor,
        published: new Date().toISOString(),
        to: toList,
        cc: ccList,
        content: `<p>${mention} ${escaped}</p>`,
        tag: [{ type: 'Mention', href: to.id, name: `@${to.acct.slice(5)}` }],
        ...(options.inReplyTo ? { inReplyTo: options.inReplyTo } : {}),
      },
    };
  }

  /** Delivers an activity signed by `from` to `inbox`; the response status. */
  async deliver(from: string, inbox: string, activity: unknown): Promise<number> {
    const response = await this.signedFetch(inbox, 'POST', JSON.stringify(activity), from);
    await response.arrayBuffer();
    return response.status;
  }
}
