import { sqliteTable, text, integer, index, primaryKey } from 'drizzle-orm/sqlite-core';

/**
 * Catalog freshness: every release this node knows (from its import, or replicated as
 * change kind `release`), when it was published (catalog header), imported at the
 * root, and received here; its updates, and when each became visible here.
 */
export const freshnessReleases = sqliteTable('freshness_releases', {
  version: text('version').primaryKey(),
  publishedAt: integer('published_at').notNull(),
  importedAt: integer('imported_at').notNull(),
  receivedAt: integer('received_at').notNull(),
});

/** The updates a release added or changed (those of this node's languages), and when each became visible here. */
export const freshnessUpdates = sqliteTable(
  'freshness_updates',
  {
    version: text('version').notNull(),
    updateId: text('update_id').notNull(),
    revision: integer('revision').notNull(),
    /** Comma list of the update's file languages ('' = no files). */
    languages: text('languages').notNull(),
    family: text('family').notNull(),
    visibleAt: integer('visible_at'),
  },
  (t) => [primaryKey({ columns: [t.version, t.updateId] }), index('freshness_updates_update').on(t.updateId)],
);

/** Each release that missed its goal at a node (in the classes listed): logged once, listed in the hierarchy. */
export const freshnessProblems = sqliteTable(
  'freshness_problems',
  {
    version: text('version').notNull(),
    nodeId: text('node_id').notNull(),
    nodeName: text('node_name').notNull(),
    classes: text('classes').notNull(),
    lateMs: integer('late_ms').notNull(),
    detectedAt: integer('detected_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.version, t.nodeId] })],
);
