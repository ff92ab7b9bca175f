import type { SqlConn } from '../db/exec.js';
import { isoTime as iso, keysetPage } from '../db/sql.js';

/** How far each policy's delivery got: totals per state, and per computer and update. */

/** The state of one (policy, computer, update), from its target row and the computer's status. */
export const DELIVERY_STATE_SQL = `CASE
  WHEN t.applicable = 'installed' THEN 'installed'
  WHEN t.applicable IN ('superseded', 'not-applicable') THEN 'not-applicable'
  WHEN t.applicable = 'unknown' THEN 'unknown'
  WHEN s.state IS NULL THEN 'targeted'
  WHEN s.state IN ('downloading', 'downloaded') THEN 'downloading'
  ELSE s.state END`;
export const DELIVERY_STATES = [
  'targeted',
  'downloading',
  'installing',
  'installed',
  'failed',
  'pending-reboot',
  'ceiling-reached',
  'not-applicable',
  'unknown',
] as const;

export class PolicyDeliveries {
  constructor(
    private readonly conn: SqlConn,
    /** This node's id: the origin of its own policies. */
    private readonly nodeId: string,
  ) {}

  /** Counts per delivery state of a policy's (computer, update) pairs, and its computers. */
  async totals(id: string): Promise<Record<string, number>> {
    const out: Record<string, number> = Object.fromEntries([['computers', 0], ...DELIVERY_STATES.map((s) => [s, 0])]);
    const rows = await this.conn.all<{ state: string; n: number }>(
      `SELECT ${DELIVERY_STATE_SQL} AS state, count(*) AS n FROM delivery_targets t
       LEFT JOIN delivery_status s ON s.computer_id = t.computer_id AND s.update_id = t.update_id WHERE t.policy_id = ? GROUP BY 1`,
      [id],
    );
    for (const r of rows) out[r.state] = Number(r.n);
    out.computers = Number(
      (await this.conn.get<{ n: number }>('SELECT count(DISTINCT computer_id) AS n FROM delivery_targets WHERE policy_id = ?', [id]))?.n ?? 0,
    );
    return out;
  }

  /** Every policy's totals (for the roll-up): two grouped reads, whatever the number of policies. */
  async allTotals(): Promise<Record<string, { name: string; origin: string; totals: Record<string, number> }>> {
    const out: Record<string, { name: string; origin: string; totals: Record<string, number> }> = {};
    for (const p of await this.conn.all<{ id: string; name: string; origin: string }>('SELECT id, name, origin FROM policies ORDER BY id', []))
      out[p.id] = { name: p.name, origin: p.origin || this.nodeId, totals: Object.fromEntries([['computers', 0], ...DELIVERY_STATES.map((s) => [s, 0])]) };
    for (const r of await this.conn.all<{ policy_id: string; state: string; n: number }>(
      `SELECT t.policy_id, ${DELIVERY_STATE_SQL} AS state, count(*) AS n FROM delivery_targets t
       LEFT JOIN delivery_status s ON s.computer_id = t.computer_id AND s.update_id = t.update_id GROUP BY 1, 2`,
      [],
    ))
      if (out[r.policy_id]) out[r.policy_id]!.totals[r.state] = Number(r.n);
    for (const r of await this.conn.all<{ policy_id: string; n: number }>(
      'SELECT policy_id, count(DISTINCT computer_id) AS n FROM delivery_targets GROUP BY policy_id',
      [],
    ))
      if (out[r.policy_id]) out[r.policy_id]!.totals.computers = Number(r.n);
    return out;
  }

  /** A policy's delivery, per computer and update, paged by (computer, update). */
  async deliveryOf(id: string, o: { state?: string | undefined; computer?: number | undefined; after: string; limit: number }) {
    const [ac, ...au] = o.after ? o.after.split(':') : ['0'];
    const where = ['t.policy_id = ?', '(t.computer_id > ? OR (t.computer_id = ? AND t.update_id > ?))'];
    const params: unknown[] = [id, Number(ac), Number(ac), au.join(':')];
    if (o.state) {
      where.push(`${DELIVERY_STATE_SQL} = ?`);
      params.push(o.state);
    }
    if (o.computer !== undefined) {
      where.push('t.computer_id = ?');
      params.push(o.computer);
    }
    const rows = await this.conn.all<{
      computer_id: number;
      computer: string;
      update_id: string;
      kb: string | null;
      state: string;
      since: number;
      download_failures: number | null;
      install_failures: number | null;
      last_exit_code: number | null;
      last_error: string | null;
      updated_at: number | null;
    }>(
      `SELECT t.computer_id, c.name AS computer, t.update_id, u.kb, ${DELIVERY_STATE_SQL} AS state, t.since, s.download_failures, s.install_failures, s.last_exit_code, s.last_error, s.updated_at
       FROM delivery_targets t JOIN computers c ON c.id = t.computer_id LEFT JOIN updates u ON u.id = t.update_id
       LEFT JOIN delivery_status s ON s.computer_id = t.computer_id AND s.update_id = t.update_id
       WHERE ${where.join(' AND ')} ORDER BY t.computer_id, t.update_id LIMIT ?`,
      [...params, o.limit + 1],
    );
    const page = keysetPage(
      rows,
      o.limit,
      (r) => ({
        computerId: Number(r.computer_id),
        computer: r.computer,
        updateId: r.update_id,
        kb: r.kb,
        state: r.state,
        attempts: { download: Number(r.download_failures ?? 0), install: Number(r.install_failures ?? 0) },
        lastExitCode: r.last_exit_code === null ? null : Number(r.last_exit_code),
        lastError: r.last_error,
        targetedAt: iso(r.since)!,
        updatedAt: iso(r.updated_at),
      }),
      (r) => `${r.computer_id}:${r.update_id}`,
    );
    return { totals: await this.totals(id), ...page };
  }

  /**
   * Installs over time: per UTC day of the last `days`, the installs that succeeded and
   * failed on the policy's (computer, update) pairs, from the agents' events (when they
   * happened on the computer). Aggregated in SQL: one row per day, whatever the fleet.
   */
  async installsByDay(id: string, days: number, now = Date.now()): Promise<{ day: string; installed: number; failed: number }[]> {
    const from = Date.UTC(new Date(now).getUTCFullYear(), new Date(now).getUTCMonth(), new Date(now).getUTCDate()) - (days - 1) * 86_400_000;
    const rows = await this.conn.all<{ day: string; installed: number; failed: number }>(
      `SELECT date(e.at / 1000, 'unixepoch') AS day, sum(e.type = 'install-succeeded') AS installed, sum(e.type = 'install-failed') AS failed
       FROM delivery_targets t JOIN agent_events e INDEXED BY agent_events_update
         ON e.computer_id = t.computer_id AND e.update_id = t.update_id AND e.at >= ?
       WHERE t.policy_id = ? AND e.type IN ('install-succeeded', 'install-failed')
       GROUP BY 1 ORDER BY 1`,
      [from, id],
    );
    return rows.map((r) => ({ day: r.day, installed: Number(r.installed), failed: Number(r.failed) }));
  }
}
