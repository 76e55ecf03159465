/**
 * Path updates: after a migration (our link moved to another relay node)
 * RelayClient tells every peer it talked with recently where it is now, in a
 * fast, sealed control envelope (never shown to the application), as the
 * seed's "B acknowledges, updates routing"; and it remembers where peers
 * said they are (peerLocation, the 'peer-moved' event). This module holds
 * the control record's codec, both tables and the announcement itself
 * (sealed with the client's sessions, written on its connection); the
 * inbound side (inbound.ts) opens the peers' notices and hands them here.
 *
 * Browser-safe: no Node-only imports.
 */
import { hintFromDid } from '@libertaria/identity';
import { type Frame, ID_SIZE } from '@libertaria/protocol';
import { randomBytes } from './bytes.js';
import { CLIENT_DEFAULTS, type ClientLogger } from './client-types.js';
import { toError } from './codes.js';
import type { Connection } from './connection.js';
import { CONTROL_ENVELOPE_VERSION, encodeEnvelope } from './envelope.js';
import { ZERO_SESSION } from './sealing.js';

const CONTROL_PATH_UPDATE = 0x01;

export interface PeerLocation {
  /** The relay node the peer said it is on. */
  nodeId: string;
  /** When it moved (its clock, ms since the epoch). */
  at: number;
}

/** Control record: u8 kind (1 = path update) ‖ u64 atMs ‖ u8 len ‖ relay node id (UTF-8). */
export function encodeControlRecord(nodeId: string, atMs: number): Uint8Array {
  const id = new TextEncoder().encode(nodeId).subarray(0, 255);
  const out = new Uint8Array(1 + 8 + 1 + id.length);
  const view = new DataView(out.buffer);
  out[0] = CONTROL_PATH_UPDATE;
  view.setUint32(1, Math.floor(atMs / 0x100000000));
  view.setUint32(5, atMs >>> 0);
  out[9] = id.length;
  out.set(id, 10);
  return out;
}

export function decodeControlRecord(bytes: Uint8Array): PeerLocation | undefined {
  if (bytes.length < 10 || bytes[0] !== CONTROL_PATH_UPDATE || bytes.length !== 10 + bytes[9]!) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const at = view.getUint32(1) * 0x100000000 + view.getUint32(5);
  try {
    return { at, nodeId: new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(10)) };
  } catch {
    return undefined;
  }
}

/** What announcing our moves needs of the client. */
export interface PathUpdatesOptions {
  /** Our DID and hint: the envelope's sender and the SEND's source. */
  did: string;
  hint: Uint8Array;
  /** Seals a record for a peer; undefined when the client does not seal. */
  seal: ((did: string, record: Uint8Array) => Promise<{ body: Uint8Array; sessionId: Uint8Array }>) | undefined;
  /** Writes one frame on a connection (false when it failed, and the connection ended). */
  write: (connection: Connection, frame: Frame) => boolean;
  log: ClientLogger;
}

export class PathUpdates {
  /** DIDs we exchanged messages with → when (bounded): they get our path updates. */
  readonly #recentPeers = new Map<string, number>();
  /** Where peers last said they are (their path updates). */
  readonly #peerLocations = new Map<string, PeerLocation>();
  readonly #options: PathUpdatesOptions;

  constructor(options: PathUpdatesOptions) {
    this.#options = options;
  }

  /** Remembers that we talked with `did` (bounded, most recent last): they hear of our moves. */
  notePeer(did: string): void {
    this.#recentPeers.delete(did);
    this.#recentPeers.set(did, Date.now());
    if (this.#recentPeers.size > CLIENT_DEFAULTS.maxRecentPeers) {
      const oldest = this.#recentPeers.keys().next();
      if (!oldest.done) this.#recentPeers.delete(oldest.value);
    }
  }

  /**
   * The peers we talked with in the last CLIENT_DEFAULTS.recentPeerMs before
   * `now`: the ones a path update goes to. Lazy over the live table, so a
   * peer noted while the updates are being sealed is still reached.
   */
  *recentPeers(now: number): Generator<string> {
    const since = now - CLIENT_DEFAULTS.recentPeerMs;
    for (const [did, at] of this.#recentPeers) {
      if (at < since) continue;
      yield did;
    }
  }

  /** A peer's path update (the opened control record): where it is now, or undefined when unreadable. */
  onRecord(from: string, record: Uint8Array): PeerLocation | undefined {
    const notice = decodeControlRecord(record);
    if (notice === undefined) return undefined;
    this.#peerLocations.set(from, { nodeId: notice.nodeId, at: notice.at });
    return notice;
  }

  /** Where `did` said it is after its last migration (its relay node), if it told us. */
  location(did: string): PeerLocation | undefined {
    return this.#peerLocations.get(did);
  }

  /**
   * After a migration: a fast, sealed path update to every peer we talked
   * with in the last CLIENT_DEFAULTS.recentPeerMs, so they learn where we are now (the
   * relay node), as the seed's "B acknowledges, updates routing". Best effort.
   */
  async announce(connection: Connection): Promise<void> {
    const { did: ourDid, hint, seal, write, log } = this.#options;
    const record = encodeControlRecord(connection.welcome.nodeId, Date.now());
    for (const did of this.recentPeers(Date.now())) {
      if (connection.over) continue;
      try {
        let body: Uint8Array = record;
        let sessionId: Uint8Array = ZERO_SESSION;
        if (seal !== undefined) {
          const sealed = await seal(did, record);
          body = sealed.body;
          sessionId = sealed.sessionId;
        }
        write(connection, {
          type: 'SEND',
          dest: hintFromDid(did),
          source: hint,
          sessionId,
          messageId: randomBytes(ID_SIZE),
          flags: 0,
          ttl: 0,
          position: 0,
          payload: encodeEnvelope(ourDid, body, CONTROL_ENVELOPE_VERSION),
        });
      } catch (error) {
        log.debug?.('path update not sent', { to: did, error: toError(error).message });
      }
    }
  }
}
