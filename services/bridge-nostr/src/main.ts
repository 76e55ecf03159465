/**
 * Entry point: `node services/bridge-nostr/dist/main.js` with BRIDGE_NOSTR_*
 * variables set. With BRIDGE_NOSTR_REDIS_URL the bridge joins the relay
 * cluster (docs/bridges.md#federation); without it inbound messages are only
 * logged (without their text).
 */
import { logInboundWithoutText, runBridgeService } from '@libertaria/bridge-kit/worker';
import { startNostrBridgeService } from './service.js';

await runBridgeService(() => startNostrBridgeService(process.env, { onInbound: logInboundWithoutText }));
