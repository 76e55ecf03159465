/**
 * EncodedScript (the durable store's script requests written in one pass):
 * the bytes it writes are the bytes ioredis would write for the same
 * arguments, and against a real Redis it behaves as defineCommand does
 * (EVAL first on a connection, EVALSHA after, NOSCRIPT recovered); and
 * sendEncoded, the plain commands (the pump's HMGET) written the same way.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Command, Redis } from 'ioredis';
import { type RedisHandle, startRedis } from '../../../test-support/redis.js';
import { EncodedScript, encodeRequest, type ScriptArg, sendEncoded, sendSilentHsetnx } from '../src/encoded-script.js';

/** What ioredis writes for `evalsha args…` (its own encoder: the reference). */
function ioredisBytes(args: readonly ScriptArg[]): Buffer {
  const command = new Command('evalsha', [...args], { replyEncoding: 'utf8' });
  command.promise.catch(() => {});
  const out = command.toWritable({});
  return Buffer.isBuffer(out) ? out : Buffer.from(out);
}

function randomArg(): ScriptArg {
  switch (randomInt(9)) {
    case 0:
      return randomBytes(randomInt(0, 3000));
    case 1:
      return Buffer.alloc(0);
    case 2:
      return randomInt(0, 1000);
    case 3:
      return -randomInt(1, 2 ** 40);
    case 4:
      return Date.now() + randomInt(0, 10 ** 9);
    case 5:
      return [0, 9, 10, 99, 100, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER][randomInt(7)]!;
    case 6:
      return [1.5, -0.25, 1e21, 2 ** 60, Number.NaN][randomInt(5)]!;
    case 7:
      return `lr:q:{${randomBytes(24).toString('hex')}}:z`;
    default:
      return ['', 'ü', 'ключ', '🔑', 'a\r\nb'][randomInt(5)]!;
  }
}

describe('encodeRequest', () => {
  it('writes the bytes ioredis writes, for 2,000 random argument lists', () => {
    for (let n = 0; n < 2000; n++) {
      const args: ScriptArg[] = [randomBytes(20).toString('hex'), randomInt(0, 8)];
      const count = randomInt(0, 40);
      for (let i = 0; i < count; i++) {
        const arg = randomArg();
        args.push(arg);
        // Runs of one number, as a batch of frames with one expiry sends them.
        if (typeof arg === 'number' && randomInt(2) === 0) args.push(arg, arg);
      }
      const ours = encodeRequest('evalsha', args[0] as string, args, 1);
      assert.deepEqual(ours, ioredisBytes(args), `case ${n}`);
    }
  });

  it('writes an HMGET as ioredis does', () => {
    const args: ScriptArg[] = [`lr:q:{${randomBytes(24).toString('hex')}}:d`];
    for (let i = 0; i < 300; i++) args.push(randomBytes(40));
    const command = new Command('hmget', [...args], { replyEncoding: null });
    command.promise.catch(() => {});
    const theirs = command.toWritable({});
    assert.deepEqual(
      encodeRequest('hmget', args[0] as string, args, 1),
      Buffer.isBuffer(theirs) ? theirs : Buffer.from(theirs),
    );
  });

  it('writes Uint8Array views at their offset, not their whole buffer', () => {
    const backing = randomBytes(64);
    const view = new Uint8Array(backing.buffer, backing.byteOffset + 10, 20);
    const out = encodeRequest('evalsha', 'x', ['x', 1, view], 1);
    assert.ok(out.includes(Buffer.concat([Buffer.from('$20\r\n'), backing.subarray(10, 30), Buffer.from('\r\n')])));
  });
});

describe('EncodedScript and sendEncoded against Redis', () => {
  let server: RedisHandle;
  let redis: Redis;
  before(async () => {
    server = await startRedis();
    redis = new Redis(server.url, { enableAutoPipelining: false, lazyConnect: true });
    await redis.connect();
  });
  after(async () => {
    redis.disconnect();
    await server.stop();
  });

  async function calls(): Promise<{ eval: number; evalsha: number }> {
    const info = await redis.info('commandstats');
    const count = (name: string) => Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(info)?.[1] ?? 0);
    return { eval: count('eval'), evalsha: count('evalsha') };
  }

  const echo = new EncodedScript(
    "redis.call('SET', KEYS[1], ARGV[1]) return {redis.call('GET', KEYS[1]), tonumber(ARGV[2]), #ARGV}",
    1,
  );

  it('sends EVAL once per connection, then EVALSHA; replies as strings or Buffers', async () => {
    await redis.script('FLUSH');
    await redis.config('RESETSTAT');
    const bytes = randomBytes(100);
    assert.deepEqual(await echo.call(redis, ['k1', bytes, 12345678901234]), [bytes.toString(), 12345678901234, 2]);
    assert.deepEqual(await echo.call(redis, ['k1', bytes, -7], 'buffer'), [bytes, -7, 2]);
    assert.deepEqual(await echo.call(redis, ['k1', 'ключ', 0]), ['ключ', 0, 2]);
    assert.deepEqual(await calls(), { eval: 1, evalsha: 2 });
  });

  it('recovers from SCRIPT FLUSH: NOSCRIPT, then EVAL on the same connection', async () => {
    await echo.call(redis, ['k2', 'a', 1]);
    await redis.script('FLUSH');
    await redis.config('RESETSTAT');
    assert.deepEqual(await echo.call(redis, ['k2', 'b', 2]), ['b', 2, 2]);
    assert.deepEqual(await echo.call(redis, ['k2', 'c', 3]), ['c', 3, 2]);
    // evalsha (NOSCRIPT), eval, evalsha.
    const after = await calls();
    assert.equal(after.eval, 1);
    assert.equal(after.evalsha, 2);
  });

  it('sends the script again after a reconnect (a new connection may face a new server)', async () => {
    const other = new Redis(server.url, { enableAutoPipelining: false, lazyConnect: true });
    await other.connect();
    try {
      await echo.call(other, ['k3', 'a', 1]);
      await redis.script('FLUSH');
      await redis.client('KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
      const deadline = Date.now() + 10_000;
      while (other.status !== 'ready' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      await redis.config('RESETSTAT');
      assert.deepEqual(await echo.call(other, ['k3', 'b', 2]), ['b', 2, 2]);
      // Straight to EVAL on the new connection: no EVALSHA that fails first.
      assert.deepEqual(await calls(), { eval: 1, evalsha: 0 });
    } finally {
      other.disconnect();
    }
  });

  it("rejects with the script's own error, and keeps working", async () => {
    const failing = new EncodedScript("return redis.error_reply('NOPE ' .. ARGV[1])", 0);
    await assert.rejects(failing.call(redis, ['why']), /NOPE why/);
    await assert.rejects(failing.call(redis, ['again']), /NOPE again/);
    assert.deepEqual(await echo.call(redis, ['k4', 'ok', 4]), ['ok', 4, 2]);
  });

  it('writes frames by HSETNX without a reply each: never over a field, an expiry only where none', async () => {
    // Frames laid out as routed frames: the member is bytes 30..54 then 70..86 (RoutedAt.SOURCE, MESSAGE_ID).
    const frame = (n: number): Buffer => randomBytes(86 + n);
    const memberOf = (f: Buffer): Buffer => Buffer.concat([f.subarray(30, 54), f.subarray(70, 86)]);
    const frames = [frame(10), frame(0), frame(3000)];
    const taken = frame(5);
    await redis.hset('silent', memberOf(taken), 'kept');
    await redis.config('RESETSTAT');
    // One reply for the whole request: the next commands get their own answers, not these writes'.
    const [written, pong, length] = await Promise.all([
      sendSilentHsetnx(redis, 'silent', [...frames, taken], Buffer.concat([...frames, taken].map(memberOf)), 60_000),
      redis.ping(),
      redis.hlen('silent'),
    ]);
    assert.equal(written, 'OK');
    assert.equal(pong, 'PONG');
    assert.equal(length, 4);
    for (const f of frames) assert.deepEqual(await redis.hgetBuffer('silent', memberOf(f)), f);
    assert.equal(await redis.hget('silent', memberOf(taken)), 'kept');
    // The hash had no expiry: it has the one given; one it has already stays.
    const ttl = await redis.pttl('silent');
    assert.ok(ttl > 50_000 && ttl <= 60_000, `pttl ${ttl}`);
    await redis.pexpire('silent', 5_000);
    const one = frame(1);
    await sendSilentHsetnx(redis, 'silent', [one], memberOf(one), 60_000);
    assert.ok((await redis.pttl('silent')) <= 5_000);
    const info = await redis.info('commandstats');
    assert.match(info, /cmdstat_hsetnx:calls=5,/);
    assert.match(info, /cmdstat_client\|reply:calls=4,/);
  });

  it('reads fields as Buffers or strings, absent ones as null, in the order asked', async () => {
    const fields = Array.from({ length: 256 }, () => randomBytes(40));
    const values = fields.map(() => randomBytes(randomInt(0, 2000)));
    await redis.hset('h', ...fields.flatMap((f, i) => [f, values[i]!]));
    const missing = randomBytes(40);
    await redis.config('RESETSTAT');
    const got = (await sendEncoded(
      redis,
      'hmget',
      ['h', missing, ...fields, missing],
      'buffer',
    )) as Array<Buffer | null>;
    assert.deepEqual(got, [null, ...values, null]);
    assert.deepEqual(await sendEncoded(redis, 'hmget', ['h', fields[0]!]), [values[0]!.toString()]);
    // Plain HMGETs, nothing else.
    const info = await redis.info('commandstats');
    assert.match(info, /cmdstat_hmget:calls=2,/);
  });

  it("rejects with Redis' error (a key of another type), and refuses a first argument that is not a key", async () => {
    await redis.set('plain', 'x');
    await assert.rejects(sendEncoded(redis, 'hmget', ['plain', 'f']), /WRONGTYPE/);
    assert.throws(() => sendEncoded(redis, 'hmget', [Buffer.from('h'), 'f']), /first argument must be a key/);
    assert.deepEqual(await sendEncoded(redis, 'hmget', ['h', 'nothing']), [null]);
  });
});
