/**
 * Fixtures for the session-layer tests: identities with their X25519
 * identity DH keys, published prekeys and the responder's private side.
 */

import {
  acceptPersistentSession,
  type CryptoProvider,
  generateIdentityDhKey,
  generatePrekeyPublication,
  InMemoryResponderPrekeys,
  initiatePersistentSession,
  type LocalIdentity,
  type PrekeySecrets,
  type SessionOptions,
} from '@libertaria/crypto';
import { Ed25519Identity } from '@libertaria/identity';
import type { PrekeyBundle, PrekeyPublication } from '@libertaria/protocol';

export interface Peer {
  signer: Ed25519Identity;
  identity: LocalIdentity;
  did: string;
}

export interface Responder extends Peer {
  publication: PrekeyPublication;
  secrets: PrekeySecrets;
  prekeys: InMemoryResponderPrekeys;
}

export function makePeer(p: CryptoProvider, seed?: Uint8Array): Peer {
  const signer = seed ? Ed25519Identity.fromSeed(seed) : Ed25519Identity.generate();
  return { signer, identity: { signer, identityDh: generateIdentityDhKey(p, signer) }, did: signer.did };
}

export function makeResponder(p: CryptoProvider, oneTime = 4, oneTimeKem = 2, seed?: Uint8Array): Responder {
  const peer = makePeer(p, seed);
  const { publication, secrets } = generatePrekeyPublication(p, peer.identity, {
    signedPrekeyId: 7,
    lastResortKemPrekeyId: 9,
    oneTimePrekeyIds: { first: 100, count: oneTime },
    oneTimeKemPrekeyIds: { first: 200, count: oneTimeKem },
  });
  return { ...peer, publication, secrets, prekeys: InMemoryResponderPrekeys.fromSecrets(p, peer.identity, secrets) };
}

/** What a relay would hand out: the signed keys and, by choice, one one-time key of each kind. */
export function bundleOf(
  pub: PrekeyPublication,
  options: { oneTime?: number; oneTimeKem?: number } = {},
): PrekeyBundle {
  const bundle: PrekeyBundle = {
    identityKey: pub.identityKey,
    identityDhKey: pub.identityDhKey,
    signedPrekey: pub.signedPrekey,
    lastResortKemPrekey: pub.lastResortKemPrekey,
  };
  if (options.oneTime !== undefined) bundle.oneTimePrekey = pub.oneTimePrekeys[options.oneTime]!;
  if (options.oneTimeKem !== undefined) bundle.oneTimeKemPrekey = pub.oneTimeKemPrekeys[options.oneTimeKem]!;
  return bundle;
}

/**
 * A persistent session established by PQXDH between a fresh peer (on `pa`)
 * and a fresh responder (on `pb`) without one-time prekeys: both ends, and
 * the first message's payload as the responder opened it ("hello").
 */
export async function establishSession(pa: CryptoProvider, options: SessionOptions = {}, pb = pa) {
  const alice = makePeer(pa);
  const bob = makeResponder(pb);
  const { session: a, initialMessage } = initiatePersistentSession({
    provider: pa,
    identity: alice.identity,
    peerDid: bob.did,
    bundle: bundleOf(bob.publication, { oneTime: 0, oneTimeKem: 0 }),
    payload: enc('hello'),
    ...options,
  });
  const { session: b, payload } = await acceptPersistentSession({
    provider: pb,
    prekeys: bob.prekeys,
    initialMessage,
    ...options,
  });
  return { alice, bob, a, b, payload };
}

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const dec = (b: Uint8Array): string => new TextDecoder().decode(b);
export const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
export const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));

/** Every single-bit flip of `bytes`, one at a time. */
/**
 * Single-bit flips of `bytes`: every bit, or with `everyBitBelow`, every bit
 * of the first bytes (headers, flags, lengths) and beyond them one bit per
 * byte, rotating through the 8 positions. Long messages (a PQXDH initial
 * message is ~10,000 bits, each flip a full handshake) then cost an eighth:
 * every byte is still hit, and the CPU stays within what a loaded 2-core CI
 * machine finishes in its per-file timeout (the full set took 40 s quiet,
 * 120 s loaded).
 */
export function* bitFlips(
  bytes: Uint8Array,
  options: { everyBitBelow?: number } = {},
): Generator<{ index: number; bit: number; flipped: Uint8Array }> {
  const everyBitBelow = options.everyBitBelow ?? bytes.length;
  for (let index = 0; index < bytes.length; index++) {
    for (let bit = 0; bit < 8; bit++) {
      if (index >= everyBitBelow && bit !== index % 8) continue;
      const flipped = Uint8Array.from(bytes);
      flipped[index]! ^= 1 << bit;
      yield { index, bit, flipped };
    }
  }
}
