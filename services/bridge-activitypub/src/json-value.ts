/**
 * Canonical JSON: what the Fedify adapters store in Redis. The value goes
 * through JSON once (toJSON applies, `undefined` members disappear), then
 * every object's keys are sorted, so one JSON value always has one encoding:
 * the KvStore compares stored and expected values byte for byte in Redis
 * (compare-and-swap in one script), and the message queue hashes messages
 * without an id into stable job ids.
 */

/** The canonical encoding of `value`, or undefined when JSON has none (undefined, a function, a symbol). */
export function canonicalJson(value: unknown): string | undefined {
  let plain: string | undefined;
  try {
    plain = JSON.stringify(value);
  } catch (error) {
    throw new TypeError(`value is not JSON-encodable: ${(error as Error).message}`);
  }
  if (plain === undefined) return undefined;
  return JSON.stringify(sortKeys(JSON.parse(plain)));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value === null || typeof value !== 'object') return value;
  // A null-prototype object keeps a member named "__proto__" as data.
  const out: Record<string, unknown> = Object.create(null);
  const source = value as Record<string, unknown>;
  for (const key of Object.keys(source).sort()) out[key] = sortKeys(source[key]);
  return out;
}

/** Bytes of a string in UTF-8. */
export function utf8Length(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}
