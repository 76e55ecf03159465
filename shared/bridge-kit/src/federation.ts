/**
 * Federation: what relays, bridges and clients agree on to carry federated
 * sessions through the relay cluster (docs/bridges.md#federation).
 *
 *   peer ──SEND (sealed to the bridge DID)──► relay ──BullMQ outbound-<network>──► bridge ──► foreign network
 *   peer ◄──DELIVER (sealed by the bridge)─── relay ◄──BullMQ inbound─────────────── bridge ◄── foreign network
 *
 * - A bridge is a Libertaria peer with its own DID. It registers in Redis
 *   (hash `<prefix>:bridges`, field = its routing hint in hex) so relay nodes
 *   know that a durable SEND to that hint goes to its outbound queue instead
 *   of a mailbox.
 * - The payload between a peer and a bridge, inside the sealed session, is a
 *   federated message: the bytes `LRF` 0x01 then UTF-8 JSON of a union tagged
 *   by `type` (`send-dm`, `send-note`, `received`).
 * - Queue names contain no ':' (BullMQ refuses it); the key prefix carries a
 *   Redis Cluster hash tag so every key of every federation queue lives in
 *   one slot (BullMQ's Lua scripts touch several keys of a queue at once).
 *
 * Nothing here imports BullMQ or Redis: the relay and the bridges do.
 */

import { parseDid } from '@libertaria/identity';
import { LibertariaError } from '@libertaria/protocol';
import { sha256 } from '@noble/hashes/sha2.js';
import { type ForeignIdentity, MAX_FOREIGN_URI_LENGTH, parseForeignIdentity } from './foreign-identity.js';

/** Default key prefix of the federation queues and registry: `{…}` is a Redis Cluster hash tag. */
export const FEDERATION_PREFIX = '{lr-bridge}';
/** The queue that carries sealed frames from bridges back to the relay nodes for durable delivery. */
export const INBOUND_QUEUE = 'inbound';

/** Largest federated message, in bytes (magic, version and JSON). */
export const MAX_FEDERATED_MESSAGE_BYTES = 49_152;
/** Longest text a federated message carries, in UTF-8 bytes; a bridge may accept less (its own limit). */
export const MAX_FEDERATED_TEXT_BYTES = 32_768;
/** Longest foreign message id kept (Nostr ids are 64 hex digits). */
const MAX_FOREIGN_ID_LENGTH = 128;

const MAGIC = [0x4c, 0x52, 0x46] as const; // "LRF"
const VERSION = 1;

/** What a peer asks a bridge to do, and what a bridge hands a peer. */
export type FederatedMessage =
  /** Peer → bridge: a private message to a foreign identity (canonical URI). `session` is the FederatedSession id. */
  | { readonly type: 'send-dm'; readonly to: string; readonly text: string; readonly session?: string }
  /** Peer → bridge: a public note on the bridge's network. */
  | { readonly type: 'send-note'; readonly text: string }
  /** Bridge → peer: a message from a foreign identity; `id` is the foreign network's id of it. */
  | {
      readonly type: 'received';
      readonly kind: 'dm' | 'mention';
      readonly from: string;
      readonly text: string;
      readonly sentAt: number;
      readonly id: string;
    };

function invalid(why: string): LibertariaError {
  return new LibertariaError('FEDERATED_ENVELOPE_INVALID', `federated message: ${why}`);
}

/** True when the payload starts like a federated message (it may still be malformed). */
export function isFederatedMessage(payload: Uint8Array): boolean {
  return payload.length >= 4 && payload[0] === MAGIC[0] && payload[1] === MAGIC[1] && payload[2] === MAGIC[2];
}

function checkText(text: unknown): string {
  if (typeof text !== 'string') throw invalid('text must be a string');
  if (new TextEncoder().encode(text).length > MAX_FEDERATED_TEXT_BYTES) {
    throw invalid(`text is longer than ${MAX_FEDERATED_TEXT_BYTES} UTF-8 bytes`);
  }
  return text;
}

function checkUri(uri: unknown, field: string): string {
  if (typeof uri !== 'string' || uri.length === 0 || uri.length > MAX_FOREIGN_URI_LENGTH) {
    throw invalid(`${field} must be a foreign identity URI of at most ${MAX_FOREIGN_URI_LENGTH} characters`);
  }
  return uri;
}

const SESSION_HEX = /^[0-9a-f]{32}$/;
const FOREIGN_ID = /^[\x21-\x7E]+$/;

/** Checks the shape of a decoded message; the foreign URI itself is parsed by whoever acts on it. */
function checkMessage(value: unknown): FederatedMessage {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('not a JSON object');
  const m = value as Record<string, unknown>;
  const only = (keys: string[]) => {
    for (const k of Object.keys(m)) if (!keys.includes(k)) throw invalid(`unknown field ${JSON.stringify(k)}`);
  };
  switch (m.type) {
    case 'send-dm': {
      only(['type', 'to', 'text', 'session']);
      const session = m.session;
      if (session !== undefined && (typeof session !== 'string' || !SESSION_HEX.test(session))) {
        throw invalid('session must be 32 lowercase hex digits');
      }
      return {
        type: 'send-dm',
        to: checkUri(m.to, 'to'),
        text: checkText(m.text),
        ...(session === undefined ? {} : { session: session as string }),
      };
    }
    case 'send-note':
      only(['type', 'text']);
      return { type: 'send-note', text: checkText(m.text) };
    case 'received': {
      only(['type', 'kind', 'from', 'text', 'sentAt', 'id']);
      if (m.kind !== 'dm' && m.kind !== 'mention') throw invalid('kind must be dm or mention');
      if (typeof m.sentAt !== 'number' || !Number.isSafeInteger(m.sentAt) || m.sentAt < 0) {
        throw invalid('sentAt must be a non-negative integer (seconds)');
      }
      if (typeof m.id !== 'string' || m.id.length > MAX_FOREIGN_ID_LENGTH || !FOREIGN_ID.test(m.id)) {
        throw invalid(`id must be 1 to ${MAX_FOREIGN_ID_LENGTH} printable ASCII characters`);
      }
      return {
        type: 'received',
        kind: m.kind,
        from: checkUri(m.from, 'from'),
        text: checkText(m.text),
        sentAt: m.sentAt,
        id: m.id,
      };
    }
    default:
      throw invalid(`unknown type ${JSON.stringify(m.type)}`);
  }
}

export function encodeFederatedMessage(message: FederatedMessage): Uint8Array {
  const checked = checkMessage(message);
  const json = new TextEncoder().encode(JSON.stringify(checked));
  const out = new Uint8Array(4 + json.length);
  out.set(MAGIC, 0);
  out[3] = VERSION;
  out.set(json, 4);
  if (out.length > MAX_FEDERATED_MESSAGE_BYTES) throw invalid(`longer than ${MAX_FEDERATED_MESSAGE_BYTES} bytes`);
  return out;
}

/** Decodes strictly; every refusal is FEDERATED_ENVELOPE_INVALID. */
export function decodeFederatedMessage(payload: Uint8Array): FederatedMessage {
  if (payload.length > MAX_FEDERATED_MESSAGE_BYTES) throw invalid(`longer than ${MAX_FEDERATED_MESSAGE_BYTES} bytes`);
  if (!isFederatedMessage(payload)) throw invalid('does not start with the LRF magic');
  if (payload[3] !== VERSION) throw invalid(`version ${payload[3]} is not ${VERSION}`);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload.subarray(4)));
  } catch {
    throw invalid('not UTF-8 JSON');
  }
  return checkMessage(value);
}

// ---------------------------------------------------------------------------
// The registry of bridges and the BullMQ job contract.

/** A bridge's entry in the registry: who it is, which queue reaches it, and how its jobs are retried. */
export interface BridgeRegistration {
  /** `nostr`, `activitypub`, `xmtp` or `custom-<name>` (bridgeProtocolName with ':' replaced). */
  readonly network: string;
  readonly did: string;
  /** The routing hint of `did`, 48 hex digits: the registry's key. */
  readonly hint: string;
  /** Its outbound queue (outboundQueueName(network)). */
  readonly queue: string;
  /** BullMQ attempts per outbound job (1 = no retry). */
  readonly attempts: number;
  /** First retry delay; it doubles per attempt (exponential backoff). */
  readonly backoffMs: number;
  /** Share of each delay drawn at random (BullMQ's backoff jitter, 0..1). */
  readonly jitter: number;
  /** Milliseconds since the epoch. */
  readonly registeredAt: number;
}

export const REGISTRATION_LIMITS = {
  attempts: { min: 1, max: 100 },
  backoffMs: { min: 1, max: 3_600_000 },
} as const;

const NETWORK = /^[a-z][a-z0-9-]{0,40}$/;
const HINT_HEX = /^[0-9a-f]{48}$/;

/** The registry hash: field = hint hex, value = JSON registration. */
export function bridgesKey(prefix: string = FEDERATION_PREFIX): string {
  return `${prefix}:bridges`;
}

/** Pub/sub channel on which a (de)registration is announced, so relay nodes reload at once. */
export function bridgesChannel(prefix: string = FEDERATION_PREFIX): string {
  return `${prefix}:bridges:changed`;
}

/**
 * A set of further queue names (beside the registry's outbound queues and
 * `inbound`) that the relay's dashboard lists: queues a bridge runs for
 * itself, such as the ActivityPub bridge's Fedify queue. Entries are added by
 * the queue's owner (SADD) and never removed (an unused queue shows empty).
 */
export function dashboardQueuesKey(prefix: string = FEDERATION_PREFIX): string {
  return `${prefix}:dashboard-queues`;
}

const SERVICE_QUEUE = /^[a-z][a-z0-9-]{0,62}$/;

/**
 * True for a name a bridge may give a queue of its own (dashboardQueuesKey):
 * lowercase letters, digits and '-', at most 63 characters, and never a name
 * of the federation's own queues (`inbound`, `outbound-*`), whose workers
 * would take its jobs for federation jobs.
 */
export function isServiceQueueName(name: string): boolean {
  return SERVICE_QUEUE.test(name) && name !== INBOUND_QUEUE && !name.startsWith('outbound-');
}

/** `nostr` → `nostr`; `custom:matrix` → `custom-matrix` (queue names and job ids may not hold ':'). */
export function federationNetworkName(protocolName: string): string {
  const name = protocolName.replace(/:/g, '-');
  if (!NETWORK.test(name)) throw invalid(`network name ${JSON.stringify(protocolName)} is not usable`);
  return name;
}

export function outboundQueueName(network: string): string {
  return `outbound-${federationNetworkName(network)}`;
}

function bad(why: string): LibertariaError {
  return new LibertariaError('BAD_FIELD', `bridge registration: ${why}`);
}

export function checkRegistration(value: unknown): BridgeRegistration {
  if (typeof value !== 'object' || value === null) throw bad('not an object');
  const r = value as Record<string, unknown>;
  if (typeof r.network !== 'string' || !NETWORK.test(r.network)) throw bad('network');
  if (typeof r.did !== 'string') throw bad('did');
  parseDid(r.did);
  if (typeof r.hint !== 'string' || !HINT_HEX.test(r.hint)) throw bad('hint');
  if (r.queue !== outboundQueueName(r.network)) throw bad('queue does not match the network');
  const intIn = (v: unknown, lim: { min: number; max: number }) =>
    typeof v === 'number' && Number.isInteger(v) && v >= lim.min && v <= lim.max;
  if (!intIn(r.attempts, REGISTRATION_LIMITS.attempts)) throw bad('attempts');
  if (!intIn(r.backoffMs, REGISTRATION_LIMITS.backoffMs)) throw bad('backoffMs');
  if (typeof r.jitter !== 'number' || !(r.jitter >= 0 && r.jitter <= 1)) throw bad('jitter');
  if (typeof r.registeredAt !== 'number' || !Number.isSafeInteger(r.registeredAt)) throw bad('registeredAt');
  return {
    network: r.network,
    did: r.did,
    hint: r.hint,
    queue: r.queue,
    attempts: r.attempts as number,
    backoffMs: r.backoffMs as number,
    jitter: r.jitter,
    registeredAt: r.registeredAt,
  };
}

/** Data of an outbound job: the whole DELIVER frame, base64 (sealed to the bridge; Redis never sees plain text). */
export interface OutboundJobData {
  readonly frame: string;
}

/** Data of an inbound job: the whole durable DELIVER frame the bridge sealed for the peer, base64. */
export interface InboundJobData {
  readonly frame: string;
}

/**
 * The Libertaria message id of an inbound foreign message: derived from the
 * network and the foreign id, so the same foreign message handed over twice
 * (after a bridge restart, or from two relays) is one durable frame.
 */
export function federatedMessageId(network: string, foreignId: string): Uint8Array {
  return sha256(new TextEncoder().encode(`libertaria-federation-v1\0${network}\0${foreignId}`)).slice(0, 16);
}

/**
 * The inbound job id of a foreign message: idempotent like federatedMessageId.
 * With `recipient` (the bridge worker always gives it) the id is per
 * recipient too: one foreign message may reach several bridged peers (a note
 * mentioning two of them, a group message), and each needs its own job; the
 * same message to the same peer is still one job.
 */
export function inboundJobId(network: string, foreignId: string, recipient?: string): string {
  const id = recipient === undefined ? foreignId : `${foreignId}\0${recipient}`;
  const hex = Array.from(federatedMessageId(network, id), (b) => b.toString(16).padStart(2, '0')).join('');
  return `${federationNetworkName(network)}-${hex}`;
}

/** Parses the target of a send-dm, as the bridge does before sending. */
export function federatedTarget(message: Extract<FederatedMessage, { type: 'send-dm' }>): ForeignIdentity {
  return parseForeignIdentity(message.to);
}
