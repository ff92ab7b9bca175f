import { sql, type SQL } from 'drizzle-orm';
import { SQLiteAsyncDialect } from 'drizzle-orm/sqlite-core';
import type { Write } from '../db/exec.js';
import type { Condition } from '../assessment/queries.js';
import type { InstallationOverride } from './installation.js';
import { prepare, type NativeDb } from '../db/native.js';
import { changelog, filterUpdateList, pages, type ApplyTx, type Change, type KindApplier, type ReplicatedKind } from '../changelog/index.js';

/**
 * Policies down the tree. A policy's change-log entry (kind `policy`) carries the
 * whole policy as its subtree sees it: targets with filters resolved to their
 * conditions (each site matches its own computers), and its updates each with the
 * languages of its files, so every parent sends a child only the updates of the
 * child's languages. The payload is built in SQL from the committed row, in the
 * transaction that changed it, so the log never disagrees with the table.
 */

/** Targets as replicated: every computer, or those matching any of the conditions. */
export interface SharedTargets {
  all?: true;
  conditions?: Condition[];
}

export interface PolicyPayload {
  id: string;
  name: string;
  description: string | null;
  enabled: boolean;
  startAt: number;
  deadlineAt: number | null;
  targets: SharedTargets;
  installation: InstallationOverride | null;
  followSupersedence: boolean;
  revision: number;
  /** The node the policy was created on, and its name. */
  origin: string;
  originName: string;
  /** [update id, comma list of its file languages ('' = no files)]. */
  updates: [string, string][];
}

/** Where an update's languages are in a policy's `updates` tuples (for `filterUpdateList`). */
export const POLICY_LANGUAGES_AT = 1;

const dialect = new SQLiteAsyncDialect();

/** The payload of each policy row `p`, as JSON text. */
function payloadSql(nodeId: string, nodeName: string): SQL {
  return sql`json_object(
    'id', p.id, 'name', p.name, 'description', p.description,
    'enabled', json(CASE WHEN p.enabled THEN 'true' ELSE 'false' END),
    'startAt', p.start_at, 'deadlineAt', p.deadline_at, 'targets', json(p.shared_targets), 'installation', json(p.installation),
    'followSupersedence', json(CASE WHEN p.follow_supersedence THEN 'true' ELSE 'false' END), 'revision', p.revision,
    'origin', CASE p.origin WHEN '' THEN ${nodeId} ELSE p.origin END,
    'originName', CASE p.origin WHEN '' THEN ${nodeName} ELSE p.origin_name END,
    'updates', (SELECT json_group_array(json_array(pu.update_id, coalesce(u.languages, ''))) FROM policy_updates pu LEFT JOIN updates u ON u.id = pu.update_id WHERE pu.policy_id = p.id))`;
}

/** The statement that logs a policy's current state (an upsert), for the subtree. */
export function policyLogWrite(id: string, self: { nodeId: string; name: string }, now: number): Write {
  const q = dialect.sqlToQuery(
    changelog.appendSelect(sql`SELECT 'policy', p.id, 'upsert', '', ${payloadSql(self.nodeId, self.name)}, ${now} FROM policies p WHERE p.id = ${id}`),
  );
  return [q.sql, q.params];
}

/** The statement that logs a policy's removal. */
export function policyDeleteLogWrite(id: string, now: number): Write {
  return changelog.appendWrite({ kind: 'policy', key: id, op: 'delete', languages: '', payload: JSON.stringify({ id }) }, now);
}

/** Every policy's payload (for a snapshot), in id order, a page at a time. */
export function policyPayloadsSql(self: { nodeId: string; name: string }, afterId: string, limit: number): SQL {
  return sql`SELECT p.id AS id, ${payloadSql(self.nodeId, self.name)} AS payload FROM policies p WHERE p.id > ${afterId} ORDER BY p.id LIMIT ${limit}`;
}

/** Snapshot pages of policies (each lists its updates: a few KB). */
const SNAPSHOT_PAGE = 500;

/**
 * A policy from upstream, stored read-only with its origin, with the updates the
 * parent sent (those of this subtree's languages); logged again for this node's
 * children. A policy this node already holds at that revision with those updates
 * (a snapshot resending it) is left alone; an id of this node's own is never overwritten.
 */
class PolicyApplier implements KindApplier {
  readonly #s;

  constructor(db: NativeDb) {
    const prep = (q: string) => prepare(db, q);
    this.#s = {
      get: prep(
        "SELECT origin, revision, (SELECT group_concat(update_id, ',') FROM (SELECT update_id FROM policy_updates WHERE policy_id = ? ORDER BY update_id)) AS updates FROM policies WHERE id = ?",
      ),
      upsert:
        prep(`INSERT INTO policies (id, name, description, enabled, start_at, deadline_at, targets, shared_targets, installation, follow_supersedence, origin, origin_name, revision, created_at, created_by, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'replication', ?)
        ON CONFLICT(id) DO UPDATE SET name = excluded.name, description = excluded.description, enabled = excluded.enabled, start_at = excluded.start_at,
          deadline_at = excluded.deadline_at, targets = excluded.targets, shared_targets = excluded.shared_targets, installation = excluded.installation,
          follow_supersedence = excluded.follow_supersedence, origin = excluded.origin, origin_name = excluded.origin_name, revision = excluded.revision, updated_at = excluded.updated_at`),
      clear: prep('DELETE FROM policy_updates WHERE policy_id = ?'),
      update: prep('INSERT OR IGNORE INTO policy_updates (policy_id, update_id, added_at) VALUES (?, ?, ?)'),
      delete: prep("DELETE FROM policies WHERE id = ? AND origin != ''"),
      history: prep("INSERT INTO policy_history (policy_id, at, by, action, detail) VALUES (?, ?, 'replication', ?, ?)"),
      replicated: (seen: string) => prep(`SELECT id FROM policies WHERE origin != '' AND id NOT IN ${seen}`),
    };
  }

  apply(tx: ApplyTx, changes: readonly Change[]): number {
    let applied = 0;
    for (const c of changes) {
      if (c.op === 'upsert' ? this.#upsert(tx, JSON.parse(c.payload.toString()) as PolicyPayload) : c.op === 'delete' && this.#delete(tx, c.key)) applied++;
    }
    return applied;
  }

  #upsert(tx: ApplyTx, p: PolicyPayload): boolean {
    const cur = this.#s.get.get(p.id, p.id) as { origin: string; revision: number; updates: string | null } | undefined;
    if (cur && cur.origin === '') return false;
    const ids = [...new Set(p.updates.map(([id]) => id))].sort();
    if (cur && Number(cur.revision) === p.revision && (cur.updates ?? '') === ids.join(',')) return false;
    const targets = JSON.stringify(p.targets);
    const installation = p.installation ? JSON.stringify(p.installation) : null;
    this.#s.upsert.run(
      p.id,
      p.name,
      p.description,
      p.enabled ? 1 : 0,
      p.startAt,
      p.deadlineAt,
      targets,
      targets,
      installation,
      p.followSupersedence ? 1 : 0,
      p.origin,
      p.originName,
      p.revision,
      tx.now,
      tx.now,
    );
    this.#s.clear.run(p.id);
    for (const id of ids) this.#s.update.run(p.id, id, tx.now);
    const detail = { origin: p.origin, originName: p.originName, revision: p.revision, enabled: p.enabled, updates: ids.length };
    this.#s.history.run(p.id, tx.now, cur ? 'replicated-update' : 'replicated', JSON.stringify(detail));
    tx.log({ kind: 'policy', key: p.id, op: 'upsert', languages: '', payload: JSON.stringify(p) });
    tx.applied.push({ kind: 'policy', key: p.id, op: 'upsert' });
    return true;
  }

  #delete(tx: ApplyTx, id: string): boolean {
    if (!this.#s.delete.run(id).changes) return false;
    this.#s.clear.run(id);
    this.#s.history.run(id, tx.now, 'replicated-delete', '{}');
    tx.log({ kind: 'policy', key: id, op: 'delete', languages: '', payload: JSON.stringify({ id }) });
    tx.applied.push({ kind: 'policy', key: id, op: 'delete' });
    return true;
  }

  /** Replicated policies the parent no longer has (this node's own stay). */
  sweep(tx: ApplyTx): number {
    let removed = 0;
    for (const { id } of this.#s.replicated(tx.seenSql('policy')).all() as { id: string }[]) if (this.#delete(tx, id)) removed++;
    return removed;
  }
}

/** Policies (this node's own and those it received), sent after the catalog their updates belong to. */
export const policyKind: ReplicatedKind = {
  kind: 'policy',
  catalog: false,
  byLanguage: true,
  source: {
    tail: (_ctx, rows, languages) =>
      rows.map((r) => (r.op === 'upsert' ? filterUpdateList(r.payload, POLICY_LANGUAGES_AT, languages) : Buffer.from(r.payload))),
    snapshot: (ctx, languages) =>
      pages(
        (after) => ctx.orm.all<{ id: string; payload: string }>(policyPayloadsSql(ctx.self, after, SNAPSHOT_PAGE)),
        (r): Change => ({ seq: 0, kind: 'policy', key: r.id, op: 'upsert', payload: filterUpdateList(r.payload, POLICY_LANGUAGES_AT, languages) }),
      ),
  },
  applier: (db) => new PolicyApplier(db),
};
