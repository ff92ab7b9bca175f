import t from 'tap';
import { createClient } from '@libsql/client';
import { readMigrationFiles } from 'drizzle-orm/migrator';
import { join } from 'node:path';
import { MIGRATIONS_DIR } from '../../src/db/client.js';
import { tempDir } from '../helpers.js';

/**
 * drizzle's libsql migrator runs each `--> statement-breakpoint` chunk of a migration
 * file as one statement, and @libsql/client runs only the first statement of a text
 * it is given (docs/design.md, "Migrations are one transaction"): a second statement in a chunk would be
 * skipped without a word. Every chunk of every migration holds one statement.
 */

/** The statements of an SQL text: split at `;` outside quotes and comments, empty ones left out. */
function statements(sql: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < sql.length; i++) {
    const c = sql[i]!;
    if (c === '-' && sql[i + 1] === '-') {
      const end = sql.indexOf('\n', i);
      i = end < 0 ? sql.length : end;
      cur += ' ';
      continue;
    }
    if (c === '/' && sql[i + 1] === '*') {
      const end = sql.indexOf('*/', i + 2);
      i = end < 0 ? sql.length : end + 1;
      cur += ' ';
      continue;
    }
    if (c === "'" || c === '"' || c === '`') {
      let j = i + 1;
      while (j < sql.length && !(sql[j] === c && sql[j + 1] !== c)) j += sql[j] === c ? 2 : 1;
      cur += sql.slice(i, j + 1);
      i = j;
      continue;
    }
    if (c === ';') {
      out.push(cur);
      cur = '';
      continue;
    }
    cur += c;
  }
  out.push(cur);
  return out.map((s) => s.trim()).filter(Boolean);
}

t.test('the splitter finds statements outside quotes and comments', async (t) => {
  t.same(statements("SELECT ';' -- a; b\n; /* c; */ SELECT `x;y`, 'it''s;'"), ["SELECT ';'", "SELECT `x;y`, 'it''s;'"]);
  t.same(statements('ALTER TABLE `a` ADD `b` text;'), ['ALTER TABLE `a` ADD `b` text']);
});

t.test('@libsql/client runs the first statement only of a migration chunk (why each chunk must hold one)', async (t) => {
  const dir = await tempDir(t);
  const client = createClient({ url: `file:${join(dir, 'x.db')}` });
  t.teardown(() => client.close());
  await client.execute('CREATE TABLE a (x)');
  await client.migrate([{ sql: 'INSERT INTO a VALUES (1); INSERT INTO a VALUES (2)', args: [] }]);
  t.same(
    (await client.execute('SELECT x FROM a')).rows.map((r) => r.x),
    [1],
    'the second statement was skipped: if this fails, the client changed, and this test and docs/design.md with it',
  );
});

t.test('every chunk of every migration file holds exactly one statement', async (t) => {
  const migrations = readMigrationFiles({ migrationsFolder: MIGRATIONS_DIR });
  t.ok(migrations.length >= 14, `${migrations.length} migrations`);
  const bad = migrations.flatMap((m, n) =>
    m.sql.map((chunk, i) => ({ migration: n, chunk: i, statements: statements(chunk).length })).filter((c) => c.statements !== 1),
  );
  t.same(bad, [], 'put a `--> statement-breakpoint` between statements');
});
