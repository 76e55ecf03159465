/**
 * Runs one of the repository's scripts (a benchmark, say) with tsx, as
 * `npm run` would, and returns its exit code and everything it printed: the
 * tests that keep the benchmarks working run them in small this way.
 */
import { spawn } from 'node:child_process';
import { ownChild } from './children.js';
import { REPO_ROOT } from './paths.js';

export async function runRepoScript(
  script: string,
  env: Record<string, string>,
): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', script], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  ownChild(child);
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { code, output };
}
