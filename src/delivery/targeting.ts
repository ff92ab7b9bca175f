import PQueue from 'p-queue';
import { SQLiteAsyncDialect } from 'drizzle-orm/sqlite-core';
import type { SqlConn, Write } from '../db/exec.js';
import { placeholders } from '../db/sql.js';
import type { Logger } from '../lib/log.js';
import { AppError } from '../lib/errors.js';
import { facts, type Inventory } from '../assessment/evaluate.js';
import { CatalogIndex, type Entry } from '../assessment/catalog-index.js';
import { conditionSql, type Computers, type Condition } from '../assessment/queries.js';
import type { AssignmentAnswers } from './assignments.js';

/**
 * Which computers each policy delivers which updates to, kept current by one
 * writer (a queue of one): after a computer is assessed its rows are refreshed
 * against every enabled policy; after a policy changes, the policy's rows against
 * every computer, a page at a time. A row is added when the computer matches the
 * policy's targets and requires the update; when the update stops being required
 * the row records why (installed, superseded, not applicable) and stays, so the
 * delivery report keeps what was done.
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

const PAGE = 500;
const dialect = new SQLiteAsyncDialect();

export class Targeting {
  readonly #queue = new PQueue({ concurrency: 1 });
  #pendingComputers = new Set<number>();
  #pendingPolicies = new Set<string>();
  #scheduled = false;
  #startTimer: NodeJS.Timeout | null = null;
  #stopped = false;

  constructor(
    private readonly conn: SqlConn,
    private readonly computers: Computers,
    private readonly index: CatalogIndex,
    private readonly staleBefore: () => Promise<number>,
    private readonly logger: Logger,
    private readonly answers: AssignmentAnswers,
    /** Delivery states changed (targets refreshed). */
    private readonly statusChanged: () => void,
  ) {}

  async start(): Promise<void> {
    await this.#armStartTimer();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#startTimer) clearTimeout(this.#startTimer);
    this.#queue.clear();
    await this.#queue.onIdle();
  }

  idle(): Promise<void> {
    return this.#queue.onIdle();
  }

  /** Computers were (re)assessed: refresh their rows against every enabled policy. */
  computersAssessed(ids: Iterable<number>): void {
    for (const id of ids) this.#pendingComputers.add(id);
    this.#schedule();
  }

  /** A policy was created or changed: refresh it against every computer. */
  policyChanged(id: string): void {
    this.#pendingPolicies.add(id);
    this.#schedule();
    void this.#armStartTimer();
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
    await this.conn.write([
      ['DELETE FROM delivery_targets WHERE policy_id = ? AND update_id NOT IN (SELECT update_id FROM policy_updates WHERE policy_id = ?)', [id, id]],
    ]);
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
          ? (await this.conn.all<{ id: number }>(`SELECT id FROM computers WHERE id IN (${inIds}) AND (${target.sql})`, [...ids, ...target.params])).map((r) =>
              Number(r.id),
            )
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
        if (existing.has(key))
          w.push([
            "UPDATE delivery_targets SET applicable = 'required', since = ? WHERE policy_id = ? AND computer_id = ? AND update_id = ?",
            [now, p.id, cid, u],
          ]);
        else
          w.push(["INSERT INTO delivery_targets (policy_id, computer_id, update_id, applicable, since) VALUES (?, ?, ?, 'required', ?)", [p.id, cid, u, now]]);
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
            w.push([
              "UPDATE delivery_targets SET applicable = 'unknown', since = ? WHERE policy_id = ? AND computer_id = ? AND update_id = ?",
              [now, p.id, cid, u],
            ]);
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
        w.push([
          'UPDATE delivery_targets SET applicable = ?, since = ? WHERE policy_id = ? AND computer_id = ? AND update_id = ?',
          [s, now, r.policyId, cid, r.updateId],
        ]);
      }
      touched.add(cid);
    }
    if (w.length) {
      await this.conn.write(w);
      this.statusChanged();
    }
    for (const c of touched) this.answers.drop(c);
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
      this.answers.invalidateAll();
      void this.#armStartTimer();
    }, delay);
    this.#startTimer.unref();
  }
}
