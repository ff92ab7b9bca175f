import { randomUUID } from 'node:crypto';
import type { z } from 'zod';
import { SQLiteAsyncDialect } from 'drizzle-orm/sqlite-core';
import type { SqlConn, Write } from '../db/exec.js';
import { isoTime as iso, keysetPage, placeholders } from '../db/sql.js';
import type { Logger } from '../lib/log.js';
import { AppError } from '../lib/errors.js';
import { conditionSql, type Computers, type Condition } from '../assessment/queries.js';
import type { InstallationOverride } from './installation.js';
import type { Delivery, Targets } from './engine.js';
import { policyDeleteLogWrite, policyLogWrite, type SharedTargets } from './replication.js';
import { MAX_POLICY_UPDATES, type fromRequiredSchema, type PolicyCreate, type PolicyPatch } from './policy-schemas.js';
import type { PolicyDeliveries } from './policy-delivery.js';

/** This node as the origin of its policies, and how its subtree is told of a change. */
export interface PolicyPublisher {
  nodeId: string;
  name: string;
  notify(): void;
}

/**
 * Software update policies: which updates, to which computers, from when, by when,
 * with which installation settings. Every change is one transaction with its
 * history entry; the delivery engine is told afterwards and refreshes the targets.
 */

interface Row {
  id: string;
  name: string;
  description: string | null;
  enabled: number;
  start_at: number;
  deadline_at: number | null;
  targets: string;
  installation: string | null;
  follow_supersedence: number;
  origin: string;
  origin_name: string;
  shared_targets: string;
  revision: number;
  created_at: number;
  created_by: string | null;
  updated_at: number;
}

const dialect = new SQLiteAsyncDialect();

export class Policies {
  constructor(
    private readonly conn: SqlConn,
    private readonly computers: Computers,
    private readonly delivery: Delivery,
    private readonly staleBefore: () => Promise<number>,
    private readonly logger: Logger,
    private readonly publisher: PolicyPublisher,
    private readonly deliveries: PolicyDeliveries,
  ) {}

  /**
   * The targets the subtree receives: filters resolved to their conditions, so each
   * site matches its own computers. Computer ids are this node's own and stay here;
   * a condition on a custom severity (whose ids are per node) is not carried down.
   */
  async #shared(t: Targets): Promise<SharedTargets> {
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

  /** A replicated policy is changed at its origin only: 409 naming it. */
  #local(r: Row): void {
    if (r.origin)
      throw new AppError(
        'conflict',
        `policy "${r.name}" is replicated from ${r.origin_name || r.origin} (${r.origin}) and is read-only here; change it at its origin`,
        {
          origin: { id: r.origin, name: r.origin_name },
        },
      );
  }

  /**
   * Logs this node's own policies that were never published (created before
   * policies replicated), so that the subtree receives them.
   */
  async publishUnshared(now = Date.now()): Promise<number> {
    const rows = await this.conn.all<Row>("SELECT * FROM policies WHERE origin = '' AND shared_targets = ''", []);
    for (const r of rows) {
      const shared = JSON.stringify(await this.#shared(JSON.parse(r.targets) as Targets));
      await this.conn.write(
        [["UPDATE policies SET shared_targets = ? WHERE id = ? AND shared_targets = ''", [shared, r.id]], policyLogWrite(r.id, this.publisher, now)],
        { guard: 0 },
      );
    }
    if (rows.length) this.publisher.notify();
    return rows.length;
  }

  #view(r: Row, updates: string[]) {
    return {
      id: r.id,
      name: r.name,
      description: r.description,
      enabled: Boolean(r.enabled),
      startAt: iso(r.start_at)!,
      deadline: iso(r.deadline_at),
      targets: JSON.parse(r.targets) as Targets,
      installation: r.installation ? (JSON.parse(r.installation) as InstallationOverride) : null,
      followSupersedence: Boolean(r.follow_supersedence),
      origin: r.origin || null,
      originName: r.origin ? r.origin_name : null,
      readOnly: Boolean(r.origin),
      revision: Number(r.revision),
      createdAt: iso(r.created_at)!,
      createdBy: r.created_by,
      updatedAt: iso(r.updated_at)!,
      updates,
    };
  }

  async #row(id: string): Promise<Row> {
    const r = await this.conn.get<Row>('SELECT * FROM policies WHERE id = ?', [id]);
    if (!r) throw new AppError('not-found', `no policy ${id}`);
    return r;
  }

  async #updatesOf(id: string): Promise<string[]> {
    return (await this.conn.all<{ update_id: string }>('SELECT update_id FROM policy_updates WHERE policy_id = ? ORDER BY update_id', [id])).map(
      (r) => r.update_id,
    );
  }

  async get(id: string) {
    const r = await this.#row(id);
    return { ...this.#view(r, await this.#updatesOf(id)), delivery: await this.totals(id) };
  }

  async list(o: { after: string; limit: number }) {
    const rows = await this.conn.all<Row & { n: number }>(
      'SELECT p.*, (SELECT count(*) FROM policy_updates pu WHERE pu.policy_id = p.id) AS n FROM policies p WHERE p.name > ? ORDER BY p.name LIMIT ?',
      [o.after, o.limit + 1],
    );
    const page = keysetPage(
      rows,
      o.limit,
      (r) => r,
      (r) => r.name,
    );
    const items = [];
    for (const r of page.items) {
      const { updates: _u, ...v } = this.#view(r, []);
      items.push({ ...v, updateCount: Number(r.n), delivery: await this.totals(r.id) });
    }
    return { items, nextCursor: page.nextCursor };
  }

  /** Live updates among `ids`; 400 naming the others. */
  async #checkUpdates(ids: string[]): Promise<void> {
    const live = new Set<string>();
    for (let i = 0; i < ids.length; i += 400) {
      const part = ids.slice(i, i + 400);
      for (const r of await this.conn.all<{ id: string }>(`SELECT id FROM updates WHERE expired = 0 AND id IN (${placeholders(part)})`, part)) live.add(r.id);
    }
    const bad = ids.filter((id) => !live.has(id));
    if (bad.length)
      throw new AppError(
        'validation-failed',
        `not live updates of this node's catalog: ${bad.slice(0, 10).join(', ')}${bad.length > 10 ? ` and ${bad.length - 10} more` : ''}`,
      );
  }

  async #checkTargets(t: Targets): Promise<void> {
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
  async #required(f: z.infer<typeof fromRequiredSchema>): Promise<string[]> {
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

  #times(startAt: number, deadline: number | null): void {
    if (deadline !== null && deadline <= startAt) throw new AppError('validation-failed', 'deadline: must be after startAt');
  }

  async create(b: PolicyCreate, by: string | null, now = Date.now()) {
    const fromReq = b.fromRequired ? await this.#required(b.fromRequired) : [];
    const updates = [...new Set([...(b.updates ?? []), ...fromReq])].sort();
    if (!updates.length) {
      throw new AppError(
        'validation-failed',
        b.fromRequired ? 'fromRequired: no computer requires such an update now; nothing to deliver' : 'updates: the policy needs at least one update',
      );
    }
    if (updates.length > MAX_POLICY_UPDATES) throw new AppError('validation-failed', `a policy has at most ${MAX_POLICY_UPDATES} updates`);
    await this.#checkUpdates(b.updates ?? []);
    const targets: Targets = b.targets ?? (b.fromRequired?.filter ? { filters: [b.fromRequired.filter] } : { all: true });
    await this.#checkTargets(targets);
    const startAt = b.startAt ? Date.parse(b.startAt) : now;
    const deadline = b.deadline ? Date.parse(b.deadline) : null;
    this.#times(startAt, deadline);
    const shared = await this.#shared(targets);
    const id = randomUUID();
    const w: Write[] = [
      [
        `INSERT INTO policies (id, name, description, enabled, start_at, deadline_at, targets, shared_targets, installation, follow_supersedence, origin, revision, created_at, created_by, updated_at)
         SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', 1, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM policies WHERE name = ?)`,
        [
          id,
          b.name,
          b.description ?? null,
          b.enabled === false ? 0 : 1,
          startAt,
          deadline,
          JSON.stringify(targets),
          JSON.stringify(shared),
          b.installation ? JSON.stringify(b.installation) : null,
          b.followSupersedence ? 1 : 0,
          now,
          by,
          now,
          b.name,
        ],
      ],
      ...updates.map((u): Write => ['INSERT INTO policy_updates (policy_id, update_id, added_at) VALUES (?, ?, ?)', [id, u, now]]),
      [
        'INSERT INTO policy_history (policy_id, at, by, action, detail) VALUES (?, ?, ?, ?, ?)',
        [id, now, by, 'created', JSON.stringify({ updates, targets, fromRequired: b.fromRequired ?? null })],
      ],
      policyLogWrite(id, this.publisher, now),
    ];
    const [inserted] = await this.conn.write(w, { guard: 0 });
    if (!inserted) throw new AppError('conflict', `a policy named "${b.name}" exists`);
    this.delivery.policyChanged(id);
    this.publisher.notify();
    return this.get(id);
  }

  async update(id: string, b: PolicyPatch, by: string | null, now = Date.now()) {
    const r = await this.#row(id);
    this.#local(r);
    const before = this.#view(r, await this.#updatesOf(id));
    let updates = b.updates ? [...new Set(b.updates)] : before.updates;
    if (b.addUpdates) updates = [...new Set([...updates, ...b.addUpdates])];
    if (b.removeUpdates) {
      const gone = new Set(b.removeUpdates);
      updates = updates.filter((u) => !gone.has(u));
    }
    updates.sort();
    if (!updates.length) throw new AppError('validation-failed', 'updates: the policy needs at least one update');
    if (updates.length > MAX_POLICY_UPDATES) throw new AppError('validation-failed', `a policy has at most ${MAX_POLICY_UPDATES} updates`);
    const old = new Set(before.updates);
    const added = updates.filter((u) => !old.has(u));
    const kept = new Set(updates);
    const removed = before.updates.filter((u) => !kept.has(u));
    await this.#checkUpdates(added);
    if (b.targets) await this.#checkTargets(b.targets);
    const startAt = b.startAt ? Date.parse(b.startAt) : r.start_at;
    const deadline = b.deadline === undefined ? r.deadline_at : b.deadline === null ? null : Date.parse(b.deadline);
    this.#times(startAt, deadline);
    const next = {
      name: b.name ?? r.name,
      description: b.description === undefined ? r.description : b.description,
      enabled: b.enabled === undefined ? r.enabled : b.enabled ? 1 : 0,
      targets: b.targets ? JSON.stringify(b.targets) : r.targets,
      shared: b.targets ? JSON.stringify(await this.#shared(b.targets)) : r.shared_targets,
      installation: b.installation === undefined ? r.installation : b.installation ? JSON.stringify(b.installation) : null,
      follow: b.followSupersedence === undefined ? r.follow_supersedence : b.followSupersedence ? 1 : 0,
    };
    const changes: Record<string, { from: unknown; to: unknown }> = {};
    const note = (k: string, from: unknown, to: unknown) => {
      if (JSON.stringify(from) !== JSON.stringify(to)) changes[k] = { from, to };
    };
    note('name', r.name, next.name);
    note('description', r.description, next.description);
    note('enabled', Boolean(r.enabled), Boolean(next.enabled));
    note('startAt', iso(r.start_at), iso(startAt));
    note('deadline', iso(r.deadline_at), iso(deadline));
    note('targets', JSON.parse(r.targets), JSON.parse(next.targets));
    note('installation', r.installation ? JSON.parse(r.installation) : null, next.installation ? JSON.parse(next.installation) : null);
    note('followSupersedence', Boolean(r.follow_supersedence), Boolean(next.follow));
    if (added.length) changes.updatesAdded = { from: null, to: added };
    if (removed.length) changes.updatesRemoved = { from: removed, to: null };
    if (!Object.keys(changes).length) return this.get(id);
    if (next.name !== r.name && (await this.conn.get('SELECT 1 FROM policies WHERE name = ? AND id <> ?', [next.name, id])))
      throw new AppError('conflict', `a policy named "${next.name}" exists`);
    const w: Write[] = [
      [
        `UPDATE policies SET name = ?, description = ?, enabled = ?, start_at = ?, deadline_at = ?, targets = ?, shared_targets = ?, installation = ?, follow_supersedence = ?,
           revision = revision + 1, updated_at = ? WHERE id = ? AND revision = ?`,
        [next.name, next.description, next.enabled, startAt, deadline, next.targets, next.shared, next.installation, next.follow, now, id, r.revision],
      ],
      ...added.map((u): Write => ['INSERT OR IGNORE INTO policy_updates (policy_id, update_id, added_at) VALUES (?, ?, ?)', [id, u, now]]),
      ...removed.map((u): Write => ['DELETE FROM policy_updates WHERE policy_id = ? AND update_id = ?', [id, u]]),
      ['INSERT INTO policy_history (policy_id, at, by, action, detail) VALUES (?, ?, ?, ?, ?)', [id, now, by, 'updated', JSON.stringify(changes)]],
      policyLogWrite(id, this.publisher, now),
    ];
    // Targets changed: rows of computers no longer targeted that still need the update go
    // (the refresh would find them too); what was done under the old targets stays.
    const [n] = await this.conn.write(w, { guard: 0 });
    if (!n) throw new AppError('conflict', `policy ${id} changed meanwhile; read it again`);
    this.delivery.policyChanged(id);
    this.publisher.notify();
    return this.get(id);
  }

  async remove(id: string, by: string | null, now = Date.now()): Promise<void> {
    const r = await this.#row(id);
    this.#local(r);
    const [n] = await this.conn.write(
      [
        ["DELETE FROM policies WHERE id = ? AND origin = ''", [id]],
        ['DELETE FROM policy_updates WHERE policy_id = ?', [id]],
        ['INSERT INTO policy_history (policy_id, at, by, action, detail) VALUES (?, ?, ?, ?, ?)', [id, now, by, 'deleted', JSON.stringify({ name: r.name })]],
        policyDeleteLogWrite(id, now),
      ],
      { guard: 0 },
    );
    if (!n) throw new AppError('not-found', `no policy ${id}`);
    this.delivery.policyChanged(id);
    this.publisher.notify();
  }

  async history(id: string, o: { after: number; limit: number }) {
    const rows = await this.conn.all<{ id: number; at: number; by: string | null; action: string; detail: string }>(
      'SELECT id, at, by, action, detail FROM policy_history WHERE policy_id = ? AND id > ? ORDER BY id LIMIT ?',
      [id, o.after, o.limit + 1],
    );
    if (!rows.length && o.after === 0) await this.#row(id);
    return keysetPage(
      rows,
      o.limit,
      (r) => ({ id: Number(r.id), at: iso(r.at)!, by: r.by, action: r.action, detail: JSON.parse(r.detail) as unknown }),
      (r) => String(r.id),
    );
  }

  /**
   * Seed KB "revise Software Update policies after importing patch data": for each
   * policy that follows supersedence, every live update superseding one of its
   * updates (same product) is added, with a history entry, until none is left
   * (chains of cumulative updates are followed to their newest).
   */
  async reviseSupersedence(now = Date.now()): Promise<number> {
    let total = 0;
    const revised = new Set<string>();
    for (let round = 0; round < 50; round++) {
      const rows = await this.conn.all<{ policy_id: string; newer: string; older: string }>(
        `SELECT DISTINCT pu.policy_id, n.id AS newer, o.id AS older FROM policy_updates pu
         JOIN policies p ON p.id = pu.policy_id AND p.follow_supersedence = 1 AND p.origin = ''
         JOIN updates o ON o.id = pu.update_id AND o.kb IS NOT NULL
         JOIN update_supersedes s ON s.kb = o.kb
         JOIN updates n ON n.id = s.update_id AND n.product = o.product AND n.expired = 0
         WHERE NOT EXISTS (SELECT 1 FROM policy_updates x WHERE x.policy_id = pu.policy_id AND x.update_id = n.id)
         ORDER BY pu.policy_id, n.id LIMIT 5000`,
        [],
      );
      if (!rows.length) break;
      const w: Write[] = [];
      const seen = new Set<string>();
      for (const r of rows) {
        const key = `${r.policy_id}\t${r.newer}`;
        if (seen.has(key)) continue;
        seen.add(key);
        w.push(['INSERT OR IGNORE INTO policy_updates (policy_id, update_id, added_at) VALUES (?, ?, ?)', [r.policy_id, r.newer, now]]);
        w.push([
          'INSERT INTO policy_history (policy_id, at, by, action, detail) VALUES (?, ?, ?, ?, ?)',
          [r.policy_id, now, 'supersedence', 'update-superseded', JSON.stringify({ added: r.newer, supersedes: r.older })],
        ]);
        w.push(['UPDATE policies SET revision = revision + 1, updated_at = ? WHERE id = ?', [now, r.policy_id]]);
        revised.add(r.policy_id);
        total++;
      }
      for (const id of new Set(rows.map((r) => r.policy_id))) w.push(policyLogWrite(id, this.publisher, now));
      await this.conn.write(w);
    }
    for (const id of revised) this.delivery.policyChanged(id);
    if (revised.size) this.publisher.notify();
    if (total) this.logger.info({ added: total, policies: revised.size }, 'policies revised for superseding updates');
    return total;
  }

  /** Counts per delivery state of a policy's (computer, update) pairs, and its computers. */
  totals(id: string): Promise<Record<string, number>> {
    return this.deliveries.totals(id);
  }

  /** Every policy's totals (for the roll-up). */
  allTotals() {
    return this.deliveries.allTotals();
  }

  /** A policy's delivery, per computer and update, paged by (computer, update). */
  async deliveryOf(id: string, o: { state?: string | undefined; computer?: number | undefined; after: string; limit: number }) {
    await this.#row(id);
    return this.deliveries.deliveryOf(id, o);
  }
}
