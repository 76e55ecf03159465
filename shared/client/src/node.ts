/** Node-only parts of the client SDK: the file-backed session and relay-pin stores the CLI and services use. */
export { FileRelayPinStore, relayPinsFile } from './relay-pins-file.js';
export { FileSessionStore, stateDirForKeyFile } from './session-store-file.js';
