import type { Exec } from '../db/exec.js';
import { placeholders } from '../db/sql.js';

/**
 * Catalog facts other parts of the node read on a plain-SQL connection of their
 * own (the assessor's): the applicability rules of updates, as stored. Plain SQL on
 * purpose, these run on hot paths (a node's start, every catalog change).
 */

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
  return db.all<UpdateRules>('SELECT id, kb, product, severity, applicability, installed, supersedes FROM updates WHERE expired = 0 AND id > ? ORDER BY id LIMIT ?', [after, limit]);
}

/** The rules of these updates, expired ones included (with `expired`); unknown ids are left out. Keep the list to a few hundred ids. */
export function rulesOf(db: Exec, ids: readonly string[]): Promise<(UpdateRules & { expired: number })[]> | (UpdateRules & { expired: number })[] {
  return db.all<UpdateRules & { expired: number }>(
    `SELECT id, kb, product, severity, applicability, installed, supersedes, expired FROM updates WHERE id IN (${placeholders(ids)})`,
    ids,
  );
}
