import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, rmSync, statSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import type { KeyRange } from '../changelog/index.js';
import { openNative, type NativeDb } from '../db/native.js';
import { compressPiece, type PieceCoding } from './pieces.js';

/**
 * A worker thread that makes kinds' files (snapshots.ts, through BuildPool): for each
 * job, the kind's module (KindFile.module) fills a fresh scratch SQLite file
 * from the node's database in one read transaction on a connection of its own; the
 * file is then cut into pieces, each compressed (pieces.ts), its SHA-256 computed
 * over the whole, and removed. All of it here, so that a busy main thread (a node
 * assessing a new catalog) does not hold a file back from the children. The thread
 * lives on between jobs (its start and imports cost about 0.1 s of CPU).
 */
export interface BuildJob {
  dbFile: string;
  file: string;
  builder: string;
  nodeId: string;
  languages: string[];
  range: KeyRange;
  /** A piece's size before compression. */
  pieceBytes: number;
  /** How each piece is compressed (SubscribeRequest.brotli_pieces). */
  coding: PieceCoding;
}

/** What a job made: the builder's count, and the file as compressed pieces in order (each `pieceBytes` of it, the last the rest). */
export interface Built {
  count: number;
  coding: PieceCoding;
  size: number;
  sha256: string;
  pieces: Uint8Array[];
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

/** The read buffer, kept between jobs (garbage in a thread waits for its next collection). */
let readBuf = Buffer.alloc(0);

/**
 * The file as compressed pieces with its size and SHA-256; the file is removed. Each
 * piece is in an ArrayBuffer of its own, so that it can be moved to the main thread.
 */
function pieces(file: string, pieceBytes: number, coding: PieceCoding): Omit<Built, 'count'> {
  const fd = openSync(file, 'r');
  try {
    const size = statSync(file).size;
    const hash = createHash('sha256');
    const out: Uint8Array[] = [];
    if (readBuf.length < pieceBytes) readBuf = Buffer.alloc(pieceBytes);
    for (let offset = 0; offset < size; offset += pieceBytes) {
      const n = readSync(fd, readBuf, 0, Math.min(pieceBytes, size - offset), offset);
      const piece = readBuf.subarray(0, n);
      hash.update(piece);
      const z = compressPiece(piece, coding);
      out.push(z.byteOffset === 0 && z.byteLength === z.buffer.byteLength ? z : new Uint8Array(z));
    }
    return { coding, size, sha256: hash.digest('hex'), pieces: out };
  } finally {
    closeSync(fd);
    rmSync(file, { force: true });
  }
}

parentPort!.on('message', ({ id, job }: { id: number; job: BuildJob }) => {
  build(job)
    .then((count) => ({ count, ...pieces(job.file, job.pieceBytes, job.coding) }))
    .then(
      // The pieces are moved to the main thread, not copied.
      (built: Built) =>
        parentPort!.postMessage(
          { id, ok: true, built },
          built.pieces.map((p) => p.buffer as ArrayBuffer),
        ),
      (err: unknown) => {
        rmSync(job.file, { force: true });
        parentPort!.postMessage({ id, ok: false, message: err instanceof Error ? err.message : String(err) });
      },
    );
});
