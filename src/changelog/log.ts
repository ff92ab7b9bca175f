import { sql, type SQL } from 'drizzle-orm';
import type { Exec, Write } from '../db/exec.js';
import { prepare, type NativeDb } from '../db/native.js';
import { changeLog } from './schema.js';
import { COLUMNS } from './sql.js';

export { appendSelectSql, keysInRangeSql } from './sql.js';

/**
 * The change log, the one module that reads and writes it. Every replicated write
 * appends its entries in its own transaction (so the log never disagrees with the
 * tables); parents read it by `seq` to stream changes to their children, and the
 * assessment follows it to reassess what changed. Entries are kept until compaction;
 * a reader whose cursor falls before what is kept starts over (a child gets a
 * complete resync, the assessment reassesses everything).
 */

/** One entry as a domain writes it. */
export interface Entry {
  /** The replicated kind (changelog/kind.ts): `update`, `policy`, ... */
  kind: string;
  /** The entity's id within its kind. */
  key: string;
  /** `upsert`, `delete`, or a kind's own (`expire`). */
  op: string;
  /** Comma list of the entity's file languages; '' = none (every subscriber gets it). */
  languages: string;
  /** JSON text; '' for a state entry (the entity as it is when the entry is sent). */
  payload: string;
}

/** An entry as stored. */
export interface LogRow extends Entry {
  seq: number;
  createdAt: number;
}

const APPEND = `INSERT INTO change_log (${COLUMNS}) VALUES (?,?,?,?,?,?)`;

/** A drizzle database or transaction (told apart from an Exec by its query builder). */
interface Drizzle {
  insert: unknown;
  run(q: SQL): Promise<unknown>;
}
type Tx = Exec | Drizzle;
const isDrizzle = (tx: Tx): tx is Drizzle => 'insert' in tx;

/** Appends one entry in the caller's transaction. */
export async function append(tx: Tx, e: Entry, now: number): Promise<void> {
  if (isDrizzle(tx))
    await tx.run(sql`INSERT INTO ${changeLog} (${sql.raw(COLUMNS)}) VALUES (${e.kind}, ${e.key}, ${e.op}, ${e.languages}, ${e.payload}, ${now})`);
  else await tx.run(APPEND, [e.kind, e.key, e.op, e.languages, e.payload, now]);
}

/** The same as a statement of a write batch (SqlConn.write). */
export function appendWrite(e: Entry, now: number): Write {
  return [APPEND, [e.kind, e.key, e.op, e.languages, e.payload, now]];
}

/** `appendSelectSql` for drizzle's `sql`. */
export function appendSelect(select: SQL): SQL {
  return sql`INSERT INTO ${changeLog} (${sql.raw(COLUMNS)}) ${select}`;
}

/** Appending on a synchronous connection (a child applying batches), the statement prepared once. */
export function nativeAppender(db: NativeDb): (e: Entry, now: number) => void {
  const s = prepare(db, APPEND);
  return (e, now) => void s.run(e.kind, e.key, e.op, e.languages, e.payload, now);
}

/** Reads need only `all` (the `libsql` binding's ends its read transaction). */
type Reader = Pick<Exec, 'all'>;

async function one<T>(db: Reader, q: string, args: readonly unknown[] = []): Promise<T | undefined> {
  return (await db.all<T>(q, args))[0];
}

/** The newest sequence (0: empty). */
export async function head(db: Reader): Promise<number> {
  return Number((await one<{ head: number }>(db, 'SELECT coalesce(max(seq), 0) AS head FROM change_log'))?.head ?? 0);
}

/** The newest sequence as a scalar subquery for drizzle's `sql` (a generation to key memoized answers on). */
export function headExpr(): SQL {
  return sql`(SELECT coalesce(max(seq), 0) FROM ${changeLog})`;
}

/** The oldest and newest sequence kept (0 and 0: empty). */
export async function bounds(db: Reader): Promise<{ min: number; head: number }> {
  const r = await one<{ min: number; head: number }>(db, 'SELECT coalesce(min(seq), 0) AS min, coalesce(max(seq), 0) AS head FROM change_log');
  return { min: Number(r?.min ?? 0), head: Number(r?.head ?? 0) };
}

/** Up to `limit` entries after `seq`, in order. */
export async function after(db: Reader, seq: number, limit: number): Promise<LogRow[]> {
  const rows = await db.all<LogRow>(
    `SELECT seq, kind, key, op, languages, payload, created_at AS createdAt FROM change_log WHERE seq > ? ORDER BY seq LIMIT ?`,
    [seq, limit],
  );
  return rows.map((r) => ({ ...r, seq: Number(r.seq), createdAt: Number(r.createdAt) }));
}

/** The keys of one kind's entries after `seq`, in order (the assessment's catch-up). */
export async function keysAfter(db: Reader, kind: string, seq: number, limit: number): Promise<{ seq: number; key: string }[]> {
  const rows = await db.all<{ seq: number; key: string }>('SELECT seq, key FROM change_log WHERE seq > ? AND kind = ? ORDER BY seq LIMIT ?', [
    seq,
    kind,
    limit,
  ]);
  return rows.map((r) => ({ seq: Number(r.seq), key: r.key }));
}

/**
 * The run of `kind`'s state entries (upserts logged without a payload) right after
 * `seq`, at most `max` of them: how many, and the sequence of the last (`seq` when the
 * entry after it is not one). A parent sends such a run as one file of the entities as
 * they are now (a large import on its way down).
 */
export async function stateRun(db: Reader, seq: number, kind: string, max: number): Promise<{ count: number; upTo: number }> {
  // The run ends before the first entry after `seq` that is not a state entry of `kind` (found in
  // sequence order, so a page of other entries costs one row read); at most `max` sequences on.
  const r = await one<{ count: number; upTo: number | null }>(
    db,
    `SELECT count(*) AS count, max(seq) AS upTo FROM change_log WHERE seq > ?1 AND seq <= ?1 + ?3 AND seq < coalesce(
       (SELECT min(seq) FROM change_log WHERE seq > ?1 AND seq <= ?1 + ?3 AND NOT (kind = ?2 AND op = 'upsert' AND payload = '')), 9e18)`,
    [seq, kind, max],
  );
  return { count: Number(r?.count ?? 0), upTo: Number(r?.upTo ?? seq) };
}

/** When the first entry after `seq` was written (null: none): how far behind a reader at `seq` is. */
export async function firstAfterAt(db: Reader, seq: number): Promise<number | null> {
  const r = await one<{ at: number }>(db, 'SELECT created_at AS at FROM change_log WHERE seq > ? ORDER BY seq LIMIT 1', [seq]);
  return r ? Number(r.at) : null;
}

/** Keeps the newest `retention` entries; returns how many were removed. */
export async function compact(tx: Tx, retention: number): Promise<number> {
  if (isDrizzle(tx)) {
    const r = (await tx.run(sql`DELETE FROM ${changeLog} WHERE seq <= (SELECT max(seq) FROM ${changeLog}) - ${retention}`)) as { rowsAffected?: number };
    return Number(r.rowsAffected ?? 0);
  }
  return Number(await tx.run('DELETE FROM change_log WHERE seq <= (SELECT max(seq) FROM change_log) - ?', [retention]));
}
