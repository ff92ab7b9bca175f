import type { NativeDb } from '../db/native.js';
import { prepare } from '../db/native.js';
import { statSync } from 'node:fs';
import { Checkpointer } from '../db/checkpointer.js';
import { PartLoader } from './part-loader.js';
import type { ReceivedFile } from './file-receiver.js';
import { changelog, type Applied, type ApplyTx, type Change, type KindApplier, type KindFile, type KindRegistry } from '../changelog/index.js';

/** A file at least this large is loaded with its checkpoint left to the checkpointer's thread. */
const LARGE_FILE_BYTES = 8 * 1024 * 1024;

/**
 * Applies what the parent sends, one transaction per message (or per run of
 * messages that queued up): each replicated kind applies its changes and appends this
 * node's own change-log entries for them (so a mid-tier node republishes to its
 * children), and the cursor moves in the same transaction. A crash at any instant
 * leaves either the whole batch with its cursor or none of it, so nothing is lost or
 * applied twice. A change of a kind this version does not know is skipped, not fatal.
 */
export class BatchApplier {
  readonly #appliers = new Map<string, KindApplier>();
  /** The kinds a snapshot file may load into in this resync: a complete one that found the kind holding none (its parts then follow one another). */
  readonly #fileKinds = new Set<string>();
  readonly #kinds: KindRegistry;
  readonly #append;
  readonly #s;
  /** What the batches applied since the last `takeApplied()` changed (for the node: policies to reassess). */
  #applied: Applied[] = [];
  /** Copies a file's pages into the database file on a thread of its own (null: an in-memory database). */
  readonly checkpointer: Checkpointer | null;
  /** The connection's own automatic checkpoint (pages), back on after each file. */
  readonly #autoCheckpoint: number;
  readonly #synchronous: number;
  readonly #dbFile: string | null;
  #loader: PartLoader | null = null;

  constructor(
    private readonly db: NativeDb,
    kinds: KindRegistry,
    /** This node's id: what it stamps on what it republishes (its own custom severity levels' keys). */
    nodeId: string,
    /** The node's clock: what is applied is stamped with it (catalog freshness). */
    private readonly clock: () => number = Date.now,
  ) {
    // The keys a complete resync has listed live for the resync only: one that is cut
    // short (a crash included) starts again from its beginning, which empties them.
    // A TEMP table of this connection costs no WAL writes and no fsync.
    this.#kinds = kinds;
    const file = (db.prepare('PRAGMA database_list').all() as { name: string; file: string }[]).find((d) => d.name === 'main')?.file;
    this.#dbFile = file || null;
    this.checkpointer = file ? new Checkpointer(file) : null;
    this.#autoCheckpoint = Number((db.prepare('PRAGMA wal_autocheckpoint').get() as { wal_autocheckpoint: number }).wal_autocheckpoint);
    this.#synchronous = Number((db.prepare('PRAGMA synchronous').get() as { synchronous: number }).synchronous);
    db.exec('CREATE TEMP TABLE IF NOT EXISTS resync_seen (kind TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID');
    for (const k of kinds.all()) this.#appliers.set(k.kind, k.applier(db, { nodeId }));
    this.#append = changelog.nativeAppender(db);
    const prep = (q: string) => prepare(db, q);
    this.#s = {
      seen: prep('INSERT OR IGNORE INTO temp.resync_seen (kind, key) VALUES (?, ?)'),
      cursor: prep('UPDATE upstream_state SET cursor = ?, epoch = ?, last_success_at = ?, updated_at = ? WHERE id = 1'),
      current: prep('SELECT cursor FROM upstream_state WHERE id = 1'),
      resyncing: prep('UPDATE upstream_state SET resyncing = ?, updated_at = ? WHERE id = 1'),
      resynced: prep('UPDATE upstream_state SET cursor = ?, epoch = ?, languages = ?, resyncing = 0, last_success_at = ?, updated_at = ? WHERE id = 1'),
    };
  }

  #tx<T>(fn: () => T): T {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const r = fn();
      this.db.exec('COMMIT');
      return r;
    } catch (err) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      throw err;
    }
  }

  #context(fullResync: boolean): ApplyTx {
    const now = this.clock();
    return {
      now,
      fullResync,
      log: (e) => this.#append(e, now),
      applied: [],
      seenSql: (kind) => `(SELECT key FROM temp.resync_seen WHERE kind = '${kind.replace(/'/g, "''")}')`,
    };
  }

  /** Applies one batch; returns how many entities changed here. */
  apply(changes: readonly Change[], opts: { snapshot: boolean; fullResync: boolean; cursor: number | null; epoch: string }): number {
    return this.#tx(() => {
      const tx = this.#context(opts.fullResync);
      let changed = 0;
      // Runs of consecutive changes of one kind, in the order sent.
      for (let i = 0; i < changes.length; ) {
        const kind = changes[i]!.kind;
        let j = i + 1;
        while (j < changes.length && changes[j]!.kind === kind) j++;
        const run = changes.slice(i, j);
        i = j;
        const applier = this.#appliers.get(kind);
        if (!applier) continue;
        if (opts.fullResync && (applier.tracksSeen?.() ?? true)) for (const c of run) this.#s.seen.run(c.kind, c.key);
        changed += applier.apply(tx, run);
      }
      for (const a of this.#appliers.values()) a.afterApply?.(tx);
      this.#applied.push(...tx.applied);
      if (!opts.snapshot && opts.cursor !== null) this.#s.cursor.run(opts.cursor, opts.epoch, tx.now, tx.now);
      return changed;
    });
  }

  /** Whether a complete resync may come as files: some kind has one, and no such kind holds anything yet. */
  canLoadFiles(): boolean {
    const withFile = this.#kinds.all().filter((k) => k.file);
    return withFile.length > 0 && withFile.every((k) => k.file!.holdsNone(this.db));
  }

  /** A whole file that arrived (file-receiver.ts): a tail file when it has a cursor (never inside a resync), else a snapshot's part. */
  applyFile(file: ReceivedFile, opts: { epoch: string; resyncing: boolean; tailFiles: boolean }): number {
    if (file.cursor === 0) return this.loadFile(file.kind, file.format, file.path);
    if (!opts.tailFiles) throw new Error('a tail file, which this node did not ask for');
    if (opts.resyncing) throw new Error('a tail file inside a resync');
    return this.loadTailFile(file.kind, file.format, file.path, { cursor: file.cursor, epoch: opts.epoch });
  }

  /**
   * Loads a kind's snapshot file, or one part of it (checked whole by
   * file-receiver.ts), in one transaction: attached, its tables checked, copied by the kind (which logs what it
   * copies for this node's children). Returns how many entities it brought.
   */
  loadFile(kind: string, format: number, path: string): number {
    const file = this.#partFile(kind, format);
    const unsynced = !this.#syncParts();
    if (unsynced) this.db.exec('PRAGMA synchronous = NORMAL');
    try {
      return this.#attached(path, file, () => file.load(this.db, 'snapshot_file', this.clock()));
    } finally {
      if (unsynced) this.db.exec(`PRAGMA synchronous = ${this.#synchronous}`);
    }
  }

  /** The kind's file for a snapshot's part: only in a complete resync that found none of the kind here. */
  #partFile(kind: string, format: number): KindFile {
    const file = this.#file(kind, format);
    if (!this.#fileKinds.has(kind)) throw new Error(`a snapshot file of ${kind} outside a complete resync into a catalog that held none`);
    return file;
  }

  /**
   * Applies a tail file (a run of the parent's log as one file, checked whole by
   * file-receiver.ts) and moves the cursor past it, in one transaction: attached, its
   * tables checked, merged by the kind (entities held here replaced or kept as rows
   * would be; each it wrote logged for this node's children). Returns how many.
   */
  loadTailFile(kind: string, format: number, path: string, opts: { cursor: number; epoch: string }): number {
    const file = this.#file(kind, format);
    const current = Number((this.#s.current.get() as { cursor: number } | undefined)?.cursor ?? 0);
    if (opts.cursor <= current) throw new Error(`a tail file up to ${opts.cursor}, not after this node's cursor ${current}`);
    return this.#attached(path, file, () => {
      const now = this.clock();
      const n = file.merge(this.db, 'snapshot_file', now);
      this.#s.cursor.run(opts.cursor, opts.epoch, now, now);
      return n;
    });
  }

  #file(kind: string, format: number): KindFile {
    const file = this.#kinds.get(kind)?.file;
    if (!file) throw new Error(`a snapshot file of kind ${kind}, which this node does not load from a file`);
    if (format !== file.format) throw new Error(`a snapshot file of ${kind} in format ${format}; this node reads format ${file.format}`);
    return file;
  }

  /**
   * Runs `fn` in one transaction with the file attached as `snapshot_file`, once its
   * tables check out. A large file's transaction (a part of 100,000 updates' snapshot:
   * 13 MB, about 25 MB of pages written) is checkpointed by the checkpointer's thread,
   * not by this one after the commit; a smaller one as usual (the thread's start would
   * cost more than it saves: tree-scale's 20,000-update parts).
   */
  #attached(path: string, file: KindFile, fn: () => number): number {
    return this.#checked(path, file, () => {
      const large = this.checkpointer !== null && statSync(path).size >= LARGE_FILE_BYTES;
      if (large) this.db.exec('PRAGMA wal_autocheckpoint = 0');
      try {
        return this.#tx(fn);
      } finally {
        if (large) {
          this.db.exec(`PRAGMA wal_autocheckpoint = ${this.#autoCheckpoint}`);
          this.checkpointer.request();
        }
      }
    });
  }

  /** Runs `fn` with the file attached as `snapshot_file`, once its tables check out; detached after. */
  #checked<T>(path: string, file: KindFile, fn: () => T): T {
    prepare(this.db, 'ATTACH ? AS snapshot_file').run(path);
    try {
      const why = file.check(this.db, 'snapshot_file');
      if (why) throw new Error(why);
      return fn();
    } finally {
      this.db.exec('DETACH snapshot_file');
    }
  }

  /**
   * A snapshot's part of 8 MB or more, loaded on the part loader's thread (part-loader.ts):
   * checked here first (attached to this connection), then copied there, after the
   * parts handed over before it, while this thread takes the next one; so is a smaller
   * part while parts handed over are not loaded yet (the parts' order is kept). Null:
   * none of these, or no thread for it (a database in memory): load it here (applyFile).
   */
  loadLater(file: ReceivedFile): Promise<number> | null {
    if (file.cursor !== 0 && this.#loader?.busy) throw new Error('a tail file while the parts of a resync are being loaded');
    if (file.cursor !== 0 || !this.#dbFile) return null;
    if (!this.#loader?.busy && statSync(file.path).size < LARGE_FILE_BYTES) return null;
    const kind = this.#partFile(file.kind, file.format);
    this.#checked(file.path, kind, () => {});
    this.#loader ??= new PartLoader();
    return this.#loader.load({ dbFile: this.#dbFile, file: file.path, loader: kind.module, now: this.clock(), sync: this.#syncParts() }).then((n) => {
      this.checkpointer?.request();
      return n;
    });
  }

  /** Ends the checkpointer's and the part loader's threads, once the parts handed over are loaded (the node stops). */
  async close(): Promise<void> {
    await this.#loader?.close();
    this.checkpointer?.close();
  }

  /** What the batches applied since the last call changed. */
  takeApplied(): Applied[] {
    const out = this.#applied;
    this.#applied = [];
    return out;
  }

  /**
   * Whether a snapshot's part is committed with a sync of its own. Not while this node
   * has no children (synchronous = NORMAL; 13-16 ms a 25-MB part here): the resync's
   * end, synced, syncs the WAL with every part before it, and a part lost to a power
   * cut leaves the resync to be redone, as a crash does. A node with children syncs
   * each: they may read what a part logged before the resync's end, and a log that
   * lost its tail would number new entries again under their cursors.
   */
  #syncParts(): boolean {
    return this.db.prepare('SELECT 1 FROM children LIMIT 1').get() !== undefined;
  }

  resyncStart(full: boolean): void {
    this.#loader?.reset();
    this.#fileKinds.clear();
    if (full) for (const k of this.#kinds.all()) if (k.file?.holdsNone(this.db)) this.#fileKinds.add(k.kind);
    this.#tx(() => {
      for (const a of this.#appliers.values()) a.resyncStart?.(full);
      this.db.exec('DELETE FROM temp.resync_seen');
      this.#s.resyncing.run(full ? 1 : 0, Date.now());
    });
  }

  /**
   * Ends a snapshot: after a complete resync, each kind removes what the snapshot did
   * not list (with tombstones for this node's children); then the cursor, epoch and
   * languages move together. Returns how many entities were removed.
   */
  resyncEnd(opts: { cursor: number; full: boolean; epoch: string; languages: readonly string[] }): number {
    this.#fileKinds.clear(); // a snapshot file outside the resync that found the catalog empty is refused
    return this.#tx(() => {
      const tx = this.#context(opts.full);
      let removed = 0;
      if (opts.full) for (const a of this.#appliers.values()) removed += a.sweep?.(tx) ?? 0;
      this.#applied.push(...tx.applied);
      this.db.exec('DELETE FROM temp.resync_seen');
      this.#s.resynced.run(opts.cursor, opts.epoch, opts.languages.join(','), tx.now, tx.now);
      return removed;
    });
  }
}
