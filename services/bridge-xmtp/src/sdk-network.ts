/**
 * The real `XmtpNetwork`: @xmtp/node-sdk 5.5.0 (XMTP V3, MLS, libxmtp's
 * native bindings 1.9.1, the newest that load on glibc 2.36: the 6.x line's
 * bindings need glibc 2.38).
 *
 * One SDK `Client` per bridged inbox, created with an EIP-191 signer over the
 * inbox's secp256k1 key (eoa.ts), its own SQLCipher database file and key,
 * and device sync off (the bridge is the inbox's only reader). `Client.create`
 * on an existing database reuses the installation stored in it; on a missing
 * one it registers a new installation, which the bridge allows only for an
 * inbox with no recorded installation.
 *
 * What works without the network (checked on this machine, see
 * docs/bridges.md#xmtp-what-runs-offline): computing inbox ids, the codecs, and
 * SQLCipher refusing a wrong database key. `Client.create` and `Client.build`
 * both ask the network for the inbox id first, so nothing else runs offline.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { BridgeError } from '@libertaria/bridge-kit';
import {
  type AsyncStreamProxy,
  Client,
  type ConsentState,
  type DecodedMessage,
  type Dm,
  generateInboxId,
  type Identifier,
  type IdentifierKind,
  type ListMessagesOptions,
  type Signer,
  type XmtpEnv,
} from '@xmtp/node-sdk';
import { signPersonalMessage } from './eoa.js';
import {
  isAfter,
  type XmtpAccount,
  type XmtpClient,
  type XmtpConsent,
  type XmtpContent,
  type XmtpCursor,
  type XmtpDm,
  type XmtpMessage,
  type XmtpNetwork,
  type XmtpPage,
} from './network.js';

// The SDK's enums are `const enum`s, which isolatedModules cannot read: their values, from @xmtp/node-bindings.
const ETHEREUM = 0 as IdentifierKind;
const CONSENT: Record<XmtpConsent, ConsentState> = {
  unknown: 0 as ConsentState,
  allowed: 1 as ConsentState,
  denied: 2 as ConsentState,
};
const DELIVERY_PUBLISHED = 1;
const SORT_BY_SENT_AT = 0 as NonNullable<ListMessagesOptions['sortBy']>;
const ASCENDING = 0 as NonNullable<ListMessagesOptions['direction']>;
const KIND_MEMBERSHIP_CHANGE = 1;

export interface SdkXmtpNetworkOptions {
  readonly env: XmtpEnv;
  /** Overrides the env's API endpoint (a private node, a local network). */
  readonly apiUrl?: string | undefined;
  readonly appVersion: string;
}

function identifierOf(address: string): Identifier {
  return { identifier: address.toLowerCase(), identifierKind: ETHEREUM };
}

/** Maps an SDK or bindings error to the bridge's codes; `op` names what failed for the message. */
export function mapSdkError(op: string, err: unknown): BridgeError {
  if (err instanceof BridgeError) return err;
  const text = err instanceof Error ? err.message : String(err);
  const brief = text.split('\n')[0]?.slice(0, 300) ?? '';
  if (/PRAGMA key|file is not a database|incorrect value/i.test(text)) {
    return new BridgeError(
      'BRIDGE_KEY_STORE',
      `XMTP ${op}: the local database does not open under its key (${brief})`,
      {
        cause: err,
        retryable: false,
      },
    );
  }
  if (/rate.?limit|ResourceExhausted|resource exhausted|too many requests|\b429\b/i.test(text)) {
    return new BridgeError('BRIDGE_UNAVAILABLE', `XMTP ${op}: rate limited (${brief})`, {
      cause: err,
      rateLimited: true,
    });
  }
  return new BridgeError('BRIDGE_UNAVAILABLE', `XMTP ${op} failed: ${brief}`, { cause: err });
}

export class SdkXmtpNetwork implements XmtpNetwork {
  readonly name: string;
  constructor(private readonly o: SdkXmtpNetworkOptions) {
    this.name = o.env;
  }

  inboxIdOf(address: string): string {
    return generateInboxId(identifierOf(address));
  }

  async open(account: XmtpAccount, options: { mayCreateInstallation: boolean }): Promise<XmtpClient> {
    if (!options.mayCreateInstallation && !existsSync(account.dbPath)) {
      throw new BridgeError(
        'BRIDGE_STATE_MISSING',
        `the XMTP database ${account.dbPath} is missing; its installation is recorded, so a new one is not registered`,
      );
    }
    mkdirSync(dirname(account.dbPath), { recursive: true, mode: 0o700 });
    // The signer's own copy of the key, wiped once the client exists (only registration signs).
    const secret = account.eoaSecret.slice();
    const identifier = identifierOf(account.address);
    const signer: Signer = {
      type: 'EOA',
      getIdentifier: () => identifier,
      signMessage: (message: string) => signPersonalMessage(secret, message),
    };
    try {
      const client = await Client.create(signer, {
        env: this.o.env,
        ...(this.o.apiUrl === undefined ? {} : { apiUrl: this.o.apiUrl }),
        dbPath: account.dbPath,
        dbEncryptionKey: account.dbEncryptionKey.slice(),
        disableDeviceSync: true,
        appVersion: this.o.appVersion,
      });
      return new SdkClient(client);
    } catch (err) {
      throw mapSdkError('client create', err);
    } finally {
      secret.fill(0);
    }
  }
}

function contentOf(m: DecodedMessage): XmtpContent {
  const type = m.contentType;
  const fallback = m.fallback;
  if (m.kind === KIND_MEMBERSHIP_CHANGE)
    return { type: 'other', contentType: 'membership-change', fallback: undefined };
  if (type.authorityId === 'xmtp.org') {
    if ((type.typeId === 'text' || type.typeId === 'markdown') && typeof m.content === 'string') {
      return { type: 'text', text: m.content };
    }
    if (type.typeId === 'reply') {
      const reply = m.content as { referenceId?: unknown; content?: unknown } | undefined;
      if (typeof reply?.content === 'string' && typeof reply.referenceId === 'string') {
        return { type: 'reply', text: reply.content, reference: reply.referenceId };
      }
    }
    if (type.typeId === 'reaction') {
      const r = m.content as { reference?: unknown; content?: unknown; action?: unknown } | undefined;
      if (typeof r?.content === 'string' && typeof r.reference === 'string') {
        return {
          type: 'reaction',
          emoji: r.content,
          reference: r.reference,
          action: r.action === 2 ? 'removed' : 'added',
        };
      }
    }
  }
  return {
    type: 'other',
    contentType: `${type.authorityId}/${type.typeId}:${type.versionMajor}.${type.versionMinor}`,
    fallback,
  };
}

class SdkClient implements XmtpClient {
  constructor(private readonly client: Client) {}

  get inboxId(): string {
    return this.client.inboxId;
  }

  get installationId(): string {
    return this.client.installationId;
  }

  private async conversation(id: string) {
    const conv = await this.client.conversations.getConversationById(id);
    if (!conv) throw new BridgeError('BRIDGE_UNAVAILABLE', `XMTP: no conversation ${id} in the local database`);
    return conv;
  }

  async findInboxId(address: string): Promise<string | undefined> {
    try {
      return (await this.client.fetchInboxIdByIdentifier(identifierOf(address))) ?? undefined;
    } catch (err) {
      throw mapSdkError('inbox lookup', err);
    }
  }

  async prepareText(peerInboxId: string, text: string): Promise<{ conversationId: string; messageId: string }> {
    let dm: Dm;
    try {
      dm =
        this.client.conversations.getDmByInboxId(peerInboxId) ??
        (await this.client.conversations.createDm(peerInboxId));
    } catch (err) {
      const e = mapSdkError('DM create', err);
      // An inbox id with no identity on the network: creating the DM finds no installation to add.
      if (!e.rateLimited && /not found|no installations|key ?package|invalid inbox|association/i.test(e.message)) {
        throw new BridgeError(
          'BRIDGE_RECIPIENT_UNREACHABLE',
          `XMTP inbox ${peerInboxId} cannot be reached: ${e.message}`,
          {
            cause: err,
          },
        );
      }
      throw e;
    }
    try {
      // Optimistic: stored locally with its id, published by publish().
      const messageId = await dm.sendText(text, true);
      return { conversationId: dm.id, messageId };
    } catch (err) {
      throw mapSdkError('prepare', err);
    }
  }

  async publish(conversationId: string): Promise<void> {
    const conv = await this.conversation(conversationId);
    try {
      await conv.publishMessages();
    } catch (err) {
      throw mapSdkError('publish', err);
    }
  }

  async isPublished(messageId: string): Promise<boolean | undefined> {
    const m = this.client.conversations.getMessageById(messageId);
    return m === undefined ? undefined : m.deliveryStatus === DELIVERY_PUBLISHED;
  }

  async sync(): Promise<void> {
    try {
      await this.client.conversations.syncAll([CONSENT.allowed, CONSENT.unknown]);
    } catch (err) {
      throw mapSdkError('sync', err);
    }
  }

  async listDms(): Promise<readonly XmtpDm[]> {
    return this.client.conversations.listDms().map((dm) => {
      const state = Number(dm.consentState());
      const consent: XmtpConsent = state === 1 ? 'allowed' : state === 2 ? 'denied' : 'unknown';
      return { id: dm.id, peerInboxId: dm.peerInboxId, consent };
    });
  }

  async messagesAfter(conversationId: string, cursor: XmtpCursor | undefined, limit: number): Promise<XmtpPage> {
    const conv = await this.conversation(conversationId);
    // sentAfterNs is exclusive: one nanosecond earlier includes the cursor's own timestamp, whose ids are skipped here.
    const asked = limit + (cursor?.ids.length ?? 0);
    const raw = await conv.messages({
      ...(cursor === undefined ? {} : { sentAfterNs: cursor.sentAtNs - 1n }),
      sortBy: SORT_BY_SENT_AT,
      direction: ASCENDING,
      limit: asked,
    });
    const messages: XmtpMessage[] = raw
      .map((m) => ({
        id: m.id,
        conversationId,
        senderInboxId: m.senderInboxId,
        content: contentOf(m),
        sentAtNs: m.sentAtNs,
      }))
      .filter((m) => isAfter(cursor, m));
    return { messages: messages.slice(0, limit), more: raw.length >= asked };
  }

  async setConsent(conversationId: string, consent: XmtpConsent): Promise<void> {
    const conv = await this.conversation(conversationId);
    conv.updateConsentState(CONSENT[consent]);
  }

  watch(onActivity: () => void, onError: (err: unknown) => void): () => void {
    let stopped = false;
    let stream: AsyncStreamProxy<unknown> | undefined;
    const run = async (): Promise<void> => {
      stream = await this.client.conversations.streamAllDmMessages({
        consentStates: [CONSENT.allowed, CONSENT.unknown],
        onError: (err) => onError(err),
        onFail: () => onError(new Error('the XMTP message stream failed after its retries')),
      });
      if (stopped) {
        await stream.end();
        return;
      }
      // Iterated, not only observed with onValue: the SDK queues every value until it is read.
      for await (const _ of stream) onActivity();
    };
    run().catch(onError);
    return () => {
      stopped = true;
      stream?.end().catch(() => undefined);
    };
  }

  async close(): Promise<void> {
    // The SDK has no close; the database connection goes with the process. Streams are ended by watch's stop.
  }
}
