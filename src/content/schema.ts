import { sqliteTable, text, integer, index } from 'drizzle-orm/sqlite-core';

/**
 * One row per file the node needs, by content: the same sha256 listed by many
 * updates is one row and one copy on disk. `state` moves pending -> downloading ->
 * verified, or -> failed (retried after `nextAttemptAt` until `attempts` reaches the
 * ceiling). Only `verified` files are ever served.
 */
export const contentFiles = sqliteTable(
  'content_files',
  {
    sha256: text('sha256').primaryKey(),
    size: integer('size').notNull(),
    url: text('url').notNull(),
    name: text('name').notNull(),
    state: text('state', { enum: ['pending', 'downloading', 'verified', 'failed'] }).notNull(),
    bytesDone: integer('bytes_done').notNull(),
    attempts: integer('attempts').notNull(),
    lastError: text('last_error'),
    nextAttemptAt: integer('next_attempt_at').notNull(),
    verifiedAt: integer('verified_at'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
  },
  (t) => [index('content_files_state').on(t.state, t.nextAttemptAt)],
);

/** Updates an admin marked for download (until policies decide what is needed). */
export const downloadMarks = sqliteTable('download_marks', {
  updateId: text('update_id').primaryKey(),
  markedAt: integer('marked_at').notNull(),
  markedBy: text('marked_by'),
});
