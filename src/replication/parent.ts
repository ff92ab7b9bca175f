import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { and, asc, eq, gt, isNull, sql } from 'drizzle-orm';
import type { Orm } from '../db/index.js';
import type { Logger } from '../lib/log.js';
import { AppError } from '../lib/errors.js';
import { hashToken } from '../auth/tokens.js';
import { readUpdatePayloads, wireUpdatesSql, type WireUpdate } from '../catalog/replica.js';
import type { Exec } from '../db/exec.js';
import { levelsPayload } from '../catalog/severities.js';
import type { UpdatePayload } from '../catalog/import-core.js';
import { replicatedSettings } from '../settings/service.js';
import { contentFiles } from '../content/schema.js';
import type { ContentStore } from '../content/store.js';
import { POLICY_LANGUAGES_AT, policyPayloadsSql } from '../delivery/replication.js';
import { RELEASE_LANGUAGES_AT, RELEASE_SNAPSHOT_SQL } from '../freshness/release.js';
import { changeLog, children, joinTokens } from './schema.js';
import * as check from './validate.js';
import type { PeerCertificate } from 'node:tls';
import { splitPinnedToken } from '../tls/pin.js';
import { RETRY_AFTER_KEY, SUPPORTED_PROTOCOL_VERSIONS, filterUpdateList, type ServerMessage, type SubscribeRequest, type WireChange, type WireNodeReport } from './protocol.js';
import type { Identity } from './identity.js';
import { anyLanguageMatches, languageMatches } from '../lib/languages.js';
import { CATALOG_KINDS, closedUntil, parseRules, type ReplicationRules } from './rules.js';

const BATCH = 256;
/** Snapshot pages are larger: the child commits (and fsyncs) once per batch. */
const SNAPSHOT_BATCH = 500;
const HEARTBEAT_MS = 5_000;
/** How soon a child asks again for files this parent does not serve it. */
const FILES_OFF_RETRY_MS = 10 * 60_000;

type Call = grpc.ServerWritableStream<SubscribeRequest, ServerMessage>;

class StreamClosed extends Error {}

/**
 * Resolves with the first of `events` (or 'timeout'), then removes every listener
 * it added: a subscription waits thousands of times, and listeners left behind by
 * a race would pile up for as long as the stream lives.
 */
function firstOf(emitter: EventEmitter, events: string[], timeoutMs?: number): Promise<string> {
  return new Promise((resolve) => {
    const handlers = new Map<string, () => void>();
    let timer: NodeJS.Timeout | undefined;
    const done = (name: string) => {
      for (const [ev, h] of handlers) emitter.off(ev, h);
      if (timer) clearTimeout(timer);
      resolve(name);
    };
    for (const ev of events) {
      const h = () => done(ev);
      handlers.set(ev, h);
      emitter.on(ev, h);
    }
    if (timeoutMs !== undefined) timer = setTimeout(() => done('timeout'), timeoutMs);
  });
}

/** Filters an upsert's file manifests to a subscriber's languages. */
function filterUpdate(p: UpdatePayload, languages: readonly string[]): Buffer {
  const files = p.files.filter((f) => languageMatches(f.language, languages));
  return Buffer.from(JSON.stringify(files.length === p.files.length ? p : { ...p, files }));
}

/** The same for a logged payload; one whose files all match is sent as stored. */
function filterPayload(payload: string, entryLanguages: string, languages: readonly string[]): Buffer {
  if (entryLanguages.split(',').every((l) => l === '' || languageMatches(l, languages))) return Buffer.from(payload);
  return filterUpdate(JSON.parse(payload) as UpdatePayload, languages);
}

/**
 * The parent side of the tree: children join with a one-time token, then subscribe
 * from their cursor. What a child lacks is sent in order from this node's change
 * log (or, for a new child, an unknown epoch or a cursor older than the log keeps,
 * as a snapshot of the catalog); then live changes as they commit. Every batch is
 * filtered to the child's languages. The stream reads the log from the database,
 * so a slow child costs a cursor, not memory; `write()` backpressure is honoured.
 */
export class ReplicationParent {
  readonly events = new EventEmitter();
  #streams = new Map<string, Call>();
  #inFlight = new WeakMap<Call, Promise<void>[]>();
  #closedP = new WeakMap<Call, Promise<string>>();
  /** The roll-up's receiving end: stores a child's Report, returns the nodes to send again whole. */
  onReport: ((childId: string, reports: WireNodeReport[], gone: string[]) => Promise<string[]>) | null = null;
  /**
   * Set when the tree uses this node's own CA: a joining child's certificate request is
   * signed, and every later call must present that certificate (mutual TLS).
   */
  certificates: { sign: (csrPem: string, nodeId: string) => Promise<{ certificatePem: string; serial: string }>; caPem: string } | null = null;
  /** A call failed to authenticate (counted and logged, rate-limited, by the node: http/guard.ts). */
  onAuthFailure: (peer: string, why: string) => void = () => {};
  /** A child was removed (its subtree's summaries go). */
  onRemoved: (childId: string) => void = () => {};

  /** One promise per stream that settles when it closes (listeners added once). */
  #closed(call: Call): Promise<string> {
    let p = this.#closedP.get(call);
    if (!p) {
      p = firstOf(call, ['close', 'cancelled']);
      this.#closedP.set(call, p);
    }
    return p;
  }

  constructor(
    private readonly orm: Orm,
    /**
     * Reads of the catalog's replicated form (snapshot pages, the state behind log
     * entries): the `libsql` binding on a local file (only `all()`, which ends its
     * read transaction), the client remotely.
     */
    private readonly reads: Exec,
    private readonly identity: Identity,
    private readonly name: string,
    private readonly store: () => Promise<ContentStore>,
    private readonly logger: Logger,
    /** Called when a child's languages change (the subtree may need other files). */
    private readonly onLanguages: () => void = () => {},
    /** False when neither TLS nor --insecure is configured: replication is refused. */
    private readonly enabled = true,
  ) {
    this.events.setMaxListeners(0);
  }

  /** Wakes the streams: the change log grew. */
  notify(): void {
    this.events.emit('appended');
  }

  /**
   * Keeps the newest `retention` entries. A child whose cursor falls before what
   * is kept is sent a complete resync instead (decided in #subscribe), so
   * compaction never loses anything a child needs.
   */
  async compact(retention: number): Promise<number> {
    const r = await this.orm.run(sql`DELETE FROM change_log WHERE seq <= (SELECT max(seq) FROM change_log) - ${retention}`);
    const n = Number(r.rowsAffected ?? 0);
    if (n) this.logger.info({ removed: n, retention }, 'change log compacted');
    return n;
  }

  connected(id: string): boolean {
    return this.#streams.has(id);
  }

  async headSeq(): Promise<number> {
    const r = await this.orm.select({ head: sql<number>`coalesce(max(${changeLog.seq}), 0)` }).from(changeLog);
    return Number(r[0]?.head ?? 0);
  }

  /** Union of the languages of every child still in the tree. */
  async subtreeLanguages(): Promise<string[]> {
    const rows = await this.orm.select({ languages: children.languages }).from(children).where(isNull(children.removedAt));
    return [...new Set(rows.flatMap((r) => (r.languages ? r.languages.split(',') : [])))].sort();
  }

  async createJoinToken(ttlSeconds: number, by: string | null): Promise<{ token: string; expiresAt: string }> {
    const token = `ptj_${randomBytes(24).toString('base64url')}`;
    const now = Date.now();
    await this.orm.insert(joinTokens).values({ tokenHash: hashToken(token), createdAt: now, createdBy: by, expiresAt: now + ttlSeconds * 1000 });
    return { token, expiresAt: new Date(now + ttlSeconds * 1000).toISOString() };
  }

  async removeChild(id: string): Promise<void> {
    const r = await this.orm.update(children).set({ removedAt: Date.now() }).where(and(eq(children.id, id), isNull(children.removedAt)));
    if (!r.rowsAffected) throw new AppError('not-found', `no child ${id}`);
    this.#streams.get(id)?.emit('patchtree-close', grpc.status.PERMISSION_DENIED, `this node was removed from ${this.name}`);
    this.onLanguages();
    this.onRemoved(id);
  }

  async requestResync(id: string): Promise<void> {
    const r = await this.orm.update(children).set({ forceResync: 1 }).where(and(eq(children.id, id), isNull(children.removedAt)));
    if (!r.rowsAffected) throw new AppError('not-found', `no child ${id}`);
    // End the current stream: the child reconnects and gets the complete resync.
    this.#streams.get(id)?.emit('patchtree-close', grpc.status.ABORTED, 'a complete resync was requested; reconnect');
  }

  async rules(id: string): Promise<ReplicationRules> {
    const row = await this.orm.query.children.findFirst({ where: eq(children.id, id) });
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
    await this.orm.update(children).set({ rules: JSON.stringify(rules), ...(resync ? { forceResync: 1 } : {}) }).where(eq(children.id, id));
    this.logger.info({ child: id, rules, resync }, 'replication rules changed');
    this.#streams.get(id)?.emit('patchtree-close', grpc.status.ABORTED, 'the replication rules changed; reconnect');
    return rules;
  }

  async listChildren() {
    const head = await this.headSeq();
    const rows = await this.orm.select().from(children).orderBy(asc(children.name));
    const out = [];
    for (const c of rows) {
      const oldest = await this.orm
        .select({ at: changeLog.createdAt })
        .from(changeLog)
        .where(gt(changeLog.seq, c.ackedSeq))
        .orderBy(asc(changeLog.seq))
        .limit(1);
      out.push({
        id: c.id,
        name: c.name,
        connected: this.#streams.has(c.id),
        cursor: c.ackedSeq,
        lag: { entries: Math.max(0, head - c.ackedSeq), seconds: oldest[0] ? Math.max(0, Math.round((Date.now() - oldest[0].at) / 1000)) : 0 },
        filesPending: c.filesPending,
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
  handlers(): grpc.UntypedServiceImplementation {
    return {
      Join: (call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        Promise.resolve()
          .then(() => check.wire(call.request))
          .then(() => this.#join(call.request)).then((r) => cb(null, r), (err) => cb(toStatus(err)));
      },
      Subscribe: (call: Call) => {
        this.#subscribe(call).catch((err) => {
          if (err instanceof StreamClosed) return;
          const s = toStatus(err);
          this.logger.warn({ code: s.code, err: s.details }, 'subscription ended');
          if (!call.cancelled) call.emit('error', Object.assign(new Error(s.details), s));
        });
      },
      Ack: (call: grpc.ServerUnaryCall<{ node_id: string; cursor: string; files_pending: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.#authenticate(call)
          .then(async (child) => {
            check.wire(call.request);
            // The caller's own cursor, within this node's log.
            if (check.nodeId('node_id', call.request.node_id) !== child.id) throw grpcError(grpc.status.PERMISSION_DENIED, 'node_id: the credential belongs to another node');
            const acked = check.cursor('cursor', call.request.cursor, await this.headSeq());
            const pending = check.count('files_pending', call.request.files_pending, 2 ** 31);
            await this.orm.update(children).set({ ackedSeq: acked, filesPending: pending, lastSeenAt: Date.now() }).where(eq(children.id, child.id));
            cb(null, {});
          })
          .catch((err) => cb(toStatus(err)));
      },
      Report: (call: grpc.ServerUnaryCall<{ reports: WireNodeReport[]; gone: string[] }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.#authenticate(call)
          .then(async (child) => {
            check.wire(call.request);
            if (!this.onReport) throw grpcError(grpc.status.UNIMPLEMENTED, `${this.name} does not take reports`);
            const resend = await this.onReport(child.id, call.request.reports ?? [], call.request.gone ?? []);
            await this.orm.update(children).set({ lastSeenAt: Date.now() }).where(eq(children.id, child.id));
            cb(null, { resend });
          })
          .catch((err) => cb(toStatus(err)));
      },
      FetchFile: (call: grpc.ServerWritableStream<{ sha256: string; offset: string }, unknown>) => {
        this.#fetchFile(call).catch((err) => {
          if (err instanceof StreamClosed) return;
          const s = toStatus(err);
          if (!call.cancelled) call.emit('error', Object.assign(new Error(s.details), s));
        });
      },
    };
  }

  async #authenticate(call: { metadata: grpc.Metadata; getPeer(): string; getAuthContext(): { sslPeerCertificate?: PeerCertificate | undefined } }): Promise<typeof children.$inferSelect> {
    const md = call.metadata;
    const peer = call.getPeer();
    if (!this.enabled) throw grpcError(grpc.status.UNAVAILABLE, 'replication needs TLS (--tls-cert, --tls-key) or --insecure on this node');
    const header = String(md.get('authorization')[0] ?? '');
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) {
      this.onAuthFailure(peer, 'no credential');
      throw grpcError(grpc.status.UNAUTHENTICATED, 'send authorization: Bearer <credential> (from Join)');
    }
    const row = await this.orm.query.children.findFirst({ where: eq(children.credentialHash, hashToken(m[1]!)) });
    if (!row) {
      this.onAuthFailure(peer, 'unknown credential');
      throw grpcError(grpc.status.UNAUTHENTICATED, 'unknown credential');
    }
    if (row.removedAt) throw grpcError(grpc.status.PERMISSION_DENIED, `this node was removed from ${this.name}; join again with a new token`);
    // With this node's own CA: the certificate it signed for this child at its join, and no other.
    if (this.certificates && row.certSerial) {
      const cert = call.getAuthContext().sslPeerCertificate;
      if (!cert) {
        this.onAuthFailure(peer, `no client certificate for ${row.id}`);
        throw grpcError(grpc.status.UNAUTHENTICATED, `no valid client certificate: missing, expired or not from ${this.name}'s CA; a node presents the certificate ${this.name} signed at its join (remove it here and join it again to get a new one)`);
      }
      if (cert.subject?.CN !== row.id || cert.serialNumber?.toLowerCase() !== row.certSerial.toLowerCase()) {
        this.onAuthFailure(peer, `a certificate that is not ${row.id}'s current one`);
        throw grpcError(grpc.status.PERMISSION_DENIED, `this certificate is not the one ${this.name} signed for node ${row.id} at its last join`);
      }
    }
    return row;
  }

  async #join(req: Record<string, unknown>): Promise<{ credential: string; parent_id: string; parent_name: string; client_certificate: string; ca_certificate: string }> {
    if (!this.enabled) throw grpcError(grpc.status.UNAVAILABLE, 'replication needs TLS (--tls-cert, --tls-key) or --insecure on this node');
    const version = Number(req['protocol_version']);
    if (!SUPPORTED_PROTOCOL_VERSIONS.includes(version))
      throw grpcError(grpc.status.FAILED_PRECONDITION, `protocol version ${version} is not supported; ${this.name} speaks ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')}`);
    const nodeId = check.nodeId('node_id', req['node_id']);
    const languages = check.languages('languages', req['languages'] ?? []);
    const name = check.text('name', req['name'], 100) || nodeId;
    const childVersion = check.text('version', req['version'], 50);
    if (nodeId === this.identity.nodeId) throw grpcError(grpc.status.INVALID_ARGUMENT, 'node_id: a node cannot join itself');
    const digest = hashToken(splitPinnedToken(String(req['join_token'] ?? '')).token);
    // PEM: line breaks allowed, no other control character.
    const csr = String(req['csr'] ?? '');
    check.text('csr', csr.replace(/\r?\n/g, ''), 8192);
    if (this.certificates && !csr) throw grpcError(grpc.status.FAILED_PRECONDITION, `csr: ${this.name} signs its children's certificates: join with a certificate request (a node of this version does; give the join token as it was handed out)`);
    // Checked before the token is used: a bad request leaves the token for a good one.
    const signed = this.certificates && csr ? await this.certificates.sign(csr, nodeId) : null;
    const credential = `ptc_${randomBytes(32).toString('base64url')}`;
    const now = Date.now();
    await this.orm.transaction(async (tx) => {
      const token = await tx.query.joinTokens.findFirst({ where: eq(joinTokens.tokenHash, digest) });
      if (!token) throw grpcError(grpc.status.PERMISSION_DENIED, 'unknown join token');
      if (token.usedAt) throw grpcError(grpc.status.PERMISSION_DENIED, 'this join token was already used');
      if (token.expiresAt < now) throw grpcError(grpc.status.PERMISSION_DENIED, 'this join token has expired');
      // A token admits a new node, never an existing one: that would cut the real child off.
      const existing = await tx.query.children.findFirst({ where: eq(children.id, nodeId) });
      if (existing && !existing.removedAt)
        throw grpcError(grpc.status.ALREADY_EXISTS, `node ${nodeId} (${existing.name}) is already a child of ${this.name}; remove it there first (DELETE /api/v1/hierarchy/children/${nodeId}) to join it again`);
      await tx.update(joinTokens).set({ usedAt: now, usedBy: nodeId }).where(eq(joinTokens.tokenHash, digest));
      await tx
        .insert(children)
        .values({ id: nodeId, name, credentialHash: hashToken(credential), languages: languages.join(','), version: childVersion, protocolVersion: version, ackedSeq: 0, forceResync: 1, createdAt: now, certSerial: signed?.serial ?? null })
        .onConflictDoUpdate({ target: children.id, set: { name, credentialHash: hashToken(credential), languages: languages.join(','), removedAt: null, forceResync: 1, ackedSeq: 0, certSerial: signed?.serial ?? null } });
    });
    this.logger.info({ child: nodeId, name, languages }, 'child joined');
    this.onLanguages();
    return { credential, parent_id: this.identity.nodeId, parent_name: this.name, client_certificate: signed?.certificatePem ?? '', ca_certificate: signed ? this.certificates!.caPem : '' };
  }

  /**
   * Writes one message with backpressure. grpc-js counts its buffer in messages,
   * and a batch can be megabytes, so besides `drain` each stream keeps at most two
   * messages not yet handed to the transport (their write callbacks pending).
   */
  async #send(call: Call, msg: ServerMessage): Promise<void> {
    if (call.cancelled || call.destroyed) throw new StreamClosed();
    const pending = this.#inFlight.get(call) ?? [];
    this.#inFlight.set(call, pending);
    let done!: () => void;
    const written = new Promise<void>((r) => (done = r));
    pending.push(written);
    void written.then(() => pending.splice(pending.indexOf(written), 1));
    const ok = call.write(msg, () => done());
    if (!ok) await firstOf(call, ['drain', 'close', 'cancelled']);
    while (pending.length > 2 && !call.cancelled && !call.destroyed) {
      await Promise.race([pending[0], this.#closed(call)]);
    }
    if (call.cancelled || call.destroyed) throw new StreamClosed();
  }

  async #subscribe(call: Call): Promise<void> {
    const child = await this.#authenticate(call);
    const req = call.request;
    check.wire(req);
    const version = Number(req.protocol_version);
    if (!SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
      const msg = `protocol version ${version} is not supported; ${this.name} speaks ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')}`;
      await this.orm.update(children).set({ lastError: msg, protocolVersion: version, lastSeenAt: Date.now() }).where(eq(children.id, child.id));
      throw grpcError(grpc.status.FAILED_PRECONDITION, msg);
    }
    if (check.nodeId('node_id', req.node_id) !== child.id) throw grpcError(grpc.status.PERMISSION_DENIED, 'node_id: the credential belongs to another node');
    const languages = check.languages('languages', req.languages ?? []);
    const applied = check.languages('applied_languages', (req as unknown as { applied_languages?: string[] }).applied_languages ?? []);
    req.name = check.text('name', req.name, 100);
    req.version = check.text('version', req.version, 50);
    check.text('epoch', req.epoch, 100);
    const languagesChanged = languages.join(',') !== child.languages;
    await this.orm
      .update(children)
      .set({ languages: languages.join(','), name: req.name || child.name, version: req.version, protocolVersion: version, lastSeenAt: Date.now(), lastError: null })
      .where(eq(children.id, child.id));
    if (languagesChanged) this.onLanguages();

    this.#streams.get(child.id)?.emit('patchtree-close', grpc.status.ABORTED, 'replaced by a newer subscription');
    this.#streams.set(child.id, call);
    let closing: { code: number; details: string } | null = null;
    const wake = () => call.emit('patchtree-wake');
    call.on('patchtree-close', (code: number, details: string) => {
      closing = { code, details };
      wake();
    });
    this.events.on('appended', wake);
    const log = this.logger.child({ child: child.id, name: child.name });
    try {
      const bounds = await this.orm.select({ head: sql<number>`coalesce(max(${changeLog.seq}), 0)`, min: sql<number>`coalesce(min(${changeLog.seq}), 0)` }).from(changeLog);
      const head = Number(bounds[0]?.head ?? 0);
      const min = Number(bounds[0]?.min ?? 0);
      let cursor = Number(check.count('after_seq', req.after_seq, Number.MAX_SAFE_INTEGER));
      let mode: 'tail' | 'resync' | 'backfill' = 'tail';
      let reason = 'up to date from the cursor';
      if (child.forceResync) [mode, reason] = ['resync', 'a complete resync was requested (new child, or on demand)'];
      else if (req.epoch !== this.identity.epoch) [mode, reason] = ['resync', req.epoch ? `unknown epoch ${req.epoch}` : 'no cursor yet'];
      else if (cursor > head) [mode, reason] = ['resync', `cursor ${cursor} is ahead of this node's log (${head})`];
      else if (min > 0 && cursor < min - 1) [mode, reason] = ['resync', `cursor ${cursor} is older than the log keeps (from ${min})`];
      else if (applied.join(',') !== languages.join(',')) [mode, reason] = ['backfill', `languages ${applied.join(',') || '(none)'} -> ${languages.join(',')}`];
      await this.#send(call, { hello: { parent_id: this.identity.nodeId, epoch: this.identity.epoch, head_seq: head, mode, reason } });
      log.info({ mode, reason, cursor, head, languages }, 'child subscribed');

      const rules = parseRules(child.rules);
      const gate = () => this.#gate(call, rules, () => closing);
      if (mode === 'resync') {
        cursor = head;
        await gate();
        await this.#send(call, { resync_start: { reason, full: true } });
        // Levels and settings first (small), so the updates after them find their levels.
        const small: WireChange[] = [];
        if (rules.catalog) small.push({ seq: 0, kind: 'severity-levels', key: 'all', op: 'upsert', payload: Buffer.from(JSON.stringify(await levelsPayload(this.orm, this.identity.nodeId))) });
        for (const s of await replicatedSettings(this.orm, this.identity.nodeId)) small.push({ seq: 0, kind: 'setting', key: s.key, op: 'upsert', payload: Buffer.from(JSON.stringify(s.payload)) });
        if (small.length) await this.#send(call, { batch: { changes: small, cursor: 0, snapshot: true } });
        if (rules.catalog) await this.#fullSnapshot(call, gate, languages);
        if (rules.catalog) await this.#releaseSnapshot(call, gate, languages);
        await this.#policySnapshot(call, gate, languages);
        // Without the catalog, the child's updates are left as they are (not swept).
        await this.#send(call, { resync_end: { cursor, full: rules.catalog } });
        await this.orm.update(children).set({ forceResync: 0 }).where(eq(children.id, child.id));
      } else if (mode === 'backfill') {
        // Exactly what the language change moves: updates with files in a language
        // added (sent) or removed (re-sent without those files, or deleted).
        const moved = [...applied.filter((l) => !languages.includes(l)), ...languages.filter((l) => !applied.includes(l))];
        await gate();
        await this.#send(call, { resync_start: { reason, full: false } });
        if (rules.catalog)
          await this.#snapshot(call, gate, (p) => {
            const langs = p.files.map((f) => f.language);
            if (!langs.some((l) => l !== 'neutral' && languageMatches(l, moved))) return null;
            if (anyLanguageMatches(langs.join(','), languages)) return { seq: 0, kind: 'update', key: p.id, op: 'upsert', payload: filterUpdate(p, languages) };
            return { seq: 0, kind: 'update', key: p.id, op: 'delete', payload: Buffer.from(JSON.stringify({ id: p.id })) };
          });
        // Releases and policies carry only the updates of the child's languages: all are sent again.
        if (rules.catalog) await this.#releaseSnapshot(call, gate, languages);
        await this.#policySnapshot(call, gate, languages);
        await this.#send(call, { resync_end: { cursor, full: false } });
      }

      // Tail: everything after the cursor, in order, then live changes.
      let lastSent = Date.now();
      for (;;) {
        if (closing) throw grpcError((closing as { code: number }).code, (closing as { details: string }).details);
        const rows = await this.orm.select().from(changeLog).where(gt(changeLog.seq, cursor)).orderBy(asc(changeLog.seq)).limit(BATCH);
        if (rows.length) {
          await gate();
          const changes: WireChange[] = [];
          const wanted = rows.filter((r) => anyLanguageMatches(r.languages, languages) && (rules.catalog || !CATALOG_KINDS.has(r.kind)));
          const states = await this.#currentStates(wanted, languages);
          for (const r of wanted) {
            if (isStateEntry(r)) {
              // The update as it is now (or nothing: deleted since, or no longer in
              // these languages; the entry that did that follows in the log).
              const state = states.get(r.key);
              if (state !== undefined) changes.push({ seq: r.seq, kind: r.kind, key: r.key, op: r.op, payload: Buffer.from(state) });
              continue;
            }
            const payload =
              r.op !== 'upsert'
                ? Buffer.from(r.payload)
                : r.kind === 'policy'
                  ? filterUpdateList(r.payload, POLICY_LANGUAGES_AT, languages)
                  : r.kind === 'release'
                    ? filterUpdateList(r.payload, RELEASE_LANGUAGES_AT, languages)
                    : filterPayload(r.payload, r.languages, languages);
            changes.push({ seq: r.seq, kind: r.kind, key: r.key, op: r.op, payload });
          }
          cursor = rows[rows.length - 1]!.seq;
          await this.#send(call, { batch: { changes, cursor, snapshot: false } });
          lastSent = Date.now();
          continue;
        }
        const waitMs = Math.max(0, HEARTBEAT_MS - (Date.now() - lastSent));
        const woke = await firstOf(call, ['patchtree-wake', 'cancelled', 'close'], waitMs);
        if (woke === 'cancelled' || woke === 'close') throw new StreamClosed();
        if (woke === 'timeout') {
          await this.#send(call, { heartbeat: { head_seq: cursor, time_ms: Date.now() } });
          lastSent = Date.now();
        }
      }
    } finally {
      this.events.off('appended', wake);
      if (this.#streams.get(child.id) === call) this.#streams.delete(child.id);
    }
  }

  /**
   * Holds a stream while the child's schedule is closed: heartbeats (saying until
   * when) keep it alive and the child's status honest; the stream resumes when a
   * window opens. Rules changes end the stream, so `rules` is fixed for its life.
   */
  async #gate(call: Call, rules: ReplicationRules, closing: () => { code: number; details: string } | null): Promise<void> {
    for (;;) {
      const closed = closedUntil(rules, new Date());
      if (!closed) return;
      const c = closing();
      if (c) throw grpcError(c.code, c.details);
      const until = closed.until?.getTime() ?? 0;
      await this.#send(call, { heartbeat: { head_seq: await this.headSeq(), time_ms: Date.now(), paused_until_ms: until } });
      const wait = Math.max(1_000, Math.min(HEARTBEAT_MS, until ? until - Date.now() : HEARTBEAT_MS));
      const woke = await firstOf(call, ['patchtree-close', 'cancelled', 'close'], wait);
      if (woke === 'cancelled' || woke === 'close') throw new StreamClosed();
    }
  }

  /** Every policy (this node's own and those it received), after the catalog their updates belong to. */
  async #policySnapshot(call: Call, gate: () => Promise<void>, languages: readonly string[]): Promise<void> {
    const self = { nodeId: this.identity.nodeId, name: this.name };
    let after = '';
    for (;;) {
      const page = await this.orm.all<{ id: string; payload: string }>(policyPayloadsSql(self, after, SNAPSHOT_BATCH));
      if (!page.length) return;
      await gate();
      const changes = page.map((r): WireChange => ({ seq: 0, kind: 'policy', key: r.id, op: 'upsert', payload: filterUpdateList(r.payload, POLICY_LANGUAGES_AT, languages) }));
      await this.#send(call, { batch: { changes, cursor: 0, snapshot: true } });
      after = page[page.length - 1]!.id;
    }
  }

  /** The newest releases (catalog freshness: a catalog kind, like in the tail), filtered to the child's languages. */
  async #releaseSnapshot(call: Call, gate: () => Promise<void>, languages: readonly string[]): Promise<void> {
    const rows = await this.orm.all<{ id: string; payload: string }>(sql.raw(RELEASE_SNAPSHOT_SQL));
    // One per message: a first release lists the whole catalog (about 50 bytes per update).
    for (const r of rows) {
      await gate();
      await this.#send(call, { batch: { changes: [{ seq: 0, kind: 'release', key: r.id, op: 'upsert', payload: filterUpdateList(r.payload, RELEASE_LANGUAGES_AT, languages) }], cursor: 0, snapshot: true } });
    }
  }

  /**
   * The current replicated form of the updates behind state entries (see
   * `isStateEntry`) in one page of the log, for a subscriber of `languages`.
   */
  async #currentStates(rows: readonly { kind: string; op: string; key: string; payload: string }[], languages: readonly string[]): Promise<Map<string, string>> {
    const ids = [...new Set(rows.filter(isStateEntry).map((r) => r.key))];
    const out = new Map<string, string>();
    if (!ids.length) return out;
    const [q, args] = wireUpdatesSql(this.identity.nodeId, languages, { ids });
    for (const r of await this.reads.all<WireUpdate>(q, args)) out.set(r.id, r.payload);
    return out;
  }

  /**
   * The whole catalog for a complete resync: pages of updates in the subscriber's
   * languages, their replicated form built by SQLite (wireUpdatesSql), each page
   * one snapshot batch.
   */
  async #fullSnapshot(call: Call, gate: () => Promise<void>, languages: readonly string[]): Promise<void> {
    let after = '';
    for (;;) {
      const [q, args] = wireUpdatesSql(this.identity.nodeId, languages, { afterId: after, limit: SNAPSHOT_BATCH });
      const page = await this.reads.all<WireUpdate>(q, args);
      if (!page.length) return;
      await gate();
      await this.#send(call, { batch: { changes: page.map((r) => ({ seq: 0, kind: 'update', key: r.id, op: 'upsert', payload: Buffer.from(r.payload) })), cursor: 0, snapshot: true } });
      after = page[page.length - 1]!.id;
    }
  }

  /** Streams the catalog a page at a time as snapshot batches; `pick` decides what each update becomes. */
  async #snapshot(call: Call, gate: () => Promise<void>, pick: (p: UpdatePayload) => WireChange | null): Promise<void> {
    let after = '';
    for (;;) {
      const page = await readUpdatePayloads(this.orm, this.identity.nodeId, { afterId: after, limit: SNAPSHOT_BATCH });
      if (!page.length) return;
      const changes = page.map(pick).filter((c): c is WireChange => c !== null);
      if (changes.length) {
        await gate();
        await this.#send(call, { batch: { changes, cursor: 0, snapshot: true } });
      }
      after = page[page.length - 1]!.id;
    }
  }

  async #fetchFile(call: grpc.ServerWritableStream<{ sha256: string; offset: string }, unknown>): Promise<void> {
    const child = await this.#authenticate(call);
    check.wire(call.request);
    const sha256 = call.request.sha256;
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw grpcError(grpc.status.INVALID_ARGUMENT, 'sha256 must be 64 lowercase hex digits');
    const rules = parseRules(child.rules);
    if (!rules.files) throw deferred(`${this.name} does not serve update files to this node (replication rules)`, FILES_OFF_RETRY_MS);
    const closed = closedUntil(rules, new Date());
    if (closed) throw deferred(`outside this node's replication window${closed.until ? `; it opens at ${closed.until.toISOString()}` : ''}`, closed.until ? closed.until.getTime() - Date.now() : FILES_OFF_RETRY_MS);
    const row = await this.orm.query.contentFiles.findFirst({ where: eq(contentFiles.sha256, sha256) });
    if (row?.state !== 'verified') throw grpcError(grpc.status.UNAVAILABLE, `file ${sha256} is not available on ${this.name} yet`);
    const offset = Number(call.request.offset);
    if (!Number.isInteger(offset) || offset < 0 || offset > row.size) throw grpcError(grpc.status.OUT_OF_RANGE, `offset ${offset} is outside 0..${row.size}`);
    const path = (await this.store()).objectPath(sha256);
    this.logger.info({ child: child.name, sha256, offset, size: row.size }, 'sending a file');
    let at = offset;
    if (offset === row.size) return void call.end();
    for await (const chunk of createReadStream(path, { start: offset, highWaterMark: 256 * 1024 })) {
      const data = chunk as Buffer;
      const msg = { offset: at, data, size: row.size, chunk_sha256: createHash('sha256').update(data).digest() };
      at += data.length;
      if (call.cancelled) throw new StreamClosed();
      if (!call.write(msg)) await firstOf(call, ['drain', 'cancelled', 'close']);
    }
    call.end();
  }
}

/**
 * An update upsert logged without a payload: it stands for the update's state when
 * the entry is sent (imports and a child's applied batches log this way, so the
 * log does not hold a second copy of the catalog). A newer state sent early is
 * safe: a child keeps the highest revision, and every later change has its own entry.
 */
function isStateEntry(r: { kind: string; op: string; payload: string }): boolean {
  return r.kind === 'update' && r.op === 'upsert' && r.payload === '';
}

function grpcError(code: number, details: string): Error & { code: number; details: string } {
  return Object.assign(new Error(details), { code, details });
}

/** A refusal that is not a failure: the child should ask again after `retryMs`. */
function deferred(details: string, retryMs: number): Error & { code: number; details: string; metadata: grpc.Metadata } {
  const metadata = new grpc.Metadata();
  metadata.set(RETRY_AFTER_KEY, String(Math.max(1_000, Math.round(retryMs))));
  return Object.assign(new Error(details), { code: grpc.status.UNAVAILABLE, details, metadata });
}

function toStatus(err: unknown): { code: number; details: string; metadata?: grpc.Metadata } {
  const e = err as { code?: unknown; details?: unknown; message?: string; metadata?: grpc.Metadata };
  if (typeof e.code === 'number' && typeof e.details === 'string') return { code: e.code, details: e.details, ...(e.metadata ? { metadata: e.metadata } : {}) };
  if (err instanceof AppError) return { code: err.grpcStatus, details: err.message };
  return { code: grpc.status.INTERNAL, details: e.message ?? String(err) };
}

