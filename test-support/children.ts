/**
 * Child processes a test file started (relays, redis-servers) that must not
 * outlive it. They are killed when the test process exits, and also when it
 * is told to stop: the test runner ends a file that overran its timeout with
 * SIGTERM, whose default action skips 'exit' handlers, and a relay or
 * redis-server left behind then keeps running (and holding memory and ports)
 * for the rest of the run.
 */
import type { ChildProcess } from 'node:child_process';

const running = new Set<ChildProcess>();

function killAll(): void {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
}

process.once('exit', killAll);
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  process.once(signal, () => {
    killAll();
    // The default action, now that the children are gone: die of the signal.
    process.kill(process.pid, signal);
  });
}

/** Registers `child` to be killed if this process ends first; it is forgotten once it exits. */
export function ownChild(child: ChildProcess): void {
  running.add(child);
  child.once('exit', () => running.delete(child));
}
