import { statSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'libsql';
import type { CheckpointResult } from './checkpointer.js';

/**
 * The checkpointer's thread (checkpointer.ts): a connection of its own to the node's
 * database that copies the WAL's committed pages into the database file when asked,
 * so that the thread that wrote them goes on. PASSIVE: it never waits for a reader
 * or a writer, and copies what no reader still needs (the rest on the next request).
 * Its busy timeout is 0: it never waits for a lock; the checkpointer asks again.
 */
const file = workerData.file as string;
const db = new Database(file, { timeout: 0 });

/** A WAL file at least this large is truncated when the thread ends. */
const TRUNCATE_BYTES = 32 * 1024 * 1024;

type Result = Omit<CheckpointResult, 'ms'>;

function walBytes(): number {
  try {
    return statSync(`${file}-wal`).size;
  } catch {
    return 0;
  }
}

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
    // Idle: a large WAL file (a snapshot's load grows it to the catalog's size, and SQLite reuses the file from its start
    // rather than shrink it) is emptied and cut back now, not between a load's parts (TRUNCATE takes the write lock). The
    // file's size, not the frames in use: small commits since restarted it from frame 0. It needs no writer and no reader
    // of the WAL just now: else it is left for the next time.
    const r = checkpoint('PASSIVE');
    if (r.busy === 0 && r.checkpointed === r.log && walBytes() >= TRUNCATE_BYTES) checkpoint('TRUNCATE');
    db.close();
    parentPort!.close();
    return;
  }
  const started = performance.now();
  const r = checkpoint('PASSIVE');
  parentPort!.postMessage({ ...r, ms: performance.now() - started });
});
