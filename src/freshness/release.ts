/**
 * A catalog release as it travels down the tree (change kind `release`, key = its
 * version): when it was published and imported at the root, and the updates it added
 * or changed, each as [id, revision, file languages, product family]. Every parent
 * sends a child only the updates of the child's languages.
 */
export interface ReleasePayload {
  version: string;
  publishedAt: number;
  importedAt: number;
  updates: [string, number, string, string][];
}

/** Where an update's languages are in a release's `updates` tuples (for `filterUpdateList`). */
export const RELEASE_LANGUAGES_AT = 2;

/** Releases kept per node (the newest by publication); older ones are pruned. */
export const RELEASES_KEPT = 50;

/** Keeps the newest releases (and their updates). */
export const RELEASE_PRUNE_SQL = `DELETE FROM freshness_releases WHERE version IN (SELECT version FROM freshness_releases ORDER BY published_at DESC, version LIMIT -1 OFFSET ${RELEASES_KEPT})`;
export const RELEASE_UPDATES_PRUNE_SQL = 'DELETE FROM freshness_updates WHERE version NOT IN (SELECT version FROM freshness_releases)';

/** The payload of release `r` (a row of freshness_releases), as JSON text, from this node's tables. */
export const RELEASE_PAYLOAD_SQL = `json_object('version', r.version, 'publishedAt', r.published_at, 'importedAt', r.imported_at,
  'updates', (SELECT json_group_array(json_array(f.update_id, f.revision, f.languages, f.family)) FROM freshness_updates f WHERE f.version = r.version))`;

/** Appends the log entry of release `?` (args: created_at, version). */
export const RELEASE_LOG_SQL = `INSERT INTO change_log (kind, key, op, languages, payload, created_at)
  SELECT 'release', r.version, 'upsert', '', ${RELEASE_PAYLOAD_SQL}, ? FROM freshness_releases r WHERE r.version = ?`;

/** The newest releases' payloads (for a snapshot). */
export const RELEASE_SNAPSHOT_SQL = `SELECT r.version AS id, ${RELEASE_PAYLOAD_SQL} AS payload FROM freshness_releases r ORDER BY r.published_at DESC, r.version LIMIT ${RELEASES_KEPT}`;
