import { parentPort } from 'node:worker_threads';
import { openNative, type NativeDb } from '../db/native.js';

/**
 * The thread that loads a snapshot's large parts into a child's database (part-loader.ts):
 * a connection of its own copies each part, checked on the main thread, in one
 * transaction, while the main thread takes the next part's pieces. Its commits are
 * not synced (synchronous = NORMAL: the resync's end, synced on the main connection,
 * syncs the WAL with every part before it) and not checkpointed (wal_autocheckpoint
 * off: the checkpointer's thread copies the pages, asked by the main thread after
 * each part).
 */
export interface LoadJob {
  dbFile: string;
  /** The part, a whole file already checked (KindFile.check). */
  file: string;
  /** The kind's module (KindFile.loader): its `loadFile(db, from, now)` copies the attached file. */
  loader: string;
  now: number;
}

export type LoadAnswer = { count: number } | { error: string };

type Loader = { loadFile(db: NativeDb, from: string, now: number): number };

let db: NativeDb | null = null;
let dbFile = '';

async function load(job: LoadJob): Promise<number> {
  const { loadFile } = (await import(job.loader)) as Loader;
  if (!db || dbFile !== job.dbFile) {
    db?.close();
    db = openNative(job.dbFile);
    dbFile = job.dbFile;
    db.exec('PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0');
  }
  db.prepare('ATTACH ? AS snapshot_file').run(job.file);
  try {
    db.exec('BEGIN IMMEDIATE');
    try {
      const n = loadFile(db, 'snapshot_file', job.now);
      db.exec('COMMIT');
      return n;
    } catch (err) {
      if (db.inTransaction) db.exec('ROLLBACK');
      throw err;
    }
  } finally {
    db.exec('DETACH snapshot_file');
  }
}

parentPort!.on('message', (m: LoadJob | 'close') => {
  if (m === 'close') {
    db?.close();
    db = null;
    parentPort!.close();
    return;
  }
  load(m).then(
    (count) => parentPort!.postMessage({ count } satisfies LoadAnswer),
    (err: unknown) => parentPort!.postMessage({ error: (err as Error).message ?? String(err) } satisfies LoadAnswer),
  );
});
