import { asc, eq, getTableColumns, gt, inArray } from 'drizzle-orm';
import { prepare, type Orm, type NativeDb, type Stmt } from '../db/index.js';
import { customSeverities, updateFiles, updates } from './schema.js';
import { columns, type UpdatePayload } from './import-core.js';
import { contentHash, type CatalogUpdate } from './format.js';
import type { Installer } from '../delivery/installers.js';
import { INSERT_NEW, INSERT_NEW_ROW, INSERT_NEW_TABLE, insertNewArgs } from './bulk.js';
import { languageMatchSql } from '../lib/languages.js';

/**
 * The catalog's side of replication: updates read back in their replicated form
 * (for a snapshot), and the synchronous writer a child applies them with. The
 * writer runs inside the child's batch transaction on the `libsql` binding.
 */

/** Something to read with: the database or a transaction on it. */
export type Reader = Pick<Orm, 'select'>;

/**
 * Updates in their replicated form, files and custom severity (by level key)
 * included: a page by id after `afterId`, or the given ids.
 */
export async function readUpdatePayloads(db: Reader, nodeId: string, which: { afterId: string; limit: number } | { ids: string[] }): Promise<UpdatePayload[]> {
  const q = db
    .select({ ...getTableColumns(updates), levelId: customSeverities.id, levelKey: customSeverities.originKey })
    .from(updates)
    .leftJoin(customSeverities, eq(customSeverities.id, updates.customSeverityId));
  const rows =
    'ids' in which ? await q.where(inArray(updates.id, which.ids)) : await q.where(gt(updates.id, which.afterId)).orderBy(asc(updates.id)).limit(which.limit);
  if (!rows.length) return [];
  const files = await db
    .select()
    .from(updateFiles)
    .where(
      inArray(
        updateFiles.updateId,
        rows.map((r) => r.id),
      ),
    )
    .orderBy(asc(updateFiles.updateId), asc(updateFiles.position));
  const byUpdate = new Map<string, UpdatePayload['files']>();
  for (const f of files) {
    const list = byUpdate.get(f.updateId) ?? [];
    list.push({
      name: f.name,
      url: f.url,
      size: f.size,
      sha256: f.sha256,
      language: f.language,
      ...(f.installer ? { installer: JSON.parse(f.installer) as Installer } : {}),
    });
    byUpdate.set(f.updateId, list);
  }
  return rows.map((r) => {
    const p: UpdatePayload = {
      id: r.id,
      revision: r.revision,
      kb: r.kb,
      bulletin: r.bulletin,
      title: r.title,
      ...(r.description !== null ? { description: r.description } : {}),
      vendor: r.vendor,
      productFamily: r.productFamily,
      product: r.product,
      classification: r.classification,
      severity: r.severity as CatalogUpdate['severity'],
      cves: JSON.parse(r.cves) as string[],
      cveDetails: JSON.parse(r.cveDetails) as NonNullable<CatalogUpdate['cveDetails']>,
      releaseDate: r.releaseDate,
      supersedes: JSON.parse(r.supersedes) as string[],
      superseded: r.vendorSuperseded === 1,
      restart: r.restart as CatalogUpdate['restart'],
      install: { successCodes: JSON.parse(r.successCodes) as number[], rebootCodes: JSON.parse(r.rebootCodes) as number[] },
      applicability: JSON.parse(r.applicability) as CatalogUpdate['applicability'],
      installed: JSON.parse(r.installed) as CatalogUpdate['installed'],
      ...(r.moreInfoUrl !== null ? { moreInfoUrl: r.moreInfoUrl } : {}),
      files: byUpdate.get(r.id) ?? [],
      expired: r.expired === 1,
      origin: r.origin,
      releaseVersion: r.releaseVersion,
      firstVersion: r.firstVersion,
      customSeverity: r.levelId === null ? null : (r.levelKey ?? `${nodeId}:${r.levelId}`),
    };
    return p;
  });
}

/** An update in its replicated form, as the JSON text a subscriber is sent. */
export interface WireUpdate {
  id: string;
  payload: string;
}

/**
 * The replicated form of updates (`UpdatePayload`, plus the node's `contentHash`)
 * built as JSON by SQLite, for a subscriber of `languages`: only the files in its
 * languages, and only updates with such a file or none at all (metadata only).
 * Either a page by id after `afterId`, or the given ids. One row per update with
 * the whole payload, so a snapshot page costs one statement and no row objects
 * per column or file. Nullable text fields travel as `null`.
 */
export function wireUpdatesSql(
  nodeId: string,
  languages: readonly string[],
  which: { afterId: string; limit: number } | { ids: readonly string[] },
): [string, unknown[]] {
  const [match, matchArgs] = languageMatchSql('f.language', languages);
  const bool = (col: string) => `json(CASE WHEN ${col} = 1 THEN 'true' ELSE 'false' END)`;
  const select = `SELECT u.id AS id, json_object(
      'id', u.id, 'revision', u.revision, 'kb', u.kb, 'bulletin', u.bulletin, 'title', u.title, 'description', u.description,
      'vendor', u.vendor, 'productFamily', u.product_family, 'product', u.product, 'classification', u.classification,
      'severity', u.severity, 'cves', json(u.cves), 'cveDetails', json(u.cve_details), 'releaseDate', u.release_date,
      'supersedes', json(u.supersedes), 'superseded', ${bool('u.vendor_superseded')}, 'restart', u.restart,
      'install', json_object('successCodes', json(u.success_codes), 'rebootCodes', json(u.reboot_codes)),
      'applicability', json(u.applicability), 'installed', json(u.installed), 'moreInfoUrl', u.more_info_url,
      'files', (SELECT json_group_array(CASE WHEN f.installer IS NULL
          THEN json_object('name', f.name, 'url', f.url, 'size', f.size, 'sha256', f.sha256, 'language', f.language)
          ELSE json_object('name', f.name, 'url', f.url, 'size', f.size, 'sha256', f.sha256, 'language', f.language, 'installer', json(f.installer)) END)
        FROM (SELECT * FROM update_files f WHERE f.update_id = u.id AND ${match} ORDER BY f.position) f),
      'expired', ${bool('u.expired')}, 'origin', u.origin, 'releaseVersion', u.release_version, 'firstVersion', u.first_version,
      'customSeverity', CASE WHEN cs.id IS NULL THEN NULL ELSE coalesce(cs.origin_key, ? || ':' || cs.id) END,
      'contentHash', u.content_hash) AS payload
    FROM updates u LEFT JOIN custom_severities cs ON cs.id = u.custom_severity_id
    WHERE (u.languages = '' OR EXISTS (SELECT 1 FROM update_files f WHERE f.update_id = u.id AND ${match}))`;
  const args: unknown[] = [...matchArgs, nodeId, ...matchArgs];
  if ('ids' in which) return [`${select} AND u.id IN (SELECT value FROM json_each(?))`, [...args, JSON.stringify(which.ids)]];
  return [`${select} AND u.id > ? ORDER BY u.id LIMIT ?`, [...args, which.afterId, which.limit]];
}

/** Prepared statements of the replica writer, per connection. */
export class ReplicaWriter {
  #s: Record<string, Stmt> = {};

  constructor(private readonly db: NativeDb) {
    db.exec(INSERT_NEW_TABLE);
    const prep = (sql: string) => prepare(db, sql);
    this.#s = {
      get: prep('SELECT revision, languages FROM updates WHERE id = ?'),
      held: prep('SELECT id FROM updates WHERE id IN (SELECT value FROM json_each(?))'),
      upsert: prep(`INSERT INTO updates (id, revision, kb, bulletin, title, description, vendor, product_family, product, classification,
        severity, cves, cve_details, release_date, supersedes, vendor_superseded, restart, success_codes, reboot_codes,
        applicability, installed, more_info_url, languages, expired, content_hash, release_version, first_version, origin, updated_at)
        VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
        ON CONFLICT(id) DO UPDATE SET revision=excluded.revision, kb=excluded.kb, bulletin=excluded.bulletin, title=excluded.title,
        description=excluded.description, vendor=excluded.vendor, product_family=excluded.product_family, product=excluded.product,
        classification=excluded.classification, severity=excluded.severity, cves=excluded.cves, cve_details=excluded.cve_details,
        release_date=excluded.release_date, supersedes=excluded.supersedes, vendor_superseded=excluded.vendor_superseded,
        restart=excluded.restart, success_codes=excluded.success_codes,
        reboot_codes=excluded.reboot_codes, applicability=excluded.applicability, installed=excluded.installed,
        more_info_url=excluded.more_info_url, languages=excluded.languages, expired=excluded.expired, content_hash=excluded.content_hash,
        release_version=excluded.release_version, first_version=excluded.first_version, origin=excluded.origin, updated_at=excluded.updated_at`),
      ...Object.fromEntries(Object.entries(INSERT_NEW).map(([k, q]) => [k, prep(q)])),
      row: prep(INSERT_NEW_ROW),
      expire: prep('UPDATE updates SET expired = 1, revision = ?, updated_at = ? WHERE id = ? AND revision < ?'),
      delete: prep('DELETE FROM updates WHERE id = ?'),
      delFiles: prep('DELETE FROM update_files WHERE update_id = ?'),
      delCves: prep('DELETE FROM update_cves WHERE update_id = ?'),
      delSup: prep('DELETE FROM update_supersedes WHERE update_id = ?'),
      file: prep('INSERT OR IGNORE INTO update_files (update_id, sha256, name, url, size, language, position, installer) VALUES (?,?,?,?,?,?,?,?)'),
      cve: prep('INSERT OR IGNORE INTO update_cves (update_id, cve) VALUES (?,?)'),
      sup: prep('INSERT OR IGNORE INTO update_supersedes (update_id, kb) VALUES (?,?)'),
      severity: prep('UPDATE updates SET custom_severity_id = (SELECT id FROM custom_severities WHERE origin_key = ?) WHERE id = ?'),
    };
  }

  /** INSERT_NEW on this connection: updates this node does not hold yet, each payload's JSON as it arrived; returns how many. */
  insertNew(payloads: readonly Uint8Array[], now: number): number {
    for (const [i, p] of payloads.entries()) this.#s.row!.run(i, p);
    let n = 0;
    for (const [k, args] of insertNewArgs(null, now, true)) {
      const r = this.#s[k]!.run(...args).changes;
      if (k === 'updates') n = r;
    }
    return n;
  }

  /** Which of these updates this node holds. */
  held(ids: readonly string[]): Set<string> {
    if (!ids.length) return new Set();
    return new Set((this.#s.held!.all(JSON.stringify(ids)) as { id: string }[]).map((r) => r.id));
  }

  current(id: string): { revision: number; languages: string } | undefined {
    return this.#s.get!.get(id) as { revision: number; languages: string } | undefined;
  }

  /**
   * Writes an update as the parent sent it (files already filtered to this node's
   * subtree). Skipped when this node holds a newer revision: replays after a
   * snapshot may carry older states, and the newest must win; except in a complete
   * resync (`exact`), whose snapshot is the parent's state as it is: one restored from
   * an older backup holds older revisions, and its children follow it. `knownAbsent`:
   * the caller knows this node has no row for it (no lookup).
   */
  upsert(p: UpdatePayload, now: number, knownAbsent = false, exact = false): boolean {
    const cur = knownAbsent ? undefined : this.current(p.id);
    if (cur && cur.revision > p.revision && !exact) return false;
    const { expired, origin, releaseVersion, firstVersion, customSeverity: _level, contentHash: hash, ...line } = p;
    // The origin's hash when the parent sends it (it describes the whole line, not
    // the files this subtree receives); computed here from an older parent's payload.
    this.#s.upsert!.run(p.id, p.revision, ...columns(line), expired ? 1 : 0, hash ?? contentHash(line), releaseVersion, firstVersion, origin, now);
    if (cur) this.#clear(p.id); // a new update has no rows to replace
    for (const [i, f] of p.files.entries())
      this.#s.file!.run(p.id, f.sha256, f.name, f.url, f.size, f.language, i, f.installer ? JSON.stringify(f.installer) : null);
    for (const c of p.cves) this.#s.cve!.run(p.id, c);
    for (const kb of p.supersedes) this.#s.sup!.run(p.id, kb);
    // Absent (an old import entry) keeps this node's assignment; null clears it (a new row has none).
    if (p.customSeverity !== undefined && (cur || p.customSeverity !== null)) this.#s.severity!.run(p.customSeverity, p.id);
    return true;
  }

  expire(id: string, revision: number, now: number): boolean {
    return this.#s.expire!.run(revision, now, id, revision).changes > 0;
  }

  /** Removes an update this node no longer receives; returns its languages, or null if absent. */
  delete(id: string): string | null {
    const cur = this.current(id);
    if (!cur) return null;
    this.#s.delete!.run(id);
    this.#clear(id);
    return cur.languages;
  }

  /** The ids of updates not in `seen` (a subquery of ids). */
  ids(seen: string): { id: string }[] {
    return prepare(this.db, `SELECT id FROM updates WHERE id NOT IN ${seen}`).all() as { id: string }[];
  }

  #clear(id: string): void {
    this.#s.delFiles!.run(id);
    this.#s.delCves!.run(id);
    this.#s.delSup!.run(id);
  }
}
