import { appendSelectSql } from '../changelog/sql.js';

/**
 * Bulk insert of new updates from their JSON (a child's fresh resync, a catalog
 * import's added updates): one statement per table for a run of updates instead of
 * about ten calls per update. Shared by the `libsql` binding's prepared statements
 * (catalog/replica.ts) and the import's Exec (catalog/import-core.ts).
 */

/** A TEMP table of the connection for INSERT_NEW: payloads parsed once, as JSONB, each with its id. */
export const INSERT_NEW_TABLE =
  "CREATE TEMP TABLE IF NOT EXISTS bulk_payloads (n INTEGER PRIMARY KEY, v BLOB NOT NULL, id TEXT NOT NULL GENERATED ALWAYS AS (v ->> 'id') STORED)";

/**
 * One payload into the table, bound as the bytes it arrived in (a child's run of
 * replicated updates): no JSON text of the whole run is made in JavaScript, copied
 * and handed over (three copies of a megabyte per thousand updates, each in fresh
 * pages the kernel zeroes). The caller then runs insertNewArgs(null, ...).
 */
export const INSERT_NEW_ROW = 'INSERT INTO temp.bulk_payloads (n, v) VALUES (?, jsonb(CAST(? AS TEXT)))';

/**
 * The updates table's columns a replicated update fills, in this order (the custom
 * severity by level key, updated_at the node's clock): what INSERT_NEW writes from
 * payloads and a snapshot or tail file's copy (catalog/snapshot-file.ts) from a file.
 */
export const REPLICA_UPDATE_COLUMNS = `id, revision, kb, bulletin, title, description, vendor, product_family, product, classification,
  severity, custom_severity_id, cves, cve_details, release_date, supersedes, vendor_superseded, restart, success_codes, reboot_codes,
  applicability, installed, more_info_url, languages, expired, content_hash, release_version, first_version, origin, updated_at`;

/**
 * Inserts updates a node does not hold yet from one JSON array of their replicated
 * payloads (each with `contentHash`), in a few statements: SQLite reads the JSON, so
 * no row costs a parse or a call in JavaScript. The columns are those `columns()`
 * and `ReplicaWriter.upsert` write; each update is logged as a state entry, and
 * (`visible`) releases waiting for it see it from `now`. Run in order with insertNewArgs.
 */
export const INSERT_NEW = {
  load: 'INSERT INTO temp.bulk_payloads (n, v) SELECT key, jsonb(value) FROM json_each(?)',
  updates: `INSERT INTO updates (${REPLICA_UPDATE_COLUMNS})
    SELECT id, v ->> 'revision', v ->> 'kb', v ->> 'bulletin', v ->> 'title', v ->> 'description', v ->> 'vendor', v ->> 'productFamily',
      v ->> 'product', v ->> 'classification', v ->> 'severity',
      (SELECT cs.id FROM custom_severities cs WHERE cs.origin_key = v ->> 'customSeverity'),
      v -> 'cves', coalesce(v -> 'cveDetails', '[]'), v ->> 'releaseDate', v -> 'supersedes', CASE WHEN v ->> 'superseded' THEN 1 ELSE 0 END,
      v ->> 'restart', v -> '$.install.successCodes', v -> '$.install.rebootCodes', v -> 'applicability', v -> 'installed',
      v ->> 'moreInfoUrl', (SELECT coalesce(group_concat(l, ','), '') FROM (SELECT DISTINCT f.value ->> 'language' AS l FROM json_each(v, '$.files') f ORDER BY l)),
      CASE WHEN v ->> 'expired' THEN 1 ELSE 0 END, v ->> 'contentHash', v ->> 'releaseVersion', v ->> 'firstVersion', v ->> 'origin', ?
    FROM temp.bulk_payloads ORDER BY n`,
  files: `INSERT OR IGNORE INTO update_files (update_id, sha256, name, url, size, language, position, installer)
    SELECT p.id, f.value ->> 'sha256', f.value ->> 'name', f.value ->> 'url', f.value ->> 'size', f.value ->> 'language', f.key, json(f.value -> 'installer')
    FROM temp.bulk_payloads p, json_each(p.v, '$.files') f ORDER BY p.n, f.key`,
  cves: "INSERT OR IGNORE INTO update_cves (update_id, cve) SELECT p.id, c.value FROM temp.bulk_payloads p, json_each(p.v, '$.cves') c",
  sups: "INSERT OR IGNORE INTO update_supersedes (update_id, kb) SELECT p.id, k.value FROM temp.bulk_payloads p, json_each(p.v, '$.supersedes') k",
  log: appendSelectSql(`SELECT 'update', x.id, 'upsert', x.languages, '', ? FROM temp.bulk_payloads p JOIN updates x ON x.id = p.id ORDER BY p.n`),
  visible: `UPDATE freshness_updates SET visible_at = ? FROM temp.bulk_payloads p
    WHERE freshness_updates.update_id = p.id AND freshness_updates.revision <= p.v ->> 'revision' AND freshness_updates.visible_at IS NULL`,
  clear: 'DELETE FROM temp.bulk_payloads',
} as const;

/**
 * The arguments of each INSERT_NEW statement, in its order; `updates` answers how
 * many were inserted. `payloads`: the run as one JSON array, or null when the caller
 * loaded the table itself (INSERT_NEW_ROW). `stampVisible`: a child's (releases it
 * received wait for the updates); an import records its release's times itself.
 */
export function insertNewArgs(payloads: string | null, now: number, stampVisible: boolean): [keyof typeof INSERT_NEW, unknown[]][] {
  return [
    ...(payloads === null ? [] : [['load', [payloads]] as [keyof typeof INSERT_NEW, unknown[]]]),
    ['updates', [now]],
    ['files', []],
    ['cves', []],
    ['sups', []],
    ['log', [now]],
    ...(stampVisible ? [['visible', [now]] as [keyof typeof INSERT_NEW, unknown[]]] : []),
    ['clear', []],
  ];
}
