import type { Orm } from '../db/index.js';
import type { Exec } from '../db/exec.js';
import type { NativeDb } from '../db/native.js';
import { anyLanguageMatches } from '../lib/languages.js';
import type { Entry, LogRow } from './log.js';

/**
 * A replicated kind: one sort of entity that travels down the tree (updates, custom
 * severity levels, settings, releases, policies). Each domain contributes its kinds
 * (the domain's `replicated.ts`) and the node registers them in one list
 * (node/kinds.ts); replication/ drives them and knows no domain table. A kind says:
 * - on a parent (`source`): what a logged entry becomes for a subscriber of some
 *   languages, everything it has for a complete resync, and what a change of the
 *   subscriber's languages moves;
 * - on a child (`applier`): how a change is applied (and logged again, so a mid-tier
 *   node republishes it to its own children), and what a complete resync sweeps.
 */

/** One change as it travels (a `Change` of replication.proto). */
export interface Change {
  seq: number | string;
  kind: string;
  key: string;
  op: string;
  payload: Buffer;
}

/** What a parent's kind reads from. */
export interface SourceContext {
  orm: Orm;
  /** Fast reads of the node's database (`all` only). */
  reads: Pick<Exec, 'all'>;
  /** This node: what it stamps on what it originates (a policy's origin, a level's key). */
  self: { nodeId: string; name: string };
}

/** A parent's side of a kind. */
export interface KindSource {
  /**
   * The payloads of this kind's entries in one page of the log, for a subscriber of
   * `languages`, one per row (null: not sent; the entry that explains why follows).
   */
  tail(ctx: SourceContext, rows: readonly LogRow[], languages: readonly string[]): Promise<(Buffer | null)[]> | (Buffer | null)[];
  /** Everything of this kind a subscriber of `languages` has, for a complete resync, a page (one message) at a time. */
  snapshot(ctx: SourceContext, languages: readonly string[]): AsyncIterable<Change[]>;
  /**
   * What a change of the subscriber's languages from `from` to `to` moves. Absent: the
   * snapshot again for a kind whose entries depend on languages (`byLanguage`), else nothing.
   */
  backfill?(ctx: SourceContext, from: readonly string[], to: readonly string[]): AsyncIterable<Change[]>;
}

/** What a kind applied in the current transaction, for kinds that follow others (a release marks updates arrived). */
export interface Applied {
  kind: string;
  key: string;
  op: string;
  revision?: number;
}

/** The transaction a child applies a batch in. */
export interface ApplyTx {
  /** The node's clock when the batch is applied. */
  now: number;
  /** A complete resync is being applied: what a kind does not see by its end is swept. */
  fullResync: boolean;
  /** Appends this node's own entry for what it applied (its children get it from there). */
  log(e: Entry): void;
  /** What this transaction applied so far (every kind's). */
  applied: Applied[];
  /** SQL (a subquery) of the keys of `kind` the complete resync under way has listed. */
  seenSql(kind: string): string;
}

/** A child's side of a kind, made once per connection (it may prepare statements and keep state). */
export interface KindApplier {
  /** A resync starts (inside its transaction). */
  resyncStart?(full: boolean): void;
  /**
   * Whether the keys a complete resync lists must be recorded for `sweep` (default
   * true): a kind that knows it starts empty has nothing to sweep.
   */
  tracksSeen?(): boolean;
  /** Applies a run of consecutive changes of this kind; returns how many entities changed. */
  apply(tx: ApplyTx, changes: readonly Change[]): number;
  /** After every kind's changes of the transaction. */
  afterApply?(tx: ApplyTx): void;
  /** At the end of a complete resync: removes what the parent no longer has (not in `tx.seenSql`); returns how many. */
  sweep?(tx: ApplyTx): number;
}

/**
 * A part of a kind's file: the keys after `after` (null: from the first) up to `upTo`
 * (null: to the last); with `log`, only the keys of the kind's entries in that part of
 * the change log (a tail file: a run of state entries, log.stateRun).
 */
export interface KeyRange {
  after: string | null;
  upTo: string | null;
  log?: { after: number; upTo: number };
}

/**
 * A kind whose complete resync a fresh child (none of its entities yet) can load as a
 * whole: an SQLite file of its rows for the subscriber's languages, built once by the
 * parent per language set and copied by the child with INSERT ... SELECT
 * (replication/snapshots.ts sends it, replication/applier.ts loads it).
 */
export interface KindFile {
  /** The file's layout: a child refuses another (and asks for rows instead). */
  readonly format: number;
  /**
   * The URL of the ES module that worker threads import, so a module of its own:
   * - parent: its `buildFile(db, into, nodeId, languages, range)` fills the attached,
   *   empty schema `into` with what a subscriber of `languages` gets of the keys in
   *   `range` (a part: see `cuts`), in the caller's read transaction, and returns how
   *   many entities (replication/build-worker.ts: the parent's event loop goes on
   *   serving while SQLite builds, a second or so for 100,000 updates);
   * - child: its `loadFile(db, from, now)` does what `load` does, in a transaction of
   *   its own (replication/load-worker.ts: a large part is copied there while the
   *   child's main thread takes the next one).
   */
  readonly module: string;
  /**
   * Parent: the keys that cut the kind into parts (each part the keys after one cut up
   * to the next), so that a child loads one part while the parent builds the next;
   * empty: one part. The builder then takes a part's range.
   */
  cuts(db: NativeDb): string[];
  /** Child: whether it holds none of the kind (then it may ask for the file). */
  holdsNone(db: NativeDb): boolean;
  /** Child: why the attached schema `from` is not a file it can load (null: it is). */
  check(db: NativeDb, from: string): string | null;
  /** Child: copies the attached file into its tables, which hold none of the kind, and logs each entity; in the caller's transaction. Returns how many. */
  load(db: NativeDb, from: string, now: number): number;
  /**
   * Child: applies a tail file (the entities behind a run of state entries, as the
   * parent holds them now) to tables that may hold some of them, exactly as the same
   * entities sent as rows would be (a newer revision held here is kept), logging each
   * entity it wrote; in the caller's transaction. Returns how many.
   */
  merge(db: NativeDb, from: string, now: number): number;
}

export interface ReplicatedKind {
  /** The change kind on the wire and in the log. */
  readonly kind: string;
  /** Part of the catalog: held back from a child whose replication rules turn the catalog off. */
  readonly catalog: boolean;
  /** Entries depend on the subscriber's languages (sent again when they change). */
  readonly byLanguage: boolean;
  readonly source: KindSource;
  /** Its complete resync as a file, for a child that holds none of it yet (else pages of the snapshot). */
  readonly file?: KindFile;
  applier(db: NativeDb, self: { nodeId: string }): KindApplier;
}

/** The kinds a node replicates, in the order a complete resync sends them (what others refer to first). */
export class KindRegistry {
  readonly #kinds = new Map<string, ReplicatedKind>();

  constructor(kinds: readonly ReplicatedKind[]) {
    for (const k of kinds) {
      if (this.#kinds.has(k.kind)) throw new Error(`replicated kind ${k.kind} registered twice`);
      this.#kinds.set(k.kind, k);
    }
  }

  get(kind: string): ReplicatedKind | undefined {
    return this.#kinds.get(kind);
  }

  all(): ReplicatedKind[] {
    return [...this.#kinds.values()];
  }

  /** Whether a logged entry goes to a subscriber: its languages, and the catalog rule. */
  sends(row: Pick<LogRow, 'kind' | 'languages'>, languages: readonly string[], catalog: boolean): boolean {
    const k = this.#kinds.get(row.kind);
    return k !== undefined && (catalog || !k.catalog) && anyLanguageMatches(row.languages, languages);
  }
}

/**
 * A payload that lists updates as tuples with their file languages at `at` (a
 * policy's `[id, languages]`, a release's `[id, revision, languages, family]`), for a
 * subscriber: only the updates with files in its languages (or none). Sent as stored
 * when nothing is left out.
 */
export function filterUpdateList(payload: string, at: number, languages: readonly string[]): Buffer {
  const p = JSON.parse(payload) as { updates: unknown[][] };
  const updates = p.updates.filter((u) => anyLanguageMatches(u[at] as string, languages));
  return Buffer.from(updates.length === p.updates.length ? payload : JSON.stringify({ ...p, updates }));
}

/** Pages of a keyset-paged query as snapshot messages: `page(after)` returns rows with `id`, in id order, empty at the end. */
export async function* pages<R extends { id: string }>(page: (after: string) => Promise<R[]>, toChange: (r: R) => Change | null): AsyncIterable<Change[]> {
  for (let after = ''; ; ) {
    const rows = await page(after);
    if (!rows.length) return;
    const changes = rows.map(toChange).filter((c): c is Change => c !== null);
    if (changes.length) yield changes;
    after = rows[rows.length - 1]!.id;
  }
}
