/**
 * Entry point of a relay node: `node services/relay/dist/main.js`, configured
 * only by environment variables (docs/configuration.md). Prints one JSON line
 * `{"msg":"listening","ws":…,"tcp":…,"admin":…}` once it serves. SIGTERM or
 * SIGINT drains within RELAY_DRAIN_TIMEOUT_MS, then exits.
 */
import { ConfigError } from '@libertaria/protocol';
import { loadRelayConfig, type RelayConfig } from './config.js';
import { installProcessHandlers } from './containment.js';
import { loadRelayIdentity } from './identity-key.js';
import { RelayNode } from './relay-node.js';

async function main(): Promise<void> {
  let config: RelayConfig;
  let identity: Awaited<ReturnType<typeof loadRelayIdentity>>;
  try {
    config = loadRelayConfig();
    identity = await loadRelayIdentity(config);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`relay: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const node = await RelayNode.start(config, identity);
  // Only once the node serves: a startup failure still rejects main() and exits 1.
  installProcessHandlers(node);
  node.log.info('listening', {
    nodeId: node.nodeId,
    ws: node.ports.ws,
    tcp: node.ports.tcp,
    admin: node.ports.admin,
    // What clients pin: ws://host:port#<did> (docs/relay.md#relay-identity).
    did: node.did,
  });

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    node.log.info('stopping', { signal, drainTimeoutMs: config.RELAY_DRAIN_TIMEOUT_MS });
    const deadline = setTimeout(() => {
      node.log.error('drain did not finish in time; exiting', { drainTimeoutMs: config.RELAY_DRAIN_TIMEOUT_MS });
      process.exit(1);
    }, config.RELAY_DRAIN_TIMEOUT_MS);
    deadline.unref();
    node.drain().then(
      () => process.exit(0),
      (err: unknown) => {
        node.log.error('drain failed', { err });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`relay: failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
