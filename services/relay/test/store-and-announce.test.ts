import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeFrame, RelayError, readRoutedPosition, routedDest, SendFlags } from '@libertaria/protocol';
import type { EnqueueResult } from '../src/durable-store.js';
import { type Mailboxes, storeAndAnnounce } from '../src/store-and-announce.js';

const fill = (n: number, b: number): Uint8Array => new Uint8Array(n).fill(b);

function deliver(): Buffer {
  return Buffer.from(
    encodeFrame({
      type: 'DELIVER',
      dest: fill(24, 0xd1),
      source: fill(24, 0x5e),
      sessionId: fill(16, 0x55),
      messageId: fill(16, 0x1d),
      flags: SendFlags.DURABLE,
      ttl: 60,
      position: 0,
      payload: fill(3, 0xaa),
    }),
  );
}

/** A store answering `answer` and a router, both writing what they were asked into `log`. */
function mailboxes(answer: () => Promise<EnqueueResult>, log: string[]): Mailboxes {
  return {
    store: {
      enqueue: (dest, messageId, _frame, ttl) => {
        log.push(
          `enqueue ${Buffer.from(dest).toString('hex', 0, 1)} ${Buffer.from(messageId).toString('hex', 0, 1)} ${ttl}`,
        );
        return answer();
      },
    },
    router: {
      announceDurable: (frame, position, holders) => {
        log.push(
          `announce ${readRoutedPosition(frame)} ${position} ${routedDest(frame).toString('hex', 0, 1)} ${holders}`,
        );
      },
    },
  };
}

describe('storeAndAnnounce', () => {
  it('stores with the routed header’s fields, answers, then writes the position and announces', async () => {
    const log: string[] = [];
    const frame = deliver();
    const to = mailboxes(async () => ({ status: 'stored', position: 2 ** 33 + 5, depth: 1, holders: ['n2'] }), log);
    const answer = await storeAndAnnounce(
      to,
      frame,
      (result, messageId) => {
        log.push(`stored ${result.status} ${messageId.toString('hex', 0, 1)} position ${readRoutedPosition(frame)}`);
        return 'acked';
      },
      () => 'failed',
    );
    assert.equal(answer, 'acked');
    assert.deepEqual(log, [
      'enqueue d1 1d 60',
      'stored stored 1d position 0',
      `announce ${2 ** 33 + 5} ${2 ** 33 + 5} d1 n2`,
    ]);
  });

  it('announces no duplicate and leaves its position at 0', async () => {
    const log: string[] = [];
    const frame = deliver();
    const to = mailboxes(async () => ({ status: 'duplicate', position: 9 }), log);
    await storeAndAnnounce(
      to,
      frame,
      (result) => log.push(`stored ${result.status}`),
      () => log.push('failed'),
    );
    assert.deepEqual(log, ['enqueue d1 1d 60', 'stored duplicate']);
    assert.equal(readRoutedPosition(frame), 0);
  });

  it('hands the store’s error to onFailed alone, and a handler’s throw to the caller', async () => {
    const log: string[] = [];
    const full = new RelayError('QUEUE_FULL', 'full');
    const failing = mailboxes(() => Promise.reject(full), log);
    const seen = await storeAndAnnounce(
      failing,
      deliver(),
      () => undefined,
      (err) => err,
    );
    assert.equal(seen, full);
    assert.deepEqual(log, ['enqueue d1 1d 60']);

    const storing = mailboxes(async () => ({ status: 'stored', position: 1, holders: [] }), log);
    const boom = new Error('ACK could not be written');
    await assert.rejects(
      storeAndAnnounce(
        storing,
        deliver(),
        () => {
          throw boom;
        },
        () => assert.fail('the store did not fail'),
      ),
      boom,
    );
  });
});
