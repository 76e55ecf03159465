/**
 * What the drift test compares: the metric names that the shipped Grafana
 * dashboard and Prometheus alert rules use, read out of their PromQL.
 */
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { repoPath } from '../../test-support/paths.js';

export const DASHBOARD = repoPath('deploy', 'grafana', 'dashboards', 'relay-cluster.json');
export const ALERTS = repoPath('deploy', 'prometheus', 'alerts.yml');

/** Series Prometheus makes itself, not the services. */
const PROMETHEUS_OWN = new Set(['up']);

/** Every PromQL expression of the dashboard (panel targets and template queries), with where it is. */
export function dashboardExpressions(): { where: string; expr: string }[] {
  const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    panels: { title: string; targets?: { expr: string }[] }[];
    templating: { list: { name: string; query?: unknown; definition?: string }[] };
  };
  const out: { where: string; expr: string }[] = [];
  for (const panel of dash.panels) {
    for (const t of panel.targets ?? []) out.push({ where: `dashboard panel "${panel.title}"`, expr: t.expr });
  }
  for (const v of dash.templating.list) {
    // label_values(metric, label): the second argument is a label, not a metric.
    const expr = v.definition?.replace(/^label_values\(\s*([^,]+?)\s*,[^)]*\)$/, '$1');
    if (expr) out.push({ where: `dashboard variable $${v.name}`, expr });
  }
  return out;
}

/** Every alert rule's expression. */
export function alertExpressions(): { where: string; expr: string }[] {
  const doc = parse(readFileSync(ALERTS, 'utf8')) as { groups: { rules: { alert: string; expr: string }[] }[] };
  return doc.groups.flatMap((g) => g.rules.map((r) => ({ where: `alert ${r.alert}`, expr: String(r.expr) })));
}

/**
 * The metric names an expression reads: identifiers outside label matchers
 * `{…}`, strings, grouping clauses `by (…)`/`without (…)`, range/offset
 * brackets and Grafana's `$variables`, that are not PromQL functions,
 * aggregations or keywords.
 */
export function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b\d+(?:\.\d+)?(?:ms|[smhdwy])?\b/g, '')
    .replace(/\$\{?\w+\}?/g, '');
  const names = new Set<string>();
  for (const m of stripped.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const word = m[0];
    const next = stripped.slice((m.index ?? 0) + word.length).trimStart();
    if (next.startsWith('(')) continue; // a function or aggregation call
    if (/^(?:and|or|unless|bool|offset|by|without|on|ignoring|inf|nan|le)$/i.test(word)) continue;
    if (/^\d/.test(word)) continue;
    names.add(word);
  }
  return [...names];
}

/** Names in a Prometheus text exposition (# TYPE lines), histogram and summary series included. */
export function exportedNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const line of exposition.split('\n')) {
    const m = /^# TYPE (\S+) (\S+)/.exec(line);
    if (!m) continue;
    const [, name, type] = m as unknown as [string, string, string];
    names.add(name);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s);
    if (type === 'summary') for (const s of ['_sum', '_count']) names.add(name + s);
  }
  return names;
}

export function isPrometheusOwn(name: string): boolean {
  return PROMETHEUS_OWN.has(name);
}
