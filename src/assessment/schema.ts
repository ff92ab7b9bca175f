import { sqliteTable, text, integer, index, primaryKey } from 'drizzle-orm/sqlite-core';

/** Enrolment tokens an admin hands to agents (stored as SHA-256; expiry and a use limit). */
export const enrollmentTokens = sqliteTable('enrollment_tokens', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  tokenHash: text('token_hash').notNull().unique(),
  createdAt: integer('created_at').notNull(),
  createdBy: text('created_by'),
  expiresAt: integer('expires_at').notNull(),
  maxUses: integer('max_uses'),
  uses: integer('uses').notNull().default(0),
  revokedAt: integer('revoked_at'),
});

/**
 * Managed computers of this node. `inventory` is the last full inventory (JSON, as
 * normalised on receipt); `scanId` counts reports, so a delta names its base. The
 * summary columns (required by severity...) are kept current by the assessor.
 */
export const computers = sqliteTable(
  'computers',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    /** The agent's stable identifier for the machine. */
    agentKey: text('agent_key').notNull().unique(),
    name: text('name').notNull(),
    osFamily: text('os_family').notNull(),
    osName: text('os_name'),
    osVersion: text('os_version'),
    arch: text('arch'),
    language: text('language'),
    /** Every language of the computer (OS and installed products such as Office language packs), sorted, comma-separated: the files it is given. */
    languages: text('languages').notNull().default(''),
    agentVersion: text('agent_version'),
    inventory: text('inventory').notNull(),
    scanId: integer('scan_id').notNull(),
    lastScanAt: integer('last_scan_at').notNull(),
    createdAt: integer('created_at').notNull(),
    required: integer('required').notNull().default(0),
    unknown: integer('unknown').notNull().default(0),
    reqCritical: integer('req_critical').notNull().default(0),
    reqImportant: integer('req_important').notNull().default(0),
    reqModerate: integer('req_moderate').notNull().default(0),
    reqLow: integer('req_low').notNull().default(0),
    reqUnrated: integer('req_unrated').notNull().default(0),
    assessedAt: integer('assessed_at'),
  },
  (t) => [
    index('computers_name').on(t.name),
    index('computers_last_scan').on(t.lastScanAt),
    index('computers_os').on(t.osName),
    index('computers_language').on(t.language),
  ],
);

/** Which products each computer reports: the candidate set for an update's product index. */
export const computerProducts = sqliteTable(
  'computer_products',
  {
    product: text('product').notNull(),
    computerId: integer('computer_id').notNull(),
  },
  (t) => [primaryKey({ columns: [t.product, t.computerId] }), index('computer_products_computer').on(t.computerId)],
);

/**
 * Per (computer, update), the states worth a row: `required` and `unknown` (what
 * targeting, filters and reports ask for). Installed, superseded and
 * not-applicable are counted per update in `update_compliance`, not stored per pair.
 */
export const computerUpdates = sqliteTable(
  'computer_updates',
  {
    computerId: integer('computer_id').notNull(),
    updateId: text('update_id').notNull(),
    state: text('state', { enum: ['required', 'unknown'] }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.computerId, t.updateId] }), index('computer_updates_update').on(t.updateId, t.state)],
);

/** Per update, how many computers are in each state (applicable = all but not-applicable). */
export const updateCompliance = sqliteTable('update_compliance', {
  updateId: text('update_id').primaryKey(),
  installed: integer('installed').notNull(),
  required: integer('required').notNull(),
  unknown: integer('unknown').notNull(),
  superseded: integer('superseded').notNull(),
});

/** Admin-defined filters: a condition over computer fields (filters.ts). */
export const customFilters = sqliteTable('custom_filters', {
  id: integer('id').primaryKey({ autoIncrement: true }),
  name: text('name').notNull().unique(),
  condition: text('condition').notNull(),
  createdAt: integer('created_at').notNull(),
  createdBy: text('created_by'),
});

/** The assessor's position in this node's change log: catalog changes after it are not yet assessed. */
export const assessmentState = sqliteTable('assessment_state', {
  id: integer('id').primaryKey(),
  cursor: integer('cursor').notNull(),
  /** Set while a full reassessment runs; a node that stopped during one runs it again. */
  fullPending: integer('full_pending').notNull().default(0),
  fullAt: integer('full_at'),
});
