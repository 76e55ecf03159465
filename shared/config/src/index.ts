/**
 * A small typed reader for environment configuration.
 *
 * A service declares its variables once, as a spec whose keys ARE the
 * environment variable names and whose values are field builders carrying the
 * default, the accepted values and the documentation:
 *
 *   const spec = {
 *     RELAY_WS_PORT: port({ default: 8080, doc: 'WebSocket listener port' }),
 *     RELAY_LOG_LEVEL: oneOf(['debug', 'info'], { default: 'info', doc: 'log threshold' }),
 *   } satisfies ConfigSpec;
 *   const config = readConfig(spec, process.env, { prefix: 'RELAY_' });
 *   config.RELAY_WS_PORT; // number
 *
 * `readConfig` is the only thing that should look at `process.env`. It trims
 * every value, treats an empty value as unset, applies defaults, validates, and
 * reports every problem at once in one `ConfigValidationError`. Values of
 * `secret` fields are never echoed; credentials in URLs are masked.
 *
 * Field presence follows the `default` option:
 *   - `default: value`     → unset takes the default; the type is `T`;
 *   - `default: undefined` → the variable is optional; the type is `T | undefined`
 *                            (`optional(field)` does the same);
 *   - no `default` key     → the variable is required; the type is `T`.
 */
import { ConfigError } from '@libertaria/protocol';

/** Where values come from: `process.env` or any plain record of strings. */
export type Env = Readonly<Record<string, string | undefined>>;

export type FieldKind = 'int' | 'port' | 'str' | 'url' | 'oneOf' | 'bool';

/** What happens when the variable is unset (absent, empty or only whitespace). */
export type Presence = 'default' | 'optional' | 'required';

export type Parsed<T> = { readonly ok: true; readonly value: T } | { readonly ok: false };

/** One variable of a spec. Build it with `int`, `port`, `str`, `url`, `oneOf`, `bool` or `optional`. */
export interface Field<T> {
  readonly kind: FieldKind;
  /** Markdown description, shown by `describeConfig`. */
  readonly doc: string;
  /** A secret value is never echoed in error messages or docs. */
  readonly secret: boolean;
  readonly presence: Presence;
  /** The value used when the variable is unset and `presence` is `'default'`. */
  readonly defaultValue: T | undefined;
  /** The default as an operator would write it (URL credentials masked); undefined when there is none. */
  readonly defaultText: string | undefined;
  /** What the variable accepts, in plain text for messages or markdown for docs. */
  accepted(style: 'text' | 'markdown'): string;
  /** Parses a trimmed, non-empty value. */
  parse(raw: string): Parsed<T>;
}

export type ConfigSpec = Readonly<Record<string, Field<unknown>>>;

/** The typed result of reading `S`: one property per variable. */
export type ConfigOf<S extends ConfigSpec> = {
  readonly [K in keyof S]: S[K] extends Field<infer T> ? T : never;
};

/** One thing wrong with the environment; `message` names the variable and stands on its own. */
export interface ConfigProblem {
  readonly variable: string;
  readonly message: string;
}

/**
 * Every problem found while reading a configuration. `variable` (from
 * `ConfigError`) is the first bad variable; the message lists each problem on
 * its own line.
 */
export class ConfigValidationError extends ConfigError {
  readonly problems: readonly ConfigProblem[];
  constructor(problems: readonly ConfigProblem[]) {
    const first = problems[0];
    if (first === undefined) throw new TypeError('ConfigValidationError needs at least one problem');
    const header =
      problems.length === 1
        ? 'invalid configuration (1 problem):'
        : `invalid configuration (${problems.length} problems):`;
    super(first.variable, [header, ...problems.map((p) => `  - ${p.message}`)].join('\n'));
    this.problems = Object.freeze(problems.map((p) => Object.freeze({ variable: p.variable, message: p.message })));
  }
}

export interface ReadConfigOptions<C> {
  /**
   * Variables starting with this prefix (or any of these prefixes) that the
   * spec does not name are reported as problems, with the closest known name
   * suggested: a typo such as `RELAY_WS_PROT` must not silently fall back to a
   * default.
   */
  readonly prefix?: string | readonly string[];
  /**
   * Cross-field checks. Runs only when every variable on its own is valid, and
   * its problems are reported together with the others.
   */
  readonly validate?: (config: C) => readonly ConfigProblem[];
}

// ---------------------------------------------------------------------------
// Field builders

interface CommonOptions {
  /** Markdown description for `describeConfig`. */
  readonly doc: string;
}

/** The result type of a builder: `T`, or `T | undefined` when `default` may be undefined. */
type Out<O, T> = 'default' extends keyof O ? (undefined extends O['default' & keyof O] ? T | undefined : T) : T;

export interface IntOptions extends CommonOptions {
  readonly default?: number | undefined;
  /** Smallest accepted value; defaults to `Number.MIN_SAFE_INTEGER`. */
  readonly min?: number;
  /** Largest accepted value; defaults to `Number.MAX_SAFE_INTEGER`. */
  readonly max?: number;
}

export interface PortOptions extends CommonOptions {
  readonly default?: number | undefined;
}

export interface StrOptions extends CommonOptions {
  readonly default?: string | undefined;
  /** The whole value must match (the pattern is anchored at both ends automatically). */
  readonly pattern?: RegExp;
  /** Longest accepted value, in UTF-16 code units. */
  readonly maxLength?: number;
  /** Never echo the value in messages or docs. */
  readonly secret?: boolean;
  /** Replaces the generated description of accepted values (plain text, also used in markdown). */
  readonly accepted?: string;
}

export interface UrlOptions extends CommonOptions {
  readonly default?: string | undefined;
  /** Accepted URL schemes, e.g. `['redis:', 'rediss:']` (the trailing colon is optional). */
  readonly protocols: readonly string[];
  /** Never echo the value in messages or docs (credentials are masked even without this). */
  readonly secret?: boolean;
}

export interface OneOfOptions<C extends string> extends CommonOptions {
  readonly default?: C | undefined;
}

export interface BoolOptions extends CommonOptions {
  readonly default?: boolean | undefined;
}

interface FieldParts<T> {
  readonly kind: FieldKind;
  readonly doc: string;
  readonly secret?: boolean;
  readonly accepted: (style: 'text' | 'markdown') => string;
  readonly parse: (raw: string) => Parsed<T>;
  /** How a value is written in the environment. */
  readonly unparse: (value: T) => string;
}

function presenceOf(options: object): Presence {
  if (!('default' in options)) return 'required';
  return (options as { default?: unknown }).default === undefined ? 'optional' : 'default';
}

function makeField<T>(parts: FieldParts<T>, options: { readonly default?: T | undefined }): Field<T> {
  const presence = presenceOf(options);
  const secret = parts.secret ?? false;
  let defaultValue: T | undefined;
  let defaultText: string | undefined;
  if (presence === 'default') {
    defaultValue = options.default as T;
    const written = parts.unparse(defaultValue);
    // A default the field itself would reject is a bug in the spec, not in the environment.
    if (!parts.parse(written).ok) {
      throw new TypeError(`default ${JSON.stringify(written)} is not ${parts.accepted('text')}`);
    }
    defaultText = parts.kind === 'url' ? maskUrlCredentials(written) : written;
  }
  return Object.freeze({
    kind: parts.kind,
    doc: parts.doc,
    secret,
    presence,
    defaultValue,
    defaultText,
    accepted: parts.accepted,
    parse: parts.parse,
  });
}

const INTEGER = /^-?\d+$/;

function checkBound(name: string, value: number | undefined): void {
  if (value !== undefined && !Number.isSafeInteger(value)) {
    throw new TypeError(`${name} must be a safe integer, got ${value}`);
  }
}

function intParts(
  kind: 'int' | 'port',
  doc: string,
  min: number | undefined,
  max: number | undefined,
): FieldParts<number> {
  checkBound('min', min);
  checkBound('max', max);
  if (min !== undefined && max !== undefined && min > max) throw new TypeError(`min ${min} is greater than max ${max}`);
  const lo = min ?? Number.MIN_SAFE_INTEGER;
  const hi = max ?? Number.MAX_SAFE_INTEGER;
  // Unbounded sides show the safe-integer limit: larger digits no longer name one number.
  const text = `an integer from ${lo} to ${hi}`;
  return {
    kind,
    doc,
    accepted: () => text,
    parse(raw) {
      if (!INTEGER.test(raw)) return { ok: false };
      const value = Number(raw);
      if (!Number.isSafeInteger(value) || value < lo || value > hi) return { ok: false };
      return { ok: true, value: value === 0 ? 0 : value }; // no -0
    },
    unparse: String,
  };
}

/** An integer written as decimal digits with an optional minus sign (no `1e3`, `0x10`, `+1`, `1.0`). */
export function int<O extends IntOptions>(options: O): Field<Out<O, number>> {
  return makeField(intParts('int', options.doc, options.min, options.max), options) as Field<Out<O, number>>;
}

/** A TCP port from 0 to 65535; 0 asks the operating system for a free port. */
export function port<O extends PortOptions>(options: O): Field<Out<O, number>> {
  return makeField(intParts('port', options.doc, 0, 65535), options) as Field<Out<O, number>>;
}

/** A string, optionally restricted by a pattern and a maximum length. File paths are strings too. */
export function str<O extends StrOptions>(options: O): Field<Out<O, string>> {
  const { pattern, maxLength, secret } = options;
  if (maxLength !== undefined && (!Number.isSafeInteger(maxLength) || maxLength < 1)) {
    throw new TypeError(`maxLength must be a positive integer, got ${maxLength}`);
  }
  // Test the whole value, whatever anchors the pattern has; drop flags that make `test` stateful.
  const whole = pattern && new RegExp(`^(?:${pattern.source})$`, pattern.flags.replace(/[gy]/g, ''));
  const accepted = (style: 'text' | 'markdown'): string => {
    if (options.accepted !== undefined) return options.accepted;
    const parts: string[] = [];
    if (maxLength !== undefined) parts.push(`of at most ${maxLength} characters`);
    if (pattern) parts.push(`matching ${style === 'markdown' ? codeSpan(pattern.source) : `/${pattern.source}/`}`);
    return parts.length === 0 ? 'any string' : `a string ${parts.join(' ')}`;
  };
  const parts: FieldParts<string> = {
    kind: 'str',
    doc: options.doc,
    secret: secret ?? false,
    accepted,
    parse(raw) {
      if (maxLength !== undefined && raw.length > maxLength) return { ok: false };
      if (whole && !whole.test(raw)) return { ok: false };
      return { ok: true, value: raw };
    },
    unparse: (value) => value,
  };
  return makeField(parts, options) as Field<Out<O, string>>;
}

/** An absolute URL with one of the given protocols. The value is kept as written (trimmed). */
export function url<O extends UrlOptions>(options: O): Field<Out<O, string>> {
  const protocols = options.protocols.map((p) => (p.endsWith(':') ? p : `${p}:`).toLowerCase());
  if (protocols.length === 0) throw new TypeError('url() needs at least one protocol');
  const parts: FieldParts<string> = {
    kind: 'url',
    doc: options.doc,
    secret: options.secret ?? false,
    accepted: (style) =>
      `a URL with protocol ${listWords(
        protocols.map((p) => (style === 'markdown' ? codeSpan(p) : p)),
        'or',
      )}`,
    parse(raw) {
      let parsed: URL;
      try {
        parsed = new URL(raw);
      } catch {
        return { ok: false };
      }
      if (!protocols.includes(parsed.protocol)) return { ok: false };
      return { ok: true, value: raw };
    },
    unparse: (value) => value,
  };
  return makeField(parts, options) as Field<Out<O, string>>;
}

/** Exactly one of the listed strings (case-sensitive). */
export function oneOf<const C extends readonly [string, ...string[]], O extends OneOfOptions<C[number]>>(
  choices: C,
  options: O,
): Field<Out<O, C[number]>> {
  const set = new Set<string>(choices);
  const parts: FieldParts<C[number]> = {
    kind: 'oneOf',
    doc: options.doc,
    accepted: (style) => `one of ${choices.map((c) => (style === 'markdown' ? codeSpan(c) : c)).join(', ')}`,
    parse: (raw) => (set.has(raw) ? { ok: true, value: raw as C[number] } : { ok: false }),
    unparse: (value) => value,
  };
  return makeField(parts, options) as Field<Out<O, C[number]>>;
}

const TRUE_WORDS = new Set(['true', '1', 'yes']);
const FALSE_WORDS = new Set(['false', '0', 'no']);

/** `true`, `false`, `1`, `0`, `yes` or `no`, in any letter case. Nothing else (no `on`, no `y`). */
export function bool<O extends BoolOptions>(options: O): Field<Out<O, boolean>> {
  const words = ['true', 'false', '1', '0', 'yes', 'no'];
  const parts: FieldParts<boolean> = {
    kind: 'bool',
    doc: options.doc,
    accepted: (style) => `one of ${words.map((w) => (style === 'markdown' ? codeSpan(w) : w)).join(', ')} (any case)`,
    parse(raw) {
      const word = raw.toLowerCase();
      if (TRUE_WORDS.has(word)) return { ok: true, value: true };
      if (FALSE_WORDS.has(word)) return { ok: true, value: false };
      return { ok: false };
    },
    unparse: String,
  };
  return makeField(parts, options) as Field<Out<O, boolean>>;
}

/** The same field, but unset means `undefined` (any default is dropped). */
export function optional<T>(field: Field<T>): Field<T | undefined> {
  return Object.freeze({ ...field, presence: 'optional', defaultValue: undefined, defaultText: undefined });
}

// ---------------------------------------------------------------------------
// Reading

/**
 * Reads every variable of `spec` from `env` and returns the typed
 * configuration, or throws one `ConfigValidationError` listing every problem.
 */
export function readConfig<S extends ConfigSpec>(
  spec: S,
  env: Env = process.env,
  options: ReadConfigOptions<ConfigOf<S>> = {},
): ConfigOf<S> {
  const problems: ConfigProblem[] = [];
  const result: Record<string, unknown> = {};

  for (const [name, field] of Object.entries(spec)) {
    const raw = lookup(env, name);
    if (raw === undefined) {
      if (field.presence === 'required') {
        problems.push({ variable: name, message: `${name} is not set: expected ${field.accepted('text')}` });
      } else {
        result[name] = field.defaultValue;
      }
      continue;
    }
    const parsed = field.parse(raw);
    if (parsed.ok) {
      result[name] = parsed.value;
    } else {
      problems.push({
        variable: name,
        message: `${name}${showValue(field, raw)} is not accepted: expected ${field.accepted('text')}${defaultNote(field)}`,
      });
    }
  }

  if (options.prefix !== undefined) problems.push(...unknownVariables(spec, env, options.prefix));

  if (problems.length === 0 && options.validate) {
    problems.push(...options.validate(result as ConfigOf<S>));
  }

  if (problems.length > 0) throw new ConfigValidationError(problems);
  return Object.freeze(result) as ConfigOf<S>;
}

/** The trimmed value of `name`, or undefined when it is absent, empty or only whitespace. */
function lookup(env: Env, name: string): string | undefined {
  if (!Object.hasOwn(env, name)) return undefined;
  const value = env[name];
  if (typeof value !== 'string') return undefined;
  const trimmed = value.trim();
  return trimmed === '' ? undefined : trimmed;
}

const MAX_ECHO = 80;

/** `="value"` as it may be shown in a message: secrets hidden, URL credentials masked, long values cut. */
function showValue(field: Field<unknown>, raw: string): string {
  if (field.secret) return ' (secret, value not shown)';
  const value = field.kind === 'url' ? maskUrlCredentials(raw) : raw;
  if (value.length <= MAX_ECHO) return `=${JSON.stringify(value)}`;
  return `=${JSON.stringify(`${value.slice(0, MAX_ECHO)}…`)} (${value.length} characters)`;
}

function defaultNote(field: Field<unknown>): string {
  if (field.defaultText === undefined) return field.presence === 'optional' ? ', or unset' : '';
  if (field.secret) return ' (default hidden)';
  const shown = field.kind === 'int' || field.kind === 'port' || field.kind === 'bool';
  return ` (default ${shown ? field.defaultText : JSON.stringify(field.defaultText)})`;
}

/** Replaces the password of `scheme://user:password@host` with `***`, parsable or not. */
function maskUrlCredentials(value: string): string {
  return value.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#@:]*:)[^/?#@]*@/, '$1***@');
}

function unknownVariables(spec: ConfigSpec, env: Env, prefix: string | readonly string[]): ConfigProblem[] {
  const prefixes = typeof prefix === 'string' ? [prefix] : prefix;
  const known = Object.keys(spec);
  const problems: ConfigProblem[] = [];
  for (const name of Object.keys(env).sort()) {
    if (Object.hasOwn(spec, name) || !prefixes.some((p) => name.startsWith(p))) continue;
    if (lookup(env, name) === undefined) continue; // empty: as good as unset, and harmless
    // Prefer names sharing the typo's prefix; the value is never echoed (it may be a misnamed secret).
    const sameFamily = known.filter((k) => prefixes.some((p) => name.startsWith(p) && k.startsWith(p)));
    const suggestion = closest(name, sameFamily.length > 0 ? sameFamily : known);
    const hint = suggestion === undefined ? '' : `; did you mean ${suggestion}?`;
    problems.push({ variable: name, message: `${name} is set but is not a known variable${hint}` });
  }
  return problems;
}

/** The candidate nearest to `name`, if it is near enough to be a plausible typo. */
function closest(name: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(3, Math.ceil(name.length / 3)) + 1;
  for (const candidate of candidates) {
    const d = editDistance(name, candidate);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

/** Levenshtein distance with adjacent transpositions counted as one edit. */
function editDistance(a: string, b: string): number {
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    const row: number[] = [i];
    for (let j = 1; j <= b.length; j++) row.push(i === 0 ? j : 0);
    rows.push(row);
  }
  const at = (i: number, j: number): number => rows[i]?.[j] ?? Number.POSITIVE_INFINITY;
  for (let i = 1; i <= a.length; i++) {
    const row = rows[i]!;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, at(i - 2, j - 2) + 1);
      row[j] = d;
    }
  }
  return at(a.length, b.length);
}

// ---------------------------------------------------------------------------
// Documentation

/**
 * A markdown table of the spec, one row per variable in spec order:
 * `| variable | default | accepted | description |`. Secret defaults are hidden.
 */
export function describeConfig(spec: ConfigSpec): string {
  const lines = ['| variable | default | accepted | description |', '| --- | --- | --- | --- |'];
  for (const [name, field] of Object.entries(spec)) {
    let shownDefault: string;
    if (field.presence === 'required') shownDefault = '*required*';
    else if (field.defaultText === undefined) shownDefault = '*unset*';
    else if (field.secret) shownDefault = '*hidden*';
    else shownDefault = codeSpan(field.defaultText);
    const accepted = field.accepted('markdown') + (field.presence === 'optional' ? ', or unset' : '');
    const cells = [codeSpan(name), shownDefault, accepted, field.doc].map(tableCell);
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

/** Inline code, with enough backticks to hold any backticks in `text`. */
function codeSpan(text: string): string {
  const longestRun = Math.max(0, ...Array.from(text.matchAll(/`+/g), (m) => m[0].length));
  const fence = '`'.repeat(longestRun + 1);
  const pad = text.startsWith('`') || text.endsWith('`') ? ' ' : '';
  return `${fence}${pad}${text}${pad}${fence}`;
}

/** One line, with pipes escaped (GFM needs that even inside code spans). */
function tableCell(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').replace(/\|/g, '\\|');
}

function listWords(words: readonly string[], conjunction: string): string {
  if (words.length <= 1) return words.join('');
  return `${words.slice(0, -1).join(', ')} ${conjunction} ${words[words.length - 1]}`;
}
