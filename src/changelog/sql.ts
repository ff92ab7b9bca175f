/**
 * The change log's SQL as plain text, with no driver behind it: what a file builder
 * thread (build-worker.ts, through catalog/snapshot-file.ts) needs, without loading
 * drizzle-orm (40 ms of the thread's start). log.ts re-exports these.
 */

/** The columns an entry is written with, in this order. */
export const COLUMNS = 'kind, key, op, languages, payload, created_at';

/**
 * Entries built by a query in the same statement: `select` yields the columns
 * (kind, key, op, languages, payload, created_at) in that order, e.g. one state entry
 * per update a statement changed. As SQL text (for Exec and prepared statements).
 */
export function appendSelectSql(select: string): string {
  return `INSERT INTO change_log (${COLUMNS}) ${select}`;
}

/**
 * SQL (a subquery with two parameters, the sequence after which and up to which) of
 * the keys of `kind`'s entries in that part of the log: what a file of a run of state
 * entries holds (`stateRun`).
 */
export function keysInRangeSql(kind: string): string {
  return `(SELECT key FROM change_log WHERE kind = '${kind.replace(/'/g, "''")}' AND seq > ? AND seq <= ?)`;
}
