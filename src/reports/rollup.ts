import { createHash } from 'node:crypto';
import { z } from 'zod';
import { sql } from 'drizzle-orm';
import type { Orm } from '../db/index.js';
import { isoTime as iso } from '../db/sql.js';
import type { Logger } from '../lib/log.js';
import { AppError } from '../lib/errors.js';
import type { WireNodeReport } from '../replication/protocol.js';
import { UUID } from '../replication/validate.js';
import { decode, encode, updateItem, type Reports, type UpdateRow } from './reports.js';
import { keysetPage } from '../db/sql.js';
import { releaseTimesSchema, type ReleaseTimes } from '../freshness/freshness.js';
import { SEVERITY_BUCKETS } from '../catalog/format.js';

/**
 * The compliance roll-up. Every node sends its parent its own summary (counts per
 * severity and per update, stale scans, delivery totals per policy), on an interval
 * and soon after it changes, and forwards the summaries its children sent it, each
 * stamped with when its node made it. A parent keeps the latest per node and
 * answers for its whole subtree; a node whose summary ages past three of its own
 * intervals is shown stale, with its last figures, never dropped. Only what changed
 * travels whole: an unchanged summary is sent as its digest, and the parent asks
 * again for any digest it does not have.
 */

const count = z.number().int().min(0);
export const summarySchema = z.looseObject({
  computers: count,
  compliant: count,
  compliantPercent: z.number(),
  required: count,
  requiredBySeverity: z.record(z.string().max(40), count),
  urgentComputers: count,
  stale: count,
});
export type Summary = z.infer<typeof summarySchema>;

const totalsSchema = z.record(z.string().max(40), count);
export const nodeSummarySchema = z.looseObject({
  summary: summarySchema,
  /** [update id, installed, superseded, required, unknown], for updates with any. */
  updates: z.array(z.tuple([z.string().min(1).max(100), count, count, count, count])).max(500_000),
  /** Delivery totals of each policy the node has (its own and replicated ones). */
  policies: z.record(z.string().min(1).max(100), z.object({ name: z.string().max(200), origin: z.string().max(100).nullable(), totals: totalsSchema })),
  /** The languages whose data the node holds (its own and its subtree's). */
  languages: z.array(z.string().max(40)).max(200).optional(),
  /** When each of the newest releases reached the node, per class (catalog freshness). */
  freshness: releaseTimesSchema.optional(),
});
export type NodeSummary = z.infer<typeof nodeSummarySchema>;

const NODE_ID = UUID;
/** Summaries per Report call, by bytes: well under gRPC's 4 MiB default message limit. */
const CALL_BYTES = 2 * 1024 * 1024;
/**
 * A change is reported after this long (at least 2 s, a sixth of the interval: 10 s at
 * the default 60 s), so a busy site computes its summary a few times a minute at most.
 */
const debounceMs = (intervalMs: number) => Math.max(2_000, Math.round(intervalMs / 6));

/** A node's summary is stale once it is older than three of its intervals (and a little). */
export const isStale = (ageMs: number, intervalMs: number) => ageMs > 3 * intervalMs + 2_000;

/** The sum of summaries: counts add up, the percentage is recomputed. */
export function sumSummaries(list: readonly Summary[]): Summary {
  const bySeverity: Record<string, number> = Object.fromEntries(SEVERITY_BUCKETS.map((s) => [s, 0]));
  const out = { computers: 0, compliant: 0, compliantPercent: 100, required: 0, requiredBySeverity: bySeverity, urgentComputers: 0, stale: 0 };
  for (const s of list) {
    out.computers += s.computers;
    out.compliant += s.compliant;
    out.required += s.required;
    out.urgentComputers += s.urgentComputers;
    out.stale += s.stale;
    for (const [k, v] of Object.entries(s.requiredBySeverity)) bySeverity[k] = (bySeverity[k] ?? 0) + v;
  }
  out.compliantPercent = out.computers === 0 ? 100 : Math.round((1000 * out.compliant) / out.computers) / 10;
  return out;
}

export interface RollupOptions {
  /** Writes (node_reports). */
  orm: Orm;
  /** Reads. */
  reader: Orm;
  reports: Reports;
  /** Delivery totals of every policy on this node. */
  policyTotals: () => Promise<NodeSummary['policies']>;
  self: { nodeId: string; name: string };
  /** The parent this node reports to (null: none, or not joined yet). */
  parentId: () => string | null;
  intervalMs: number;
  /** Sends one Report call upstream; resolves with the nodes to send again whole. Null on a root. */
  send: ((reports: WireNodeReport[], gone: string[]) => Promise<string[]>) | null;
  /** More of this node's own summary (its languages, its catalog freshness times). */
  extra?: () => Promise<Record<string, unknown>>;
  logger: Logger;
  now?: () => number;
}

interface Entry {
  id: string;
  name: string;
  parentId: string;
  ageMs: number;
  intervalMs: number;
  digest: string;
  /** The summary JSON, read only when it must travel. */
  body: () => Promise<string>;
}

export class Rollup {
  readonly #o: RollupOptions;
  readonly #now: () => number;
  /** What the parent is known to hold: node id -> digest. */
  readonly #acked = new Map<string, string>();
  /** Nodes removed below this one, to be removed above it too. */
  readonly #gone = new Set<string>();
  #timer: NodeJS.Timeout | null = null;
  #soon: NodeJS.Timeout | null = null;
  #running: Promise<void> | null = null;
  #again = false;
  #stopped = false;
  #lastError: string | null = null;
  #lastSentAt: number | null = null;

  constructor(o: RollupOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
  }

  start(): void {
    if (!this.#o.send) return;
    this.#timer = setInterval(() => this.#cycle(), this.#o.intervalMs);
    this.#timer.unref();
    this.markChanged();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#soon) clearTimeout(this.#soon);
    await this.#running;
  }

  /** Something the summary counts changed: report soon (debounced), not only at the interval. */
  markChanged(): void {
    if (!this.#o.send || this.#soon || this.#stopped) return;
    this.#soon = setTimeout(() => {
      this.#soon = null;
      this.#cycle();
    }, debounceMs(this.#o.intervalMs));
    this.#soon.unref();
  }

  status() {
    return { intervalSeconds: this.#o.intervalMs / 1000, lastSentAt: iso(this.#lastSentAt), lastError: this.#lastError };
  }

  /** This node's own summary, as it is sent. */
  async own(): Promise<{ json: string; digest: string; value: NodeSummary }> {
    const summary = await this.#o.reports.summary({});
    const rows = await this.#o.reader.all<{ update_id: string; installed: number; superseded: number; required: number; unknown: number }>(
      sql`SELECT update_id, installed, superseded, required, unknown FROM update_compliance WHERE installed + superseded + required + unknown > 0 ORDER BY update_id`,
    );
    const value: NodeSummary = {
      summary,
      updates: rows.map((r) => [r.update_id, Number(r.installed), Number(r.superseded), Number(r.required), Number(r.unknown)]),
      policies: await this.#o.policyTotals(),
      ...(this.#o.extra ? await this.#o.extra() : {}),
    };
    const json = JSON.stringify(value);
    return { json, digest: createHash('sha256').update(json).digest('hex'), value };
  }

  /** One report cycle; a cycle asked for while one runs follows it. */
  #cycle(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.#send()
      .then(() => {
        this.#lastError = null;
        this.#lastSentAt = this.#now();
      })
      .catch((err: { details?: string; message?: string }) => {
        const msg = err.details ?? err.message ?? String(err);
        if (msg !== this.#lastError) this.#o.logger.warn({ err: msg }, 'compliance report upstream failed; retrying at the next interval');
        this.#lastError = msg;
      })
      .finally(() => {
        this.#running = null;
        if (this.#again) {
          this.#again = false;
          this.markChanged();
        }
      });
  }

  async #send(): Promise<void> {
    const send = this.#o.send;
    const parentId = this.#o.parentId();
    if (!send || !parentId) return;
    const now = this.#now();
    const own = await this.own();
    const entries: Entry[] = [
      { id: this.#o.self.nodeId, name: this.#o.self.name, parentId, ageMs: 0, intervalMs: this.#o.intervalMs, digest: own.digest, body: async () => own.json },
    ];
    const rows = await this.#o.reader.all<{ node_id: string; name: string; parent_id: string; reported_at: number; interval_ms: number; digest: string }>(
      sql`SELECT node_id, name, parent_id, reported_at, interval_ms, digest FROM node_reports ORDER BY node_id`,
    );
    for (const r of rows)
      entries.push({
        id: r.node_id,
        name: r.name,
        parentId: r.parent_id,
        ageMs: Math.max(0, now - Number(r.reported_at)),
        intervalMs: Number(r.interval_ms),
        digest: r.digest,
        body: async () => (await this.#o.reader.all<{ summary: string }>(sql`SELECT summary FROM node_reports WHERE node_id = ${r.node_id}`))[0]?.summary ?? '',
      });
    const wire = async (e: Entry, whole: boolean): Promise<WireNodeReport> => ({
      node_id: e.id,
      name: e.name,
      parent_id: e.parentId,
      age_ms: e.ageMs,
      interval_ms: e.intervalMs,
      digest: e.digest,
      summary: whole ? Buffer.from(await e.body()) : Buffer.alloc(0),
    });
    const gone = [...this.#gone];
    const byId = new Map(entries.map((e) => [e.id, e]));
    let chunk: WireNodeReport[] = [];
    let bytes = 0;
    const flush = async (): Promise<void> => {
      if (!chunk.length && !gone.length) return;
      const sent = chunk;
      chunk = [];
      bytes = 0;
      const resend = new Set(await send(sent, gone.splice(0)));
      for (const r of sent) if (!resend.has(r.node_id)) this.#acked.set(r.node_id, r.digest);
      if (resend.size) {
        // The parent lacks these digests (it was restored, or lost a row): whole, once.
        const whole = await Promise.all([...resend].map((id) => byId.get(id)).filter((e): e is Entry => e !== undefined).map((e) => wire(e, true)));
        const again = new Set(await send(whole, []));
        for (const r of whole) if (!again.has(r.node_id)) this.#acked.set(r.node_id, r.digest);
      }
    };
    for (const e of entries) {
      const r = await wire(e, this.#acked.get(e.id) !== e.digest);
      if (bytes + r.summary.length > CALL_BYTES && chunk.length) await flush();
      chunk.push(r);
      bytes += r.summary.length + 200;
    }
    await flush();
    for (const id of gone) this.#gone.delete(id);
  }

  /* ---------------- as a parent ---------------- */

  /**
   * Stores what a child sent (its own summary and its subtree's) in one
   * transaction, after checking all of it: a malformed report stores nothing.
   * Returns the nodes whose summary must be sent whole.
   */
  async receive(via: string, reports: readonly WireNodeReport[], gone: readonly string[]): Promise<string[]> {
    const now = this.#now();
    const checked: { r: WireNodeReport; summary: string | null }[] = [];
    for (const r of reports) {
      if (!NODE_ID.test(r.node_id) || !NODE_ID.test(r.parent_id)) throw new AppError('validation-failed', `report: node ids must be UUIDs (got ${JSON.stringify(r.node_id).slice(0, 60)})`);
      if (!/^[0-9a-f]{64}$/.test(r.digest)) throw new AppError('validation-failed', `report ${r.node_id}: digest must be 64 hex digits`);
      const interval = Number(r.interval_ms);
      if (!Number.isInteger(interval) || interval < 100) throw new AppError('validation-failed', `report ${r.node_id}: interval_ms must be at least 100`);
      if (r.node_id === this.#o.self.nodeId) continue; // this node's own, come back round: never stored
      if (!r.summary.length) {
        checked.push({ r, summary: null });
        continue;
      }
      if (createHash('sha256').update(r.summary).digest('hex') !== r.digest) throw new AppError('validation-failed', `report ${r.node_id}: the summary does not match its digest`);
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
    const stored = new Map((await this.#o.orm.all<{ node_id: string; via: string }>(sql`SELECT node_id, via FROM node_reports`)).map((r) => [r.node_id, r.via]));
    const direct = new Set((await this.#o.orm.all<{ id: string }>(sql`SELECT id FROM children WHERE removed_at IS NULL`)).map((r) => r.id));
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
    const allowed = (r: WireNodeReport) => {
      const other = stored.get(r.node_id);
      return mine.has(r.node_id) && !(r.node_id !== via && direct.has(r.node_id)) && !(other !== undefined && other !== via && direct.has(other));
    };
    const dropped = checked.filter(({ r }) => !allowed(r)).map(({ r }) => r.node_id);
    if (dropped.length) {
      this.#o.logger.warn({ child: via, dropped: dropped.slice(0, 10), count: dropped.length }, 'a child reported for nodes outside its subtree; those reports were dropped');
      for (let i = checked.length - 1; i >= 0; i--) if (!allowed(checked[i]!.r)) checked.splice(i, 1);
    }
    const resend: string[] = [];
    await this.#o.orm.transaction(async (tx) => {
      for (const id of gone) await tx.run(sql`DELETE FROM node_reports WHERE node_id = ${id} AND via = ${via}`);
      for (const { r, summary } of checked) {
        const reportedAt = now - Math.max(0, Number(r.age_ms));
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
    if (checked.length || gone.length) this.markChanged();
    return resend;
  }

  /** A child was removed: its subtree's summaries go, here and (at the next report) above. */
  async forget(via: string): Promise<void> {
    const rows = await this.#o.orm.all<{ node_id: string }>(sql`DELETE FROM node_reports WHERE via = ${via} RETURNING node_id`);
    for (const r of rows) {
      this.#gone.add(r.node_id);
      this.#acked.delete(r.node_id);
    }
    if (rows.length) this.markChanged();
  }

  /* ---------------- the whole-tree views ---------------- */

  #stale(reportedAt: number, intervalMs: number, now: number): boolean {
    return isStale(now - reportedAt, intervalMs);
  }

  /** This node's live summary and every node's below it: `{summary, nodes}`. */
  async tree() {
    const now = this.#now();
    const own = await this.#o.reports.summary({});
    const nodes: { id: string; name: string; parentId: string | null; summary: Summary; reportedAt: string; stale: boolean; self: boolean }[] = [
      { id: this.#o.self.nodeId, name: this.#o.self.name, parentId: this.#o.parentId(), summary: own, reportedAt: iso(now)!, stale: false, self: true },
    ];
    const rows = await this.#o.reader.all<{ node_id: string; name: string; parent_id: string; reported_at: number; interval_ms: number; s: string }>(
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
    const rows = await this.#o.reader.all<UpdateRow & { nodes: number }>(sql`
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
    const now = this.#now();
    const rows = await this.#o.reader.all<{ node_id: string; name: string; parent_id: string; via: string; reported_at: number; interval_ms: number }>(
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
    const now = this.#now();
    const rows = await this.#o.reader.all<{ node_id: string; name: string; reported_at: number; interval_ms: number; l: string | null; f: string | null }>(
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
    const now = this.#now();
    const nodes: { id: string; name: string; totals: Record<string, number>; reportedAt: string; stale: boolean; self: boolean }[] = [
      { id: this.#o.self.nodeId, name: this.#o.self.name, totals: own, reportedAt: iso(now)!, stale: false, self: true },
    ];
    const path = `$.policies."${policyId.replace(/["\\]/g, '')}".totals`;
    const rows = await this.#o.reader.all<{ node_id: string; name: string; reported_at: number; interval_ms: number; t: string | null }>(
      sql`SELECT node_id, name, reported_at, interval_ms, json_extract(summary, ${path}) AS t FROM node_reports ORDER BY name, node_id`,
    );
    for (const r of rows) {
      if (r.t === null) continue;
      nodes.push({ id: r.node_id, name: r.name, totals: JSON.parse(r.t) as Record<string, number>, reportedAt: iso(Number(r.reported_at))!, stale: this.#stale(Number(r.reported_at), Number(r.interval_ms), now), self: false });
    }
    const totals: Record<string, number> = {};
    for (const n of nodes) for (const [k, v] of Object.entries(n.totals)) totals[k] = (totals[k] ?? 0) + v;
    return { totals, nodes };
  }
}
