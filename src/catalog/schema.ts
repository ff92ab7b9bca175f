import { sqliteTable, text, integer, primaryKey, index } from 'drizzle-orm/sqlite-core';
import { sql } from 'drizzle-orm';

/** One row per catalog import (a release), kept as the import history. */
export const catalogReleases = sqliteTable(
  'catalog_releases',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    version: text('version').notNull(),
    publisher: text('publisher').notNull(),
    keyId: text('key_id').notNull(),
    fileSha256: text('file_sha256').notNull(),
    createdAt: text('created_at').notNull(),
    importedAt: integer('imported_at').notNull(),
    importedBy: text('imported_by').notNull(),
    source: text('source').notNull(),
    updates: integer('updates').notNull(),
    added: integer('added').notNull(),
    changed: integer('changed').notNull(),
    expired: integer('expired').notNull(),
    unchanged: integer('unchanged').notNull(),
    durationMs: integer('duration_ms').notNull(),
  },
  (t) => [index('catalog_releases_version').on(t.version)],
);

/**
 * Updates of the catalog. Lists (cves, codes, rules) are JSON text: they are read
 * whole with the update. What is filtered or joined on has its own table or column.
 * `revision` is this node's: it starts at the publisher's revision and rises by one
 * on every change the node applies (content change, expiry, return from expiry).
 */
export const updates = sqliteTable(
  'updates',
  {
    id: text('id').primaryKey(),
    revision: integer('revision').notNull(),
    kb: text('kb'),
    bulletin: text('bulletin'),
    title: text('title').notNull(),
    description: text('description'),
    vendor: text('vendor').notNull(),
    productFamily: text('product_family'),
    product: text('product').notNull(),
    classification: text('classification').notNull(),
    severity: text('severity'),
    customSeverityId: integer('custom_severity_id'),
    cves: text('cves').notNull(),
    cveDetails: text('cve_details').notNull(),
    releaseDate: text('release_date').notNull(),
    supersedes: text('supersedes').notNull(),
    vendorSuperseded: integer('vendor_superseded').notNull(),
    restart: text('restart').notNull(),
    successCodes: text('success_codes').notNull(),
    rebootCodes: text('reboot_codes').notNull(),
    applicability: text('applicability').notNull(),
    installed: text('installed').notNull(),
    moreInfoUrl: text('more_info_url'),
    /** Comma-separated, sorted languages of the update's files (`neutral` included). */
    languages: text('languages').notNull(),
    expired: integer('expired').notNull(),
    contentHash: text('content_hash').notNull(),
    /** Catalog version that last listed this update. */
    releaseVersion: text('release_version').notNull(),
    firstVersion: text('first_version').notNull(),
    /** Node id of the node that imported it; replicated updates are read-only elsewhere. */
    origin: text('origin').notNull().default(''),
    updatedAt: integer('updated_at').notNull(),
  },
  (t) => [
    index('updates_kb').on(t.kb),
    index('updates_product').on(t.product),
    index('updates_release').on(t.releaseDate, t.id),
    index('updates_severity').on(t.severity),
    index('updates_custom_severity').on(t.customSeverityId),
    // The expired few, so that counting the catalog's states (every /metrics scrape)
    // reads an index instead of every row of the table.
    index('updates_expired').on(t.id).where(sql`${t.expired} = 1`),
  ],
);

/**
 * An update's files in catalog order (`position`, which is install order), each with
 * its installer (JSON of delivery/installers.ts; null: downloaded, never run).
 */
export const updateFiles = sqliteTable(
  'update_files',
  {
    updateId: text('update_id').notNull(),
    sha256: text('sha256').notNull(),
    name: text('name').notNull(),
    url: text('url').notNull(),
    size: integer('size').notNull(),
    language: text('language').notNull(),
    position: integer('position').notNull().default(0),
    installer: text('installer'),
  },
  (t) => [primaryKey({ columns: [t.updateId, t.sha256] }), index('update_files_sha256').on(t.sha256)],
);

export const updateCves = sqliteTable(
  'update_cves',
  {
    updateId: text('update_id').notNull(),
    cve: text('cve').notNull(),
  },
  (t) => [primaryKey({ columns: [t.updateId, t.cve] }), index('update_cves_cve').on(t.cve)],
);

/** Supersedence edges: `updateId` supersedes the update(s) with `kb` for the same product. */
export const updateSupersedes = sqliteTable(
  'update_supersedes',
  {
    updateId: text('update_id').notNull(),
    kb: text('kb').notNull(),
  },
  (t) => [primaryKey({ columns: [t.updateId, t.kb] }), index('update_supersedes_kb').on(t.kb)],
);

/** Admin-defined severity levels, ordered by `rank` (0 = most urgent). */
export const customSeverities = sqliteTable('custom_severities', {
  id: integer('id').primaryKey({ autoIncrement: true }),
  name: text('name').notNull().unique(),
  rank: integer('rank').notNull(),
  createdAt: integer('created_at').notNull(),
  /**
   * Set on levels replicated from upstream: `<origin node id>:<id there>`, the key
   * the level travels under. Null for this node's own levels, which travel as
   * `<this node id>:<id>`. Replicated levels are read-only here.
   */
  originKey: text('origin_key').unique(),
});
