import PQueue from 'p-queue';
import { updateIdsIn } from '../catalog/read.js';
import type { SqlConn, Write } from '../db/exec.js';
import { GroupCommit, type Prepared } from '../db/group-commit.js';
import { isoTime as iso, keysetPage, placeholders } from '../db/sql.js';
import { AppError } from '../lib/errors.js';
import type { CatalogIndex } from '../assessment/catalog-index.js';
import type { AgentEvent, EventRefusal, EventsStored } from '../agent-api/events.js';
import { applyEvent, newStatus, type Ceilings, type Status } from './events.js';
import { effectiveInstallation, type Installation, type InstallationOverride } from './installation.js';
import type { AssignmentAnswers } from './assignments.js';

/**
 * What agents report back: their status events, stored once each, and the
 * (computer, update) status they add up to, with its retry counts; written on a
 * writer of their own, never behind a policy's refresh.
 */

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

/** Event batches written per transaction at most. */
const EVENT_BATCHES_PER_TX = 256;

export class DeliveryStatuses {
  readonly #writer = new PQueue({ concurrency: 1 });
  /** Event batches arriving together share a transaction on the status writer. */
  readonly #events = new GroupCommit<PendingEvents, EventsStored, DrainContext>({
    queue: this.#writer,
    max: EVENT_BATCHES_PER_TX,
    context: async () => ({ statuses: new Map(), stored: new Set(), node: await this.nodeInstallation() }),
    prepare: (p, ctx) => this.#prepareEvents(p, ctx),
    write: (w) => this.conn.write(w),
    committed: (done) => {
      let changed = false;
      for (const [p, r] of done)
        if (r.accepted) {
          this.answers.drop(p.computerId);
          changed = true;
        }
      if (changed) this.statusChanged();
    },
  });

  constructor(
    private readonly conn: SqlConn,
    private readonly index: CatalogIndex,
    private readonly nodeInstallation: () => Promise<Installation>,
    private readonly answers: AssignmentAnswers,
    /** Delivery states changed (events stored). */
    private readonly statusChanged: () => void,
  ) {}

  async stop(): Promise<void> {
    this.#events.rejectPending(new AppError('unavailable', 'the node is stopping; send the events again'));
    await this.#writer.onIdle();
  }

  idle(): Promise<void> {
    return this.#writer.onIdle();
  }

  /**
   * Stores an agent's batch of events and applies the new ones to the
   * (computer, update) status. Events already stored (the same id from the same
   * computer) are skipped, so a retried batch counts once. Batches that arrive
   * together are written in one transaction (one fsync for many agents); a batch
   * that fails its checks is refused alone and stores nothing.
   */
  events(computerId: number, events: AgentEvent[], now = Date.now()): Promise<EventsStored> {
    return this.#events.add({ computerId, events, now });
  }

  /** Checks one batch and computes its writes; the drain's state takes them in only once it passes. */
  async #prepareEvents(p: PendingEvents, ctx: DrainContext): Promise<Prepared<EventsStored>> {
    const { computerId, now } = p;
    const unique = new Map(p.events.map((e) => [e.id, e]));
    const ids = [...unique.keys()];
    const seen = new Set<string>(ids.filter((id) => ctx.stored.has(`${computerId}\t${id}`)));
    for (let i = 0; i < ids.length; i += 400) {
      const part = ids.slice(i, i + 400);
      for (const r of await this.conn.all<{ event_id: string }>(
        `SELECT event_id FROM agent_events WHERE computer_id = ? AND event_id IN (${placeholders(part)})`,
        [computerId, ...part],
      ))
        seen.add(r.event_id);
    }
    const fresh = [...unique.values()].filter((e) => !seen.has(e.id));
    const updateIds = [...new Set(fresh.map((e) => e.updateId))];
    // Live updates are in the catalog index; only others (expired ones) are looked up.
    const unindexed = updateIds.filter((u) => !this.index.get(u));
    if (unindexed.length) {
      const known = await updateIdsIn(this.conn, unindexed, { live: false });
      const unknown = unindexed.filter((u) => !known.has(u));
      if (unknown.length) {
        const gone = new Set(unknown);
        const refused: EventRefusal[] = p.events.flatMap((e, index) =>
          gone.has(e.updateId) && !seen.has(e.id) ? [{ index, id: e.id, reason: `updateId: ${e.updateId} is not an update this node knows` }] : [],
        );
        throw new AppError('validation-failed', `events name updates this node does not know: ${unknown.slice(0, 5).join(', ')}; nothing was stored`, {
          refused,
        });
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
    const row = await this.conn.get<{
      state: Status['state'];
      download_failures: number;
      install_failures: number;
      last_attempt: number | null;
      last_exit_code: number | null;
      last_error: string | null;
      last_event_at: number;
      retries_cleared_at: number | null;
    }>(
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
      this.answers.drop(computerId);
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
    const rows = await this.conn.all<{
      rowid: number;
      event_id: string;
      update_id: string;
      policy_id: string | null;
      type: string;
      attempt: number;
      at: number;
      exit_code: number | null;
      message: string | null;
      received_at: number;
    }>(
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
      const [n] = await this.conn.write([
        ['DELETE FROM agent_events WHERE rowid IN (SELECT rowid FROM agent_events WHERE received_at < ? LIMIT 5000)', [before]],
      ]);
      total += n ?? 0;
      if (!n || n < 5000) return total;
      await new Promise((r) => setImmediate(r));
    }
  }
}
