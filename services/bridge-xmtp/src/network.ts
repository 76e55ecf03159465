/**
 * The XMTP network boundary: everything the bridge asks of XMTP goes through
 * `XmtpNetwork`, so the real adapter (`SdkXmtpNetwork`, on @xmtp/node-sdk) and
 * the in-process fake of the tests are the only two implementations, and
 * everything above them (keys, sealing, BullMQ, cursors, consent, limits)
 * runs the same code in tests as in production.
 *
 * Errors crossing this boundary are BridgeErrors with stable codes:
 *   BRIDGE_UNAVAILABLE (retryable)  the network did not answer, or failed
 *   BRIDGE_UNAVAILABLE + rateLimited  the network asked us to slow down
 *   BRIDGE_RECIPIENT_UNREACHABLE    an address with no XMTP inbox, an unknown inbox id
 *   BRIDGE_KEY_STORE                the local database does not open under its key
 *   BRIDGE_CLOSED                   the client was closed
 */

/** An XMTP inbox the bridge acts as: the keys of one bridged DID and where its local database lives. */
export interface XmtpAccount {
  /** secp256k1 secret key of the EOA (32 bytes); the adapter signs XMTP identity requests with it. */
  readonly eoaSecret: Uint8Array;
  /** `0x` + 40 lowercase hex digits. */
  readonly address: string;
  /** SQLCipher key of the local database (32 bytes). */
  readonly dbEncryptionKey: Uint8Array;
  /** File of the local database: reused on every start so the installation is never created twice. */
  readonly dbPath: string;
}

/** What the network offers a message as; the bridge maps each to text or skips it. */
export type XmtpContent =
  | { readonly type: 'text'; readonly text: string }
  | { readonly type: 'reply'; readonly text: string; readonly reference: string }
  | {
      readonly type: 'reaction';
      readonly emoji: string;
      readonly reference: string;
      readonly action: 'added' | 'removed';
    }
  /** Any other content type (attachments, read receipts, group updates…), with its fallback text if it has one. */
  | { readonly type: 'other'; readonly contentType: string; readonly fallback: string | undefined };

export type XmtpConsent = 'allowed' | 'denied' | 'unknown';

export interface XmtpMessage {
  /** XMTP's message id (hex): the idempotency key of the inbound job. */
  readonly id: string;
  readonly conversationId: string;
  readonly senderInboxId: string;
  readonly content: XmtpContent;
  /** Nanoseconds since the epoch: the network's timestamp of the message, the order of a conversation. */
  readonly sentAtNs: bigint;
}

/** A one-to-one conversation (XMTP DM) of the inbox; group conversations are not bridged. */
export interface XmtpDm {
  readonly id: string;
  readonly peerInboxId: string;
  /** The conversation's consent state in this inbox, as stored locally. */
  readonly consent: XmtpConsent;
}

/**
 * Where the inbound reading of one conversation stands: every message sent
 * before `sentAtNs` was handled, and so were `ids` (those sent at exactly
 * `sentAtNs`, since several can share a nanosecond). Resuming from it neither
 * skips nor repeats a message of that conversation.
 */
export interface XmtpCursor {
  readonly sentAtNs: bigint;
  readonly ids: readonly string[];
}

export interface XmtpPage {
  /** Oldest first. */
  readonly messages: readonly XmtpMessage[];
  /** True when the page was cut at the limit: more may follow. */
  readonly more: boolean;
}

/** One open client: one installation of one inbox. */
export interface XmtpClient {
  readonly inboxId: string;
  readonly installationId: string;
  /** The inbox id of an address, or undefined when the address has no XMTP inbox. */
  findInboxId(address: string): Promise<string | undefined>;
  /**
   * Opens the DM with an inbox (or reuses the existing one) and prepares a
   * text in it locally: returns XMTP's message id before anything is
   * published, so the caller can record it first and a retry publishes the
   * same message instead of a second one.
   */
  prepareText(peerInboxId: string, text: string): Promise<{ conversationId: string; messageId: string }>;
  /** Publishes what `prepareText` left in a conversation; idempotent. */
  publish(conversationId: string): Promise<void>;
  /** True once the message is on the network (a retry then has nothing left to publish). */
  isPublished(messageId: string): Promise<boolean | undefined>;
  /** Pulls new conversations and messages from the network into the local database (the network's reads). */
  sync(): Promise<void>;
  /** The inbox's DMs in the local database. */
  listDms(): Promise<readonly XmtpDm[]>;
  /** Messages of a conversation stored locally after `cursor` (all when undefined), oldest first, at most `limit`. */
  messagesAfter(conversationId: string, cursor: XmtpCursor | undefined, limit: number): Promise<XmtpPage>;
  setConsent(conversationId: string, consent: XmtpConsent): Promise<void>;
  /**
   * Calls `onActivity` whenever the network streams something new for this
   * inbox; the bridge then syncs. Returns a function that stops watching.
   */
  watch(onActivity: () => void, onError: (err: unknown) => void): () => void;
  close(): Promise<void>;
}

export interface XmtpNetwork {
  /** `dev`, `production`, `fake`…: for logs and health. */
  readonly name: string;
  /** The inbox id an address gets on creation (computed offline: SHA-256 of the identifier and nonce). */
  inboxIdOf(address: string): string;
  /**
   * Opens the client of an account: reuses its local database (the same
   * installation) when there is one, else creates and registers a new
   * installation. `mayCreateInstallation: false` refuses the latter with
   * BRIDGE_STATE_MISSING (the bridge passes it once an installation was
   * recorded, so a lost volume does not silently use up the inbox's
   * installations).
   */
  open(account: XmtpAccount, options: { readonly mayCreateInstallation: boolean }): Promise<XmtpClient>;
}

/** The JSON text of a cursor, for Redis (bigint as decimal). */
export function encodeCursor(cursor: XmtpCursor): string {
  return JSON.stringify({ at: cursor.sentAtNs.toString(), ids: cursor.ids });
}

/** Reads a stored cursor; anything else throws (a corrupt cursor must not silently restart from the start). */
export function decodeCursor(text: string): XmtpCursor {
  const parsed = JSON.parse(text) as { at?: unknown; ids?: unknown };
  if (typeof parsed.at !== 'string' || !/^[0-9]{1,30}$/.test(parsed.at) || !Array.isArray(parsed.ids)) {
    throw new TypeError('not a cursor');
  }
  return { sentAtNs: BigInt(parsed.at), ids: parsed.ids.map(String) };
}

/** The cursor after handling `message` (the next in order) from `cursor`. */
export function advanceCursor(cursor: XmtpCursor | undefined, message: XmtpMessage): XmtpCursor {
  if (cursor !== undefined && message.sentAtNs === cursor.sentAtNs) {
    return { sentAtNs: cursor.sentAtNs, ids: [...cursor.ids, message.id] };
  }
  if (cursor !== undefined && message.sentAtNs < cursor.sentAtNs) return cursor;
  return { sentAtNs: message.sentAtNs, ids: [message.id] };
}

/** True when `message` comes after `cursor` (neither before it nor one of its ids). */
export function isAfter(cursor: XmtpCursor | undefined, message: XmtpMessage): boolean {
  if (cursor === undefined) return true;
  if (message.sentAtNs > cursor.sentAtNs) return true;
  return message.sentAtNs === cursor.sentAtNs && !cursor.ids.includes(message.id);
}
