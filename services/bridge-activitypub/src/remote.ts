/**
 * Remote accounts: `acct:user@host` to actor (WebFinger, then the actor
 * document) and back (an inbound actor's `acct:`, checked by WebFinger the
 * way Mastodon checks it), cached in Redis for every process of the bridge.
 *
 * WebFinger is fetched here, not with Fedify's lookup: Fedify resolves
 * `acct:` over https only, and the bridge's tests run a plain-HTTP server on
 * loopback. The scheme is https unless the insecure test mode is on, which is
 * the only case where http is used.
 */
import { type Context, UrlError, validatePublicUrl } from '@fedify/fedify';
import { type Actor as ApActor, type Object as ApObject, isActor } from '@fedify/fedify/vocab';
import { BridgeError, type ForeignIdentity, parseForeignIdentity } from '@libertaria/bridge-kit';
import type { RedisClient } from '@libertaria/redis';

export interface RemoteActor {
  readonly id: string;
  readonly inbox: string;
  readonly sharedInbox?: string;
  /** The account, canonical (`acct:user@host`). */
  readonly acct: string;
}

export interface RemoteAccountsOptions {
  readonly redis: RedisClient;
  /** Key prefix (`{lr-bridge}`), under which `:ap:acct:` and `:ap:actor:` keys live. */
  readonly prefix: string;
  readonly insecure: boolean;
  readonly timeoutMs: number;
  readonly maxBytes: number;
  readonly cacheSeconds: number;
  readonly userAgent: string;
}

/** Why an account could not be resolved (a metrics label). */
export type ResolveFailure =
  | 'webfinger_not_found'
  | 'not_an_actor'
  | 'unverified_account'
  | 'bad_account'
  | 'private_address'
  | 'too_many_redirects';

/** WebFinger redirects followed (each checked like the first URL). */
const MAX_REDIRECTS = 3;

export class RemoteAccountError extends BridgeError {
  constructor(
    readonly reason: ResolveFailure,
    message: string,
  ) {
    // Final: the remote said there is no such account, or its documents disagree.
    super('BRIDGE_UNAVAILABLE', message, { retryable: false });
  }
}

interface Jrd {
  readonly subject?: unknown;
  readonly links?: unknown;
}

const ACTIVITY_TYPES = new Set([
  'application/activity+json',
  'application/ld+json; profile="https://www.w3.org/ns/activitystreams"',
  'application/ld+json',
]);

async function readLimited(response: Response, maxBytes: number): Promise<string> {
  const reader = response.body?.getReader();
  if (!reader) return '';
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      throw new BridgeError('BRIDGE_UNAVAILABLE', `a WebFinger document over ${maxBytes} bytes`, { retryable: false });
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export class RemoteAccounts {
  constructor(private readonly o: RemoteAccountsOptions) {}

  private acctKey(acct: string): string {
    return `${this.o.prefix}:ap:acct:${acct}`;
  }
  private actorKey(actorId: string): string {
    return `${this.o.prefix}:ap:actor:${actorId}`;
  }

  /** WebFinger: the subject and the `self` actor link, or undefined when the server says no such account. */
  async webfinger(
    acct: ForeignIdentity & { type: 'activitypub' },
  ): Promise<{ subject: string; self: string } | undefined> {
    const scheme = this.o.insecure ? 'http' : 'https';
    let url = new URL(`${scheme}://${acct.host}/.well-known/webfinger`);
    url.searchParams.set('resource', acct.uri);
    let response: Response;
    for (let hop = 0; ; hop++) {
      // Outside the test mode, never towards loopback or private addresses (server-side request forgery).
      if (!this.o.insecure) {
        try {
          await validatePublicUrl(url.href);
        } catch (err) {
          if (err instanceof UrlError) throw new RemoteAccountError('private_address', `${acct.uri}: ${err.message}`);
          throw err;
        }
      }
      try {
        response = await fetch(url, {
          headers: { accept: 'application/jrd+json, application/json', 'user-agent': this.o.userAgent },
          redirect: 'manual',
          signal: AbortSignal.timeout(this.o.timeoutMs),
        });
      } catch (err) {
        throw new BridgeError('BRIDGE_UNAVAILABLE', `WebFinger of ${acct.uri} failed: ${(err as Error).message}`, {
          cause: err,
        });
      }
      const location = response.headers.get('location');
      if (response.status < 300 || response.status >= 400 || location === null) break;
      await response.body?.cancel();
      if (hop >= MAX_REDIRECTS) throw new RemoteAccountError('too_many_redirects', `WebFinger of ${acct.uri}`);
      const next = new URL(location, url);
      if (next.protocol !== `${scheme}:`)
        throw new RemoteAccountError('bad_account', `WebFinger of ${acct.uri} redirects to ${next.protocol}`);
      url = next;
    }
    if (response.status === 404 || response.status === 410) {
      await response.body?.cancel();
      return undefined;
    }
    if (!response.ok) {
      await response.body?.cancel();
      throw new BridgeError('BRIDGE_UNAVAILABLE', `WebFinger of ${acct.uri} answered ${response.status}`, {
        retryable: response.status >= 500 || response.status === 429,
      });
    }
    let jrd: Jrd;
    try {
      jrd = JSON.parse(await readLimited(response, this.o.maxBytes)) as Jrd;
    } catch (err) {
      if (err instanceof BridgeError) throw err;
      throw new RemoteAccountError('not_an_actor', `WebFinger of ${acct.uri} is not JSON`);
    }
    const links = Array.isArray(jrd.links) ? (jrd.links as Record<string, unknown>[]) : [];
    const self = links.find(
      (l) => l && l.rel === 'self' && typeof l.href === 'string' && ACTIVITY_TYPES.has(String(l.type ?? '')),
    );
    if (!self) return undefined;
    return { subject: typeof jrd.subject === 'string' ? jrd.subject : acct.uri, self: String(self.href) };
  }

  /** The actor of an account: WebFinger, then the actor document (fetched signed by `signer` where given). */
  async resolve(
    ctx: Context<void>,
    acct: ForeignIdentity & { type: 'activitypub'; kind: 'acct' },
    signer?: string,
  ): Promise<RemoteActor> {
    const cached = await this.o.redis.get(this.acctKey(acct.uri));
    if (cached) return JSON.parse(cached) as RemoteActor;
    const found = await this.webfinger(acct);
    if (!found) throw new RemoteAccountError('webfinger_not_found', `${acct.uri}: no such account (WebFinger)`);
    const actor = await this.fetchActor(ctx, found.self, signer);
    const remote: RemoteActor = { ...actorAddresses(actor), acct: acct.uri };
    await this.remember(remote);
    return remote;
  }

  /**
   * An actor named by its URL (`lrelay send --to https://host/users/bob`):
   * its document fetched directly, no WebFinger. `acct` is then only how the
   * actor names itself (preferredUsername at the URL's host), for the
   * mention's text: unverified, so it is never cached where inbound
   * checks (`accountOf`) would read it. Plain http only in the test mode.
   */
  async resolveActor(
    ctx: Context<void>,
    actorUrl: ForeignIdentity & { type: 'activitypub'; kind: 'actor' },
    signer?: string,
  ): Promise<RemoteActor> {
    const url = new URL(actorUrl.uri);
    if (url.protocol !== 'https:' && !this.o.insecure) {
      throw new RemoteAccountError('bad_account', `${actorUrl.uri}: an actor URL must be https`);
    }
    const actor = await this.fetchActor(ctx, actorUrl.uri, signer);
    const name = actor.preferredUsername?.toString();
    let acct = actorUrl.uri;
    if (name) {
      try {
        acct = parseForeignIdentity(`acct:${name}@${url.host}`).uri;
      } catch {
        // A name that makes no account: the mention shows the URL.
      }
    }
    return { ...actorAddresses(actor), acct };
  }

  private async fetchActor(ctx: Context<void>, href: string, signer?: string): Promise<ApActor> {
    let object: ApObject | null;
    try {
      const documentLoader =
        signer === undefined ? ctx.documentLoader : await ctx.getDocumentLoader({ identifier: signer });
      object = await ctx.lookupObject(href, { documentLoader, signal: AbortSignal.timeout(this.o.timeoutMs) });
    } catch (err) {
      throw new BridgeError('BRIDGE_UNAVAILABLE', `the actor ${href} could not be fetched: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (!object) {
      throw new BridgeError('BRIDGE_UNAVAILABLE', `the actor ${href} could not be fetched`);
    }
    if (!isActor(object) || object.id === null || object.inboxId === null) {
      throw new RemoteAccountError('not_an_actor', `${href} is not an actor with an inbox`);
    }
    return object;
  }

  /**
   * The account of an inbound actor: `acct:<preferredUsername>@<host of its
   * id>`, accepted only when that account's WebFinger points back at the
   * actor (or, as Mastodon allows, the subject WebFinger gives is another
   * account on another host whose WebFinger points back at it).
   */
  async accountOf(actor: ApActor): Promise<RemoteActor> {
    const id = actor.id?.href;
    if (!id || !actor.inboxId) throw new RemoteAccountError('not_an_actor', 'an actor without id or inbox');
    const cached = await this.o.redis.get(this.actorKey(id));
    if (cached) return JSON.parse(cached) as RemoteActor;
    const user = actor.preferredUsername?.toString() ?? '';
    let candidate: ForeignIdentity;
    try {
      candidate = parseForeignIdentity(`acct:${user}@${new URL(id).host}`);
    } catch {
      throw new RemoteAccountError('bad_account', `${id}: its preferredUsername makes no acct: URI`);
    }
    if (candidate.type !== 'activitypub') throw new RemoteAccountError('bad_account', `${id}: not an account`);
    let found = await this.webfinger(candidate);
    let acct = candidate.uri;
    if (found && found.self !== id && found.subject !== candidate.uri && found.subject.startsWith('acct:')) {
      const other = parseForeignIdentity(found.subject);
      if (other.type === 'activitypub') {
        found = await this.webfinger(other);
        acct = other.uri;
      }
    }
    if (!found || found.self !== id) {
      throw new RemoteAccountError('unverified_account', `${id}: WebFinger of ${acct} does not point back at it`);
    }
    const remote: RemoteActor = { ...actorAddresses(actor), acct };
    await this.remember(remote);
    return remote;
  }

  private async remember(remote: RemoteActor): Promise<void> {
    if (this.o.cacheSeconds === 0) return;
    const json = JSON.stringify(remote);
    await Promise.all([
      this.o.redis.set(this.acctKey(remote.acct), json, 'EX', this.o.cacheSeconds),
      this.o.redis.set(this.actorKey(remote.id), json, 'EX', this.o.cacheSeconds),
    ]);
  }

  /** Drops what is cached about an actor (it sent Update or Delete). */
  async forget(actorId: string): Promise<void> {
    const cached = await this.o.redis.get(this.actorKey(actorId));
    const keys = [this.actorKey(actorId)];
    if (cached) keys.push(this.acctKey((JSON.parse(cached) as RemoteActor).acct));
    for (const key of keys) await this.o.redis.del(key);
  }
}

function actorAddresses(actor: ApActor): Omit<RemoteActor, 'acct'> {
  const sharedInbox = actor.endpoints?.sharedInbox?.href;
  return {
    id: (actor.id as URL).href,
    inbox: (actor.inboxId as URL).href,
    ...(sharedInbox ? { sharedInbox } : {}),
  };
}
