// Every domain's tables, for drizzle's relational queries and the migrator.
export * from '../auth/schema.js';
export * from '../settings/schema.js';
export * from '../catalog/schema.js';
export * from '../content/schema.js';
export * from '../changelog/schema.js';
export * from '../replication/schema.js';
export * from '../assessment/schema.js';
export * from '../delivery/schema.js';
export * from '../reports/schema.js';
export * from '../freshness/schema.js';
