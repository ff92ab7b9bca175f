import { sqliteTable, text, integer } from 'drizzle-orm/sqlite-core';

/** The compliance summary once a day (the last snapshot of the day wins): the dashboard's trend. */
export const complianceSnapshots = sqliteTable('compliance_snapshots', {
  day: text('day').primaryKey(),
  summary: text('summary').notNull(),
  takenAt: integer('taken_at').notNull(),
});
