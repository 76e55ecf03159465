/**
 * The one fake of the XMTP bridge's tests: an in-process XMTP network behind
 * the `XmtpNetwork` interface (the public network cannot be reached from the
 * machines the tests run on).
 *
 * It keeps what the real network keeps (inboxes and their installations, with
 * XMTP's limit per inbox; DMs and their messages, ordered by a network
 * timestamp), and what an installation keeps on disk: a real file at the
 * account's `dbPath`, which must be opened with the key it was created with,
 * holding the installation id, consent states, and messages the installation
 * has synced or received by stream. Deleting the file loses them, as losing
 * the volume does.
 *
 * Failures are injected per operation (`failNext`): unavailable, rate limited.
 * `FakeXmtpUser` is a party on this network that does not use the bridge's
 * adapter code: it reads and writes the network's side directly.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { BridgeError, type ForeignIdentity } from '@libertaria/bridge-kit';
import type { ForeignParty } from '@libertaria/bridge-kit/contract';
import type {
  XmtpAccount,
  XmtpClient,
  XmtpConsent,
  XmtpContent,
  XmtpCursor,
  XmtpDm,
  XmtpMessage,
  XmtpNetwork,
  XmtpPage,
} from '../../src/network.js';
import { isAfter } from '../../src/network.js';

/** XMTP's limit of installations per inbox. */
export const FAKE_MAX_INSTALLATIONS = 10;

type Operation = 'open' | 'findInboxId' | 'prepareText' | 'publish' | 'sync' | 'messagesAfter';

interface NetMessage extends XmtpMessage {
  readonly published: true;
}

interface Conversation {
  readonly id: string;
  readonly members: readonly [string, string];
  readonly messages: NetMessage[];
}

interface LocalDb {
  installationId: string;
  inboxId: string;
  keyCheck: string;
}

interface LocalState {
  readonly messages: Map<string, XmtpMessage[]>;
  readonly consent: Map<string, XmtpConsent>;
  readonly pending: Map<string, XmtpMessage[]>;
  readonly known: Set<string>;
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export class FakeXmtpNetwork implements XmtpNetwork {
  readonly name = 'fake';
  private readonly installations = new Map<string, Set<string>>();
  private readonly addresses = new Map<string, string>();
  private readonly conversations = new Map<string, Conversation>();
  private readonly locals = new Map<string, LocalState>();
  private readonly watchers = new Map<string, Set<() => void>>();
  private readonly failures: { op: Operation; error: BridgeError }[] = [];
  private clock = BigInt(Date.now()) * 1_000_000n;
  /** Calls by operation: the tests read what reached the network. */
  readonly calls: Record<Operation, number> = {
    open: 0,
    findInboxId: 0,
    prepareText: 0,
    publish: 0,
    sync: 0,
    messagesAfter: 0,
  };
  /** Called with each page a client reads, before the client gets it: tests act at that exact moment. */
  onPage: ((page: XmtpPage) => void) | undefined;
  /** Every installation ever created, for the installation-limit checks. */
  installationsCreated = 0;

  /** XMTP's own rule (libxmtp's generate_inbox_id): SHA-256 of the lowercase address and the nonce 1. */
  inboxIdOf(address: string): string {
    return sha256(`${address.toLowerCase()}1`);
  }

  /** Makes the next `count` calls of `op` fail with `error`. */
  failNext(op: Operation, error: BridgeError, count = 1): void {
    for (let i = 0; i < count; i++) this.failures.push({ op, error });
  }

  unavailable(op: string): BridgeError {
    return new BridgeError('BRIDGE_UNAVAILABLE', `fake XMTP: ${op} failed (unavailable)`);
  }

  rateLimited(retryAfterMs: number): BridgeError {
    return new BridgeError('BRIDGE_UNAVAILABLE', 'fake XMTP: rate limited', { rateLimited: true, retryAfterMs });
  }

  private check(op: Operation): void {
    this.calls[op]++;
    const i = this.failures.findIndex((f) => f.op === op);
    if (i >= 0) {
      const [failure] = this.failures.splice(i, 1);
      throw failure?.error;
    }
  }

  /** The network's timestamp: strictly increasing except where a test asks for a tie. */
  private now(tie = false): bigint {
    if (!tie) this.clock += 1000n;
    return this.clock;
  }

  /** Registers an inbox with one installation (what a native client does on its first start). */
  register(address: string): { inboxId: string; installationId: string } {
    const inboxId = this.inboxIdOf(address);
    this.addresses.set(address.toLowerCase(), inboxId);
    const installationId = randomBytes(32).toString('hex');
    this.addInstallation(inboxId, installationId);
    return { inboxId, installationId };
  }

  private addInstallation(inboxId: string, installationId: string): void {
    const set = this.installations.get(inboxId) ?? new Set<string>();
    if (set.size >= FAKE_MAX_INSTALLATIONS) {
      throw new BridgeError('BRIDGE_UNAVAILABLE', `fake XMTP: inbox ${inboxId} has ${set.size} installations`, {
        retryable: false,
      });
    }
    set.add(installationId);
    this.installations.set(inboxId, set);
    this.installationsCreated++;
  }

  installationsOf(inboxId: string): number {
    return this.installations.get(inboxId)?.size ?? 0;
  }

  isRegistered(inboxId: string): boolean {
    return this.installationsOf(inboxId) > 0;
  }

  dmId(a: string, b: string): string {
    return sha256(`fake-xmtp-dm:${[a, b].sort().join(':')}`).slice(0, 32);
  }

  private conversation(a: string, b: string): Conversation {
    const id = this.dmId(a, b);
    let conv = this.conversations.get(id);
    if (!conv) {
      conv = { id, members: [a, b], messages: [] };
      this.conversations.set(id, conv);
    }
    return conv;
  }

  /** Puts a message on the network and streams it to the members' watching installations. */
  publishNow(conv: Conversation, message: Omit<XmtpMessage, 'sentAtNs'>, tie = false): NetMessage {
    const stored: NetMessage = { ...message, sentAtNs: this.now(tie), published: true };
    conv.messages.push(stored);
    for (const member of conv.members) {
      for (const wake of this.watchers.get(member) ?? []) wake();
    }
    return stored;
  }

  /** A native XMTP user's send: from `fromInboxId` to `toInboxId`; `tie` gives it the previous message's timestamp. */
  sendAs(
    fromInboxId: string,
    toInboxId: string,
    content: XmtpContent,
    tie = false,
    id = randomBytes(32).toString('hex'),
  ): XmtpMessage {
    if (!this.isRegistered(toInboxId)) throw new Error(`fake XMTP: no inbox ${toInboxId}`);
    const conv = this.conversation(fromInboxId, toInboxId);
    return this.publishNow(conv, { id, conversationId: conv.id, senderInboxId: fromInboxId, content }, tie);
  }

  /** Messages of a DM as the network holds them (for the user's side and assertions). */
  dmMessages(a: string, b: string): readonly XmtpMessage[] {
    return this.conversations.get(this.dmId(a, b))?.messages ?? [];
  }

  findAddress(address: string): string | undefined {
    return this.addresses.get(address.toLowerCase());
  }

  private keyCheck(key: Uint8Array): string {
    return createHmac('sha256', key).update('fake sqlcipher key check').digest('hex');
  }

  async open(account: XmtpAccount, options: { mayCreateInstallation: boolean }): Promise<XmtpClient> {
    this.check('open');
    const inboxId = this.inboxIdOf(account.address);
    let db: LocalDb;
    if (existsSync(account.dbPath)) {
      db = JSON.parse(readFileSync(account.dbPath, 'utf8')) as LocalDb;
      if (db.keyCheck !== this.keyCheck(account.dbEncryptionKey)) {
        throw new BridgeError('BRIDGE_KEY_STORE', 'fake XMTP: PRAGMA key or salt has incorrect value', {
          retryable: false,
        });
      }
    } else {
      if (!options.mayCreateInstallation) {
        throw new BridgeError('BRIDGE_STATE_MISSING', `fake XMTP: no local database at ${account.dbPath}`);
      }
      const installationId = randomBytes(32).toString('hex');
      this.addInstallation(inboxId, installationId);
      this.addresses.set(account.address, inboxId);
      db = { installationId, inboxId, keyCheck: this.keyCheck(account.dbEncryptionKey) };
      writeFileSync(account.dbPath, JSON.stringify(db), { mode: 0o600 });
      this.locals.set(account.dbPath, {
        messages: new Map(),
        consent: new Map(),
        pending: new Map(),
        known: new Set(),
      });
    }
    let local = this.locals.get(account.dbPath);
    if (!local) {
      local = { messages: new Map(), consent: new Map(), pending: new Map(), known: new Set() };
      this.locals.set(account.dbPath, local);
    }
    return new FakeClient(this, db, local);
  }

  /** @internal for FakeClient */
  internals() {
    return {
      check: (op: Operation) => this.check(op),
      conversation: (a: string, b: string) => this.conversation(a, b),
      conversations: () => this.conversations.values(),
      publishNow: (conv: Conversation, m: Omit<XmtpMessage, 'sentAtNs'>) => this.publishNow(conv, m),
      isRegistered: (inboxId: string) => this.isRegistered(inboxId),
      watch: (inboxId: string, wake: () => void) => {
        const set = this.watchers.get(inboxId) ?? new Set();
        set.add(wake);
        this.watchers.set(inboxId, set);
        return () => set.delete(wake);
      },
    };
  }
}

class FakeClient implements XmtpClient {
  private closed = false;
  private readonly net: ReturnType<FakeXmtpNetwork['internals']>;
  constructor(
    private readonly network: FakeXmtpNetwork,
    private readonly db: LocalDb,
    private readonly local: LocalState,
  ) {
    this.net = network.internals();
  }

  get inboxId(): string {
    return this.db.inboxId;
  }

  get installationId(): string {
    return this.db.installationId;
  }

  private alive(): void {
    if (this.closed) throw new BridgeError('BRIDGE_CLOSED', 'fake XMTP: the client is closed');
  }

  async findInboxId(address: string): Promise<string | undefined> {
    this.alive();
    this.net.check('findInboxId');
    return this.network.findAddress(address);
  }

  async prepareText(peerInboxId: string, text: string): Promise<{ conversationId: string; messageId: string }> {
    this.alive();
    this.net.check('prepareText');
    if (!this.net.isRegistered(peerInboxId)) {
      throw new BridgeError('BRIDGE_RECIPIENT_UNREACHABLE', `fake XMTP: no inbox ${peerInboxId}`);
    }
    const conv = this.net.conversation(this.db.inboxId, peerInboxId);
    // Writing in a DM is consent to it (XMTP marks a DM you create or answer as allowed).
    this.local.consent.set(conv.id, 'allowed');
    const message: XmtpMessage = {
      id: randomBytes(32).toString('hex'),
      conversationId: conv.id,
      senderInboxId: this.db.inboxId,
      content: { type: 'text', text },
      sentAtNs: 0n,
    };
    const pending = this.local.pending.get(conv.id) ?? [];
    pending.push(message);
    this.local.pending.set(conv.id, pending);
    return { conversationId: conv.id, messageId: message.id };
  }

  async publish(conversationId: string): Promise<void> {
    this.alive();
    this.net.check('publish');
    const pending = this.local.pending.get(conversationId) ?? [];
    const conv = [...this.net.conversations()].find((c) => c.id === conversationId);
    if (!conv) throw new BridgeError('BRIDGE_UNAVAILABLE', `fake XMTP: no conversation ${conversationId}`);
    while (pending.length > 0) {
      const m = pending[0] as XmtpMessage;
      this.net.publishNow(conv, { id: m.id, conversationId, senderInboxId: m.senderInboxId, content: m.content });
      pending.shift();
    }
  }

  async isPublished(messageId: string): Promise<boolean | undefined> {
    for (const conv of this.net.conversations()) {
      if (conv.messages.some((m) => m.id === messageId)) return true;
    }
    for (const list of this.local.pending.values()) if (list.some((m) => m.id === messageId)) return false;
    return undefined;
  }

  /** Copies what the network holds for this inbox into the local database (a read per conversation). */
  async sync(): Promise<void> {
    this.alive();
    this.net.check('sync');
    for (const conv of this.net.conversations()) {
      if (!conv.members.includes(this.db.inboxId)) continue;
      this.local.messages.set(conv.id, [...conv.messages]);
      if (!this.local.consent.has(conv.id)) this.local.consent.set(conv.id, 'unknown');
    }
  }

  async listDms(): Promise<readonly XmtpDm[]> {
    this.alive();
    const out: XmtpDm[] = [];
    for (const conv of this.net.conversations()) {
      if (!this.local.messages.has(conv.id)) continue;
      const peer = conv.members[0] === this.db.inboxId ? conv.members[1] : conv.members[0];
      out.push({ id: conv.id, peerInboxId: peer, consent: this.local.consent.get(conv.id) ?? 'unknown' });
    }
    return out;
  }

  async messagesAfter(conversationId: string, cursor: XmtpCursor | undefined, limit: number): Promise<XmtpPage> {
    this.alive();
    this.net.check('messagesAfter');
    const all = (this.local.messages.get(conversationId) ?? []).filter((m) => isAfter(cursor, m));
    const page = { messages: all.slice(0, limit), more: all.length > limit };
    this.network.onPage?.(page);
    return page;
  }

  async setConsent(conversationId: string, consent: XmtpConsent): Promise<void> {
    this.alive();
    this.local.consent.set(conversationId, consent);
  }

  watch(onActivity: () => void, _onError: (err: unknown) => void): () => void {
    // A stream delivers into the local database, then wakes the reader.
    return this.net.watch(this.db.inboxId, () => {
      for (const conv of this.net.conversations()) {
        if (!conv.members.includes(this.db.inboxId)) continue;
        this.local.messages.set(conv.id, [...conv.messages]);
        if (!this.local.consent.has(conv.id)) this.local.consent.set(conv.id, 'unknown');
      }
      onActivity();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** A person on the (fake) XMTP network using a native client: the contract suite's remote party. */
export class FakeXmtpUser implements ForeignParty {
  readonly address: string;
  readonly inboxId: string;
  readonly identity: ForeignIdentity;
  constructor(private readonly network: FakeXmtpNetwork) {
    this.address = `0x${randomBytes(20).toString('hex')}`;
    ({ inboxId: this.inboxId } = network.register(this.address));
    this.identity = { type: 'xmtp', uri: `xmtp:${this.inboxId}`, kind: 'inbox', value: this.inboxId };
  }

  private peerInbox(identity: ForeignIdentity): string {
    if (identity.type !== 'xmtp') throw new Error(`${identity.uri} is not an XMTP identity`);
    if (identity.kind === 'inbox') return identity.value;
    const inbox = this.network.findAddress(identity.value);
    if (!inbox) throw new Error(`no XMTP inbox for ${identity.value}`);
    return inbox;
  }

  /** Messages received from `from`, oldest first. */
  received(from: ForeignIdentity): readonly XmtpMessage[] {
    // The bridge records a peer's address before it registers the inbox on the network: an address
    // with no inbox yet has sent nothing, which is not an error for a reader polling for messages.
    if (from.type === 'xmtp' && from.kind !== 'inbox' && !this.network.findAddress(from.value)) return [];
    const peer = this.peerInbox(from);
    return this.network.dmMessages(this.inboxId, peer).filter((m) => m.senderInboxId === peer);
  }

  async nextPrivateMessage(from: ForeignIdentity, timeoutMs: number): Promise<string> {
    const seen = this.received(from).length;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const now = this.received(from);
      const next = now[seen];
      if (next) {
        if (next.content.type !== 'text') throw new Error(`expected text, got ${next.content.type}`);
        return next.content.text;
      }
      if (Date.now() > deadline) throw new Error(`no XMTP message from ${from.uri} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async sendPrivate(to: ForeignIdentity, text: string): Promise<void> {
    this.network.sendAs(this.inboxId, this.peerInbox(to), { type: 'text', text });
  }

  send(to: ForeignIdentity, content: XmtpContent, tie = false): XmtpMessage {
    return this.network.sendAs(this.inboxId, this.peerInbox(to), content, tie);
  }
}
