/**
 * Process plumbing for the benchmark: starting the bench's own TypeScript
 * processes (baseline, sink, generator), reading per-process CPU time from
 * /proc, a tiny Redis client for INFO/ZCARD, and relay metric scraping.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';

const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ on Linux (getconf CLK_TCK)

/** CPU seconds (user + system) a process has used so far; undefined when it is gone or /proc is missing. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Fields after the command name, which is in parentheses and may contain spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

export type CpuSnapshot = Record<string, number | undefined>;

/** Machine-wide CPU seconds from /proc/stat: user+nice+system (what processes are charged), softirq, steal. */
function machineSeconds(): { busy: number; softirq: number; steal: number } | undefined {
  try {
    const f = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0]!.split(/\s+/).slice(1).map(Number);
    const [user = 0, nice = 0, system = 0, , , , softirq = 0, steal = 0] = f;
    return {
      busy: (user + nice + system) / CLOCK_TICKS_PER_SECOND,
      softirq: softirq / CLOCK_TICKS_PER_SECOND,
      steal: steal / CLOCK_TICKS_PER_SECOND,
    };
  } catch {
    return undefined;
  }
}

/** CPU seconds of each named process, and of the whole machine (keys starting with `~`). */
export function cpuSnapshot(pids: Record<string, number>): CpuSnapshot {
  const out: CpuSnapshot = {};
  for (const [name, pid] of Object.entries(pids)) out[name] = cpuSeconds(pid);
  const m = machineSeconds();
  out['~busy'] = m?.busy;
  out['~softirq'] = m?.softirq;
  out['~steal'] = m?.steal;
  return out;
}

/**
 * Percent of one core each process used between two snapshots taken
 * `seconds` apart, plus three machine-wide entries: `other` (CPU used by
 * processes outside the benchmark: a noisy neighbour inside this machine),
 * `softirq` (kernel network processing, mostly the benchmark's own loopback
 * traffic) and `steal` (time the hypervisor gave to other machines).
 */
export function cpuPercent(before: CpuSnapshot, after: CpuSnapshot, seconds: number): Record<string, number> {
  const out: Record<string, number> = {};
  if (seconds <= 0) return out;
  const delta = (name: string) => {
    const a = before[name];
    const b = after[name];
    return a !== undefined && b !== undefined ? b - a : undefined;
  };
  let ours = 0;
  for (const name of Object.keys(after)) {
    if (name.startsWith('~')) continue;
    const d = delta(name);
    if (d === undefined) continue;
    ours += d;
    out[name] = Math.round((d / seconds) * 100);
  }
  const busy = delta('~busy');
  if (busy !== undefined) out['other'] = Math.max(0, Math.round(((busy - ours) / seconds) * 100));
  for (const k of ['softirq', 'steal']) {
    const d = delta(`~${k}`);
    if (d !== undefined) out[k] = Math.round((d / seconds) * 100);
  }
  return out;
}

export interface ServiceHandle {
  port: number;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** Starts a bench TypeScript file as its own process and waits for its `{"msg":"listening","port":N}` line. */
export async function startService(file: string, env: Record<string, string> = {}): Promise<ServiceHandle> {
  const path = fileURLToPath(new URL(file, import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', path], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${file} did not listen within 15 s:\n${output}`)), 15_000);
    child.stdout?.on('data', (d: Buffer) => {
      output += d.toString();
      const m = /"msg":"listening","port":(\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.stderr?.on('data', (d: Buffer) => {
      output += d.toString();
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${file} exited with ${code}:\n${output}`));
    });
  });
  return { port, process: child, stop: () => stopChild(child) };
}

export async function stopChild(child: ChildProcess, timeoutMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await exited;
  clearTimeout(t);
}

/** The generator process, driven over IPC: request(op, args) → its result. */
export class GeneratorProcess {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly process: ChildProcess;
  private exitError: Error | undefined;

  constructor() {
    const path = fileURLToPath(new URL('./generator.ts', import.meta.url));
    this.process = fork(path, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.process.on('message', (m: { id: number; ok: boolean; result?: unknown; error?: string }) => {
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      if (m.ok) w.resolve(m.result);
      else w.reject(new Error(m.error));
    });
    this.process.on('exit', (code, signal) => {
      this.exitError = new Error(`generator exited (${code ?? signal})`);
      for (const w of this.waiting.values()) w.reject(this.exitError);
      this.waiting.clear();
    });
  }

  get pid(): number {
    return this.process.pid ?? 0;
  }

  request<T>(op: string, args: unknown, timeoutMs = 120_000): Promise<T> {
    if (this.exitError) return Promise.reject(this.exitError);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`generator: ${op} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (v) => {
          clearTimeout(t);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      });
      this.process.send({ id, op, args });
    });
  }

  stop(): Promise<void> {
    return stopChild(this.process);
  }
}

/** One Redis command over a fresh connection (RESP2); returns the raw reply text. Enough for INFO and ZCARD. */
export function redisCommand(url: string, ...args: string[]): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect({ host: u.hostname, port: Number(u.port || 6379) });
    let out = '';
    const t = setTimeout(() => {
      sock.destroy();
      reject(new Error(`redis ${args[0]} timed out`));
    }, 5000);
    sock.on('connect', () =>
      sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`),
    );
    sock.on('data', (d) => {
      out += d.toString();
      // Integer or simple reply: one line. Bulk: "$len\r\n" + len bytes + "\r\n".
      if (out.startsWith(':') || out.startsWith('+') || out.startsWith('-')) {
        if (out.endsWith('\r\n')) done();
      } else if (out.startsWith('$')) {
        const nl = out.indexOf('\r\n');
        const len = Number(out.slice(1, nl));
        if (len < 0 || Buffer.byteLength(out) >= nl + 2 + len + 2) done();
      }
    });
    sock.on('error', (err) => {
      clearTimeout(t);
      reject(err);
    });
    function done() {
      clearTimeout(t);
      sock.destroy();
      if (out.startsWith('-')) reject(new Error(out.trim()));
      else if (out.startsWith('$')) resolve(out.slice(out.indexOf('\r\n') + 2, -2));
      else resolve(out.slice(1).trim());
    }
  });
}

/** Parses `INFO` text into key → value. */
export function parseInfo(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) m.set(line.slice(0, i), line.slice(i + 1));
  }
  return m;
}

/** Calls per Redis command from INFO commandstats (e.g. { evalsha: 1234, publish: 99 }). */
export async function redisCommandCalls(url: string): Promise<Record<string, number>> {
  const info = parseInfo(await redisCommand(url, 'INFO', 'commandstats'));
  const out: Record<string, number> = {};
  for (const [k, v] of info) {
    const m = /^cmdstat_(.+)$/.exec(k);
    const calls = /calls=(\d+)/.exec(v);
    if (m && calls) out[m[1]!] = Number(calls[1]);
  }
  return out;
}

/** The relay's counters worth watching under load, from its Prometheus /metrics. */
export async function relayCounters(adminUrl: string): Promise<Record<string, number>> {
  const res = await fetch(`${adminUrl}/metrics`);
  const text = await res.text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m =
      /^(relay_drops_total|relay_redis_errors_total|relay_durable_sends_total|relay_auth_failures_total)\{([^}]*)\} ([0-9.e+]+)$/.exec(
        line,
      );
    if (!m) continue;
    const label = /(?:reason|operation|result)="([^"]+)"/.exec(m[2]!)?.[1] ?? '?';
    out[`${m[1]}{${label}}`] = Number(m[3]);
  }
  return out;
}

/** A relay's major (mark-compact) collections so far and the seconds they took, from its /metrics. */
export async function relayMajorGcs(adminUrl: string): Promise<{ count: number; seconds: number }> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  // The relay's registry puts its default label first ({node="…",kind="major"}): match kind anywhere.
  const read = (name: string) =>
    Number(
      new RegExp(`^nodejs_gc_duration_seconds_${name}\\{[^}]*kind="major"[^}]*\\} ([0-9.e+-]+)$`, 'm').exec(
        text,
      )?.[1] ?? 0,
    );
  return { count: read('count'), seconds: read('sum') };
}

/** after − before, keeping only counters that moved. */
export function counterDelta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

/** Memory and connection gauges of a relay from its /metrics (summed over label sets). */
export async function relayGauges(adminUrl: string): Promise<{
  rssBytes: number;
  heapUsedBytes: number;
  externalBytes: number;
  connections: number;
  peers: number;
}> {
  const res = await fetch(`${adminUrl}/metrics`);
  const text = await res.text();
  const sums = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (m) sums.set(m[1]!, (sums.get(m[1]!) ?? 0) + Number(m[2]));
  }
  return {
    rssBytes: sums.get('process_resident_memory_bytes') ?? Number.NaN,
    heapUsedBytes: sums.get('nodejs_heap_size_used_bytes') ?? Number.NaN,
    externalBytes: sums.get('nodejs_external_memory_bytes') ?? Number.NaN,
    connections: sums.get('relay_connections') ?? Number.NaN,
    peers: sums.get('relay_peers') ?? Number.NaN,
  };
}

/** The soft limit on open files of this process (children inherit it), from /proc/self/limits. */
export function openFileLimit(): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'latin1'));
    return m ? (m[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(m[1])) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/**
 * Kernel TCP counters of this network namespace (/proc/net/netstat): accept
 * queues that overflowed (the SYN is dropped and the client retransmits it
 * after 1 s, then 2 s, ...) and SYN retransmissions.
 */
export function tcpCounters(): Record<string, number> {
  const out: Record<string, number> = {};
  try {
    const lines = readFileSync('/proc/net/netstat', 'latin1').split('\n');
    const i = lines.findIndex((l) => l.startsWith('TcpExt:'));
    const names = lines[i]!.split(/\s+/);
    const values = lines[i + 1]!.split(/\s+/);
    for (const key of ['ListenOverflows', 'ListenDrops', 'TCPSynRetrans', 'TCPReqQFullDoCookies']) {
      const at = names.indexOf(key);
      if (at > 0) out[key] = Number(values[at]);
    }
  } catch {
    // Not Linux, or /proc is not mounted: no counters.
  }
  return out;
}
