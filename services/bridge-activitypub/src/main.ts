/**
 * Entry point: `npm start -w @libertaria/bridge-activitypub` (node
 * dist/main.js) with BRIDGE_AP_* variables set (docs/bridges.md#activitypub).
 */
import { runBridgeService } from '@libertaria/bridge-kit/worker';
import { startActivityPubBridgeService } from './service.js';

await runBridgeService(() => startActivityPubBridgeService(process.env));
