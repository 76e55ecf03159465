/**
 * Where the repository is, for tests that read its files (docs, vectors,
 * sources) or start its programs. Tests run compiled, from `.test-build/`
 * (see scripts/run-tests.mjs), so a path relative to `import.meta.url` would
 * point into the build folder; every such path goes through here instead.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT_PACKAGE = 'libertaria-relay-cluster';

function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (
      existsSync(manifest) &&
      (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === ROOT_PACKAGE
    ) {
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`test-support/paths: no ${ROOT_PACKAGE} package.json above ${import.meta.url}`);
    dir = parent;
  }
}

/** The repository's root folder. */
export const REPO_ROOT = findRepoRoot();

/** A path inside the repository, from its root: `repoPath('docs', 'crypto.md')`. */
export function repoPath(...parts: string[]): string {
  return join(REPO_ROOT, ...parts);
}

/** The `lrelay` CLI as users run it: the compiled entry point (`tsc -b` builds it before the tests). */
export const LRELAY_ENTRY = repoPath('shared', 'cli', 'dist', 'lrelay.js');
