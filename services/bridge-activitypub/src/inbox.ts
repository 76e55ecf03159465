/**
 * What arrives in the inboxes, once Fedify has verified its signature
 * (`http-server.ts` refuses what is too large, not JSON or unsigned before;
 * Fedify answers 401 to a bad signature, counted here by its reason).
 * Listeners run from Fedify's BullMQ queue: one that throws is retried with
 * backoff, and each activity is handled once by id (Fedify's idempotence,
 * `global`: the same activity through a personal and the shared inbox counts
 * once; the federation's inbound job id is derived from the note id too).
 *
 * - `Create(Note)` addressed to bridged actors: the sender's account is
 *   checked (WebFinger must point back at the actor), the note must be the
 *   sender's own (`attributedTo`), its HTML is reduced to text and bounded,
 *   the owner's policy decides (`message`), and the peer gets a private
 *   message (or a mention, when the note is also public).
 * - `Follow` of a bridged actor: the owner's policy decides (`follow`);
 *   answered `Accept` (the follower is stored) or `Reject`.
 * - `Undo(Follow)`: the follower is removed. `Delete` of an actor: it is
 *   removed from every followers list and its cached account dropped;
 *   `Update` of an actor: its cached account is dropped. `Delete`/`Update` of
 *   a note: nothing to do, the bridge keeps no copy and a peer's message
 *   cannot be taken back (counted `ignored`).
 */
import { createHash } from 'node:crypto';
import type { Federation, InboxContext } from '@fedify/fedify';
import {
  Accept,
  type Activity,
  Create,
  Delete,
  Follow,
  isActor,
  Note,
  PUBLIC_COLLECTION,
  Reject,
  Undo,
  Update,
} from '@fedify/fedify/vocab';
import { BridgeError, type ForeignIdentity, parseForeignIdentity } from '@libertaria/bridge-kit';
import type { ActivityPubBridge } from './activitypub-bridge.js';
import { type Actor, INSTANCE_ACTOR } from './actors.js';
import { htmlToText } from './html-text.js';
import { RemoteAccountError, type RemoteActor } from './remote.js';

function idHash(id: string): string {
  return createHash('sha256').update(id).digest('hex').slice(0, 24);
}

export function registerInbox(federation: Federation<void>, bridge: ActivityPubBridge): void {
  const o = bridge.o;
  const count = (type: string, verdict: string): void => {
    o.metrics.inbound.labels(type, verdict).inc();
  };

  /** The bridged actors an activity (and its object) is addressed to, plus the inbox it came through. */
  async function addressees(
    ctx: InboxContext<void>,
    ...objects: { toIds: URL[]; ccIds: URL[]; btoIds: URL[]; bccIds: URL[] }[]
  ) {
    const handles = new Set<string>();
    let isPublic = false;
    for (const object of objects) {
      for (const url of [...object.toIds, ...object.ccIds, ...object.btoIds, ...object.bccIds]) {
        if (url.href === PUBLIC_COLLECTION.href) isPublic = true;
        const parsed = ctx.parseUri(url);
        if (parsed?.type === 'actor') handles.add(parsed.identifier.toLowerCase());
      }
    }
    if (ctx.recipient) handles.add(ctx.recipient.toLowerCase());
    const actors: Actor[] = [];
    for (const handle of handles) {
      if (handle === INSTANCE_ACTOR) continue;
      const actor = await o.actors.byHandle(handle);
      if (actor) actors.push(actor);
    }
    return { actors, isPublic };
  }

  /** The sender's verified account, or undefined (counted) when it has none. */
  async function senderOf(ctx: InboxContext<void>, activity: Activity, type: string): Promise<RemoteActor | undefined> {
    const actor = await activity.getActor({ documentLoader: ctx.documentLoader });
    if (!actor || !isActor(actor)) {
      count(type, 'invalid');
      return undefined;
    }
    try {
      const remote = await bridge.accounts.accountOf(actor);
      o.metrics.lookups.labels('ok').inc();
      return remote;
    } catch (err) {
      if (err instanceof RemoteAccountError) {
        o.metrics.lookups.labels(err.reason).inc();
        count(type, 'invalid');
        o.log.info('inbound activity from an unverifiable account', { actor: actor.id?.href, reason: err.reason });
        return undefined;
      }
      throw err; // The remote is unreachable: the queue tries again later.
    }
  }

  function identity(remote: RemoteActor): ForeignIdentity {
    return parseForeignIdentity(remote.acct);
  }

  async function onCreate(ctx: InboxContext<void>, create: Create): Promise<void> {
    const type = 'Create';
    const note = await create.getObject({ documentLoader: ctx.documentLoader });
    if (!(note instanceof Note) || note.id === null) {
      count(type, 'ignored');
      return;
    }
    const { actors, isPublic } = await addressees(ctx, create, note);
    if (actors.length === 0) {
      count(type, 'ignored');
      return;
    }
    // A Create may only carry its actor's own note: otherwise anyone could put words in another's mouth.
    if (note.attributionId?.href !== create.actorId?.href) {
      count(type, 'invalid');
      return;
    }
    const sender = await senderOf(ctx, create, type);
    if (!sender) return;
    const dropMentions = new Set(actors.map((a) => ctx.getActorUri(a.handle).href));
    const text = htmlToText(String(note.content ?? ''), dropMentions);
    if (text === '' || Buffer.byteLength(text, 'utf8') > o.maxTextBytes) {
      count(type, 'invalid');
      o.log.info('inbound note refused: empty or over the text limit', { note: note.id.href });
      return;
    }
    const handler = bridge.inboundHandler;
    if (!handler) throw new BridgeError('BRIDGE_UNAVAILABLE', 'no inbound handler yet: the queue retries the activity');
    const from = identity(sender);
    const sentAt = Math.floor((note.published?.epochMilliseconds ?? Date.now()) / 1000);
    for (const actor of actors) {
      const decision = await o.policy.decide(actor.id, from, 'message');
      if (!decision.allowed) {
        count(type, 'denied');
        o.log.info('inbound note denied by policy', { to: actor.handle, from: from.uri, reason: decision.reason });
        continue;
      }
      // One foreign id per recipient: the federation derives the inbound job id from it.
      const id = actors.length === 1 ? note.id.href : `${note.id.href}#to-${actor.handle}`;
      try {
        await handler({ type: isPublic ? 'mention' : 'private', id, to: actor.id, from, text, sentAt });
      } catch (err) {
        count(type, 'failed');
        throw err;
      }
      await bridge.state.rememberThread(actor.id, sender.id, note.id.href, o.threadSeconds);
      count(type, 'delivered');
    }
  }

  async function onFollow(ctx: InboxContext<void>, follow: Follow): Promise<void> {
    const type = 'Follow';
    const target = ctx.parseUri(follow.objectId);
    const actor = target?.type === 'actor' ? await o.actors.byHandle(target.identifier) : undefined;
    if (!actor || actor.handle === INSTANCE_ACTOR || follow.id === null || follow.actorId === null) {
      count(type, 'ignored');
      return;
    }
    const follower = await follow.getActor({ documentLoader: ctx.documentLoader });
    if (!follower || !isActor(follower) || follower.id === null || follower.inboxId === null) {
      count(type, 'invalid');
      return;
    }
    const sender = await senderOf(ctx, follow, type);
    let allowed = false;
    let reason = 'unverified account';
    if (sender) {
      ({ allowed, reason } = await o.policy.decide(actor.id, identity(sender), 'follow'));
      if (allowed) {
        const added = await bridge.state.addFollower(
          actor.handle,
          {
            id: sender.id,
            inbox: sender.inbox,
            ...(sender.sharedInbox ? { sharedInbox: sender.sharedInbox } : {}),
          },
          o.maxFollowers,
        );
        if (!added) {
          allowed = false;
          reason = 'followers limit reached';
        }
      }
    } else {
      // senderOf counted it `invalid`; the Reject below still tells the remote.
    }
    const me = ctx.getActorUri(actor.handle);
    const answerId = new URL(`${me.href}#${allowed ? 'accept' : 'reject'}-${idHash(follow.id.href)}`);
    const answer = allowed
      ? new Accept({ id: answerId, actor: me, object: follow, to: follower.id })
      : new Reject({ id: answerId, actor: me, object: follow, to: follower.id });
    await ctx.sendActivity({ identifier: actor.handle }, follower, answer);
    o.metrics.deliveries.labels(allowed ? 'Accept' : 'Reject', 'queued').inc();
    if (sender) count(type, allowed ? 'accepted' : 'rejected');
    o.log.info('follow answered', { to: actor.handle, from: sender?.acct, allowed, reason });
  }

  async function onUndo(ctx: InboxContext<void>, undo: Undo): Promise<void> {
    const type = 'Undo';
    const object = await undo.getObject({ documentLoader: ctx.documentLoader, crossOrigin: 'trust' });
    if (!(object instanceof Follow) || object.actorId?.href !== undo.actorId?.href || undo.actorId === null) {
      count(type, 'ignored');
      return;
    }
    const target = ctx.parseUri(object.objectId);
    if (target?.type !== 'actor') {
      count(type, 'ignored');
      return;
    }
    const removed = await bridge.state.removeFollower(target.identifier.toLowerCase(), undo.actorId.href);
    count(type, removed ? 'removed' : 'ignored');
  }

  async function onDelete(_ctx: InboxContext<void>, del: Delete): Promise<void> {
    const type = 'Delete';
    // An actor deleting itself: its id is the object. Anything else (a note) has nothing here to delete.
    if (del.actorId === null || del.objectId?.href !== del.actorId.href) {
      count(type, 'ignored');
      return;
    }
    const followed = await bridge.state.removeActorEverywhere(del.actorId.href);
    await bridge.accounts.forget(del.actorId.href);
    count(type, followed > 0 ? 'removed' : 'ignored');
  }

  async function onUpdate(_ctx: InboxContext<void>, update: Update): Promise<void> {
    const type = 'Update';
    if (update.actorId === null || update.objectId?.href !== update.actorId.href) {
      count(type, 'ignored');
      return;
    }
    // Its account or inbox may have changed: resolve it again next time.
    await bridge.accounts.forget(update.actorId.href);
    count(type, 'refreshed');
  }

  federation
    .setInboxListeners('/users/{identifier}/inbox', '/inbox')
    .withIdempotency('global')
    .setSharedKeyDispatcher(() => ({ identifier: INSTANCE_ACTOR }))
    .on(Create, onCreate)
    .on(Follow, onFollow)
    .on(Undo, onUndo)
    .on(Delete, onDelete)
    .on(Update, onUpdate)
    .onUnverifiedActivity((_ctx, _activity, reason) => {
      o.metrics.signatureFailures.labels(reason.type).inc();
    })
    .onError((_ctx, error) => {
      o.log.warn('inbox listener failed; the queue retries it', { err: error.message });
    });
}
