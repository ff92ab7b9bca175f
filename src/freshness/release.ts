import { prepare, type NativeDb } from '../db/native.js';
import { languageListMatchSql } from '../lib/languages.js';
import { changelog, filterUpdateList, type ApplyTx, type Change, type KindApplier, type ReplicatedKind } from '../changelog/index.js';

const { appendSelectSql } = changelog;

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

/** The payload of release `r` (a row of freshness_releases), as JSON text, from this node's tables; its updates those `filter` (SQL on `f`) keeps. */
const releasePayloadSql = (filter = '1') => `json_object('version', r.version, 'publishedAt', r.published_at, 'importedAt', r.imported_at,
  'updates', (SELECT json_group_array(json_array(f.update_id, f.revision, f.languages, f.family)) FROM freshness_updates f WHERE f.version = r.version AND ${filter}))`;

/** Appends the log entry of release `?` (args: created_at, version). */
export const RELEASE_LOG_SQL = appendSelectSql(
  `SELECT 'release', r.version, 'upsert', '', ${releasePayloadSql()}, ? FROM freshness_releases r WHERE r.version = ?`,
);

/**
 * The newest releases' payloads for a snapshot to a subscriber of `languages`, with
 * its arguments: filterUpdateList's output, built by SQLite (a first release lists
 * the whole catalog: parsed and filtered in JavaScript, 0.2 s of the parent's main
 * thread at 100,000 updates, before the child has anything to load).
 */
export function releaseSnapshotSql(languages: readonly string[]): [string, string[]] {
  const [match, args] = languageListMatchSql('f.languages', languages);
  return [
    `SELECT r.version AS id, ${releasePayloadSql(match)} AS payload FROM freshness_releases r ORDER BY r.published_at DESC, r.version LIMIT ${RELEASES_KEPT}`,
    args,
  ];
}

/**
 * A release from upstream: kept with its updates (those of this subtree's languages),
 * each visible from when this node applied it (an update not here yet gets its time
 * when it arrives: `afterApply`), and logged again for this node's children. Only
 * the newest releases are kept.
 */
class ReleaseApplier implements KindApplier {
  readonly #s;

  constructor(db: NativeDb) {
    const prep = (q: string) => prepare(db, q);
    this.#s = {
      // The release's own fields, read by SQLite: a first release lists the whole catalog
      // (5 MB at 100,000 updates), which JSON.parse would make into objects to read three.
      head: prep("SELECT j ->> 'version' AS version, j ->> 'publishedAt' AS publishedAt, j ->> 'importedAt' AS importedAt FROM (SELECT jsonb(?) AS j)"),
      release: prep('INSERT INTO freshness_releases (version, published_at, imported_at, received_at) VALUES (?, ?, ?, ?) ON CONFLICT(version) DO NOTHING'),
      // A release's updates from its payload in one statement, each visible from when
      // this node applied that revision (or later: `visible`).
      updates: prep(`INSERT OR IGNORE INTO freshness_updates (version, update_id, revision, languages, family, visible_at)
        SELECT ?, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3,
          (SELECT min(u.updated_at, ?) FROM updates u WHERE u.id = j.value ->> 0 AND u.revision >= j.value ->> 1)
        FROM json_each(?, '$.updates') j`),
      // The updates a batch applied ([[id, revision], ...]) become visible in the releases that wait for them.
      visible: prep(`UPDATE freshness_updates SET visible_at = ? FROM json_each(?) j
        WHERE freshness_updates.update_id = j.value ->> 0 AND freshness_updates.revision <= j.value ->> 1 AND freshness_updates.visible_at IS NULL`),
      prune: prep(RELEASE_PRUNE_SQL),
      pruneUpdates: prep(RELEASE_UPDATES_PRUNE_SQL),
    };
  }

  apply(tx: ApplyTx, changes: readonly Change[]): number {
    let applied = 0;
    for (const c of changes) {
      if (c.op !== 'upsert') continue;
      const json = c.payload.toString();
      const p = this.#s.head.get(json) as Pick<ReleasePayload, 'version' | 'publishedAt' | 'importedAt'>;
      this.#s.release.run(p.version, p.publishedAt, p.importedAt, tx.now);
      this.#s.updates.run(p.version, tx.now, json);
      // A release's updates are orphaned only when it is pruned (a scan of them all otherwise).
      if (this.#s.prune.run().changes > 0) this.#s.pruneUpdates.run();
      tx.log({ kind: 'release', key: p.version, op: 'upsert', languages: '', payload: json });
      applied++;
    }
    return applied;
  }

  afterApply(tx: ApplyTx): void {
    const arrived = tx.applied.filter((a) => a.kind === 'update' && a.revision !== undefined).map((a) => [a.key, a.revision]);
    if (arrived.length) this.#s.visible.run(tx.now, JSON.stringify(arrived));
  }
}

/** Catalog freshness (kind `release`): a catalog kind, sent to a child with the catalog. */
export const releaseKind: ReplicatedKind = {
  kind: 'release',
  catalog: true,
  byLanguage: true,
  source: {
    tail: (_ctx, rows, languages) =>
      rows.map((r) => (r.op === 'upsert' ? filterUpdateList(r.payload, RELEASE_LANGUAGES_AT, languages) : Buffer.from(r.payload))),
    async *snapshot(ctx, languages) {
      const [q, args] = releaseSnapshotSql(languages);
      // One per message: a first release lists the whole catalog (about 50 bytes per update).
      for (const r of await ctx.reads.all<{ id: string; payload: string }>(q, args))
        yield [{ seq: 0, kind: 'release', key: r.id, op: 'upsert', payload: Buffer.from(r.payload) }];
    },
  },
  applier: (db) => new ReleaseApplier(db),
};
