/**
 * Entry point: `npm start -w @libertaria/bridge-xmtp` (node dist/main.js)
 * with BRIDGE_XMTP_* variables set. With BRIDGE_XMTP_LIBERTARIA_RELAYS the
 * bridge joins the relay cluster (docs/bridges.md#federation); without it
 * inbound messages are only logged (without their text).
 */
import { ConfigValidationError } from '@libertaria/config';
import { startXmtpBridgeService } from './service.js';

try {
  const service = await startXmtpBridgeService(process.env, {
    onInbound: async (message) => {
      // The text stays out of the log: operators see that a message crossed, not what it says.
      process.stdout.write(
        `${JSON.stringify({ time: new Date().toISOString(), level: 'info', msg: 'inbound', type: message.type, to: message.to, from: message.from.uri, id: message.id })}\n`,
      );
    },
  });
  const stop = (): void => {
    service.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
} catch (err) {
  if (err instanceof ConfigValidationError) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  throw err;
}
