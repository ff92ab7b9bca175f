/**
 * The checkpointer's thread copies a large transaction's pages from the WAL into the
 * database file, so that the connection that committed them does not; a reader that
 * holds the WAL back delays it, it does not lose it; the thread ends when idle. And a
 * child loading a snapshot file leaves the checkpoint to it. Real SQLite files.
 */
import t from 'tap';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'libsql';
import { Checkpointer } from '../../src/db/checkpointer.js';
import { openNative } from '../../src/db/native.js';
import { tempDir } from '../helpers.js';

const until = async (what: string, ok: () => boolean, ms = 10_000): Promise<void> => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

/** A WAL database and a writer that does not checkpoint by itself. */
function setup(dir: string) {
  const file = join(dir, 'x.db');
  const db = openNative(file);
  db.exec('PRAGMA journal_mode = WAL');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)');
  db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
  db.exec('PRAGMA wal_autocheckpoint = 0');
  const write = (rows: number) => {
    db.exec('BEGIN');
    const ins = db.prepare('INSERT INTO t (v) VALUES (randomblob(4000))');
    for (let i = 0; i < rows; i++) ins.run();
    db.exec('COMMIT');
  };
  return { file, db, write, size: () => statSync(file).size };
}

t.test('a large commit is copied into the database file by the thread', async (t) => {
  const { file, db, write, size } = setup(await tempDir(t));
  const before = size();
  write(2000); // about 8 MB
  t.equal(size(), before, 'the writer left its pages in the WAL');
  const c = new Checkpointer(file, 300);
  t.teardown(() => c.close());
  c.request();
  t.ok(c.running, 'the thread started on the request');
  await until('the checkpoint', () => c.runs > 0);
  t.equal(c.last!.busy, 0);
  t.equal(c.last!.checkpointed, c.last!.log, 'every frame copied');
  t.ok(c.last!.log >= 2000, 'the frames of the commit');
  t.ok(size() > before + 7_000_000, `the database file holds the pages (${size()} bytes)`);
  t.equal(Number((db.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n), 2000);
  await until('the idle thread to end', () => !c.running);
  t.equal(c.lastError, null);
  db.close();
});

t.test('a large WAL is truncated when the thread ends', async (t) => {
  const { file, db, write, size } = setup(await tempDir(t));
  write(9000); // about 36 MB of pages
  const wal = () => statSync(`${file}-wal`).size;
  t.ok(wal() > 32 * 1024 * 1024, `the WAL holds the commit (${wal()} bytes)`);
  const c = new Checkpointer(file, 300);
  t.teardown(() => c.close());
  c.request();
  await until('the checkpoint', () => c.runs > 0);
  t.ok(wal() > 32 * 1024 * 1024, 'kept while the thread may be asked again');
  write(1); // a small commit meanwhile: the WAL starts again from its first frame, in the same large file
  t.ok(wal() > 32 * 1024 * 1024, 'the file as large');
  await until('the idle thread to end', () => !c.running);
  await until('the WAL file cut back', () => wal() === 0);
  t.ok(size() > 36_000_000, 'its pages in the database file');
  t.equal(Number((db.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n), 9001);
  db.close();
});

t.test('a reader holding the WAL back delays the copy; it is asked again until whole', async (t) => {
  const { file, db, write } = setup(await tempDir(t));
  write(10);
  const reader = new Database(file);
  reader.exec('BEGIN');
  reader.prepare('SELECT count(*) FROM t').get(); // a read snapshot before the large commit
  write(1000);
  const c = new Checkpointer(file, 300);
  t.teardown(() => c.close());
  c.request();
  await until('the first checkpoint', () => c.runs > 0);
  t.ok(c.last!.checkpointed < c.last!.log, `held back by the reader (${c.last!.checkpointed} of ${c.last!.log})`);
  const runs = c.runs;
  reader.exec('COMMIT');
  await until('the retried checkpoint to copy everything', () => c.runs > runs && c.last!.checkpointed === c.last!.log);
  reader.close();
  db.close();
});

t.test('a request while one runs is followed by another; close ends the thread', async (t) => {
  const { file, db, write } = setup(await tempDir(t));
  const c = new Checkpointer(file, 60_000);
  write(500);
  c.request();
  write(500);
  c.request(); // in flight: answered by a second run
  await until('two runs', () => c.runs >= 2);
  t.equal(c.last!.checkpointed, c.last!.log, 'the second commit copied too');
  t.ok(c.running, 'kept while not idle long enough');
  c.close();
  t.notOk(c.running, 'closed');
  db.close();
});

t.test('a database the thread cannot open costs nothing but the thread', async (t) => {
  const dir = await tempDir(t);
  const c = new Checkpointer(join(dir, 'missing', 'x.db'), 300);
  c.request();
  await until('the thread to fail', () => !c.running);
  t.match(c.lastError?.message, /unable to open|no such file|cannot open/i);
  c.request(); // started again, fails again: no throw here
  await until('the thread to fail again', () => !c.running);
});
