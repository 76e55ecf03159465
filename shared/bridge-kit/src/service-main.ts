/**
 * What every bridge service's `main.ts` does, once: start the service from
 * the environment, close it on SIGTERM or SIGINT (exit 0, or 1 when closing
 * failed), and exit 2 with the message alone on a configuration error.
 */
import { ConfigValidationError } from '@libertaria/config';
import type { BridgeInboundHandler } from './types.js';

export interface ClosableService {
  close(): Promise<void>;
}

export async function runBridgeService(start: () => Promise<ClosableService>): Promise<void> {
  try {
    const service = await start();
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
}

/**
 * The inbound handler of a bridge outside the relay cluster: one log line per
 * message. The text stays out of the log: operators see that a message
 * crossed, not what it says.
 */
export const logInboundWithoutText: BridgeInboundHandler = async (message) => {
  process.stdout.write(
    `${JSON.stringify({ time: new Date().toISOString(), level: 'info', msg: 'inbound', type: message.type, to: message.to, from: message.from.uri, id: message.id })}\n`,
  );
};
