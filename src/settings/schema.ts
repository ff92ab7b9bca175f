import { sqliteTable, text, integer } from 'drizzle-orm/sqlite-core';

/** Node settings as JSON documents by key (e.g. `storage`). */
export const settings = sqliteTable('settings', {
  key: text('key').primaryKey(),
  value: text('value').notNull(),
  updatedAt: integer('updated_at').notNull(),
  updatedBy: text('updated_by'),
  /** Node id of the node a replicated setting comes from; '' for this node's own. */
  origin: text('origin').notNull().default(''),
});
