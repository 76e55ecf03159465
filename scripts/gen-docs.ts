/**
 * Regenerates the tables in docs/ that are derived from code: the error codes
 * (docs/errors.md, from ERROR_CODES), the relay's variables
 * (docs/configuration.md, from relayConfigSpec), the bridges' (the Nostr
 * bridge's in docs/bridges.md, from bridgeNostrConfigSpec; the ActivityPub
 * and XMTP bridges' in docs/configuration.md, from bridgeActivityPubConfigSpec
 * and bridgeXmtpConfigSpec) and the adversarial suite's
 * cases (docs/security.md, from test-support/attack/cases.ts). `npm run docs`. Tests fail
 * when a table is stale, so run this after changing either source.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { describeConfig } from '@libertaria/config';
import { ERROR_CODES } from '@libertaria/protocol';
import { bridgeActivityPubConfigSpec } from '../services/bridge-activitypub/src/config.js';
import { bridgeNostrConfigSpec } from '../services/bridge-nostr/src/config.js';
import { bridgeXmtpConfigSpec } from '../services/bridge-xmtp/src/config.js';
import { relayConfigSpec } from '../services/relay/src/config.js';
import { caseTable } from '../test-support/attack/cases.js';

function replaceBetween(path: string, marker: string, body: string): void {
  const file = new URL(`../${path}`, import.meta.url);
  const doc = readFileSync(file, 'utf8');
  const re = new RegExp(`<!-- ${marker}:begin -->\\n[\\s\\S]*?<!-- ${marker}:end -->`);
  if (!re.test(doc)) throw new Error(`${path}: markers <!-- ${marker}:begin/end --> not found`);
  // A function replacement, so `$` in the table is not read as a replacement pattern.
  writeFileSync(
    file,
    doc.replace(re, () => `<!-- ${marker}:begin -->\n${body.trimEnd()}\n<!-- ${marker}:end -->`),
  );
}

const errorRows = Object.entries(ERROR_CODES).map(
  ([code, info]) => `| \`${code}\` | 0x${info.wire.toString(16).padStart(4, '0')} | ${info.summary} |`,
);
replaceBetween(
  'docs/errors.md',
  'error-codes',
  ['| code | wire | meaning |', '| --- | --- | --- |', ...errorRows].join('\n'),
);
replaceBetween('docs/configuration.md', 'relay-config', describeConfig(relayConfigSpec));
replaceBetween('docs/bridges.md', 'bridge-nostr-config', describeConfig(bridgeNostrConfigSpec));
replaceBetween('docs/configuration.md', 'bridge-activitypub-config', describeConfig(bridgeActivityPubConfigSpec));
replaceBetween('docs/configuration.md', 'bridge-xmtp-config', describeConfig(bridgeXmtpConfigSpec));
replaceBetween('docs/security.md', 'attack-cases', caseTable());
console.log('docs: regenerated docs/errors.md, docs/configuration.md, docs/bridges.md and docs/security.md tables');
