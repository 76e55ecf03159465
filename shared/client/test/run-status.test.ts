/**
 * The run status RelayClient and MultipathSession share (run-status.ts):
 * its moves, the guards of the public methods, connect()'s promise and the
 * rejection of the sends pending at shutdown. No sockets.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RelayError } from '@libertaria/protocol';
import { RunStatus, rejectUnacknowledged } from '../src/run-status.js';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return (error as RelayError).code;
  }
  return undefined;
}

describe('RunStatus', () => {
  it('starts idle: operations need connect() first, close() ends it', () => {
    const status = new RunStatus('client');
    assert.equal(status.state, 'idle');
    assert.equal(status.running, false);
    assert.equal(status.ended, false);
    assert.equal(
      code(() => status.throwIfEnded('send')),
      undefined,
    );
    assert.equal(
      code(() => status.throwIfNotRunning('send')),
      'CONNECTION_FAILED',
    );
    assert.throws(() => status.throwIfNotRunning('send'), /send: call connect\(\) first/);
    assert.equal(status.close(), true);
    assert.equal(status.state, 'closed');
    assert.equal(status.close(), false, 'a second close() has nothing to do');
  });

  it('connect() moves to running once, starts the work once and hands out one promise', async () => {
    const status = new RunStatus('client');
    let starts = 0;
    let given: Promise<void> | undefined;
    const first = status.connect((connected) => {
      starts++;
      given = connected;
    });
    assert.equal(status.state, 'running');
    assert.equal(given, first);
    const again = status.connect(() => starts++);
    assert.equal(again, first);
    assert.equal(starts, 1);
    assert.equal(
      code(() => status.throwIfNotRunning('send')),
      undefined,
    );
    status.markConnected();
    status.markConnected();
    await first;
  });

  it('after close(): CLIENT_CLOSED naming the operation and the thing closed, connect() rejects', async () => {
    const status = new RunStatus('multipath session');
    const connected = status.connect(() => {});
    assert.equal(status.close(), true);
    assert.equal(status.fail(new RelayError('AUTH_FAILED', 'late')), false, 'closed is final');
    assert.equal(status.failure, undefined);
    status.settleConnect(status.closedError('close'));
    await assert.rejects(connected, { code: 'CLIENT_CLOSED', message: 'close: the multipath session is closed' });
    assert.throws(() => status.throwIfEnded('send'), {
      code: 'CLIENT_CLOSED',
      message: 'send: the multipath session is closed',
    });
    await assert.rejects(
      status.connect(() => assert.fail('must not start')),
      { code: 'CLIENT_CLOSED' },
    );
  });

  it('after giving up: the failure everywhere, and connect() rejects with it', async () => {
    const status = new RunStatus('client');
    const connected = status.connect(() => {});
    const failure = new RelayError('AUTH_FAILED', 'every relay refused this client');
    assert.equal(status.fail(failure), true);
    assert.equal(status.state, 'failed');
    assert.equal(status.ended, true);
    assert.equal(status.failure, failure);
    assert.equal(status.close(), false, 'failed is final');
    status.settleConnect(failure);
    await assert.rejects(connected, (error) => error === failure);
    assert.throws(
      () => status.throwIfNotRunning('send'),
      (error) => error === failure,
    );
    await assert.rejects(
      status.connect(() => {}),
      (error) => error === failure,
    );
  });

  it('settleConnect() after the first connection changes nothing', async () => {
    const status = new RunStatus('client');
    const connected = status.connect(() => {});
    status.markConnected();
    status.settleConnect(new RelayError('CLIENT_CLOSED', 'x'));
    await connected;
  });
});

describe('rejectUnacknowledged', () => {
  it('rejects every pending send with the reason as cause and code, then empties the table', () => {
    const errors: Error[] = [];
    const pending = new Map([
      ['aa', { key: 'aa', reject: (e: Error) => errors.push(e) }],
      ['bb', { key: 'bb', reject: (e: Error) => errors.push(e) }],
    ]);
    const reason = new RelayError('CLIENT_CLOSED', 'close: the client is closed');
    rejectUnacknowledged(pending, reason);
    assert.equal(pending.size, 0);
    assert.deepEqual(
      errors.map((e) => [(e as RelayError).code, e.message, e.cause === reason]),
      [
        [
          'CLIENT_CLOSED',
          'message aa not acknowledged (close: the client is closed); it may or may not have been stored',
          true,
        ],
        [
          'CLIENT_CLOSED',
          'message bb not acknowledged (close: the client is closed); it may or may not have been stored',
          true,
        ],
      ],
    );
  });
});
