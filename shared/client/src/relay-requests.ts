/**
 * The requests RelayClient makes of the relay cluster, one frame answered by
 * one frame (the request table, request-table.ts, matches them): what each
 * sends and how its answer is read. Prekeys (publish, fetch, status),
 * single-use ids (ONCE_CHECK, judged against the cluster's epoch), the
 * membrane (grants, policy, audit) and the bridge registry. The grants
 * presented are kept here: the relay holds them per connection, so the
 * client presents them again on every new one. The public documentation of
 * each is on RelayClient's method of the same name.
 *
 * Browser-safe: no Node-only imports.
 */

import { didMatchesKey, routingHint } from '@libertaria/identity';
import {
  decodePrekeyBundle,
  encodePrekeyBundle,
  type Frame,
  maxBodySize,
  PREKEY_PUBLISH_HEADER_SIZE,
  type PrekeyBundle,
  type PrekeyPublication,
  PrekeyPublishFlags,
  PrekeyStatusFlags,
  type PrekeyStatusFrame,
  RelayError,
  splitPrekeyPublication,
  verifyBundle,
} from '@libertaria/protocol';
import { bytesEqual, toHex } from './bytes.js';
import {
  type AcceptedGrant,
  type AuditPageResult,
  type AuditQueryOptions,
  CLIENT_DEFAULTS,
  type FetchPrekeysOptions,
  type PrekeyStatus,
  type PublishPrekeysOptions,
} from './client-types.js';
import { ClientErrorCode, toError } from './codes.js';
import type { OnceEpochTracker } from './once-epoch.js';
import type { RequestAnswer, RequestAnswerType } from './request-table.js';

/** Writes one request on the current connection and waits for the answer of the type it expects (RelayClient's). */
export type Ask = <K extends RequestAnswerType>(
  operation: string,
  expects: K,
  build: (requestId: Uint8Array) => Frame,
) => Promise<Extract<RequestAnswer, { type: K }>>;

export function prekeyStatusOf(frame: PrekeyStatusFrame): PrekeyStatus {
  const status: PrekeyStatus = {
    published: (frame.flags & PrekeyStatusFlags.PUBLISHED) !== 0,
    oneTimeX25519: frame.oneTimeX25519,
    oneTimeKem: frame.oneTimeKem,
    cap: frame.cap,
    lowWater: frame.lowWater,
  };
  if (frame.flags & PrekeyStatusFlags.X25519_ID) status.lastOneTimeX25519Id = frame.lastOneTimeX25519Id;
  if (frame.flags & PrekeyStatusFlags.KEM_ID) status.lastOneTimeKemId = frame.lastOneTimeKemId;
  return status;
}

export class RelayRequests {
  readonly #ask: Ask;
  readonly #onceEpoch: OnceEpochTracker;
  /** Grant tokens presented, by hex of their bytes; presented again on every new connection. */
  readonly #grants = new Map<string, Uint8Array>();

  constructor(ask: Ask, onceEpoch: OnceEpochTracker) {
    this.#ask = ask;
    this.#onceEpoch = onceEpoch;
  }

  /** The grant tokens to present again on a new connection. */
  grants(): IterableIterator<Uint8Array> {
    return this.#grants.values();
  }

  /** RelayClient.publishPrekeys on a connection whose frames carry at most `maxPayload` bytes. */
  async publishPrekeys(
    maxPayload: number,
    pub: PrekeyPublication,
    options: PublishPrekeysOptions,
  ): Promise<PrekeyStatus> {
    let parts: PrekeyPublication[];
    try {
      parts = splitPrekeyPublication(pub, maxBodySize(maxPayload) - PREKEY_PUBLISH_HEADER_SIZE);
    } catch (error) {
      throw new RelayError(ClientErrorCode.invalidArgument, `publishPrekeys: ${toError(error).message}`);
    }
    let status: PrekeyStatus | undefined;
    for (const [i, publication] of parts.entries()) {
      const flags = i === 0 && options.replaceOneTime === true ? PrekeyPublishFlags.REPLACE_ONE_TIME : 0;
      const answer = await this.#ask('publishPrekeys', 'PREKEY_STATUS', (requestId) => ({
        type: 'PREKEY_PUBLISH',
        requestId,
        flags,
        publication,
      }));
      status = prekeyStatusOf(answer);
    }
    return status!;
  }

  /** RelayClient.fetchPrekeys; `hint` is the one `to` names. */
  async fetchPrekeys(to: string | Uint8Array, hint: Uint8Array, options: FetchPrekeysOptions): Promise<PrekeyBundle> {
    const answer = await this.#ask('fetchPrekeys', 'PREKEY_BUNDLE', (requestId) => ({
      type: 'PREKEY_FETCH',
      requestId,
      hint,
    }));
    // Re-encoded into a buffer of its own: the frame's fields are views into the transport's.
    const bundle = decodePrekeyBundle(encodePrekeyBundle(answer.bundle));
    const belongs =
      typeof to === 'string'
        ? didMatchesKey(to, bundle.identityKey)
        : bytesEqual(routingHint(bundle.identityKey), hint);
    if (!belongs) {
      throw new RelayError('PREKEY_IDENTITY_MISMATCH', `fetchPrekeys: the relay returned another identity's bundle`);
    }
    if (options.verify !== undefined) verifyBundle(bundle, options.verify);
    return bundle;
  }

  async findBridge(network: string): Promise<string> {
    const answer = await this.#ask('findBridge', 'BRIDGE_INFO', (requestId) => ({
      type: 'BRIDGE_QUERY',
      requestId,
      network,
    }));
    return answer.did;
  }

  async consumeOnce(id: Uint8Array, retentionMs: number): Promise<boolean> {
    if (!Number.isFinite(retentionMs) || retentionMs <= 0) {
      throw new RelayError(ClientErrorCode.invalidArgument, 'consumeOnce: retentionMs must be positive');
    }
    const retentionSeconds = Math.ceil(retentionMs / 1000);
    const answer = await this.#ask('consumeOnce', 'ONCE_RESULT', (requestId) => ({
      type: 'ONCE_CHECK',
      requestId,
      retentionSeconds,
      id,
    }));
    // After the cluster lost its memory of our ids, "fresh" is refused for the id's retention.
    return this.#onceEpoch.judge(answer.fresh, answer.epoch, retentionSeconds * 1000);
  }

  async presentGrant(token: Uint8Array): Promise<AcceptedGrant> {
    const copy = Uint8Array.from(token);
    const answer = await this.#ask('presentGrant', 'GRANT_ACCEPTED', (requestId) => ({
      type: 'GRANT_PRESENT',
      requestId,
      token: copy,
    }));
    const key = toHex(copy);
    if (!this.#grants.has(key) && this.#grants.size >= CLIENT_DEFAULTS.maxGrants) {
      this.#grants.delete(this.#grants.keys().next().value!);
    }
    this.#grants.set(key, copy);
    return { tokenId: toHex(answer.tokenId), expiresAt: answer.expiresAt };
  }

  async revokeGrant(token: Uint8Array): Promise<string[]> {
    const copy = Uint8Array.from(token);
    const answer = await this.#ask('revokeGrant', 'GRANT_REVOKED', (requestId) => ({
      type: 'GRANT_REVOKE',
      requestId,
      token: copy,
    }));
    return answer.cids.map((cid) => toHex(cid));
  }

  async setPolicy(policy: string | object | null): Promise<string | null> {
    const text = policy === null ? '' : typeof policy === 'string' ? policy : JSON.stringify(policy);
    const bytes = new TextEncoder().encode(text);
    const answer = await this.#ask('setPolicy', 'POLICY', (requestId) => ({
      type: 'POLICY_PUT',
      requestId,
      policy: bytes,
    }));
    return answer.policy.length === 0 ? null : new TextDecoder().decode(answer.policy);
  }

  async getPolicy(): Promise<string | null> {
    const answer = await this.#ask('getPolicy', 'POLICY', (requestId) => ({
      type: 'POLICY_GET',
      requestId,
    }));
    return answer.policy.length === 0 ? null : new TextDecoder().decode(answer.policy);
  }

  async queryAudit(options: AuditQueryOptions): Promise<AuditPageResult> {
    const answer = await this.#ask('queryAudit', 'AUDIT_RESULT', (requestId) => ({
      type: 'AUDIT_QUERY',
      requestId,
      sinceMs: options.sinceMs ?? 0,
      untilMs: options.untilMs ?? 0,
      limit: options.limit ?? CLIENT_DEFAULTS.auditPageSize,
      after: options.after ?? '',
    }));
    let records: unknown;
    try {
      records = JSON.parse(new TextDecoder().decode(answer.records));
    } catch {
      throw new RelayError(ClientErrorCode.unexpectedFrame, 'queryAudit: AUDIT_RESULT records are not JSON');
    }
    if (!Array.isArray(records)) {
      throw new RelayError(ClientErrorCode.unexpectedFrame, 'queryAudit: AUDIT_RESULT records are not an array');
    }
    return { records: records as Record<string, unknown>[], next: answer.next === '' ? undefined : answer.next };
  }

  async prekeyStatus(): Promise<PrekeyStatus> {
    const answer = await this.#ask('prekeyStatus', 'PREKEY_STATUS', (requestId) => ({
      type: 'PREKEY_STATUS_QUERY',
      requestId,
    }));
    return prekeyStatusOf(answer);
  }
}
