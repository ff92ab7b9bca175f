import { sqliteTable, text, integer } from 'drizzle-orm/sqlite-core';

/**
 * The change log: every replicated write appends one entry in the same transaction.
 * `languages` is the comma list of the entity's file languages ('' = metadata only,
 * sent to every child), so the parent filters without parsing payloads. An update
 * upsert's `payload` is '' (a state entry): the parent sends the row as it is when
 * the entry goes out (catalog/replicated.ts). Read by `seq` only. Only src/changelog/
 * touches this table.
 */
export const changeLog = sqliteTable('change_log', {
  seq: integer('seq').primaryKey({ autoIncrement: true }),
  kind: text('kind').notNull(),
  key: text('key').notNull(),
  op: text('op').notNull(),
  languages: text('languages').notNull(),
  payload: text('payload').notNull(),
  createdAt: integer('created_at').notNull(),
});
