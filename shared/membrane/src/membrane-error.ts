import { type ErrorCode, LibertariaError } from '@libertaria/protocol';

/**
 * A policy, grant token or access decision the membrane refuses. `field` is
 * the JSON path of the offending value (`capabilities[2].conditions[0].max`,
 * `links[1].payload.exp`) when there is one, so a policy author can find it.
 */
export class MembraneError extends LibertariaError {
  readonly field: string | undefined;
  constructor(code: ErrorCode, message: string, options?: { field?: string; cause?: unknown }) {
    super(code, options?.field === undefined ? message : `${options.field}: ${message}`, options);
    this.field = options?.field;
  }
}
