import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../lib/log.js';
import { changelog, type KeyRange, type KindRegistry, type ReplicatedKind, type SourceContext } from '../changelog/index.js';
import { openNative } from '../db/native.js';
import type { ServerMessage } from './protocol.js';
import type { BuildJob, Built } from './build-worker.js';
import { BuildPool } from './build-pool.js';
import type { PieceCoding } from './pieces.js';

/** A complete resync's snapshot older than this many log entries is built anew rather than followed by a long tail. */
const REUSE_ENTRIES = 10_000;
/** A frame's length prefix (bytes). */
const HEADER = 4;
/** Frames kept in memory per snapshot, so that children reading the same part share one copy. */
const CACHE_BYTES = 32 * 1024 * 1024;
/** A snapshot file's piece before compression (its message stays under gRPC's default 4 MB limit). */
const PIECE_BYTES = 2 * 1024 * 1024;
/** What a snapshot is made of: rows (batches of changes), or for a child that holds nothing yet, files of the kinds that have one. */
export type SnapshotForm = 'rows' | 'file';

/** A kind's file in parts, the first already being built. */
interface FileParts {
  count: number;
  build: (i: number) => Promise<Built>;
  first: Promise<Built>;
}

/**
 * A complete resync's snapshot for one language set, built once and shared by every
 * child with that set (and the same catalog rule and form, and compression): each page
 * of each kind's snapshot is encoded as a `batch` message once (a large one compressed,
 * in parts, for children that take that) and appended to a file (`[length][message]`
 * frames); every child streams the file at its own pace, from disk, also while it is
 * still being built. The snapshot says the log's head it was cut at (the child's
 * cursor after it). Kept while children read it and it is the newest for its set.
 */
export class Snapshot {
  readonly events = new EventEmitter();
  /** Bytes of whole frames written so far. */
  bytes = 0;
  done = false;
  failed: Error | null = null;
  refs = 0;
  superseded = false;
  /** Recent frames by offset (insertion order: the oldest goes first), at most CACHE_BYTES. */
  readonly #cache = new Map<number, Buffer>();
  #cached = 0;

  constructor(
    readonly key: string,
    readonly head: number,
    readonly file: string,
  ) {
    this.events.setMaxListeners(0);
  }

  /** Keeps a frame for readers close behind (the builder's, or one a reader loaded). */
  remember(at: number, body: Buffer): void {
    if (this.#cache.has(at)) return;
    this.#cache.set(at, body);
    this.#cached += body.length;
    for (const [k, v] of this.#cache) {
      if (this.#cached <= CACHE_BYTES) break;
      this.#cache.delete(k);
      this.#cached -= v.length;
    }
  }

  /** No child reads it: its frames stay on disk only. */
  forgetFrames(): void {
    this.#cache.clear();
    this.#cached = 0;
  }

  #changed(): Promise<void> {
    return new Promise((resolve) => this.events.once('changed', resolve));
  }

  /** The encoded messages, in order; waits for the builder when it reads ahead of it. */
  async *frames(): AsyncIterable<Buffer> {
    let fh: FileHandle | null = null;
    try {
      let at = 0;
      for (;;) {
        if (this.failed) throw this.failed;
        if (at >= this.bytes) {
          if (this.done) return;
          await this.#changed();
          continue;
        }
        let body = this.#cache.get(at);
        if (!body) {
          fh ??= await open(this.file, 'r');
          const head = Buffer.alloc(HEADER);
          await fh.read(head, 0, HEADER, at);
          body = Buffer.alloc(head.readUInt32BE(0));
          await fh.read(body, 0, body.length, at + HEADER);
          this.remember(at, body);
        }
        at += HEADER + body.length;
        yield body;
      }
    } finally {
      await fh?.close();
    }
  }
}

/** The snapshots of a parent, by language set; `built` counts those it made. */
export class Snapshots {
  readonly #newest = new Map<string, Snapshot>();
  #ready: Promise<void> | null = null;
  /** The threads that build files. */
  readonly #pool = new BuildPool();
  built = 0;
  /** Tail files built (each shared by the subscribers of its set at its cursor). */
  tailFiles = 0;

  constructor(
    private readonly dir: string,
    private readonly kinds: KindRegistry,
    private readonly source: SourceContext,
    /** A message encoded as on the wire: its frames (compressed.ts: a large batch compressed, in parts, for a child that takes that). */
    private readonly encode: (msg: ServerMessage, compress: boolean) => Buffer[],
    /** This node's database file, which a snapshot file is built from (null: a remote database, rows only). */
    private readonly dbFile: string | null,
    private readonly logger: Logger,
  ) {}

  /** The form a child that asked for `wanted` gets: files only from a local database. */
  form(wanted: SnapshotForm): SnapshotForm {
    return wanted === 'file' && this.dbFile ? 'file' : 'rows';
  }

  /** What a node starts with: no snapshot of an earlier run is trusted. */
  #clean(): Promise<void> {
    this.#ready ??= (async () => {
      await rm(this.dir, { recursive: true, force: true });
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
    })();
    return this.#ready;
  }

  /**
   * A snapshot for a child of these languages: the newest one for the set if the log
   * still holds everything after its head (`min`) and it is at most REUSE_ENTRIES
   * behind the head, else a new one, built in the background. Release it when done.
   */
  async acquire(
    languages: readonly string[],
    catalog: boolean,
    form: SnapshotForm = 'rows',
    compress = false,
    coding: PieceCoding = 'gzip',
  ): Promise<Snapshot> {
    await this.#clean();
    form = this.form(form);
    const pieces = form === 'file' ? `:${coding}` : '';
    const key = `${form}${pieces}:${catalog ? 'catalog' : 'no-catalog'}:${compress ? 'gzip' : 'plain'}:${languages.join(',')}`;
    const { min, head } = await changelog.bounds(this.source.reads);
    let s = this.#newest.get(key);
    const usable = s && !s.failed && (min === 0 || s.head >= min - 1) && head - s.head <= REUSE_ENTRIES;
    if (!s || !usable) {
      if (s) this.#supersede(s);
      const name = createHash('sha256').update(key).digest('hex').slice(0, 32);
      s = new Snapshot(key, head, join(this.dir, `${name}-${head}.bin`));
      this.#newest.set(key, s);
      this.built++;
      void this.#build(s, languages, catalog, form, compress, coding);
    }
    s.refs++;
    return s;
  }

  release(s: Snapshot): void {
    s.refs--;
    if (s.refs > 0) return;
    s.forgetFrames();
    if (s.superseded || s.failed) void rm(s.file, { force: true });
  }

  #supersede(s: Snapshot): void {
    s.superseded = true;
    if (this.#newest.get(s.key) === s) this.#newest.delete(s.key);
    if (s.refs === 0) void rm(s.file, { force: true });
  }

  /**
   * Each kind's snapshot (the catalog's kinds only with the catalog), encoded once and
   * appended as frames: pages of changes, or in the file form a kind's file in pieces.
   */
  async #build(s: Snapshot, languages: readonly string[], catalog: boolean, form: SnapshotForm, compress: boolean, coding: PieceCoding): Promise<void> {
    const started = performance.now();
    let fh: FileHandle | null = null;
    let files = new Map<string, FileParts>();
    try {
      fh = await open(s.file, 'wx', 0o600);
      const append = async (msg: ServerMessage) => {
        for (const body of this.encode(msg, compress)) {
          const head = Buffer.alloc(HEADER);
          head.writeUInt32BE(body.length, 0);
          await fh!.write(Buffer.concat([head, body]), 0, HEADER + body.length, s.bytes);
          s.remember(s.bytes, body);
          s.bytes += HEADER + body.length;
          s.events.emit('changed');
        }
      };
      const kinds = this.kinds.all().filter((k) => catalog || !k.catalog);
      // The files' first parts are built (on worker threads) while the kinds before them are encoded.
      files = new Map(form === 'file' ? kinds.filter((k) => k.file).map((k) => [k.kind, this.#startFile(s, k, languages, coding)] as const) : []);
      const parts = Object.fromEntries([...files].map(([kind, f]) => [kind, f.count]));
      for (const k of kinds) {
        const file = files.get(k.kind);
        files.delete(k.kind); // #file cleans up after itself from here
        if (file) await this.#file(file, k, append);
        else for await (const changes of k.source.snapshot(this.source, languages)) await append({ batch: { changes, cursor: 0, snapshot: true } });
      }
      s.done = true;
      this.logger.info({ languages, catalog, form, parts, head: s.head, bytes: s.bytes, ms: Math.round(performance.now() - started) }, 'snapshot built');
    } catch (err) {
      s.failed = err instanceof Error ? err : new Error(String(err));
      this.logger.error({ err, languages }, 'building a snapshot failed');
      this.#supersede(s);
    } finally {
      // Files started and never sent (an earlier kind failed): their builds finished (the builder removes its file).
      for (const f of files.values()) await f.first.catch(() => {});
      await fh?.close();
      if (s.refs === 0) s.forgetFrames();
      s.events.emit('changed');
    }
  }

  /**
   * A kind's file for these languages, in parts by key range (KindFile.cuts): each
   * built by SQLite from this node's database, cut into pieces and compressed on a
   * thread of the pool (a read transaction of its own), then appended as messages; a
   * part's last piece says its size and SHA-256, and the child loads it then, while
   * the next part is built. The parts' transactions are not one: a change between
   * them is in the log after the snapshot's head, and the tail that follows brings it
   * (a newer state wins at the child).
   */
  #startFile(s: Snapshot, k: ReplicatedKind, languages: readonly string[], coding: PieceCoding): FileParts {
    const db = openNative(this.dbFile!);
    let cuts: string[];
    try {
      cuts = k.file!.cuts(db);
    } finally {
      db.close();
    }
    const ranges = [null, ...cuts].map((after, i) => ({ after, upTo: cuts[i] ?? null }));
    const build = (i: number) => this.#buildFile(`${s.file}.${k.kind}.${i}.db`, k, languages, ranges[i]!, coding);
    const first = build(0);
    first.catch(() => {}); // awaited in its turn (#file)
    return { count: ranges.length, build, first };
  }

  async #file(parts: FileParts, k: ReplicatedKind, append: (msg: ServerMessage) => Promise<void>): Promise<void> {
    // Part i's pieces go out while a thread builds part i + 1 (and the child loads part i).
    let next: Promise<Built> | null = parts.first;
    try {
      for (let i = 0; i < parts.count; i++) {
        const built = await next!;
        next = i + 1 < parts.count ? parts.build(i + 1) : null;
        next?.catch(() => {}); // awaited in its turn; a failure then ends the snapshot
        for (const msg of this.#pieces(built, k)) await append(msg);
      }
    } finally {
      await next?.catch(() => {});
    }
  }

  /**
   * The kind's file, built by SQLite from this node's database and cut into
   * compressed pieces on a thread of the pool (build-worker.ts: about 0.9 s for
   * 100,000 updates, during which this thread goes on serving children, agents and
   * the API).
   */
  async #buildFile(file: string, k: ReplicatedKind, languages: readonly string[], range: KeyRange, coding: PieceCoding): Promise<Built> {
    const job: BuildJob = {
      dbFile: this.dbFile!,
      file,
      builder: k.file!.module,
      nodeId: this.source.self.nodeId,
      languages: [...languages],
      range,
      pieceBytes: PIECE_BYTES,
      coding,
    };
    try {
      return await this.#pool.run(job);
    } catch (err) {
      throw new Error(`building the ${k.kind} file: ${(err as Error).message}`);
    }
  }

  /**
   * A tail file: what a subscriber of `languages` gets of the entities of `k` behind
   * the state entries in the log after `after` up to `upTo` (log.stateRun), as this
   * node holds them now, made on a thread of the pool; its pieces as encoded messages
   * that each say the cursor after the file (and `more`). The caller shares it among
   * the subscribers of the set at that cursor (stream.ts).
   */
  async tailFile(k: ReplicatedKind, languages: readonly string[], after: number, upTo: number, more: boolean, coding: PieceCoding = 'gzip'): Promise<Buffer[]> {
    await this.#clean();
    await mkdir(this.dir, { recursive: true, mode: 0o700 }); // removed since the start: made again
    const started = performance.now();
    const built = await this.#buildFile(join(this.dir, `tail-${++this.tailFiles}.db`), k, languages, { after: null, upTo: null, log: { after, upTo } }, coding);
    const frames = this.#pieces(built, k, { cursor: upTo, more }).flatMap((m) => this.encode(m, false));
    this.logger.debug({ languages, after, upTo, updates: built.count, bytes: built.size, ms: Math.round(performance.now() - started) }, 'tail file built');
    return frames;
  }

  /** A made file's pieces as messages; the last says the file's size and SHA-256. A tail file's pieces each carry its cursor. */
  #pieces(built: Built, k: ReplicatedKind, tail?: { cursor: number; more: boolean }): ServerMessage[] {
    return built.pieces.map((piece, i) => {
      const last = i === built.pieces.length - 1;
      return {
        snapshot_file: {
          kind: k.kind,
          format: k.file!.format,
          offset: i * PIECE_BYTES,
          [built.coding]: Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength),
          last,
          ...(last ? { size: built.size, sha256: built.sha256 } : {}),
          ...(tail ? { cursor: tail.cursor, more: last && tail.more } : {}),
        },
      };
    });
  }

  /** Ends the builder threads (the node stops). */
  close(): void {
    this.#pool.close();
  }

  /** What the parent holds: for status. */
  stats(): { built: number; sets: number; readers: number; tailFiles: number } {
    const list = [...this.#newest.values()];
    return { built: this.built, sets: list.length, readers: list.reduce((a, s) => a + s.refs, 0), tailFiles: this.tailFiles };
  }
}
