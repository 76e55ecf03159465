/**
 * `npm run attack`: the whole adversarial suite (docs/security.md): every
 * case of test-support/attack/cases.ts against one relay process and one
 * private Redis, an honest pair exchanging fast and durable frames beside.
 *
 *   npm run attack                         # every case (a few minutes)
 *   npm run attack -- --short              # the short variant `npm test` runs
 *   npm run attack -- --only F03,H15,slow-reader   # case ids or categories
 *   npm run attack -- --json out.json      # also write the results as JSON
 *   npm run attack -- --only S01 --repeat 5  # the selection 5 times on one relay (a leak shows as RSS that keeps growing)
 *
 * Prints one line per case and a summary; exits 1 if any case failed.
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { CASES } from '../test-support/attack/cases.js';
import { AttackSuite, type CaseResult, MiB } from '../test-support/attack/runner.js';

const { values } = parseArgs({
  options: {
    only: { type: 'string' },
    short: { type: 'boolean', default: false },
    json: { type: 'string' },
    repeat: { type: 'string', default: '1' },
  },
});

const only = values.only?.split(',').map((s) => s.trim());
const selected = CASES.filter(
  (c) => (!values.short || c.short) && (only === undefined || only.includes(c.id) || only.includes(c.category)),
);
if (selected.length === 0) {
  process.stderr.write(`attack: no case matches ${values.only}\n`);
  process.exit(2);
}

const t0 = Date.now();
const log = (line: string) => process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${line}\n`);
log(`${selected.length} cases on ${cpus().length} cores, load ${loadavg()[0]!.toFixed(1)}`);
const suite = new AttackSuite({ log });
const results: CaseResult[] = [];
try {
  await suite.start();
  const repeat = Number(values.repeat);
  for (let round = 1; round <= repeat; round++) {
    for (const c of selected) results.push(await suite.run(c));
    if (repeat > 1) {
      const t = await suite.totals();
      log(
        `round ${round}/${repeat}: relay RSS ${(t.rss / MiB).toFixed(0)} MiB (+${(t.rssGrowth / MiB).toFixed(1)} MiB)`,
      );
    }
  }
  const totals = await suite.totals();
  log(
    `whole run: relay RSS ${(totals.rss / MiB).toFixed(0)} MiB (+${(totals.rssGrowth / MiB).toFixed(1)} MiB), ` +
      `Redis +${(totals.redisGrowth / MiB).toFixed(1)} MiB`,
  );
} finally {
  await suite.stop();
}
const failed = results.filter((r) => !r.ok);
const seconds = (Date.now() - t0) / 1000;
log(
  `${results.length - failed.length}/${results.length} cases passed in ${seconds.toFixed(0)} s (load ${loadavg()[0]!.toFixed(1)})` +
    (failed.length > 0 ? `; failed: ${failed.map((r) => r.id).join(', ')}` : ''),
);
if (values.json) writeFileSync(values.json, JSON.stringify({ seconds, results }, null, 2));
process.exit(failed.length > 0 ? 1 : 0);
