/**
 * The adversarial suite's short variant (issue 12; docs/security.md): a
 * representative case of each kind from test-support/attack/cases.ts, run
 * against one relay process and one private Redis with an honest pair
 * exchanging fast and durable frames throughout. Each case asserts its
 * documented answer, then the runner asserts liveness, the honest pair's
 * delivery and latency, RSS and Redis growth, and no contained internal
 * error. `npm run attack` runs every case.
 *
 * Also: the case table in docs/security.md is the one generated from the
 * list, so the documentation cannot drift from what is tested.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { CASES, caseTable } from '../../../test-support/attack/cases.js';
import { AttackSuite } from '../../../test-support/attack/runner.js';
import { repoPath } from '../../../test-support/paths.js';

describe('the adversarial suite as documented', () => {
  it('has at least 50 cases, with unique ids, each saying what it asserts', () => {
    assert.ok(CASES.length >= 50, `${CASES.length} cases`);
    assert.equal(new Set(CASES.map((c) => c.id)).size, CASES.length, 'duplicate ids');
    for (const c of CASES) {
      assert.match(c.id, /^[A-Z]\d\d$/);
      assert.ok(c.title.length > 0 && c.expect.length > 0, c.id);
    }
  });

  it('the short variant takes a case of every category', () => {
    const categories = new Set(CASES.map((c) => c.category));
    const short = new Set(CASES.filter((c) => c.short).map((c) => c.category));
    assert.deepEqual(
      [...categories].filter((c) => !short.has(c)),
      [],
    );
  });

  it('docs/security.md carries the table generated from the case list (npm run docs)', () => {
    const doc = readFileSync(repoPath('docs', 'security.md'), 'utf8');
    const m = /<!-- attack-cases:begin -->\n([\s\S]*?)\n<!-- attack-cases:end -->/.exec(doc);
    assert.ok(m, 'markers <!-- attack-cases:begin/end --> not found');
    assert.equal(m[1], caseTable(CASES), 'the table is stale: run `npm run docs`');
  });
});

describe('the adversarial suite, short variant', () => {
  const suite = new AttackSuite({ log: (line) => process.stdout.write(`# ${line.replace(/\n/g, '\n# ')}\n`) });
  before(() => suite.start());
  after(() => suite.stop());

  for (const c of CASES.filter((x) => x.short)) {
    it(`${c.id} ${c.title}`, async () => {
      const r = await suite.run(c);
      assert.ok(r.ok, `${c.id}: ${r.problems.join('\n')}`);
    });
  }
});
