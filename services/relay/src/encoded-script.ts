/**
 * A Lua script whose EVALSHA request is written into one Buffer in one pass.
 *
 * Why not ioredis' defineCommand: ioredis writes a request argument by
 * argument (a length-prefix string per argument, Buffer.byteLength twice
 * per item, an array of items, then a copy of each into the request). The
 * durable path sends two arguments per frame (the frame and its expiry)
 * and two per ACK, and that work was about 1.7 µs of relay CPU per frame
 * (docs/benchmarks.md, "Issue 18: the requests to Redis written in one
 * pass"). Here the request's size is counted first, then every argument is
 * written straight into one Buffer.
 *
 * Behaves as defineCommand does: the first request on a connection is an
 * EVAL carrying the script (so a fresh or restarted Redis needs no SCRIPT
 * LOAD), later ones EVALSHA; a NOSCRIPT answer (SCRIPT FLUSH, a failover)
 * forgets that the connection has the script and sends the request again
 * as an EVAL. Commands go through ioredis' own `sendCommand`, so its
 * timeouts, offline rules and Redis Cluster routing (by the keys, which
 * come first) apply unchanged.
 */
import { createHash } from 'node:crypto';
import { Command } from 'ioredis';
import type { RedisClient } from './redis-connection.js';

export type ScriptArg = string | number | Buffer;

/** What a reply is decoded to: Buffers ('buffer') or strings (the default). */
export type ReplyEncoding = 'utf8' | 'buffer';

export class EncodedScript {
  readonly sha: string;
  /** Connections (their sockets) that have run the script: EVALSHA may be sent there. */
  private readonly loaded = new WeakSet<object>();

  constructor(
    readonly lua: string,
    readonly numberOfKeys: number,
  ) {
    this.sha = createHash('sha1').update(lua).digest('hex');
  }

  /** Runs the script with `args` (its keys first, then ARGV). */
  call(redis: RedisClient, args: readonly ScriptArg[], replyEncoding: ReplyEncoding = 'utf8'): Promise<unknown> {
    return this.send(redis, args, replyEncoding).catch((err: unknown) => {
      if (!(err instanceof Error) || !err.message.includes('NOSCRIPT')) throw err;
      // The connection lost the script (its socket is forgotten in reject): sent again, as an EVAL.
      return this.send(redis, args, replyEncoding);
    });
  }

  /**
   * Adds a run of the script to `pipeline` (its reply comes with the
   * pipeline's). A NOSCRIPT answer is not retried here: it fails that
   * reply, and the connection gets the script (EVAL) next time.
   */
  addTo(pipeline: { sendCommand(command: Command): unknown }, args: readonly ScriptArg[]): void {
    pipeline.sendCommand(new ScriptCommand(this, args, 'utf8'));
  }

  private send(redis: RedisClient, args: readonly ScriptArg[], replyEncoding: ReplyEncoding): Promise<unknown> {
    const command = new ScriptCommand(this, args, replyEncoding === 'buffer' ? null : 'utf8');
    return redis.sendCommand(command) as Promise<unknown>;
  }

  /** Called by a command as it is written to `socket`: whether to send the script itself (EVAL). */
  mustSendSource(socket: object): boolean {
    if (this.loaded.has(socket)) return false;
    this.loaded.add(socket);
    return true;
  }

  forget(socket: object): void {
    this.loaded.delete(socket);
  }
}

class ScriptCommand extends Command {
  constructor(
    private readonly script: EncodedScript,
    scriptArgs: readonly ScriptArg[],
    replyEncoding: 'utf8' | null,
  ) {
    // No arguments to Command itself: it copies them with Array.prototype.flat(), which took about
    // 37 µs for an enqueue of 256 frames (519 arguments), as much as encoding the whole request.
    super('evalsha', [], { replyEncoding });
    // Command's argument list: sha, numkeys, keys…, argv… (ioredis reads the keys from it to route on a Cluster).
    this.args = [script.sha, script.numberOfKeys, ...scriptArgs];
  }

  /** Arguments stay as given (numbers as numbers): toWritable writes them; Command would make a string of each. */
  override stringifyArguments(): void {}

  override toWritable(socket: object): Buffer {
    const source = this.script.mustSendSource(socket);
    const reject = this.reject;
    this.reject = (err: Error) => {
      // Redis lost the script (SCRIPT FLUSH, a failover): EVAL it on this connection next time.
      if (err.message.includes('NOSCRIPT')) this.script.forget(socket);
      reject.call(this, err);
    };
    return encodeRequest(source ? 'eval' : 'evalsha', source ? this.script.lua : this.script.sha, this.args, 1);
  }
}

/**
 * Sends the plain command `name args…` written by encodeRequest in one pass,
 * as ScriptCommand does for scripts: for a command of many arguments on a
 * hot path (the delivery pump's HMGET of a batch of 256 members), where
 * ioredis' own Command would copy the list with flat() and encode it item by
 * item. `args[0]` is the command's first key (a string). Routing, timeouts
 * and the offline rules are ioredis' own (sendCommand).
 */
export function sendEncoded(
  redis: RedisClient,
  name: string,
  args: readonly ScriptArg[],
  replyEncoding: ReplyEncoding = 'utf8',
): Promise<unknown> {
  return redis.sendCommand(
    new PlainCommand(name, args, replyEncoding === 'buffer' ? null : 'utf8'),
  ) as Promise<unknown>;
}

class PlainCommand extends Command {
  constructor(name: string, args: readonly ScriptArg[], replyEncoding: 'utf8' | null) {
    if (typeof args[0] !== 'string') throw new TypeError(`${name}: the first argument must be a key (a string)`);
    super(name, [], { replyEncoding });
    this.args = args as ScriptArg[];
  }

  override stringifyArguments(): void {}

  override toWritable(): Buffer {
    return encodeRequest(this.name, this.args[0] as string, this.args, 1);
  }
}

/**
 * Writes frames into the hash `key` with one HSETNX each (field: the
 * frame's member, the 40 bytes at its place in `members`), gives `key` an expiry of `expireMs` if it has none (PEXPIRE NX:
 * a hash these writes created must not outlive its frames), and asks Redis
 * for no reply to any of that (CLIENT REPLY OFF … ON): one request, one
 * reply (the ON's OK), however many frames. The durable enqueue's
 * pre-write (DurableStore): the frames reach d by a plain command, not
 * through Lua. Single server only: on a Cluster a redirect would go
 * unanswered. `key` is a string; `members` holds the frames' members one
 * after another (the enqueue script's own argument, made once).
 */
export function sendSilentHsetnx(
  redis: RedisClient,
  key: string,
  frames: readonly Buffer[],
  members: Buffer,
  expireMs: number,
): Promise<unknown> {
  if (members.length !== frames.length * MEMBER_SIZE) throw new RangeError('sendSilentHsetnx: one member per frame');
  return redis.sendCommand(new SilentHsetnx(key, frames, members, expireMs)) as Promise<unknown>;
}

/** A durable frame's member: its source hint, then its messageId. */
const MEMBER_SIZE = 40;
const REPLY_OFF = Buffer.from('*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$3\r\nOFF\r\n');
const REPLY_ON = Buffer.from('*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$2\r\nON\r\n');
const HSETNX_HEAD = Buffer.from('*4\r\n$6\r\nHSETNX\r\n');
const MEMBER_HEAD = Buffer.from(`$${MEMBER_SIZE}\r\n`);

class SilentHsetnx extends Command {
  constructor(
    private readonly key: string,
    private readonly frames: readonly Buffer[],
    private readonly members: Buffer,
    private readonly expireMs: number,
  ) {
    // The name and first argument ioredis sees (its routing, its logs): the writes' own.
    super('hsetnx', [], { replyEncoding: 'utf8' });
    this.args = [key];
  }

  override stringifyArguments(): void {}

  override toWritable(): Buffer {
    const keyLength = Buffer.byteLength(this.key);
    const keyBulk = bulkSize(keyLength);
    const expire = ['PEXPIRE', this.key, String(this.expireMs), 'NX'];
    let size = REPLY_OFF.length + REPLY_ON.length + 1 + 1 + 2;
    for (const part of expire) size += bulkSize(Buffer.byteLength(part));
    for (const frame of this.frames) {
      size += HSETNX_HEAD.length + keyBulk + MEMBER_HEAD.length + MEMBER_SIZE + 2 + bulkSize(frame.length);
    }
    const out = Buffer.allocUnsafe(size);
    out.set(REPLY_OFF, 0);
    let at = REPLY_OFF.length;
    // What every write repeats up to its member: HSETNX, the key, the member's length.
    const head = Buffer.allocUnsafe(HSETNX_HEAD.length + keyBulk + MEMBER_HEAD.length);
    head.set(HSETNX_HEAD, 0);
    head.set(MEMBER_HEAD, writeBulkString(head, HSETNX_HEAD.length, this.key));
    const members = this.members;
    let member = 0;
    for (const frame of this.frames) {
      // Whole arrays by set(), short runs byte by byte: Buffer#copy of a part makes a view each time.
      out.set(head, at);
      at += head.length;
      for (let i = 0; i < MEMBER_SIZE; i++) out[at++] = members[member++]!;
      at = writeCrlf(out, at);
      at = writeHeader(out, at, frame.length);
      out.set(frame, at);
      at = writeCrlf(out, at + frame.length);
    }
    out[at++] = 0x2a; // *
    out[at++] = 0x30 + expire.length;
    at = writeCrlf(out, at);
    for (const part of expire) at = writeBulkString(out, at, part);
    out.set(REPLY_ON, at);
    at += REPLY_ON.length;
    if (at !== size) throw new Error(`SilentHsetnx: wrote ${at} of ${size} bytes`);
    return out;
  }
}

/**
 * The RESP request `name first args[from…]` (an array of bulk strings).
 * Numbers must be safe integers or are written as String(n) would (Redis
 * reads both); strings are written as UTF-8.
 */
export function encodeRequest(name: string, first: string, args: readonly unknown[], from: number): Buffer {
  const count = 2 + args.length - from;
  let size = 1 + digits(count) + 2 + bulkSize(Buffer.byteLength(name)) + bulkSize(Buffer.byteLength(first));
  for (let i = from; i < args.length; i++) size += bulkSize(argLength(args[i]));
  const out = Buffer.allocUnsafe(size);
  out[0] = 0x2a; // *
  let at = writeCrlf(out, writeInt(out, 1, count));
  at = writeBulkString(out, at, name);
  at = writeBulkString(out, at, first);
  // A batch repeats its numbers (every frame of a turn has the same expiry): the last one's digits are reused.
  let lastNumber = Number.NaN;
  let lastStart = 0;
  let lastEnd = 0;
  for (let i = from; i < args.length; i++) {
    const arg = args[i];
    if (arg instanceof Uint8Array) {
      at = writeHeader(out, at, arg.length);
      out.set(arg, at);
      at = writeCrlf(out, at + arg.length);
    } else if (typeof arg === 'number' && Number.isSafeInteger(arg)) {
      if (arg === lastNumber) {
        out.copyWithin(at, lastStart, lastEnd);
        at += lastEnd - lastStart;
      } else {
        lastNumber = arg;
        lastStart = at;
        at = writeCrlf(out, writeInt(out, writeHeader(out, at, intLength(arg)), arg));
        lastEnd = at;
      }
    } else {
      at = writeBulkString(out, at, typeof arg === 'string' ? arg : String(arg));
    }
  }
  if (at !== size) throw new Error(`encodeRequest: wrote ${at} of ${size} bytes`);
  return out;
}

function argLength(arg: unknown): number {
  if (arg instanceof Uint8Array) return arg.length;
  if (typeof arg === 'number' && Number.isSafeInteger(arg)) return intLength(arg);
  return Buffer.byteLength(typeof arg === 'string' ? arg : String(arg));
}

/** `$len\r\n…\r\n` around a value of `length` bytes. */
function bulkSize(length: number): number {
  return 1 + digits(length) + 2 + length + 2;
}

function writeHeader(out: Buffer, at: number, length: number): number {
  out[at++] = 0x24; // $
  return writeCrlf(out, writeInt(out, at, length));
}

function writeCrlf(out: Buffer, at: number): number {
  out[at] = 0x0d;
  out[at + 1] = 0x0a;
  return at + 2;
}

function writeBulkString(out: Buffer, at: number, value: string): number {
  const length = Buffer.byteLength(value);
  at = writeHeader(out, at, length);
  return writeCrlf(out, at + out.write(value, at, length, 'utf8'));
}

/** Decimal digits of a non-negative safe integer. */
function digits(n: number): number {
  let d = 1;
  for (let p = 10; n >= p; p *= 10) d++;
  return d;
}

function intLength(n: number): number {
  return n < 0 ? 1 + digits(-n) : digits(n);
}

/** Writes a safe integer in decimal at `at`; returns the offset after it. */
function writeInt(out: Buffer, at: number, n: number): number {
  if (n < 0) {
    out[at++] = 0x2d; // -
    n = -n;
  }
  const end = at + digits(n);
  let i = end;
  do {
    const q = Math.floor(n / 10);
    out[--i] = 0x30 + (n - q * 10);
    n = q;
  } while (n > 0);
  return end;
}
