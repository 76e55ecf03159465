/**
 * What the federation tests share: a sealed Libertaria peer with its inbox,
 * and a report of what the federation's queues hold, for failure messages
 * (a message that never arrives is then explained instead of a bare timeout).
 */

import type { BridgeFederation } from '@libertaria/bridge-kit/worker';
import { type InboundMessage, InMemorySessionStore, RelayClient, SessionManager } from '@libertaria/client';
import { nodeCrypto } from '@libertaria/crypto/node';
import { Ed25519Identity, verifyEd25519 } from '@libertaria/identity';

/** A Libertaria peer with sealed sessions, as an application runs it: connected, prekeys published. */
export async function peer(relayUrl: string) {
  const identity = Ed25519Identity.generate();
  const sessions = new SessionManager({
    identity,
    store: new InMemorySessionStore(),
    provider: nodeCrypto,
    verify: verifyEd25519,
  });
  const client = new RelayClient({
    relays: [relayUrl],
    identity,
    sessions,
    reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
  });
  await client.connect();
  await sessions.ensurePublished(client);
  const inbox = client.messages()[Symbol.asyncIterator]();
  const next = async (timeoutMs: number): Promise<InboundMessage> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no message within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const r = await Promise.race([inbox.next(), timeout]);
      if (r.done) throw new Error('inbox closed');
      return r.value;
    } finally {
      clearTimeout(timer);
    }
  };
  return { identity, client, next };
}

/** The counts of both federation queues, and the jobs that failed or wait, with attempts and reasons. */
export async function federationReport(federation: BridgeFederation): Promise<string> {
  const parts: string[] = [];
  for (const queue of [federation.outboundQueue, federation.inboundQueue]) {
    const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'completed', 'failed', 'prioritized');
    const jobs = await queue.getJobs(['failed', 'delayed', 'active', 'waiting'], 0, 9);
    const detail = jobs.map((j) => `${j.id}: attempts ${j.attemptsMade}, ${j.failedReason ?? 'no failure'}`);
    parts.push(`${queue.name} ${JSON.stringify(counts)} [${detail.join('; ')}]`);
  }
  return parts.join(' | ');
}
