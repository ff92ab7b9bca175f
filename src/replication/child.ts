import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { Database, NativeDb } from '../db/index.js';
import { openNative, prepare, type Stmt } from '../db/index.js';
import type { Logger } from '../lib/log.js';
import { ReplicaWriter } from '../catalog/replica.js';
import { updateLanguages } from '../catalog/format.js';
import type { UpdatePayload } from '../catalog/import-core.js';
import { levelKey, type LevelPayload } from '../catalog/severities.js';
import type { SettingPayload } from '../settings/service.js';
import type { PolicyPayload } from '../delivery/replication.js';
import { RELEASE_PRUNE_SQL, RELEASE_UPDATES_PRUNE_SQL, type ReleasePayload } from '../freshness/release.js';
import { DeferredError } from '../content/downloader.js';
import { PROTOCOL_VERSION, RETRY_AFTER_KEY, replicationService, type ServerMessage, type WireChange, type WireNodeReport } from './protocol.js';
import type { Identity } from './identity.js';
import { splitPinnedToken } from '../tls/pin.js';
import { hashToken } from '../auth/tokens.js';
import { backoffMs } from '../lib/backoff.js';

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
/** Changes applied in one transaction at most, when batches queue up. */
const MAX_TX_CHANGES = 4_000;
/** Messages received and not yet applied before the stream is paused. */
const MAX_QUEUED_MESSAGES = 32;

const [OPEN, COMMA, CLOSE] = ['[', ',', ']'].map((c) => Buffer.from(c)) as [Buffer, Buffer, Buffer];
const CONTENT_HASH_KEY = '"contentHash":"';
/** Updates handed to one insertNew (its JSON text, ~1.3 KB each, is copied a few times on the way to SQLite). */
const BULK_RUN = 1_000;

const APPEND = 'INSERT INTO change_log (kind, key, op, languages, payload, created_at) VALUES (?,?,?,?,?,?)';

/**
 * Applies what the parent sends, one transaction per message: the replicated rows,
 * this node's own change-log entries for them (so a mid-tier node republishes to
 * its children), and the cursor. A crash at any instant leaves either the whole
 * batch with its cursor or none of it, so nothing is lost or applied twice.
 */
export class BatchApplier {
  readonly #w: ReplicaWriter;
  readonly #s: Record<string, Stmt>;
  /** Policies changed by the batches applied since the last `takePolicies()`. */
  #policies = new Set<string>();
  /**
   * A complete resync into an empty catalog (a new child's first sync): no update
   * row can be there before the snapshot brings it (a child imports nothing, and the
   * tail waits for the resync's end), so the snapshot's updates are inserted without
   * looking them up or remembering them for the sweep.
   */
  #fresh = false;

  constructor(
    private readonly db: NativeDb,
    /** This node's id: the key of its own custom severity levels when it republishes the list. */
    private readonly nodeId: string,
    /** The node's clock: what is applied is stamped with it (catalog freshness). */
    private readonly clock: () => number = Date.now,
  ) {
    this.#w = new ReplicaWriter(db);
    // The ids a complete resync has seen live for the resync only: one that is cut
    // short (a crash included) starts again from its beginning, which empties them.
    // A TEMP table of this connection costs no WAL writes and no fsync.
    db.exec('CREATE TEMP TABLE IF NOT EXISTS resync_seen (kind TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID');
    const prep = (q: string) => prepare(db, q);
    this.#s = {
      append: prep(APPEND),
      levels: prep('SELECT id, name, rank, origin_key FROM custom_severities ORDER BY rank, id'),
      setting: prep(`INSERT INTO settings (key, value, updated_at, updated_by, origin) VALUES (?, ?, ?, 'replication', ?)
        ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, updated_by = excluded.updated_by, origin = excluded.origin`),
      settingDelete: prep("DELETE FROM settings WHERE key = ? AND origin != ''"),
      seen: prep('INSERT OR IGNORE INTO temp.resync_seen (kind, key) VALUES (?, ?)'),
      policyGet: prep("SELECT origin, revision, (SELECT group_concat(update_id, ',') FROM (SELECT update_id FROM policy_updates WHERE policy_id = ? ORDER BY update_id)) AS updates FROM policies WHERE id = ?"),
      policyUpsert: prep(`INSERT INTO policies (id, name, description, enabled, start_at, deadline_at, targets, shared_targets, installation, follow_supersedence, origin, origin_name, revision, created_at, created_by, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'replication', ?)
        ON CONFLICT(id) DO UPDATE SET name = excluded.name, description = excluded.description, enabled = excluded.enabled, start_at = excluded.start_at,
          deadline_at = excluded.deadline_at, targets = excluded.targets, shared_targets = excluded.shared_targets, installation = excluded.installation,
          follow_supersedence = excluded.follow_supersedence, origin = excluded.origin, origin_name = excluded.origin_name, revision = excluded.revision, updated_at = excluded.updated_at`),
      policyUpdatesClear: prep('DELETE FROM policy_updates WHERE policy_id = ?'),
      policyUpdate: prep('INSERT OR IGNORE INTO policy_updates (policy_id, update_id, added_at) VALUES (?, ?, ?)'),
      policyDelete: prep("DELETE FROM policies WHERE id = ? AND origin != ''"),
      policyHistory: prep("INSERT INTO policy_history (policy_id, at, by, action, detail) VALUES (?, ?, 'replication', ?, ?)"),
      release: prep('INSERT INTO freshness_releases (version, published_at, imported_at, received_at) VALUES (?, ?, ?, ?) ON CONFLICT(version) DO NOTHING'),
      // A release's updates from its payload in one statement, each visible from when
      // this node applied that revision (or later: `visible`).
      releaseUpdates: prep(`INSERT OR IGNORE INTO freshness_updates (version, update_id, revision, languages, family, visible_at)
        SELECT ?, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3,
          (SELECT min(u.updated_at, ?) FROM updates u WHERE u.id = j.value ->> 0 AND u.revision >= j.value ->> 1)
        FROM json_each(?, '$.updates') j`),
      // The updates a batch applied ([[id, revision], ...]) become visible in the releases that wait for them.
      visible: prep(`UPDATE freshness_updates SET visible_at = ? FROM json_each(?) j
        WHERE freshness_updates.update_id = j.value ->> 0 AND freshness_updates.revision <= j.value ->> 1 AND freshness_updates.visible_at IS NULL`),
      releasePrune: prep(RELEASE_PRUNE_SQL),
      releaseUpdatesPrune: prep(RELEASE_UPDATES_PRUNE_SQL),
      cursor: prep('UPDATE upstream_state SET cursor = ?, epoch = ?, last_success_at = ?, updated_at = ? WHERE id = 1'),
    };
  }

  #tx<T>(fn: () => T): T {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const r = fn();
      this.db.exec('COMMIT');
      return r;
    } catch (err) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      throw err;
    }
  }

  /** Applies one batch; returns how many entities changed here. */
  apply(changes: WireChange[], opts: { snapshot: boolean; fullResync: boolean; cursor: number | null; epoch: string }): number {
    const now = this.clock();
    return this.#tx(() => {
      let applied = 0;
      const visible: [string, number][] = [];
      // A fresh resync's updates (see #fresh), written a run at a time by insertNew.
      const bulk = this.#fresh && opts.fullResync;
      let run: Buffer[] = [];
      const flush = () => {
        if (!run.length) return;
        const list = Buffer.concat([OPEN, ...run.flatMap((b, i) => (i ? [COMMA, b] : [b])), CLOSE]).toString();
        run = [];
        applied += this.#w.insertNew(list, now);
      };
      for (const c of changes) {
        // From a parent that sends the content hash (a payload built by SQL); else one at a time below.
        if (bulk && c.kind === 'update' && c.op === 'upsert' && c.payload.includes(CONTENT_HASH_KEY)) {
          run.push(c.payload);
          if (run.length >= BULK_RUN) flush(); // bounds the JSON text handed over at once
          continue;
        }
        flush();
        if (opts.fullResync && !(this.#fresh && c.kind === 'update')) this.#s['seen']!.run(c.kind, c.key);
        if (c.kind === 'severity-levels') {
          this.#w.levels((JSON.parse(c.payload.toString()) as LevelPayload).levels, now);
          // Republished as this node's whole list: replicated levels and its own.
          const rows = this.#s['levels']!.all() as { id: number; name: string; rank: number; origin_key: string | null }[];
          const list: LevelPayload = { levels: rows.map((r) => ({ key: levelKey(this.nodeId, { id: r.id, originKey: r.origin_key }), name: r.name, rank: r.rank })) };
          this.#s['append']!.run('severity-levels', 'all', 'upsert', '', JSON.stringify(list), now);
          applied++;
          continue;
        }
        if (c.kind === 'setting') {
          if (c.op === 'upsert') {
            const p = JSON.parse(c.payload.toString()) as SettingPayload;
            this.#s['setting']!.run(c.key, JSON.stringify(p.value), now, p.origin);
          } else if (c.op === 'delete') this.#s['settingDelete']!.run(c.key);
          this.#s['append']!.run('setting', c.key, c.op, '', c.payload.toString(), now);
          applied++;
          continue;
        }
        if (c.kind === 'release') {
          if (c.op === 'upsert') {
            this.#release(JSON.parse(c.payload.toString()) as ReleasePayload, c.payload.toString(), now);
            applied++;
          }
          continue;
        }
        if (c.kind === 'policy') {
          if (c.op === 'upsert' ? this.#policyUpsert(JSON.parse(c.payload.toString()) as PolicyPayload, now) : c.op === 'delete' && this.#policyDelete(c.key, now)) applied++;
          continue;
        }
        if (c.kind !== 'update') continue; // a kind this version does not know: skipped, not fatal
        if (c.op === 'upsert') {
          const p = JSON.parse(c.payload.toString()) as UpdatePayload;
          if (this.#w.upsert(p, now, this.#fresh && opts.fullResync)) {
            visible.push([p.id, p.revision]);
            // A state entry (no payload): this node's children are sent the row as it is then.
            this.#s['append']!.run('update', p.id, 'upsert', updateLanguages(p).join(','), '', now);
            applied++;
          }
        } else if (c.op === 'expire') {
          const p = JSON.parse(c.payload.toString()) as { id: string; revision: number };
          const cur = this.#w.current(p.id);
          if (cur && this.#w.expire(p.id, p.revision, now)) {
            this.#s['append']!.run('update', p.id, 'expire', cur.languages, JSON.stringify(p), now);
            applied++;
          }
        } else if (c.op === 'delete') {
          const langs = this.#w.delete(c.key);
          if (langs !== null) {
            this.#s['append']!.run('update', c.key, 'delete', langs, JSON.stringify({ id: c.key }), now);
            applied++;
          }
        }
      }
      flush();
      if (visible.length) this.#s['visible']!.run(now, JSON.stringify(visible));
      if (!opts.snapshot && opts.cursor !== null) this.#s['cursor']!.run(opts.cursor, opts.epoch, now, now);
      return applied;
    });
  }

  /**
   * A policy from upstream, stored read-only with its origin, with the updates the
   * parent sent (those of this subtree's languages); logged again for this node's
   * children. A policy this node already holds at that revision with those updates
   * (a snapshot resending it) is left alone.
   */
  #policyUpsert(p: PolicyPayload, now: number): boolean {
    const cur = this.#s['policyGet']!.get(p.id, p.id) as { origin: string; revision: number; updates: string | null } | undefined;
    if (cur && cur.origin === '') return false; // an id of this node's own: never overwritten
    const ids = [...new Set(p.updates.map(([id]) => id))].sort();
    if (cur && Number(cur.revision) === p.revision && (cur.updates ?? '') === ids.join(',')) return false;
    const targets = JSON.stringify(p.targets);
    this.#s['policyUpsert']!.run(
      p.id, p.name, p.description, p.enabled ? 1 : 0, p.startAt, p.deadlineAt, targets, targets, p.installation ? JSON.stringify(p.installation) : null,
      p.followSupersedence ? 1 : 0, p.origin, p.originName, p.revision, now, now,
    );
    this.#s['policyUpdatesClear']!.run(p.id);
    for (const id of ids) this.#s['policyUpdate']!.run(p.id, id, now);
    this.#s['policyHistory']!.run(p.id, now, cur ? 'replicated-update' : 'replicated', JSON.stringify({ origin: p.origin, originName: p.originName, revision: p.revision, enabled: p.enabled, updates: ids.length }));
    this.#s['append']!.run('policy', p.id, 'upsert', '', JSON.stringify(p), now);
    this.#policies.add(p.id);
    return true;
  }

  #policyDelete(id: string, now: number): boolean {
    if (!this.#s['policyDelete']!.run(id).changes) return false;
    this.#s['policyUpdatesClear']!.run(id);
    this.#s['policyHistory']!.run(id, now, 'replicated-delete', '{}');
    this.#s['append']!.run('policy', id, 'delete', '', JSON.stringify({ id }), now);
    this.#policies.add(id);
    return true;
  }

  /**
   * A release from upstream: kept with its updates (those of this subtree's
   * languages), each visible from when this node applied it (an update not here yet
   * gets its time when it arrives: `visible`), and logged again for this node's
   * children. Only the newest releases are kept.
   */
  #release(p: ReleasePayload, json: string, now: number): void {
    this.#s['release']!.run(p.version, p.publishedAt, p.importedAt, now);
    this.#s['releaseUpdates']!.run(p.version, now, json);
    this.#s['releasePrune']!.run();
    this.#s['releaseUpdatesPrune']!.run();
    this.#s['append']!.run('release', p.version, 'upsert', '', json, now);
  }

  /** The policies changed since the last call (for the delivery engine). */
  takePolicies(): string[] {
    const out = [...this.#policies];
    this.#policies.clear();
    return out;
  }

  resyncStart(full: boolean): void {
    this.#tx(() => {
      this.#fresh = full && this.db.prepare('SELECT 1 FROM updates LIMIT 1').all().length === 0;
      this.db.exec('DELETE FROM temp.resync_seen');
      this.db.prepare('UPDATE upstream_state SET resyncing = ?, updated_at = ? WHERE id = 1').run(full ? 1 : 0, Date.now());
    });
  }

  /**
   * Ends a snapshot: after a full resync, replicated updates the snapshot did not
   * list are removed (with tombstones for this node's children); then the cursor,
   * epoch and languages move together.
   */
  resyncEnd(opts: { cursor: number; full: boolean; epoch: string; languages: readonly string[] }): number {
    const now = this.clock();
    return this.#tx(() => {
      let removed = 0;
      // A fresh resync has nothing to sweep among the updates: each one came from it.
      if (opts.full && !this.#fresh) {
        const stale = this.db.prepare("SELECT id FROM updates WHERE id NOT IN (SELECT key FROM temp.resync_seen WHERE kind = 'update')").all() as { id: string }[];
        for (const { id } of stale) {
          const langs = this.#w.delete(id);
          if (langs !== null) {
            this.#s['append']!.run('update', id, 'delete', langs, JSON.stringify({ id }), now);
            removed++;
          }
        }
      }
      if (opts.full) {
        // Replicated settings the parent no longer has.
        const gone = this.db.prepare("SELECT key FROM settings WHERE origin != '' AND key NOT IN (SELECT key FROM temp.resync_seen WHERE kind = 'setting')").all() as { key: string }[];
        for (const { key } of gone) {
          this.#s['settingDelete']!.run(key);
          this.#s['append']!.run('setting', key, 'delete', '', JSON.stringify({ key }), now);
          removed++;
        }
        // Replicated policies the parent no longer has (this node's own stay).
        const policies = this.db.prepare("SELECT id FROM policies WHERE origin != '' AND id NOT IN (SELECT key FROM temp.resync_seen WHERE kind = 'policy')").all() as { id: string }[];
        for (const { id } of policies) if (this.#policyDelete(id, now)) removed++;
      }
      this.db.exec('DELETE FROM temp.resync_seen');
      this.#fresh = false;
      this.db
        .prepare('UPDATE upstream_state SET cursor = ?, epoch = ?, languages = ?, resyncing = 0, last_success_at = ?, updated_at = ? WHERE id = 1')
        .run(opts.cursor, opts.epoch, opts.languages.join(','), now, now);
      return removed;
    });
  }
}

/**
 * The child side of the tree: joins its parent once (the credential is kept in the
 * database), then keeps a subscription open, reconnecting with backoff and jitter.
 */
export class ReplicationChild {
  #client: grpc.Client | null = null;
  #native: NativeDb | null = null;
  #applier: BatchApplier | null = null;
  #call: grpc.ClientReadableStream<ServerMessage> | null = null;
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
  /** The node's clock (catalog freshness stamps). */
  clock: () => number = Date.now;

  constructor(
    private readonly db: Database,
    private readonly identity: Identity,
    private readonly name: string,
    private readonly version: string,
    private readonly ownLanguages: readonly string[],
    private readonly subtreeLanguages: () => Promise<string[]>,
    private readonly upstream: UpstreamOptions,
    private readonly logger: Logger,
    /** After every applied batch: wake this node's own subscribers, reconcile content; the policies it changed. */
    private readonly onApplied: (changed: number, policies: readonly string[]) => void,
    /** On each (re)connection: files held back by the parent may be asked for again. */
    private readonly onConnected: () => void = () => {},
  ) {}

  get address(): string {
    return this.upstream.address;
  }

  /** The credential and state row, if this node has joined. */
  state(): StateRow | undefined {
    return this.#native?.prepare('SELECT * FROM upstream_state WHERE id = 1').get() as StateRow | undefined;
  }

  async start(): Promise<void> {
    if (!this.db.filePath) throw new Error('a child node needs a file database (remote libsql is not supported for replication yet)');
    this.#native = openNative(this.db.filePath);
    this.#applier = new BatchApplier(this.#native, this.identity.nodeId, this.clock);
    this.#connect(this.upstream.credentials);
    this.#stopped = false;
    void this.#loop();
  }

  #connect(credentials: grpc.ChannelCredentials): void {
    this.#client?.close();
    const Service = replicationService();
    this.#client = new Service(this.upstream.address, credentials, {
      'grpc.keepalive_time_ms': 30_000,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      // HTTP/2's default 64 KiB window stalls the parent whenever this thread is busy
      // applying a batch (no WINDOW_UPDATE is sent); a larger window lets the next
      // batches arrive meanwhile. The parent still bounds what it has in flight.
      'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW,
    });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#ackTimer) clearTimeout(this.#ackTimer);
    this.#call?.cancel();
    this.#client?.close();
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

  setFilesPending(n: number): void {
    this.#filesPending = n;
  }

  status() {
    const s = this.state();
    return {
      address: this.upstream.address,
      parentId: s?.parent_id ?? null,
      connected: this.#connected,
      cursor: s?.cursor ?? 0,
      epoch: s?.epoch ?? null,
      parentHead: this.#parentHead,
      lag: { entries: Math.max(0, this.#parentHead - (s?.cursor ?? 0)), seconds: s?.last_success_at && this.#parentHead > (s?.cursor ?? 0) ? Math.round((Date.now() - s.last_success_at) / 1000) : 0 },
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
    const tokenHash = this.upstream.joinToken ? hashToken(splitPinnedToken(this.upstream.joinToken).token) : null;
    if (existing && existing.join_token_hash === null && tokenHash) {
      // Joined before the token was recorded: taken to be this one (a start script keeps its flags).
      this.#native!.prepare('UPDATE upstream_state SET join_token_hash = ? WHERE id = 1').run(tokenHash);
      return this.state()!;
    }
    // Joined, and no other token given: go on. Another token: join again (removed, a new parent, a new certificate).
    if (existing && (!tokenHash || existing.join_token_hash === tokenHash)) return existing;
    if (existing) this.logger.info({ address: this.upstream.address }, 'a new join token: joining again (a complete resync follows)');
    if (!this.upstream.joinToken) throw Object.assign(new Error(`this node has not joined ${this.upstream.address}: start it once with --join-token`), { fatal: true });
    let csr = '';
    if (this.upstream.prepareJoin) {
      const j = await this.upstream.prepareJoin();
      this.#connect(j.credentials);
      csr = j.csr;
    }
    const res = await new Promise<{ credential: string; parent_id: string; parent_name: string; client_certificate: string }>((resolve, reject) =>
      (this.#client as unknown as { Join: (req: unknown, cb: (err: grpc.ServiceError | null, r: never) => void) => void }).Join(
        {
          join_token: splitPinnedToken(this.upstream.joinToken!).token,
          node_id: this.identity.nodeId,
          name: this.name,
          languages: [...this.ownLanguages],
          protocol_version: PROTOCOL_VERSION,
          version: this.version,
          csr,
        },
        (err, r) => (err ? reject(err) : resolve(r)),
      ),
    );
    // The parent signed this node's certificate: mutual TLS from the next call on.
    if (csr && this.upstream.acceptCertificate) {
      if (!res.client_certificate) throw Object.assign(new Error(`${this.upstream.address} joined this node but signed no certificate for it (a parent with --tls-cert files?)`), { fatal: true });
      this.#connect(this.upstream.acceptCertificate(res.client_certificate));
    }
    const now = Date.now();
    // A new credential and no cursor: the parent sends a complete resync, which sweeps what it no longer has.
    this.#native!.prepare(
      "INSERT OR REPLACE INTO upstream_state (id, address, parent_id, credential, epoch, cursor, languages, resyncing, updated_at, join_token_hash) VALUES (1, ?, ?, ?, '', 0, '', 0, ?, ?)",
    ).run(this.upstream.address, res.parent_id, res.credential, now, tokenHash);
    this.logger.info({ parent: res.parent_name, parentId: res.parent_id }, 'joined the upstream node');
    return this.state()!;
  }

  #retry(err: unknown): void {
    const e = err as { code?: number; details?: string; message?: string; fatal?: boolean };
    const message = e.details || e.message || String(err);
    this.#connected = false;
    this.#lastError = message;
    // Refusals that a retry cannot fix stop the loop; they show in status and the log.
    const permanent = e.fatal || e.code === grpc.status.PERMISSION_DENIED || e.code === grpc.status.FAILED_PRECONDITION || e.code === grpc.status.UNAUTHENTICATED || e.code === grpc.status.INVALID_ARGUMENT;
    if (permanent) {
      this.#fatal = message;
      this.logger.error({ upstream: this.upstream.address, err: message }, 'the upstream node refused this node; replication stopped');
      return;
    }
    const delay = backoffMs(++this.#attempt, { baseMs: 250, maxMs: 30_000 });
    this.logger.warn({ upstream: this.upstream.address, err: message, retryInMs: Math.round(delay) }, 'upstream unavailable; retrying');
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
    const languages = [...new Set([...this.ownLanguages, ...(await this.subtreeLanguages())])].sort();
    const call = (this.#client as unknown as { Subscribe: (req: unknown, md: grpc.Metadata) => grpc.ClientReadableStream<ServerMessage> }).Subscribe(
      {
        protocol_version: PROTOCOL_VERSION,
        node_id: this.identity.nodeId,
        epoch: state.resyncing ? '' : state.epoch,
        after_seq: state.cursor,
        languages,
        applied_languages: state.languages ? state.languages.split(',') : [],
        name: this.name,
        version: this.version,
      },
      this.#metadata(state.credential),
    );
    this.#call = call;
    let fullResync = false;
    let epoch = state.epoch;
    let ended = false;
    const finish = (err: unknown) => {
      if (ended) return;
      ended = true;
      this.#connected = false;
      if (this.#fullResync) {
        // Cut mid-resync: what did arrive is assessed meanwhile; the resync is redone.
        this.#fullResync = false;
        if (!this.#stopped) this.onApplied(1, this.#applier?.takePolicies() ?? []);
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
    /**
     * Messages are applied in order from a queue drained after the I/O that brought
     * them: consecutive batches that arrived while the previous transaction ran are
     * applied as one (up to MAX_TX_CHANGES), so a busy child commits less often,
     * not less durably. A full queue pauses the stream (HTTP/2 flow control then
     * holds the parent back).
     */
    const queue: ServerMessage[] = [];
    let scheduled = false;
    let paused = false;
    const handle = (msg: ServerMessage) => {
      if ('hello' in msg && msg.hello) {
        this.#connected = true;
        this.#attempt = 0;
        this.#lastError = null;
        epoch = msg.hello.epoch;
        this.#parentHead = Number(msg.hello.head_seq);
        this.#pausedUntil = 0;
        this.onConnected();
        this.logger.info({ mode: msg.hello.mode, reason: msg.hello.reason, head: this.#parentHead, cursor: state.cursor }, 'subscribed upstream');
      } else if ('resync_start' in msg && msg.resync_start) {
        fullResync = msg.resync_start.full;
        this.#fullResync = fullResync;
        this.#applier!.resyncStart(fullResync);
      } else if ('batch' in msg && msg.batch) {
        this.#pausedUntil = 0;
        const { snapshot } = msg.batch;
        let changes = msg.batch.changes;
        let last = msg.batch;
        for (let next = queue[0]; next && 'batch' in next && next.batch && next.batch.snapshot === snapshot && changes.length + next.batch.changes.length <= MAX_TX_CHANGES; next = queue[0]) {
          queue.shift();
          changes = changes.concat(next.batch.changes);
          last = next.batch;
        }
        const cursor = snapshot ? null : Number(last.cursor);
        const changed = this.#applier!.apply(changes, { snapshot, fullResync, cursor, epoch });
        if (cursor !== null) this.#parentHead = Math.max(this.#parentHead, cursor);
        this.onApplied(changed, this.#applier!.takePolicies());
        this.#ack();
      } else if ('resync_end' in msg && msg.resync_end) {
        const removed = this.#applier!.resyncEnd({ cursor: Number(msg.resync_end.cursor), full: msg.resync_end.full, epoch, languages });
        fullResync = false;
        this.#fullResync = false;
        this.onApplied(removed + 1, this.#applier!.takePolicies());
        this.#ack();
      } else if ('heartbeat' in msg && msg.heartbeat) {
        this.#parentHead = Math.max(this.#parentHead, Number(msg.heartbeat.head_seq));
        this.#pausedUntil = Number(msg.heartbeat.paused_until_ms ?? 0);
        this.#ack();
      }
    };
    /** Applies one message (with the batches merged into it); true while more wait. */
    const step = (): boolean => {
      const msg = queue.shift();
      if (!msg || ended || this.#stopped) return false;
      try {
        handle(msg);
      } catch (err) {
        this.logger.error({ err }, 'applying a batch failed; reconnecting');
        queue.length = 0;
        call.cancel();
        finish(err);
        return false;
      }
      return queue.length > 0;
    };
    const drain = () => {
      scheduled = false;
      // One transaction per turn of the event loop: HTTP and acks get their turn between.
      if (step()) schedule();
      else if (paused && !ended) {
        paused = false;
        call.resume();
      }
    };
    const schedule = () => {
      if (scheduled) return;
      scheduled = true;
      setImmediate(drain);
    };
    call.on('data', (msg: ServerMessage) => {
      queue.push(msg);
      if (queue.length >= MAX_QUEUED_MESSAGES && !paused) {
        paused = true;
        call.pause();
      }
      schedule();
    });
    // What arrived before the stream ended is applied first: it is as good as ever.
    const flushThen = (err: unknown) => {
      while (step());
      finish(err);
    };
    call.on('error', (err) => flushThen(err));
    call.on('end', () => flushThen(null));
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
      (this.#client as unknown as { Ack: (req: unknown, md: grpc.Metadata, cb: (err: unknown) => void) => void }).Ack(
        { node_id: this.identity.nodeId, cursor: s.cursor, files_pending: this.#filesPending },
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
      (this.#client as unknown as { Report: (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, r: { resend: string[] }) => void) => void }).Report(
        { reports, gone },
        this.#metadata(s.credential),
        { deadline: Date.now() + 60_000 },
        (err, r) => (err ? reject(err) : resolve(r.resend ?? [])),
      ),
    );
  }

  /** The parent this node joined (null before it has). */
  parentId(): string | null {
    return this.state()?.parent_id ?? null;
  }

  /**
   * Reads one file from the parent from `offset`, checking each chunk's SHA-256:
   * a corrupted chunk is refused before it reaches the disk, and the download
   * resumes from the last good byte.
   */
  async *fetchFile(sha256: string, offset: number, signal: AbortSignal): AsyncGenerator<Uint8Array> {
    const s = this.state();
    if (!s || !this.#client) throw new Error('not joined to the upstream node');
    const call = (this.#client as unknown as { FetchFile: (req: unknown, md: grpc.Metadata) => grpc.ClientReadableStream<{ offset: string; data: Buffer; chunk_sha256: Buffer }> }).FetchFile(
      { sha256, offset },
      this.#metadata(s.credential),
    );
    const onAbort = () => call.cancel();
    signal.addEventListener('abort', onAbort, { once: true });
    let at = offset;
    try {
      for await (const chunk of call) {
        if (Number(chunk.offset) !== at) throw new Error(`chunk at ${chunk.offset}, expected ${at}`);
        if (!createHash('sha256').update(chunk.data).digest().equals(chunk.chunk_sha256)) throw new Error(`corrupted chunk at offset ${at} refused`);
        at += chunk.data.length;
        yield chunk.data;
      }
    } catch (err) {
      const e = err as { details?: string; metadata?: grpc.Metadata };
      const retry = Number(e.metadata?.get(RETRY_AFTER_KEY)[0] ?? NaN);
      if (Number.isFinite(retry)) throw new DeferredError(e.details ?? 'deferred by the upstream node', Date.now() + retry);
      throw new Error(e.details ?? (err as Error).message);
    } finally {
      signal.removeEventListener('abort', onAbort);
      call.cancel();
    }
  }
}
