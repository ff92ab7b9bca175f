import { sql } from 'drizzle-orm';
import type { Orm } from '../db/index.js';
import { isoTime as iso, keysetPage } from '../db/sql.js';
import type { ReleaseTimes } from '../freshness/freshness.js';
import { decode, encode, updateItem, type Reports, type UpdateRow } from './reports.js';
import { isStale, sumSummaries, type Summary } from './summary.js';

/**
 * The roll-up's whole-tree views: this node's live figures and the last summary of
 * every node below it (`node_reports`), each shown stale once it ages past three of
 * its node's intervals.
 */
export class TreeViews {
  constructor(
    /** Reads. */
    private readonly reader: Orm,
    private readonly reports: Reports,
    private readonly self: { nodeId: string; name: string },
    /** The parent this node reports to (null: none, or not joined yet). */
    private readonly parentId: () => string | null,
    private readonly now: () => number,
  ) {}

  #stale(reportedAt: number, intervalMs: number, now: number): boolean {
    return isStale(now - reportedAt, intervalMs);
  }

  /** This node's live summary and every node's below it: `{summary, nodes}`. */
  async tree() {
    const now = this.now();
    const own = await this.reports.summary({});
    const nodes: { id: string; name: string; parentId: string | null; summary: Summary; reportedAt: string; stale: boolean; self: boolean }[] = [
      { id: this.self.nodeId, name: this.self.name, parentId: this.parentId(), summary: own, reportedAt: iso(now)!, stale: false, self: true },
    ];
    const rows = await this.reader.all<{ node_id: string; name: string; parent_id: string; reported_at: number; interval_ms: number; s: string }>(
      sql`SELECT node_id, name, parent_id, reported_at, interval_ms, json_extract(summary, '$.summary') AS s FROM node_reports ORDER BY name, node_id`,
    );
    for (const r of rows)
      nodes.push({
        id: r.node_id,
        name: r.name,
        parentId: r.parent_id,
        summary: JSON.parse(r.s) as Summary,
        reportedAt: iso(Number(r.reported_at))!,
        stale: this.#stale(Number(r.reported_at), Number(r.interval_ms), now),
        self: false,
      });
    return { summary: sumSummaries(nodes.map((n) => n.summary)), nodes };
  }

  /**
   * Per update, over this node and every node below (stale ones by their last
   * report), most required first: the counts each node reported, added up in SQL
   * (bounded by the catalog, whatever the number of nodes).
   */
  async treeUpdates(page: { limit: number; cursor?: string | undefined }) {
    const after = decode(page.cursor);
    const keyset = after ? sql` AND (x.required < ${after[0]} OR (x.required = ${after[0]} AND x.id > ${after[1]}))` : sql``;
    const rows = await this.reader.all<UpdateRow & { nodes: number }>(sql`
      SELECT x.*, u.kb, u.title, u.product, u.severity, u.classification, u.release_date FROM (
        SELECT t.id, sum(t.installed) AS installed, sum(t.superseded) AS superseded, sum(t.required) AS required, sum(t.unknown) AS unknown, sum(t.required > 0) AS nodes FROM (
          SELECT update_id AS id, installed, superseded, required, unknown FROM update_compliance
          UNION ALL
          SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'), json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'), json_extract(j.value, '$[4]')
          FROM node_reports n, json_each(n.summary, '$.updates') j) t
        GROUP BY t.id) x LEFT JOIN updates u ON u.id = x.id
      WHERE 1 = 1${keyset} ORDER BY x.required DESC, x.id LIMIT ${page.limit + 1}`);
    return keysetPage(
      rows,
      page.limit,
      (r) => ({ ...updateItem(r), nodesRequiring: Number(r.nodes) }),
      (r) => encode([Number(r.required), r.id]),
    );
  }

  /** The nodes below this one: who they are and how fresh (for the hierarchy). */
  async subtree() {
    const now = this.now();
    const rows = await this.reader.all<{ node_id: string; name: string; parent_id: string; via: string; reported_at: number; interval_ms: number }>(
      sql`SELECT node_id, name, parent_id, via, reported_at, interval_ms FROM node_reports ORDER BY name, node_id`,
    );
    return rows.map((r) => ({
      id: r.node_id,
      name: r.name,
      parentId: r.parent_id,
      via: r.via,
      reportedAt: iso(Number(r.reported_at))!,
      stale: this.#stale(Number(r.reported_at), Number(r.interval_ms), now),
    }));
  }

  /** Every node below: its languages and catalog freshness times as last reported, and whether that is stale. */
  async freshness() {
    const now = this.now();
    const rows = await this.reader.all<{ node_id: string; name: string; reported_at: number; interval_ms: number; l: string | null; f: string | null }>(
      sql`SELECT node_id, name, reported_at, interval_ms, json_extract(summary, '$.languages') AS l, json_extract(summary, '$.freshness') AS f FROM node_reports ORDER BY name, node_id`,
    );
    return rows.map((r) => ({
      id: r.node_id,
      name: r.name,
      stale: this.#stale(Number(r.reported_at), Number(r.interval_ms), now),
      languages: r.l ? (JSON.parse(r.l) as string[]) : null,
      freshness: r.f ? (JSON.parse(r.f) as ReleaseTimes[]) : null,
    }));
  }

  /** A policy's delivery totals on this node and on every node below that has it. */
  async delivery(policyId: string, own: Record<string, number>) {
    const now = this.now();
    const nodes: { id: string; name: string; totals: Record<string, number>; reportedAt: string; stale: boolean; self: boolean }[] = [
      { id: this.self.nodeId, name: this.self.name, totals: own, reportedAt: iso(now)!, stale: false, self: true },
    ];
    const path = `$.policies."${policyId.replace(/["\\]/g, '')}".totals`;
    const rows = await this.reader.all<{ node_id: string; name: string; reported_at: number; interval_ms: number; t: string | null }>(
      sql`SELECT node_id, name, reported_at, interval_ms, json_extract(summary, ${path}) AS t FROM node_reports ORDER BY name, node_id`,
    );
    for (const r of rows) {
      if (r.t === null) continue;
      nodes.push({
        id: r.node_id,
        name: r.name,
        totals: JSON.parse(r.t) as Record<string, number>,
        reportedAt: iso(Number(r.reported_at))!,
        stale: this.#stale(Number(r.reported_at), Number(r.interval_ms), now),
        self: false,
      });
    }
    const totals: Record<string, number> = {};
    for (const n of nodes) for (const [k, v] of Object.entries(n.totals)) totals[k] = (totals[k] ?? 0) + v;
    return { totals, nodes };
  }
}
