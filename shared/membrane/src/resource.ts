/**
 * Resources and actions: what a capability is about.
 *
 * A resource is a URI of one of the schemes the session layer names:
 *   did:<method>:<id>        "may message me": the peer itself (exact only)
 *   feed://my-channel        a channel
 *   chapter://berlin/proposals
 *   service://payment
 *   federated://nostr        a bridge to a foreign network
 * A pattern (in a policy or token) may end in `/*`: every resource strictly
 * below that path; `scheme://*` covers the whole scheme. Paths are segments
 * of unreserved URI characters separated by `/`; empty, `.` and `..`
 * segments are refused, so two spellings can never name one resource and a
 * prefix can never be escaped. DIDs are canonicalized to the did:libertaria
 * form, so did:key and did:libertaria of one key are the same resource.
 */

import { formatLibertariaDid, parseDid } from '@libertaria/identity';
import { LibertariaError } from '@libertaria/protocol';
import { MembraneError } from './membrane-error.js';

export const RESOURCE_SCHEMES = ['did', 'feed', 'chapter', 'service', 'federated'] as const;
export type ResourceScheme = (typeof RESOURCE_SCHEMES)[number];

/** `*` in a capability means every action. */
export const ACTIONS = ['send', 'read', 'write', 'call', 'open'] as const;
export type Action = (typeof ACTIONS)[number];
export type ActionPattern = Action | '*';

const SEGMENT = /^[A-Za-z0-9._~:@!$&'()+,;=%-]+$/;
const PCT = /%(?![0-9A-Fa-f]{2})/;

/** A validated resource pattern: exact, or every resource starting with `prefix`. */
export type ResourcePattern = { kind: 'exact'; uri: string } | { kind: 'prefix'; uri: string; prefix: string };

/**
 * The did:libertaria form of a DID (either method), the form the membrane
 * compares. Throws IdentityError for anything that is not a DID.
 */
export function canonicalDid(did: string): string {
  const parsed = parseDid(did);
  if (parsed.method === 'libertaria') return parsed.did;
  return formatLibertariaDid(parsed.publicKey);
}

function canonicalDidAt(did: string, field: string, code: 'POLICY_INVALID' | 'GRANT_MALFORMED'): string {
  try {
    return canonicalDid(did);
  } catch (err) {
    const detail = err instanceof LibertariaError ? err.message : String(err);
    throw new MembraneError(code, `not a DID: ${detail}`, { field, cause: err });
  }
}

/**
 * Parses a resource pattern; `allowPattern` false accepts exact resources only
 * (the resource of a request). Throws MembraneError with `code` naming `field`.
 */
export function parseResource(
  value: unknown,
  field: string,
  options: { maxLength: number; allowPattern: boolean; code?: 'POLICY_INVALID' | 'GRANT_MALFORMED' | 'BAD_FIELD' },
): ResourcePattern {
  const code = options.code ?? 'POLICY_INVALID';
  if (typeof value !== 'string') throw new MembraneError(code, 'a resource is a string', { field });
  if (value.length === 0 || value.length > options.maxLength) {
    throw new MembraneError(code, `a resource is 1 to ${options.maxLength} characters, got ${value.length}`, {
      field,
    });
  }
  if (value.startsWith('did:')) {
    return { kind: 'exact', uri: canonicalDidAt(value, field, code === 'BAD_FIELD' ? 'POLICY_INVALID' : code) };
  }
  const sep = value.indexOf('://');
  const scheme = sep > 0 ? value.slice(0, sep) : '';
  if (!(RESOURCE_SCHEMES as readonly string[]).includes(scheme) || scheme === 'did') {
    throw new MembraneError(
      code,
      `${JSON.stringify(value)} is not did:… or ${RESOURCE_SCHEMES.slice(1).join('/')}://…`,
      {
        field,
      },
    );
  }
  const path = value.slice(sep + 3);
  if (path === '*') {
    if (!options.allowPattern) throw new MembraneError(code, 'a request names one resource, not a pattern', { field });
    return { kind: 'prefix', uri: value, prefix: `${scheme}://` };
  }
  const segments = path.split('/');
  const wildcard = segments[segments.length - 1] === '*';
  if (wildcard) {
    if (!options.allowPattern) throw new MembraneError(code, 'a request names one resource, not a pattern', { field });
    segments.pop();
  }
  for (const segment of segments) {
    if (segment === '' || segment === '.' || segment === '..' || !SEGMENT.test(segment) || PCT.test(segment)) {
      throw new MembraneError(code, `bad path segment ${JSON.stringify(segment)} in ${JSON.stringify(value)}`, {
        field,
      });
    }
  }
  return wildcard ? { kind: 'prefix', uri: value, prefix: value.slice(0, -1) } : { kind: 'exact', uri: value };
}

/** Whether `pattern` covers the exact resource `uri` (already validated). Allocation-free. */
export function patternMatches(pattern: ResourcePattern, uri: string): boolean {
  return pattern.kind === 'exact'
    ? pattern.uri === uri
    : uri.length > pattern.prefix.length && uri.startsWith(pattern.prefix);
}

/** Whether every resource `child` covers is covered by `parent` (delegation never widens). */
export function patternCovers(parent: ResourcePattern, child: ResourcePattern): boolean {
  if (parent.kind === 'exact') return child.kind === 'exact' && child.uri === parent.uri;
  return child.kind === 'exact' ? patternMatches(parent, child.uri) : child.prefix.startsWith(parent.prefix);
}

export function parseAction(value: unknown, field: string, code: 'POLICY_INVALID' | 'GRANT_MALFORMED'): ActionPattern {
  if (value === '*' || (typeof value === 'string' && (ACTIONS as readonly string[]).includes(value))) {
    return value as ActionPattern;
  }
  throw new MembraneError(code, `an action is one of ${[...ACTIONS, '*'].join(', ')}; got ${JSON.stringify(value)}`, {
    field,
  });
}

export function isAction(value: unknown): value is Action {
  return typeof value === 'string' && (ACTIONS as readonly string[]).includes(value);
}
