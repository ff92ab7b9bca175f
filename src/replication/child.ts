import { rmSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { openNative, type Database, type NativeDb } from '../db/index.js';
import type { Logger } from '../lib/log.js';
import { backoffMs } from '../lib/backoff.js';
import type { Applied, KindRegistry } from '../changelog/index.js';
import { hashToken } from '../auth/tokens.js';
import { splitPinnedToken } from '../tls/pin.js';
import { PROTOCOL_VERSION, replicationService, type ReceivedMessage, type ReplicationClient, type WireNodeReport } from './protocol.js';
import type { Identity } from './identity.js';
import { BatchApplier } from './applier.js';
import { Inbox } from './inbox.js';
import { FileReceiver, type ReceivedFile } from './file-receiver.js';
import { fetchFile } from './fetch-file.js';
import type { JoinResponse__Output } from '../gen/proto/patchtree/replication/v1/JoinResponse.js';

export interface UpstreamOptions {
  address: string;
  joinToken: string | undefined;
  credentials: grpc.ChannelCredentials;
  /** Before a Join: a certificate request and the credentials to join with; then what to do with the certificate the parent signs (tls/upstream.ts). */
  prepareJoin?: (() => Promise<{ csr: string; credentials: grpc.ChannelCredentials }>) | null;
  acceptCertificate?: (pem: string) => grpc.ChannelCredentials;
}

interface StateRow {
  join_token_hash: string | null;
  address: string;
  parent_id: string;
  credential: string;
  epoch: string;
  cursor: number;
  languages: string;
  resyncing: number;
  last_error: string | null;
  last_success_at: number | null;
}

const FLOW_CONTROL_WINDOW = 8 * 1024 * 1024;
/**
 * The longest wait between two attempts to reach the parent (with jitter: 1.5-4.5 s),
 * ours and grpc-js's own reconnection alike (its default grows to 120 s): a restarted
 * parent's subtree is served again within seconds of its start (tree-scale's restart:
 * 11 s once with 5 s here), and a refused connection costs it nothing.
 */
const RETRY_MAX_MS = 3_000;
/** Failed attempts logged at `warn` in a row, then one in this many (status shows the last error all along). */
const RETRY_LOGGED = 3;
const RETRY_LOG_EVERY = 20;

/** What the child side needs, all given at construction. */
export interface ChildDeps {
  db: Database;
  identity: Identity;
  name: string;
  version: string;
  /** This node's own languages (its subtree's are added: `subtreeLanguages`). */
  ownLanguages: readonly string[];
  subtreeLanguages: () => Promise<string[]>;
  upstream: UpstreamOptions;
  kinds: KindRegistry;
  logger: Logger;
  /** The node's clock: what is applied is stamped with it (catalog freshness). */
  clock?: () => number;
  /** How to ask for a complete resync while the catalog is empty: `file` (SQLite files in parts, each copied whole) or `rows`. */
  initialSync?: 'file' | 'rows';
  /** How it takes a long run of new or changed updates in the tail (a large import on its way down): files (default) or rows. */
  catchUp?: 'file' | 'rows';
  /** After every applied batch: how many entities changed and what (wake this node's own subscribers, reassess, reconcile content). */
  onApplied: (changed: number, applied: readonly Applied[]) => void;
  /** On each (re)connection: files held back by the parent may be asked for again. */
  onConnected?: () => void;
}

/**
 * The child side of the tree: joins its parent once (the credential is kept in the
 * database), then keeps a subscription open, reconnecting with backoff and jitter.
 */
export class ReplicationChild {
  #client: ReplicationClient | null = null;
  #native: NativeDb | null = null;
  #applier: BatchApplier | null = null;
  #call: grpc.ClientReadableStream<ReceivedMessage> | null = null;
  #stopped = true;
  #connected = false;
  #parentHead = 0;
  #lastError: string | null = null;
  #fatal: string | null = null;
  #attempt = 0;
  #timer: NodeJS.Timeout | null = null;
  #lastAck = 0;
  #ackTimer: NodeJS.Timeout | null = null;
  #filesPending = 0;
  #pausedUntil = 0;
  #fullResync = false;
  /** Snapshot files (parts) of each kind loaded in this resync, for the log. */
  #parts = new Map<string, number>();
  #catchingUp = false;
  /** A snapshot file failed to arrive whole or to load: rows are asked for from then on (a parent's bug must not stop the tree). */
  #fileFailed = false;
  constructor(private readonly d: ChildDeps) {}

  get address(): string {
    return this.d.upstream.address;
  }

  /** The credential and state row, if this node has joined. */
  state(): StateRow | undefined {
    return this.#native?.prepare('SELECT * FROM upstream_state WHERE id = 1').get() as StateRow | undefined;
  }

  async start(): Promise<void> {
    if (!this.d.db.filePath) throw new Error('a child node needs a file database (remote libsql is not supported for replication yet)');
    this.#native = openNative(this.d.db.filePath);
    for (const p of FileReceiver.paths(`${this.d.db.filePath}.snapshot`)) rmSync(p, { force: true }); // files cut short by a crash
    this.#applier = new BatchApplier(this.#native, this.d.kinds, this.d.identity.nodeId, this.d.clock);
    this.#connect(this.d.upstream.credentials);
    this.#stopped = false;
    void this.#loop();
  }

  #connect(credentials: grpc.ChannelCredentials): void {
    this.#client?.close();
    const Service = replicationService();
    this.#client = new Service(this.d.upstream.address, credentials, {
      'grpc.keepalive_time_ms': 30_000,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      // HTTP/2's default 64 KiB window stalls the parent whenever this thread is busy applying a batch (no WINDOW_UPDATE
      // is sent); a larger window lets the next batches arrive meanwhile. The parent still bounds what it has in flight.
      'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW,
      'grpc.initial_reconnect_backoff_ms': 250,
      'grpc.max_reconnect_backoff_ms': RETRY_MAX_MS,
    });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#ackTimer) clearTimeout(this.#ackTimer);
    this.#call?.cancel();
    this.#client?.close();
    await this.#applier?.close();
    this.#native?.close();
    this.#native = null;
  }

  /** Resubscribe now (e.g. the subtree's languages changed). */
  resubscribe(): void {
    this.#call?.cancel();
  }

  /** Forget the cursor: the next subscription is a complete resync that re-verifies everything. */
  requestResync(): void {
    this.#native?.prepare("UPDATE upstream_state SET epoch = '', resyncing = 1, updated_at = ? WHERE id = 1").run(Date.now());
    this.#call?.cancel();
  }

  /** True while a complete resync is being applied (its end is one more applied batch). */
  get resyncing(): boolean {
    return this.#fullResync;
  }

  /** True while the last batch applied said the parent has more behind it (a burst, or a child far behind). */
  get catchingUp(): boolean {
    return this.#catchingUp;
  }

  setFilesPending(n: number): void {
    this.#filesPending = n;
  }

  status() {
    const s = this.state();
    return {
      address: this.d.upstream.address,
      parentId: s?.parent_id ?? null,
      connected: this.#connected,
      cursor: s?.cursor ?? 0,
      epoch: s?.epoch ?? null,
      parentHead: this.#parentHead,
      lag: {
        entries: Math.max(0, this.#parentHead - (s?.cursor ?? 0)),
        seconds: s?.last_success_at && this.#parentHead > (s?.cursor ?? 0) ? Math.round((Date.now() - s.last_success_at) / 1000) : 0,
      },
      resyncing: s?.resyncing === 1,
      languages: s?.languages ? s.languages.split(',') : [],
      filesPending: this.#filesPending,
      /** Set while the parent's replication schedule for this node holds changes back. */
      pausedUntil: this.#pausedUntil ? new Date(this.#pausedUntil).toISOString() : null,
      lastError: this.#fatal ?? this.#lastError,
      lastSuccessAt: s?.last_success_at ? new Date(s.last_success_at).toISOString() : null,
    };
  }

  #metadata(credential: string): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${credential}`);
    return md;
  }

  async #join(): Promise<StateRow> {
    const existing = this.state();
    const tokenHash = this.d.upstream.joinToken ? hashToken(splitPinnedToken(this.d.upstream.joinToken).token) : null;
    if (existing && existing.join_token_hash === null && tokenHash) {
      // Joined before the token was recorded: taken to be this one (a start script keeps its flags).
      this.#native!.prepare('UPDATE upstream_state SET join_token_hash = ? WHERE id = 1').run(tokenHash);
      return this.state()!;
    }
    // Joined, and no other token given: go on. Another token: join again (removed, a new parent, a new certificate).
    if (existing && (!tokenHash || existing.join_token_hash === tokenHash)) return existing;
    if (existing) this.d.logger.info({ address: this.d.upstream.address }, 'a new join token: joining again (a complete resync follows)');
    if (!this.d.upstream.joinToken)
      throw Object.assign(new Error(`this node has not joined ${this.d.upstream.address}: start it once with --join-token`), { fatal: true });
    let csr = '';
    if (this.d.upstream.prepareJoin) {
      const j = await this.d.upstream.prepareJoin();
      this.#connect(j.credentials);
      csr = j.csr;
    }
    const res = await new Promise<JoinResponse__Output>((resolve, reject) =>
      this.#client!.Join(
        {
          join_token: splitPinnedToken(this.d.upstream.joinToken!).token,
          node_id: this.d.identity.nodeId,
          name: this.d.name,
          languages: [...this.d.ownLanguages],
          protocol_version: PROTOCOL_VERSION,
          version: this.d.version,
          csr,
        },
        (err, r) => (err || !r ? reject(err ?? new Error('no answer to Join')) : resolve(r)),
      ),
    );
    // The parent signed this node's certificate: mutual TLS from the next call on.
    if (csr && this.d.upstream.acceptCertificate) {
      if (!res.client_certificate)
        throw Object.assign(new Error(`${this.d.upstream.address} joined this node but signed no certificate for it (a parent with --tls-cert files?)`), {
          fatal: true,
        });
      this.#connect(this.d.upstream.acceptCertificate(res.client_certificate));
    }
    const now = Date.now();
    // A new credential and no cursor: the parent sends a complete resync, which sweeps what it no longer has.
    this.#native!.prepare(
      "INSERT OR REPLACE INTO upstream_state (id, address, parent_id, credential, epoch, cursor, languages, resyncing, updated_at, join_token_hash) VALUES (1, ?, ?, ?, '', 0, '', 0, ?, ?)",
    ).run(this.d.upstream.address, res.parent_id, res.credential, now, tokenHash);
    this.d.logger.info({ parent: res.parent_name, parentId: res.parent_id }, 'joined the upstream node');
    return this.state()!;
  }

  #retry(err: unknown): void {
    const e = err as { code?: number; details?: string; message?: string; fatal?: boolean };
    const message = e.details || e.message || String(err);
    this.#connected = false;
    this.#lastError = message;
    // Refusals that a retry cannot fix stop the loop; they show in status and the log.
    const permanent =
      e.fatal ||
      e.code === grpc.status.PERMISSION_DENIED ||
      e.code === grpc.status.FAILED_PRECONDITION ||
      e.code === grpc.status.UNAUTHENTICATED ||
      e.code === grpc.status.INVALID_ARGUMENT;
    if (permanent) {
      this.#fatal = message;
      this.d.logger.error({ upstream: this.d.upstream.address, err: message }, 'the upstream node refused this node; replication stopped');
      return;
    }
    const delay = backoffMs(++this.#attempt, { baseMs: 250, maxMs: RETRY_MAX_MS });
    const level = this.#attempt <= RETRY_LOGGED || this.#attempt % RETRY_LOG_EVERY === 0 ? 'warn' : 'debug';
    this.d.logger[level](
      { upstream: this.d.upstream.address, err: message, attempt: this.#attempt, retryInMs: Math.round(delay) },
      'upstream unavailable; retrying',
    );
    this.#timer = setTimeout(() => void this.#loop(), delay);
  }

  async #loop(): Promise<void> {
    if (this.#stopped) return;
    let state: StateRow;
    try {
      state = await this.#join();
    } catch (err) {
      return this.#retry(err);
    }
    const languages = [...new Set([...this.d.ownLanguages, ...(await this.d.subtreeLanguages())])].sort();
    const tailFiles = (this.d.catchUp ?? 'file') === 'file' && !this.#fileFailed;
    const call = this.#client!.Subscribe(
      {
        protocol_version: PROTOCOL_VERSION,
        node_id: this.d.identity.nodeId,
        epoch: state.resyncing ? '' : state.epoch,
        after_seq: state.cursor,
        languages,
        applied_languages: state.languages ? state.languages.split(',') : [],
        name: this.d.name,
        version: this.d.version,
        snapshot_file: (this.d.initialSync ?? 'file') === 'file' && !this.#fileFailed && this.#applier!.canLoadFiles(),
        tail_files: tailFiles,
        compressed_batches: true,
        brotli_pieces: true,
      },
      this.#metadata(state.credential),
    );
    const receiver = new FileReceiver(`${this.d.db.filePath}.snapshot`);
    this.#call = call;
    let [fullResync, resyncing] = [false, false]; // resyncing: a resync (complete or a backfill) is under way: its snapshot's messages, not the tail's
    let epoch = state.epoch;
    const finish = (err: unknown) => {
      this.#connected = false;
      receiver.discard();
      if (this.#catchingUp) {
        // Cut mid-burst: what was put off is done now.
        this.#catchingUp = false;
        if (!this.#stopped) this.d.onApplied(0, []);
      }
      if (this.#fullResync) {
        // Cut mid-resync: what did arrive is assessed meanwhile; the resync is redone.
        this.#fullResync = false;
        if (!this.#stopped) this.d.onApplied(1, this.#applier?.takeApplied() ?? []);
      }
      if (this.#call === call) this.#call = null;
      if (this.#stopped) return;
      const e = err as { code?: number };
      if (e && e.code === grpc.status.CANCELLED) {
        this.#timer = setTimeout(() => void this.#loop(), 10);
        return;
      }
      this.#retry(err ?? new Error('the upstream ended the stream'));
    };
    const handle = (msg: ReceivedMessage) => {
      receiver.between(msg);
      if ('hello' in msg && msg.hello) {
        this.#connected = true;
        this.#attempt = 0;
        this.#lastError = null;
        epoch = msg.hello.epoch;
        this.#parentHead = Number(msg.hello.head_seq);
        this.#pausedUntil = 0;
        this.d.onConnected?.();
        this.d.logger.info({ mode: msg.hello.mode, reason: msg.hello.reason, head: this.#parentHead, cursor: state.cursor }, 'subscribed upstream');
      } else if ('resync_start' in msg && msg.resync_start) {
        fullResync = msg.resync_start.full;
        resyncing = true;
        this.#fullResync = fullResync;
        this.#applier!.resyncStart(fullResync);
        this.#parts.clear();
      } else if ('batch' in msg && msg.batch) {
        this.#pausedUntil = 0;
        const { snapshot } = msg.batch;
        const { changes, last } = inbox.merge(msg.batch);
        const cursor = snapshot ? null : Number(last.cursor);
        this.#catchingUp = !snapshot && last.more === true;
        const changed = this.#applier!.apply(changes, { snapshot, fullResync, cursor, epoch });
        if (cursor !== null) this.#parentHead = Math.max(this.#parentHead, cursor);
        this.d.onApplied(changed, this.#applier!.takeApplied());
        this.#ack();
      } else if ('snapshot_file' in msg && msg.snapshot_file) {
        const failed = (err: unknown) => {
          this.#fileFailed = true;
          throw err;
        };
        try {
          const file = receiver.piece(msg.snapshot_file);
          if (!file) return;
          // A large part of a snapshot: copied on the part loader's thread while this one takes the next part's pieces.
          const later = this.#applier!.loadLater(file);
          if (later) return later.then((n) => this.#fileApplied(receiver, file, n, true), failed);
          // A smaller one, or a tail file (a run of the parent's log, with its cursor).
          this.#fileApplied(receiver, file, this.#applier!.applyFile(file, { epoch, resyncing, tailFiles }));
        } catch (err) {
          failed(err);
        }
      } else if ('resync_end' in msg && msg.resync_end) {
        const removed = this.#applier!.resyncEnd({ cursor: Number(msg.resync_end.cursor), full: msg.resync_end.full, epoch, languages });
        this.d.logger.info({ full: msg.resync_end.full, cursor: Number(msg.resync_end.cursor), removed }, 'resync applied');
        fullResync = false;
        resyncing = false;
        this.#fullResync = false;
        this.d.onApplied(removed + 1, this.#applier!.takeApplied());
        this.#ack();
      } else if ('heartbeat' in msg && msg.heartbeat) {
        this.#parentHead = Math.max(this.#parentHead, Number(msg.heartbeat.head_seq));
        this.#pausedUntil = Number(msg.heartbeat.paused_until_ms ?? 0);
        this.#ack();
      }
    };
    const inbox = new Inbox(call, handle, () => this.#stopped, finish, this.d.logger);
  }

  /** A file applied: removed, logged, and what it changed handed on. */
  #fileApplied(receiver: FileReceiver, file: ReceivedFile, changed: number, onThread = false): void {
    receiver.done(file);
    const at = file.cursor > 0 ? { cursor: file.cursor } : null;
    if (at) [this.#catchingUp, this.#parentHead] = [file.more, Math.max(this.#parentHead, at.cursor)];
    const by = onThread ? { by: 'part loader' } : {};
    if (!at) this.#parts.set(file.kind, (this.#parts.get(file.kind) ?? 0) + 1);
    this.d.logger.info(
      { kind: file.kind, ...(at ?? { part: this.#parts.get(file.kind) }), entities: changed, ...by },
      at ? 'tail file applied' : 'snapshot file loaded',
    );
    if (this.#stopped) return; // a part the thread finished as the node stopped: the resync, cut short, is redone at the next start
    this.d.onApplied(changed, this.#applier!.takeApplied());
    this.#ack();
  }

  /** Reports the applied cursor to the parent, at most twice a second. */
  #ack(): void {
    if (this.#ackTimer) return;
    const wait = Math.max(0, 500 - (Date.now() - this.#lastAck));
    this.#ackTimer = setTimeout(() => {
      this.#ackTimer = null;
      this.#lastAck = Date.now();
      const s = this.state();
      if (!s || !this.#client) return;
      this.#client.Ack(
        { node_id: this.d.identity.nodeId, cursor: s.cursor, files_pending: this.#filesPending, epoch: s.resyncing ? '' : s.epoch },
        this.#metadata(s.credential),
        () => {},
      );
    }, wait);
  }

  /** Sends compliance summaries upstream (the roll-up); resolves with the nodes to send again whole. */
  report(reports: WireNodeReport[], gone: string[]): Promise<string[]> {
    const s = this.state();
    if (!s || !this.#client) return Promise.reject(new Error('not joined to the upstream node yet'));
    return new Promise((resolve, reject) =>
      this.#client!.Report({ reports, gone }, this.#metadata(s.credential), { deadline: Date.now() + 60_000 }, (err, r) =>
        err ? reject(err) : resolve(r?.resend ?? []),
      ),
    );
  }

  /** The parent this node joined (null before it has). */
  parentId(): string | null {
    return this.state()?.parent_id ?? null;
  }

  /** Reads one file from the parent (fetch-file.ts). */
  async *fetchFile(sha256: string, offset: number, signal: AbortSignal): AsyncGenerator<Uint8Array> {
    const s = this.state();
    if (!s || !this.#client) throw new Error('not joined to the upstream node');
    yield* fetchFile(this.#client, this.#metadata(s.credential), sha256, offset, signal);
  }
}
