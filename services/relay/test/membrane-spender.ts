/**
 * A separate process spending one quota through its own Redis connection,
 * for the concurrency test in membrane-state.test.ts. Reads its job from
 * argv (JSON), prints "ready", waits for a line on stdin (so every process
 * starts at once), fires every spend concurrently, prints the result as JSON.
 */
import { createInterface } from 'node:readline';
import type { ConsumeOp } from '@libertaria/membrane';
import { RedisConstraintState } from '@libertaria/membrane/redis';
import { Redis } from 'ioredis';

interface Job {
  url: string;
  prefix: string;
  scope: string;
  ops: ConsumeOp[];
  amounts: number[];
  nowMs: number;
  connections: number;
}

const job = JSON.parse(process.argv[2]!) as Job;
const connections = Array.from({ length: job.connections }, () => new Redis(job.url));
const states = connections.map((redis) => new RedisConstraintState(redis, job.prefix));
await Promise.all(connections.map((redis) => redis.ping()));
console.log('ready');
const lines = createInterface({ input: process.stdin });
await new Promise<void>((resolve) => lines.once('line', () => resolve()));
const results = await Promise.all(
  job.amounts.map((amount, i) => states[i % states.length]!.consume(job.scope, job.ops, 'did:peer', amount, job.nowMs)),
);
const allowed = job.amounts.filter((_, i) => results[i] === -1);
console.log(JSON.stringify({ allowed: allowed.length, spent: allowed.reduce((a, b) => a + b, 0), refusedAt: results }));
for (const redis of connections) redis.disconnect();
lines.close();
