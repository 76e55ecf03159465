/**
 * The chaos suite's short variant (`npm run chaos` is the full one; see
 * docs/chaos.md): real relay processes on a real Redis with AOF, peers on
 * the real client SDK, faults injected with kill -9 and a TCP proxy. Each
 * scenario asserts that no ACKed frame is lost, none reaches an application
 * twice, and every peer the fault hit is back within the scenario's bound.
 * About 75 s on 2 cores.
 *
 * The ledger that decides those guarantees is tested first, on its own, so
 * a scenario cannot pass because the bookkeeping looked away.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { encodePayload, Ledger, quantiles } from '../../../test-support/chaos/ledger.js';
import { formatDetails, formatTable } from '../../../test-support/chaos/report.js';
import { CI_SCALE, runScenario, SCENARIOS, type ScenarioResult } from '../../../test-support/chaos/scenarios.js';

describe('chaos ledger', () => {
  const send = (ledger: Ledger, id: string, from: number, to: number, seq: number, sentAt = 1000) =>
    ledger.sent({ id, from, to, seq, sentAt });

  it('counts sent, ACKed and delivered frames, and reports an ACKed frame never delivered as lost', () => {
    const ledger = new Ledger();
    send(ledger, 'a', 0, 1, 0);
    send(ledger, 'b', 0, 1, 1);
    send(ledger, 'c', 0, 2, 2);
    ledger.acked('a', 1010);
    ledger.acked('b', 1020);
    ledger.delivered(1, 0, 'a', encodePayload(0, 0, 64), 1050);
    assert.equal(ledger.pending(), 1);
    assert.equal(ledger.unacked(), 1);
    const s = ledger.summary();
    assert.deepEqual(
      {
        sent: s.sent,
        acked: s.acked,
        delivered: s.delivered,
        lost: s.lost,
        duplicates: s.duplicates,
        unacked: s.unacked,
      },
      { sent: 3, acked: 2, delivered: 1, lost: 1, duplicates: 0, unacked: 1 },
    );
    assert.equal(ledger.lostFrames()[0]?.id, 'b');
    assert.equal(s.latency.max, 50);
  });

  it('counts a second delivery of the same frame as a duplicate, and a delivery without ACK as allowed', () => {
    const ledger = new Ledger();
    send(ledger, 'a', 3, 4, 7);
    ledger.delivered(4, 3, 'a', encodePayload(3, 7, 64));
    ledger.delivered(4, 3, 'a', encodePayload(3, 7, 64));
    const s = ledger.summary();
    assert.equal(s.duplicates, 1);
    assert.equal(s.deliveredUnacked, 1);
    assert.equal(s.lost, 0);
    assert.match(ledger.problems[0] ?? '', /duplicate/);
  });

  it('flags deliveries that contradict what was sent', () => {
    const ledger = new Ledger();
    send(ledger, 'a', 0, 1, 0);
    send(ledger, 'b', 0, 1, 1);
    ledger.delivered(2, 0, 'a', encodePayload(0, 0, 64)); // wrong recipient
    ledger.delivered(1, 5, 'a', encodePayload(0, 0, 64)); // wrong verified sender
    ledger.delivered(1, 0, 'a', encodePayload(0, 1, 64)); // payload of another frame
    ledger.delivered(1, 0, 'zz', encodePayload(0, 0, 64)); // unknown id
    ledger.delivered(1, 0, 'b', new Uint8Array(4)); // not our payload
    assert.equal(ledger.summary().misdelivered, 5);
    assert.equal(ledger.summary().delivered, 0);
  });

  it('finds the first ACK of a peer at or after a time, and NACKs by code', () => {
    const ledger = new Ledger();
    for (let i = 0; i < 5; i++) send(ledger, `f${i}`, 1, 2, i);
    for (let i = 0; i < 5; i++) ledger.acked(`f${i}`, 100 * (i + 1));
    ledger.acked('f0', 999); // a second ACK changes nothing
    assert.equal(ledger.firstAckAfter(1, 250), 300);
    assert.equal(ledger.firstAckAfter(1, 300), 300);
    assert.equal(ledger.firstAckAfter(1, 501), undefined);
    assert.equal(ledger.firstAckAfter(9, 0), undefined);
    ledger.nacked('f1', 'STORE_UNAVAILABLE');
    ledger.nacked('f1', 'STORE_UNAVAILABLE');
    assert.deepEqual(ledger.summary().nacks, { STORE_UNAVAILABLE: 2 });
    assert.equal(ledger.frames.get('f1')?.nacks, 2);
  });

  it('computes quantiles', () => {
    assert.deepEqual(quantiles([5, 1, 3, 2, 4]), { n: 5, p50: 3, p99: 5, max: 5 });
    assert.ok(Number.isNaN(quantiles([]).max));
  });
});

describe('chaos (CI scale)', { timeout: 240_000 }, () => {
  const results: ScenarioResult[] = [];
  after(() => {
    if (results.length === 0) return;
    process.stdout.write(`\n${formatTable(results)}\n\n${formatDetails(results)}\n`);
  });

  for (const id of SCENARIOS) {
    it(`${id}: nothing ACKed lost, nothing delivered twice, every peer back within the bound`, async () => {
      const result = await runScenario(id, CI_SCALE);
      results.push(result);
      assert.deepEqual(result.failures, [], formatDetails([result]));
      assert.ok(result.summary.acked > 0);
      assert.equal(result.summary.lost, 0);
      assert.equal(result.summary.duplicates, 0);
      assert.ok(result.affected > 0, 'the fault hit some peers');
    });
  }
});
