/**
 * The threads that build a parent's files are kept between jobs: a snapshot in parts
 * (or a run of tail files) starts one thread, not one per file. A builder that fails
 * rejects its job only, and an idle thread ends. Real worker threads, real SQLite
 * files, a real builder module.
 */
import t from 'tap';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import Database from 'libsql';
import { tempDir } from '../helpers.js';
import { BuildPool } from '../../src/replication/build-pool.js';

/** A builder that copies the rows of `src` after the range's start, or fails when asked to. */
const BUILDER = `
export function buildFile(db, into, nodeId, languages, range) {
  if (languages.includes('fail')) throw new Error('asked to fail');
  db.exec(\`CREATE TABLE \${into}.rows (n INTEGER PRIMARY KEY, thread TEXT)\`);
  return db.prepare(\`INSERT INTO \${into}.rows SELECT n, ? FROM main.src WHERE n > ?\`).run(String(process.pid) + ':' + (globalThis.__built = (globalThis.__built ?? 0) + 1), Number(range.after ?? 0)).changes;
}`;

t.test('a pool reuses its thread, keeps failures to their job, and lets an idle thread go', async (t) => {
  const dir = await tempDir(t);
  const dbFile = join(dir, 'node.db');
  const db = new Database(dbFile);
  db.exec('CREATE TABLE src (n INTEGER PRIMARY KEY); INSERT INTO src SELECT value FROM generate_series(1, 100)');
  db.close();
  const builder = join(dir, 'builder.mjs');
  await writeFile(builder, BUILDER);
  const pool = new BuildPool(2, 1_000);
  t.teardown(() => pool.close());
  const job = (i: number, languages = ['en']) => ({
    dbFile,
    file: join(dir, `out-${i}.db`),
    builder: pathToFileURL(builder).href,
    nodeId: 'n',
    languages,
    range: { after: String(i * 10), upTo: null },
  });

  for (let i = 0; i < 3; i++) t.equal(await pool.run(job(i)), 100 - i * 10, `job ${i} built its rows`);
  t.equal(pool.threads, 1, 'three jobs one after the other: one thread');
  const marks = [0, 1, 2].map((i) => {
    const out = new Database(join(dir, `out-${i}.db`), { readonly: true });
    try {
      return (out.prepare('SELECT thread FROM rows LIMIT 1').get() as { thread: string }).thread;
    } finally {
      out.close();
    }
  });
  t.same(
    marks.map((m) => m.split(':')[1]),
    ['1', '2', '3'],
    'the same thread built all three (its module loaded once)',
  );

  await t.rejects(pool.run(job(3, ['fail'])), /asked to fail/, 'a failing builder rejects its job');
  t.equal(await pool.run(job(4)), 60, 'and the next job is built');

  const two = [pool.run(job(5)), pool.run(job(6))];
  t.equal(pool.threads, 2, 'two jobs at once: a second thread');
  const three = pool.run(job(7));
  t.equal(pool.threads, 2, 'a third job waits for one of the two');
  t.same(await Promise.all([...two, three]), [50, 40, 30], 'all three built');

  await new Promise((r) => setTimeout(r, 1_500));
  t.equal(pool.threads, 0, 'idle threads end');
  t.equal(await pool.run(job(8)), 20, 'and a new one starts for the next job');
});
