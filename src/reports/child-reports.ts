import { createHash } from 'node:crypto';
import { sql } from 'drizzle-orm';
import type { Orm } from '../db/index.js';
import type { Logger } from '../lib/log.js';
import { AppError } from '../lib/errors.js';
import type { ReceivedNodeReport } from '../replication/protocol.js';
import { UUID } from '../replication/validate.js';
import { nodeSummarySchema } from './summary.js';

/**
 * The roll-up as a parent: what the children report, for themselves and the nodes
 * below them, checked and kept in `node_reports` (the latest summary per node).
 */

const NODE_ID = UUID;

export class ChildReports {
  constructor(
    /** Writes (node_reports). */
    private readonly orm: Orm,
    private readonly self: { nodeId: string },
    private readonly logger: Logger,
    private readonly now: () => number,
    /** Called after reports were stored or removed. */
    private readonly changed: () => void,
  ) {}

  /**
   * Stores what a child sent (its own summary and its subtree's) in one
   * transaction, after checking all of it: a malformed report stores nothing.
   * Returns the nodes whose summary must be sent whole.
   */
  async receive(via: string, reports: readonly ReceivedNodeReport[], gone: readonly string[]): Promise<string[]> {
    const now = this.now();
    const checked: { r: ReceivedNodeReport; summary: string | null }[] = [];
    for (const r of reports) {
      if (!NODE_ID.test(r.node_id) || !NODE_ID.test(r.parent_id))
        throw new AppError('validation-failed', `report: node ids must be UUIDs (got ${JSON.stringify(r.node_id).slice(0, 60)})`);
      if (!/^[0-9a-f]{64}$/.test(r.digest)) throw new AppError('validation-failed', `report ${r.node_id}: digest must be 64 hex digits`);
      const interval = Number(r.interval_ms);
      if (!Number.isInteger(interval) || interval < 100) throw new AppError('validation-failed', `report ${r.node_id}: interval_ms must be at least 100`);
      if (r.node_id === this.self.nodeId) continue; // this node's own, come back round: never stored
      if (!r.summary.length) {
        checked.push({ r, summary: null });
        continue;
      }
      if (createHash('sha256').update(r.summary).digest('hex') !== r.digest)
        throw new AppError('validation-failed', `report ${r.node_id}: the summary does not match its digest`);
      let parsed: unknown;
      try {
        parsed = JSON.parse(r.summary.toString('utf8'));
      } catch {
        throw new AppError('validation-failed', `report ${r.node_id}: the summary is not JSON`);
      }
      const v = nodeSummarySchema.safeParse(parsed);
      if (!v.success) throw new AppError('validation-failed', `report ${r.node_id}: ${v.error.issues[0]?.path.join('.')}: ${v.error.issues[0]?.message}`);
      checked.push({ r, summary: r.summary.toString('utf8') });
    }
    // A child reports for itself and the nodes below it, never for a sibling, this node or another child's subtree.
    const stored = new Map((await this.orm.all<{ node_id: string; via: string }>(sql`SELECT node_id, via FROM node_reports`)).map((r) => [r.node_id, r.via]));
    const direct = new Set((await this.orm.all<{ id: string }>(sql`SELECT id FROM children WHERE removed_at IS NULL`)).map((r) => r.id));
    const mine = new Set([via, ...[...stored].filter(([, v]) => v === via).map(([id]) => id)]);
    for (let grew = true; grew; ) {
      grew = false;
      for (const { r } of checked)
        if (!mine.has(r.node_id) && mine.has(r.parent_id)) {
          mine.add(r.node_id);
          grew = true;
        }
    }
    // What a child claims beyond that is dropped, the rest kept: a hostile grandchild must not
    // get its parent's honest reports refused above (the parent cannot know ids outside its subtree).
    const allowed = (r: ReceivedNodeReport) => {
      const other = stored.get(r.node_id);
      return mine.has(r.node_id) && !(r.node_id !== via && direct.has(r.node_id)) && !(other !== undefined && other !== via && direct.has(other));
    };
    const dropped = checked.filter(({ r }) => !allowed(r)).map(({ r }) => r.node_id);
    if (dropped.length) {
      this.logger.warn(
        { child: via, dropped: dropped.slice(0, 10), count: dropped.length },
        'a child reported for nodes outside its subtree; those reports were dropped',
      );
      for (let i = checked.length - 1; i >= 0; i--) if (!allowed(checked[i]!.r)) checked.splice(i, 1);
    }
    const resend: string[] = [];
    await this.orm.transaction(async (tx) => {
      for (const id of gone) await tx.run(sql`DELETE FROM node_reports WHERE node_id = ${id} AND via = ${via}`);
      for (const { r, summary } of checked) {
        const reportedAt = now - Math.max(0, Number(r.age_ms));
        // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
        const name = r.name.replace(/[\u0000-\u001f\u007f\ufffd]/g, '').slice(0, 100) || r.node_id;
        if (summary === null) {
          const res = await tx.run(
            sql`UPDATE node_reports SET name = ${name}, parent_id = ${r.parent_id}, via = ${via}, reported_at = max(reported_at, ${reportedAt}), interval_ms = ${r.interval_ms}, received_at = ${now}
                WHERE node_id = ${r.node_id} AND digest = ${r.digest}`,
          );
          if (!res.rowsAffected) resend.push(r.node_id);
          continue;
        }
        await tx.run(sql`INSERT INTO node_reports (node_id, name, parent_id, via, reported_at, interval_ms, received_at, digest, summary)
          VALUES (${r.node_id}, ${name}, ${r.parent_id}, ${via}, ${reportedAt}, ${r.interval_ms}, ${now}, ${r.digest}, ${summary})
          ON CONFLICT(node_id) DO UPDATE SET name = excluded.name, parent_id = excluded.parent_id, via = excluded.via, reported_at = excluded.reported_at,
            interval_ms = excluded.interval_ms, received_at = excluded.received_at, digest = excluded.digest, summary = excluded.summary`);
      }
    });
    if (checked.length || gone.length) this.changed();
    return resend;
  }

  /** A child was removed: its subtree's summaries go. Returns the nodes whose summaries went. */
  async forget(via: string): Promise<string[]> {
    const rows = await this.orm.all<{ node_id: string }>(sql`DELETE FROM node_reports WHERE via = ${via} RETURNING node_id`);
    return rows.map((r) => r.node_id);
  }
}
