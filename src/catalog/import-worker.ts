import { parentPort, workerData } from 'node:worker_threads';
import { AppError } from '../lib/errors.js';
import { openConn } from '../db/exec.js';
import { applyCatalog, type ImportMeta } from './import-core.js';
import { parseCatalogInWorker } from './parse-lines.js';

/**
 * Worker thread entry for one catalog import. The import is CPU-bound (parse,
 * validate, hash, write) and takes seconds for a large catalog; running it here
 * keeps the node's event loop answering health checks, reads and agents meanwhile.
 */
export interface ImportJob {
  filePath: string | null;
  url: string;
  authToken?: string;
  catalogFile: string;
  meta: ImportMeta;
}

export type ImportReply =
  | { ok: true; result: Awaited<ReturnType<typeof applyCatalog>> }
  | { ok: false; code: string; detail: string; extra: Record<string, unknown> };

async function run(job: ImportJob): Promise<ImportReply> {
  try {
    // The binding on a local file, @libsql/client for a remote server (db/exec.ts).
    const conn = openConn(job);
    try {
      if (job.filePath) await conn.exec('PRAGMA temp_store = MEMORY'); // the ids-seen table of this import
      // Parsing and validating on a thread of their own, while this one writes.
      const result = await applyCatalog(conn, job.catalogFile, job.meta, (fn) => conn.transaction(fn), parseCatalogInWorker);
      return { ok: true, result };
    } finally {
      conn.close();
    }
  } catch (err) {
    if (err instanceof AppError) return { ok: false, code: err.code, detail: err.message, extra: err.extra };
    return { ok: false, code: 'internal', detail: (err as Error).message, extra: {} };
  }
}

if (parentPort) {
  const port = parentPort;
  run(workerData as ImportJob).then((reply) => port.postMessage(reply));
}
