import t from 'tap';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { openNative } from '../../src/db/native.js';
import { openDatabase, MIGRATIONS_DIR } from '../../src/db/client.js';
import { tempDir } from '../helpers.js';

/**
 * Migration 0010 on a database as the previous release left it: updates with a
 * format-1 command line per update, files without installers. Each file gets the
 * installer catalog/format.ts fromV1 would give it, files keep their old order, and
 * the node opens the database and serves it.
 */
t.test('migration 0010 gives stored files the installers their commands meant', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'patchtree.db');
  const db = openNative(file);
  const migrations = readdirSync(MIGRATIONS_DIR)
    .filter((f) => f.endsWith('.sql'))
    .sort();
  const before = migrations.filter((f) => f < '0010');
  t.ok(before.length === 10 && migrations.includes('0010_per_file_installers.sql'));
  for (const m of before) for (const stmt of readFileSync(join(MIGRATIONS_DIR, m), 'utf8').split('--> statement-breakpoint')) if (stmt.trim()) db.exec(stmt);
  const insertUpdate =
    db.prepare(`INSERT INTO updates (id, revision, kb, bulletin, title, vendor, product_family, product, classification, severity, cves, cve_details,
    release_date, supersedes, vendor_superseded, restart, install_command, success_codes, reboot_codes, applicability, installed, languages, expired, content_hash,
    release_version, first_version, origin, updated_at) VALUES (?, 1, NULL, NULL, 't', 'Microsoft', NULL, 'P', 'Updates', NULL, '[]', '[]', '2024-01-09', '[]', 0, 'may',
    ?, '[0]', '[3010]', '{"product":"P"}', '{"always":false}', 'neutral', 0, 'h', 'v1', 'v1', '', 0)`);
  const insertFile = db.prepare("INSERT INTO update_files (update_id, sha256, name, url, size, language) VALUES (?, ?, ?, 'http://v.example/f', 1, ?)");
  insertUpdate.run('wusa', 'wusa.exe "{file}" /quiet /norestart');
  insertFile.run('wusa', 'a'.repeat(64), 'x.msu', 'neutral');
  insertFile.run('wusa', 'b'.repeat(64), 'y.cab', 'de-de'); // the wusa line on a cab: kept as the command it was
  insertUpdate.run('dism', 'dism.exe /online /add-package /packagepath:"{file}" /quiet /norestart');
  insertFile.run('dism', 'c'.repeat(64), 'z.cab', 'neutral');
  insertUpdate.run('custom', 'sh install.sh "{file}"');
  insertFile.run('custom', 'd'.repeat(64), 'w.exe', 'neutral');
  insertUpdate.run('none', '');
  insertFile.run('none', 'e'.repeat(64), 'v.msu', 'neutral');
  db.prepare(
    "INSERT INTO computers (id, agent_key, name, os_family, language, inventory, scan_id, last_scan_at, created_at) VALUES (1, 'agent-key-1', 'PC', 'windows', 'de-de', '{}', 1, 0, 0)",
  ).run();
  // What drizzle's migrator records, so that it applies 0010 only.
  const journal = JSON.parse(readFileSync(join(MIGRATIONS_DIR, 'meta', '_journal.json'), 'utf8')) as { entries: { tag: string; when: number }[] };
  db.exec('CREATE TABLE IF NOT EXISTS "__drizzle_migrations" (id INTEGER PRIMARY KEY AUTOINCREMENT, hash text NOT NULL, created_at numeric)');
  const { createHash } = await import('node:crypto');
  for (const e of journal.entries.filter((e) => e.tag < '0010'))
    db.prepare('INSERT INTO "__drizzle_migrations" (hash, created_at) VALUES (?, ?)').run(
      createHash('sha256')
        .update(readFileSync(join(MIGRATIONS_DIR, `${e.tag}.sql`), 'utf8'))
        .digest('hex'),
      e.when,
    );
  db.close();

  const opened = await openDatabase(`file:${file}`);
  t.teardown(() => opened.close());
  const rows = (await opened.client.execute('SELECT update_id, name, position, installer FROM update_files ORDER BY update_id, position')).rows.map((r) => [
    r.update_id,
    r.name,
    Number(r.position),
    r.installer === null ? null : JSON.parse(String(r.installer)),
  ]);
  t.same(
    rows,
    [
      ['custom', 'w.exe', 0, { type: 'command', command: 'sh install.sh "{file}"' }],
      ['dism', 'z.cab', 0, { type: 'dism' }],
      ['none', 'v.msu', 0, null],
      ['wusa', 'y.cab', 0, { type: 'command', command: 'wusa.exe "{file}" /quiet /norestart' }],
      ['wusa', 'x.msu', 1, { type: 'wusa' }],
    ],
    'the kind where the command fits the file, else the command; the old order (language, name)',
  );
  const cols = (await opened.client.execute("SELECT name FROM pragma_table_info('updates')")).rows.map((r) => r.name);
  t.notOk(cols.includes('install_command'), 'the update-level command is gone');
  t.equal(
    (await opened.client.execute('SELECT languages FROM computers WHERE id = 1')).rows[0]!.languages,
    'de-de',
    "a computer's languages start as its OS language",
  );
});
