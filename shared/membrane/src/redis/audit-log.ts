/**
 * The membrane's audit trail: every decision, allowed or denied, with its
 * reason, in one Redis Stream shared by all nodes.
 *
 *   ${prefix}:mb:audit  STREAM  at, peer, owner, resource, action, amount,
 *                               allowed (1|0), code, via, field, reason, basis
 *
 * Append-only and bounded: each XADD trims to about `maxEntries` (MAXLEN ~,
 * which trims whole macro-nodes and so costs nearly nothing). Entry ids are
 * Redis's arrival time in ms, so a time range is an XRANGE; filters by peer,
 * owner, resource, action or outcome scan that range in batches, up to a
 * bounded number of entries per query, and return a cursor to continue.
 */

import { type ErrorCode, isErrorCode } from '@libertaria/protocol';
import type { RedisClient } from '@libertaria/redis';
import type { AuditRecord, AuditSink } from '../index.js';
import { requireInt, toStoreError } from './store-error.js';

export interface AuditLogOptions {
  prefix: string;
  /** Entries kept (approximately: trimming is by whole stream nodes). @default 1000000 */
  maxEntries?: number;
}

export interface AuditQuery {
  peer?: string;
  owner?: string;
  resource?: string;
  action?: string;
  allowed?: boolean;
  /** Inclusive, ms since the epoch (Redis arrival time). */
  sinceMs?: number;
  /** Inclusive. */
  untilMs?: number;
  /** Continue after this entry id (the previous page's `next`). */
  after?: string;
  /** Most records returned. @default 100 */
  limit?: number;
  /** Most entries read to find them. @default 10000 */
  scanLimit?: number;
}

export interface AuditEntry extends AuditRecord {
  /** The stream entry id. */
  id: string;
}

export interface AuditPage {
  records: AuditEntry[];
  /** Pass as `after` for the next page; undefined when the range is exhausted. */
  next: string | undefined;
}

const BATCH = 500;

export class RedisAuditLog implements AuditSink {
  readonly key: string;
  readonly maxEntries: number;

  constructor(
    private readonly redis: RedisClient,
    options: AuditLogOptions,
  ) {
    this.key = `${options.prefix}:mb:audit`;
    this.maxEntries = options.maxEntries ?? 1_000_000;
    requireInt('maxEntries', this.maxEntries, 1);
  }

  async record(r: AuditRecord): Promise<void> {
    try {
      await this.redis.xadd(
        this.key,
        'MAXLEN',
        '~',
        this.maxEntries,
        '*',
        'at',
        r.at,
        'peer',
        r.peer,
        'owner',
        r.owner,
        'resource',
        r.resource,
        'action',
        r.action,
        'amount',
        r.amount,
        'allowed',
        r.allowed ? 1 : 0,
        'code',
        r.code,
        'via',
        r.via,
        'field',
        r.field,
        'reason',
        r.reason,
        'basis',
        r.basis,
      );
    } catch (err) {
      throw toStoreError(err);
    }
  }

  /** Records in arrival order matching every given filter. */
  async query(q: AuditQuery = {}): Promise<AuditPage> {
    const limit = q.limit ?? 100;
    const scanLimit = q.scanLimit ?? 10_000;
    requireInt('limit', limit, 1);
    requireInt('scanLimit', scanLimit, 1);
    let start = q.after !== undefined ? `(${q.after}` : q.sinceMs !== undefined ? `${Math.trunc(q.sinceMs)}` : '-';
    // A bare ms id means ms-0 as a start and ms-<max> as an end, so both bounds are inclusive.
    const end = q.untilMs !== undefined ? `${Math.trunc(q.untilMs)}` : '+';
    const records: AuditEntry[] = [];
    let scanned = 0;
    while (scanned < scanLimit) {
      const count = Math.min(BATCH, scanLimit - scanned);
      let batch: [string, string[]][];
      try {
        batch = await this.redis.xrange(this.key, start, end, 'COUNT', count);
      } catch (err) {
        throw toStoreError(err);
      }
      for (const [id, fields] of batch) {
        scanned++;
        const r = toRecord(id, fields);
        if (matches(r, q)) {
          records.push(r);
          if (records.length === limit) return { records, next: id };
        }
      }
      if (batch.length < count) return { records, next: undefined };
      start = `(${batch[batch.length - 1]![0]}`;
    }
    // Scan budget spent with the range not exhausted: the caller continues from here.
    return { records, next: start.slice(1) };
  }

  /** Entries held now. */
  async length(): Promise<number> {
    return this.redis.xlen(this.key);
  }
}

function matches(r: AuditEntry, q: AuditQuery): boolean {
  return (
    (q.peer === undefined || r.peer === q.peer) &&
    (q.owner === undefined || r.owner === q.owner) &&
    (q.resource === undefined || r.resource === q.resource) &&
    (q.action === undefined || r.action === q.action) &&
    (q.allowed === undefined || r.allowed === q.allowed)
  );
}

function toRecord(id: string, fields: string[]): AuditEntry {
  const f: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i]!] = fields[i + 1]!;
  const code = f.code ?? '';
  return {
    id,
    at: Number(f.at),
    peer: f.peer ?? '',
    owner: f.owner ?? '',
    resource: f.resource ?? '',
    action: (f.action ?? '') as AuditRecord['action'],
    amount: Number(f.amount),
    allowed: f.allowed === '1',
    code: code === 'OK' || isErrorCode(code) ? (code as ErrorCode | 'OK') : 'UNKNOWN_ERROR',
    via: (f.via ?? 'none') as AuditRecord['via'],
    field: f.field ?? '',
    reason: f.reason ?? '',
    basis: f.basis ?? '',
  };
}
