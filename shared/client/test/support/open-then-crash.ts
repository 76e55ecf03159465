/**
 * A sealed listener that crashes at the worst moment: it opens one durable
 * message (the session state, with the spent message key, is stored), prints
 * it, and kills itself with SIGKILL before acknowledging it.
 *
 *   node .test-build/shared/client/test/support/open-then-crash.js RELAY_URL KEY_FILE STATE_DIR
 *
 * stdout: one JSON line {"text": "...", "id": "<hex message id>"} (written
 * and flushed before the kill).
 */

import { RelayClient, SessionManager, toHex } from '@libertaria/client';
import { FileSessionStore } from '@libertaria/client/node';
import { nodeCrypto } from '@libertaria/crypto/node';
import { verifyEd25519 } from '@libertaria/identity';
import { readKeyFile } from '@libertaria/identity/node';

const [relayUrl, keyFile, stateDir] = process.argv.slice(2);
if (relayUrl === undefined || keyFile === undefined || stateDir === undefined) {
  process.stderr.write('usage: open-then-crash RELAY_URL KEY_FILE STATE_DIR\n');
  process.exit(2);
}
const identity = await readKeyFile(keyFile);
const sessions = new SessionManager({
  identity,
  store: new FileSessionStore(stateDir),
  provider: nodeCrypto,
  verify: verifyEd25519,
});
const client = new RelayClient({ relays: [relayUrl], identity, sessions });
client.events.on('error', ({ error }) => process.stderr.write(`error: ${error.code}: ${error.message}\n`));
await client.connect();
const first = await client.messages()[Symbol.asyncIterator]().next();
if (first.done) process.exit(1);
const message = first.value;
const line = `${JSON.stringify({ text: new TextDecoder().decode(message.payload), id: toHex(message.messageId) })}\n`;
// Killed once the line is out, before message.ack(): the relay still holds the frame.
process.stdout.write(line, () => process.kill(process.pid, 'SIGKILL'));
