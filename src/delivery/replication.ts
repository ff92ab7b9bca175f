import { sql, type SQL } from 'drizzle-orm';
import { SQLiteAsyncDialect } from 'drizzle-orm/sqlite-core';
import type { Write } from '../db/exec.js';
import type { Condition } from '../assessment/queries.js';
import type { InstallationOverride } from './installation.js';

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
    sql`INSERT INTO change_log (kind, key, op, languages, payload, created_at)
        SELECT 'policy', p.id, 'upsert', '', ${payloadSql(self.nodeId, self.name)}, ${now} FROM policies p WHERE p.id = ${id}`,
  );
  return [q.sql, q.params];
}

/** The statement that logs a policy's removal. */
export function policyDeleteLogWrite(id: string, now: number): Write {
  return ["INSERT INTO change_log (kind, key, op, languages, payload, created_at) VALUES ('policy', ?, 'delete', '', ?, ?)", [id, JSON.stringify({ id }), now]];
}

/** Every policy's payload (for a snapshot), in id order, a page at a time. */
export function policyPayloadsSql(self: { nodeId: string; name: string }, afterId: string, limit: number): SQL {
  return sql`SELECT p.id AS id, ${payloadSql(self.nodeId, self.name)} AS payload FROM policies p WHERE p.id > ${afterId} ORDER BY p.id LIMIT ${limit}`;
}
