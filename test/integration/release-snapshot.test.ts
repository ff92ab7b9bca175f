/**
 * A release in a snapshot is filtered for the subscriber's languages by SQLite: the
 * same bytes the JavaScript filter (filterUpdateList, which the tail still uses) makes
 * of the unfiltered payload, for every language set; and the list match in SQL agrees
 * with anyLanguageMatches item by item. Real SQLite, the node's own migrations.
 */
import t from 'tap';
import { join } from 'node:path';
import Database from 'libsql';
import { openDatabase } from '../../src/db/index.js';
import { openConn } from '../../src/db/exec.js';
import { filterUpdateList } from '../../src/changelog/index.js';
import { RELEASE_LANGUAGES_AT, RELEASE_LOG_SQL, releaseSnapshotSql } from '../../src/freshness/release.js';
import { anyLanguageMatches, languageListMatchSql } from '../../src/lib/languages.js';
import { tempDir } from '../helpers.js';

const LISTS = [
  '',
  'neutral',
  'en',
  'en-us',
  'en-gb',
  'de',
  'de,en',
  'de-de,fr',
  'fr,neutral',
  'zh-hant',
  'zh-hant-tw',
  'zh',
  'ja,zh-hans',
  'eng',
  'e',
  'en-us,en-gb',
];
const SETS = [[], ['en'], ['en-us'], ['de', 'fr'], ['zh-hant-tw'], ['zh'], ['ja'], ['en', 'de', 'fr', 'ja', 'zh-hans'], ['pt-br']];

t.test('the list match in SQL agrees with anyLanguageMatches', async (t) => {
  const db = new Database(':memory:');
  t.teardown(() => db.close());
  for (const languages of SETS) {
    const [match, args] = languageListMatchSql('l', languages);
    const stmt = db.prepare(`SELECT (${match}) AS m FROM (SELECT ? AS l)`);
    for (const list of LISTS) {
      const m = Boolean((stmt.get(...args, list) as { m: number }).m);
      t.equal(m, anyLanguageMatches(list, languages), `${JSON.stringify(list)} for ${JSON.stringify(languages)}`);
    }
  }
});

t.test("a snapshot's releases are filterUpdateList's output, byte for byte", async (t) => {
  const dir = await tempDir(t);
  const db = await openDatabase(`file:${join(dir, 'n.db')}`);
  t.teardown(() => db.close());
  const conn = openConn(db);
  t.teardown(() => conn.close());
  // Two releases over the lists above (each update's files' languages), one of them with nothing but neutral files.
  await conn.run("INSERT INTO freshness_releases VALUES ('r1', 1000, 1001, 1002), ('r2', 2000, 2001, 2002)", []);
  for (const [i, list] of LISTS.entries()) {
    await conn.run('INSERT INTO freshness_updates VALUES (?, ?, ?, ?, ?, NULL)', ['r1', `u${String(i).padStart(2, '0')}`, i + 1, list, `fam "${i}" é`]);
  }
  await conn.run("INSERT INTO freshness_updates VALUES ('r2', 'n1', 3, 'neutral', 'x', NULL)", []);
  // The unfiltered payload, as the log holds it.
  const logged = new Map<string, string>();
  for (const v of ['r1', 'r2']) {
    await conn.run(RELEASE_LOG_SQL, [5, v]);
    logged.set(v, (await conn.all<{ payload: string }>("SELECT payload FROM change_log WHERE kind = 'release' AND key = ?", [v]))[0]!.payload);
  }
  for (const languages of SETS) {
    const [q, args] = releaseSnapshotSql(languages);
    const rows = await conn.all<{ id: string; payload: string }>(q, args);
    t.same(
      rows.map((r) => r.id),
      ['r2', 'r1'],
      'newest first',
    );
    for (const r of rows) {
      t.equal(r.payload, filterUpdateList(logged.get(r.id)!, RELEASE_LANGUAGES_AT, languages).toString(), `${r.id} for ${JSON.stringify(languages)}`);
    }
  }
  const all = JSON.parse((await conn.all<{ payload: string }>(...releaseSnapshotSql(['en'])))[1]!.payload) as { updates: unknown[][] };
  t.same(
    all.updates.map((u) => u[0]),
    ['u00', 'u01', 'u02', 'u03', 'u04', 'u06', 'u08', 'u15'],
    'en: the lists with en, a more specific en, neutral, or none (not eng, not e)',
  );
});
