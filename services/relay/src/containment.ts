/**
 * Process-level containment for the relay (docs/relay.md#containment).
 */

/** Where contained errors go: RelayNode counts them in relay_internal_errors_total{where} and logs them. */
export interface ContainmentSink {
  internalError(where: string, err: unknown): void;
}

/**
 * The last line of containment (docs/relay.md#containment). Every peer,
 * timer and promise handler already catches what it can throw and closes only
 * its own connection; whatever still escapes is a bug, and is counted in
 * relay_internal_errors_total{where="unhandled_rejection"|"uncaught_exception"}
 * and logged with its stack.
 *
 * Both keep the process running. For a rejection this is plainly safe: no
 * stack was unwound, only one promise chain stopped. For an uncaught
 * exception Node's advice is to exit, because the throw may have left state
 * half-updated. We keep running anyway, because here:
 *  - exiting would turn any one remaining bug reachable from a peer into a
 *    remote kill switch for every connection on the node (issue 12: one
 *    frame took a node down), which is the outcome containment exists to avoid;
 *  - what such a throw can leave half-updated is in-memory, per-node and
 *    rebuilt from Redis: the router's table and presence are re-registered by
 *    the heartbeat and by reconnecting peers, durable frames stay in Redis
 *    until acknowledged, so the worst case is lost fast frames or a stuck
 *    connection that its idle timeout ends;
 *  - the counter makes it visible: alert on relay_internal_errors_total > 0,
 *    and drain the node (SIGTERM) if /readyz or the error rate says it is sick.
 * main.ts installs them once the node serves, so a startup failure still
 * rejects main() and exits 1.
 */
export function installProcessHandlers(node: ContainmentSink): void {
  const contain = (where: string, err: unknown): void => {
    try {
      node.internalError(where, err);
    } catch {
      // A throw inside these handlers would exit the process after all: the count is lost, the node stays.
    }
  };
  process.on('unhandledRejection', (reason: unknown) => contain('unhandled_rejection', reason));
  process.on('uncaughtException', (err: Error) => contain('uncaught_exception', err));
}
