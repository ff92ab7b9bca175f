import { eq, inArray } from 'drizzle-orm';
import type { Exec } from '../db/exec.js';
import type { Orm } from '../db/index.js';
import { placeholders } from '../db/sql.js';
import { customSeverities, updates } from './schema.js';

/**
 * Catalog facts other parts of the node read: which updates exist, an update's
 * names and severities by id, and the applicability rules of updates as stored. The
 * rules are read with plain SQL on the assessor's own connection, on purpose: they
 * run on hot paths (a node's start, every catalog change).
 */

/** Which of these update ids the catalog holds (expired ones included). */
export async function existingUpdates(orm: Orm, ids: readonly string[]): Promise<Set<string>> {
  if (!ids.length) return new Set();
  const rows = await orm
    .select({ id: updates.id })
    .from(updates)
    .where(ids.length === 1 ? eq(updates.id, ids[0]!) : inArray(updates.id, [...ids]));
  return new Set(rows.map((r) => r.id));
}

/** Which of these update ids the catalog holds (only live ones with `live`), on a plain connection (delivery's checks). */
export async function updateIdsIn(db: Exec, ids: readonly string[], o: { live: boolean }): Promise<Set<string>> {
  const out = new Set<string>();
  for (let i = 0; i < ids.length; i += 400) {
    const part = ids.slice(i, i + 400);
    const q = `SELECT id FROM updates WHERE ${o.live ? 'expired = 0 AND ' : ''}id IN (${placeholders(part)})`;
    for (const r of await db.all<{ id: string }>(q, part)) out.add(r.id);
  }
  return out;
}

/** What lists show of an update: its names, product, severities and release date. */
export interface UpdateSummary {
  id: string;
  kb: string | null;
  title: string;
  product: string;
  classification: string;
  severity: string | null;
  releaseDate: string;
  customSeverityId: number | null;
  customSeverityName: string | null;
}

/** These updates' summaries, in no order (unknown ids are left out). Keep the list to a few hundred ids. */
export function updateSummaries(orm: Orm, ids: readonly string[]): Promise<UpdateSummary[]> {
  return orm
    .select({
      id: updates.id,
      kb: updates.kb,
      title: updates.title,
      product: updates.product,
      classification: updates.classification,
      severity: updates.severity,
      releaseDate: updates.releaseDate,
      customSeverityId: updates.customSeverityId,
      customSeverityName: customSeverities.name,
    })
    .from(updates)
    .leftJoin(customSeverities, eq(customSeverities.id, updates.customSeverityId))
    .where(inArray(updates.id, [...ids]));
}

/** An update's rules as stored: the two rules and `supersedes` are JSON text. */
export interface UpdateRules {
  id: string;
  kb: string | null;
  product: string;
  severity: string | null;
  applicability: string;
  installed: string;
  supersedes: string;
}

/** The rules of the live (not expired) updates after `after`, by id: a page of at most `limit`. */
export function liveRulesPage(db: Exec, after: string, limit: number): Promise<UpdateRules[]> | UpdateRules[] {
  return db.all<UpdateRules>(
    'SELECT id, kb, product, severity, applicability, installed, supersedes FROM updates WHERE expired = 0 AND id > ? ORDER BY id LIMIT ?',
    [after, limit],
  );
}

/** The rules of these updates, expired ones included (with `expired`); unknown ids are left out. Keep the list to a few hundred ids. */
export function rulesOf(db: Exec, ids: readonly string[]): Promise<(UpdateRules & { expired: number })[]> | (UpdateRules & { expired: number })[] {
  return db.all<UpdateRules & { expired: number }>(
    `SELECT id, kb, product, severity, applicability, installed, supersedes, expired FROM updates WHERE id IN (${placeholders(ids)})`,
    ids,
  );
}
