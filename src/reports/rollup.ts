import { createHash } from 'node:crypto';
import { sql } from 'drizzle-orm';
import type { Orm } from '../db/index.js';
import { isoTime as iso } from '../db/sql.js';
import type { Logger } from '../lib/log.js';
import type { ReceivedNodeReport, WireNodeReport } from '../replication/protocol.js';
import type { Reports } from './reports.js';
import { ChildReports } from './child-reports.js';
import { TreeViews } from './tree.js';
import type { NodeSummary } from './summary.js';

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

/** Summaries per Report call, by bytes: well under gRPC's 4 MiB default message limit. */
const CALL_BYTES = 2 * 1024 * 1024;
/**
 * A change is reported after this long (at least 2 s, a sixth of the interval: 10 s at
 * the default 60 s), so a busy site computes its summary a few times a minute at most.
 */
const debounceMs = (intervalMs: number) => Math.max(2_000, Math.round(intervalMs / 6));

export interface RollupOptions {
  /** Writes (node_reports). */
  orm: Orm;
  /** Reads. */
  reader: Orm;
  reports: Reports;
  /** The whole-tree views (shared with catalog freshness); made here when not given. */
  views?: TreeViews;
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
  readonly #children: ChildReports;
  readonly #views: TreeViews;

  constructor(o: RollupOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#children = new ChildReports(o.orm, o.self, o.logger, this.#now, () => this.markChanged());
    this.#views = o.views ?? new TreeViews(o.reader, o.reports, o.self, o.parentId, this.#now);
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
        const whole = await Promise.all(
          [...resend]
            .map((id) => byId.get(id))
            .filter((e): e is Entry => e !== undefined)
            .map((e) => wire(e, true)),
        );
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

  /* ---------------- as a parent (child-reports.ts) ---------------- */

  /**
   * Stores what a child sent (its own summary and its subtree's) in one
   * transaction, after checking all of it: a malformed report stores nothing.
   * Returns the nodes whose summary must be sent whole.
   */
  receive(via: string, reports: readonly ReceivedNodeReport[], gone: readonly string[]): Promise<string[]> {
    return this.#children.receive(via, reports, gone);
  }

  /** A child was removed: its subtree's summaries go, here and (at the next report) above. */
  async forget(via: string): Promise<void> {
    const ids = await this.#children.forget(via);
    for (const id of ids) {
      this.#gone.add(id);
      this.#acked.delete(id);
    }
    if (ids.length) this.markChanged();
  }

  /* ---------------- the whole-tree views (tree.ts) ---------------- */

  /** This node's live summary and every node's below it: `{summary, nodes}`. */
  tree() {
    return this.#views.tree();
  }

  /** Per update, over this node and every node below, most required first. */
  treeUpdates(page: { limit: number; cursor?: string | undefined }) {
    return this.#views.treeUpdates(page);
  }

  /** The nodes below this one: who they are and how fresh (for the hierarchy). */
  subtree() {
    return this.#views.subtree();
  }

  /** Every node below: its languages and catalog freshness times as last reported, and whether that is stale. */
  freshness() {
    return this.#views.freshness();
  }

  /** A policy's delivery totals on this node and on every node below that has it. */
  delivery(policyId: string, own: Record<string, number>) {
    return this.#views.delivery(policyId, own);
  }
}
