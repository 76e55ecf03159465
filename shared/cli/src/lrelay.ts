/**
 * Entry point of the `lrelay` command (shared/cli/bin/lrelay.js imports the
 * compiled form of this file; in development run it with
 * `node --import tsx shared/cli/src/lrelay.ts`). All logic is in
 * commands.ts; this file only wires the process to it.
 */
import { runLrelay } from './commands.js';

const controller = new AbortController();
// First signal: close the client cleanly; a second one falls through to the default (exit at once).
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => controller.abort());
}

const status = await runLrelay(process.argv.slice(2), {
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  signal: controller.signal,
});
// Output was awaited line by line, so exiting now loses nothing; it also ends a stdin still open.
process.exit(status);
