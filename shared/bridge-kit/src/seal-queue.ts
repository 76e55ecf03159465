/**
 * The job data of a scaled-out bridge's `seal-<network>` queue
 * (docs/bridges.md#running-several-processes): a foreign message waiting for
 * the leader to seal it to its Libertaria recipient. It holds the message's
 * text, so it is sealed at rest: AES-256-GCM under a key derived from the
 * bridge's identity seed (every process of the bridge has the same identity
 * file, nothing else does), with the queue name and job id as associated data
 * (a payload moved to another job does not open). Node-only.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import type { Ed25519Identity } from '@libertaria/identity';
import { LibertariaError } from '@libertaria/protocol';
import { parseForeignIdentity } from './foreign-identity.js';
import type { BridgeInboundMessage } from './types.js';

export interface SealJobData {
  /** base64 of nonce ‖ ciphertext ‖ tag. */
  readonly sealed: string;
}

const NONCE = 12;
const TAG = 16;

export function sealQueueName(network: string): string {
  return `seal-${network}`;
}

/** The job-data key: HKDF-SHA-256 of the identity seed, bound to the network. */
export function sealQueueKey(identity: Ed25519Identity, network: string): Buffer {
  return bridgeStateKey(identity, 'libertaria seal-queue v1', network);
}

/** A 32-byte key for state a bridge keeps in Redis, from its identity seed (every process of the bridge has it). */
export function bridgeStateKey(identity: Ed25519Identity, purpose: string, network: string): Buffer {
  const seed = identity.exportSeed();
  try {
    return Buffer.from(hkdfSync('sha256', seed, purpose, network, 32));
  } finally {
    seed.fill(0);
  }
}

function aad(queue: string, jobId: string): Buffer {
  return Buffer.from(`${queue}\n${jobId}`, 'utf8');
}

export function sealJobData(key: Buffer, queue: string, jobId: string, message: BridgeInboundMessage): SealJobData {
  const plain = Buffer.from(
    JSON.stringify({
      type: message.type,
      id: message.id,
      to: message.to,
      from: message.from.uri,
      text: message.text,
      sentAt: message.sentAt,
    }),
    'utf8',
  );
  const nonce = randomBytes(NONCE);
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG });
  cipher.setAAD(aad(queue, jobId));
  const body = Buffer.concat([cipher.update(plain), cipher.final()]);
  plain.fill(0);
  return { sealed: Buffer.concat([nonce, body, cipher.getAuthTag()]).toString('base64') };
}

/** Opens a seal job's data; anything that does not open or parse is FEDERATED_ENVELOPE_INVALID (a final error). */
export function openSealJobData(key: Buffer, queue: string, jobId: string, data: unknown): BridgeInboundMessage {
  const bad = (why: string, cause?: unknown) =>
    new LibertariaError('FEDERATED_ENVELOPE_INVALID', `seal job ${jobId}: ${why}`, { cause });
  const sealed = (data as Partial<SealJobData> | undefined)?.sealed;
  if (typeof sealed !== 'string') throw bad('no sealed data');
  const raw = Buffer.from(sealed, 'base64');
  if (raw.length < NONCE + TAG) throw bad('sealed data too short');
  let plain: Buffer;
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, NONCE), { authTagLength: TAG });
    decipher.setAAD(aad(queue, jobId));
    decipher.setAuthTag(raw.subarray(raw.length - TAG));
    plain = Buffer.concat([decipher.update(raw.subarray(NONCE, raw.length - TAG)), decipher.final()]);
  } catch (err) {
    throw bad('does not open under this bridge identity', err);
  }
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(plain.toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw bad('not JSON', err);
  } finally {
    plain.fill(0);
  }
  if (
    (m.type !== 'private' && m.type !== 'mention') ||
    typeof m.id !== 'string' ||
    typeof m.to !== 'string' ||
    typeof m.from !== 'string' ||
    typeof m.text !== 'string' ||
    typeof m.sentAt !== 'number'
  ) {
    throw bad('not an inbound message');
  }
  return { type: m.type, id: m.id, to: m.to, from: parseForeignIdentity(m.from), text: m.text, sentAt: m.sentAt };
}
