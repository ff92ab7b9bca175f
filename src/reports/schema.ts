import { sqliteTable, text, integer } from 'drizzle-orm/sqlite-core';

/** The compliance summary once a day (the last snapshot of the day wins): the dashboard's trend. */
export const complianceSnapshots = sqliteTable('compliance_snapshots', {
  day: text('day').primaryKey(),
  summary: text('summary').notNull(),
  takenAt: integer('taken_at').notNull(),
});

/**
 * The roll-up: the latest compliance summary of every node below this one, as its
 * child forwarded it. `reported_at` is when the node made it, on this node's clock
 * (received time minus the age the chain reported), `via` the child it came through.
 */
export const nodeReports = sqliteTable('node_reports', {
  nodeId: text('node_id').primaryKey(),
  name: text('name').notNull(),
  parentId: text('parent_id').notNull(),
  via: text('via').notNull(),
  reportedAt: integer('reported_at').notNull(),
  intervalMs: integer('interval_ms').notNull(),
  receivedAt: integer('received_at').notNull(),
  digest: text('digest').notNull(),
  summary: text('summary').notNull(),
});
