/**
 * Entry point: `npm start -w @libertaria/bridge-activitypub` (node
 * dist/main.js) with BRIDGE_AP_* variables set (docs/bridges.md#activitypub).
 */
import { ConfigValidationError } from '@libertaria/config';
import { startActivityPubBridgeService } from './service.js';

try {
  const service = await startActivityPubBridgeService(process.env);
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
