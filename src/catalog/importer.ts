import { Worker } from 'node:worker_threads';
import type { KeyObject } from 'node:crypto';
import type { Logger } from '../lib/log.js';
import { AppError, type ErrorCode } from '../lib/errors.js';
import type { Database } from '../db/index.js';
import { parseSignature, sha256File, verifySignature } from './signing.js';
import type { ImportResult } from './import-core.js';
import type { ImportJob, ImportReply } from './import-worker.js';

export interface ImportRequest {
  /** Path of the catalog file, already on local disk. */
  catalogFile: string;
  /** Bytes of the detached signature file. */
  signature: Buffer;
  /** SHA-256 of the catalog bytes, when the caller hashed them while receiving them. */
  fileSha256?: string;
  importedBy: string;
  source: 'upload' | 'feed' | 'cli';
}

/** How an import ended: its result, or the error code it failed with. */
export interface ImportOutcome {
  ok: boolean;
  result?: ImportResult;
  code?: string;
  seconds: number;
}

export type ImportObserver = (outcome: ImportOutcome) => void;

/**
 * Verifies and imports catalogs, one at a time. The signature is checked on the
 * main thread (cheap: one hash, one Ed25519 verify) before any database work; the
 * import itself runs in a worker thread (import-worker.ts).
 */
export class CatalogImporter {
  #busy = false;
  constructor(
    private readonly db: Database,
    private readonly trustedKeys: ReadonlyMap<string, KeyObject>,
    private readonly logger: Logger,
    private readonly observe: ImportObserver = () => {},
    /** This node's id: the origin recorded on what it imports. */
    private readonly origin = '',
    /** The time an import is stamped with (the node's clock). */
    private readonly now: () => number = Date.now,
  ) {}

  get busy(): boolean {
    return this.#busy;
  }

  async import(req: ImportRequest): Promise<ImportResult> {
    if (this.#busy) throw new AppError('import-busy', 'another catalog import is running; try again when it has finished');
    this.#busy = true;
    const started = process.hrtime.bigint();
    try {
      const sig = parseSignature(req.signature);
      const fileSha256 = req.fileSha256 ?? (await sha256File(req.catalogFile));
      const keyId = verifySignature(sig, fileSha256, this.trustedKeys);
      const job: ImportJob = {
        filePath: this.db.filePath,
        url: this.db.url,
        ...(this.db.authToken ? { authToken: this.db.authToken } : {}),
        catalogFile: req.catalogFile,
        meta: { origin: this.origin, fileSha256, keyId, importedBy: req.importedBy, source: req.source, now: this.now() },
      };
      const reply = await runWorker(job);
      if (!reply.ok) throw new AppError(reply.code as ErrorCode, reply.detail, reply.extra);
      const r = reply.result;
      this.logger.info(
        {
          version: r.version,
          added: r.added,
          changed: r.changed,
          expired: r.expired,
          unchanged: r.unchanged,
          ms: r.durationMs,
          by: req.importedBy,
          source: req.source,
        },
        r.replay ? 'catalog re-imported: nothing changed' : 'catalog imported',
      );
      this.observe({ ok: true, result: r, seconds: Number(process.hrtime.bigint() - started) / 1e9 });
      return r;
    } catch (err) {
      const code = err instanceof AppError ? err.code : 'internal';
      this.logger.warn({ code, err: err instanceof AppError ? err.message : err, by: req.importedBy, source: req.source }, 'catalog import refused');
      this.observe({ ok: false, code, seconds: Number(process.hrtime.bigint() - started) / 1e9 });
      throw err;
    } finally {
      this.#busy = false;
    }
  }
}

function runWorker(job: ImportJob): Promise<ImportReply> {
  return new Promise((resolve, reject) => {
    // execArgv: [] so that the parent's flags (--inspect, test loaders) are not inherited.
    const worker = new Worker(new URL('./import-worker.js', import.meta.url), { workerData: job, execArgv: [] });
    let settled = false;
    worker.once('message', (reply: ImportReply) => {
      settled = true;
      resolve(reply);
    });
    worker.once('error', (err) => {
      settled = true;
      reject(err);
    });
    worker.once('exit', (code) => {
      if (!settled) reject(new Error(`catalog import worker exited with code ${code}`));
    });
  });
}
