/**
 * The membrane's requests over the relay protocol (docs/protocol.md 0x6_):
 * GRANT_PRESENT, POLICY_PUT, POLICY_GET and AUDIT_QUERY. Each acts for the
 * connection's authenticated DID only: the policy set or read is the
 * connection's own, the audit records are those whose owner is that DID, a
 * grant must name it as its audience. Answers (or NACKs) carry the request id.
 */

import { hintFromDid } from '@libertaria/identity';
import {
  canonicalDid,
  checkGrantApplies,
  DEFAULT_MEMBRANE_LIMITS,
  decodeGrant,
  MembraneError,
  parsePolicy,
  policyToJson,
} from '@libertaria/membrane';
import { type ErrorCode, type Frame, LibertariaError } from '@libertaria/protocol';
import { TokenBucket } from '../rate-limits.js';
import type { ConnectionGate, Enforcer } from './enforcer.js';

export type MembraneRequestFrame = Extract<
  Frame,
  { type: 'GRANT_PRESENT' | 'GRANT_REVOKE' | 'POLICY_PUT' | 'POLICY_GET' | 'AUDIT_QUERY' }
>;

/** What a request needs from its connection. */
export interface RequestHost {
  readonly membraneDid: string;
  answer(frame: Frame): void;
  nackRequest(requestId: Uint8Array, code: ErrorCode, message: string): void;
  beginAsync(): void;
  endAsync(): void;
  /** A throw that would escape a handler: the host counts it and closes its connection (INTERNAL). */
  internalError(where: string, err: unknown): void;
}

const AUDIT_STREAM_ID = /^\d{1,16}-\d{1,16}$/;
const utf8 = new TextEncoder();

export class MembraneRequests {
  private readonly bucket: TokenBucket;

  constructor(
    private readonly enforcer: Enforcer,
    private readonly gate: ConnectionGate,
    private readonly host: RequestHost,
    perMinute: number,
    /** Largest frame body this relay sends (AUDIT_RESULT pages are cut to fit). */
    private readonly maxBody: number,
  ) {
    this.bucket = new TokenBucket(perMinute / 60, perMinute);
  }

  handle(frame: MembraneRequestFrame): void {
    // Request fields are views into the transport's buffer: copy what outlives this call.
    const requestId = Uint8Array.from(frame.requestId);
    if (!this.bucket.take()) {
      return this.host.nackRequest(requestId, 'RATE_LIMITED', 'membrane request rate exceeded; retry later');
    }
    this.host.beginAsync();
    // run() starts synchronously: its checks before the first await happen in frame order.
    // The refusal's text often quotes the peer's own input (a policy key, a DID): nackRequest cuts it to
    // MAX_TEXT_BYTES UTF-8 bytes. Whatever still throws ends the connection, not the process.
    this.run(frame, requestId)
      .catch((err: unknown) => {
        const code: ErrorCode = err instanceof LibertariaError ? err.code : 'INTERNAL';
        this.host.nackRequest(requestId, code, err instanceof Error ? err.message : String(err));
      })
      .finally(() => this.host.endAsync())
      .catch((err: unknown) => this.host.internalError('membrane_request', err));
  }

  private async run(frame: MembraneRequestFrame, requestId: Uint8Array): Promise<void> {
    const { rm } = this.enforcer;
    const did = this.host.membraneDid;
    switch (frame.type) {
      case 'GRANT_PRESENT': {
        // Verified and held synchronously (this part of run() runs before its first await), so a SEND
        // that follows the GRANT_PRESENT on this connection is already decided by the grant.
        // Through the membrane's cache: a token presented again (every reconnect) is not verified again.
        const verified = rm.membrane.verifiedGrant(frame.token, { audience: did });
        if (verified instanceof MembraneError) throw verified;
        checkGrantApplies(verified, {
          nowMs: this.enforcer.now(),
          maxLifetimeSeconds: rm.membrane.limits.maxGrantLifetimeSeconds,
        });
        const grant = verified;
        const expiresAtMs = Number.isFinite(grant.expiryMs) ? grant.expiryMs : 0;
        const issuerKey = Buffer.from(hintFromDid(grant.root)).toString('latin1');
        const held = { token: Uint8Array.from(frame.token), issuer: grant.root, cid: grant.cid, expiresAtMs };
        if (!this.gate.holdGrant(issuerKey, held)) {
          throw new MembraneError('MEMBRANE_TOO_MANY_GRANTS', 'this connection holds its maximum of grants');
        }
        // Every decision checks revocation again; this check only makes the answer say so at once.
        const revoked = await rm.revocations.firstRevoked(grant.cids);
        if (revoked !== undefined) {
          this.gate.dropGrant(issuerKey, held);
          throw new MembraneError('GRANT_REVOKED', `link ${revoked} is revoked`);
        }
        const tokenId = new Uint8Array(Buffer.from(grant.cid, 'hex'));
        return this.host.answer({ type: 'GRANT_ACCEPTED', requestId, tokenId, expiresAt: expiresAtMs });
      }
      case 'GRANT_REVOKE': {
        // An issuer takes back what it signed: every link of the token whose `iss` is this connection's DID,
        // and so everything delegated under those links. No signature check is needed: a link's cid commits
        // to its payload, so a peer can only ever name payloads that say it issued them.
        const links = decodeGrant(frame.token, rm.membrane.limits);
        const own = links.filter((l) => l.payload.iss === did || l.payload.iss === canonicalDid(did));
        if (own.length === 0) {
          throw new MembraneError('GRANT_WRONG_ISSUER', 'this DID issued no link of the token: only an issuer revokes');
        }
        // A revocation only needs to outlive the link it revokes (exp is required on every link).
        for (const link of own) await rm.revocations.revoke(link.cid, link.payload.exp * 1000);
        const cids = own.map((l) => new Uint8Array(Buffer.from(l.cid, 'hex')));
        return this.host.answer({ type: 'GRANT_REVOKED', requestId, cids });
      }
      case 'POLICY_PUT': {
        if (frame.policy.length === 0) {
          await rm.policies.remove(did);
          return this.host.answer({ type: 'POLICY', requestId, policy: new Uint8Array(0) });
        }
        const parsed = parsePolicy(frame.policy, DEFAULT_MEMBRANE_LIMITS);
        await rm.policies.put(did, parsed);
        return this.host.answer({ type: 'POLICY', requestId, policy: utf8.encode(policyToJson(parsed)) });
      }
      case 'POLICY_GET': {
        const policy = await rm.policies.get(did);
        const bytes = policy === null ? new Uint8Array(0) : utf8.encode(policyToJson(policy));
        return this.host.answer({ type: 'POLICY', requestId, policy: bytes });
      }
      case 'AUDIT_QUERY': {
        if (frame.after !== '' && !AUDIT_STREAM_ID.test(frame.after)) {
          throw new MembraneError('BAD_FIELD', 'the cursor is not an audit stream id', { field: 'after' });
        }
        const page = await rm.audit.query({
          owner: did,
          limit: frame.limit,
          ...(frame.sinceMs > 0 ? { sinceMs: frame.sinceMs } : {}),
          ...(frame.untilMs > 0 ? { untilMs: frame.untilMs } : {}),
          ...(frame.after !== '' ? { after: frame.after } : {}),
        });
        // Cut the page to fit one frame; the cursor then continues after the last record sent.
        let records = page.records;
        let next = page.next ?? '';
        let json = utf8.encode(JSON.stringify(records));
        const room = this.maxBody - 16 - 1 - 64;
        while (json.length > room && records.length > 0) {
          records = records.slice(0, Math.max(0, Math.floor(records.length / 2)));
          next = records.length > 0 ? records[records.length - 1]!.id : frame.after;
          json = utf8.encode(JSON.stringify(records));
        }
        return this.host.answer({ type: 'AUDIT_RESULT', requestId, next, records: json });
      }
    }
  }
}
