import { sqliteTable, text, integer } from 'drizzle-orm/sqlite-core';

/** This node's identity: one row. `epoch` names its change log; a new log gets a new epoch. */
export const nodeIdentity = sqliteTable('node_identity', {
  id: integer('id').primaryKey(),
  nodeId: text('node_id').notNull(),
  epoch: text('epoch').notNull(),
  createdAt: integer('created_at').notNull(),
});

export const joinTokens = sqliteTable('join_tokens', {
  tokenHash: text('token_hash').primaryKey(),
  createdAt: integer('created_at').notNull(),
  createdBy: text('created_by'),
  expiresAt: integer('expires_at').notNull(),
  usedAt: integer('used_at'),
  usedBy: text('used_by'),
});

/** The children that joined this node. */
export const children = sqliteTable('children', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  credentialHash: text('credential_hash').notNull().unique(),
  languages: text('languages').notNull(),
  version: text('version'),
  protocolVersion: integer('protocol_version'),
  ackedSeq: integer('acked_seq').notNull(),
  filesPending: integer('files_pending').notNull().default(0),
  lastSeenAt: integer('last_seen_at'),
  lastError: text('last_error'),
  /** A complete resync is owed: set for a new child, on request, and whenever one starts; cleared only by the child's ack of its end. */
  forceResync: integer('force_resync').notNull(),
  /** The cursor the owed resync's end brings the child to, once sent: an ack of it (in this node's epoch) settles the resync. */
  resyncEndSeq: integer('resync_end_seq'),
  /** Replication rules for this child (JSON, see ReplicationRules): what it gets and when. */
  rules: text('rules').notNull().default('{}'),
  createdAt: integer('created_at').notNull(),
  removedAt: integer('removed_at'),
  /** Serial of the client certificate this node's CA signed for the child at its join (null: none). Only it is accepted. */
  certSerial: text('cert_serial'),
});

/** A child's view of its upstream: one row, advanced in the transaction that applies each batch. */
export const upstreamState = sqliteTable('upstream_state', {
  id: integer('id').primaryKey(),
  address: text('address').notNull(),
  parentId: text('parent_id').notNull(),
  credential: text('credential').notNull(),
  epoch: text('epoch').notNull(),
  cursor: integer('cursor').notNull(),
  /** Languages the replicated data reflects; a backfill cut short leaves the old ones, so it is redone. */
  languages: text('languages').notNull(),
  resyncing: integer('resyncing').notNull(),
  lastError: text('last_error'),
  lastSuccessAt: integer('last_success_at'),
  updatedAt: integer('updated_at').notNull(),
  /** SHA-256 of the join token this node joined with: started with another, it joins again (after a removal, a new parent, an expired certificate). */
  joinTokenHash: text('join_token_hash'),
});
