/**
 * What the pinned Fedify (@fedify/fedify 2.3.6, which declares Node ≥ 22)
 * needs from Node 20 that Node 20 lacks. Importing this module fills the gap;
 * `@libertaria/bridge-activitypub` imports it first, so anything that runs
 * Fedify through this package has it.
 *
 * - `globalThis.navigator` (Node 21+): Fedify's `importJwk` reads
 *   `navigator?.userAgent` to spot Cloudflare Workers before importing an
 *   Ed25519 key. On Node 20 the name is undeclared, so the read throws
 *   ReferenceError, and every queued outbox delivery by an actor with an
 *   Ed25519 key fails (the queued message carries the keys as JWK; seen
 *   here). The shim is `{ userAgent: 'Node.js/<major>' }`, what Node 21+
 *   answers; it is installed only when Node has none.
 *
 * Known and not filled: `Iterator.from` (Node 22), used by
 * `Router.register` of @fedify/uri-template. Fedify's federation adds its
 * routes one by one (`Router.add`) and never calls it; nothing here may.
 * Both are found by searching Fedify's and its dependencies' dist/ for APIs
 * newer than Node 20 (docs/bridges.md#activitypub-in-progress).
 */
if (!('navigator' in globalThis)) {
  Object.defineProperty(globalThis, 'navigator', {
    value: Object.freeze({ userAgent: `Node.js/${process.versions.node.split('.')[0]}` }),
    configurable: true,
    enumerable: false,
    writable: true,
  });
}

/** True once the gaps above are filled (always, after this module is loaded). */
export const fedifyRuntimeReady: boolean = 'navigator' in globalThis;
