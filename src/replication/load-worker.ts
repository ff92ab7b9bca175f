import { parentPort } from 'node:worker_threads';
import { openNative, type NativeDb } from '../db/native.js';

/*
 * The thread that loads a snapshot's large parts into a child's database (part-loader.ts):
 * a connection of its own copies each part, checked on the main thread, in one
 * transaction, while the main thread takes the next part's pieces. Its commits are
 * synced as the job says (BatchApplier.loadLater: not while the node has no children)
 * and not checkpointed (wal_autocheckpoint off: the checkpointer's thread copies the
 * pages, asked by the main thread after each part). After an error its connection is
 * closed, and opened again for the next part.
 */

/** A part to load. */
export interface LoadJob {
  dbFile: string;
  /** The part, a whole file already checked (KindFile.check). */
  file: string;
  /** The kind's module (KindFile.module): its `loadFile(db, from, now)` copies the attached file. */
  loader: string;
  now: number;
  /** Sync the commit (synchronous = FULL), or leave it to the resync's end (NORMAL). */
  sync: boolean;
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
    db.exec('PRAGMA wal_autocheckpoint = 0');
  }
  const conn = db;
  try {
    conn.exec(`PRAGMA synchronous = ${job.sync ? 'FULL' : 'NORMAL'}`);
    conn.prepare('ATTACH ? AS snapshot_file').run(job.file);
    try {
      conn.exec('BEGIN IMMEDIATE');
      try {
        const n = loadFile(conn, 'snapshot_file', job.now);
        conn.exec('COMMIT');
        return n;
      } catch (err) {
        if (conn.inTransaction) conn.exec('ROLLBACK');
        throw err;
      }
    } finally {
      conn.exec('DETACH snapshot_file');
    }
  } catch (err) {
    // Whatever state the connection was left in (a file still attached, a transaction open), the next part gets a new one.
    db = null;
    try {
      conn.close();
    } catch {}
    throw err;
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
