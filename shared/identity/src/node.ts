/**
 * Node-only parts of @libertaria/identity: key files on disk (atomic,
 * owner-only writes) and OpenSSL public-key objects.
 */
export { publicKeyObject } from './ed25519-node.js';
export {
  decodeKeyFile,
  encodeKeyFile,
  KEY_FILE_MODE,
  KEY_FILE_TYPE,
  KEY_FILE_VERSION,
  type KeyFileContents,
  readKeyFile,
  type WriteKeyFileOptions,
  writeKeyFile,
} from './keyfile.js';
