/** The error a Redis failure becomes for a peer: STORE_UNAVAILABLE, with what Redis said. */
import { LibertariaError, RelayError } from '@libertaria/protocol';

/** Redis failed or did not confirm: STORE_UNAVAILABLE (retryable). Our own refusals pass through unchanged. */
export function toStoreError(err: unknown): LibertariaError {
  if (err instanceof LibertariaError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return new RelayError('STORE_UNAVAILABLE', `Redis did not confirm: ${detail}`, { cause: err });
}
