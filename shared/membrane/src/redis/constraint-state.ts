/**
 * Rate windows and quota spends, atomic across every relay node: one Lua
 * script checks all the counters a decision touches and applies them only if
 * none would pass its limit, so parallel decisions through any number of
 * nodes can never spend more than a limit, and a refused request spends
 * nothing.
 *
 *   ${prefix}:mb:c:{scope}:${opId}[:peer]  HASH  w → aligned window index, n → used in that window
 *
 * {scope} is the owner's DID (policies) or the root cid (grant tokens): all
 * counters of one decision share the Redis Cluster hash tag, so the script's
 * keys are in one slot. A windowed counter expires two windows after its last
 * use; a lifetime quota (windowSeconds 0) persists.
 *
 * Windows are aligned to the epoch and computed from the deciding node's
 * clock (the `nowMs` the membrane passes), so nodes must keep NTP time; a
 * skewed node moves only its own requests into a neighbouring window.
 */

import type { RedisClient } from '@libertaria/redis';
import { type ConstraintState, type ConsumeOp, counterKey, windowIndex } from '../index.js';
import { toStoreError } from './store-error.js';

const CONSUME_LUA = `--[[
  Consumes rate and quota counters, all or nothing.
  Input:
    KEYS[i]  HASH of op i: w -> window index, n -> used in that window
    ARGV[1]  amount: the units a quota op spends (a rate op spends 1)
    ARGV[2]  n ops, then for each: kind ('r' rate | 'q' quota), limit, window index, ttlMs (0: no expiry)
  Output: 0 when every op was applied; else i (1-based), the first op whose
          limit the spend would pass, and nothing was applied.
]]
local amount = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local after = {}
for i = 1, n do
  local a = 2 + (i - 1) * 4
  local limit = tonumber(ARGV[a + 2])
  local w = ARGV[a + 3]
  local spend = amount
  if ARGV[a + 1] == 'r' then spend = 1 end
  local cur = redis.call('HMGET', KEYS[i], 'w', 'n')
  local used = 0
  if cur[1] == w then used = tonumber(cur[2]) end
  if used + spend > limit then return i end
  after[i] = used + spend
end
for i = 1, n do
  local a = 2 + (i - 1) * 4
  redis.call('HSET', KEYS[i], 'w', ARGV[a + 3], 'n', string.format('%.0f', after[i]))
  local ttl = tonumber(ARGV[a + 4])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 0
`;

const COMMAND = 'libertariaMembraneConsume';
type ConsumeCommand = {
  [COMMAND](numKeys: number, ...args: (string | number)[]): Promise<number>;
};

export class RedisConstraintState implements ConstraintState {
  private readonly redis: RedisClient & ConsumeCommand;
  readonly keyPrefix: string;

  constructor(redis: RedisClient, prefix: string) {
    this.keyPrefix = `${prefix}:mb:c:`;
    // numberOfKeys is per call (a decision has as many keys as ops).
    redis.defineCommand(COMMAND, { lua: CONSUME_LUA });
    this.redis = redis as RedisClient & ConsumeCommand;
  }

  /** The Redis key of an op's counter. */
  key(scope: string, op: ConsumeOp, peer: string): string {
    return this.keyPrefix + counterKey(scope, op, peer);
  }

  async consume(
    scope: string,
    ops: readonly ConsumeOp[],
    peer: string,
    amount: number,
    nowMs: number,
  ): Promise<number> {
    if (ops.length === 0) return -1;
    const args: (string | number)[] = [];
    for (const op of ops) args.push(this.key(scope, op, peer));
    args.push(amount, ops.length);
    for (const op of ops) {
      args.push(op.kind === 'rate' ? 'r' : 'q', op.limit, windowIndex(op, nowMs), op.windowMs * 2);
    }
    let result: number;
    try {
      result = await this.redis[COMMAND](ops.length, ...args);
    } catch (err) {
      throw toStoreError(err);
    }
    return result === 0 ? -1 : result - 1;
  }

  /** Used in the current window (0 when none), for operators and tests. */
  async used(scope: string, op: ConsumeOp, peer: string, nowMs: number): Promise<number> {
    const [w, n] = await this.redis.hmget(this.key(scope, op, peer), 'w', 'n');
    return w === String(windowIndex(op, nowMs)) ? Number(n) : 0;
  }
}
