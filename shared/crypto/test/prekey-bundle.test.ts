import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Ed25519Identity, verifyEd25519 } from '@libertaria/identity';
import {
  decodePrekeyBundle,
  decodePrekeyPublication,
  encodePrekeyBundle,
  encodePrekeyPublication,
  isErrorCode,
  LibertariaError,
  MAX_BUNDLE_SIZE,
  MAX_ONE_TIME_PREKEYS_PER_PUBLICATION,
  MIN_BUNDLE_SIZE,
  MIN_PUBLICATION_SIZE,
  type PrekeyBundle,
  PrekeyKind,
  type PrekeyPublication,
  ProtocolError,
  prekeyPublicationSize,
  prekeySignatureMessage,
  type SignedKemKey,
  splitPrekeyPublication,
  verifyBundle,
  verifyPublication,
} from '@libertaria/protocol';
import { prng } from '../../../test-support/fuzz-frames.js';
import { makePublication, signedKemKey } from '../../../test-support/prekeys.js';

const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const fill = (n: number, v: number): Uint8Array => new Uint8Array(n).fill(v);

function expectCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof LibertariaError, `expected a LibertariaError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

/** Deep comparison with byte fields by content. */
function norm(v: unknown): unknown {
  if (v instanceof Uint8Array) return toHex(v);
  if (Array.isArray(v)) return v.map(norm);
  if (typeof v === 'object' && v !== null) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, norm(x)]));
  return v;
}

const alice = Ed25519Identity.generate();
const mallory = Ed25519Identity.generate();

function bundleOf(pub: PrekeyPublication, x = 0, k = 0): PrekeyBundle {
  const bundle: PrekeyBundle = {
    identityKey: pub.identityKey,
    identityDhKey: pub.identityDhKey,
    signedPrekey: pub.signedPrekey,
    lastResortKemPrekey: pub.lastResortKemPrekey,
  };
  if (pub.oneTimePrekeys[x]) bundle.oneTimePrekey = pub.oneTimePrekeys[x];
  if (pub.oneTimeKemPrekeys[k]) bundle.oneTimeKemPrekey = pub.oneTimeKemPrekeys[k];
  return bundle;
}

describe('prekey signature transcript', () => {
  it('is "libertaria-prekey/1" ‖ 0x00 ‖ kind ‖ u32 id ‖ key, exactly', () => {
    const message = prekeySignatureMessage(PrekeyKind.SIGNED_X25519, 7, fill(32, 0x22));
    assert.equal(
      toHex(message),
      `${Buffer.from('libertaria-prekey/1').toString('hex')}00 02 00000007 ${'22'.repeat(32)}`.replace(/\s/g, ''),
    );
    assert.equal(prekeySignatureMessage(PrekeyKind.ONE_TIME_KEM, 0xffffffff, fill(1184, 1)).length, 19 + 6 + 1184);
  });
  it('refuses an unknown kind, an id outside u32, a key of the wrong size, an identity DH id other than 0', () => {
    expectCode(() => prekeySignatureMessage(5 as never, 1, fill(32, 0)), 'BAD_FIELD');
    expectCode(() => prekeySignatureMessage(PrekeyKind.SIGNED_X25519, -1, fill(32, 0)), 'BAD_FIELD');
    expectCode(() => prekeySignatureMessage(PrekeyKind.SIGNED_X25519, 2 ** 32, fill(32, 0)), 'BAD_FIELD');
    expectCode(() => prekeySignatureMessage(PrekeyKind.LAST_RESORT_KEM, 1, fill(32, 0)), 'BAD_FIELD');
    expectCode(() => prekeySignatureMessage(PrekeyKind.IDENTITY_DH, 1, fill(32, 0)), 'BAD_FIELD');
  });
});

describe('prekey codecs', () => {
  const pub = makePublication(alice, { oneTimeX25519: 3, oneTimeKem: 2, firstId: 40 });

  it('round-trip publications and bundles, with sizes as documented', () => {
    for (const p of [pub, makePublication(alice)]) {
      const bytes = encodePrekeyPublication(p);
      assert.equal(bytes.length, prekeyPublicationSize(p.oneTimePrekeys.length, p.oneTimeKemPrekeys.length));
      assert.deepEqual(norm(decodePrekeyPublication(bytes)), norm(p));
    }
    assert.equal(encodePrekeyPublication(makePublication(alice)).length, MIN_PUBLICATION_SIZE);
    for (const [x, k, size] of [
      [0, 0, MAX_BUNDLE_SIZE],
      [0, 9, MIN_BUNDLE_SIZE + 36],
      [9, 1, MIN_BUNDLE_SIZE + 1252],
      [9, 9, MIN_BUNDLE_SIZE],
    ] as const) {
      const b = bundleOf(pub, x, k);
      const bytes = encodePrekeyBundle(b);
      assert.equal(bytes.length, size);
      assert.deepEqual(norm(decodePrekeyBundle(bytes)), norm(b));
    }
  });
  it('decode to views into the input', () => {
    const bytes = encodePrekeyPublication(pub);
    assert.equal(decodePrekeyPublication(bytes).oneTimeKemPrekeys[1]!.publicKey.buffer, bytes.buffer);
  });
  it('refuse a wrong version, a nonzero identity DH id, undefined flags and leftover bytes', () => {
    const bytes = encodePrekeyPublication(pub);
    const v2 = Uint8Array.from(bytes);
    v2[0] = 2;
    expectCode(() => decodePrekeyPublication(v2), 'BAD_FIELD');
    const dhId = Uint8Array.from(bytes);
    dhId[1 + 32 + 3] = 1; // identityDhKey.id low byte
    expectCode(() => decodePrekeyPublication(dhId), 'BAD_FIELD');
    expectCode(() => decodePrekeyPublication(Uint8Array.from([...bytes, 0])), 'TRAILING_BYTES');
    const bundle = encodePrekeyBundle(bundleOf(pub));
    const flags = Uint8Array.from(bundle);
    flags[1] = 0x04;
    expectCode(() => decodePrekeyBundle(flags), 'BAD_FIELD');
    // A flag promising a one-time key that is not there.
    const promise = encodePrekeyBundle(bundleOf(pub, 9, 9));
    promise[1] = 0x02;
    expectCode(() => decodePrekeyBundle(promise), 'BAD_LENGTH');
  });
  it('refuse every truncation with BAD_LENGTH', () => {
    const bytes = encodePrekeyPublication(makePublication(alice, { oneTimeX25519: 1, oneTimeKem: 1 }));
    for (let n = 0; n < bytes.length; n++)
      expectCode(() => decodePrekeyPublication(bytes.subarray(0, n)), 'BAD_LENGTH');
    const bundle = encodePrekeyBundle(bundleOf(pub));
    for (let n = 0; n < bundle.length; n++) expectCode(() => decodePrekeyBundle(bundle.subarray(0, n)), 'BAD_LENGTH');
  });
  it('check counts against the bound and the bytes left before building anything', () => {
    const head = encodePrekeyPublication(makePublication(alice)).subarray(0, MIN_PUBLICATION_SIZE - 4);
    const withCount = (count: number, tail = new Uint8Array(0)) =>
      Uint8Array.from([...head, count >> 8, count & 0xff, ...tail]);
    expectCode(() => decodePrekeyPublication(withCount(0xffff)), 'BAD_FIELD');
    expectCode(() => decodePrekeyPublication(withCount(MAX_ONE_TIME_PREKEYS_PER_PUBLICATION + 1)), 'BAD_FIELD');
    // 1,000 announced, two present: refused from the count, not after reading two.
    expectCode(() => decodePrekeyPublication(withCount(1000, new Uint8Array(72))), 'BAD_LENGTH');
  });
  it('refuse to encode what would not decode', () => {
    expectCode(() => encodePrekeyPublication({ ...pub, identityKey: fill(31, 1) }), 'BAD_FIELD');
    expectCode(() => encodePrekeyPublication({ ...pub, identityDhKey: { ...pub.identityDhKey, id: 3 } }), 'BAD_FIELD');
    expectCode(
      () => encodePrekeyPublication({ ...pub, oneTimeKemPrekeys: [{ ...pub.oneTimeKemPrekeys[0]!, id: -1 }] }),
      'BAD_FIELD',
    );
    const many = Array.from({ length: 1001 }, (_, i) => ({ id: i, publicKey: fill(32, 1) }));
    expectCode(() => encodePrekeyPublication({ ...pub, oneTimePrekeys: many }), 'BAD_FIELD');
    expectCode(
      () => encodePrekeyBundle({ ...bundleOf(pub), oneTimePrekey: { id: 1, publicKey: fill(33, 0) } }),
      'BAD_FIELD',
    );
  });
});

describe('splitting a publication into frames', () => {
  it('keeps every part under the limit, repeats the signed keys and keeps every one-time key, in order', () => {
    const pub = makePublication(alice, { oneTimeX25519: 100, oneTimeKem: 100 });
    const limit = 93 + 65536 - 17;
    const parts = splitPrekeyPublication(pub, limit);
    assert.equal(parts.length, 3);
    for (const part of parts) {
      assert.ok(encodePrekeyPublication(part).length <= limit);
      assert.equal(toHex(part.lastResortKemPrekey.publicKey), toHex(pub.lastResortKemPrekey.publicKey));
      verifyPublication(part, alice.publicKey, verifyEd25519);
    }
    assert.deepEqual(
      parts.flatMap((p) => p.oneTimePrekeys.map((k) => k.id)),
      pub.oneTimePrekeys.map((k) => k.id),
    );
    assert.deepEqual(
      parts.flatMap((p) => p.oneTimeKemPrekeys.map((k) => k.id)),
      pub.oneTimeKemPrekeys.map((k) => k.id),
    );
    // At the 4,096-byte floor a part still holds the signed keys and two KEM keys.
    const kemOnly = makePublication(alice, { oneTimeKem: 5 });
    assert.deepEqual(
      splitPrekeyPublication(kemOnly, 4096 - 17).map((p) => p.oneTimeKemPrekeys.length),
      [2, 2, 1],
    );
    assert.equal(splitPrekeyPublication(makePublication(alice, { oneTimeKem: 2 }), limit).length, 1);
    expectCode(() => splitPrekeyPublication(pub, MIN_PUBLICATION_SIZE + 1000), 'BAD_FIELD');
  });
});

describe('prekey signatures', () => {
  const pub = makePublication(alice, { oneTimeX25519: 2, oneTimeKem: 2 });
  const flipped = (sig: Uint8Array): Uint8Array => {
    const out = Uint8Array.from(sig);
    out[10]! ^= 1;
    return out;
  };

  it('verify a genuine publication and bundle', () => {
    verifyPublication(pub, alice.publicKey, verifyEd25519);
    verifyBundle(bundleOf(pub), verifyEd25519, alice.publicKey);
    verifyBundle(bundleOf(pub, 5, 5), verifyEd25519);
  });
  it('refuse a publication for another identity', () => {
    expectCode(() => verifyPublication(pub, mallory.publicKey, verifyEd25519), 'PREKEY_IDENTITY_MISMATCH');
    expectCode(() => verifyBundle(bundleOf(pub), verifyEd25519, mallory.publicKey), 'PREKEY_IDENTITY_MISMATCH');
  });
  it('refuse any forged signature, naming the key', () => {
    for (const field of ['identityDhKey', 'signedPrekey', 'lastResortKemPrekey'] as const) {
      const forged = { ...pub, [field]: { ...pub[field], signature: flipped(pub[field].signature) } };
      assert.throws(
        () => verifyPublication(forged, alice.publicKey, verifyEd25519),
        (err: LibertariaError) => err.code === 'PREKEY_BAD_SIGNATURE' && err.message.startsWith(field),
      );
    }
    const kem = pub.oneTimeKemPrekeys.map((k, i) => (i === 1 ? { ...k, signature: flipped(k.signature) } : k));
    expectCode(
      () => verifyPublication({ ...pub, oneTimeKemPrekeys: kem }, alice.publicKey, verifyEd25519),
      'PREKEY_BAD_SIGNATURE',
    );
    // A re-signed key under another identity, with alice's identityKey claimed.
    const stranger = { ...pub, signedPrekey: makePublication(mallory).signedPrekey };
    expectCode(() => verifyPublication(stranger, alice.publicKey, verifyEd25519), 'PREKEY_BAD_SIGNATURE');
  });
  it('refuse signatures moved between keys, kinds or ids', () => {
    // The signed prekey's signature on the identity DH key (both X25519): the kind differs.
    const moved = { ...pub, identityDhKey: { ...pub.signedPrekey, id: 0 } };
    expectCode(() => verifyPublication(moved, alice.publicKey, verifyEd25519), 'PREKEY_BAD_SIGNATURE');
    // The last-resort KEM key offered as a one-time KEM key (kind 3 signature, kind 4 slot).
    const asOneTime = { ...pub, oneTimeKemPrekeys: [pub.lastResortKemPrekey] };
    expectCode(() => verifyPublication(asOneTime, alice.publicKey, verifyEd25519), 'PREKEY_BAD_SIGNATURE');
    // A one-time KEM key under another id.
    const renumbered = { ...pub, oneTimeKemPrekeys: [{ ...pub.oneTimeKemPrekeys[0]!, id: 999 }] };
    expectCode(() => verifyPublication(renumbered, alice.publicKey, verifyEd25519), 'PREKEY_BAD_SIGNATURE');
    // Two signatures swapped between one-time KEM keys.
    const [a, b] = pub.oneTimeKemPrekeys as [SignedKemKey, SignedKemKey];
    const swapped = {
      ...pub,
      oneTimeKemPrekeys: [
        { ...a, signature: b.signature },
        { ...b, signature: a.signature },
      ],
    };
    expectCode(() => verifyPublication(swapped, alice.publicKey, verifyEd25519), 'PREKEY_BAD_SIGNATURE');
    // A bundle whose one-time KEM key comes from another identity's publication.
    const foreign = { ...bundleOf(pub), oneTimeKemPrekey: signedKemKey(mallory, 1) };
    expectCode(() => verifyBundle(foreign, verifyEd25519), 'PREKEY_BAD_SIGNATURE');
  });
  it('treat a verifier that throws as a failed check', () => {
    const throwing = () => {
      throw new Error('boom');
    };
    expectCode(() => verifyPublication(pub, alice.publicKey, throwing), 'PREKEY_BAD_SIGNATURE');
  });
});

describe('prekey decoders under fuzzing', () => {
  it('survive 12,000 mutated and random inputs with typed errors and canonical re-encoding', () => {
    const rnd = prng(Number(process.env.FUZZ_SEED ?? 0x5eed));
    const pub = encodePrekeyPublication(makePublication(alice, { oneTimeX25519: 2, oneTimeKem: 1 }));
    const small = encodePrekeyPublication(makePublication(alice));
    const seeds = [pub, small];
    const bundles = [
      encodePrekeyBundle(bundleOf(decodePrekeyPublication(pub))),
      encodePrekeyBundle(bundleOf(decodePrekeyPublication(pub), 0, 9)),
      encodePrekeyBundle(bundleOf(decodePrekeyPublication(pub), 9, 9)),
    ];
    const stats = { decoded: 0, errors: {} as Record<string, number> };
    const mutate = (seed: Uint8Array): Uint8Array => {
      let out = Uint8Array.from(seed);
      for (let ops = 1 + (rnd() % 3); ops > 0; ops--) {
        const at = rnd() % out.length;
        switch (rnd() % 5) {
          case 0:
            out[at]! ^= 1 << (rnd() % 8);
            break;
          case 1: // counts, flags, version and ids live in the first bytes and after the signed part
            out[[0, 1, 2, 36, 1485, 1486, 1487, 1488][rnd() % 8]! % out.length] = [0, 1, 2, 3, 0xff][rnd() % 5]!;
            break;
          case 2:
            out = out.subarray(0, rnd() % (out.length + 1));
            break;
          case 3:
            out = Uint8Array.from([...out.subarray(0, at), ...new Uint8Array(rnd() % 40), ...out.subarray(at)]);
            break;
          default:
            out = out.subarray(rnd() % 40);
        }
        if (out.length === 0) break;
      }
      return out;
    };
    const check = (input: Uint8Array, decode: (b: Uint8Array) => unknown, encode: (v: never) => Uint8Array) => {
      let value: unknown;
      try {
        value = decode(input);
      } catch (err) {
        if (!(err instanceof ProtocolError) || !isErrorCode(err.code)) {
          throw new Error(`untyped exception ${String(err)} for ${toHex(input)}`);
        }
        stats.errors[err.code] = (stats.errors[err.code] ?? 0) + 1;
        return;
      }
      stats.decoded++;
      assert.equal(toHex(encode(value as never)), toHex(input), 're-encoding differs');
    };
    for (let i = 0; i < 12_000; i++) {
      const kind = i % 4;
      if (kind === 0) check(mutate(seeds[rnd() % 2]!), decodePrekeyPublication, encodePrekeyPublication);
      else if (kind === 1) check(mutate(bundles[rnd() % 3]!), decodePrekeyBundle, encodePrekeyBundle);
      else {
        const random = new Uint8Array(rnd() % 3000);
        for (let j = 0; j < random.length; j++) random[j] = rnd() & 0xff;
        if (random.length > 1) random[0] = 1;
        if (kind === 2) check(random, decodePrekeyPublication, encodePrekeyPublication);
        else check(random, decodePrekeyBundle, encodePrekeyBundle);
      }
    }
    assert.ok(stats.decoded > 500, `only ${stats.decoded} inputs decoded`);
    for (const code of ['BAD_LENGTH', 'BAD_FIELD', 'TRAILING_BYTES']) {
      assert.ok((stats.errors[code] ?? 0) > 0, `no input produced ${code}`);
    }
  });
});
