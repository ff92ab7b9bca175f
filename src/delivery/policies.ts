import { randomUUID } from 'node:crypto';
import type { SqlConn, Write } from '../db/exec.js';
import { isoTime as iso } from '../db/sql.js';
import { AppError } from '../lib/errors.js';
import type { Delivery, Targets } from './engine.js';
import { policyDeleteLogWrite, policyLogWrite } from './replication.js';
import { MAX_POLICY_UPDATES, type PolicyCreate, type PolicyPatch } from './policy-schemas.js';
import type { PolicyDeliveries } from './policy-delivery.js';
import { PolicyReads, type StoredPolicy } from './policy-reads.js';
import type { PolicyInput } from './policy-input.js';

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
 * Reading them is PolicyReads' job; following supersedence, PolicySupersedence's.
 */
export class Policies extends PolicyReads {
  constructor(
    conn: SqlConn,
    deliveries: PolicyDeliveries,
    private readonly input: PolicyInput,
    private readonly delivery: Delivery,
    private readonly publisher: PolicyPublisher,
  ) {
    super(conn, deliveries);
  }

  /** A replicated policy is changed at its origin only: 409 naming it. */
  #local(r: StoredPolicy): void {
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
    const rows = await this.conn.all<StoredPolicy>("SELECT * FROM policies WHERE origin = '' AND shared_targets = ''", []);
    for (const r of rows) {
      const shared = JSON.stringify(await this.input.shared(JSON.parse(r.targets) as Targets));
      await this.conn.write(
        [["UPDATE policies SET shared_targets = ? WHERE id = ? AND shared_targets = ''", [shared, r.id]], policyLogWrite(r.id, this.publisher, now)],
        { guard: 0 },
      );
    }
    if (rows.length) this.publisher.notify();
    return rows.length;
  }

  async create(b: PolicyCreate, by: string | null, now = Date.now()) {
    const fromReq = b.fromRequired ? await this.input.required(b.fromRequired) : [];
    const updates = [...new Set([...(b.updates ?? []), ...fromReq])].sort();
    if (!updates.length) {
      throw new AppError(
        'validation-failed',
        b.fromRequired ? 'fromRequired: no computer requires such an update now; nothing to deliver' : 'updates: the policy needs at least one update',
      );
    }
    if (updates.length > MAX_POLICY_UPDATES) throw new AppError('validation-failed', `a policy has at most ${MAX_POLICY_UPDATES} updates`);
    await this.input.checkUpdates(b.updates ?? []);
    const targets: Targets = b.targets ?? (b.fromRequired?.filter ? { filters: [b.fromRequired.filter] } : { all: true });
    await this.input.checkTargets(targets);
    const startAt = b.startAt ? Date.parse(b.startAt) : now;
    const deadline = b.deadline ? Date.parse(b.deadline) : null;
    this.input.times(startAt, deadline);
    const shared = await this.input.shared(targets);
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
    const r = await this.row(id);
    this.#local(r);
    const before = this.view(r, await this.updatesOf(id));
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
    await this.input.checkUpdates(added);
    if (b.targets) await this.input.checkTargets(b.targets);
    const startAt = b.startAt ? Date.parse(b.startAt) : r.start_at;
    const deadline = b.deadline === undefined ? r.deadline_at : b.deadline === null ? null : Date.parse(b.deadline);
    this.input.times(startAt, deadline);
    const next = {
      name: b.name ?? r.name,
      description: b.description === undefined ? r.description : b.description,
      enabled: b.enabled === undefined ? r.enabled : b.enabled ? 1 : 0,
      targets: b.targets ? JSON.stringify(b.targets) : r.targets,
      shared: b.targets ? JSON.stringify(await this.input.shared(b.targets)) : r.shared_targets,
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
    const r = await this.row(id);
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
}
