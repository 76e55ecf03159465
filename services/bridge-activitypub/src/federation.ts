/**
 * The Fedify side of the bridge: one federation on our Redis (RedisKvStore,
 * BullMqMessageQueue), with
 *
 *   /.well-known/webfinger            acct:<handle>@<host> → /users/<handle> (Fedify)
 *   /users/{handle}                   Person (or, for `bridge`, the instance Application)
 *                                     with its RSA key (publicKey) and both keys as
 *                                     Multikeys (assertionMethod)
 *   /users/{handle}/inbox, /inbox     personal and shared inboxes (inbox.ts)
 *   /users/{handle}/outbox            always empty: the bridge keeps no copy of messages
 *   /users/{handle}/followers         who follows the actor (accepted by policy)
 *   /.well-known/nodeinfo, /nodeinfo/2.1
 *
 * Fedify verifies every inbox request (HTTP Signatures, draft-cavage and RFC
 * 9421; Linked Data Signatures; Object Integrity Proofs) and fetches the
 * signer's key; a key fetch for the shared inbox is signed by the instance
 * actor, one for a personal inbox by its actor, so servers in authorized
 * fetch ("secure mode") answer it.
 */
import './fedify-runtime.js';
import { createFederation, type Federation } from '@fedify/fedify';
import { Application, Endpoints, Person } from '@fedify/fedify/vocab';
import { Temporal } from '@js-temporal/polyfill';
import type { ActivityPubBridge } from './activitypub-bridge.js';
import { INSTANCE_ACTOR } from './actors.js';
import type { BullMqMessageQueue } from './bullmq-message-queue.js';
import { registerInbox } from './inbox.js';
import { failureReason } from './metrics.js';
import { DEFAULT_KV_PREFIX, RedisKvStore } from './redis-kv-store.js';

export function createBridgeFederation(bridge: ActivityPubBridge, queue: BullMqMessageQueue): Federation<void> {
  const o = bridge.o;
  const federation = createFederation<void>({
    // No hash tag: Fedify's cache entries spread over a Cluster's shards (docs/redis.md).
    kv: new RedisKvStore(o.redis, { prefix: DEFAULT_KV_PREFIX }),
    queue,
    manuallyStartQueue: true,
    origin: o.origin,
    allowPrivateAddress: o.insecure,
    signatureTimeWindow: Temporal.Duration.from({ seconds: o.signatureWindowSeconds }),
    userAgent: { software: 'LibertariaBridge/0.1' },
    // Fedify ends these without retrying (the default, made explicit: the bridge relies on it).
    permanentFailureStatusCodes: [404, 410],
    onOutboxError: (error, activity) => {
      const status = (error as { statusCode?: number }).statusCode;
      const type = activity?.constructor.name ?? 'unknown';
      o.metrics.deliveryFailures.labels(failureReason(status)).inc();
      o.log.warn('queued delivery failed', { activity: activity?.id?.href, type, status, err: error.message });
    },
  });

  federation
    .setActorDispatcher('/users/{identifier}', async (ctx, identifier) => {
      const actor = await o.actors.byHandle(identifier);
      if (!actor) return null;
      const keys = await ctx.getActorKeyPairs(identifier);
      const common = {
        id: ctx.getActorUri(identifier),
        preferredUsername: identifier,
        // The mention link Mastodon writes into a reply is this URL: the inbound side drops it from the text.
        url: ctx.getActorUri(identifier),
        inbox: ctx.getInboxUri(identifier),
        outbox: ctx.getOutboxUri(identifier),
        endpoints: new Endpoints({ sharedInbox: ctx.getInboxUri() }),
        publicKey: keys[0]?.cryptographicKey ?? null,
        assertionMethods: keys.map((k) => k.multikey),
      };
      if (identifier === INSTANCE_ACTOR) {
        return new Application({ ...common, name: 'Libertaria bridge', manuallyApprovesFollowers: true });
      }
      return new Person({
        ...common,
        followers: ctx.getFollowersUri(identifier),
        name: identifier,
        summary:
          'A Libertaria peer, reached through the Libertaria ActivityPub bridge. Direct messages reach it; the bridge operator can read what crosses the bridge.',
        // Follows are decided by the peer's membrane policy, not granted to everyone.
        manuallyApprovesFollowers: true,
        discoverable: false,
        indexable: false,
      });
    })
    .setKeyPairsDispatcher(async (_ctx, identifier) => {
      const actor = await o.actors.byHandle(identifier);
      if (!actor) return [];
      const keys = await o.actors.keyPairs(actor);
      // RSA first: Fedify signs HTTP requests with the first RSA key, proofs with Ed25519.
      return [keys.rsa, keys.ed25519];
    });

  federation.setOutboxDispatcher('/users/{identifier}/outbox', async () => ({ items: [] })).setCounter(() => 0);

  federation
    .setFollowersDispatcher('/users/{identifier}/followers', async (_ctx, identifier) => {
      const actor = await o.actors.byHandle(identifier);
      if (!actor) return null;
      return { items: await bridge.state.followers(actor.handle) };
    })
    .setCounter(async (_ctx, identifier) => bridge.state.followerCount(identifier.toLowerCase()));

  federation.setNodeInfoDispatcher('/nodeinfo/2.1', async () => ({
    software: { name: 'libertaria-bridge', version: '0.1.0' },
    protocols: ['activitypub'],
    openRegistrations: false,
    usage: { users: { total: await o.actors.count() }, localPosts: 0, localComments: 0 },
    metadata: { bridge: 'Libertaria peers as ActivityPub actors' },
  }));

  registerInbox(federation, bridge);
  return federation;
}
