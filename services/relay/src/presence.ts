/**
 * Presence registry: which relay nodes hold a connection of a routing hint,
 * and which nodes are alive. Both are leases, so a node that dies without
 * cleaning up drops out on its own (docs/durable-queue.md, "Presence").
 *
 *   ${prefix}:pr:{hintHex}  HASH nodeId → leaseExpiryMs   (key PEXPIRE ≥ leaseMs)
 *   ${prefix}:nodes         HASH nodeId → JSON {"urls": [...], "expires": ms}
 *
 * A lease is live while its expiry (in the field) is after the caller's
 * now. Field expiries are what lookups trust; the key TTL only garbage
 * collects a hash whose every node stopped renewing. Expired fields of other
 * nodes (a crashed node never removes its own) are deleted atomically by the
 * scripts that read or write a hash, so they never accumulate.
 */
import { hintToHex, LibertariaError, RelayError } from '@libertaria/shared';
import type { ChainableCommander, Redis } from 'ioredis';

export interface PresenceOptions {
  /** Key prefix (RELAY_REDIS_PREFIX). */
  prefix: string;
  /** This node's id (RELAY_NODE_ID). */
  nodeId: string;
  /** Lease length (RELAY_PRESENCE_TTL_MS); renew well within it (RELAY_HEARTBEAT_MS). */
  leaseMs: number;
}

export interface LiveNode {
  nodeId: string;
  publicUrls: string[];
}

const LEASE_LUA = `--[[
  Grants or renews this node's lease on one routing hint.
  Input:
    KEYS[1] presence hash, nodeId -> leaseExpiryMs
    ARGV[1] nodeId
    ARGV[2] nowMs
    ARGV[3] leaseMs
  Output: number of other nodes' expired leases removed
]]
local key, node = KEYS[1], ARGV[1]
local now, lease = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('HSET', key, node, now + lease)
-- One field per node holding this hint: a handful, so this loop is small.
local all = redis.call('HGETALL', key)
local removed = 0
for i = 1, #all, 2 do
  local expiry = tonumber(all[i + 1])
  if all[i] ~= node and (not expiry or expiry <= now) then
    redis.call('HDEL', key, all[i])
    removed = removed + 1
  end
end
-- Only ever extend the key TTL: another node may hold a longer lease here.
-- (PEXPIRE GT would not do: it never sets a TTL on a key that has none.)
if redis.call('PTTL', key) < lease then redis.call('PEXPIRE', key, lease) end
return removed
`;

const LOOKUP_LUA = `--[[
  Lists the nodes holding an unexpired lease on a hint; deletes expired ones.
  Input:
    KEYS[1] presence hash, nodeId -> leaseExpiryMs
    ARGV[1] nowMs
  Output: array of node ids
]]
local key, now = KEYS[1], tonumber(ARGV[1])
local all = redis.call('HGETALL', key)
local live = {}
for i = 1, #all, 2 do
  local expiry = tonumber(all[i + 1])
  if expiry and expiry > now then
    live[#live + 1] = all[i]
  else
    redis.call('HDEL', key, all[i])
  end
end
return live
`;

const LIVE_NODES_LUA = `--[[
  Lists the live relay nodes; deletes entries whose lease expired.
  Input:
    KEYS[1] node registry hash, nodeId -> JSON {"urls": [...], "expires": ms}
    ARGV[1] nowMs
  Output: flat array {nodeId1, json1, nodeId2, json2, ...}
]]
local key, now = KEYS[1], tonumber(ARGV[1])
local all = redis.call('HGETALL', key)
local live = {}
for i = 1, #all, 2 do
  local ok, entry = pcall(cjson.decode, all[i + 1])
  if ok and type(entry) == 'table' and tonumber(entry.expires) and tonumber(entry.expires) > now then
    live[#live + 1] = all[i]
    live[#live + 1] = all[i + 1]
  else
    redis.call('HDEL', key, all[i])
  end
end
return live
`;

/**
 * Redis 7 runs a script whose shebang line declares `allow-oom` even when it
 * is at maxmemory (noeviction); without it the lease's HSET is refused with
 * OOM and no peer could complete a handshake while Redis is full. Leases are
 * small (a hash field per peer and node) and bounded by the connections
 * nodes hold, so letting them past maxmemory costs little; durable frames
 * are what fill Redis, and they stop at a reserve below it (budgets.ts).
 * Redis 6 does not know shebang lines: enableAllowOom() is called only for 7+.
 */
const ALLOW_OOM = '#!lua flags=allow-oom\n';
const NODE_ENTRY_LUA = `return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])`;

/** Hints added to the heartbeat pipeline between yields (~15 ms of CPU each). */
const RENEW_SLICE = 5000;
const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

// Namespaced: defineCommand attaches these to a connection other modules share.
const CMD = {
  lease: 'libertariaPresenceLease',
  leaseOom: 'libertariaPresenceLeaseOom',
  nodeEntryOom: 'libertariaPresenceNodeEntryOom',
  lookup: 'libertariaPresenceLookup',
  liveNodes: 'libertariaPresenceLiveNodes',
} as const;

type ScriptArg = string | number;
type PresenceCommands = { [K in (typeof CMD)[keyof typeof CMD]]: (...args: ScriptArg[]) => Promise<unknown> };
type PresencePipeline = ChainableCommander & {
  libertariaPresenceLease(...args: ScriptArg[]): PresencePipeline;
  libertariaPresenceLeaseOom(...args: ScriptArg[]): PresencePipeline;
  libertariaPresenceNodeEntryOom(...args: ScriptArg[]): PresencePipeline;
};

function toStoreError(err: unknown): LibertariaError {
  if (err instanceof LibertariaError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return new RelayError('STORE_UNAVAILABLE', `Redis did not confirm: ${detail}`, { cause: err });
}

/** Runs a pipeline; any failed command fails the whole call (it is retried by the next heartbeat). */
async function execPipeline(pipeline: ChainableCommander): Promise<void> {
  let replies: Array<[Error | null, unknown]> | null;
  try {
    replies = await pipeline.exec();
  } catch (err) {
    throw toStoreError(err);
  }
  if (replies === null) throw new RelayError('STORE_UNAVAILABLE', 'Redis discarded the pipeline');
  const failed = replies.filter(([err]) => err !== null);
  if (failed.length > 0) {
    throw toStoreError(
      new AggregateError(
        failed.map(([err]) => err),
        `${failed.length} of ${replies.length} presence commands failed`,
      ),
    );
  }
}

function stringArray(value: unknown): string[] {
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
    throw new RelayError('INTERNAL', 'presence script returned an unexpected reply');
  }
  return value;
}

export class PresenceRegistry {
  private readonly redis: Redis;
  private readonly commands: PresenceCommands;
  private readonly prefix: string;
  private readonly nodeId: string;
  private readonly leaseMs: number;
  private readonly nodesKey: string;
  /** What announceNode last published; each renew re-publishes it. */
  private publicUrls: string[] | undefined;
  /** Leases and the node entry are written by allow-oom scripts (Redis 7+). */
  private allowOom = false;

  constructor(redis: Redis, options: PresenceOptions) {
    if (!Number.isSafeInteger(options.leaseMs) || options.leaseMs < 1) {
      throw new RelayError('BAD_FIELD', `leaseMs must be a positive integer, got ${options.leaseMs}`);
    }
    if (options.nodeId.length === 0) throw new RelayError('BAD_FIELD', 'nodeId must not be empty');
    this.redis = redis;
    this.prefix = options.prefix;
    this.nodeId = options.nodeId;
    this.leaseMs = options.leaseMs;
    this.nodesKey = `${options.prefix}:nodes`;
    redis.defineCommand(CMD.lease, { numberOfKeys: 1, lua: LEASE_LUA });
    redis.defineCommand(CMD.leaseOom, { numberOfKeys: 1, lua: ALLOW_OOM + LEASE_LUA });
    redis.defineCommand(CMD.nodeEntryOom, { numberOfKeys: 1, lua: ALLOW_OOM + NODE_ENTRY_LUA });
    redis.defineCommand(CMD.lookup, { numberOfKeys: 1, lua: LOOKUP_LUA });
    redis.defineCommand(CMD.liveNodes, { numberOfKeys: 1, lua: LIVE_NODES_LUA });
    this.commands = redis as unknown as PresenceCommands;
  }

  /** Redis is 7 or newer: write leases and the node entry with allow-oom scripts (see ALLOW_OOM). */
  enableAllowOom(): void {
    this.allowOom = true;
  }

  /** The presence key of a hint; the hash tag keeps it Redis Cluster friendly alongside the queue keys. */
  key(hint: Uint8Array): string {
    return `${this.prefix}:pr:{${hintToHex(hint)}}`;
  }

  /** This node now holds a connection of `hint`: take (or renew) the lease. */
  async add(hint: Uint8Array, nowMs: number = Date.now()): Promise<void> {
    const key = this.key(hint);
    try {
      await this.commands[this.allowOom ? CMD.leaseOom : CMD.lease](key, this.nodeId, nowMs, this.leaseMs);
    } catch (err) {
      throw toStoreError(err);
    }
  }

  /** The last connection of `hint` on this node closed: drop this node's lease. */
  async remove(hint: Uint8Array): Promise<void> {
    const key = this.key(hint);
    try {
      await this.redis.hdel(key, this.nodeId);
    } catch (err) {
      throw toStoreError(err);
    }
  }

  /**
   * Heartbeat: renews this node's lease on every hint in ONE pipeline (one
   * write, one round trip), and re-publishes the node entry if announceNode
   * was called. ioredis spends a few microseconds of CPU per command, so the
   * pipeline is built in slices with a yield to the event loop between them;
   * only exec's own serialization (~3 µs per hint) runs in one piece. For
   * tens of thousands of hints per node, callers may also split the hints
   * over the heartbeat interval: renewing a subset is always valid.
   */
  async renew(hints: Iterable<Uint8Array>, nowMs: number = Date.now()): Promise<void> {
    const pipeline = this.redis.pipeline() as PresencePipeline;
    let count = 0;
    for (const hint of hints) {
      if (this.allowOom) pipeline.libertariaPresenceLeaseOom(this.key(hint), this.nodeId, nowMs, this.leaseMs);
      else pipeline.libertariaPresenceLease(this.key(hint), this.nodeId, nowMs, this.leaseMs);
      if (++count % RENEW_SLICE === 0) await yieldToEventLoop();
    }
    if (this.publicUrls !== undefined) {
      if (this.allowOom) pipeline.libertariaPresenceNodeEntryOom(this.nodesKey, this.nodeId, this.nodeEntry(nowMs));
      else pipeline.hset(this.nodesKey, this.nodeId, this.nodeEntry(nowMs));
    }
    if (count === 0 && this.publicUrls === undefined) return;
    await execPipeline(pipeline);
  }

  /** Ids of the nodes holding an unexpired lease on `hint` (expired ones are deleted on the way). */
  async lookup(hint: Uint8Array, nowMs: number = Date.now()): Promise<string[]> {
    const key = this.key(hint);
    try {
      return stringArray(await this.commands[CMD.lookup](key, nowMs));
    } catch (err) {
      throw toStoreError(err);
    }
  }

  /** Publishes this node and the URLs clients may reconnect to (GOAWAY hints); renew keeps it alive. */
  async announceNode(publicUrls: string[], nowMs: number = Date.now()): Promise<void> {
    this.publicUrls = [...publicUrls];
    try {
      if (this.allowOom) await this.commands[CMD.nodeEntryOom](this.nodesKey, this.nodeId, this.nodeEntry(nowMs));
      else await this.redis.hset(this.nodesKey, this.nodeId, this.nodeEntry(nowMs));
    } catch (err) {
      throw toStoreError(err);
    }
  }

  /** Nodes whose entry is unexpired, this one included; expired entries are deleted on the way. */
  async liveNodes(nowMs: number = Date.now()): Promise<LiveNode[]> {
    let flat: string[];
    try {
      flat = stringArray(await this.commands[CMD.liveNodes](this.nodesKey, nowMs));
    } catch (err) {
      throw toStoreError(err);
    }
    const nodes: LiveNode[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const urls: unknown = (JSON.parse(flat[i + 1]!) as { urls?: unknown }).urls;
      const publicUrls = Array.isArray(urls) ? urls.filter((u): u is string => typeof u === 'string') : [];
      nodes.push({ nodeId: flat[i]!, publicUrls });
    }
    return nodes.sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  }

  /** Shutdown: drop this node's leases on `hints` and its node entry, in one pipeline; renew stops publishing it. */
  async withdraw(hints: Iterable<Uint8Array>): Promise<void> {
    this.publicUrls = undefined;
    const pipeline = this.redis.pipeline();
    for (const hint of hints) pipeline.hdel(this.key(hint), this.nodeId);
    pipeline.hdel(this.nodesKey, this.nodeId);
    await execPipeline(pipeline);
  }

  private nodeEntry(nowMs: number): string {
    return JSON.stringify({ urls: this.publicUrls ?? [], expires: nowMs + this.leaseMs });
  }
}
