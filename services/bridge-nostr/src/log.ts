/**
 * One-line JSON logs on stdout, the same shape as the relay's. Callers log
 * DIDs, pubkeys, relay URLs and codes: never secret keys or message text.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function createLogger(level: LogLevel, base: Record<string, unknown> = {}): Logger {
  const min = rank[level];
  const write = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    if (rank[lvl] < min) return;
    const line = JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...base, ...fields }, (_k, v) =>
      v instanceof Error ? { name: v.name, message: v.message, code: (v as { code?: unknown }).code } : v,
    );
    process.stdout.write(`${line}\n`);
  };
  return {
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
  };
}

/** Drops everything: for tests and embedders that log elsewhere. */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
