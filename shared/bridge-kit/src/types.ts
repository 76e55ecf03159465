/**
 * Federated sessions and the interface every bridge implements.
 *
 * A federated session (the seed's `FederatedSession`) is a session whose far
 * end is a foreign identity; the bridge that carries it is named by
 * `BridgeProtocol`. Messages crossing a bridge are unions tagged by `type`,
 * so a queue worker handles them with one exhaustive switch.
 *
 * The bridge works on plain text: frames reach it sealed end to end up to the
 * bridge (it is a peer with its own DID), and it re-encrypts them for the
 * foreign network. Whoever runs a bridge can read what crosses it.
 */
import { parseDid } from '@libertaria/identity';
import { BridgeError } from './errors.js';
import type { ForeignIdentity, ForeignIdentityType } from './foreign-identity.js';

/** The seed's `enum BridgeProtocol { Nostr, ActivityPub, Xmtp, Custom(String) }`. */
export type BridgeProtocol =
  | { readonly type: 'nostr' }
  | { readonly type: 'activitypub' }
  | { readonly type: 'xmtp' }
  | { readonly type: 'custom'; readonly name: string };

export const BridgeProtocols = {
  Nostr: { type: 'nostr' },
  ActivityPub: { type: 'activitypub' },
  Xmtp: { type: 'xmtp' },
  Custom: (name: string): BridgeProtocol => ({ type: 'custom', name }),
} as const satisfies Record<string, BridgeProtocol | ((name: string) => BridgeProtocol)>;

/** A stable name for logs, metrics and queue names: `nostr`, `activitypub`, `xmtp`, `custom:<name>`. */
export function bridgeProtocolName(protocol: BridgeProtocol): string {
  switch (protocol.type) {
    case 'nostr':
    case 'activitypub':
    case 'xmtp':
      return protocol.type;
    case 'custom':
      return `custom:${protocol.name}`;
    default: {
      const never: never = protocol;
      throw new TypeError(`unknown bridge protocol ${JSON.stringify(never)}`);
    }
  }
}

/** The bridge that serves an identity of this kind (a custom identity is served by the Custom bridge of its scheme). */
export function bridgeProtocolFor(identity: ForeignIdentity): BridgeProtocol {
  return identity.type === 'custom' ? BridgeProtocols.Custom(identity.scheme) : { type: identity.type };
}

/** True when `identity` is an address on the network `protocol` bridges to. */
export function protocolServes(protocol: BridgeProtocol, identity: ForeignIdentity): boolean {
  return bridgeProtocolName(protocol) === bridgeProtocolName(bridgeProtocolFor(identity));
}

/** The seed's `FederatedSession`. `sessionId` is the relay's 16-byte session id in hex. */
export interface FederatedSession {
  readonly sessionId: string;
  readonly localPeer: string;
  readonly remotePeer: ForeignIdentity;
  readonly bridge: BridgeProtocol;
}

const SESSION_ID_HEX = /^[0-9a-f]{32}$/;

/**
 * Builds a FederatedSession after checking its parts: a valid DID, a 16-byte
 * hex session id, and a bridge that serves the remote identity.
 */
export function federatedSession(parts: {
  sessionId: string;
  localPeer: string;
  remotePeer: ForeignIdentity;
  bridge?: BridgeProtocol;
}): FederatedSession {
  parseDid(parts.localPeer); // throws IdentityError INVALID_DID
  if (!SESSION_ID_HEX.test(parts.sessionId)) {
    throw new BridgeError('BAD_FIELD', 'a federated session id is 32 lowercase hex digits (16 bytes)');
  }
  const bridge = parts.bridge ?? bridgeProtocolFor(parts.remotePeer);
  if (!protocolServes(bridge, parts.remotePeer)) {
    throw new BridgeError(
      'BRIDGE_PROTOCOL_MISMATCH',
      `${parts.remotePeer.uri} is not served by the ${bridgeProtocolName(bridge)} bridge`,
    );
  }
  return Object.freeze({
    sessionId: parts.sessionId,
    localPeer: parts.localPeer,
    remotePeer: parts.remotePeer,
    bridge,
  });
}

/** A message a Libertaria peer hands to a bridge. `id` is the frame id (hex), used as the idempotency key. */
export type BridgeOutboundMessage =
  | {
      readonly type: 'private';
      readonly id: string;
      readonly from: string;
      readonly to: ForeignIdentity;
      readonly text: string;
      readonly sessionId?: string;
    }
  | { readonly type: 'public'; readonly id: string; readonly from: string; readonly text: string };

/** A message a bridge hands back to a Libertaria peer. `id` is the foreign network's own id of it. */
export type BridgeInboundMessage =
  | {
      readonly type: 'private';
      readonly id: string;
      readonly to: string;
      readonly from: ForeignIdentity;
      readonly text: string;
      /** Seconds since the epoch, as the foreign sender stated it. */
      readonly sentAt: number;
    }
  | {
      readonly type: 'mention';
      readonly id: string;
      readonly to: string;
      readonly from: ForeignIdentity;
      readonly text: string;
      readonly sentAt: number;
    };

/** What a send did on the foreign side. */
export interface BridgeSendResult {
  /** The foreign network's id of what was published (for Nostr, the event id seen by the recipient). */
  readonly foreignId: string;
  /** Where it was accepted (relay URLs, inbox URLs). Never empty: a send nothing accepted throws. */
  readonly acceptedBy: readonly string[];
  /** Where it was refused or could not be delivered, with the reason. */
  readonly failed: readonly { readonly target: string; readonly reason: string }[];
}

export interface BridgeHealth {
  readonly protocol: BridgeProtocol;
  /** `ok`: every upstream reachable; `degraded`: some are; `down`: none is, or closed. */
  readonly status: 'ok' | 'degraded' | 'down';
  readonly upstreams: readonly { readonly target: string; readonly state: string; readonly attempts: number }[];
}

/** Receives inbound messages; a rejection means "not delivered": the bridge may offer it again. */
export type BridgeInboundHandler = (message: BridgeInboundMessage) => Promise<void>;

/**
 * The contract of a bridge (the suite in `shared/bridge-kit/src/contract.ts`
 * checks it). Every method that fails throws a BridgeError whose `retryable`
 * tells a queue worker whether to retry.
 */
export interface Bridge {
  readonly protocol: BridgeProtocol;
  /**
   * Makes a Libertaria peer addressable on the foreign network and returns its
   * foreign identity. Idempotent: the same DID always gets the same identity.
   * `name` asks for a human-readable handle where the network has them.
   */
  bridgeIdentity(localPeer: string, options?: { readonly name?: string }): Promise<ForeignIdentity>;
  /** The foreign identity of a bridged peer, or undefined when it is not bridged. */
  foreignIdentityOf(localPeer: string): Promise<ForeignIdentity | undefined>;
  /** Publishes one message. Throws BRIDGE_IDENTITY_UNKNOWN, BRIDGE_PROTOCOL_MISMATCH, BRIDGE_MESSAGE_TOO_LARGE, BRIDGE_UNAVAILABLE, BRIDGE_CLOSED. */
  send(message: BridgeOutboundMessage): Promise<BridgeSendResult>;
  /** Sets where inbound messages go; each is handed over once (duplicates across upstreams are dropped). */
  onInbound(handler: BridgeInboundHandler): void;
  /** Connects upstream and starts receiving. */
  start(): Promise<void>;
  health(): BridgeHealth;
  /** Stops receiving and closes every connection; idempotent. Pending sends fail with BRIDGE_CLOSED. */
  close(): Promise<void>;
}

/** Narrows the foreign identity type a protocol addresses, for bridges that check their input. */
export function expectIdentityType<T extends ForeignIdentityType>(
  protocol: BridgeProtocol,
  identity: ForeignIdentity,
  type: T,
): asserts identity is Extract<ForeignIdentity, { type: T }> {
  if (identity.type !== type) {
    throw new BridgeError(
      'BRIDGE_PROTOCOL_MISMATCH',
      `${identity.uri} is a ${identity.type} identity; the ${bridgeProtocolName(protocol)} bridge cannot reach it`,
    );
  }
}
