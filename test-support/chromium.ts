/**
 * Headless Chromium for tests, driven over the Chrome DevTools Protocol with
 * no dependency: Chromium is started with --remote-debugging-pipe, so CDP
 * travels over file descriptors 3 (to the browser) and 4 (from it) as
 * NUL-terminated JSON messages. No debugging port, no stderr parsing, no
 * WebSocket client.
 *
 *   const binary = findChromium();            // undefined: not installed
 *   const browser = await launchChromium({ binary });
 *   const page = await browser.newPage();
 *   await page.goto('http://127.0.0.1:8123/');
 *   await page.evaluate('1 + 1');             // JSON value; awaits a promise
 *   page.log;                                 // console lines, uncaught exceptions, browser log entries
 *   await browser.close();
 *
 * The binary is the real one, /usr/lib/chromium/chromium on Debian, rather
 * than the /usr/bin/chromium shell wrapper: the wrapper sources
 * /etc/chromium.d/* (which adds flags of its own and, on some machines,
 * prints "[: …: unexpected operator" from its /dev/shm check). The wrapper
 * is the fallback when only `chromium` is on the PATH; CHROMIUM_BIN names
 * another binary.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { ownChild } from './children.js';

/** Where Debian's chromium package puts the browser itself. */
const DEBIAN_BINARY = '/usr/lib/chromium/chromium';

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The Chromium binary: CHROMIUM_BIN, else Debian's real binary, else `chromium` on the PATH; undefined when none. */
export function findChromium(): string | undefined {
  const given = process.env.CHROMIUM_BIN;
  if (given !== undefined && given !== '') return isExecutable(given) ? given : undefined;
  if (isExecutable(DEBIAN_BINARY)) return DEBIAN_BINARY;
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir !== '' && isExecutable(join(dir, 'chromium'))) return join(dir, 'chromium');
  }
  return undefined;
}

export const CHROMIUM_FLAGS = [
  '--headless',
  // Root in a container: the setuid/namespace sandbox cannot start ("Running as root without --no-sandbox is not supported").
  '--no-sandbox',
  '--disable-gpu',
  '--disable-dev-shm-usage',
  '--no-first-run',
  '--no-default-browser-check',
  '--disable-extensions',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-features=Translate,MediaRouter,OptimizationHints',
  '--mute-audio',
  '--remote-debugging-pipe',
];

/** One thing a page said: a console call (`log`, `warn`, `error`, …), an uncaught `exception`, or a browser log entry (`browser-error`, …). */
export interface PageLogEntry {
  type: string;
  text: string;
}

interface PendingCall {
  method: string;
  resolve: (result: Record<string, unknown>) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

interface CdpMessage {
  id?: number;
  method?: string;
  params?: Record<string, unknown>;
  sessionId?: string;
  result?: Record<string, unknown>;
  error?: { message: string };
}

/** CDP over the pipe: commands with ids and timeouts, events handed to `onEvent`. */
class CdpPipe {
  readonly #out: Writable;
  readonly #pending = new Map<number, PendingCall>();
  #nextId = 1;
  #buffer = '';
  #closedWith: Error | undefined;
  onEvent: (method: string, params: Record<string, unknown>, sessionId: string | undefined) => void = () => {};

  constructor(toBrowser: Writable, fromBrowser: Readable) {
    this.#out = toBrowser;
    fromBrowser.setEncoding('utf8');
    fromBrowser.on('data', (chunk: string) => this.#onData(chunk));
    fromBrowser.on('close', () => this.dispose(new Error('the CDP pipe closed (the browser exited)')));
    fromBrowser.on('error', () => {});
    toBrowser.on('error', () => {});
  }

  send(
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
    timeoutMs = 30_000,
  ): Promise<Record<string, unknown>> {
    if (this.#closedWith !== undefined) {
      return Promise.reject(new Error(`CDP ${method}: ${this.#closedWith.message}`));
    }
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`CDP ${method}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { method, resolve, reject, timer });
      this.#out.write(`${JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) })}\0`);
    });
  }

  #onData(chunk: string): void {
    this.#buffer += chunk;
    for (let end = this.#buffer.indexOf('\0'); end >= 0; end = this.#buffer.indexOf('\0')) {
      const message = JSON.parse(this.#buffer.slice(0, end)) as CdpMessage;
      this.#buffer = this.#buffer.slice(end + 1);
      if (message.id === undefined) {
        if (message.method !== undefined) this.onEvent(message.method, message.params ?? {}, message.sessionId);
        continue;
      }
      const call = this.#pending.get(message.id);
      if (call === undefined) continue;
      this.#pending.delete(message.id);
      clearTimeout(call.timer);
      if (message.error) call.reject(new Error(`CDP ${call.method}: ${message.error.message}`));
      else call.resolve(message.result ?? {});
    }
  }

  dispose(error: Error): void {
    if (this.#closedWith !== undefined) return;
    this.#closedWith = error;
    for (const call of this.#pending.values()) {
      clearTimeout(call.timer);
      call.reject(new Error(`CDP ${call.method}: ${error.message}`));
    }
    this.#pending.clear();
  }
}

interface ExceptionDetails {
  text?: string;
  exception?: { description?: string; value?: unknown };
}

function describeException(details: ExceptionDetails): string {
  const ex = details.exception;
  return ex?.description ?? (ex?.value !== undefined ? String(ex.value) : undefined) ?? details.text ?? 'exception';
}

interface RemoteObject {
  type: string;
  value?: unknown;
  description?: string;
}

export class ChromiumPage {
  readonly #cdp: CdpPipe;
  readonly #sessionId: string;
  #loadWaiters: (() => void)[] = [];
  /** Console lines, uncaught exceptions and browser log entries, in order. */
  readonly log: PageLogEntry[] = [];
  /** Called for each entry as it comes (e.g. to echo it while debugging). */
  onLog: ((entry: PageLogEntry) => void) | undefined;

  constructor(
    cdp: CdpPipe,
    sessionId: string,
    readonly targetId: string,
  ) {
    this.#cdp = cdp;
    this.#sessionId = sessionId;
  }

  /** Uncaught exceptions and unhandled rejections the page had. */
  get exceptions(): string[] {
    return this.log.filter((e) => e.type === 'exception').map((e) => e.text);
  }

  /** @internal */
  handleEvent(method: string, params: Record<string, unknown>): void {
    if (method === 'Runtime.consoleAPICalled') {
      const args = params.args as RemoteObject[];
      const text = args.map((a) => (a.value !== undefined ? String(a.value) : (a.description ?? a.type))).join(' ');
      this.#record({ type: String(params.type), text });
    } else if (method === 'Runtime.exceptionThrown') {
      this.#record({ type: 'exception', text: describeException(params.exceptionDetails as ExceptionDetails) });
    } else if (method === 'Log.entryAdded') {
      // What no script logged: network failures, blocked requests, CSP, deprecations.
      const entry = params.entry as { level: string; source: string; text: string };
      this.#record({ type: `browser-${entry.level}`, text: `${entry.source}: ${entry.text}` });
    } else if (method === 'Page.loadEventFired') {
      const waiters = this.#loadWaiters;
      this.#loadWaiters = [];
      for (const wake of waiters) wake();
    }
  }

  #record(entry: PageLogEntry): void {
    this.log.push(entry);
    this.onLog?.(entry);
  }

  /** The last `n` log entries, one per line (for error messages). */
  tail(n = 30): string {
    return this.log
      .slice(-n)
      .map((e) => `  [${e.type}] ${e.text}`)
      .join('\n');
  }

  send(method: string, params: Record<string, unknown> = {}, timeoutMs?: number): Promise<Record<string, unknown>> {
    return this.#cdp.send(method, params, this.#sessionId, timeoutMs);
  }

  /** Navigates and resolves on the load event (module scripts have run by then). */
  async goto(url: string, timeoutMs = 60_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const loaded = new Promise<void>((resolve, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${url}: no load event within ${timeoutMs} ms\n${this.tail()}`)),
        timeoutMs,
      );
      this.#loadWaiters.push(resolve);
    });
    try {
      const result = await this.send('Page.navigate', { url }, timeoutMs);
      if (typeof result.errorText === 'string') throw new Error(`${url}: ${result.errorText}`);
      await loaded;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Evaluates `expression` in the page, awaits a promise result and returns
   * it as JSON data. An exception in the page rejects with its stack and the
   * page's last log entries.
   */
  async evaluate<T = unknown>(expression: string, timeoutMs = 60_000): Promise<T> {
    const result = await this.send(
      'Runtime.evaluate',
      { expression, awaitPromise: true, returnByValue: true },
      timeoutMs,
    ).catch((error: Error) => {
      throw new Error(`${error.message}\npage log:\n${this.tail()}`);
    });
    if (result.exceptionDetails !== undefined) {
      throw new Error(
        `in the page: ${describeException(result.exceptionDetails as ExceptionDetails)}\npage log:\n${this.tail()}`,
      );
    }
    return (result.result as RemoteObject).value as T;
  }
}

export interface ChromiumBrowser {
  readonly pid: number | undefined;
  /** Browser.getVersion's answer (product, userAgent, …). */
  readonly version: Record<string, unknown>;
  /** Chromium's last stderr lines, for diagnostics. */
  readonly stderr: string[];
  newPage(): Promise<ChromiumPage>;
  /** Browser.close, then SIGKILL if it has not exited within `timeoutMs`; removes the profile. Idempotent. */
  close(timeoutMs?: number): Promise<void>;
}

export interface LaunchOptions {
  /** Default: findChromium(). */
  binary?: string;
  /** Flags added after CHROMIUM_FLAGS. */
  args?: string[];
  /** Until CDP answers its first command. */
  timeoutMs?: number;
}

/** Starts headless Chromium with a fresh profile and resolves once CDP answers. */
export async function launchChromium(options: LaunchOptions = {}): Promise<ChromiumBrowser> {
  const binary = options.binary ?? findChromium();
  if (binary === undefined) throw new Error('chromium is not installed (apt-get install chromium)');
  const timeoutMs = options.timeoutMs ?? 60_000;
  const profile = mkdtempSync(join(tmpdir(), 'lr-chromium-'));
  const child: ChildProcess = spawn(
    binary,
    [...CHROMIUM_FLAGS, `--user-data-dir=${profile}`, ...(options.args ?? []), 'about:blank'],
    // fd 3: we write CDP; fd 4: we read it.
    { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] },
  );
  ownChild(child);
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  const [toBrowser, fromBrowser] = [child.stdio[3] as Writable | null, child.stdio[4] as Readable | null];
  if (toBrowser === null || fromBrowser === null) {
    child.kill('SIGKILL');
    rmSync(profile, { recursive: true, force: true });
    throw new Error(`${binary}: could not open the CDP pipe`);
  }
  const cdp = new CdpPipe(toBrowser, fromBrowser);
  const pages = new Map<string, ChromiumPage>();
  cdp.onEvent = (method, params, sessionId) => {
    if (sessionId !== undefined) pages.get(sessionId)?.handleEvent(method, params);
  };
  const stderr: string[] = [];
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (text: string) => {
    stderr.push(...text.split('\n').filter((line) => line !== ''));
    if (stderr.length > 50) stderr.splice(0, stderr.length - 50);
  });

  let closing: Promise<void> | undefined;
  const close = (graceMs = 10_000): Promise<void> => {
    closing ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        // The pipe closes as the browser exits, so the answer may never come.
        await cdp.send('Browser.close', {}, undefined, graceMs).catch(() => {});
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      cdp.dispose(new Error('the browser was closed'));
      rmSync(profile, { recursive: true, force: true });
    })();
    return closing;
  };

  const spawnFailed = new Promise<never>((_, reject) => child.once('error', reject));
  let version: Record<string, unknown>;
  try {
    version = await Promise.race([cdp.send('Browser.getVersion', {}, undefined, timeoutMs), spawnFailed]);
  } catch (error) {
    child.kill('SIGKILL');
    await close(1000);
    throw new Error(`${binary} did not answer CDP: ${(error as Error).message}\n${stderr.join('\n')}`);
  }

  return {
    pid: child.pid,
    version,
    stderr,
    close,
    async newPage() {
      const { targetId } = (await cdp.send('Target.createTarget', { url: 'about:blank' })) as { targetId: string };
      const { sessionId } = (await cdp.send('Target.attachToTarget', { targetId, flatten: true })) as {
        sessionId: string;
      };
      const page = new ChromiumPage(cdp, sessionId, targetId);
      pages.set(sessionId, page);
      await Promise.all([page.send('Page.enable'), page.send('Runtime.enable'), page.send('Log.enable')]);
      return page;
    },
  };
}
