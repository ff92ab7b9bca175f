import { createHash } from 'node:crypto';
import PQueue from 'p-queue';
import { SQLiteAsyncDialect } from 'drizzle-orm/sqlite-core';
import type { SqlConn, Write } from '../db/exec.js';
import { GroupCommit, type Prepared } from '../db/group-commit.js';
import { isoTime as iso, keysetPage, placeholders } from '../db/sql.js';
import type { Logger } from '../lib/log.js';
import { AppError } from '../lib/errors.js';
import { facts, type Inventory } from '../assessment/evaluate.js';
import { CatalogIndex, type Entry } from '../assessment/catalog-index.js';
import { conditionSql, type Computers, type Condition } from '../assessment/queries.js';
import { applyEvent, newStatus, type Ceilings, type Status } from './events.js';
import type { AgentEvent, EventRefusal } from '../agent-api/events.js';
import { fileUrl } from '../agent-api/checkin.js';
import { effectiveInstallation, type Installation, type InstallationOverride } from './installation.js';
import { languageMatches } from '../lib/languages.js';
import { type Assignment, type Assignments, type Waiting } from '../agent-api/assignments.js';
import type { Installer } from './installers.js';

/**
 * Delivery: which computers each policy delivers which updates to, what every
 * agent should install now, and what agents report back.
 *
 * Targeting is kept current by one writer (a queue of one): after a computer is
 * assessed its rows are refreshed against every enabled policy; after a policy
 * changes, the policy's rows against every computer, a page at a time. A row is
 * added when the computer matches the policy's targets and requires the update;
 * when the update stops being required the row records why (installed,
 * superseded, not applicable) and stays, so the delivery report keeps what was done.
 *
 * Assignments are the hot path: each computer's answer is built once, hashed into
 * its ETag and kept in memory (bounded) until something it depends on changes, so
 * a check-in with a current ETag costs a map lookup and a 304.
 */

export interface Targets {
  all?: boolean | undefined;
  filters?: string[] | undefined;
  computers?: number[] | undefined;
  /** Conditions inline: how a replicated policy's filters arrive (see delivery/replication.ts). */
  conditions?: Condition[] | undefined;
}

interface PolicyRow {
  id: string;
  name: string;
  enabled: number;
  start_at: number;
  deadline_at: number | null;
  targets: string;
  installation: string | null;
}

interface CacheEntry {
  gen: number;
  etag: string;
  body: string;
}

interface EventsResult {
  accepted: number;
  duplicates: number;
}

interface PendingEvents {
  computerId: number;
  events: AgentEvent[];
  now: number;
}

interface DrainContext {
  /** Statuses computed earlier in this drain, by "computer\tupdate". */
  statuses: Map<string, Status>;
  /** Events stored earlier in this drain, by "computer\tevent id". */
  stored: Set<string>;
  node: Installation;
}

const PAGE = 500;
/** Event batches written per transaction at most. */
const EVENT_BATCHES_PER_TX = 256;
/** Assignment answers kept in memory, in bytes at most. */
const CACHE_BYTES = 64 * 1024 * 1024;
const dialect = new SQLiteAsyncDialect();

/** Strong and weak forms of each tag in an If-None-Match header. */
export function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  if (header.trim() === '*') return true;
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
}

export class Delivery {
  readonly #queue = new PQueue({ concurrency: 1 });
  /** Status writes (events, cleared retries): their own writer, never behind a policy's refresh. */
  readonly #writer = new PQueue({ concurrency: 1 });
  /** Event batches arriving together share a transaction on the status writer. */
  readonly #events = new GroupCommit<PendingEvents, EventsResult, DrainContext>({
    queue: this.#writer,
    max: EVENT_BATCHES_PER_TX,
    context: async () => ({ statuses: new Map(), stored: new Set(), node: await this.nodeInstallation() }),
    prepare: (p, ctx) => this.#prepareEvents(p, ctx),
    write: (w) => this.conn.write(w),
    committed: (done) => {
      let changed = false;
      for (const [p, r] of done)
        if (r.accepted) {
          this.#drop(p.computerId);
          changed = true;
        }
      if (changed) this.onStatusChanged();
    },
  });
  #pendingComputers = new Set<number>();
  #pendingPolicies = new Set<string>();
  #scheduled = false;
  #cache = new Map<number, CacheEntry>();
  #cacheBytes = 0;
  /** Counts invalidations of single answers: an answer built across one is not kept. */
  #drops = 0;
  /** Bumped when something every computer's answer may depend on changes (policies, files, time). */
  #gen = 0;
  #startTimer: NodeJS.Timeout | null = null;
  #stopped = false;
  /** Called after a policy changed (the files the node needs may have). */
  onPolicyChanged: () => void = () => {};
  /** Called after delivery states changed (events stored, targets refreshed): the roll-up reports soon. */
  onStatusChanged: () => void = () => {};

  constructor(
    private readonly conn: SqlConn,
    private readonly computers: Computers,
    private readonly index: CatalogIndex,
    private readonly nodeInstallation: () => Promise<Installation>,
    private readonly staleBefore: () => Promise<number>,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    await this.#armStartTimer();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#startTimer) clearTimeout(this.#startTimer);
    this.#queue.clear();
    await this.#queue.onIdle();
    this.#events.rejectPending(new AppError('unavailable', 'the node is stopping; send the events again'));
    await this.#writer.onIdle();
  }

  async idle(): Promise<void> {
    await this.#queue.onIdle();
    await this.#writer.onIdle();
  }

  /* ---------------- targeting ---------------- */

  /** Computers were (re)assessed: refresh their rows against every enabled policy. */
  computersAssessed(ids: Iterable<number>): void {
    for (const id of ids) this.#pendingComputers.add(id);
    this.#schedule();
  }

  /** A policy was created or changed: refresh it against every computer. */
  policyChanged(id: string): void {
    this.#pendingPolicies.add(id);
    this.invalidateAll();
    this.onPolicyChanged();
    this.#schedule();
    void this.#armStartTimer();
  }

  /** Files were verified, settings changed: every answer is rebuilt on its next request. */
  invalidateAll(): void {
    this.#gen++;
  }

  #schedule(): void {
    if (this.#scheduled || this.#stopped) return;
    this.#scheduled = true;
    void this.#queue
      .add(async () => {
        this.#scheduled = false;
        const policies = [...this.#pendingPolicies];
        this.#pendingPolicies.clear();
        let ids: number[] = [];
        try {
          while (policies.length) {
            await this.#refreshPolicy(policies[0]!);
            policies.shift();
          }
          while (this.#pendingComputers.size) {
            ids = [...this.#pendingComputers].slice(0, PAGE);
            for (const id of ids) this.#pendingComputers.delete(id);
            await this.#refreshPage(await this.#enabledPolicies(), ids);
            ids = [];
          }
        } catch (err) {
          // What was not done is done again at the retry.
          for (const id of policies) this.#pendingPolicies.add(id);
          for (const id of ids) this.#pendingComputers.add(id);
          throw err;
        }
      })
      .catch((err) => {
        this.logger.error({ err }, 'delivery targeting failed; retrying in 10 s');
        if (this.#stopped) return;
        setTimeout(() => this.#schedule(), 10_000).unref();
      });
  }

  async #enabledPolicies(): Promise<PolicyRow[]> {
    return this.conn.all<PolicyRow>('SELECT id, name, enabled, start_at, deadline_at, targets, installation FROM policies WHERE enabled = 1', []);
  }

  async #refreshPolicy(id: string): Promise<void> {
    const p = await this.conn.get<PolicyRow>('SELECT id, name, enabled, start_at, deadline_at, targets, installation FROM policies WHERE id = ?', [id]);
    if (!p) {
      await this.conn.write([['DELETE FROM delivery_targets WHERE policy_id = ?', [id]]]);
      return;
    }
    // Rows of updates the policy no longer has go; the rest are refreshed page by page.
    await this.conn.write([['DELETE FROM delivery_targets WHERE policy_id = ? AND update_id NOT IN (SELECT update_id FROM policy_updates WHERE policy_id = ?)', [id, id]]]);
    if (!p.enabled) return;
    let after = 0;
    for (;;) {
      const ids = (await this.conn.all<{ id: number }>('SELECT id FROM computers WHERE id > ? ORDER BY id LIMIT ?', [after, PAGE])).map((r) => Number(r.id));
      if (!ids.length) break;
      await this.#refreshPage([p], ids);
      after = ids[ids.length - 1]!;
      await new Promise((r) => setImmediate(r));
    }
  }

  /** The SQL condition (over `computers`) of a policy's targets; null when it can match nothing. */
  async #targetSql(t: Targets): Promise<{ sql: string; params: unknown[] } | null> {
    if (t.all) return { sql: '1', params: [] };
    const parts: string[] = [];
    const params: unknown[] = [];
    const staleBefore = await this.staleBefore();
    for (const f of t.filters ?? []) {
      try {
        const q = dialect.sqlToQuery(conditionSql((await this.computers.condition(f)).condition, staleBefore));
        parts.push(`(${q.sql})`);
        params.push(...q.params);
      } catch (err) {
        if (err instanceof AppError && err.code === 'not-found') this.logger.warn({ filter: f }, 'a policy targets a filter that no longer exists');
        else throw err;
      }
    }
    for (const c of t.conditions ?? []) {
      const q = dialect.sqlToQuery(conditionSql(c, staleBefore));
      parts.push(`(${q.sql})`);
      params.push(...q.params);
    }
    if (t.computers?.length) {
      parts.push(`"computers"."id" IN (${placeholders(t.computers)})`);
      params.push(...t.computers);
    }
    return parts.length ? { sql: parts.join(' OR '), params } : null;
  }

  /** Refreshes the rows of `policies` for a page of computers, in one transaction. */
  async #refreshPage(policies: PolicyRow[], ids: number[]): Promise<void> {
    if (!ids.length) return;
    const w: Write[] = [];
    const now = Date.now();
    const touched = new Set<number>();
    const resolve: { policyId: string; computerId: number; updateId: string }[] = [];
    const inIds = placeholders(ids);
    for (const p of policies) {
      const target = await this.#targetSql(JSON.parse(p.targets) as Targets);
      const matched = new Set(
        target
          ? (await this.conn.all<{ id: number }>(`SELECT id FROM computers WHERE id IN (${inIds}) AND (${target.sql})`, [...ids, ...target.params])).map((r) => Number(r.id))
          : [],
      );
      const states = new Map<string, string>();
      for (const r of await this.conn.all<{ computer_id: number; update_id: string; state: string }>(
        `SELECT cu.computer_id, cu.update_id, cu.state FROM computer_updates cu JOIN policy_updates pu ON pu.update_id = cu.update_id AND pu.policy_id = ?
         WHERE cu.computer_id IN (${inIds})`,
        [p.id, ...ids],
      ))
        states.set(`${r.computer_id}\t${r.update_id}`, r.state);
      const existing = new Map<string, string>();
      for (const r of await this.conn.all<{ computer_id: number; update_id: string; applicable: string }>(
        `SELECT computer_id, update_id, applicable FROM delivery_targets WHERE policy_id = ? AND computer_id IN (${inIds})`,
        [p.id, ...ids],
      ))
        existing.set(`${r.computer_id}\t${r.update_id}`, r.applicable);

      for (const [key, state] of states) {
        if (state !== 'required') continue;
        const [c, u] = key.split('\t') as [string, string];
        const cid = Number(c);
        if (!matched.has(cid) || existing.get(key) === 'required') continue;
        if (existing.has(key)) w.push(["UPDATE delivery_targets SET applicable = 'required', since = ? WHERE policy_id = ? AND computer_id = ? AND update_id = ?", [now, p.id, cid, u]]);
        else w.push(["INSERT INTO delivery_targets (policy_id, computer_id, update_id, applicable, since) VALUES (?, ?, ?, 'required', ?)", [p.id, cid, u, now]]);
        touched.add(cid);
      }
      for (const [key, applicable] of existing) {
        const [c, u] = key.split('\t') as [string, string];
        const cid = Number(c);
        const state = states.get(key);
        if (state === 'required') {
          // Still needed, but no longer targeted: the policy stops delivering it here.
          if (!matched.has(cid)) {
            w.push(['DELETE FROM delivery_targets WHERE policy_id = ? AND computer_id = ? AND update_id = ?', [p.id, cid, u]]);
            touched.add(cid);
          }
        } else if (state === 'unknown') {
          if (applicable !== 'unknown') {
            w.push(["UPDATE delivery_targets SET applicable = 'unknown', since = ? WHERE policy_id = ? AND computer_id = ? AND update_id = ?", [now, p.id, cid, u]]);
            touched.add(cid);
          }
        } else if (applicable === 'required' || applicable === 'unknown') {
          resolve.push({ policyId: p.id, computerId: cid, updateId: u });
        }
      }
    }
    // Rows whose update stopped being required: installed, superseded or no longer applicable?
    const byComputer = new Map<number, typeof resolve>();
    for (const r of resolve) {
      let l = byComputer.get(r.computerId);
      if (!l) byComputer.set(r.computerId, (l = []));
      l.push(r);
    }
    for (const [cid, rows] of byComputer) {
      const inv = await this.conn.get<{ inventory: string }>('SELECT inventory FROM computers WHERE id = ?', [cid]);
      const entries = [...new Set(rows.map((r) => r.updateId))].map((id) => this.index.get(id)).filter((e): e is Entry => e !== undefined);
      const states = inv ? this.index.assessSome(facts(JSON.parse(inv.inventory) as Inventory), CatalogIndex.group(entries)) : new Map();
      for (const r of rows) {
        const s = states.get(r.updateId) ?? 'not-applicable';
        w.push(['UPDATE delivery_targets SET applicable = ?, since = ? WHERE policy_id = ? AND computer_id = ? AND update_id = ?', [s, now, r.policyId, cid, r.updateId]]);
      }
      touched.add(cid);
    }
    if (w.length) {
      await this.conn.write(w);
      this.onStatusChanged();
    }
    for (const c of touched) this.#drop(c);
  }

  /** Re-reads the earliest future policy start, so answers change when it comes. */
  async #armStartTimer(): Promise<void> {
    if (this.#startTimer) clearTimeout(this.#startTimer);
    this.#startTimer = null;
    if (this.#stopped) return;
    const r = await this.conn.get<{ at: number | null }>('SELECT min(start_at) AS at FROM policies WHERE enabled = 1 AND start_at > ?', [Date.now()]);
    if (r?.at === null || r?.at === undefined) return;
    const delay = Math.min(Math.max(Number(r.at) - Date.now(), 0) + 10, 86_400_000);
    this.#startTimer = setTimeout(() => {
      this.invalidateAll();
      void this.#armStartTimer();
    }, delay);
    this.#startTimer.unref();
  }

  /* ---------------- assignments ---------------- */

  #drop(computerId: number): void {
    this.#drops++;
    const e = this.#cache.get(computerId);
    if (e) {
      this.#cacheBytes -= e.body.length;
      this.#cache.delete(computerId);
    }
  }

  /** This computer's answer: from memory while current, else built, hashed and kept. */
  async assignments(computerId: number | null): Promise<{ etag: string; body: string }> {
    if (computerId === null) return this.#emptyAnswer();
    const hit = this.#cache.get(computerId);
    if (hit && hit.gen === this.#gen) {
      // Most recently used last: eviction takes the first.
      this.#cache.delete(computerId);
      this.#cache.set(computerId, hit);
      return hit;
    }
    const gen = this.#gen;
    const drops = this.#drops;
    const body = JSON.stringify(await this.#build(computerId));
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
    const entry = { gen, etag, body };
    // Something changed while it was built: answer, but do not keep it.
    if (this.#drops !== drops) return entry;
    this.#drop(computerId);
    this.#cache.set(computerId, entry);
    this.#cacheBytes += body.length;
    while (this.#cacheBytes > CACHE_BYTES) this.#drop(this.#cache.keys().next().value!);
    return entry;
  }

  #empty: { etag: string; body: string } | null = null;
  #emptyAnswer() {
    if (!this.#empty) {
      const body = JSON.stringify({ items: [], policies: [], waitingForFiles: 0, waiting: [] } satisfies Assignments);
      this.#empty = { body, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` };
    }
    return this.#empty;
  }

  async #build(computerId: number): Promise<Assignments> {
    const now = Date.now();
    const node = await this.nodeInstallation();
    const rows = await this.conn.all<{
      policy_id: string; name: string; start_at: number; deadline_at: number | null; installation: string | null;
      update_id: string; kb: string | null; title: string; success_codes: string; reboot_codes: string; restart: string;
      state: string | null; download_failures: number | null; install_failures: number | null; retries_cleared_at: number | null;
    }>(
      `SELECT p.id AS policy_id, p.name, p.start_at, p.deadline_at, p.installation, u.id AS update_id, u.kb, u.title,
              u.success_codes, u.reboot_codes, u.restart, s.state, s.download_failures, s.install_failures, s.retries_cleared_at
       FROM delivery_targets t
       JOIN policies p ON p.id = t.policy_id AND p.enabled = 1 AND p.start_at <= ?
       JOIN updates u ON u.id = t.update_id AND u.expired = 0
       LEFT JOIN delivery_status s ON s.computer_id = t.computer_id AND s.update_id = t.update_id
       WHERE t.computer_id = ? AND t.applicable = 'required'
       ORDER BY t.update_id, coalesce(p.deadline_at, 9e15), p.start_at, p.id`,
      [now, computerId],
    );
    const langs = ((await this.conn.get<{ languages: string }>('SELECT languages FROM computers WHERE id = ?', [computerId]))?.languages ?? '').split(',').filter(Boolean);
    // One item per update: the policy with the earliest deadline delivers it. Updates
    // installed, waiting for a restart or at their retry ceiling are not offered.
    const seen = new Set<string>();
    const live: ((typeof rows)[number] & { settings: Installation })[] = [];
    const ceilinged: typeof live = [];
    for (const r of rows) {
      if (seen.has(r.update_id)) continue;
      seen.add(r.update_id);
      const settings = effectiveInstallation(node, r.installation ? (JSON.parse(r.installation) as InstallationOverride) : null);
      // Not applicable: the installers said so; offered again once the retries are cleared.
      if (r.state === 'installed' || r.state === 'pending-reboot' || r.state === 'not-applicable') continue;
      // The ceiling is the policy's now (raised, the update is offered again), not the one the status was stored under.
      if ((r.download_failures ?? 0) >= settings.retries.download || (r.install_failures ?? 0) >= settings.retries.install) {
        ceilinged.push({ ...r, settings });
        continue;
      }
      live.push({ ...r, settings });
    }
    const files = new Map<string, { sha256: string; size: number; name: string; language: string; installer: string | null; verified: boolean; fetched: boolean; failure: { error: string; nextTryAt: string | null } | null }[]>();
    for (let i = 0; i < live.length; i += 400) {
      const part = live.slice(i, i + 400).map((r) => r.update_id);
      for (const f of await this.conn.all<{ update_id: string; sha256: string; size: number; name: string; language: string; installer: string | null; state: string | null; last_error: string | null; next_attempt_at: number | null }>(
        `SELECT f.update_id, f.sha256, f.size, f.name, f.language, f.installer, c.state, c.last_error, c.next_attempt_at FROM update_files f LEFT JOIN content_files c ON c.sha256 = f.sha256
         WHERE f.update_id IN (${placeholders(part)}) ORDER BY f.update_id, f.position`,
        part,
      )) {
        let l = files.get(f.update_id);
        if (!l) files.set(f.update_id, (l = []));
        l.push({
          sha256: f.sha256, size: Number(f.size), name: f.name, language: f.language, installer: f.installer, verified: f.state === 'verified', fetched: f.state !== null,
          failure: f.state === 'failed' ? { error: f.last_error ?? 'failed', nextTryAt: iso(f.next_attempt_at) } : null,
        });
      }
    }
    const items: Assignment[] = [];
    const used = new Map<string, Assignments['policies'][number]>();
    const waiting: Waiting[] = ceilinged.map((r) => ({ updateId: r.update_id, policyId: r.policy_id, kb: r.kb, title: r.title, reason: 'retry-ceiling', files: 0, missing: 0, languages: langs, nodeError: null, nextTryAt: null }));
    for (const r of live) {
      if (!used.has(r.policy_id)) used.set(r.policy_id, { id: r.policy_id, name: r.name, startAt: iso(r.start_at)!, deadline: iso(r.deadline_at), installation: r.settings });
      // Only the files this computer needs: another language's file is never offered (a site may not even hold it).
      const mine = (files.get(r.update_id) ?? []).filter((f) => languageMatches(f.language, langs));
      const missing = mine.filter((f) => !f.verified);
      if (!mine.length || missing.length) {
        // Files the node does not fetch at all are in languages it does not manage (--languages).
        const unmanaged = [...new Set(missing.filter((f) => !f.fetched).map((f) => f.language))].sort();
        const all = files.get(r.update_id) ?? [];
        const reason = !all.length ? 'no-files' : !mine.length ? 'no-file-in-languages' : unmanaged.length ? 'languages-not-on-node' : 'files-not-on-node';
        const failure = missing.find((f) => f.failure)?.failure ?? null;
        waiting.push({ updateId: r.update_id, policyId: r.policy_id, kb: r.kb, title: r.title, reason, files: mine.length, missing: missing.length, languages: reason === 'languages-not-on-node' ? unmanaged : langs, nodeError: failure?.error ?? null, nextTryAt: failure?.nextTryAt ?? null });
        continue;
      }
      items.push({
        updateId: r.update_id,
        policyId: r.policy_id,
        kb: r.kb,
        title: r.title,
        files: mine.map((f) => ({ url: fileUrl(f.sha256), sha256: f.sha256, size: f.size, name: f.name, language: f.language, installer: f.installer ? (JSON.parse(f.installer) as Installer) : null })),
        successCodes: JSON.parse(r.success_codes) as number[],
        rebootCodes: JSON.parse(r.reboot_codes) as number[],
        restart: r.restart,
        deadline: iso(r.deadline_at),
        attempts: { download: Number(r.download_failures ?? 0), install: Number(r.install_failures ?? 0) },
        retriesClearedAt: iso(r.retries_cleared_at),
      });
    }
    return { items, policies: [...used.values()], waitingForFiles: waiting.filter((w) => w.reason === 'files-not-on-node' || w.reason === 'languages-not-on-node').length, waiting };
  }

  /* ---------------- events ---------------- */

  /**
   * Stores an agent's batch of events and applies the new ones to the
   * (computer, update) status. Events already stored (the same id from the same
   * computer) are skipped, so a retried batch counts once. Batches that arrive
   * together are written in one transaction (one fsync for many agents); a batch
   * that fails its checks is refused alone and stores nothing.
   */
  events(computerId: number, events: AgentEvent[], now = Date.now()): Promise<EventsResult> {
    return this.#events.add({ computerId, events, now });
  }

  /** Checks one batch and computes its writes; the drain's state takes them in only once it passes. */
  async #prepareEvents(p: PendingEvents, ctx: DrainContext): Promise<Prepared<EventsResult>> {
    const { computerId, now } = p;
    const unique = new Map(p.events.map((e) => [e.id, e]));
    const ids = [...unique.keys()];
    const seen = new Set<string>(ids.filter((id) => ctx.stored.has(`${computerId}\t${id}`)));
    for (let i = 0; i < ids.length; i += 400) {
      const part = ids.slice(i, i + 400);
      for (const r of await this.conn.all<{ event_id: string }>(`SELECT event_id FROM agent_events WHERE computer_id = ? AND event_id IN (${placeholders(part)})`, [computerId, ...part]))
        seen.add(r.event_id);
    }
    const fresh = [...unique.values()].filter((e) => !seen.has(e.id));
    const updateIds = [...new Set(fresh.map((e) => e.updateId))];
    // Live updates are in the catalog index; only others (expired ones) are looked up.
    const unindexed = updateIds.filter((u) => !this.index.get(u));
    if (unindexed.length) {
      const known = new Set<string>();
      for (let i = 0; i < unindexed.length; i += 400) {
        const part = unindexed.slice(i, i + 400);
        for (const r of await this.conn.all<{ id: string }>(`SELECT id FROM updates WHERE id IN (${placeholders(part)})`, part)) known.add(r.id);
      }
      const unknown = unindexed.filter((u) => !known.has(u));
      if (unknown.length) {
        const gone = new Set(unknown);
        const refused: EventRefusal[] = p.events.flatMap((e, index) => (gone.has(e.updateId) && !seen.has(e.id) ? [{ index, id: e.id, reason: `updateId: ${e.updateId} is not an update this node knows` }] : []));
        throw new AppError('validation-failed', `events name updates this node does not know: ${unknown.slice(0, 5).join(', ')}; nothing was stored`, { refused });
      }
    }
    const writes: Write[] = [];
    const statuses = new Map<string, Status>();
    for (const u of updateIds) {
      const key = `${computerId}\t${u}`;
      let s = ctx.statuses.get(key) ?? (await this.#status(computerId, u)) ?? newStatus();
      const ceilings = await this.ceilings(computerId, u, ctx.node);
      for (const e of fresh.filter((e) => e.updateId === u).sort((a, b) => Date.parse(a.at) - Date.parse(b.at)))
        s = applyEvent(s, { type: e.type, at: Date.parse(e.at), attempt: e.attempt, exitCode: e.exitCode, message: e.message }, ceilings);
      statuses.set(key, s);
      writes.push([
        `INSERT INTO delivery_status (computer_id, update_id, state, download_failures, install_failures, last_attempt, last_exit_code, last_error, last_event_at, retries_cleared_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(computer_id, update_id) DO UPDATE SET state = excluded.state, download_failures = excluded.download_failures, install_failures = excluded.install_failures,
           last_attempt = excluded.last_attempt, last_exit_code = excluded.last_exit_code, last_error = excluded.last_error, last_event_at = excluded.last_event_at, updated_at = excluded.updated_at`,
        [computerId, u, s.state, s.downloadFailures, s.installFailures, s.lastAttempt, s.lastExitCode, s.lastError, s.lastEventAt, s.retriesClearedAt, now],
      ]);
    }
    for (const e of fresh)
      writes.push([
        'INSERT INTO agent_events (computer_id, event_id, update_id, policy_id, type, attempt, at, exit_code, message, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [computerId, e.id, e.updateId, e.policyId ?? null, e.type, e.attempt, Date.parse(e.at), e.exitCode ?? null, e.message ?? null, now],
      ]);
    return {
      writes,
      result: { accepted: fresh.length, duplicates: p.events.length - fresh.length },
      accept: () => {
        for (const [k, v] of statuses) ctx.statuses.set(k, v);
        for (const e of fresh) ctx.stored.add(`${computerId}\t${e.id}`);
      },
    };
  }

  async #status(computerId: number, updateId: string): Promise<Status | null> {
    const row = await this.conn.get<{ state: Status['state']; download_failures: number; install_failures: number; last_attempt: number | null; last_exit_code: number | null; last_error: string | null; last_event_at: number; retries_cleared_at: number | null }>(
      'SELECT state, download_failures, install_failures, last_attempt, last_exit_code, last_error, last_event_at, retries_cleared_at FROM delivery_status WHERE computer_id = ? AND update_id = ?',
      [computerId, updateId],
    );
    if (!row) return null;
    return {
      state: row.state,
      downloadFailures: Number(row.download_failures),
      installFailures: Number(row.install_failures),
      lastAttempt: row.last_attempt,
      lastExitCode: row.last_exit_code,
      lastError: row.last_error,
      lastEventAt: Number(row.last_event_at),
      retriesClearedAt: row.retries_cleared_at,
    };
  }

  /** The retry ceilings for an update on a computer: the most lenient of the policies delivering it. */
  async ceilings(computerId: number, updateId: string, node: Installation): Promise<Ceilings> {
    const rows = await this.conn.all<{ installation: string | null }>(
      'SELECT p.installation FROM delivery_targets t JOIN policies p ON p.id = t.policy_id WHERE t.computer_id = ? AND t.update_id = ? AND p.enabled = 1',
      [computerId, updateId],
    );
    if (!rows.length) return node.retries;
    const all = rows.map((r) => effectiveInstallation(node, r.installation ? (JSON.parse(r.installation) as InstallationOverride) : null).retries);
    return { download: Math.max(...all.map((r) => r.download)), install: Math.max(...all.map((r) => r.install)) };
  }

  /** Resets failure counts (all of a computer's updates, or some); the agent sees it at its next check-in. */
  clearRetries(computerId: number, updateIds: string[] | null, now = Date.now()): Promise<{ cleared: number }> {
    return this.#writer.add(async () => {
      const c = await this.conn.get<{ id: number }>('SELECT id FROM computers WHERE id = ?', [computerId]);
      if (!c) throw new AppError('not-found', `no computer ${computerId}`);
      const only = updateIds ? ` AND update_id IN (${placeholders(updateIds)})` : '';
      const [n] = await this.conn.write([
        [
          `UPDATE delivery_status SET download_failures = 0, install_failures = 0, retries_cleared_at = ?, updated_at = ?,
             state = CASE WHEN state IN ('failed', 'ceiling-reached', 'not-applicable') THEN 'failed' ELSE state END
           WHERE computer_id = ?${only}`,
          [now, now, computerId, ...(updateIds ?? [])],
        ],
      ]);
      this.#drop(computerId);
      return { cleared: n ?? 0 };
    }) as Promise<{ cleared: number }>;
  }

  /** A computer's status events as its agent sent them, newest first (optionally of one update). */
  async eventsOf(computerId: number, o: { update?: string | undefined; before?: number | undefined; limit: number }) {
    const where = ['computer_id = ?'];
    const params: unknown[] = [computerId];
    if (o.update) {
      where.push('update_id = ?');
      params.push(o.update);
    }
    if (o.before) {
      where.push('rowid < ?');
      params.push(o.before);
    }
    const rows = await this.conn.all<{ rowid: number; event_id: string; update_id: string; policy_id: string | null; type: string; attempt: number; at: number; exit_code: number | null; message: string | null; received_at: number }>(
      `SELECT rowid, event_id, update_id, policy_id, type, attempt, at, exit_code, message, received_at FROM agent_events WHERE ${where.join(' AND ')} ORDER BY rowid DESC LIMIT ?`,
      [...params, o.limit + 1],
    );
    return keysetPage(
      rows,
      o.limit,
      (r) => ({
        id: r.event_id,
        updateId: r.update_id,
        policyId: r.policy_id,
        type: r.type,
        attempt: Number(r.attempt),
        at: iso(r.at)!,
        exitCode: r.exit_code === null ? null : Number(r.exit_code),
        message: r.message,
        receivedAt: iso(r.received_at)!,
      }),
      (r) => String(r.rowid),
    );
  }

  /** Drops events received before `before` (the dedupe window is the retention). */
  async pruneEvents(before: number): Promise<number> {
    let total = 0;
    for (;;) {
      const [n] = await this.conn.write([['DELETE FROM agent_events WHERE rowid IN (SELECT rowid FROM agent_events WHERE received_at < ? LIMIT 5000)', [before]]]);
      total += n ?? 0;
      if (!n || n < 5000) return total;
      await new Promise((r) => setImmediate(r));
    }
  }
}
