import {
  ackPositionOf,
  checkRoutedFrame,
  decodeFrame,
  decodeFrames,
  encodeFrame,
  encodeFrames,
  type Frame,
  FrameStreamDecoder,
  FrameType,
  isErrorCode,
  ProtocolError,
} from '@libertaria/protocol';

/**
 * Fuzzes the frame decoders with random and mutated inputs. Shared by the
 * bounded CI test (shared/protocol/test/fuzz.test.ts) and the long on-demand run
 * (`npm run fuzz`). Properties checked on every input:
 *  - decoding either succeeds or throws ProtocolError with a known code;
 *  - whatever decodes re-encodes to exactly the input bytes (canonical form);
 *  - the stream decoder, fed the same bytes in random chunks, agrees with the
 *    message decoder (same frames, or an error).
 * The PRNG is seeded so a failure is reproducible from the seed it prints.
 */
export interface FuzzStats {
  inputs: number;
  decoded: number;
  /** Inputs typed SEND/DELIVER on which the hot-path check was compared with the decoder. */
  routedChecked: number;
  /** Inputs typed ACK on which the relay's in-place ACK read was compared with the decoder. */
  ackChecked: number;
  errors: Record<string, number>;
  heapGrowthBytes: number;
}

/** xorshift32: small, fast, deterministic. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

const MAX_PAYLOAD = 4096;

const FRAME_TYPES = Object.values(FrameType) as number[];

function corpus(): Uint8Array[] {
  const b = (n: number, v: number) => new Uint8Array(n).fill(v);
  const signed = {
    identityKey: b(32, 29),
    identityDhKey: { id: 0, publicKey: b(32, 30), signature: b(64, 31) },
    signedPrekey: { id: 5, publicKey: b(32, 32), signature: b(64, 33) },
    lastResortKemPrekey: { id: 6, publicKey: b(1184, 34), signature: b(64, 35) },
  };
  const otp = { id: 7, publicKey: b(32, 36) };
  const otk = { id: 9, publicKey: b(1184, 37), signature: b(64, 38) };
  const frames: Frame[] = [
    { type: 'HELLO', minVersion: 1, maxVersion: 3, features: 7 },
    { type: 'HELLO', minVersion: 2, maxVersion: 2, features: 0, clientNonce: b(32, 39) },
    {
      type: 'CHALLENGE',
      version: 2,
      nonce: b(32, 1),
      relayIdentity: 'relay',
      relayKey: b(32, 40),
      signature: b(64, 41),
    },
    { type: 'AUTH', keyType: 1, publicKey: b(32, 2), signature: b(64, 3), did: 'did:libertaria:zabc' },
    { type: 'WELCOME', hint: b(24, 4), connectionId: b(16, 5), maxPayload: 65536, heartbeatMs: 5000, nodeId: 'n' },
    {
      type: 'SEND',
      dest: b(24, 6),
      source: b(24, 7),
      sessionId: b(16, 8),
      messageId: b(16, 9),
      flags: 1,
      ttl: 60,
      position: 0,
      payload: b(40, 10),
    },
    {
      type: 'DELIVER',
      dest: b(24, 6),
      source: b(24, 7),
      sessionId: b(16, 8),
      messageId: b(16, 9),
      flags: 0,
      ttl: 0,
      position: 77,
      payload: b(3, 11),
    },
    { type: 'ACK', messageId: b(16, 12), position: 5 },
    { type: 'NACK', messageId: b(16, 13), code: 0x0302, message: 'full' },
    { type: 'RESUME', lastAcked: 9 },
    { type: 'MIGRATE', previousConnectionId: b(16, 14), proof: b(5, 15) },
    { type: 'PING', data: b(8, 16) },
    { type: 'PONG', data: b(8, 17) },
    { type: 'PEER_PRESENT', hint: b(24, 18) },
    { type: 'PEER_GONE', hint: b(24, 19), messageId: b(16, 20) },
    { type: 'PRESENCE_QUERY', hint: b(24, 21) },
    { type: 'GOAWAY', reconnectAfterMs: 10, reconnectHint: 'ws://x', reason: 'r' },
    { type: 'ERROR', code: 1, flags: 1, message: 'é' },
    {
      type: 'PREKEY_PUBLISH',
      requestId: b(16, 22),
      flags: 1,
      publication: { ...signed, oneTimePrekeys: [otp, { ...otp, id: 8 }], oneTimeKemPrekeys: [otk] },
    },
    { type: 'PREKEY_FETCH', requestId: b(16, 23), hint: b(24, 24) },
    { type: 'PREKEY_BUNDLE', requestId: b(16, 25), bundle: { ...signed, oneTimePrekey: otp, oneTimeKemPrekey: otk } },
    { type: 'PREKEY_BUNDLE', requestId: b(16, 26), bundle: signed },
    {
      type: 'PREKEY_STATUS',
      hint: b(24, 27),
      requestId: b(16, 0),
      flags: 5,
      oneTimeX25519: 3,
      oneTimeKem: 4,
      cap: 100,
      lowWater: 10,
      lastOneTimeX25519Id: 0,
      lastOneTimeKemId: 77,
    },
    { type: 'PREKEY_STATUS_QUERY', requestId: b(16, 28) },
    {
      type: 'ANON_CHALLENGE',
      version: 1,
      nonce: b(32, 29),
      powBits: 16,
      maxSends: 4,
      lifetimeMs: 60000,
      relayIdentity: 'relay',
    },
    { type: 'ANON_AUTH', stamp: b(8, 30) },
    { type: 'ONCE_CHECK', requestId: b(16, 31), retentionSeconds: 360, id: b(16, 32) },
    { type: 'ONCE_RESULT', requestId: b(16, 33), fresh: false, epoch: b(16, 34) },
    { type: 'BRIDGE_QUERY', requestId: b(16, 34), network: 'nostr' },
    { type: 'BRIDGE_INFO', requestId: b(16, 35), did: 'did:key:z6Mk' },
    { type: 'GRANT_PRESENT', requestId: b(16, 34), token: b(200, 35) },
    { type: 'GRANT_ACCEPTED', requestId: b(16, 36), tokenId: b(32, 37), expiresAt: 1_800_000_000_000 },
    { type: 'GRANT_REVOKE', requestId: b(16, 43), token: b(200, 44) },
    { type: 'GRANT_REVOKED', requestId: b(16, 45), cids: [b(32, 46), b(32, 47)] },
    { type: 'POLICY_PUT', requestId: b(16, 38), policy: new TextEncoder().encode('{"version":1,"capabilities":[]}') },
    { type: 'POLICY_GET', requestId: b(16, 39) },
    { type: 'POLICY', requestId: b(16, 40), policy: new Uint8Array(0) },
    { type: 'AUDIT_QUERY', requestId: b(16, 41), sinceMs: 1, untilMs: 2, limit: 50, after: '1700000000000-3' },
    { type: 'AUDIT_RESULT', requestId: b(16, 42), next: '1-0', records: new TextEncoder().encode('[{"a":1}]') },
  ];
  const one = frames.map((f) => encodeFrame(f));
  return [...one, encodeFrames(frames.slice(0, 5)), encodeFrames(frames.slice(5, 17)), encodeFrames(frames.slice(17))];
}

function mutate(seed: Uint8Array, rnd: () => number): Uint8Array {
  let out = Uint8Array.from(seed);
  const ops = 1 + (rnd() % 4);
  for (let i = 0; i < ops; i++) {
    switch (rnd() % 7) {
      case 0: // flip a bit
        if (out.length) out[rnd() % out.length]! ^= 1 << (rnd() % 8);
        break;
      case 1: // set a byte to an interesting value
        if (out.length) out[rnd() % out.length] = [0, 1, 0x7f, 0x80, 0xff][rnd() % 5]!;
        break;
      case 2: // truncate
        out = out.subarray(0, rnd() % (out.length + 1));
        break;
      case 3: {
        // append random bytes
        const extra = new Uint8Array(rnd() % 16);
        for (let k = 0; k < extra.length; k++) extra[k] = rnd() & 0xff;
        const next = new Uint8Array(out.length + extra.length);
        next.set(out);
        next.set(extra, out.length);
        out = next;
        break;
      }
      case 4: // rewrite the body length of the first frame
        if (out.length >= 6)
          new DataView(out.buffer, out.byteOffset).setUint32(
            2,
            [0, 1, 93, out.length - 6, out.length, 0xffffffff, rnd()][rnd() % 7]! >>> 0,
          );
        break;
      case 5: // change the type or version byte
        if (out.length >= 2) out[rnd() % 2] = rnd() % 3 === 0 ? FRAME_TYPES[rnd() % FRAME_TYPES.length]! : rnd() & 0xff;
        break;
      default: {
        // splice two regions
        if (out.length > 2) {
          const a = rnd() % out.length;
          const len = rnd() % (out.length - a);
          out.copyWithin(rnd() % out.length, a, a + len);
        }
      }
    }
  }
  return out;
}

function randomBytes(rnd: () => number): Uint8Array {
  const out = new Uint8Array(rnd() % 200);
  for (let i = 0; i < out.length; i++) out[i] = rnd() & 0xff;
  // Often start with a plausible header so the fuzzer reaches the body decoders.
  if (out.length >= 2 && rnd() % 2 === 0) {
    out[1] = FRAME_TYPES[rnd() % FRAME_TYPES.length]!;
    // The envelope version that frame type carries (1 for the frozen HELLO, CHALLENGE and ERROR).
    out[0] = out[1] === 0x01 || out[1] === 0x02 || out[1] === 0x3f ? 1 : 2;
  }
  return out;
}

function checkOne(input: Uint8Array, rnd: () => number, stats: FuzzStats): void {
  let frames: Frame[] | undefined;
  let code: string | undefined;
  try {
    frames = decodeFrames(input, { maxPayload: MAX_PAYLOAD });
  } catch (err) {
    if (!(err instanceof ProtocolError) || !isErrorCode(err.code)) {
      throw new Error(`untyped exception for input ${Buffer.from(input).toString('hex')}: ${String(err)}`);
    }
    code = err.code;
  }
  // The relay's hot-path check must accept and refuse exactly what the decoder does.
  if (input.length >= 2 && (input[1] === FrameType.SEND || input[1] === FrameType.DELIVER)) {
    let single: string | undefined;
    try {
      decodeFrame(input, { maxPayload: MAX_PAYLOAD });
    } catch (err) {
      single = (err as ProtocolError).code;
    }
    let checked: string | undefined;
    try {
      checkRoutedFrame(input, { maxPayload: MAX_PAYLOAD });
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw new Error(`checkRoutedFrame: untyped exception ${String(err)}`);
      checked = err.code;
    }
    if ((single === undefined) !== (checked === undefined)) {
      throw new Error(
        `checkRoutedFrame (${checked}) disagrees with decodeFrame (${single}) on ${Buffer.from(input).toString('hex')}`,
      );
    }
    stats.routedChecked++;
  }
  // The relay's in-place ACK read: the same error code, or the same position.
  if (input.length >= 2 && input[1] === FrameType.ACK) {
    let single: string | number;
    try {
      const frame = decodeFrame(input, { maxPayload: MAX_PAYLOAD });
      single = frame.type === 'ACK' ? frame.position : 'not an ACK';
    } catch (err) {
      single = (err as ProtocolError).code;
    }
    let read: string | number;
    try {
      read = ackPositionOf(input, { maxPayload: MAX_PAYLOAD });
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw new Error(`ackPositionOf: untyped exception ${String(err)}`);
      read = err.code;
    }
    if (single !== read) {
      throw new Error(
        `ackPositionOf (${read}) disagrees with decodeFrame (${single}) on ${Buffer.from(input).toString('hex')}`,
      );
    }
    stats.ackChecked++;
  }
  if (frames) {
    stats.decoded++;
    const again = encodeFrames(frames);
    if (Buffer.compare(Buffer.from(again), Buffer.from(input)) !== 0) {
      throw new Error(`re-encoding differs for input ${Buffer.from(input).toString('hex')}`);
    }
  } else {
    stats.errors[code!] = (stats.errors[code!] ?? 0) + 1;
  }

  // The stream decoder must agree: the same frames, or an error somewhere (a
  // stream cannot tell "truncated" from "more to come", so a message-level
  // TRUNCATED shows up as leftover bytes).
  const stream = new FrameStreamDecoder({ maxPayload: MAX_PAYLOAD });
  const got: Frame[] = [];
  let streamFailed = false;
  try {
    for (let o = 0; o < input.length; ) {
      const step = 1 + (rnd() % 64);
      got.push(...stream.pushFrames(input.subarray(o, o + step)));
      o += step;
    }
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw new Error(`stream: untyped exception ${String(err)}`);
    streamFailed = true;
  }
  if (frames) {
    if (streamFailed || got.length !== frames.length || stream.pendingBytes !== 0) {
      throw new Error(`stream decoder disagrees on ${Buffer.from(input).toString('hex')}`);
    }
  } else if (!streamFailed && stream.pendingBytes === 0 && input.length > 0) {
    throw new Error(`stream accepted what decodeFrames refused (${code}): ${Buffer.from(input).toString('hex')}`);
  }
}

/** Runs `iterations` inputs (half mutated corpus frames, half random bytes) and returns statistics. */
export function fuzzFrames(iterations: number, seed: number): FuzzStats {
  const rnd = prng(seed);
  const seeds = corpus();
  const stats: FuzzStats = { inputs: 0, decoded: 0, routedChecked: 0, ackChecked: 0, errors: {}, heapGrowthBytes: 0 };
  globalThis.gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  for (let i = 0; i < iterations; i++) {
    const input = i % 2 === 0 ? mutate(seeds[rnd() % seeds.length]!, rnd) : randomBytes(rnd);
    checkOne(input, rnd, stats);
    stats.inputs++;
  }
  globalThis.gc?.();
  stats.heapGrowthBytes = process.memoryUsage().heapUsed - heapBefore;
  return stats;
}
