/**
 * The reference for the durable figure (issue 18): what this Redis does with
 * the least work a durable frame needs, measured in the same run on the same
 * server, so the relay's durable rate reads as a fraction of Redis's own.
 *
 * Per frame, three commands: `RPUSH <queue> <frame>` and
 * `PEXPIRE <queue> <ttl>` (stored, with a lifetime), then `LPOP <queue>`
 * (delivered and acknowledged at once: at-most-once, no ordering index, no
 * idempotency, no per-sender limits; everything the relay does more is on
 * top). The frames go round-robin over `keys` queues, like the durable
 * bench's recipients. The whole stream is written at once on one connection
 * (no round trip waits) and timed until Redis's last reply; replies are
 * counted by a scanner that skips bulk payloads unread, so the client is
 * not the limit. (`redis-cli --pipe` is not used: its reply reader slows to
 * about 3k replies/s with 1 KiB bulk replies, quadratic in what it buffers.)
 */
import { connect } from 'node:net';

export interface RedisCeilingOptions {
  /** Frames stored and consumed. */
  readonly frames: number;
  /** Bytes per stored frame (the relay's DELIVER frame size). */
  readonly frameBytes: number;
  /** Queues the frames are spread over. */
  readonly keys: number;
  /** Key prefix (cleaned by the LPOPs: an emptied list is deleted). */
  readonly prefix?: string;
}

export interface RedisCeilingResult {
  /** Frames per second (three commands each). */
  readonly rate: number;
  readonly seconds: number;
  readonly frames: number;
}

function bulk(parts: (string | Buffer)[]): Buffer {
  const chunks: Buffer[] = [Buffer.from(`*${parts.length}\r\n`)];
  for (const p of parts) {
    const b = typeof p === 'string' ? Buffer.from(p) : p;
    chunks.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(chunks);
}

/** The RESP stream: every store, then every pop (as a recipient that reads its backlog). */
function stream(o: RedisCeilingOptions): Buffer {
  const prefix = o.prefix ?? 'bench:ceiling';
  const frame = Buffer.alloc(o.frameBytes, 0x5a);
  const parts: Buffer[] = [];
  for (let i = 0; i < o.frames; i++) {
    const key = `${prefix}:{${i % o.keys}}`;
    parts.push(bulk(['RPUSH', key, frame]), bulk(['PEXPIRE', key, '2592000000']));
  }
  for (let i = 0; i < o.frames; i++) parts.push(bulk(['LPOP', `${prefix}:{${i % o.keys}}`]));
  return Buffer.concat(parts);
}

/**
 * Counts RESP replies of the types these commands answer (integer, simple
 * string, error, bulk string, null), skipping bulk payloads without reading
 * them. Keeps its state across chunks.
 */
class ReplyCounter {
  replies = 0;
  errors = 0;
  /** Bulk payload bytes (and its CRLF) still to skip. */
  #skip = 0;
  /** A header line split across chunks. */
  #line = '';

  feed(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, chunk.length - at);
        this.#skip -= n;
        at += n;
        if (this.#skip === 0) this.replies++;
        continue;
      }
      const end = chunk.indexOf(10, at); // '\n'
      if (end < 0) {
        this.#line += chunk.toString('latin1', at);
        return;
      }
      const line = this.#line + chunk.toString('latin1', at, end - 1);
      this.#line = '';
      at = end + 1;
      const type = line[0];
      if (type === '$') {
        const length = Number(line.slice(1));
        if (length < 0) this.replies++;
        else this.#skip = length + 2;
      } else {
        if (type === '-') this.errors++;
        this.replies++;
      }
    }
  }
}

/** Runs one trial against the Redis at `redisUrl` (redis://host:port). */
export async function redisCeiling(redisUrl: string, o: RedisCeilingOptions): Promise<RedisCeilingResult> {
  const url = new URL(redisUrl);
  const input = stream(o);
  const expected = 3 * o.frames;
  const counter = new ReplyCounter();
  const socket = connect({ host: url.hostname, port: Number(url.port || 6379) });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      counter.feed(chunk);
      if (counter.replies >= expected) resolve();
    });
    socket.once('error', reject);
    socket.once('close', () => reject(new Error(`connection closed after ${counter.replies} of ${expected} replies`)));
    socket.write(input);
  });
  const seconds = (performance.now() - started) / 1000;
  socket.destroy();
  if (counter.errors !== 0) throw new Error(`Redis answered ${counter.errors} errors`);
  return { rate: o.frames / seconds, seconds, frames: o.frames };
}
