/**
 * Federated sessions from the client SDK (docs/bridges.md#from-the-sdk-and-the-cli).
 *
 * A federated session talks to a foreign identity (`nostr:npub1…`) through a
 * bridge, which is a Libertaria peer with its own DID: every message is an
 * ordinary sealed durable send to the bridge, whose plaintext is a federated
 * message (`send-dm`). Replies come back from the bridge's DID as `received`
 * messages; `federatedMessageOf` reads them.
 *
 * The bridge reads what crosses it (it re-encrypts for the foreign network):
 * a federated session is private up to the bridge, not up to the far end.
 */

import { type InboundMessage, type RelayClient, randomBytes, type SendResult, toHex } from '@libertaria/client';
import { parseDid } from '@libertaria/identity';
import { LibertariaError } from '@libertaria/protocol';
import { decodeFederatedMessage, encodeFederatedMessage, isFederatedMessage } from './federation.js';
import { type ForeignIdentity, parseForeignIdentity } from './foreign-identity.js';
import { bridgeProtocolFor, type FederatedSession, federatedSession } from './types.js';

export interface OpenFederatedSessionOptions {
  /** The foreign identity: a URI (`nostr:npub1…`) or a parsed one. */
  readonly remote: string | ForeignIdentity;
  /** The DID of the bridge that serves the remote's network (docs/bridges.md says where to find it). */
  readonly bridge: string;
  /** Extra URI schemes accepted as Custom identities. */
  readonly customSchemes?: readonly string[];
}

/** An open federated session: sends go to the bridge, sealed, as `send-dm` messages. */
export class FederatedSessionHandle {
  #closed = false;
  constructor(
    private readonly client: RelayClient,
    readonly session: FederatedSession,
    readonly bridgeDid: string,
  ) {}

  get closed(): boolean {
    return this.#closed;
  }

  /** A durable, sealed send to the bridge; resolves when the relay ACKed (the bridge's queue took it). */
  async send(text: string, options: { messageId?: Uint8Array } = {}): Promise<SendResult> {
    if (this.#closed) throw new LibertariaError('BAD_FIELD', 'this federated session is closed');
    const payload = encodeFederatedMessage({
      type: 'send-dm',
      to: this.session.remotePeer.uri,
      text,
      session: this.session.sessionId,
    });
    return this.client.send(this.bridgeDid, payload, options);
  }

  /** True when `message` is a reply in this session: from our bridge and from the session's remote. */
  matches(message: FederatedInbound): boolean {
    return message.via === this.bridgeDid && message.from.uri === this.session.remotePeer.uri;
  }

  /** Local only: the bridge keeps no per-session state, so nothing is sent. Further sends are refused. */
  close(): void {
    this.#closed = true;
  }
}

/** Opens a federated session with `remote` through `bridge`: checks both and picks a fresh session id. */
export function openFederatedSession(
  client: RelayClient,
  options: OpenFederatedSessionOptions,
): FederatedSessionHandle {
  parseDid(options.bridge);
  const remote =
    typeof options.remote === 'string'
      ? parseForeignIdentity(
          options.remote,
          options.customSchemes === undefined ? {} : { customSchemes: options.customSchemes },
        )
      : options.remote;
  const session = federatedSession({
    sessionId: toHex(randomBytes(16)),
    localPeer: client.did,
    remotePeer: remote,
    bridge: bridgeProtocolFor(remote),
  });
  return new FederatedSessionHandle(client, session, options.bridge);
}

/** A foreign message as a peer receives it. */
export interface FederatedInbound {
  readonly kind: 'dm' | 'mention';
  readonly from: ForeignIdentity;
  /** The bridge DID that delivered it (authenticated by the sealed session). */
  readonly via: string;
  readonly text: string;
  readonly sentAt: number;
  /** The foreign network's id of the message. */
  readonly id: string;
}

/**
 * Reads a received message as a federated one, or undefined when it is not
 * (ordinary application bytes). `bridges`, when given, are the bridge DIDs
 * trusted to speak for foreign identities: a `received` message from any
 * other DID is refused (any peer can write these bytes).
 */
export function federatedMessageOf(message: InboundMessage, bridges?: readonly string[]): FederatedInbound | undefined {
  if (!isFederatedMessage(message.payload)) return undefined;
  if (bridges !== undefined && !bridges.includes(message.from)) return undefined;
  const decoded = decodeFederatedMessage(message.payload);
  if (decoded.type !== 'received') return undefined;
  return {
    kind: decoded.kind,
    from: parseForeignIdentity(decoded.from),
    via: message.from,
    text: decoded.text,
    sentAt: decoded.sentAt,
    id: decoded.id,
  };
}
