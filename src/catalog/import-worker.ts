import { parentPort, workerData } from 'node:worker_threads';
import { createClient, type Transaction } from '@libsql/client';
import { AppError } from '../lib/errors.js';
import { openNative } from '../db/native.js';
import { nativeExec } from '../db/exec.js';
import { BUSY_TIMEOUT_MS } from '../db/client.js';
import { applyCatalog, type Exec, type ImportMeta } from './import-core.js';

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
    if (job.filePath) {
      const db = openNative(job.filePath);
      db.exec('PRAGMA temp_store = MEMORY'); // the ids-seen table of this import
      try {
        const result = await applyCatalog(
          nativeExec(db),
          job.catalogFile,
          job.meta,
          async () => void db.exec('BEGIN IMMEDIATE'),
          async () => void db.exec('COMMIT'),
          async () => {
            if (db.inTransaction) db.exec('ROLLBACK');
          },
        );
        return { ok: true, result };
      } finally {
        db.close();
      }
    }
    const client = createClient({ url: job.url, ...(job.authToken ? { authToken: job.authToken } : {}), timeout: BUSY_TIMEOUT_MS });
    let tx: Transaction | null = null;
    const exec: Exec = {
      run: async (sql, args) => (await tx!.execute({ sql, args: args as never })).rowsAffected,
      get: async <T>(sql: string, args: readonly unknown[]) => (await tx!.execute({ sql, args: args as never })).rows[0] as T | undefined,
      all: async <T>(sql: string, args: readonly unknown[]) => (await tx!.execute({ sql, args: args as never })).rows as unknown as T[],
      exec: async (sql) => void (await tx!.execute(sql)),
    };
    try {
      const result = await applyCatalog(
        exec,
        job.catalogFile,
        job.meta,
        async () => void (tx = await client.transaction('write')),
        async () => void (await tx!.commit()),
        async () => {
          if (tx && !tx.closed) await tx.rollback();
        },
      );
      return { ok: true, result };
    } finally {
      client.close();
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
