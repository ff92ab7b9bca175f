import type { NativeDb } from '../db/native.js';
import type { KeyRange } from '../changelog/index.js';
import { appendSelectSql, keysInRangeSql } from '../changelog/sql.js';
import { REPLICA_UPDATE_COLUMNS } from './bulk.js';
import { languageMatchSql } from '../lib/languages.js';

/**
 * The catalog's updates as SQLite files, in parts by id range: what a parent builds once
 * per language set for a complete resync, and what a fresh child (no update yet) copies
 * part by part, each whole in one transaction, a few INSERT ... SELECT statements instead
 * of a statement per row. The file holds
 * exactly the rows the replicated payloads of catalog/replica.ts would make on the
 * child (the same files in the same positions, the same JSON text, languages from
 * the files sent, the custom severity by its level key), so the two paths give a
 * child the same data (test/e2e/snapshot-file.test.ts compares them).
 */

/** The file's layout; a child refuses another (and asks for rows instead). */
export const UPDATES_FILE_FORMAT = 1;

/**
 * The file's tables, exactly as the builder creates them and as sqlite_master then
 * holds them: the child checks the file has these and nothing else before it reads it.
 */
export const UPDATES_FILE_TABLES: readonly string[] = [
  `CREATE TABLE updates (id TEXT PRIMARY KEY NOT NULL, revision INTEGER NOT NULL, kb TEXT, bulletin TEXT, title TEXT NOT NULL,
    description TEXT, vendor TEXT NOT NULL, product_family TEXT, product TEXT NOT NULL, classification TEXT NOT NULL, severity TEXT,
    custom_severity TEXT, cves TEXT NOT NULL, cve_details TEXT NOT NULL, release_date TEXT NOT NULL, supersedes TEXT NOT NULL,
    vendor_superseded INTEGER NOT NULL, restart TEXT NOT NULL, success_codes TEXT NOT NULL, reboot_codes TEXT NOT NULL,
    applicability TEXT NOT NULL, installed TEXT NOT NULL, more_info_url TEXT, languages TEXT NOT NULL, expired INTEGER NOT NULL,
    content_hash TEXT NOT NULL, release_version TEXT NOT NULL, first_version TEXT NOT NULL, origin TEXT NOT NULL) WITHOUT ROWID`,
  `CREATE TABLE update_files (update_id TEXT NOT NULL, position INTEGER NOT NULL, sha256 TEXT NOT NULL, name TEXT NOT NULL,
    url TEXT NOT NULL, size INTEGER NOT NULL, language TEXT NOT NULL, installer TEXT, PRIMARY KEY (update_id, position)) WITHOUT ROWID`,
  'CREATE TABLE update_cves (update_id TEXT NOT NULL, cve TEXT NOT NULL, PRIMARY KEY (update_id, cve)) WITHOUT ROWID',
  'CREATE TABLE update_supersedes (update_id TEXT NOT NULL, kb TEXT NOT NULL, PRIMARY KEY (update_id, kb)) WITHOUT ROWID',
];

/** SQLite keeps a CREATE statement's text as written (less the schema name). */
const tableName = (ddl: string) => /^CREATE TABLE (\w+)/.exec(ddl)![1]!;

/**
 * Fills the attached, empty schema `into` with the updates a subscriber of
 * `languages` is sent (and only the files in its languages), read from this node's
 * catalog. Run in one transaction of `db` (a consistent read).
 */
export function buildUpdatesFile(db: NativeDb, into: string, nodeId: string, languages: readonly string[], range: KeyRange = ALL): number {
  const [match, matchArgs] = languageMatchSql('f.language', languages);
  const [inRange, rangeArgs] = rangeSql(range);
  for (const ddl of UPDATES_FILE_TABLES) db.exec(ddl.replace(/^CREATE TABLE /, `CREATE TABLE ${into}.`));
  // The files sent, numbered anew in catalog order (the child's positions).
  db.prepare(
    `INSERT INTO ${into}.update_files (update_id, position, sha256, name, url, size, language, installer)
     SELECT f.update_id, row_number() OVER (PARTITION BY f.update_id ORDER BY f.position) - 1, f.sha256, f.name, f.url, f.size, f.language,
       f.installer
     FROM main.update_files f WHERE ${match} AND ${inRange('f.update_id')} ORDER BY f.update_id, f.position`,
  ).run(...matchArgs, ...rangeArgs);
  // Updates with a file sent, or none at all (metadata only). The JSON columns as held: every writer stores minified JSON
  // (JSON.stringify, or SQLite's own rendering on the row path), which json() would give back unchanged (0.24 s of 1.1 s per
  // 100,000 updates); test/e2e/snapshot-file.test.ts compares the two paths table by table.
  const n = db
    .prepare(
      `INSERT INTO ${into}.updates SELECT u.id, u.revision, u.kb, u.bulletin, u.title, u.description, u.vendor, u.product_family, u.product,
       u.classification, u.severity, CASE WHEN cs.id IS NULL THEN NULL ELSE coalesce(cs.origin_key, ? || ':' || cs.id) END,
       u.cves, u.cve_details, u.release_date, u.supersedes, u.vendor_superseded, u.restart, u.success_codes,
       u.reboot_codes, u.applicability, u.installed, u.more_info_url,
       (SELECT coalesce(group_concat(DISTINCT s.language ORDER BY s.language), '') FROM ${into}.update_files s WHERE s.update_id = u.id),
       u.expired, u.content_hash, u.release_version, u.first_version, u.origin
     FROM main.updates u LEFT JOIN main.custom_severities cs ON cs.id = u.custom_severity_id
     WHERE (u.languages = '' OR EXISTS (SELECT 1 FROM ${into}.update_files s WHERE s.update_id = u.id)) AND ${inRange('u.id')} ORDER BY u.id`,
    )
    .run(nodeId, ...rangeArgs).changes;
  db.exec(`INSERT OR IGNORE INTO ${into}.update_cves SELECT u.id, c.value FROM ${into}.updates u, json_each(u.cves) c`);
  db.exec(`INSERT OR IGNORE INTO ${into}.update_supersedes SELECT u.id, k.value FROM ${into}.updates u, json_each(u.supersedes) k`);
  return n;
}

/** The builder a parent's worker thread runs (KindFile.module). */
export const buildFile = buildUpdatesFile;

const ALL: KeyRange = { after: null, upTo: null };

function rangeSql(r: KeyRange): [(col: string) => string, (string | number)[]] {
  const args: (string | number)[] = [r.after, r.upTo].filter((x): x is string => x !== null);
  if (r.log) args.push(r.log.after, r.log.upTo);
  const inLog = r.log ? keysInRangeSql('update') : null;
  return [(col) => [r.after !== null ? `${col} > ?` : '1', r.upTo !== null ? `${col} <= ?` : '1', inLog ? `${col} IN ${inLog}` : '1'].join(' AND '), args];
}

/** Updates in a part of a file: an eighth of the catalog, from 100 to 25,000 (the child loads one while the parent builds the next). */
export function partSize(updates: number): number {
  return Math.max(100, Math.min(25_000, Math.ceil(updates / 8)));
}

/**
 * Where the parts end, as positions in id order (1-based, each the last of its part;
 * the last part's end, `updates`, is not listed): the first part a quarter of
 * partSize, so that the child starts loading while the parent builds the second,
 * then partSize each.
 */
export function partEnds(updates: number): number[] {
  const size = partSize(updates);
  const ends: number[] = [];
  for (let end = Math.max(1, Math.floor(size / 4)); end < updates; end += size) ends.push(end);
  return ends;
}

/**
 * The ids that cut the catalog into parts (KindFile.cuts): the last id of each part but the last (partEnds), each
 * found by skipping a part's updates in the id index from the cut before (2 ms for 100,000 updates, against 35 ms to
 * number them all with a window function), in one read transaction.
 */
export function updatesFileCuts(db: NativeDb): string[] {
  db.exec('BEGIN');
  try {
    const n = Number((db.prepare('SELECT count(*) AS n FROM updates').get() as { n: number }).n);
    const first = db.prepare('SELECT id FROM updates ORDER BY id LIMIT 1 OFFSET ?');
    const next = db.prepare('SELECT id FROM updates WHERE id > ? ORDER BY id LIMIT 1 OFFSET ?');
    const cuts: string[] = [];
    let at = 0;
    for (const end of partEnds(n)) {
      const row = (cuts.length ? next.get(cuts.at(-1), end - at - 1) : first.get(end - 1)) as { id: string } | undefined;
      if (!row) break;
      cuts.push(row.id);
      at = end;
    }
    return cuts;
  } finally {
    db.exec('COMMIT');
  }
}

/**
 * Why the attached file `from` is not an updates file this node can load (null: it
 * is): its tables must be exactly UPDATES_FILE_TABLES (no view, trigger or index of
 * the sender's making is ever read), every file must belong to an update in it, each
 * update's files be numbered from 0 without a gap, and its languages be its files'.
 */
export function checkUpdatesFile(db: NativeDb, from: string): string | null {
  const rows = db.prepare(`SELECT type, name, sql FROM ${from}.sqlite_master ORDER BY name`).all() as { type: string; name: string; sql: string | null }[];
  const want = new Map(UPDATES_FILE_TABLES.map((ddl) => [tableName(ddl), ddl]));
  for (const r of rows) {
    if (r.type === 'index' && r.sql === null && want.has(r.name.replace(/^sqlite_autoindex_(\w+)_\d+$/, '$1'))) continue; // a primary key's
    if (r.type !== 'table' || want.get(r.name) !== r.sql) return `unexpected ${r.type} ${r.name} in the snapshot file`;
  }
  const tables = new Set(rows.filter((r) => r.type === 'table').map((r) => r.name));
  for (const name of want.keys()) if (!tables.has(name)) return `the snapshot file has no table ${name}`;
  const orphan = db.prepare(`SELECT update_id FROM ${from}.update_files WHERE update_id NOT IN (SELECT id FROM ${from}.updates) LIMIT 1`).get() as
    | { update_id: string }
    | undefined;
  if (orphan) return `the snapshot file lists files of ${orphan.update_id}, an update it does not hold`;
  // What the row path derives from a payload, the file states: it must agree with the files it lists.
  const gap = db
    .prepare(`SELECT update_id FROM ${from}.update_files GROUP BY update_id HAVING min(position) != 0 OR max(position) != count(*) - 1 LIMIT 1`)
    .get() as { update_id: string } | undefined;
  if (gap) return `the snapshot file numbers the files of ${gap.update_id} other than 0, 1, 2, ...`;
  const langs = db
    .prepare(
      `SELECT u.id FROM ${from}.updates u
       WHERE u.languages != (SELECT coalesce(group_concat(DISTINCT f.language ORDER BY f.language), '') FROM ${from}.update_files f WHERE f.update_id = u.id)
       LIMIT 1`,
    )
    .get() as { id: string } | undefined;
  if (langs) return `the snapshot file gives ${langs.id} other languages than its files'`;
  return null;
}

/** copyUpdates' `which` for every row of the file. */
const ALL_ROWS = '1';

/** A held row replaced by a tail file's: every column but the id. */
const REPLACE_SET = REPLICA_UPDATE_COLUMNS.split(',')
  .map((c) => c.trim())
  .filter((c) => c !== 'id')
  .map((c) => `${c} = excluded.${c}`)
  .join(', ');

/**
 * Copies the file's updates that `which` selects (SQL on `s`, the file's row) into
 * main, with their files, CVEs and supersedence, each logged as a state entry (as
 * INSERT_NEW does for rows), its custom severity by level key; releases waiting for
 * them see them from `now`. `upsert`: a held row is replaced (its files, CVEs and
 * supersedence already removed by the caller).
 */
function copyUpdates(db: NativeDb, from: string, which: string, now: number, upsert: boolean): number {
  const n = db
    .prepare(
      `INSERT INTO main.updates (${REPLICA_UPDATE_COLUMNS})
     SELECT id, revision, kb, bulletin, title, description, vendor, product_family, product, classification, severity,
       (SELECT cs.id FROM main.custom_severities cs WHERE cs.origin_key = s.custom_severity), cves, cve_details, release_date, supersedes,
       vendor_superseded, restart, success_codes, reboot_codes, applicability, installed, more_info_url, languages, expired, content_hash,
       release_version, first_version, origin, ?
     FROM ${from}.updates s WHERE ${which} ORDER BY id${upsert ? ` ON CONFLICT(id) DO UPDATE SET ${REPLACE_SET}` : ''}`,
    )
    .run(now).changes;
  const of = (table: string) =>
    `FROM ${from}.${table} x${which === ALL_ROWS ? '' : ` WHERE x.update_id IN (SELECT s.id FROM ${from}.updates s WHERE ${which})`}`;
  db.exec(`INSERT INTO main.update_files (update_id, sha256, name, url, size, language, position, installer)
    SELECT update_id, sha256, name, url, size, language, position, installer ${of('update_files')} ORDER BY update_id, position`);
  db.exec(`INSERT INTO main.update_cves (update_id, cve) SELECT update_id, cve ${of('update_cves')} ORDER BY update_id, cve`);
  db.exec(`INSERT INTO main.update_supersedes (update_id, kb) SELECT update_id, kb ${of('update_supersedes')} ORDER BY update_id, kb`);
  db.prepare(appendSelectSql(`SELECT 'update', id, 'upsert', languages, '', ? FROM ${from}.updates s WHERE ${which} ORDER BY id`)).run(now);
  db.prepare(
    `UPDATE main.freshness_updates SET visible_at = ? FROM ${from}.updates s
     WHERE freshness_updates.update_id = s.id AND freshness_updates.revision <= s.revision AND freshness_updates.visible_at IS NULL AND ${which}`,
  ).run(now);
  return n;
}

/**
 * Copies the updates of the attached file `from` into this node's catalog, which
 * holds none of them (a fresh child's complete resync), inside the caller's
 * transaction (copyUpdates). Returns how many updates it copied.
 */
export function loadUpdatesFile(db: NativeDb, from: string, now: number): number {
  // The parts of one resync hold disjoint updates, and the catalog held none before the first.
  if (db.prepare(`SELECT 1 FROM main.updates WHERE id IN (SELECT id FROM ${from}.updates) LIMIT 1`).get())
    throw new Error('a snapshot file is loaded only into a catalog that holds none of its updates');
  return copyUpdates(db, from, ALL_ROWS, now, false);
}

/** What a child's part loader thread runs (KindFile.module). */
export const loadFile = loadUpdatesFile;

/**
 * Applies a tail file (KindFile.merge): the updates behind a run of state entries, as
 * the parent holds them now, into a catalog that may hold some of them. What the row
 * path does update by update (ReplicaWriter.upsert, outside a complete resync), in a
 * few statements: an update held at a newer revision is kept; one held at the same or
 * an older one is replaced whole (files, CVEs, supersedence, its custom severity by
 * level key); a new one is inserted; each written one is logged as a state entry.
 */
export function mergeUpdatesFile(db: NativeDb, from: string, now: number): number {
  db.exec('CREATE TEMP TABLE IF NOT EXISTS merge_ids (id TEXT PRIMARY KEY, held INTEGER NOT NULL) WITHOUT ROWID');
  db.exec('DELETE FROM temp.merge_ids');
  db.exec(`INSERT INTO temp.merge_ids SELECT s.id, m.id IS NOT NULL FROM ${from}.updates s LEFT JOIN main.updates m ON m.id = s.id
    WHERE m.id IS NULL OR m.revision <= s.revision`);
  for (const table of ['update_files', 'update_cves', 'update_supersedes'])
    db.exec(`DELETE FROM main.${table} WHERE update_id IN (SELECT id FROM temp.merge_ids WHERE held)`);
  const n = copyUpdates(db, from, 's.id IN (SELECT id FROM temp.merge_ids)', now, true);
  db.exec('DELETE FROM temp.merge_ids');
  return n;
}
