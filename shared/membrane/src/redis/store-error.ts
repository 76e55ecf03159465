import { LibertariaError, RelayError } from '@libertaria/protocol';

/** Any Redis failure as STORE_UNAVAILABLE (the membrane then fails closed); our own errors pass through. */
export function toStoreError(err: unknown): LibertariaError {
  if (err instanceof LibertariaError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return new RelayError('STORE_UNAVAILABLE', `Redis did not answer: ${detail}`, { cause: err });
}

/** Throws BAD_FIELD unless `value` is a safe integer >= min. */
export function requireInt(name: string, value: number, min: number): void {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new RelayError('BAD_FIELD', `${name} must be an integer >= ${min}, got ${value}`);
  }
}
