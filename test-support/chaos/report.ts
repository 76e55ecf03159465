/** The chaos summary table (plain text for the terminal, Markdown for docs/chaos.md). */
import type { ScenarioResult } from './scenarios.js';

const ms = (n: number | undefined): string => (n === undefined || Number.isNaN(n) ? '-' : `${Math.round(n)}`);

const COLUMNS = [
  'scenario',
  'peers',
  'sent',
  'acked',
  'delivered',
  'lost',
  'dup',
  'nacks',
  'affected',
  'recover p50 ms',
  'recover max ms',
  'reconnect max ms',
  'bound ms',
  'drain ms',
  'result',
] as const;

function row(r: ScenarioResult): string[] {
  const nacks = Object.values(r.summary.nacks).reduce((a, b) => a + b, 0);
  return [
    r.id,
    String(r.peers),
    String(r.summary.sent),
    String(r.summary.acked),
    String(r.summary.delivered),
    String(r.summary.lost),
    String(r.summary.duplicates),
    String(nacks),
    String(r.affected),
    ms(r.recovery.p50),
    ms(r.recovery.max),
    ms(r.reconnect.max),
    String(r.boundMs),
    ms(r.drainMs),
    r.failures.length === 0 ? 'pass' : 'FAIL',
  ];
}

export function formatTable(results: readonly ScenarioResult[]): string {
  const rows = [COLUMNS as readonly string[], ...results.map(row)];
  const widths = COLUMNS.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const line = (r: readonly string[]) =>
    r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ');
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

export function formatMarkdown(results: readonly ScenarioResult[]): string {
  const head = `| ${COLUMNS.join(' | ')} |`;
  const sep = `| ${COLUMNS.map((_, i) => (i === 0 ? '---' : '---:')).join(' | ')} |`;
  return [head, sep, ...results.map((r) => `| ${row(r).join(' | ')} |`)].join('\n');
}

/** Notes, NACK codes, latency and failures per scenario, one block each. */
export function formatDetails(results: readonly ScenarioResult[]): string {
  const out: string[] = [];
  for (const r of results) {
    const s = r.summary;
    out.push(`${r.id} (${r.title}, ${(r.durationMs / 1000).toFixed(1)} s):`);
    for (const n of r.notes) out.push(`  - ${n}`);
    const nacks = Object.entries(s.nacks);
    if (nacks.length > 0)
      out.push(`  - NACKs (retried with the same id): ${nacks.map(([c, n]) => `${c} ${n}`).join(', ')}`);
    out.push(
      `  - send → delivery p50 ${ms(s.latency.p50)} ms, p99 ${ms(s.latency.p99)} ms, max ${ms(s.latency.max)} ms; ` +
        `unacked ${s.unacked}, delivered without ACK ${s.deliveredUnacked}, misdelivered ${s.misdelivered}`,
    );
    for (const f of r.failures) out.push(`  ! ${f}`);
  }
  return out.join('\n');
}
