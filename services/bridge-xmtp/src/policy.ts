/**
 * Consent for unknown XMTP senders.
 *
 * XMTP keeps a consent state per conversation: a DM the bridged peer started
 * or wrote in is `allowed`, one they (or an operator) blocked is `denied`, and
 * a DM a stranger opened is `unknown`. For `unknown` the bridge asks the
 * owner's membrane policy on `federated://xmtp` (action `message`): allowed,
 * the conversation becomes `allowed` and the message is delivered; refused,
 * the message is dropped (counted) and the conversation stays `unknown`, so a
 * later policy change applies to later messages.
 *
 * `SenderPolicy` is the signature of bridge-kit's `ForeignSenderPolicy`
 * (`@libertaria/bridge-kit/worker`, being written by the coordinator);
 * `FixedSenderPolicy` stands in until it lands on main (service.ts picks one).
 */
import type { ForeignIdentity } from '@libertaria/bridge-kit';

export type SenderAction = 'message' | 'follow';

export interface SenderDecision {
  readonly allowed: boolean;
  readonly reason: string;
}

export interface SenderPolicy {
  decide(owner: string, sender: ForeignIdentity, action: SenderAction): Promise<SenderDecision>;
}

/** One answer for every unknown sender: `refuse` (the default) or `accept`. */
export class FixedSenderPolicy implements SenderPolicy {
  constructor(private readonly answer: 'refuse' | 'accept') {}
  async decide(): Promise<SenderDecision> {
    return this.answer === 'accept'
      ? { allowed: true, reason: 'BRIDGE_XMTP_UNKNOWN_SENDERS=accept' }
      : { allowed: false, reason: 'BRIDGE_XMTP_UNKNOWN_SENDERS=refuse' };
  }
}
