/**
 * `npm run chaos`: the full chaos suite (docs/chaos.md). Real relay processes,
 * a real Redis with AOF, the real client SDK, faults through a TCP proxy.
 *
 *   npm run chaos                          # every scenario at full size (several minutes)
 *   npm run chaos -- --only kill,partition # some of them
 *   npm run chaos -- --scale ci            # the sizes `npm test` uses
 *   npm run chaos -- --peers 300           # override the kill scenario's fleet size
 *   npm run chaos -- --json out.json       # also write the results as JSON
 *   npm run chaos -- --only delay --set delay.directions='["both"]' \
 *     --set delay.client='{"ackTimeoutMs":30000}'   # any scale field, value as JSON (or a bare string)
 *
 * Prints a summary table and exits 1 if any scenario broke a guarantee.
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { installCrashGuard } from '../test-support/chaos/crash-guard.js';
import { formatDetails, formatMarkdown, formatTable } from '../test-support/chaos/report.js';
import {
  CI_SCALE,
  FULL_SCALE,
  runScenario,
  SCENARIOS,
  type Scale,
  type ScenarioId,
  type ScenarioResult,
} from '../test-support/chaos/scenarios.js';

const { values } = parseArgs({
  options: {
    only: { type: 'string' },
    scale: { type: 'string', default: 'full' },
    peers: { type: 'string' },
    json: { type: 'string' },
    markdown: { type: 'boolean', default: false },
    set: { type: 'string', multiple: true },
  },
});

function fail(message: string): never {
  process.stderr.write(`chaos: ${message}\n`);
  process.exit(2);
}

const base = values.scale === 'ci' ? CI_SCALE : values.scale === 'full' ? FULL_SCALE : fail('--scale is ci or full');
const scale: Scale = structuredClone(base);
if (values.peers !== undefined) {
  const n = Number(values.peers);
  if (!Number.isInteger(n) || n < 2) fail('--peers must be an integer of at least 2');
  scale.kill.peers = n;
}
for (const assignment of values.set ?? []) {
  const eq = assignment.indexOf('=');
  const path = eq > 0 ? assignment.slice(0, eq).split('.') : [];
  const [group, key] = path;
  if (path.length !== 2 || group === undefined || key === undefined)
    fail(`--set wants scenario.field=value, got ${assignment}`);
  const target = (scale as unknown as Record<string, Record<string, unknown>>)[group];
  if (typeof target !== 'object' || target === null) fail(`--set: no scenario ${group}`);
  const raw = assignment.slice(eq + 1);
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    value = raw;
  }
  target[key] = value;
}
const only = values.only?.split(',').map((s) => s.trim()) ?? [...SCENARIOS];
for (const id of only)
  if (!SCENARIOS.includes(id as ScenarioId)) fail(`unknown scenario ${id} (${SCENARIOS.join(', ')})`);

// The SDK's known WebSocket crash is counted and reported as a failure instead of ending the run.
installCrashGuard();
const t0 = Date.now();
const loadBefore = loadavg()[0]!.toFixed(1);
const log = (line: string) => process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${line}\n`);
const results: ScenarioResult[] = [];
for (const id of only as ScenarioId[]) {
  log(`${id}: starting (${scale.name} scale)`);
  const result = await runScenario(id, scale, log);
  results.push(result);
  log(`${id}: ${result.failures.length === 0 ? 'pass' : `FAIL: ${result.failures.join('; ')}`}`);
}

// The load average says how much else ran on the machine: these figures are not comparable across loads.
const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, load average ${loadBefore} → ${loadavg()[0]!.toFixed(1)}`;
process.stdout.write(`\nchaos (${scale.name} scale), ${new Date().toISOString()}, ${machine}\n\n`);
process.stdout.write(
  `${values.markdown ? formatMarkdown(results) : formatTable(results)}\n\n${formatDetails(results)}\n`,
);
if (values.json !== undefined) {
  writeFileSync(
    values.json,
    `${JSON.stringify({ scale: scale.name, at: new Date().toISOString(), machine, results }, null, 2)}\n`,
  );
}
process.exit(results.every((r) => r.failures.length === 0) ? 0 : 1);
