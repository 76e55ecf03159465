/**
 * @libertaria/cli: the `lrelay` command (bin/lrelay.js runs src/lrelay.ts),
 * exported as a function so tests and tools can drive it in-process.
 */
export {
  CliError,
  type CliIo,
  EXIT_FAILURE,
  EXIT_INTERRUPTED,
  EXIT_OK,
  EXIT_TIMEOUT,
  EXIT_USAGE,
  runLrelay,
  USAGE,
} from './commands.js';
