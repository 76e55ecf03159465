/**
 * The load generator, run as its own process (forked by run.ts, driven over
 * IPC): one request runs one trial and answers with its figures. All peers
 * are raw-socket WebSocket clients (raw-ws.ts, peer.ts) writing pre-encoded
 * masked frames; each trial connects fresh peers (fresh identities, so fresh
 * durable queues) and closes them at the end.
 *
 * Flow control is closed-loop: a sender keeps at most `window` frames in
 * flight (sent but not yet delivered to its receiver; for durable sends, not
 * yet ACKed by the relay), so the figure is the rate the target sustains,
 * not how fast it can fill buffers and drop. A fast-path frame that never
 * arrives (dropped by the target) is written off after a stall and counted
 * as lost.
 */
import { performance } from 'node:perf_hooks';
import { backoffDelay, DEFAULT_RECONNECT } from '@libertaria/client';
import { Ed25519Identity, routingHint } from '@libertaria/identity';
import {
  AckBatcher,
  AT,
  PAYLOAD_TS,
  readPosition,
  repeat,
  type SendTemplate,
  sendTemplate,
  writeNumbered,
} from './frames.js';
import { BenchPeer } from './peer.js';
import { cpuPercent, cpuSnapshot } from './procs.js';
import { sealedDurable } from './sealed.js';
import { percentile } from './stats.js';

type Pids = Record<string, number>;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Window {
  rate: number;
  seconds: number;
  cpu: Record<string, number>;
}

/** Waits `warmupMs`, then counts `count()` over `durationMs`, with the CPU each process used meanwhile. */
async function measure(warmupMs: number, durationMs: number, pids: Pids, count: () => number): Promise<Window> {
  await sleep(warmupMs);
  const all = { ...pids, generator: process.pid };
  const c0 = count();
  const t0 = performance.now();
  const cpu0 = cpuSnapshot(all);
  await sleep(durationMs);
  const c1 = count();
  const seconds = (performance.now() - t0) / 1000;
  return { rate: (c1 - c0) / seconds, seconds, cpu: cpuPercent(cpu0, cpuSnapshot(all), seconds) };
}

/** Resolves when `done()` holds (checked every 10 ms), or after `timeoutMs` with false. */
async function until(done: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!done()) {
    if (performance.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

function problems(peers: BenchPeer[]): string[] {
  return [...new Set(peers.flatMap((p) => p.problems))].slice(0, 5);
}

function closeAll(peers: BenchPeer[]): void {
  for (const p of peers) p.close();
}

// ---------------------------------------------------------------------------
// Generator capacity: the same writer and reader against a sink that does nothing

interface CapacityArgs {
  sinkUrl: string;
  connections: number;
  messagesPerWrite: number;
  payloadBytes: number;
  warmupMs: number;
  durationMs: number;
  pids: Pids;
}

async function capacitySend(a: CapacityArgs) {
  const peers = await Promise.all(
    Array.from({ length: a.connections }, () => BenchPeer.connectRaw(`${a.sinkUrl}/discard`)),
  );
  const template = sendTemplate({
    dest: new Uint8Array(24),
    source: new Uint8Array(24),
    durable: false,
    payloadBytes: a.payloadBytes,
    framesPerMessage: 1,
  });
  const chunk = repeat(template, a.messagesPerWrite);
  let written = 0;
  let stopped = false;
  const writers = peers.map((peer) => {
    const pump = (): void => {
      // Yield now and then so timers run even if the kernel keeps taking everything.
      for (let i = 0; i < 64 && !stopped; i++) {
        written += a.messagesPerWrite;
        if (!peer.ws.write(chunk)) {
          peer.ws.socket.once('drain', pump);
          return;
        }
      }
      if (!stopped) setImmediate(pump);
    };
    return pump;
  });
  for (const w of writers) w();
  const queued = () => peers.reduce((s, p) => s + p.ws.socket.writableLength, 0) / template.message.length;
  const m = await measure(a.warmupMs, a.durationMs, a.pids, () => written - queued());
  stopped = true;
  for (const p of peers) p.ws.destroy();
  return m;
}

async function capacityReceive(a: CapacityArgs) {
  const peers = await Promise.all(
    Array.from({ length: a.connections }, () => BenchPeer.connectRaw(`${a.sinkUrl}/source`)),
  );
  const m = await measure(a.warmupMs, a.durationMs, a.pids, () => peers.reduce((s, p) => s + p.delivered, 0));
  for (const p of peers) p.ws.destroy();
  return m;
}

// ---------------------------------------------------------------------------
// Fast path throughput

interface FastArgs {
  senderUrl: string;
  receiverUrl: string;
  pairs: number;
  /** Most frames in flight per pair (sent, not yet delivered). */
  window: number;
  framesPerMessage: number;
  messagesPerWrite: number;
  payloadBytes: number;
  warmupMs: number;
  durationMs: number;
  pids: Pids;
}

class FastPair {
  sent = 0;
  writtenOff = 0;
  stalls = 0;
  stopped = false;
  private blocked = false;
  private readonly chunk: Buffer;
  private readonly framesPerChunk: number;
  private lastDelivered = 0;
  private stalledSince = 0;

  constructor(
    readonly sender: BenchPeer,
    readonly receiver: BenchPeer,
    template: SendTemplate,
    messagesPerWrite: number,
    private readonly window: number,
  ) {
    this.chunk = repeat(template, messagesPerWrite);
    this.framesPerChunk = messagesPerWrite * template.framesPerMessage;
    receiver.afterRead = () => this.pump();
  }

  inFlight(): number {
    return this.sent - this.receiver.delivered - this.writtenOff;
  }

  pump(): void {
    if (this.blocked || this.stopped) return;
    while (this.inFlight() + this.framesPerChunk <= this.window) {
      this.sent += this.framesPerChunk;
      if (!this.sender.ws.write(this.chunk)) {
        this.blocked = true;
        this.sender.ws.socket.once('drain', () => {
          this.blocked = false;
          this.pump();
        });
        return;
      }
    }
  }

  /** Called every 100 ms: frames that made no progress for 300 ms are written off as lost. */
  watchdog(now: number): void {
    if (this.stopped) return;
    if (this.receiver.delivered !== this.lastDelivered || this.inFlight() === 0) {
      this.lastDelivered = this.receiver.delivered;
      this.stalledSince = now;
      return;
    }
    if (now - this.stalledSince >= 300) {
      this.writtenOff += this.inFlight();
      this.stalls++;
      this.stalledSince = now;
      this.pump();
    }
  }
}

async function fast(a: FastArgs) {
  const pairs: FastPair[] = [];
  for (let i = 0; i < a.pairs; i++) {
    const receiver = await BenchPeer.connect(a.receiverUrl);
    const sender = await BenchPeer.connect(a.senderUrl);
    const template = sendTemplate({
      dest: receiver.hint,
      source: sender.hint,
      durable: false,
      payloadBytes: a.payloadBytes,
      framesPerMessage: a.framesPerMessage,
      tcp: sender.tcp,
    });
    pairs.push(new FastPair(sender, receiver, template, a.messagesPerWrite, a.window));
  }
  const peers = pairs.flatMap((p) => [p.sender, p.receiver]);
  const watchdog = setInterval(() => {
    const now = performance.now();
    for (const p of pairs) p.watchdog(now);
  }, 100);
  for (const p of pairs) p.pump();
  const m = await measure(a.warmupMs, a.durationMs, a.pids, () => pairs.reduce((s, p) => s + p.receiver.delivered, 0));
  for (const p of pairs) p.stopped = true;
  clearInterval(watchdog);
  const settled = await until(() => pairs.every((p) => p.inFlight() <= 0), 1000);
  const sent = pairs.reduce((s, p) => s + p.sent, 0);
  const delivered = pairs.reduce((s, p) => s + p.receiver.delivered, 0);
  const result = {
    ...m,
    sent,
    delivered,
    lost: sent - delivered,
    stalls: pairs.reduce((s, p) => s + p.stalls, 0),
    settled,
    peerGone: pairs.reduce((s, p) => s + p.sender.peerGone, 0),
    nacked: pairs.reduce((s, p) => s + p.sender.nacked, 0),
    problems: problems(peers),
    closed: peers.filter((p) => p.ws.closed).map((p) => p.ws.closeReason),
  };
  closeAll(peers);
  return result;
}

// ---------------------------------------------------------------------------
// Durable path: window of SENDs not yet ACKed by the relay; the recipient is
// online, has sent RESUME, and ACKs every DELIVER (one ACK batch per read).

interface DurableArgs {
  senderUrl: string;
  receiverUrl: string;
  pairs: number;
  window: number;
  payloadBytes: number;
  warmupMs: number;
  durationMs: number;
  pids: Pids;
}

/** Checks that a recipient sees positions 1, 2, 3… exactly once and in order, and ACKs each. */
class DurableReceiver {
  lastPosition = 0;
  gaps = 0;
  duplicates = 0;
  readonly acks: AckBatcher;
  constructor(readonly peer: BenchPeer) {
    this.acks = new AckBatcher((msg) => peer.ws.write(msg), peer.tcp);
    peer.onDeliver = (buf, at) => {
      const position = readPosition(buf, at);
      if (position === this.lastPosition + 1) this.lastPosition = position;
      else if (position <= this.lastPosition) this.duplicates++;
      else {
        this.gaps++;
        this.lastPosition = position;
      }
      this.acks.add(buf, at);
    };
  }
}

/** Writes durable SENDs with unique message ids while the window allows. */
class DurableSender {
  sent = 0;
  stopped = false;
  private blocked = false;
  private readonly msgLen: number;
  constructor(
    readonly peer: BenchPeer,
    private readonly template: SendTemplate,
    private readonly room: () => number,
  ) {
    this.msgLen = template.message.length;
  }
  pump(): void {
    if (this.blocked || this.stopped) return;
    let room = this.room();
    while (room > 0) {
      const k = Math.min(room, 32);
      const buf = Buffer.allocUnsafe(k * this.msgLen);
      for (let i = 0; i < k; i++) writeNumbered(this.template, buf, i * this.msgLen, ++this.sent, performance.now());
      room -= k;
      if (!this.peer.ws.write(buf)) {
        this.blocked = true;
        this.peer.ws.socket.once('drain', () => {
          this.blocked = false;
          this.pump();
        });
        return;
      }
    }
  }
}

async function durable(a: DurableArgs) {
  const receivers: DurableReceiver[] = [];
  const senders: DurableSender[] = [];
  for (let i = 0; i < a.pairs; i++) {
    const receiver = new DurableReceiver(await BenchPeer.connect(a.receiverUrl));
    receiver.peer.sendFrame({ type: 'RESUME', lastAcked: 0 });
    const senderPeer = await BenchPeer.connect(a.senderUrl);
    const template = sendTemplate({
      dest: receiver.peer.hint,
      source: senderPeer.hint,
      durable: true,
      payloadBytes: a.payloadBytes,
      framesPerMessage: 1,
      tcp: senderPeer.tcp,
    });
    const sender: DurableSender = new DurableSender(senderPeer, template, () =>
      Math.min(
        a.window - (sender.sent - senderPeer.acked - senderPeer.nacked),
        // Keep the recipient close behind: a steady state, not a growing backlog.
        2 * a.window - (sender.sent - senderPeer.nacked - receiver.peer.delivered),
      ),
    );
    senderPeer.afterRead = () => sender.pump();
    receiver.peer.afterRead = () => {
      receiver.acks.flush();
      sender.pump();
    };
    receivers.push(receiver);
    senders.push(sender);
  }
  await sleep(50); // RESUME processed before the first store
  for (const s of senders) s.pump();
  const delivered = () => receivers.reduce((s, r) => s + r.peer.delivered, 0);
  const acked = () => senders.reduce((s, x) => s + x.peer.acked, 0);
  // measure() reads its counter at the start and at the end of the window; relay ACKs are sampled alongside.
  const ackedAt: number[] = [];
  const m = await measure(a.warmupMs, a.durationMs, a.pids, () => {
    ackedAt.push(acked());
    return delivered();
  });
  for (const s of senders) s.stopped = true;
  const expected = () => senders.reduce((s, x) => s + x.sent - x.peer.nacked, 0);
  const settled = await until(() => delivered() >= expected() && acked() >= expected(), 15_000);
  await sleep(100); // let the last ACK batches reach the relay
  const peers = [...senders.map((s) => s.peer), ...receivers.map((r) => r.peer)];
  const result = {
    ...m,
    storeAckRate: ((ackedAt[1] ?? 0) - (ackedAt[0] ?? 0)) / m.seconds,
    sent: senders.reduce((s, x) => s + x.sent, 0),
    relayAcked: acked(),
    delivered: delivered(),
    nacked: senders.reduce((s, x) => s + x.peer.nacked, 0),
    gaps: receivers.reduce((s, r) => s + r.gaps, 0),
    duplicates: receivers.reduce((s, r) => s + r.duplicates, 0),
    settled,
    problems: problems(peers),
    recipientHints: receivers.map((r) => r.peer.hint.toString('hex')),
  };
  closeAll(peers);
  return result;
}

// ---------------------------------------------------------------------------
// Backlog drain: queue N frames for an offline recipient, then time RESUME → last DELIVER.

interface DrainArgs {
  url: string;
  frames: number;
  window: number;
  payloadBytes: number;
  pids: Pids;
  timeoutMs: number;
}

async function drain(a: DrainArgs) {
  const recipientIdentity = Ed25519Identity.generate();
  const recipientHint = Buffer.from(routingHint(recipientIdentity.publicKey));
  const senderPeer = await BenchPeer.connect(a.url);
  const template = sendTemplate({
    dest: recipientHint,
    source: senderPeer.hint,
    durable: true,
    payloadBytes: a.payloadBytes,
    framesPerMessage: 1,
    tcp: senderPeer.tcp,
  });
  const sender: DurableSender = new DurableSender(senderPeer, template, () =>
    Math.min(a.frames - sender.sent, a.window - (sender.sent - senderPeer.acked - senderPeer.nacked)),
  );
  senderPeer.afterRead = () => sender.pump();
  const all = { ...a.pids, generator: process.pid };

  // Fill (recipient offline): durable store throughput with nobody to deliver to.
  const f0 = performance.now();
  const fillCpu0 = cpuSnapshot(all);
  sender.pump();
  const filled = await until(() => senderPeer.acked + senderPeer.nacked >= a.frames, a.timeoutMs);
  const fillSeconds = (performance.now() - f0) / 1000;
  const fillCpu = cpuPercent(fillCpu0, cpuSnapshot(all), fillSeconds);
  if (!filled || senderPeer.nacked > 0) {
    senderPeer.close();
    throw new Error(
      `fill incomplete: ${senderPeer.acked} ACKed, ${senderPeer.nacked} NACKed of ${a.frames} (${problems([senderPeer]).join('; ')})`,
    );
  }

  // Drain: the recipient connects, authenticates, RESUMEs from 0 and ACKs each DELIVER.
  const receiver = new DurableReceiver(await BenchPeer.connect(a.url, recipientIdentity));
  let firstAt = 0;
  let lastAt = 0;
  const onDeliver = receiver.peer.onDeliver!;
  receiver.peer.onDeliver = (buf, at) => {
    onDeliver(buf, at);
    if (firstAt === 0) firstAt = performance.now();
    if (receiver.peer.delivered === a.frames) lastAt = performance.now();
  };
  receiver.peer.afterRead = () => receiver.acks.flush();
  const cpu0 = cpuSnapshot(all);
  const t0 = performance.now();
  receiver.peer.sendFrame({ type: 'RESUME', lastAcked: 0 });
  const drained = await until(() => lastAt > 0, a.timeoutMs);
  const drainSeconds = ((drained ? lastAt : performance.now()) - t0) / 1000;
  const cpu = cpuPercent(cpu0, cpuSnapshot(all), drainSeconds);
  await sleep(200); // the last ACK batches reach the relay
  const result = {
    frames: a.frames,
    fillSeconds,
    fillRate: a.frames / fillSeconds,
    fillCpu,
    drained,
    drainSeconds,
    drainRate: receiver.peer.delivered / drainSeconds,
    firstDeliverMs: firstAt > 0 ? firstAt - t0 : Number.NaN,
    delivered: receiver.peer.delivered,
    gaps: receiver.gaps,
    duplicates: receiver.duplicates,
    cpu,
    problems: problems([senderPeer, receiver.peer]),
    recipientHint: recipientHint.toString('hex'),
  };
  closeAll([senderPeer, receiver.peer]);
  return result;
}

// ---------------------------------------------------------------------------
// Latency at a fixed rate, paced by the sender; the send time travels in the payload.

interface LatencyArgs {
  senderUrl: string;
  receiverUrl: string;
  durable: boolean;
  rate: number;
  payloadBytes: number;
  warmupMs: number;
  durationMs: number;
  pids: Pids;
}

async function latency(a: LatencyArgs) {
  const receiver = new DurableReceiver(await BenchPeer.connect(a.receiverUrl));
  if (a.durable) receiver.peer.sendFrame({ type: 'RESUME', lastAcked: 0 });
  const sender = await BenchPeer.connect(a.senderUrl);
  await sleep(50);
  const template = sendTemplate({
    dest: receiver.peer.hint,
    source: sender.hint,
    durable: a.durable,
    payloadBytes: a.payloadBytes,
    framesPerMessage: 1,
    tcp: sender.tcp,
  });
  const total = a.warmupMs + a.durationMs;
  const samples = new Float64Array(Math.ceil((a.rate * total) / 1000) + 1000);
  let n = 0;
  let inWindowSent = 0;
  const start = performance.now();
  const measureFrom = start + a.warmupMs;
  const end = start + total;
  const onDeliver = receiver.peer.onDeliver!;
  receiver.peer.onDeliver = (buf, at) => {
    const sentAt = buf.readDoubleLE(at + AT.PAYLOAD + PAYLOAD_TS);
    if (sentAt >= measureFrom && n < samples.length) samples[n++] = performance.now() - sentAt;
    if (a.durable) onDeliver(buf, at);
  };
  receiver.peer.afterRead = () => receiver.acks.flush();
  let sent = 0;
  const all = { ...a.pids, generator: process.pid };
  let cpu0 = cpuSnapshot(all);
  await new Promise<void>((resolve) => {
    let measuring = false;
    const tick = () => {
      const now = performance.now();
      if (!measuring && now >= measureFrom) {
        measuring = true;
        cpu0 = cpuSnapshot(all);
      }
      const due = Math.floor(((Math.min(now, end) - start) * a.rate) / 1000);
      while (sent < due) {
        const buf = Buffer.allocUnsafe(template.message.length);
        const t = performance.now();
        writeNumbered(template, buf, 0, ++sent, t);
        if (t >= measureFrom) inWindowSent++;
        sender.ws.write(buf);
      }
      if (now >= end) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
  const cpu = cpuPercent(cpu0, cpuSnapshot(all), a.durationMs / 1000);
  // A saturated durable path delivers late rather than never: wait for the backlog (it counts in the figures).
  await until(() => receiver.peer.delivered >= sent, a.durable ? 15_000 : 2000);
  const sorted = samples.slice(0, n).sort();
  const result = {
    samples: n,
    sent: inWindowSent,
    lost: inWindowSent - n,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    p999: percentile(sorted, 99.9),
    max: n > 0 ? sorted[n - 1]! : Number.NaN,
    achievedRate: (sent / (end - start)) * 1000,
    cpu,
    problems: problems([sender, receiver.peer]),
  };
  closeAll([sender, receiver.peer]);
  return result;
}

// ---------------------------------------------------------------------------
// Connections (BENCH_ONLY=connections): many authenticated idle peers held
// open across several requests, and a reconnect storm after a kill -9.

/** Connects `count` peers (full handshake each, at most `concurrency` at once) and appends them to `into`. */
async function openMany(url: string, count: number, concurrency: number, into: BenchPeer[]) {
  let next = 0;
  let failed = 0;
  const errors: string[] = [];
  const worker = async () => {
    while (next < count) {
      next++;
      try {
        into.push(await BenchPeer.connect(url));
      } catch (err) {
        failed++;
        if (errors.length < 5) errors.push(err instanceof Error ? err.message : String(err));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return { failed, errors };
}

/** Idle peers held between idleOpen and idleClose. */
const idlePeers: BenchPeer[] = [];

interface OpenArgs {
  url: string;
  count: number;
  concurrency: number;
  pids: Pids;
}

/** Opens `count` more idle peers (HELLO → WELCOME, then silent but for answering WebSocket pings). */
async function idleOpen(a: OpenArgs) {
  const all = { ...a.pids, generator: process.pid };
  const cpu0 = cpuSnapshot(all);
  const t0 = performance.now();
  const before = idlePeers.length;
  const { failed, errors } = await openMany(a.url, a.count, a.concurrency, idlePeers);
  const seconds = (performance.now() - t0) / 1000;
  return {
    opened: idlePeers.length - before,
    failed,
    errors,
    seconds,
    handshakesPerSecond: (idlePeers.length - before) / seconds,
    cpu: cpuPercent(cpu0, cpuSnapshot(all), seconds),
    held: idlePeers.length,
    generatorRssBytes: process.memoryUsage.rss(),
  };
}

/** How many idle peers are still open, and why the others closed. */
async function idleStatus() {
  const closed = idlePeers.filter((p) => p.ws.closed);
  return {
    held: idlePeers.length - closed.length,
    closed: closed.length,
    closeReasons: [...new Set(closed.map((p) => p.ws.closeReason))].slice(0, 5),
    problems: problems(idlePeers),
  };
}

async function idleClose() {
  const n = idlePeers.length;
  closeAll(idlePeers);
  idlePeers.length = 0;
  return { closed: n };
}

/**
 * Reconnect storm. stormConnect connects `count` peers to the node about to
 * be killed; when a peer's connection drops it waits what the client SDK
 * waits after losing a session (backoffDelay(0), 200-300 ms with the default
 * jitter), connects to the survivor with the same identity, authenticates
 * and sends RESUME {0}, as RelayClient does; a failed attempt is retried on
 * the SDK's schedule. stormWait resolves when every peer is back (or on timeout).
 */
interface StormEntry {
  identity: Ed25519Identity;
  closedAt: number;
  reconnectedAt: number;
  attempts: number;
}
const storm = {
  entries: [] as StormEntry[],
  survivorUrl: '',
  back: [] as BenchPeer[],
  errors: [] as string[],
};

function reconnect(entry: StormEntry, attempt: number): void {
  setTimeout(
    () => {
      entry.attempts++;
      BenchPeer.connect(storm.survivorUrl, entry.identity).then(
        (peer) => {
          entry.reconnectedAt = Date.now();
          peer.sendFrame({ type: 'RESUME', lastAcked: 0 });
          storm.back.push(peer);
        },
        (err: unknown) => {
          if (storm.errors.length < 5) storm.errors.push(err instanceof Error ? err.message : String(err));
          reconnect(entry, attempt + 1);
        },
      );
    },
    backoffDelay(attempt, DEFAULT_RECONNECT),
  );
}

async function stormConnect(a: OpenArgs & { survivorUrl: string }) {
  const t0 = performance.now();
  const peers: BenchPeer[] = [];
  const { failed, errors } = await openMany(a.url, a.count, a.concurrency, peers);
  storm.entries = [];
  storm.back = [];
  storm.errors = [];
  storm.survivorUrl = a.survivorUrl;
  for (const peer of peers) {
    const entry: StormEntry = { identity: peer.identity, closedAt: 0, reconnectedAt: 0, attempts: 0 };
    storm.entries.push(entry);
    peer.onClosed = () => {
      entry.closedAt = Date.now();
      reconnect(entry, 0);
    };
  }
  const seconds = (performance.now() - t0) / 1000;
  return { connected: peers.length, failed, errors, seconds, handshakesPerSecond: peers.length / seconds };
}

/** Waits until every storm peer re-authenticated on the survivor; times are from `killedAt` (Date.now() at kill -9). */
async function stormWait(a: { killedAt: number; timeoutMs: number; pids: Pids }) {
  const all = { ...a.pids, generator: process.pid };
  const cpu0 = cpuSnapshot(all);
  const t0 = performance.now();
  const entries = storm.entries;
  const complete = await until(() => entries.every((e) => e.reconnectedAt > 0), a.timeoutMs);
  const seconds = (performance.now() - t0) / 1000;
  const cpu = cpuPercent(cpu0, cpuSnapshot(all), seconds);
  const back = entries.filter((e) => e.reconnectedAt > 0);
  const times = Float64Array.from(back.map((e) => (e.reconnectedAt - a.killedAt) / 1000)).sort();
  const detected = Float64Array.from(
    entries.filter((e) => e.closedAt > 0).map((e) => (e.closedAt - a.killedAt) / 1000),
  ).sort();
  await sleep(200); // RESUMEs reach the survivor before the peers leave
  const result = {
    peers: entries.length,
    reconnected: back.length,
    complete,
    allClosedWithinSeconds: detected.length > 0 ? detected[detected.length - 1]! : Number.NaN,
    firstSeconds: times.length > 0 ? times[0]! : Number.NaN,
    p50Seconds: percentile(times, 50),
    p99Seconds: percentile(times, 99),
    lastSeconds: times.length > 0 ? times[times.length - 1]! : Number.NaN,
    /** Peers back on the survivor per 0.5 s after the kill. */
    timeline: Array.from({ length: times.length > 0 ? Math.floor(times[times.length - 1]! / 0.5) + 1 : 0 }, (_, i) =>
      times.reduce((n, t) => n + (t >= i * 0.5 && t < (i + 1) * 0.5 ? 1 : 0), 0),
    ),
    attempts: entries.reduce((s, e) => s + e.attempts, 0),
    retried: entries.filter((e) => e.attempts > 1).length,
    errors: storm.errors,
    cpu,
    problems: problems(storm.back),
  };
  closeAll(storm.back);
  storm.entries = [];
  storm.back = [];
  return result;
}

// ---------------------------------------------------------------------------

const ops: Record<string, (args: never) => Promise<unknown>> = {
  capacitySend,
  capacityReceive,
  fast,
  durable,
  drain,
  latency,
  idleOpen,
  idleStatus,
  idleClose,
  stormConnect,
  stormWait,
  sealedDurable,
};

process.on('message', (m: { id: number; op: string; args: unknown }) => {
  const op = ops[m.op];
  if (!op) {
    process.send?.({ id: m.id, ok: false, error: `unknown op ${m.op}` });
    return;
  }
  op(m.args as never).then(
    (result) => process.send?.({ id: m.id, ok: true, result }),
    (err: unknown) =>
      process.send?.({ id: m.id, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
  );
});
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
