import t, { type Test } from 'tap';
import Database from 'libsql';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { ADMIN_TOKEN, BIN, listAll, spawnNode, tempDir } from '../helpers.js';
import { appliedMigrations, journalMigrations, placeFixture, rowCount, tableColumns, tableRows, withDb } from '../upgrade-fixtures.js';

/**
 * A node killed (SIGKILL) while it migrates an old database leaves it as the old
 * release did, or wholly migrated, never in between, and starts cleanly afterwards.
 * drizzle's libsql migrator runs every pending migration, and the rows recording them
 * in __drizzle_migrations, in one transaction (docs/design.md, "Migrations are one transaction").
 *
 * The database is 9362aed's (migration 0000) with its catalog copied many times, so
 * that migration 0010, which rewrites every stored file, takes seconds. The test sees
 * the node take the write lock before it logs "database ready" (the migration), and
 * kills it at several moments of an uninterrupted upgrade's duration.
 */

const CATALOG_TABLES = ['updates', 'update_files', 'update_cves', 'update_supersedes', 'catalog_releases', 'custom_severities', 'api_tokens'];

/** The fixture's catalog, each update copied `copies` times under new ids, each file `fileCopies` times under new hashes first. */
function inflate(file: string, copies: number, fileCopies: number) {
  withDb(file, (db) => {
    const copy = (table: string, key: string, n: number) => {
      const cols = (db.prepare(`SELECT name FROM pragma_table_info('${table}')`).all() as { name: string }[]).map((c) => `"${c.name}"`);
      const select = cols.map((c) => (c === `"${key}"` ? `${c} || '~' || k.n` : c)).join(', ');
      db.prepare(
        `WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < ?) INSERT INTO "${table}" (${cols.join(', ')}) SELECT ${select} FROM "${table}", k`,
      ).run(n);
    };
    db.exec('BEGIN');
    copy('update_files', 'sha256', fileCopies);
    for (const [table, key] of [
      ['updates', 'id'],
      ['update_files', 'update_id'],
      ['update_cves', 'update_id'],
      ['update_supersedes', 'update_id'],
    ] as const)
      copy(table, key, copies);
    db.exec('COMMIT');
    db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
  });
}

/** Whether another connection holds the database's write lock now. */
function writeLocked(db: InstanceType<typeof Database>): boolean {
  try {
    db.exec('BEGIN IMMEDIATE');
  } catch (err) {
    if ((err as { code?: string }).code === 'SQLITE_BUSY') return true;
    throw err;
  }
  db.exec('ROLLBACK');
  return false;
}

const walBytes = (file: string) => (existsSync(`${file}-wal`) ? statSync(`${file}-wal`).size : 0);

interface Started {
  child: ReturnType<typeof spawn>;
  logs: string[];
  exited: Promise<unknown>;
  /** When the node was first seen holding the write lock (ms, performance clock). */
  lockedAt: number;
}

/** `patchtree serve` on `data`, returned once it holds the database's write lock before saying "database ready". */
async function startMigrating(t: Test, data: string, file: string): Promise<Started> {
  const child = spawn(
    process.execPath,
    [BIN, 'serve', '--data', data, '--http-port', '0', '--https-port', '0', '--grpc-port', '0', '--http-host', '127.0.0.1', '--grpc-host', '127.0.0.1'],
    { env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const exited = new Promise((resolve) => child.once('exit', resolve));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  const logs: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => logs.push(l));
  const probe = new Database(file, { timeout: 0 });
  try {
    for (let i = 0; i < 6_000; i++) {
      if (logs.some((l) => l.includes('"database ready"'))) throw new Error('the node migrated before the test saw it hold the write lock');
      if (child.exitCode !== null) throw new Error(`the node exited with ${child.exitCode}`);
      if (writeLocked(probe)) return { child, logs, exited, lockedAt: performance.now() };
      await delay(5);
    }
    throw new Error('the node never took the write lock');
  } finally {
    probe.close();
  }
}

t.test('a node killed while it migrates starts cleanly afterwards, with every migration applied once and every row', async (t) => {
  const dir = await tempDir(t);
  const template = placeFixture('catalog-9362aed', join(dir, 'template'));
  inflate(template, 10, 6);
  const oldMigrations = appliedMigrations(template);
  const all = journalMigrations().map(({ hash, createdAt }) => ({ hash, createdAt }));
  t.equal(oldMigrations.length, 1, 'the old database holds 0000_init only');
  const columns = tableColumns(template);
  const current = withDb(template, (db) => (db.prepare('SELECT id FROM updates WHERE expired = 0').all() as { id: string }[]).map((r) => r.id).sort());
  t.comment(`${rowCount(template, 'updates')} updates, ${rowCount(template, 'update_files')} files`);

  let run = 0;
  const fresh = () => {
    const data = join(dir, `run-${run++}`);
    mkdirSync(data, { mode: 0o700 });
    const file = join(data, 'patchtree.db');
    copyFileSync(template, file);
    return { data, file };
  };

  /** The database as the old release left it, or wholly migrated: which one. */
  const outcome = (t: Test, file: string): 'old' | 'migrated' | 'half-migrated' => {
    t.equal(
      withDb(file, (db) => (db.prepare('PRAGMA integrity_check').get() as { integrity_check: string }).integrity_check),
      'ok',
      'the database is intact',
    );
    const applied = appliedMigrations(file);
    const cols = tableColumns(file);
    if (applied.length === oldMigrations.length) {
      t.same(applied, oldMigrations, 'no migration recorded');
      t.same([...cols].sort(), [...columns].sort(), 'and none applied: the old schema, table for table and column for column');
      return 'old';
    }
    if (applied.length === all.length) {
      t.same(applied, all, 'every migration recorded once');
      t.ok(cols.get('update_files')?.includes('installer') && cols.has('children') && !cols.get('updates')?.includes('install_command'), 'and applied');
      return 'migrated';
    }
    t.fail(`half migrated: ${applied.length} of ${all.length} migrations recorded`);
    return 'half-migrated';
  };

  /** Starts the node as usual on a data folder; every migration applied once, every row kept, the updates served. */
  const restart = async (t: Test, data: string, file: string) => {
    const node = await spawnNode(t, ['--data', data, '--admin-token', ADMIN_TOKEN]);
    t.same(appliedMigrations(file), all, 'every migration of the journal applied, once each');
    for (const table of CATALOG_TABLES) {
      // Migration 0010 drops updates.install_command; --admin-token replaces the bootstrap token's hash.
      const kept = columns.get(table)!.filter((c) => c !== 'install_command' && !(table === 'api_tokens' && c === 'token_hash'));
      const before = tableRows(template, table, kept);
      t.same(tableRows(file, table, kept), before, `${table}: its ${before.length} rows`);
    }
    const served = (await listAll(node.url, ADMIN_TOKEN, '/api/v1/updates', 1000)).map((u) => u.id).sort();
    t.same(served, current, `the ${current.length} current updates served`);
    node.child.kill('SIGTERM');
    t.equal(await node.exited, 0, 'the node stops cleanly');
    t.same(
      node.logs.filter((l) => Number(l.level) >= 50),
      [],
      'it logged no error',
    );
  };

  // An uninterrupted upgrade: how long the migration holds the write lock.
  const control = fresh();
  const started = await startMigrating(t, control.data, control.file);
  const logged = async (msg: string) => {
    while (!started.logs.some((l) => l.includes(`"${msg}"`))) {
      if (started.child.exitCode !== null) throw new Error('the control node exited');
      await delay(5);
    }
    return performance.now();
  };
  const migrating = (await logged('database ready')) - started.lockedAt;
  await logged('node started');
  started.child.kill('SIGTERM');
  await started.exited;
  t.equal(outcome(t, control.file), 'migrated', 'uninterrupted, the upgrade completes');
  t.comment(`the migration holds the write lock for about ${Math.round(migrating)} ms`);

  const outcomes: { at: number; wal: number; result: string }[] = [];
  for (const fraction of [0, 0.25, 0.5, 0.75, 0.95]) {
    await t.test(`killed ${Math.round(fraction * 100)}% into the migration`, async (t) => {
      const { data, file } = fresh();
      const walAtStart = walBytes(file);
      const node = await startMigrating(t, data, file);
      await delay(fraction * migrating);
      const wal = walBytes(file) - walAtStart;
      node.child.kill('SIGKILL');
      await node.exited;
      const result = outcome(t, file);
      outcomes.push({ at: fraction, wal, result });
      t.comment(`killed with ${wal} bytes in the WAL: ${result}`);
      await restart(t, data, file);
    });
  }
  t.ok(
    outcomes.some((o) => o.result === 'old' && o.wal > 0),
    'at least one kill came while the migration had written to the WAL, and nothing of it was left',
  );
});
