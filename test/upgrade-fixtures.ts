import Database from 'libsql';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { MIGRATIONS_DIR } from '../src/db/client.js';
import { FIXTURES } from './helpers.js';

/** Data folders made by old releases (test/fixtures/upgrade/README.md). */
export const UPGRADE_FIXTURES = join(FIXTURES, 'upgrade');

export interface FixtureTokens {
  admin: string;
  viewer: string;
  agents: { name: string; agentId: string; secret: string }[];
}

/** What the old node answered when the fixture was made (make-fixture.sh). */
export function fixtureAnswers(name: string): any {
  return JSON.parse(readFileSync(join(UPGRADE_FIXTURES, name, 'old-api.json'), 'utf8'));
}

export function fixtureTokens(name: string): FixtureTokens {
  return JSON.parse(readFileSync(join(UPGRADE_FIXTURES, name, 'tokens.json'), 'utf8')) as FixtureTokens;
}

/** Writes the fixture's database into `dataDir` (created) as patchtree.db; returns its path. */
export function placeFixture(name: string, dataDir: string): string {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = join(dataDir, 'patchtree.db');
  writeFileSync(file, gunzipSync(readFileSync(join(UPGRADE_FIXTURES, name, 'patchtree.db.gz'))), { mode: 0o600 });
  return file;
}

export interface MigrationRecord {
  hash: string;
  createdAt: number;
}

/** Every migration of migrations/meta/_journal.json as drizzle's migrator records it: the file's SHA-256 and the journal's `when`. */
export function journalMigrations(): (MigrationRecord & { tag: string })[] {
  const journal = JSON.parse(readFileSync(join(MIGRATIONS_DIR, 'meta', '_journal.json'), 'utf8')) as { entries: { tag: string; when: number }[] };
  return journal.entries.map((e) => ({
    tag: e.tag,
    hash: createHash('sha256')
      .update(readFileSync(join(MIGRATIONS_DIR, `${e.tag}.sql`), 'utf8'))
      .digest('hex'),
    createdAt: e.when,
  }));
}

/** Opens a database file with the libsql binding for a moment. */
export function withDb<T>(file: string, fn: (db: InstanceType<typeof Database>) => T): T {
  const db = new Database(file, { timeout: 5_000 });
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

/** The rows of __drizzle_migrations, oldest first. */
export function appliedMigrations(file: string): MigrationRecord[] {
  return withDb(file, (db) =>
    (db.prepare('SELECT hash, created_at FROM __drizzle_migrations ORDER BY created_at').all() as { hash: string; created_at: number }[]).map((r) => ({
      hash: r.hash,
      createdAt: Number(r.created_at),
    })),
  );
}

/** Each table's columns, by table name (SQLite's own tables left out). */
export function tableColumns(file: string): Map<string, string[]> {
  return withDb(file, (db) => {
    const names = (
      db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all() as { name: string }[]
    ).map((r) => r.name);
    return new Map(names.map((n) => [n, (db.prepare(`SELECT name FROM pragma_table_info('${n}')`).all() as { name: string }[]).map((c) => c.name)]));
  });
}

/** A table's rows on the given columns, each row as a JSON text, sorted: two reads compare as lists. */
export function tableRows(file: string, table: string, columns: string[]): string[] {
  return withDb(file, (db) =>
    (
      db
        .prepare(`SELECT ${columns.map((c) => `"${c}"`).join(', ')} FROM "${table}"`)
        .raw()
        .all() as unknown[][]
    )
      .map((r) => JSON.stringify(r))
      .sort(),
  );
}

export function rowCount(file: string, table: string): number {
  return withDb(file, (db) => Number((db.prepare(`SELECT count(*) AS n FROM "${table}"`).get() as { n: number }).n));
}
