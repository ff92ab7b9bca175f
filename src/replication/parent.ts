import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { and, asc, eq, isNull } from 'drizzle-orm';
import type { Orm } from '../db/index.js';
import type { Exec } from '../db/exec.js';
import type { Logger } from '../lib/log.js';
import { AppError } from '../lib/errors.js';
import { hashToken } from '../auth/tokens.js';
import { splitPinnedToken } from '../tls/pin.js';
import { changelog, type KindRegistry } from '../changelog/index.js';
import { children, joinTokens } from './schema.js';
import * as check from './validate.js';
import { SUPPORTED_PROTOCOL_VERSIONS, type ReceivedNodeReport, type ReplicationHandlers } from './protocol.js';
import { Snapshots } from './snapshots.js';
import { encodeFrames } from './compressed.js';
import type { Identity } from './identity.js';
import { parseRules, type ReplicationRules } from './rules.js';
import { StreamClosed, Streams, type Call } from './stream.js';
import { authenticateChild, type Caller, type Child } from './auth.js';
import { serveFile } from './files.js';
import { toStatus } from './wire.js';
import type { JoinRequest__Output } from '../gen/proto/patchtree/replication/v1/JoinRequest.js';
import type { JoinResponse } from '../gen/proto/patchtree/replication/v1/JoinResponse.js';

/** Union of the languages of every child of this node still in the tree (their subtrees' included). */
export async function childLanguages(orm: Orm): Promise<string[]> {
  const rows = await orm.select({ languages: children.languages }).from(children).where(isNull(children.removedAt));
  return [...new Set(rows.flatMap((r) => (r.languages ? r.languages.split(',') : [])))].sort();
}

/** What the parent side needs, all given at construction. */
export interface ParentDeps {
  orm: Orm;
  /**
   * Reads of the change log and of the kinds' replicated forms (snapshot pages, the
   * state behind log entries): the `libsql` binding on a local file (only `all()`,
   * which ends its read transaction), the client remotely.
   */
  reads: Exec;
  identity: Identity;
  name: string;
  kinds: KindRegistry;
  /** Where complete resyncs' snapshots are kept while children read them (emptied at start). */
  snapshotDir: string;
  /** This node's database file, which snapshot files are built from (null: a remote database; snapshots are sent as rows). */
  dbFile: string | null;
  /** Where children's Reports go (the roll-up); none: Report is UNIMPLEMENTED. */
  reports: ReportSink | null;
  /** A file this node holds verified, to serve (content/service.ts). */
  verifiedFile: (sha256: string) => Promise<{ size: number; path: string } | null>;
  logger: Logger;
  /** False when neither TLS nor --insecure is configured: replication is refused. */
  enabled: boolean;
  /**
   * Set when the tree uses this node's own CA: a joining child's certificate request is
   * signed, and every later call must present that certificate (mutual TLS).
   */
  certificates: { sign: (csrPem: string, nodeId: string) => Promise<{ certificatePem: string; serial: string }>; caPem: string } | null;
  /** A child's languages changed, or it joined or left (the subtree may need other files). */
  onLanguages: () => void;
  /** A call failed to authenticate (counted and logged, rate-limited, by the node: http/guard.ts). */
  onAuthFailure: (peer: string, why: string) => void;
  /**
   * Whether this node is itself in the middle of a burst from its own parent (catching up,
   * or in a complete resync): its children's batches then say `more`, so that they too do
   * the work that follows a catalog change once for the burst (node/catalog-work.ts).
   */
  upstreamBusy?: () => boolean;
}

/** How long a child's acknowledgement waits to be written together with the others of that moment. */
export const ACK_WRITE_MS = 250;

/** The roll-up's receiving end (reports/rollup.ts): stores a child's Report, returns the nodes to send again whole; forgets a removed child. */
export interface ReportSink {
  receive(childId: string, reports: ReceivedNodeReport[], gone: string[]): Promise<string[]>;
  forget(childId: string): Promise<void>;
}

/**
 * The parent side of the tree: children join with a one-time token, then subscribe
 * from their cursor (stream.ts sends what they lack and then live changes), report
 * the cursor they applied, send their compliance summaries up, and fetch update files.
 */
export class ReplicationParent {
  readonly events = new EventEmitter();
  readonly #streams: Streams;
  /** Children's acknowledgements not yet written, the newest per child (see ACK_WRITE_MS). */
  readonly #acks = new Map<string, { acked: number; pending: number; at: number }>();
  #ackTimer: NodeJS.Timeout | null = null;
  /** Complete resyncs' snapshots, one per language set, shared by the children that have it. */
  readonly snapshots: Snapshots;

  constructor(private readonly d: ParentDeps) {
    this.events.setMaxListeners(0);
    const source = { orm: d.orm, reads: d.reads, self: { nodeId: d.identity.nodeId, name: d.name } };
    this.snapshots = new Snapshots(d.snapshotDir, d.kinds, source, encodeFrames, d.dbFile, d.logger);
    // A complete resync is owed from its start until the child acks its end (Ack below).
    this.#streams = new Streams(
      d.kinds,
      source,
      this.snapshots,
      encodeFrames,
      this.events,
      d.identity.epoch,
      d.logger,
      async (id, endSeq) => {
        await d.orm.update(children).set({ forceResync: 1, resyncEndSeq: endSeq }).where(eq(children.id, id));
      },
      d.upstreamBusy ?? (() => false),
    );
  }

  get certificates() {
    return this.d.certificates;
  }

  /**
   * Records a child's acknowledgement with the others of the next ACK_WRITE_MS: one
   * commit for all of them instead of one (and its fsync) per batch per child. The
   * cursor a child streams from is its own (it subscribes with it), so an ack lost in
   * a crash costs nothing but a lag shown a moment too high.
   */
  #queueAck(childId: string, acked: number, pending: number): void {
    this.#acks.set(childId, { acked, pending, at: Date.now() });
    if (this.#ackTimer) return;
    this.#ackTimer = setTimeout(() => {
      this.#ackTimer = null;
      const due = [...this.#acks];
      this.#acks.clear();
      const [first, ...rest] = due.map(([id, a]) =>
        this.d.orm.update(children).set({ ackedSeq: a.acked, filesPending: a.pending, lastSeenAt: a.at }).where(eq(children.id, id)),
      );
      if (first)
        this.d.orm
          .batch([first, ...rest])
          .catch((err: unknown) => this.d.logger.warn({ err, children: due.length }, "recording children's acknowledgements failed"));
    }, ACK_WRITE_MS);
    this.#ackTimer.unref();
  }

  /** Wakes the streams: the change log grew. */
  notify(): void {
    this.events.emit('appended');
  }

  /**
   * Keeps the newest `retention` entries. A child whose cursor falls before what
   * is kept is sent a complete resync instead (stream.ts), so compaction never
   * loses anything a child needs.
   */
  async compact(retention: number): Promise<number> {
    const n = await changelog.compact(this.d.orm, retention);
    if (n) this.d.logger.info({ removed: n, retention }, 'change log compacted');
    return n;
  }

  /** What the children share: complete resyncs' snapshots and tail pages, built once per language set. */
  sharing(): { built: number; sets: number; readers: number; tailFiles: number; tailPages: number } {
    return { ...this.snapshots.stats(), tailPages: this.#streams.tailPagesBuilt };
  }

  connected(id: string): boolean {
    return this.#streams.connected(id);
  }

  headSeq(): Promise<number> {
    return changelog.head(this.d.reads);
  }

  async createJoinToken(ttlSeconds: number, by: string | null): Promise<{ token: string; expiresAt: string }> {
    const token = `ptj_${randomBytes(24).toString('base64url')}`;
    const now = Date.now();
    await this.d.orm.insert(joinTokens).values({ tokenHash: hashToken(token), createdAt: now, createdBy: by, expiresAt: now + ttlSeconds * 1000 });
    return { token, expiresAt: new Date(now + ttlSeconds * 1000).toISOString() };
  }

  async removeChild(id: string): Promise<void> {
    const r = await this.d.orm
      .update(children)
      .set({ removedAt: Date.now() })
      .where(and(eq(children.id, id), isNull(children.removedAt)));
    if (!r.rowsAffected) throw new AppError('not-found', `no child ${id}`);
    this.#streams.close(id, new AppError('forbidden', `this node was removed from ${this.d.name}`));
    this.d.onLanguages();
    void this.d.reports?.forget(id).catch((err) => this.d.logger.error({ err }, "removing a child's reports failed"));
  }

  async requestResync(id: string): Promise<void> {
    const r = await this.d.orm
      .update(children)
      .set({ forceResync: 1, resyncEndSeq: null })
      .where(and(eq(children.id, id), isNull(children.removedAt)));
    if (!r.rowsAffected) throw new AppError('not-found', `no child ${id}`);
    // End the current stream: the child reconnects and gets the complete resync.
    this.#streams.close(id, new AppError('aborted', 'a complete resync was requested; reconnect'));
  }

  async rules(id: string): Promise<ReplicationRules> {
    const row = await this.d.orm.query.children.findFirst({ where: eq(children.id, id) });
    if (!row || row.removedAt) throw new AppError('not-found', `no child ${id}`);
    return parseRules(row.rules);
  }

  /**
   * Sets a child's replication rules. Its stream is ended so that the child
   * reconnects under the new rules; turning the catalog back on also sends it a
   * complete resync, for what it missed while it was off.
   */
  async setRules(id: string, rules: ReplicationRules): Promise<ReplicationRules> {
    const before = await this.rules(id);
    const resync = rules.catalog && !before.catalog;
    await this.d.orm
      .update(children)
      .set({ rules: JSON.stringify(rules), ...(resync ? { forceResync: 1, resyncEndSeq: null } : {}) })
      .where(eq(children.id, id));
    this.d.logger.info({ child: id, rules, resync }, 'replication rules changed');
    this.#streams.close(id, new AppError('aborted', 'the replication rules changed; reconnect'));
    return rules;
  }

  async listChildren() {
    const head = await this.headSeq();
    const rows = await this.d.orm.select().from(children).orderBy(asc(children.name));
    const out = [];
    for (const c of rows) {
      const oldest = await changelog.firstAfterAt(this.d.reads, c.ackedSeq);
      out.push({
        id: c.id,
        name: c.name,
        connected: this.#streams.connected(c.id),
        cursor: c.ackedSeq,
        lag: { entries: Math.max(0, head - c.ackedSeq), seconds: oldest !== null ? Math.max(0, Math.round((Date.now() - oldest) / 1000)) : 0 },
        filesPending: c.filesPending,
        /** A complete resync is owed: not yet acknowledged whole by the child. */
        resyncOwed: c.forceResync === 1,
        languages: c.languages ? c.languages.split(',') : [],
        version: c.version,
        protocolVersion: c.protocolVersion,
        lastSeenAt: c.lastSeenAt ? new Date(c.lastSeenAt).toISOString() : null,
        lastError: c.lastError,
        rules: parseRules(c.rules),
        removed: c.removedAt !== null,
      });
    }
    return out;
  }

  /** gRPC handlers of the Replication service. */
  handlers(): ReplicationHandlers {
    const fail = (call: { cancelled: boolean; emit(ev: 'error', err: Error): boolean }, err: unknown) => {
      if (err instanceof StreamClosed) return null;
      const s = toStatus(err);
      if (!call.cancelled) call.emit('error', s);
      return s;
    };
    return {
      Join: (call, cb) => {
        Promise.resolve()
          .then(() => check.wire(call.request))
          .then(() => this.#join(call.request))
          .then(
            (r) => cb(null, r),
            (err) => cb(toStatus(err)),
          );
      },
      Subscribe: (call) => {
        this.#subscribe(call).catch((err) => {
          const s = fail(call, err);
          if (s) this.d.logger.warn({ code: s.code, err: s.details }, 'subscription ended');
        });
      },
      Ack: (call, cb) => {
        this.#authenticate(call)
          .then(async (child) => {
            check.wire(call.request);
            // The caller's own cursor, within this node's log.
            if (check.nodeId('node_id', call.request.node_id) !== child.id) throw new AppError('forbidden', 'node_id: the credential belongs to another node');
            const acked = check.cursor('cursor', call.request.cursor, await this.headSeq());
            const pending = check.count('files_pending', call.request.files_pending, 2 ** 31);
            const epoch = check.text('epoch', call.request.epoch, 100);
            // The child applied the owed resync's end: settled (an ack of an older epoch's cursor is not).
            const settled = child.resyncEndSeq !== null && epoch === this.d.identity.epoch && acked >= child.resyncEndSeq;
            if (settled) {
              // The owed resync is settled now, written at once (an older queued ack is dropped: it would move the cursor back).
              this.#acks.delete(child.id);
              await this.d.orm
                .update(children)
                .set({ ackedSeq: acked, filesPending: pending, lastSeenAt: Date.now(), forceResync: 0, resyncEndSeq: null })
                .where(eq(children.id, child.id));
            } else this.#queueAck(child.id, acked, pending);
            cb(null, {});
          })
          .catch((err) => cb(toStatus(err)));
      },
      Report: (call, cb) => {
        this.#authenticate(call)
          .then(async (child) => {
            check.wire(call.request);
            if (!this.d.reports) throw new AppError('not-implemented', `${this.d.name} does not take reports`);
            const resend = await this.d.reports.receive(child.id, call.request.reports, call.request.gone);
            await this.d.orm.update(children).set({ lastSeenAt: Date.now() }).where(eq(children.id, child.id));
            cb(null, { resend });
          })
          .catch((err) => cb(toStatus(err)));
      },
      FetchFile: (call) => {
        this.#authenticate(call)
          .then((child) => serveFile(this.d, child, call))
          .catch((err) => fail(call, err));
      },
    };
  }

  /** The child a call comes from: its credential, and with this node's own CA its certificate (replication/auth.ts). */
  #authenticate(call: Caller): Promise<Child> {
    return authenticateChild(this.d, call);
  }

  async #join(req: JoinRequest__Output): Promise<JoinResponse> {
    if (!this.d.enabled) throw new AppError('unavailable', 'replication needs TLS (--tls-cert, --tls-key) or --insecure on this node');
    const version = Number(req.protocol_version);
    if (!SUPPORTED_PROTOCOL_VERSIONS.includes(version))
      throw new AppError(
        'protocol-unsupported',
        `protocol version ${version} is not supported; ${this.d.name} speaks ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')}`,
      );
    const nodeId = check.nodeId('node_id', req.node_id);
    const languages = check.languages('languages', req.languages);
    const name = check.text('name', req.name, 100) || nodeId;
    const childVersion = check.text('version', req.version, 50);
    if (nodeId === this.d.identity.nodeId) throw new AppError('bad-request', 'node_id: a node cannot join itself');
    const digest = hashToken(splitPinnedToken(req.join_token).token);
    // PEM: line breaks allowed, no other control character.
    const csr = req.csr;
    check.text('csr', csr.replace(/\r?\n/g, ''), 8192);
    if (this.d.certificates && !csr)
      throw new AppError(
        'conflict',
        `csr: ${this.d.name} signs its children's certificates: join with a certificate request (a node of this version does; give the join token as it was handed out)`,
      );
    // Checked before the token is used: a bad request leaves the token for a good one.
    const signed = this.d.certificates && csr ? await this.d.certificates.sign(csr, nodeId) : null;
    const credential = `ptc_${randomBytes(32).toString('base64url')}`;
    const now = Date.now();
    await this.d.orm.transaction(async (tx) => {
      const token = await tx.query.joinTokens.findFirst({ where: eq(joinTokens.tokenHash, digest) });
      if (!token) throw new AppError('forbidden', 'unknown join token');
      if (token.usedAt) throw new AppError('forbidden', 'this join token was already used');
      if (token.expiresAt < now) throw new AppError('forbidden', 'this join token has expired');
      // A token admits a new node, never an existing one: that would cut the real child off.
      const existing = await tx.query.children.findFirst({ where: eq(children.id, nodeId) });
      if (existing && !existing.removedAt)
        throw new AppError(
          'already-joined',
          `node ${nodeId} (${existing.name}) is already a child of ${this.d.name}; remove it there first (DELETE /api/v1/hierarchy/children/${nodeId}) to join it again`,
        );
      await tx.update(joinTokens).set({ usedAt: now, usedBy: nodeId }).where(eq(joinTokens.tokenHash, digest));
      await tx
        .insert(children)
        .values({
          id: nodeId,
          name,
          credentialHash: hashToken(credential),
          languages: languages.join(','),
          version: childVersion,
          protocolVersion: version,
          ackedSeq: 0,
          forceResync: 1,
          resyncEndSeq: null,
          createdAt: now,
          certSerial: signed?.serial ?? null,
        })
        .onConflictDoUpdate({
          target: children.id,
          set: {
            name,
            credentialHash: hashToken(credential),
            languages: languages.join(','),
            removedAt: null,
            forceResync: 1,
            resyncEndSeq: null,
            ackedSeq: 0,
            certSerial: signed?.serial ?? null,
          },
        });
    });
    this.d.logger.info({ child: nodeId, childName: name, languages }, 'child joined');
    this.d.onLanguages();
    return {
      credential,
      parent_id: this.d.identity.nodeId,
      parent_name: this.d.name,
      client_certificate: signed?.certificatePem ?? '',
      ca_certificate: signed ? this.d.certificates!.caPem : '',
    };
  }

  async #subscribe(call: Call): Promise<void> {
    const child = await this.#authenticate(call);
    const req = call.request;
    check.wire(req);
    const version = Number(req.protocol_version);
    if (!SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
      const msg = `protocol version ${version} is not supported; ${this.d.name} speaks ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')}`;
      await this.d.orm.update(children).set({ lastError: msg, protocolVersion: version, lastSeenAt: Date.now() }).where(eq(children.id, child.id));
      throw new AppError('protocol-unsupported', msg);
    }
    if (check.nodeId('node_id', req.node_id) !== child.id) throw new AppError('forbidden', 'node_id: the credential belongs to another node');
    const languages = check.languages('languages', req.languages);
    const applied = check.languages('applied_languages', req.applied_languages);
    const name = check.text('name', req.name, 100);
    const childVersion = check.text('version', req.version, 50);
    const epoch = check.text('epoch', req.epoch, 100);
    const cursor = check.count('after_seq', req.after_seq, Number.MAX_SAFE_INTEGER);
    const languagesChanged = languages.join(',') !== child.languages;
    await this.d.orm
      .update(children)
      .set({
        languages: languages.join(','),
        name: name || child.name,
        version: childVersion,
        protocolVersion: version,
        lastSeenAt: Date.now(),
        lastError: null,
      })
      .where(eq(children.id, child.id));
    if (languagesChanged) this.d.onLanguages();
    const rules = parseRules(child.rules);
    await this.#streams.run(call, {
      id: child.id,
      name: child.name,
      languages,
      applied,
      epoch,
      cursor,
      forceResync: Boolean(child.forceResync),
      rules,
      snapshotForm: req.snapshot_file === true ? 'file' : 'rows',
      tailFiles: req.tail_files === true,
      compressed: req.compressed_batches === true,
      pieces: req.brotli_pieces === true ? 'brotli' : 'gzip',
    });
  }
}
