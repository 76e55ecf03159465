/**
 * RELAY_DURABLE_WAIT_REPLICAS: a write is confirmed to its sender only once
 * `replicas` replicas hold it (Redis `WAIT`), for the durable store's frames
 * and the federation's hand-offs alike.
 *
 * Waits of one event-loop turn share one pipeline per primary: first, per
 * check (a recipient's queue, a bridge's job), a script that says which of
 * the waited-for items the server holds and writes under the same hash tag
 * (so the pipeline reaches that primary on a Cluster, and this connection's
 * replication offset is past every item found, one stored through another
 * connection included), then `WAIT`.
 *
 * The look is what makes the `WAIT` count for these items. `WAIT` counts the
 * replicas of the server and connection that answer it, which need not be
 * the ones that took the write: a pipeline whose server died unanswered is
 * resent by ioredis, whole, to whichever server holds the slot now (on a
 * Cluster, the replica that took over; on one server, the server after a
 * restart), and one that met a redirect may have its `WAIT` answered by
 * another primary. Either could report replicas for a write that is gone (a
 * CI run of redis-cluster.test.ts acknowledged five frames lost that way).
 * ioredis resends only a whole pipeline, never part of one (it aborts the
 * rest of a pipeline half answered when its connection closes), so a check
 * and the `WAIT` after it were answered by one server.
 *
 * Fewer replicas in time, an item not found, or any error: STORE_UNAVAILABLE
 * (the sender's retry writes again, or finds the write and waits again).
 */
import { type LibertariaError, RelayError } from '@libertaria/protocol';
import calculateSlot from 'cluster-key-slot';
import type { Pipeline } from 'ioredis';
import { EncodedScript, type ScriptArg } from './encoded-script.js';
import { PerTurn } from './per-turn.js';
import { isCluster, type RedisClient } from './redis-connection.js';
import { toStoreError } from './store-error.js';

/** How long a check's write (its `w` key) lives: it only has to exist until the WAIT after it. */
export const WAIT_KEY_LIFETIME_MS = 10_000;

/**
 * A look, run on the server that answers the WAIT right before it: a script
 * whose reply is the 1-based indexes of the items it did not find, and
 * which writes a key under its keys' hash tag.
 */
export interface ReplicaCheck {
  readonly script: EncodedScript;
  /** A key of the script: the primary of its slot is asked. */
  readonly routeKey: string;
  /** The script's arguments (keys first) for these items, in order. */
  args(items: readonly ScriptArg[]): ScriptArg[];
}

const KEY_CHECK = new EncodedScript(
  `--[[
  Whether KEYS[1] is here (ReplicaWaiter's look for one key), and the
  routing write.
  Input: KEYS[1] the key, KEYS[2] w (same hash tag); ARGV[1] w's lifetime in
    ms; ARGV[2..] one per waiter
  Output: every waiter's index when the key is not here, none otherwise
]]
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then return {} end
local all = {}
for i = 2, #ARGV do all[#all + 1] = i - 1 end
return all
`,
  2,
);

/** A look for `key` itself (a BullMQ job's hash, a single-use id); `writeKey` must share its slot. */
export function keyCheck(key: string, writeKey: string): ReplicaCheck {
  return { script: KEY_CHECK, routeKey: key, args: (items) => [key, writeKey, WAIT_KEY_LIFETIME_MS, ...items] };
}

type Waiter = (err?: LibertariaError) => void;

interface Pending {
  check: ReplicaCheck;
  items: ScriptArg[];
  waiters: Waiter[];
}

export class ReplicaWaiter {
  /** This turn's waits, by primary ('' on one server), then by check. */
  private readonly groups = new PerTurn<Map<string, Map<string, Pending>>>(
    () => new Map(),
    (groups) => this.flush(groups),
  );

  constructor(
    private readonly redis: RedisClient,
    readonly replicas: number,
    readonly timeoutMs: number,
  ) {}

  /**
   * Resolves once `replicas` replicas hold `item` as `check` finds it.
   * Waits of one turn with the same `checkId` share one run of the check.
   */
  wait(checkId: string, check: ReplicaCheck, item: ScriptArg): Promise<void> {
    let group = '';
    if (isCluster(this.redis)) {
      const slot = calculateSlot(check.routeKey);
      group = this.redis.slots[slot]?.[0] ?? `slot:${slot}`;
    }
    return new Promise<void>((resolve, reject) => {
      const groups = this.groups.open;
      let checks = groups.get(group);
      if (!checks) {
        checks = new Map();
        groups.set(group, checks);
      }
      let pending = checks.get(checkId);
      if (!pending) {
        pending = { check, items: [], waiters: [] };
        checks.set(checkId, pending);
      }
      pending.items.push(item);
      pending.waiters.push((err) => (err ? reject(err) : resolve()));
      this.groups.schedule();
    });
  }

  private flush(groups: Map<string, Map<string, Pending>>): void {
    for (const checks of groups.values()) {
      const pending = [...checks.values()];
      // ioredis types pipeline() as its command interface; the object is a Pipeline, whose sendCommand takes the script.
      const pipeline = this.redis.pipeline() as Pipeline;
      for (const p of pending) p.check.script.addTo(pipeline, p.check.args(p.items));
      pipeline.wait(this.replicas, this.timeoutMs);
      pipeline.exec().then(
        (replies) => this.settle(pending, replies),
        (err: unknown) => {
          const error = toStoreError(err);
          for (const p of pending) for (const w of p.waiters) w(error);
        },
      );
    }
  }

  /** Settles each waiter from its check's reply and the WAIT's (the last reply). */
  private settle(pending: readonly Pending[], replies: [Error | null, unknown][] | null): void {
    let shared: LibertariaError | undefined;
    const waitReply = replies?.length === pending.length + 1 ? replies[pending.length] : undefined;
    if (!waitReply) shared = new RelayError('STORE_UNAVAILABLE', 'Redis discarded the WAIT pipeline');
    else if (waitReply[0]) shared = toStoreError(waitReply[0]);
    else if (Number(waitReply[1]) < this.replicas) {
      shared = new RelayError(
        'STORE_UNAVAILABLE',
        `stored, but ${Number(waitReply[1])} of ${this.replicas} replicas confirmed it within ${this.timeoutMs} ms`,
      );
    }
    pending.forEach((p, i) => {
      // The check's answer comes first: an item the server does not hold is said so, whatever the WAIT gave.
      const [err, missing] = replies?.[i] ?? [null, undefined];
      let error = err ? toStoreError(err) : undefined;
      if (!error && !Array.isArray(missing))
        error = shared ?? new RelayError('STORE_UNAVAILABLE', 'unexpected check reply');
      const gone = error ? undefined : new Set((missing as unknown[]).map(Number));
      p.waiters.forEach((w, j) => {
        if (gone?.has(j + 1)) {
          w(
            new RelayError(
              'STORE_UNAVAILABLE',
              'stored, but the primary answering the WAIT does not hold it (lost in a failover or restart before a replica had it); send it again',
            ),
          );
        } else w(error ?? shared);
      });
    });
  }
}
