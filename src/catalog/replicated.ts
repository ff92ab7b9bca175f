import { prepare, type NativeDb } from '../db/native.js';
import { languageMatches, anyLanguageMatches } from '../lib/languages.js';
import { pages, type ApplyTx, type Change, type KindApplier, type ReplicatedKind, type SourceContext } from '../changelog/index.js';
import type { LogRow } from '../changelog/index.js';
import { ReplicaWriter, readUpdatePayloads, wireUpdatesSql, type WireUpdate } from './replica.js';
import { updateLanguages } from './format.js';
import type { UpdatePayload } from './import-core.js';
import { UPDATES_FILE_FORMAT, checkUpdatesFile, loadUpdatesFile, mergeUpdatesFile, updatesFileCuts } from './snapshot-file.js';
import { levelKey, levelsPayload, type LevelPayload } from './severities.js';

/**
 * The catalog's replicated kinds: `update` (an update with its files, filtered to
 * each subscriber's languages) and `severity-levels` (the whole list of custom
 * severity levels, one entry).
 */

/** Snapshot pages: the child commits (and fsyncs) once per message. */
const SNAPSHOT_PAGE = 500;
/** Updates handed to one insertNew (each ~1.3 KB of JSON, held in a TEMP table until the run is written). */
const BULK_RUN = 1_000;
const CONTENT_HASH_KEY = '"contentHash":"';

/**
 * An update upsert logged without a payload: it stands for the update's state when
 * the entry is sent (imports and a child's applied batches log this way, so the
 * log does not hold a second copy of the catalog). A newer state sent early is
 * safe: a child keeps the highest revision, and every later change has its own entry.
 */
const isStateEntry = (r: Pick<LogRow, 'op' | 'payload'>) => r.op === 'upsert' && r.payload === '';

/** An upsert's file manifests filtered to a subscriber's languages; one whose files all match is sent as stored. */
function filterUpdate(p: UpdatePayload, languages: readonly string[]): Buffer {
  const files = p.files.filter((f) => languageMatches(f.language, languages));
  return Buffer.from(JSON.stringify(files.length === p.files.length ? p : { ...p, files }));
}

function filterPayload(payload: string, entryLanguages: string, languages: readonly string[]): Buffer {
  if (entryLanguages.split(',').every((l) => l === '' || languageMatches(l, languages))) return Buffer.from(payload);
  return filterUpdate(JSON.parse(payload) as UpdatePayload, languages);
}

const updateChange = (key: string, op: string, payload: Buffer): Change => ({ seq: 0, kind: 'update', key, op, payload });

class UpdateApplier implements KindApplier {
  readonly #w: ReplicaWriter;
  readonly #empty;
  /**
   * A complete resync into an empty catalog (a new child's first sync): no update
   * row can be there before the snapshot brings it (a child imports nothing, and the
   * tail waits for the resync's end), so the snapshot's updates are inserted without
   * looking them up or remembering them for the sweep.
   */
  #fresh = false;

  constructor(db: NativeDb) {
    this.#w = new ReplicaWriter(db);
    this.#empty = prepare(db, 'SELECT 1 FROM updates LIMIT 1');
  }

  resyncStart(full: boolean): void {
    this.#fresh = full && this.#empty.all().length === 0;
  }

  tracksSeen(): boolean {
    return !this.#fresh;
  }

  apply(tx: ApplyTx, changes: readonly Change[]): number {
    let applied = 0;
    const fresh = this.#fresh && tx.fullResync;
    // Updates this node does not hold yet, written a run at a time by insertNew.
    let run: Buffer[] = [];
    const flush = () => {
      if (!run.length) return;
      applied += this.#w.insertNew(run, tx.now);
      run = [];
    };
    // Outside a fresh resync, which of the batch's updates this node holds (one query):
    // the others are new and go in bulk too (a large import on its way down), once each.
    const held = fresh ? null : this.#w.held(changes.filter((c) => c.op === 'upsert').map((c) => c.key));
    const inRun = new Set<string>();
    for (const c of changes) {
      // From a parent that sends the content hash (a payload built by SQL); else one at a time below.
      if (c.op === 'upsert' && c.payload.includes(CONTENT_HASH_KEY) && (fresh || (!held!.has(c.key) && !inRun.has(c.key)))) {
        run.push(c.payload);
        if (!fresh) inRun.add(c.key);
        if (run.length >= BULK_RUN) flush(); // bounds what is held at once
        continue;
      }
      flush();
      if (c.op === 'upsert') {
        const p = JSON.parse(c.payload.toString()) as UpdatePayload;
        if (this.#w.upsert(p, tx.now, fresh, tx.fullResync)) {
          tx.applied.push({ kind: 'update', key: p.id, op: 'upsert', revision: p.revision });
          // A state entry (no payload): this node's children are sent the row as it is then.
          tx.log({ kind: 'update', key: p.id, op: 'upsert', languages: updateLanguages(p).join(','), payload: '' });
          applied++;
        }
      } else if (c.op === 'expire') {
        const p = JSON.parse(c.payload.toString()) as { id: string; revision: number };
        const cur = this.#w.current(p.id);
        if (cur && this.#w.expire(p.id, p.revision, tx.now)) {
          tx.log({ kind: 'update', key: p.id, op: 'expire', languages: cur.languages, payload: JSON.stringify(p) });
          applied++;
        }
      } else if (c.op === 'delete' && this.#delete(tx, c.key)) applied++;
    }
    flush();
    return applied;
  }

  #delete(tx: ApplyTx, id: string): boolean {
    const langs = this.#w.delete(id);
    if (langs === null) return false;
    tx.log({ kind: 'update', key: id, op: 'delete', languages: langs, payload: JSON.stringify({ id }) });
    return true;
  }

  /** Replicated updates the snapshot did not list are removed (with tombstones for this node's children). */
  sweep(tx: ApplyTx): number {
    // A fresh resync has nothing to sweep: each update came from it.
    const fresh = this.#fresh;
    this.#fresh = false;
    if (fresh) return 0;
    let removed = 0;
    for (const { id } of this.#w.ids(tx.seenSql('update'))) if (this.#delete(tx, id)) removed++;
    return removed;
  }
}

export const updateKind: ReplicatedKind = {
  kind: 'update',
  catalog: true,
  byLanguage: true,
  source: {
    async tail(ctx: SourceContext, rows: readonly LogRow[], languages: readonly string[]) {
      // The current replicated form of the updates behind state entries, read in one query.
      const ids = [...new Set(rows.filter(isStateEntry).map((r) => r.key))];
      const states = new Map<string, string>();
      if (ids.length) {
        const [q, args] = wireUpdatesSql(ctx.self.nodeId, languages, { ids });
        for (const r of await ctx.reads.all<WireUpdate>(q, args)) states.set(r.id, r.payload);
      }
      return rows.map((r) => {
        // The update as it is now (or nothing: deleted since, or no longer in these
        // languages; the entry that did that follows in the log).
        if (isStateEntry(r)) return states.has(r.key) ? Buffer.from(states.get(r.key)!) : null;
        return r.op === 'upsert' ? filterPayload(r.payload, r.languages, languages) : Buffer.from(r.payload);
      });
    },
    /** Pages of updates in the subscriber's languages, their replicated form built by SQLite (wireUpdatesSql). */
    snapshot(ctx, languages) {
      return pages(
        async (after) => {
          const [q, args] = wireUpdatesSql(ctx.self.nodeId, languages, { afterId: after, limit: SNAPSHOT_PAGE });
          return ctx.reads.all<WireUpdate>(q, args);
        },
        (r) => updateChange(r.id, 'upsert', Buffer.from(r.payload)),
      );
    },
    /** Exactly what the change moves: updates with files in a language added (sent) or removed (sent again without those files, or deleted). */
    backfill(ctx, from, to) {
      const moved = [...from.filter((l) => !to.includes(l)), ...to.filter((l) => !from.includes(l))];
      return pages(
        (after) => readUpdatePayloads(ctx.orm, ctx.self.nodeId, { afterId: after, limit: SNAPSHOT_PAGE }),
        (p) => {
          const langs = p.files.map((f) => f.language);
          if (!langs.some((l) => l !== 'neutral' && languageMatches(l, moved))) return null;
          if (anyLanguageMatches(langs.join(','), to)) return updateChange(p.id, 'upsert', filterUpdate(p, to));
          return updateChange(p.id, 'delete', Buffer.from(JSON.stringify({ id: p.id })));
        },
      );
    },
  },
  file: {
    format: UPDATES_FILE_FORMAT,
    module: new URL('./snapshot-file.js', import.meta.url).href,
    cuts: updatesFileCuts,
    holdsNone: (db) => db.prepare('SELECT 1 FROM updates LIMIT 1').get() === undefined,
    check: checkUpdatesFile,
    load: loadUpdatesFile,
    merge: mergeUpdatesFile,
  },
  applier: (db) => new UpdateApplier(db),
};

/**
 * The replicated levels: exactly the list the parent sends (renamed and re-ranked in
 * place, new ones added, a local level of the same name adopted, those the list no
 * longer has deleted and their updates unassigned), then republished as this node's
 * whole list (replicated and its own).
 */
class LevelsApplier implements KindApplier {
  readonly #s;

  constructor(
    db: NativeDb,
    private readonly nodeId: string,
  ) {
    const prep = (q: string) => prepare(db, q);
    this.#s = {
      replicated: prep('SELECT id, origin_key, name FROM custom_severities WHERE origin_key IS NOT NULL'),
      rename: prep('UPDATE custom_severities SET name = ? WHERE id = ?'),
      upsert: prep(`INSERT INTO custom_severities (name, rank, created_at, origin_key) VALUES (?,?,?,?)
        ON CONFLICT(origin_key) DO UPDATE SET name = excluded.name, rank = excluded.rank`),
      adopt: prep('UPDATE custom_severities SET origin_key = ?, rank = ? WHERE name = ? AND origin_key IS NULL'),
      unassign: prep('UPDATE updates SET custom_severity_id = NULL WHERE custom_severity_id = ?'),
      delete: prep('DELETE FROM custom_severities WHERE id = ?'),
      list: prep('SELECT id, name, rank, origin_key FROM custom_severities ORDER BY rank, id'),
    };
  }

  apply(tx: ApplyTx, changes: readonly Change[]): number {
    for (const c of changes) {
      const levels = (JSON.parse(c.payload.toString()) as LevelPayload).levels;
      const keep = new Set(levels.map((l) => l.key));
      for (const row of this.#s.replicated.all() as { id: number; origin_key: string; name: string }[]) {
        if (keep.has(row.origin_key)) {
          this.#s.rename.run(`\u0000${row.origin_key}`, row.id); // out of the way of renames that swap names
        } else {
          this.#s.unassign.run(row.id);
          this.#s.delete.run(row.id);
        }
      }
      for (const l of levels) {
        this.#s.adopt.run(l.key, l.rank, l.name);
        this.#s.upsert.run(l.name, l.rank, tx.now, l.key);
      }
      const rows = this.#s.list.all() as { id: number; name: string; rank: number; origin_key: string | null }[];
      const list: LevelPayload = {
        levels: rows.map((r) => ({ key: levelKey(this.nodeId, { id: r.id, originKey: r.origin_key }), name: r.name, rank: r.rank })),
      };
      tx.log({ kind: 'severity-levels', key: 'all', op: 'upsert', languages: '', payload: JSON.stringify(list) });
    }
    return changes.length;
  }
}

export const levelsKind: ReplicatedKind = {
  kind: 'severity-levels',
  catalog: true,
  byLanguage: false,
  source: {
    tail: (_ctx, rows) => rows.map((r) => Buffer.from(r.payload)),
    async *snapshot(ctx) {
      yield [
        { seq: 0, kind: 'severity-levels', key: 'all', op: 'upsert', payload: Buffer.from(JSON.stringify(await levelsPayload(ctx.orm, ctx.self.nodeId))) },
      ];
    },
  },
  applier: (db, self) => new LevelsApplier(db, self.nodeId),
};
