import { parentPort, workerData } from 'node:worker_threads';
import Database from 'libsql';

/**
 * The checkpointer's thread (checkpointer.ts): a connection of its own to the node's
 * database that copies the WAL's committed pages into the database file when asked,
 * so that the thread that wrote them goes on. PASSIVE: it never waits for a reader
 * or a writer, and copies what no reader still needs (the rest on the next request).
 * Its busy timeout is 0: it never waits for a lock; the checkpointer asks again.
 */
const db = new Database(workerData.file as string, { timeout: 0 });
const pageSize = Number((db.prepare('PRAGMA page_size').get() as { page_size: number }).page_size);

/** A WAL at least this large is truncated when the thread ends. */
const TRUNCATE_BYTES = 32 * 1024 * 1024;

type Result = { busy: number; log: number; checkpointed: number };

function checkpoint(mode: 'PASSIVE' | 'TRUNCATE'): Result {
  try {
    return db.prepare(`PRAGMA wal_checkpoint(${mode})`).get() as Result;
  } catch (err) {
    // SQLITE_BUSY: another connection holds what it needs; answered as not done (asked again).
    if (!/busy|locked/i.test((err as Error).message)) throw err;
    return { busy: 1, log: -1, checkpointed: -1 };
  }
}

parentPort!.on('message', (m: 'checkpoint' | 'close') => {
  if (m === 'close') {
    // Idle: a large WAL (a snapshot's load grows it to the catalog's size, and SQLite keeps the file) is emptied and cut back
    // now, not between a load's parts (TRUNCATE takes the write lock). It needs no writer and no reader of the WAL: else left.
    const r = checkpoint('PASSIVE');
    if (r.busy === 0 && r.checkpointed === r.log && r.log * pageSize >= TRUNCATE_BYTES) checkpoint('TRUNCATE');
    db.close();
    parentPort!.close();
    return;
  }
  const started = performance.now();
  const r = checkpoint('PASSIVE');
  parentPort!.postMessage({ ...r, ms: performance.now() - started });
});
