import { createHash, type Hash } from 'node:crypto';
import { closeSync, openSync, rmSync, writeSync } from 'node:fs';
import { inflatePiece } from './pieces.js';
import type { ReceivedMessage } from './protocol.js';

type Piece = Omit<NonNullable<ReceivedMessage['snapshot_file']>, 'cursor' | 'more' | 'gzip' | 'brotli'> & {
  cursor?: string | number;
  more?: boolean;
  gzip?: Buffer;
  brotli?: Buffer;
};

/** A whole file: its kind and format, where it is, and for a tail file the cursor after it (0 in a resync) and whether more follows. */
export interface ReceivedFile {
  kind: string;
  format: number;
  path: string;
  cursor: number;
  more: boolean;
}

/** A piece's content at most (the parent cuts 2 MB): a piece that inflates past it is refused, not written. */
const MAX_PIECE_BYTES = 16 * 1024 * 1024;
/** A snapshot file (one part) at most: 100,000 updates make nine parts, about 107 MB in all; the largest part the parent cuts holds 25,000 updates. */
const MAX_FILE_BYTES = 64 * 1024 ** 3;

/**
 * A child's side of a snapshot file (SnapshotFilePiece): the pieces, each inflated on
 * its own, written in order to a scratch file while its SHA-256 is computed; the
 * last piece's size and hash must match what arrived. Synchronous, like the rest of
 * a subscription's messages (inbox.ts): a piece is about 2 MB. Two scratch files in
 * turn (`path`, then `path.1`): the next part arrives while the last one is loaded on
 * the part loader's thread (part-loader.ts); `done` removes a file once loaded.
 */
export class FileReceiver {
  #fd: number | null = null;
  #hash: Hash | null = null;
  #bytes = 0;
  #kind = '';
  #format = 0;
  #cursor = 0;
  #path = '';
  #files = 0;

  constructor(private readonly path: string) {}

  /** The scratch files it writes in turn. */
  static paths(path: string): [string, string] {
    return [path, `${path}.1`];
  }

  /** Takes one piece; the whole file once the last has arrived and checks out, else null. Throws on anything out of place. */
  piece(p: Piece): ReceivedFile | null {
    const offset = Number(p.offset);
    if (offset === 0) this.#start(p);
    else if (this.#fd === null || p.kind !== this.#kind || p.format !== this.#format || Number(p.cursor ?? 0) !== this.#cursor)
      throw new Error('a snapshot file piece out of order');
    if (offset !== this.#bytes) throw new Error(`a snapshot file piece at ${offset}, expected ${this.#bytes}`);
    const data = inflatePiece(p, MAX_PIECE_BYTES);
    if (this.#bytes + data.length > MAX_FILE_BYTES) throw new Error(`a snapshot file over ${MAX_FILE_BYTES} bytes refused`);
    writeSync(this.#fd!, data, 0, data.length, offset);
    this.#hash!.update(data);
    this.#bytes += data.length;
    if (!p.last) return null;
    const sha256 = this.#hash!.digest('hex');
    const size = this.#bytes;
    this.#close();
    if (Number(p.size) !== size) throw new Error(`the snapshot file has ${size} bytes, the parent said ${p.size}`);
    if (p.sha256 !== sha256) throw new Error(`the snapshot file's SHA-256 is ${sha256}, the parent said ${p.sha256}`);
    return { kind: this.#kind, format: this.#format, path: this.#path, cursor: this.#cursor, more: p.more === true };
  }

  /** While a file arrives, only its next piece (or a heartbeat) may come: anything else is out of place. */
  between(msg: ReceivedMessage): void {
    if (this.#fd !== null && !('snapshot_file' in msg && msg.snapshot_file) && !('heartbeat' in msg && msg.heartbeat))
      throw new Error('a message inside a snapshot file');
  }

  #start(p: Piece): void {
    if (this.#fd !== null) throw new Error('a snapshot file started before the last one ended');
    this.#path = FileReceiver.paths(this.path)[this.#files++ % 2]!;
    this.#fd = openSync(this.#path, 'w', 0o600);
    this.#hash = createHash('sha256');
    this.#bytes = 0;
    this.#kind = p.kind;
    this.#format = p.format;
    this.#cursor = Number(p.cursor ?? 0);
  }

  #close(): void {
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = null;
    this.#hash = null;
  }

  /** A file applied: removed (one refused is, with the other, by `discard` when the stream ends). */
  done(file: ReceivedFile): void {
    rmSync(file.path, { force: true });
  }

  /** Drops what arrived (the stream ended). */
  discard(): void {
    this.#close();
    this.#bytes = 0;
    for (const p of FileReceiver.paths(this.path)) rmSync(p, { force: true });
  }
}
