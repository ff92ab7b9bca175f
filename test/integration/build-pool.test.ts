/**
 * The threads that make a parent's files are kept between jobs: a snapshot in parts
 * (or a run of tail files) starts one thread, not one per file. A job answers the
 * file as compressed pieces with its size and SHA-256 (the scratch file removed). A
 * builder that fails rejects its job only, and an idle thread ends. Real worker
 * threads, real SQLite files, a real builder module.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import Database from 'libsql';
import { tempDir } from '../helpers.js';
import { inflatePiece, type PieceCoding } from '../../src/replication/pieces.js';
import { BuildPool } from '../../src/replication/build-pool.js';
import type { Built } from '../../src/replication/build-worker.js';

/** A builder that copies the rows of `src` after the range's start, or fails when asked to. */
const BUILDER = `
export function buildFile(db, into, nodeId, languages, range) {
  if (languages.includes('fail')) throw new Error('asked to fail');
  db.exec(\`CREATE TABLE \${into}.rows (n INTEGER PRIMARY KEY, thread TEXT, pad BLOB)\`);
  return db.prepare(\`INSERT INTO \${into}.rows SELECT n, ?, randomblob(200) FROM main.src WHERE n > ?\`).run(String(process.pid) + ':' + (globalThis.__built = (globalThis.__built ?? 0) + 1), Number(range.after ?? 0)).changes;
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
    pieceBytes: 4096,
    coding: (i % 2 ? 'brotli' : 'gzip') as PieceCoding, // both, in turn
  });
  /** A made file back from its pieces (checked against its size and hash): the thread that built it, and how many rows. */
  const open = (i: number, b: Built) => {
    t.equal(b.coding, i % 2 ? 'brotli' : 'gzip', `file ${i}: compressed as asked`);
    const data = Buffer.concat(b.pieces.map((p) => inflatePiece({ [b.coding]: p }, 1 << 20)));
    t.equal(data.length, b.size, `file ${i}: its size`);
    t.equal(createHash('sha256').update(data).digest('hex'), b.sha256, `file ${i}: its SHA-256`);
    t.ok(b.pieces.length >= 2, `file ${i}: in pieces (${b.pieces.length})`);
    t.notOk(existsSync(join(dir, `out-${i}.db`)), `file ${i}: the scratch file removed`);
    const copy = join(dir, `copy-${i}.db`);
    writeFileSync(copy, data);
    const out = new Database(copy, { readonly: true });
    try {
      return out.prepare('SELECT thread, (SELECT count(*) FROM rows) AS n FROM rows LIMIT 1').get() as { thread: string; n: number };
    } finally {
      out.close();
    }
  };

  const marks: string[] = [];
  for (let i = 0; i < 3; i++) {
    const b = await pool.run(job(i));
    t.equal(b.count, 100 - i * 10, `job ${i} built its rows`);
    const made = open(i, b);
    t.equal(made.n, b.count, `file ${i} holds them`);
    marks.push(made.thread);
  }
  t.equal(pool.threads, 1, 'three jobs one after the other: one thread');
  t.same(
    marks.map((m) => m.split(':')[1]),
    ['1', '2', '3'],
    'the same thread built all three (its module loaded once)',
  );

  await t.rejects(pool.run(job(3, ['fail'])), /asked to fail/, 'a failing builder rejects its job');
  t.equal((await pool.run(job(4))).count, 60, 'and the next job is built');
  t.notOk(existsSync(join(dir, 'out-3.db')), "the failed job's scratch file removed");

  const two = [pool.run(job(5)), pool.run(job(6))];
  t.equal(pool.threads, 2, 'two jobs at once: a second thread');
  const three = pool.run(job(7));
  t.equal(pool.threads, 2, 'a third job waits for one of the two');
  t.same(
    (await Promise.all([...two, three])).map((b) => b.count),
    [50, 40, 30],
    'all three built',
  );

  await new Promise((r) => setTimeout(r, 1_500));
  t.equal(pool.threads, 0, 'idle threads end');
  t.equal((await pool.run(job(8))).count, 20, 'and a new one starts for the next job');
});
