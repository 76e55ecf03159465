/**
 * RelayClient's frame dispatch: every frame a relay sends goes to the part
 * of the client that handles it (a new frame type a relay may send gets its
 * case here; docs/architecture.md#where-to-add-things).
 *
 *   DELIVER                  the inbound side (inbound.ts)
 *   ACK, NACK                the send window (send-window.ts) and the outbox;
 *                            a NACK carrying a request id, the request table
 *   PING                     answered with PONG
 *   PONG                     an application ping (probes.ts), a keepalive or
 *                            the end of a migration (the connection loop)
 *   PEER_GONE, PEER_PRESENT  a presence query (probes.ts), else 'peer-gone'
 *   PREKEY_*, ONCE_RESULT, GRANT_*, POLICY, AUDIT_RESULT, BRIDGE_INFO
 *                            the request table (request-table.ts), else an
 *                            unsolicited low-water notice: 'prekeys-low'
 *   GOAWAY, fatal ERROR      end the connection (the connection loop decides
 *                            where next); QUEUE_RESET resets the inbound
 *                            positions; a non-fatal ERROR is an 'error' event
 *
 * A frame whose handling throws is reported as an 'error' event, never
 * propagated into the transport.
 *
 * Browser-safe: no Node-only imports.
 */
import {
  type AckFrame,
  ErrorFlags,
  errorCodeFromWire,
  type Frame,
  type NackFrame,
  RelayError,
} from '@libertaria/protocol';
import { bytesEqual, copyBytes, toHex } from './bytes.js';
import type { ClientOutbox } from './client-outbox.js';
import type { ClientLogger, RelayClientEvents } from './client-types.js';
import { ClientErrorCode, toLibertariaError } from './codes.js';
import type { Connection, ConnectionEnd } from './connection.js';
import type { ConnectionLoop } from './connection-loop.js';
import type { TypedEmitter } from './emitter.js';
import { isPermanentRefusal } from './handshake.js';
import type { InboundSide } from './inbound.js';
import type { PingTable, PresenceTable } from './probes.js';
import { prekeyStatusOf } from './relay-requests.js';
import type { RequestAnswer, RequestTable } from './request-table.js';
import type { SendWindow } from './send-window.js';

export interface FrameDispatchParts {
  /** Our hint: an unsolicited PREKEY_STATUS about it is a low-water notice. */
  hint: Uint8Array;
  link: Pick<ConnectionLoop, 'heard' | 'write' | 'end' | 'pong' | 'timing'>;
  inbound: InboundSide;
  window: SendWindow<Connection>;
  outbox: ClientOutbox | undefined;
  pings: PingTable<Connection>;
  presence: PresenceTable<Connection>;
  requests: RequestTable<Connection>;
  events: TypedEmitter<RelayClientEvents>;
  log: ClientLogger;
  emitError: (event: RelayClientEvents['error']) => void;
}

export class FrameDispatch {
  readonly #parts: FrameDispatchParts;

  constructor(parts: FrameDispatchParts) {
    this.#parts = parts;
  }

  /** Frames read from `connection`, in order; none after the connection ended. */
  frames(connection: Connection, frames: Frame[]): void {
    for (const frame of frames) {
      if (connection.over) return;
      this.#parts.link.heard(connection);
      try {
        this.#frame(connection, frame);
      } catch (error) {
        this.#parts.emitError({ error: toLibertariaError(error, 'handling a frame'), url: connection.url.href });
      }
    }
  }

  #frame(connection: Connection, frame: Frame): void {
    const { link, pings, presence, events } = this.#parts;
    switch (frame.type) {
      case 'DELIVER':
        this.#parts.inbound.deliver(connection, frame);
        return;
      case 'ACK':
        this.#ack(connection, frame);
        return;
      case 'NACK':
        this.#nack(connection, frame);
        return;
      case 'PING':
        link.write(connection, { type: 'PONG', data: frame.data });
        return;
      case 'PONG': {
        const key = toHex(frame.data);
        const rtt = pings.answer(key);
        if (rtt !== undefined) link.timing.sample(rtt);
        link.pong(connection, key);
        return;
      }
      case 'PEER_GONE':
        // A zero messageId answers PRESENCE_QUERY; otherwise a fast SEND found nobody.
        if (frame.messageId.every((b) => b === 0) && presence.answer(frame.hint, false)) return;
        events.emit('peer-gone', { hint: copyBytes(frame.hint), messageId: copyBytes(frame.messageId) });
        return;
      case 'PEER_PRESENT':
        presence.answer(frame.hint, true);
        return;
      case 'PREKEY_BUNDLE':
      case 'PREKEY_STATUS':
      case 'ONCE_RESULT':
      case 'GRANT_ACCEPTED':
      case 'GRANT_REVOKED':
      case 'POLICY':
      case 'AUDIT_RESULT':
      case 'BRIDGE_INFO':
        this.#requestAnswer(frame);
        return;
      case 'GOAWAY': {
        const hint = frame.reconnectHint
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== '');
        this.#parts.log.info?.('relay sent GOAWAY', { url: connection.url.href, reason: frame.reason });
        events.emit('goaway', {
          url: connection.url.href,
          reconnectAfterMs: frame.reconnectAfterMs,
          reconnectHint: hint,
          reason: frame.reason,
        });
        link.end(connection, {
          goaway: { ...frame },
          error: new RelayError('DRAINING', `${connection.url.href}: GOAWAY: ${frame.reason || 'no reason given'}`),
        });
        return;
      }
      case 'ERROR': {
        const error = new RelayError(errorCodeFromWire(frame.code), `${connection.url.href}: ${frame.message}`);
        if (error.code === 'QUEUE_RESET') {
          // Sent before the relay pumps the queue again, so every frame after it is numbered anew.
          this.#parts.inbound.queueReset(connection.url.href);
          return;
        }
        if ((frame.flags & ErrorFlags.FATAL) === 0) {
          this.#parts.emitError({ error, url: connection.url.href });
          return;
        }
        const end: ConnectionEnd = { error };
        if (isPermanentRefusal(error)) end.refused = error;
        link.end(connection, end);
        return;
      }
      default:
        this.#parts.emitError({
          error: new RelayError(
            ClientErrorCode.unexpectedFrame,
            `${connection.url.href}: unexpected ${frame.type} from relay`,
          ),
          url: connection.url.href,
        });
    }
  }

  #ack(connection: Connection, frame: AckFrame): void {
    const entry = this.#parts.window.take(frame.messageId, connection);
    // An ACK for nothing pending is a late duplicate (we sent the message again); harmless.
    if (entry === undefined) return;
    this.#parts.outbox?.forget(entry);
    entry.resolve({ messageId: entry.messageId, position: frame.position });
  }

  #nack(connection: Connection, frame: NackFrame): void {
    const code = errorCodeFromWire(frame.code);
    const key = toHex(frame.messageId);
    // A NACK carrying a request id refuses that request.
    if (this.#parts.requests.refuse(frame.messageId, code, frame.message)) return;
    const error = new RelayError(code, `relay refused message ${key}: ${frame.message || code}`);
    const entry = this.#parts.window.take(frame.messageId, connection);
    if (entry !== undefined) {
      this.#parts.outbox?.forget(entry);
      entry.reject(error);
    } else this.#parts.emitError({ error, url: connection.url.href, messageId: copyBytes(frame.messageId) });
  }

  #requestAnswer(frame: RequestAnswer): void {
    if (this.#parts.requests.answer(frame)) return;
    if (
      frame.type === 'PREKEY_STATUS' &&
      frame.requestId.every((b) => b === 0) &&
      bytesEqual(frame.hint, this.#parts.hint)
    ) {
      this.#parts.events.emit('prekeys-low', prekeyStatusOf(frame));
    }
    // Otherwise a late answer to a request that timed out: nothing waits for it.
  }
}
