import type { z } from 'zod';
import { updateIdsIn } from '../catalog/read.js';
import { SQLiteAsyncDialect } from 'drizzle-orm/sqlite-core';
import type { SqlConn } from '../db/exec.js';
import { placeholders } from '../db/sql.js';
import { AppError } from '../lib/errors.js';
import { conditionSql, type Computers, type Condition } from '../assessment/queries.js';
import type { Targets } from './engine.js';
import type { SharedTargets } from './replication.js';
import { MAX_POLICY_UPDATES, type fromRequiredSchema } from './policy-schemas.js';

const dialect = new SQLiteAsyncDialect();

/**
 * What a policy write is checked against and resolved to: live updates, existing
 * targets, the updates a fromRequired selects, the targets the subtree receives.
 */
export class PolicyInput {
  constructor(
    private readonly conn: SqlConn,
    private readonly computers: Computers,
    private readonly staleBefore: () => Promise<number>,
  ) {}

  /**
   * The targets the subtree receives: filters resolved to their conditions, so each
   * site matches its own computers. Computer ids are this node's own and stay here;
   * a condition on a custom severity (whose ids are per node) is not carried down.
   */
  async shared(t: Targets): Promise<SharedTargets> {
    if (t.all) return { all: true };
    const conditions = [...(t.conditions ?? [])];
    for (const f of t.filters ?? []) {
      try {
        conditions.push((await this.computers.condition(f)).condition);
      } catch (err) {
        if (!(err instanceof AppError && err.code === 'not-found')) throw err;
      }
    }
    const portable = conditions.filter((c) => c.customSeverity === undefined);
    return portable.length ? { conditions: portable } : {};
  }

  /** Live updates among `ids`; 400 naming the others. */
  async checkUpdates(ids: string[]): Promise<void> {
    const live = await updateIdsIn(this.conn, ids, { live: true });
    const bad = ids.filter((id) => !live.has(id));
    if (bad.length)
      throw new AppError(
        'validation-failed',
        `not live updates of this node's catalog: ${bad.slice(0, 10).join(', ')}${bad.length > 10 ? ` and ${bad.length - 10} more` : ''}`,
      );
  }

  async checkTargets(t: Targets): Promise<void> {
    for (const f of t.filters ?? []) {
      try {
        await this.computers.condition(f);
      } catch (err) {
        if (err instanceof AppError && err.code === 'not-found') throw new AppError('validation-failed', `targets: no filter ${f}`);
        throw err;
      }
    }
    const ids = [...new Set(t.computers ?? [])];
    for (let i = 0; i < ids.length; i += 400) {
      const part = ids.slice(i, i + 400);
      const found = new Set(
        (await this.conn.all<{ id: number }>(`SELECT id FROM computers WHERE id IN (${placeholders(part)})`, part)).map((r) => Number(r.id)),
      );
      const bad = part.filter((id) => !found.has(id));
      if (bad.length) throw new AppError('validation-failed', `targets: no computers ${bad.slice(0, 10).join(', ')}`);
    }
  }

  /** The updates computers (of a filter) require now, of a severity: "every required critical update". */
  async required(f: z.infer<typeof fromRequiredSchema>): Promise<string[]> {
    const where: string[] = ["cu.state = 'required'", 'u.expired = 0'];
    const params: unknown[] = [];
    if (f.severity) {
      where.push('u.severity = ?');
      params.push(f.severity);
    }
    if (f.customSeverity !== undefined) {
      where.push('u.custom_severity_id = ?');
      params.push(f.customSeverity);
    }
    if (f.filter) {
      let cond: Condition;
      try {
        cond = (await this.computers.condition(f.filter)).condition;
      } catch (err) {
        if (err instanceof AppError && err.code === 'not-found') throw new AppError('validation-failed', `fromRequired: no filter ${f.filter}`);
        throw err;
      }
      const q = dialect.sqlToQuery(conditionSql(cond, await this.staleBefore()));
      where.push(`(${q.sql})`);
      params.push(...q.params);
    }
    const rows = await this.conn.all<{ id: string }>(
      `SELECT DISTINCT cu.update_id AS id FROM computer_updates cu JOIN updates u ON u.id = cu.update_id JOIN computers ON computers.id = cu.computer_id
       WHERE ${where.join(' AND ')} ORDER BY cu.update_id LIMIT ${MAX_POLICY_UPDATES + 1}`,
      params,
    );
    if (rows.length > MAX_POLICY_UPDATES)
      throw new AppError('validation-failed', `fromRequired selects more than ${MAX_POLICY_UPDATES} updates; narrow it with a filter or severity`);
    return rows.map((r) => r.id);
  }

  times(startAt: number, deadline: number | null): void {
    if (deadline !== null && deadline <= startAt) throw new AppError('validation-failed', 'deadline: must be after startAt');
  }
}
