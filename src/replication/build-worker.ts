import { parentPort } from 'node:worker_threads';
import type { KeyRange } from '../changelog/index.js';
import { openNative, type NativeDb } from '../db/native.js';

/**
 * A worker thread that builds kinds' files (snapshots.ts, through BuildPool): for each
 * job, the kind's builder module (KindFile.builder) fills a fresh scratch SQLite file
 * from the node's database in one read transaction on a connection of its own.
 * Answers each job with `{ id, ok: true, count }` or `{ id, ok: false, message }`. The
 * thread lives on between jobs (its start and imports cost about 0.1 s of CPU).
 */
export interface BuildJob {
  dbFile: string;
  file: string;
  builder: string;
  nodeId: string;
  languages: string[];
  range: KeyRange;
}

type Builder = { buildFile(db: NativeDb, into: string, nodeId: string, languages: readonly string[], range: KeyRange): number };

async function build(job: BuildJob): Promise<number> {
  const { buildFile } = (await import(job.builder)) as Builder;
  const db = openNative(job.dbFile);
  try {
    db.prepare('ATTACH ? AS snapshot_file').run(job.file);
    // A scratch file: no journal, no fsync (a crash leaves it to the cleaning at start).
    db.exec('PRAGMA snapshot_file.page_size = 65536; PRAGMA snapshot_file.journal_mode = OFF; PRAGMA snapshot_file.synchronous = OFF');
    db.exec('BEGIN');
    let n: number;
    try {
      n = buildFile(db, 'snapshot_file', job.nodeId, job.languages, job.range);
      db.exec('COMMIT');
    } catch (err) {
      db.exec('ROLLBACK');
      throw err;
    }
    db.exec('DETACH snapshot_file');
    return n;
  } finally {
    db.close();
  }
}

parentPort!.on('message', ({ id, job }: { id: number; job: BuildJob }) => {
  build(job).then(
    (count) => parentPort!.postMessage({ id, ok: true, count }),
    (err: unknown) => parentPort!.postMessage({ id, ok: false, message: err instanceof Error ? err.message : String(err) }),
  );
});
