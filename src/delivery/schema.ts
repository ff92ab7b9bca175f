import { sqliteTable, text, integer, index, primaryKey, uniqueIndex } from 'drizzle-orm/sqlite-core';

/**
 * Agent credentials: `POST /agent/v1/enroll` with an enrolment token creates one.
 * The agent id is also the computer's `agent_key`, so a computer and its
 * credentials are joined by it. Only the secret's SHA-256 is stored.
 */
export const agents = sqliteTable('agents', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  secretHash: text('secret_hash').notNull().unique(),
  enrollmentTokenId: text('enrollment_token_id'),
  createdAt: integer('created_at').notNull(),
  lastSeenAt: integer('last_seen_at'),
  revokedAt: integer('revoked_at'),
  revokedBy: text('revoked_by'),
});

/**
 * Software update policies. `targets` and `installation` (overrides of the node's
 * installation settings, or null) are JSON. `revision` rises on every change.
 * `origin` is '' for this node's own policies, else the node it was replicated
 * from (read-only here); `shared_targets` is what the subtree receives: the
 * targets with filters resolved to their conditions and computer ids (which are
 * this node's own) left out. Names are unique per origin.
 */
export const policies = sqliteTable(
  'policies',
  {
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    description: text('description'),
    enabled: integer('enabled').notNull(),
    startAt: integer('start_at').notNull(),
    deadlineAt: integer('deadline_at'),
    targets: text('targets').notNull(),
    installation: text('installation'),
    followSupersedence: integer('follow_supersedence').notNull(),
    origin: text('origin').notNull().default(''),
    originName: text('origin_name').notNull().default(''),
    sharedTargets: text('shared_targets').notNull().default(''),
    revision: integer('revision').notNull(),
    createdAt: integer('created_at').notNull(),
    createdBy: text('created_by'),
    updatedAt: integer('updated_at').notNull(),
  },
  (t) => [uniqueIndex('policies_origin_name').on(t.origin, t.name)],
);

export const policyUpdates = sqliteTable(
  'policy_updates',
  {
    policyId: text('policy_id').notNull(),
    updateId: text('update_id').notNull(),
    addedAt: integer('added_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.policyId, t.updateId] }), index('policy_updates_update').on(t.updateId)],
);

/** Every change of a policy: who, when, what (JSON detail). */
export const policyHistory = sqliteTable(
  'policy_history',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    policyId: text('policy_id').notNull(),
    at: integer('at').notNull(),
    by: text('by'),
    action: text('action').notNull(),
    detail: text('detail').notNull(),
  },
  (t) => [index('policy_history_policy').on(t.policyId, t.id)],
);

/**
 * Which (policy, computer, update) the policy delivers. A row appears when the
 * computer matches the policy's targets and requires the update; `applicable` is
 * the update's state on the computer at its last assessment (required, installed,
 * superseded, not-applicable, unknown). Rows that are done stay for the report.
 */
export const deliveryTargets = sqliteTable(
  'delivery_targets',
  {
    policyId: text('policy_id').notNull(),
    computerId: integer('computer_id').notNull(),
    updateId: text('update_id').notNull(),
    applicable: text('applicable', { enum: ['required', 'installed', 'superseded', 'not-applicable', 'unknown'] }).notNull(),
    since: integer('since').notNull(),
  },
  (t) => [primaryKey({ columns: [t.policyId, t.computerId, t.updateId] }), index('delivery_targets_computer').on(t.computerId, t.updateId)],
);

/**
 * Per (computer, update), what its agent reported: the computer installs an update
 * once whatever the number of policies that deliver it. Failure counters count
 * failed attempts since `retries_cleared_at`.
 */
export const deliveryStatus = sqliteTable(
  'delivery_status',
  {
    computerId: integer('computer_id').notNull(),
    updateId: text('update_id').notNull(),
    state: text('state', {
      enum: ['downloading', 'downloaded', 'installing', 'installed', 'failed', 'pending-reboot', 'not-applicable', 'ceiling-reached'],
    }).notNull(),
    downloadFailures: integer('download_failures').notNull(),
    installFailures: integer('install_failures').notNull(),
    lastAttempt: integer('last_attempt'),
    lastExitCode: integer('last_exit_code'),
    lastError: text('last_error'),
    lastEventAt: integer('last_event_at').notNull(),
    retriesClearedAt: integer('retries_cleared_at'),
    updatedAt: integer('updated_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.computerId, t.updateId] })],
);

/** Status events as agents sent them, keyed by the agent's own id: a retried batch is stored once. */
export const agentEvents = sqliteTable(
  'agent_events',
  {
    computerId: integer('computer_id').notNull(),
    eventId: text('event_id').notNull(),
    updateId: text('update_id').notNull(),
    policyId: text('policy_id'),
    type: text('type').notNull(),
    attempt: integer('attempt').notNull(),
    at: integer('at').notNull(),
    exitCode: integer('exit_code'),
    message: text('message'),
    receivedAt: integer('received_at').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.computerId, t.eventId] }),
    index('agent_events_received').on(t.receivedAt),
    index('agent_events_update').on(t.computerId, t.updateId, t.at),
  ],
);
