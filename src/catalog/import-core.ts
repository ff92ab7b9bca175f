import { AppError, type FieldError } from '../lib/errors.js';
import { changelog } from '../changelog/index.js';
import { updateLanguages, type CatalogHeader, type CatalogUpdate } from './format.js';
import { parseCatalog, type ParsedLine } from './parse-lines.js';

/**
 * Applies one catalog file to the database in a single write transaction:
 * validate every line, add, change or leave each update, expire what the file no
 * longer lists, record the release. Any invalid line means ROLLBACK, so a failed
 * import leaves nothing behind. The file is read line by line (parsed, validated
 * and hashed by `parse`, on another thread when the caller gives one), new updates
 * are written a run at a time (bulk.ts) and the set of ids seen lives in a TEMP
 * table, so memory does not grow with the catalog.
 *
 * The logic runs over `Exec` (db/exec.ts), so that the same code drives the
 * `libsql` binding (prepared statements, in a worker thread) and @libsql/client
 * (a remote libsql server).
 */
export type { Exec } from '../db/exec.js';
import type { Exec } from '../db/exec.js';
import { RELEASE_LOG_SQL, RELEASE_PRUNE_SQL, RELEASE_UPDATES_PRUNE_SQL } from '../freshness/release.js';
import { INSERT_NEW, INSERT_NEW_TABLE, insertNewArgs } from './bulk.js';

export interface ImportMeta {
  /** Node id of this node: the origin of what it imports. */
  origin: string;
  fileSha256: string;
  keyId: string;
  importedBy: string;
  source: string;
  now: number;
}

export interface ImportResult {
  version: string;
  publisher: string;
  createdAt: string;
  keyId: string;
  updates: number;
  added: number;
  changed: number;
  expired: number;
  unchanged: number;
  durationMs: number;
  replay: boolean;
}

const MAX_ERRORS = 20;
/** New updates handed to SQLite at once (their JSON text, ~1.3 KB each). */
const BULK_RUN = 1_000;

const UPDATE_UPDATE = `UPDATE updates SET revision=?, kb=?, bulletin=?, title=?, description=?, vendor=?, product_family=?, product=?,
  classification=?, severity=?, cves=?, cve_details=?, release_date=?, supersedes=?, vendor_superseded=?, restart=?,
  success_codes=?, reboot_codes=?, applicability=?, installed=?, more_info_url=?, languages=?, expired=0, content_hash=?,
  release_version=?, origin=?, updated_at=? WHERE id=?`;

/**
 * The replicated form of an update: the catalog line with this node's revision and
 * state. A child applies it whole; it is also what a child republishes.
 */
export interface UpdatePayload extends CatalogUpdate {
  expired: boolean;
  origin: string;
  releaseVersion: string;
  firstVersion: string;
  /** Key of the custom severity level (see severities.ts); absent: unchanged, null: none. */
  customSeverity?: string | null;
  /** The origin's content hash of the line (sent since snapshots are built in SQL; absent from older parents). */
  contentHash?: string;
}

/**
 * Appends an upsert of an update to the change log (same transaction as the write),
 * as a state entry: no payload, the parent sends the row as it is then.
 */
export async function appendUpdateChange(db: Exec, u: Pick<CatalogUpdate, 'id' | 'files'>, now: number): Promise<void> {
  await changelog.append(db, { kind: 'update', key: u.id, op: 'upsert', languages: updateLanguages(u).join(','), payload: '' }, now);
}

const INSERT_FILE = 'INSERT INTO update_files (update_id, sha256, name, url, size, language, position, installer) VALUES (?,?,?,?,?,?,?,?)';
const INSERT_CVE = 'INSERT OR IGNORE INTO update_cves (update_id, cve) VALUES (?,?)';
const INSERT_SUPERSEDES = 'INSERT OR IGNORE INTO update_supersedes (update_id, kb) VALUES (?,?)';

export function columns(u: CatalogUpdate): unknown[] {
  return [
    u.kb,
    u.bulletin,
    u.title,
    u.description ?? null,
    u.vendor,
    u.productFamily,
    u.product,
    u.classification,
    u.severity,
    JSON.stringify(u.cves),
    JSON.stringify(u.cveDetails ?? []),
    u.releaseDate,
    JSON.stringify(u.supersedes),
    u.superseded ? 1 : 0,
    u.restart,
    JSON.stringify(u.install.successCodes),
    JSON.stringify(u.install.rebootCodes),
    JSON.stringify(u.applicability),
    JSON.stringify(u.installed),
    u.moreInfoUrl ?? null,
    updateLanguages(u).join(','),
  ];
}

async function insertChildren(db: Exec, u: CatalogUpdate): Promise<void> {
  const seen = new Set<string>();
  for (const [i, f] of u.files.entries()) {
    // One manifest row per distinct file of an update; a repeated hash adds nothing.
    if (seen.has(f.sha256)) continue;
    seen.add(f.sha256);
    await db.run(INSERT_FILE, [u.id, f.sha256, f.name, f.url, f.size, f.language, i, f.installer ? JSON.stringify(f.installer) : null]);
  }
  for (const c of u.cves) await db.run(INSERT_CVE, [u.id, c]);
  for (const kb of u.supersedes) await db.run(INSERT_SUPERSEDES, [u.id, kb]);
}

async function deleteChildren(db: Exec, id: string): Promise<void> {
  await db.run('DELETE FROM update_files WHERE update_id=?', [id]);
  await db.run('DELETE FROM update_cves WHERE update_id=?', [id]);
  await db.run('DELETE FROM update_supersedes WHERE update_id=?', [id]);
}

function invalid(errors: FieldError[], detail?: string): AppError {
  return new AppError(
    'catalog-invalid',
    detail ?? `${errors.length} error(s); the first at line ${errors[0]?.line}: ${errors[0]?.path}: ${errors[0]?.message}`,
    {
      errors,
    },
  );
}

/** Validates the header and decides whether this version may be imported. */
async function admit(db: Exec, header: CatalogHeader, meta: ImportMeta): Promise<boolean> {
  const same = await db.get<{ file_sha256: string }>('SELECT file_sha256 FROM catalog_releases WHERE version=? ORDER BY id LIMIT 1', [header.version]);
  if (same) {
    if (same.file_sha256 !== meta.fileSha256)
      throw new AppError('catalog-version-conflict', `version ${header.version} was imported before with different content`);
    return true;
  }
  const latest = await db.get<{ version: string; created_at: string }>('SELECT version, created_at FROM catalog_releases ORDER BY id DESC LIMIT 1', []);
  if (latest && Date.parse(latest.created_at) > Date.parse(header.createdAt))
    throw new AppError(
      'catalog-stale',
      `version ${header.version} (created ${header.createdAt}) is older than the imported ${latest.version} (created ${latest.created_at})`,
    );
  return false;
}

export async function applyCatalog(
  db: Exec,
  file: string,
  meta: ImportMeta,
  /** Runs `fn` in one write transaction on `db`: COMMIT when it resolves, ROLLBACK when it throws. */
  transaction: <T>(fn: () => Promise<T>) => Promise<T>,
  /** The parse stage (parse-lines.ts): on this thread by default, or on a worker of its own. */
  parse: (file: string, origin: string) => AsyncIterable<ParsedLine> = parseCatalog,
): Promise<ImportResult> {
  const started = Date.now();
  const errors: FieldError[] = [];
  let header: CatalogHeader | null = null;
  let replay = false;
  let lineNo = 0;
  let count = 0;
  let added = 0;
  let changed = 0;
  let unchanged = 0;

  return transaction(async () => {
    await db.exec('CREATE TEMP TABLE IF NOT EXISTS import_seen (id TEXT PRIMARY KEY) WITHOUT ROWID');
    await db.exec(INSERT_NEW_TABLE);
    // New updates are written in bulk, a run at a time (INSERT_NEW): SQLite reads their JSON.
    let newRun: string[] = [];
    const flush = async () => {
      if (!newRun.length) return;
      const list = `[${newRun.join(',')}]`;
      newRun = [];
      for (const [k, args] of insertNewArgs(list, meta.now, false)) await db.run(INSERT_NEW[k], args);
    };
    await db.exec('DELETE FROM temp.import_seen');
    for await (const item of parse(file, meta.origin)) {
      if (errors.length >= MAX_ERRORS) break;
      lineNo = item.line;
      if (item.t === 'errors') {
        if (item.counted) count++;
        errors.push(...item.errors);
        if (item.fatal) break;
        continue;
      }
      if (item.t === 'header') {
        header = item.header;
        replay = await admit(db, header, meta);
        continue;
      }
      count++;
      const fresh = await db.run('INSERT OR IGNORE INTO temp.import_seen (id) VALUES (?)', [item.id]);
      if (fresh === 0) {
        errors.push({ line: item.line, path: 'id', message: `duplicate update id ${item.id}` });
        continue;
      }
      if (errors.length > 0) continue; // the import will be rolled back: validate only
      const existing = await db.get<{ revision: number; content_hash: string; expired: number; first_version: string }>(
        'SELECT revision, content_hash, expired, first_version FROM updates WHERE id=?',
        [item.id],
      );
      if (!existing) {
        newRun.push(item.json);
        if (newRun.length >= BULK_RUN) await flush();
        added++;
      } else if (existing.content_hash !== item.hash || existing.expired) {
        const u = JSON.parse(item.json) as CatalogUpdate;
        const revision = Math.max(Number(existing.revision) + 1, u.revision);
        await db.run(UPDATE_UPDATE, [revision, ...columns(u), item.hash, header!.version, meta.origin, meta.now, u.id]);
        await deleteChildren(db, u.id);
        await insertChildren(db, u);
        await appendUpdateChange(db, u, meta.now);
        changed++;
      } else {
        unchanged++;
      }
    }
    if (!header && errors.length === 0) errors.push({ line: 1, path: '(header)', message: 'the catalog is empty' });
    if (header && errors.length === 0 && count !== header.updates)
      errors.push({ line: lineNo, path: '(header).updates', message: `the header announces ${header.updates} updates, the file holds ${count}` });
    if (errors.length > 0) throw invalid(errors.slice(0, MAX_ERRORS));
    await flush();

    const h = header!;
    // Whatever this release no longer lists is expired, not deleted: computers may
    // still report it installed, and a later release may list it again.
    // Expiry travels as its own small change: id and new revision.
    await db.run(
      changelog.appendSelectSql(`SELECT 'update', id, 'expire', languages, json_object('id', id, 'revision', revision + 1), ? FROM updates
       WHERE expired=0 AND id NOT IN (SELECT id FROM temp.import_seen) ORDER BY id`),
      [meta.now],
    );
    const expired = await db.run(
      'UPDATE updates SET expired=1, revision=revision+1, release_version=?, updated_at=? WHERE expired=0 AND id NOT IN (SELECT id FROM temp.import_seen)',
      [h.version, meta.now],
    );
    const durationMs = Date.now() - started;
    await db.run(
      `INSERT INTO catalog_releases (version, publisher, key_id, file_sha256, created_at, imported_at, imported_by, source, updates, added, changed, expired, unchanged, duration_ms)
       VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
      [
        h.version,
        h.publisher,
        meta.keyId,
        meta.fileSha256,
        h.createdAt,
        meta.now,
        meta.importedBy,
        meta.source,
        count,
        added,
        changed,
        expired,
        unchanged,
        durationMs,
      ],
    );
    if (!replay) {
      // Freshness: the release, its new and changed updates (visible here now), and its
      // log entry, so every node below learns what this release brings it.
      await db.run('INSERT INTO freshness_releases (version, published_at, imported_at, received_at) VALUES (?, ?, ?, ?) ON CONFLICT(version) DO NOTHING', [
        h.version,
        Date.parse(h.createdAt),
        meta.now,
        meta.now,
      ]);
      await db.run(
        `INSERT OR IGNORE INTO freshness_updates (version, update_id, revision, languages, family, visible_at)
         SELECT ?, id, revision, languages, coalesce(product_family, ''), ? FROM updates WHERE release_version = ? AND expired = 0 AND updated_at = ?`,
        [h.version, meta.now, h.version, meta.now],
      );
      await db.run(RELEASE_LOG_SQL, [meta.now, h.version]);
      await db.run(RELEASE_PRUNE_SQL, []);
      await db.run(RELEASE_UPDATES_PRUNE_SQL, []);
    }
    await db.exec('DELETE FROM temp.import_seen');
    return {
      version: h.version,
      publisher: h.publisher,
      createdAt: h.createdAt,
      keyId: meta.keyId,
      updates: count,
      added,
      changed,
      expired,
      unchanged,
      durationMs,
      replay,
    };
  });
}
