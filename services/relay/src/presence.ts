/**
 * Presence registry: which relay nodes hold a connection of a routing hint,
 * and which nodes are alive (docs/durable-queue.md, "Presence"). Leases are
 * kept per node, not per peer: a heartbeat renews one entry whatever the
 * number of peers, and a peer's presence points at its node, live as long as
 * the node's lease is.
 *
 *   ${prefix}:pr:{hintHex}              HASH nodeId → incarnation   (written on attach and detach only)
 *   ${prefix}:nh:{nodeId}:<incarnation> SET  hex hints this node incarnation holds (for the sweep)
 *   ${prefix}:nodes                     HASH nodeId → JSON {"urls": [...], "expires": ms, "inc": incarnation,
 *                                                          "link": {"host", "port", "key"} (node-link.ts; absent when links are off)}
 *   ${prefix}:sweep:{nodeId}            STRING the node sweeping a dead node's presence (PX 60 s)
 *
 * A holder is live while its node's entry in `nodes` is unexpired. Each node
 * reads `nodes` every heartbeat (with the write of its own entry: one
 * pipeline, two commands, no script); lookups and the enqueue script's
 * holders are filtered against that view. A node missing from the view is
 * taken as live and the view re-read (a node announces itself before it
 * serves, so after that read, missing means gone).
 *
 * An incarnation is a number above 2^52 drawn at start: later than any clock
 * in milliseconds, so scripts that keep only unexpired leases
 * (`tonumber(v) > now`, the enqueue and prekey scripts) read it as a lease
 * that never expires by itself, and a restarted node with the same id never
 * mistakes the old process's entries for its own.
 *
 * When a node's entry has been expired for one more lease length, a live
 * node sweeps it (under a SET NX claim): it deletes the dead incarnation's
 * field from every hash its hint set lists (only where the field still holds
 * that incarnation), then the set, then the entry. A node that restarts with
 * the same id sweeps its previous incarnation before it serves.
 *
 * Redis Cluster: every command and script touches one key, or keys under one
 * tag; the sweep and withdraw go hint by hint (redis-connection.ts runEach).
 */
import { randomInt } from 'node:crypto';
import { hintToHex } from '@libertaria/identity';
import { RelayError } from '@libertaria/protocol';
import { HOST_PATTERN } from './config.js';
import type { LinkAddress } from './node-link.js';
import { type RedisClient, runEach } from './redis-connection.js';
import { toStoreError } from './store-error.js';

/**
 * The presence key of a hint (hex or bytes). Its hash tag is the hint's, as
 * the durable queue's and the prekey store's keys are, so their scripts read
 * it in the same step: every store builds it here.
 */
export function presenceKey(prefix: string, hint: Uint8Array | string): string {
  return `${prefix}:pr:{${typeof hint === 'string' ? hint : hintToHex(hint)}}`;
}

export interface PresenceOptions {
  /** Key prefix (RELAY_REDIS_PREFIX). */
  prefix: string;
  /** This node's id (RELAY_NODE_ID). */
  nodeId: string;
  /** Lease of the node entry (RELAY_PRESENCE_TTL_MS); renewed every heartbeat (RELAY_HEARTBEAT_MS). */
  leaseMs: number;
  /** This process's incarnation (tests); drawn at random above 2^52 when unset. */
  incarnation?: string;
}

export interface LiveNode {
  nodeId: string;
  publicUrls: string[];
}

/** A node entry as read from `${prefix}:nodes`. */
interface NodeEntry {
  urls: string[];
  expires: number;
  inc: string | undefined;
  link: LinkAddress | undefined;
  raw: string;
}

const DROP_LUA = `--[[
  Deletes a node's field from a presence hash if it still holds that incarnation.
  Input: KEYS[1] presence hash; ARGV[1] nodeId; ARGV[2] incarnation
  Output: 1 deleted, 0 not (absent, or a newer incarnation wrote it)
]]
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
`;

const DROP_NODE_LUA = `--[[
  Deletes a node's registry entry if it is still exactly what the sweeper read.
  Input: KEYS[1] node registry hash; ARGV[1] nodeId; ARGV[2] the entry as read
  Output: 1 deleted, 0 not
]]
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
`;

/**
 * Redis 7 runs a script whose shebang line declares `allow-oom` even when it
 * is at maxmemory (noeviction); without it a presence write is refused with
 * OOM and no peer could complete a handshake while Redis is full. Presence
 * is small (a hash field and a set member per peer, an entry per node) and
 * bounded by the connections nodes hold, so letting it past maxmemory costs
 * little; durable frames are what fill Redis, and they stop at a reserve
 * below it (budgets.ts). Redis 6 does not know shebang lines:
 * enableAllowOom() is called only for 7+.
 */
const ALLOW_OOM = '#!lua flags=allow-oom\n';
const HSET_OOM_LUA = `${ALLOW_OOM}return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])`;
const SADD_OOM_LUA = `${ALLOW_OOM}return redis.call('SADD', KEYS[1], ARGV[1])`;

// Namespaced: defineCommand attaches these to a connection other modules share.
const CMD = {
  drop: 'libertariaPresenceDrop',
  dropNode: 'libertariaPresenceDropNode',
  hsetOom: 'libertariaPresenceHsetOom',
  saddOom: 'libertariaPresenceSaddOom',
} as const;
type HsetOomPipeline = { [CMD.hsetOom]: (key: string, field: string, value: string) => unknown };
type PresenceCommands = { [K in (typeof CMD)[keyof typeof CMD]]: (...args: Array<string | number>) => Promise<number> };

/** Hints per batch of a sweep (SSCAN COUNT and commands in flight). */
const SWEEP_BATCH = 1000;
/** How long a sweeper's claim on a dead node lasts. */
const SWEEP_CLAIM_MS = 60_000;
/** Least time between two reads of the registry prompted by an unknown holder. */
const UNKNOWN_REFRESH_MS = 1000;

/** A fresh incarnation: 2^52 plus 40 random bits, exact as a Lua number and above any clock. */
export function newIncarnation(): string {
  return String(2 ** 52 + randomInt(2 ** 40));
}

function parseEntry(raw: string): NodeEntry | undefined {
  try {
    const entry = JSON.parse(raw) as { urls?: unknown; expires?: unknown; inc?: unknown; link?: unknown };
    const urls = Array.isArray(entry.urls) ? entry.urls.filter((u): u is string => typeof u === 'string') : [];
    const expires = Number(entry.expires);
    if (!Number.isFinite(expires)) return undefined;
    return {
      urls,
      expires,
      inc: typeof entry.inc === 'string' ? entry.inc : undefined,
      link: parseLink(entry.link),
      raw,
    };
  } catch {
    return undefined;
  }
}

/** A link address as an entry lists it, or undefined when it is absent or not well formed. */
function parseLink(value: unknown): LinkAddress | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { host, port, key } = value as { host?: unknown; port?: unknown; key?: unknown };
  if (typeof host !== 'string' || !HOST_PATTERN.test(host)) return undefined;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  if (typeof key !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(key)) return undefined;
  return { host, port, key };
}

export class PresenceRegistry {
  private readonly redis: RedisClient;
  private readonly commands: PresenceCommands;
  private readonly prefix: string;
  readonly nodeId: string;
  readonly incarnation: string;
  private readonly leaseMs: number;
  private readonly nodesKey: string;
  /** What announceNode last published; each heartbeat re-publishes it. */
  private publicUrls: string[] | undefined;
  /** Where this node accepts node links (setLink), published in its entry. */
  private link: LinkAddress | undefined;
  /** The node registry as last read: nodeId → entry. */
  private view = new Map<string, NodeEntry>();
  /** Holders seen that the registry did not list when read after them: gone. */
  private readonly gone = new Set<string>();
  private refreshing: Promise<void> | undefined;
  private lastUnknownRefresh = 0;
  private readonly sweeping = new Set<string>();
  /** Counters for metrics and tests. */
  readonly stats = { sweeps: 0, sweptFields: 0 };
  /** Presence writes go through allow-oom scripts (Redis 7+). */
  private allowOom = false;

  constructor(redis: RedisClient, options: PresenceOptions) {
    if (!Number.isSafeInteger(options.leaseMs) || options.leaseMs < 1) {
      throw new RelayError('BAD_FIELD', `leaseMs must be a positive integer, got ${options.leaseMs}`);
    }
    if (options.nodeId.length === 0) throw new RelayError('BAD_FIELD', 'nodeId must not be empty');
    this.redis = redis;
    this.prefix = options.prefix;
    this.nodeId = options.nodeId;
    this.incarnation = options.incarnation ?? newIncarnation();
    this.leaseMs = options.leaseMs;
    this.nodesKey = `${options.prefix}:nodes`;
    redis.defineCommand(CMD.drop, { numberOfKeys: 1, lua: DROP_LUA });
    redis.defineCommand(CMD.dropNode, { numberOfKeys: 1, lua: DROP_NODE_LUA });
    redis.defineCommand(CMD.hsetOom, { numberOfKeys: 1, lua: HSET_OOM_LUA });
    redis.defineCommand(CMD.saddOom, { numberOfKeys: 1, lua: SADD_OOM_LUA });
    this.commands = redis as unknown as PresenceCommands;
  }

  /** Redis is 7 or newer: presence and node entries are written by allow-oom scripts (see ALLOW_OOM). */
  enableAllowOom(): void {
    this.allowOom = true;
  }

  private hset(key: string, field: string, value: string): Promise<unknown> {
    return this.allowOom ? this.commands[CMD.hsetOom](key, field, value) : this.redis.hset(key, field, value);
  }

  /** The presence key of a hint (presenceKey with this registry's prefix). */
  key(hint: Uint8Array | string): string {
    return presenceKey(this.prefix, hint);
  }

  /** The set of hints a node incarnation holds, under the node's own hash tag. */
  indexKey(nodeId: string = this.nodeId, incarnation: string = this.incarnation): string {
    return `${this.prefix}:nh:{${nodeId}}:${incarnation}`;
  }

  /** This node now holds a connection of `hint`: index it, then point its presence here. */
  async add(hint: Uint8Array): Promise<void> {
    const hex = hintToHex(hint);
    try {
      // The index first: a crash in between leaves an entry the sweep ignores, never a field it cannot find.
      await Promise.all([
        this.allowOom ? this.commands[CMD.saddOom](this.indexKey(), hex) : this.redis.sadd(this.indexKey(), hex),
        this.hset(this.key(hex), this.nodeId, this.incarnation),
      ]);
    } catch (err) {
      throw toStoreError(err);
    }
  }

  /** The last connection of `hint` on this node closed: drop its presence and index entry. */
  async remove(hint: Uint8Array): Promise<void> {
    const hex = hintToHex(hint);
    try {
      await Promise.all([this.redis.hdel(this.key(hex), this.nodeId), this.redis.srem(this.indexKey(), hex)]);
    } catch (err) {
      throw toStoreError(err);
    }
  }

  /**
   * Heartbeat: renews this node's entry and reads every node's, in one
   * pipeline on one key (two commands, whatever the number of peers); then
   * sweeps nodes whose lease expired a lease length ago. The hints argument
   * is ignored (kept for callers of the per-peer lease layout).
   */
  async renew(_hints?: Iterable<Uint8Array>, nowMs: number = Date.now()): Promise<void> {
    const pipeline = this.redis.pipeline();
    if (this.publicUrls !== undefined) {
      const entry = this.nodeEntry(nowMs);
      if (this.allowOom) (pipeline as unknown as HsetOomPipeline)[CMD.hsetOom](this.nodesKey, this.nodeId, entry);
      else pipeline.hset(this.nodesKey, this.nodeId, entry);
    }
    pipeline.hgetall(this.nodesKey);
    let replies: Array<[Error | null, unknown]> | null;
    try {
      replies = await pipeline.exec();
    } catch (err) {
      throw toStoreError(err);
    }
    const failed = replies?.find(([err]) => err !== null);
    if (!replies || failed) throw toStoreError(failed?.[0] ?? new Error('Redis discarded the pipeline'));
    this.setView(replies[replies.length - 1]![1] as Record<string, string>);
    await this.sweepExpired(nowMs);
  }

  /** Re-reads the node registry (concurrent calls share one read). */
  refresh(): Promise<void> {
    if (!this.refreshing) {
      this.refreshing = this.redis
        .hgetall(this.nodesKey)
        .then((all) => this.setView(all))
        .finally(() => {
          this.refreshing = undefined;
        });
    }
    return this.refreshing;
  }

  private setView(all: Record<string, string>): void {
    const view = new Map<string, NodeEntry>();
    for (const [nodeId, raw] of Object.entries(all)) {
      const entry = parseEntry(raw);
      if (entry) view.set(nodeId, entry);
    }
    // A node listed now is no longer "gone" (a restart with the same id).
    for (const nodeId of view.keys()) this.gone.delete(nodeId);
    this.view = view;
  }

  /**
   * Whether a holder's node is alive as far as this node knows: its entry is
   * unexpired; a node the last read did not list counts as live and makes
   * the registry be read again (at most once a second), after which it is
   * gone if still unlisted.
   */
  isLive(nodeId: string, nowMs: number = Date.now()): boolean {
    if (nodeId === this.nodeId) return true;
    const entry = this.view.get(nodeId);
    if (entry) return entry.expires > nowMs;
    if (this.gone.has(nodeId)) return false;
    if (nowMs - this.lastUnknownRefresh >= UNKNOWN_REFRESH_MS) {
      this.lastUnknownRefresh = nowMs;
      const unknown = nodeId;
      this.refresh().then(
        () => {
          if (!this.view.has(unknown)) this.gone.add(unknown);
        },
        () => {},
      );
    }
    return true;
  }

  /** The live ones among `holders` (node ids from a presence hash). */
  liveHolders(holders: readonly string[], nowMs: number = Date.now()): string[] {
    return holders.filter((n) => this.isLive(n, nowMs));
  }

  /** Ids of the live nodes holding `hint`. */
  async lookup(hint: Uint8Array, nowMs: number = Date.now()): Promise<string[]> {
    let holders: string[];
    try {
      holders = await this.redis.hkeys(this.key(hint));
    } catch (err) {
      throw toStoreError(err);
    }
    return this.liveHolders(holders, nowMs).sort();
  }

  /**
   * Publishes this node and the URLs clients may reconnect to (GOAWAY hints);
   * each heartbeat renews it. The first call also sweeps what an earlier
   * process with this node id left (its entry names another incarnation),
   * so call it before serving.
   */
  async announceNode(publicUrls: string[], nowMs: number = Date.now()): Promise<void> {
    const first = this.publicUrls === undefined;
    this.publicUrls = [...publicUrls];
    try {
      if (first) {
        const raw = await this.redis.hget(this.nodesKey, this.nodeId);
        const previous = raw === null ? undefined : parseEntry(raw);
        if (previous?.inc !== undefined && previous.inc !== this.incarnation) {
          await this.sweep(this.nodeId, previous.inc, undefined);
        }
      }
      await this.hset(this.nodesKey, this.nodeId, this.nodeEntry(nowMs));
      if (first) await this.refresh();
    } catch (err) {
      throw toStoreError(err);
    }
  }

  /** Nodes whose entry is unexpired, this one included, read now. */
  async liveNodes(nowMs: number = Date.now()): Promise<LiveNode[]> {
    try {
      await this.refresh();
    } catch (err) {
      throw toStoreError(err);
    }
    const nodes: LiveNode[] = [];
    for (const [nodeId, entry] of this.view) {
      if (entry.expires > nowMs) nodes.push({ nodeId, publicUrls: entry.urls });
    }
    return nodes.sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  }

  /** Shutdown: drop this node's presence on `hints`, its index and its entry; heartbeats stop publishing it. */
  async withdraw(hints: Iterable<Uint8Array>): Promise<void> {
    this.publicUrls = undefined;
    const commands = [...hints].map((h) => (c: RedisCommandsLike) => c.hdel(this.key(h), this.nodeId));
    try {
      await runEach(this.redis, commands);
      await this.redis.del(this.indexKey());
      await this.redis.hdel(this.nodesKey, this.nodeId);
    } catch (err) {
      throw toStoreError(err);
    }
  }

  /** Sweeps every node whose entry expired more than a lease length ago (not this one; one at a time each). */
  private async sweepExpired(nowMs: number): Promise<void> {
    for (const [nodeId, entry] of this.view) {
      if (nodeId === this.nodeId || entry.expires + this.leaseMs > nowMs || this.sweeping.has(nodeId)) continue;
      const claim = `${this.prefix}:sweep:{${nodeId}}`;
      if ((await this.redis.set(claim, this.nodeId, 'PX', SWEEP_CLAIM_MS, 'NX')) !== 'OK') continue;
      this.sweeping.add(nodeId);
      try {
        await this.sweep(nodeId, entry.inc, entry.raw);
      } finally {
        this.sweeping.delete(nodeId);
      }
    }
  }

  /**
   * Removes a node incarnation's presence: every field its index lists (if
   * still that incarnation's), the index, and (when `entryRaw` is given) its
   * registry entry if unchanged since read.
   */
  private async sweep(nodeId: string, incarnation: string | undefined, entryRaw: string | undefined): Promise<void> {
    this.stats.sweeps++;
    if (incarnation !== undefined) {
      const index = this.indexKey(nodeId, incarnation);
      let cursor = '0';
      do {
        const [next, members] = await this.redis.sscan(index, cursor, 'COUNT', SWEEP_BATCH);
        await runEach(
          this.redis,
          members.map(
            (hex) => (c: RedisCommandsLike) =>
              (c as unknown as PresenceCommands)[CMD.drop](this.key(hex), nodeId, incarnation),
          ),
          SWEEP_BATCH,
        );
        this.stats.sweptFields += members.length;
        cursor = next;
      } while (cursor !== '0');
      await this.redis.del(index);
    }
    if (entryRaw !== undefined) await this.commands[CMD.dropNode](this.nodesKey, nodeId, entryRaw);
  }

  /** Where this node accepts node links; set before announceNode, published with every heartbeat. */
  setLink(link: LinkAddress | undefined): void {
    this.link = link;
  }

  /** Where a live node other than this one accepts node links, as the registry last read listed it. */
  linkOf(nodeId: string, nowMs: number = Date.now()): LinkAddress | undefined {
    if (nodeId === this.nodeId) return undefined;
    const entry = this.view.get(nodeId);
    if (entry === undefined) {
      // A node that started after the last read: isLive reads the registry again (at most once a second).
      this.isLive(nodeId, nowMs);
      return undefined;
    }
    return entry.expires > nowMs ? entry.link : undefined;
  }

  private nodeEntry(nowMs: number): string {
    return JSON.stringify({
      urls: this.publicUrls ?? [],
      expires: nowMs + this.leaseMs,
      inc: this.incarnation,
      ...(this.link ? { link: this.link } : {}),
    });
  }
}

type RedisCommandsLike = Parameters<Parameters<typeof runEach>[1][number]>[0];
