/**
 * Entry point: `npm start -w @libertaria/bridge-xmtp` (node dist/main.js)
 * with BRIDGE_XMTP_* variables set. With BRIDGE_XMTP_LIBERTARIA_RELAYS the
 * bridge joins the relay cluster (docs/bridges.md#federation); without it
 * inbound messages are only logged (without their text).
 */
import { logInboundWithoutText, runBridgeService } from '@libertaria/bridge-kit/worker';
import { startXmtpBridgeService } from './service.js';

await runBridgeService(() => startXmtpBridgeService(process.env, { onInbound: logInboundWithoutText }));
