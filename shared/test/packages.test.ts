/**
 * The packages of shared/ as a set (docs/architecture.md): each has its
 * package.json, entry module, README and tests; a package imports only
 * packages below it in LAYERS and only those it declares; no entry
 * re-exports another package wholesale; no runtime import cycle inside any
 * package. Drawn in one line:
 *
 *   log, redis, protocol  <-  config, identity  <-  crypto, membrane  <-  client  <-  bridge-kit  <-  cli
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { repoPath } from '../../test-support/paths.js';

/** Each package's layer: a package may import only packages of a lower layer. */
const LAYERS: Record<string, number> = {
  log: 0,
  redis: 0,
  protocol: 0,
  config: 1,
  identity: 1,
  crypto: 2,
  membrane: 2,
  client: 3,
  'bridge-kit': 4,
  cli: 5,
};

const shared = repoPath('shared');
const packages = readdirSync(shared).filter((name) => existsSync(join(shared, name, 'package.json')));

function sources(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) sources(path, out);
    else if (name.endsWith('.ts')) out.push(path);
  }
  return out;
}

describe('shared/ packages', () => {
  it('are exactly the layered set, each with package.json, entry, README and tests', () => {
    assert.deepEqual([...packages].sort(), Object.keys(LAYERS).sort());
    for (const name of packages) {
      const manifest = JSON.parse(readFileSync(join(shared, name, 'package.json'), 'utf8'));
      assert.equal(manifest.name, `@libertaria/${name}`);
      assert.equal(manifest.exports['.'].default, './dist/index.js');
      assert.ok(existsSync(join(shared, name, 'src', 'index.ts')), `${name} has src/index.ts`);
      assert.ok(existsSync(join(shared, name, 'README.md')), `${name} has a README`);
      const tests = existsSync(join(shared, name, 'test'))
        ? readdirSync(join(shared, name, 'test')).filter((f) => f.endsWith('.test.ts'))
        : [];
      assert.ok(tests.length > 0 || name === 'log', `${name} has tests`);
    }
  });

  it('import only lower layers, only what they declare, and re-export no package wholesale', () => {
    for (const name of packages) {
      const manifest = JSON.parse(readFileSync(join(shared, name, 'package.json'), 'utf8'));
      const declared = new Set(Object.keys(manifest.dependencies ?? {}));
      for (const file of sources(join(shared, name, 'src'))) {
        const source = readFileSync(file, 'utf8');
        for (const match of source.matchAll(/from '(@libertaria\/([a-z-]+))[^']*'/g)) {
          const [, pkg, other] = match as unknown as [string, string, string];
          assert.ok(other in LAYERS, `${file} imports ${pkg}, which is not a shared package`);
          assert.ok(
            LAYERS[other]! < LAYERS[name]!,
            `${file}: ${name} (layer ${LAYERS[name]}) imports ${other} (layer ${LAYERS[other]})`,
          );
          assert.ok(declared.has(pkg), `${file} imports ${pkg}, missing from ${name}/package.json`);
        }
        assert.doesNotMatch(source, /export \* from '@libertaria\//, `${file} re-exports another package wholesale`);
        assert.doesNotMatch(
          source,
          /from '\.\.\/\.\.\/[a-z-]+\/src\//,
          `${file} reaches into another package's sources`,
        );
      }
    }
  });

  it('have no runtime import cycle inside a package, nor do the services', () => {
    const dirs = [
      ...packages.map((name) => `shared/${name}/src`),
      'services/relay/src',
      'services/bridge-nostr/src',
      'services/bridge-activitypub/src',
      'services/bridge-xmtp/src',
    ];
    const run = spawnSync(process.execPath, [repoPath('scripts/import-cycles.mjs'), ...dirs], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stdout + run.stderr);
  });
});
