/**
 * RelayClient as the responder of anonymous requests (docs/client.md#anonymous-requests):
 * a request is opened with our prekeys (sessions.ts acceptAnonymousRequest),
 * refused when stale or seen before (a local in-memory cache, then
 * `anonymousReplayGuard`, by default the relay cluster), answered by the
 * application's handler, and the response sealed to the requester's
 * ephemeral keys and sent back fast to the connection's reply hint. Never
 * yielded by messages(): a request has no sender DID. Without a handler (or
 * without sessions) requests are refused with an ANON_NOT_PERMITTED error
 * event and never answered.
 *
 * The inbound side (inbound.ts) has already taken the frame off the queue
 * (acknowledged or accepted) when it hands it here.
 *
 * Browser-safe: no Node-only imports.
 */
import { AllTicketStores, InMemoryTicketStore, type TicketStore } from '@libertaria/crypto';
import { type DeliverFrame, ID_SIZE, RelayError } from '@libertaria/protocol';
import { ANON_REQUEST_RETENTION_MS, decodeAnonymousPlaintext } from './anonymous.js';
import { copyBytes, randomBytes } from './bytes.js';
import { CLIENT_DEFAULTS, type RelayClientEvents, type RelayClientOptions } from './client-types.js';
import { ClientErrorCode, toLibertariaError } from './codes.js';
import type { ConnectionLoop } from './connection-loop.js';
import { encodeEnvelope } from './envelope.js';
import { type OnceChecker, RelayTicketStore } from './relay-ticket-store.js';
import type { SessionManager } from './sessions.js';

export interface AnonymousResponderOptions {
  /** Our DID (the envelope's sender) and hint (the SEND's source). */
  did: string;
  hint: Uint8Array;
  sessions: SessionManager | undefined;
  handler: RelayClientOptions['onAnonymousRequest'];
  /** RelayClientOptions.anonymousReplayGuard; by default the relay cluster through `once`. */
  replayGuard: TicketStore | undefined;
  /** The client, for the default replay guard's ONCE_CHECKs. */
  once: OnceChecker;
  /** Where the response is written: the connection current when it is ready. */
  link: Pick<ConnectionLoop, 'live' | 'write'>;
  emitError: (event: RelayClientEvents['error']) => void;
}

export class AnonymousResponder {
  readonly #did: string;
  readonly #hint: Uint8Array;
  readonly #sessions: SessionManager | undefined;
  readonly #handler: RelayClientOptions['onAnonymousRequest'];
  readonly #guard: TicketStore;
  readonly #link: Pick<ConnectionLoop, 'live' | 'write'>;
  readonly #emitError: (event: RelayClientEvents['error']) => void;

  constructor(options: AnonymousResponderOptions) {
    this.#did = options.did;
    this.#hint = options.hint;
    this.#sessions = options.sessions;
    this.#handler = options.handler;
    this.#link = options.link;
    this.#emitError = options.emitError;
    // A local memory first: the relay's ONCE_CHECK alone could lie "fresh" and replay a request at us.
    this.#guard = new AllTicketStores(
      new InMemoryTicketStore({
        retentionMs: ANON_REQUEST_RETENTION_MS,
        maxEntries: CLIENT_DEFAULTS.anonymousReplayEntries,
      }),
      options.replayGuard ??
        new RelayTicketStore(options.once, { retentionMs: ANON_REQUEST_RETENTION_MS, label: 'anon-request' }),
    );
  }

  /** An anonymous request (`frame`, its first payload byte ANONYMOUS_REQUEST_KIND) arrived from `url`. */
  answer(url: string, frame: DeliverFrame, durable: boolean, messageId: Uint8Array): void {
    const sessions = this.#sessions;
    const handler = this.#handler;
    if (sessions === undefined || handler === undefined || durable) {
      this.#emitError({
        error: new RelayError(
          'ANON_NOT_PERMITTED',
          durable
            ? 'a durable anonymous request was refused (anonymous requests are fast only)'
            : 'an anonymous request arrived but this client has no onAnonymousRequest handler (or no sessions)',
        ),
        url,
        messageId,
      });
      return;
    }
    // Copies: the frame is a view into the transport's buffer.
    const replyTo = copyBytes(frame.source);
    const sessionId = copyBytes(frame.sessionId);
    const request = frame.payload.slice(1);
    const guard = this.#guard;
    void (async () => {
      try {
        const responder = await sessions.acceptAnonymousRequest(request, guard);
        const payload = decodeAnonymousPlaintext(responder.payload, Date.now());
        const answer = await handler({ payload, sessionId: responder.sessionId });
        const body = encodeEnvelope(this.#did, responder.sealResponse(answer));
        const current = this.#link.live;
        if (current === undefined) {
          throw new RelayError(ClientErrorCode.unreachable, 'the connection ended before the response could be sent');
        }
        this.#link.write(current, {
          type: 'SEND',
          dest: replyTo,
          source: this.#hint,
          sessionId,
          messageId: randomBytes(ID_SIZE),
          flags: 0,
          ttl: 0,
          position: 0,
          payload: body,
        });
      } catch (error) {
        this.#emitError({ error: toLibertariaError(error, 'answering an anonymous request'), url, messageId });
      }
    })();
  }
}
