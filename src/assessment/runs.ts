import type { SqlConn, Write } from '../db/exec.js';
import { placeholders } from '../db/sql.js';
import type { Logger } from '../lib/log.js';
import { liveRulesPage, rulesOf } from '../catalog/read.js';
import { changelog } from '../changelog/index.js';
import { facts, type Inventory } from './evaluate.js';
import { CatalogIndex, type Entry } from './catalog-index.js';
import { chunks, SEVERITY_COLUMNS, SLOT, summary, type ComputerRow, type Counts } from './results.js';

/** Change-log entries reassessed in one catalog run at most. */
const CATCH_UP_RUN = 20_000;

/**
 * The runs over the fleet, read from this node's change log (so imports at the root
 * and replicated batches on a child are handled alike): a catalog run reassesses the
 * changed updates, and those they supersede, on the computers that report their
 * products; a full run rebuilds every result. A page of computers per transaction;
 * the cursor moves with the last page, so a crash redoes the work and loses nothing.
 * The assessor's queue runs them one at a time.
 */

const PAGE = 500;

export interface RunResult {
  kind: 'full' | 'catalog';
  updates: number;
  computers: number;
  durationMs: number;
  finishedAt: string;
}

export class CatalogRuns {
  #lastRun: RunResult | null = null;
  #running: string | null = null;

  constructor(
    private readonly db: SqlConn,
    private readonly index: CatalogIndex,
    private readonly logger: Logger,
    /** Called after a page of computers' results was stored. */
    private readonly onAssessed: (computerIds: number[]) => void,
    /** Called after results change. */
    private readonly onChange: () => void,
  ) {}

  /** The run under way ('full' or 'catalog'), or null. */
  get running(): string | null {
    return this.#running;
  }

  get lastRun(): RunResult | null {
    return this.#lastRun;
  }

  /** The newest sequence of this node's change log. */
  head(): Promise<number> {
    return changelog.head(this.db);
  }

  /** Loads the live catalog into the index if it is not loaded (CatalogIndex.loaded); from the assessor's queue. */
  async ensureIndex(): Promise<void> {
    if (this.index.loaded) return;
    const start = performance.now();
    this.index.drop();
    let after = '';
    for (;;) {
      const rows = await liveRulesPage(this.db, after, 2000);
      if (!rows.length) break;
      for (const r of rows) this.index.set(r);
      after = rows[rows.length - 1]!.id;
    }
    this.index.loaded = true;
    this.logger.info({ updates: this.index.size, ms: Math.round(performance.now() - start) }, 'catalog index loaded');
  }

  /** Whether this node has a computer to assess. */
  async hasComputers(): Promise<boolean> {
    return (await this.db.get<{ one: number }>('SELECT 1 AS one FROM computers LIMIT 1', [])) !== undefined;
  }

  /** Reassesses what the change log holds past the cursor, in runs of at most CATCH_UP_RUN entries. */
  async catchUp(): Promise<void> {
    for (;;) {
      const state = await this.db.get<{ cursor: number }>('SELECT cursor FROM assessment_state WHERE id = 1', []);
      const cursor = Number(state?.cursor ?? 0);
      const { min, head } = await changelog.bounds(this.db);
      if (head <= cursor) return;
      if (!(await this.hasComputers())) {
        // Nothing to assess (and no counts: only computers make them), so nothing reads
        // the index: it is dropped, not kept up to date, and loaded whole when a
        // computer reports (ensureIndex). The log is not even read.
        this.index.drop();
        await this.db.write([['UPDATE assessment_state SET cursor = max(cursor, ?) WHERE id = 1', [head]]]);
        return;
      }
      if (min > cursor + 1) {
        this.logger.warn({ cursor, oldest: min }, 'the change log was compacted past the assessment cursor; reassessing everything');
        await this.full();
        return;
      }
      const rows = await changelog.keysAfter(this.db, 'update', cursor, CATCH_UP_RUN);
      const upTo = rows.length === CATCH_UP_RUN ? rows[rows.length - 1]!.seq : head;
      await this.#catalogRun([...new Set(rows.map((r) => r.key))], upTo);
    }
  }

  /** Rebuilds every result: all computers against the whole catalog, a page of computers per transaction. */
  async full(): Promise<RunResult> {
    const start = performance.now();
    this.#running = 'full';
    try {
      await this.ensureIndex();
      await this.db.write([['UPDATE assessment_state SET full_pending = 1 WHERE id = 1', []]]);
      const cursor = await this.head();
      const counts = new Map<string, Counts>();
      let computers = 0;
      let after = 0;
      let first = true;
      for (;;) {
        const page = await this.#candidates(after, null);
        const last = page.length < PAGE;
        const w: Write[] = [];
        if (first) {
          first = false;
          w.push(['DELETE FROM computer_updates', []]);
        }
        const now = Date.now();
        for (const c of page) {
          const states = this.index.assess(facts(JSON.parse(c.inventory) as Inventory));
          for (const [id, s] of states) {
            let n = counts.get(id);
            if (!n) counts.set(id, (n = [0, 0, 0, 0]));
            n[SLOT[s]]!++;
            if (s === 'required' || s === 'unknown') w.push(['INSERT INTO computer_updates (computer_id, update_id, state) VALUES (?, ?, ?)', [c.id, id, s]]);
          }
          w.push(summary(this.index, c.id, states, now).write);
        }
        if (last) {
          w.push(['DELETE FROM update_compliance', []]);
          for (const [id, n] of counts)
            w.push(['INSERT INTO update_compliance (update_id, installed, required, unknown, superseded) VALUES (?, ?, ?, ?, ?)', [id, ...n]]);
          w.push(['UPDATE assessment_state SET cursor = max(cursor, ?), full_pending = 0, full_at = ? WHERE id = 1', [cursor, Date.now()]]);
        }
        await this.db.write(w);
        this.onAssessed(page.map((c) => c.id));
        computers += page.length;
        if (last) break;
        after = page[page.length - 1]!.id;
        await yieldToIo();
      }
      return this.#finish('full', this.index.size, computers, start);
    } finally {
      this.#running = null;
    }
  }

  /**
   * Assesses catalog changes: the changed updates and those they supersede, on the
   * computers that report their products. Only those updates are evaluated per
   * computer; rows and summaries change by difference against what is stored, and
   * the updates' counters are recounted. A page of computers per transaction; the
   * counters and the cursor go with the last page, so a crash redoes the run.
   */
  async #catalogRun(ids: string[], cursor: number): Promise<RunResult> {
    const start = performance.now();
    this.#running = 'catalog';
    try {
      await this.ensureIndex();
      const { changed, oldSeverity } = await this.#reload(ids);
      const affectedIds = new Set<string>();
      let products: Set<string> | null = new Set<string>(); // null: every computer
      const addProducts = (e: Entry) => {
        if (!e.products) products = null;
        else if (products) for (const p of e.products) products.add(p);
      };
      for (const e of changed) {
        affectedIds.add(e.id);
        addProducts(e);
        for (const x of this.index.olderOf(e)) {
          affectedIds.add(x.id);
          addProducts(x);
        }
      }
      if (affectedIds.size === 0) {
        await this.db.write([['UPDATE assessment_state SET cursor = max(cursor, ?) WHERE id = 1', [cursor]]]);
        return this.#finish('catalog', 0, 0, start);
      }
      const affected = [...affectedIds];
      // When most computers report one of the products anyway, a plain scan beats the
      // per-computer product check (an index seek per computer).
      if (products) {
        const list = [...(products as Set<string>)];
        let hits = 0;
        for (const part of chunks(list, 400))
          hits += Number(
            (await this.db.get<{ n: number }>(`SELECT count(*) AS n FROM computer_products WHERE product IN (${placeholders(part)})`, part))?.n ?? 0,
          );
        const total = Number((await this.db.get<{ n: number }>('SELECT count(*) AS n FROM computers', []))?.n ?? 0);
        if (hits >= total / 2) products = null;
      }
      const entries = CatalogIndex.group(affected.map((id) => this.index.get(id)).filter((e): e is Entry => e !== undefined));
      const sevCol = (sev: string | null | undefined) => SEVERITY_COLUMNS[sev ?? ''] ?? 'req_unrated';
      const counts = new Map<string, Counts>();
      let computers = 0;
      let after = 0;
      for (;;) {
        const page = await this.#candidates(after, products);
        const last = page.length < PAGE;
        const stored = await this.#storedRows(page, affected);
        const w: Write[] = [];
        const dirtyIds: number[] = [];
        const now = Date.now();
        for (const c of page) {
          const states = this.index.assessSome(facts(JSON.parse(c.inventory) as Inventory), entries);
          const old = stored.get(c.id);
          const d: Record<string, number> = { required: 0, unknown: 0, req_critical: 0, req_important: 0, req_moderate: 0, req_low: 0, req_unrated: 0 };
          let dirty = false;
          // Only the updates that apply here now or had a row here: the rest stay not applicable.
          const ids = old ? new Set([...states.keys(), ...old.keys()]) : states.keys();
          for (const id of ids) {
            const s = states.get(id);
            if (s) {
              let n = counts.get(id);
              if (!n) counts.set(id, (n = [0, 0, 0, 0]));
              n[SLOT[s]]!++;
            }
            const o = old?.get(id);
            const nw = s === 'required' || s === 'unknown' ? s : undefined;
            const sevOld = o === 'required' ? sevCol(oldSeverity.has(id) ? oldSeverity.get(id) : this.index.get(id)?.severity) : null;
            const sevNew = nw === 'required' ? sevCol(this.index.get(id)?.severity) : null;
            if (o !== nw) {
              if (nw) w.push(['INSERT OR REPLACE INTO computer_updates (computer_id, update_id, state) VALUES (?, ?, ?)', [c.id, id, nw]]);
              else w.push(['DELETE FROM computer_updates WHERE computer_id = ? AND update_id = ?', [c.id, id]]);
              d.required! += (nw === 'required' ? 1 : 0) - (o === 'required' ? 1 : 0);
              d.unknown! += (nw === 'unknown' ? 1 : 0) - (o === 'unknown' ? 1 : 0);
              dirty = true;
            }
            if (sevOld !== sevNew) {
              if (sevOld) d[sevOld]!--;
              if (sevNew) d[sevNew]!++;
              dirty = true;
            }
          }
          if (dirty) dirtyIds.push(c.id);
          if (dirty)
            w.push([
              `UPDATE computers SET required = required + ?, unknown = unknown + ?, req_critical = req_critical + ?, req_important = req_important + ?,
               req_moderate = req_moderate + ?, req_low = req_low + ?, req_unrated = req_unrated + ?, assessed_at = ? WHERE id = ?`,
              [d.required, d.unknown, d.req_critical, d.req_important, d.req_moderate, d.req_low, d.req_unrated, now, c.id],
            ]);
        }
        if (last) {
          for (const part of chunks(affected, 400)) w.push([`DELETE FROM update_compliance WHERE update_id IN (${placeholders(part)})`, part]);
          for (const [id, n] of counts)
            w.push(['INSERT INTO update_compliance (update_id, installed, required, unknown, superseded) VALUES (?, ?, ?, ?, ?)', [id, ...n]]);
          w.push(['UPDATE assessment_state SET cursor = max(cursor, ?) WHERE id = 1', [cursor]]);
        }
        await this.db.write(w);
        if (dirtyIds.length) this.onAssessed(dirtyIds);
        computers += page.length;
        if (last) break;
        after = page[page.length - 1]!.id;
        await yieldToIo();
      }
      return this.#finish('catalog', affected.length, computers, start);
    } finally {
      this.#running = null;
    }
  }

  /**
   * The stored required/unknown rows of `updateIds` for a page of computers. The
   * unary `+` keeps SQLite on the primary key's computer range: through the
   * update index it would read every row of those updates in the fleet per page.
   */
  async #storedRows(page: ComputerRow[], updateIds: string[]): Promise<Map<number, Map<string, string>>> {
    const out = new Map<number, Map<string, string>>();
    if (!page.length) return out;
    const lo = page[0]!.id;
    const hi = page[page.length - 1]!.id;
    for (const part of chunks(updateIds, 400)) {
      const rows = await this.db.all<{ computer_id: number; update_id: string; state: string }>(
        `SELECT computer_id, update_id, state FROM computer_updates WHERE computer_id BETWEEN ? AND ? AND +update_id IN (${placeholders(part)})`,
        [lo, hi, ...part],
      );
      for (const r of rows) {
        let m = out.get(Number(r.computer_id));
        if (!m) out.set(Number(r.computer_id), (m = new Map()));
        m.set(r.update_id, r.state);
      }
    }
    return out;
  }

  #finish(kind: 'full' | 'catalog', updates: number, computers: number, start: number): RunResult {
    const r: RunResult = { kind, updates, computers, durationMs: Math.round(performance.now() - start), finishedAt: new Date().toISOString() };
    if (updates > 0) {
      this.#lastRun = r;
      this.logger.info(r, kind === 'full' ? 'fleet reassessed' : 'catalog changes assessed');
      this.onChange();
    }
    return r;
  }

  /**
   * Re-reads changed updates into the index. Returns the entries whose assessment
   * may change (old and new forms) and the severities the changed ones had.
   */
  async #reload(ids: string[]): Promise<{ changed: Entry[]; oldSeverity: Map<string, string | null> }> {
    const changed: Entry[] = [];
    const oldSeverity = new Map<string, string | null>();
    for (const part of chunks(ids, 400)) {
      const rows = await rulesOf(this.db, part);
      const found = new Map(rows.map((r) => [r.id, r]));
      for (const id of part) {
        const r = found.get(id);
        const cur = this.index.get(id);
        if (cur) oldSeverity.set(id, cur.severity);
        if (!r || r.expired) {
          const old = this.index.delete(id);
          if (old) changed.push(old);
          continue;
        }
        if (this.index.holds(r)) continue; // e.g. a custom severity assigned: nothing to reassess
        const old = this.index.set(r);
        if (old) changed.push(old);
        changed.push(this.index.get(id)!);
      }
    }
    return { changed, oldSeverity };
  }

  /** The next page of computers that report one of `products` (or that report no product list), by id. */
  #candidates(after: number, products: Set<string> | null): Promise<ComputerRow[]> | ComputerRow[] {
    if (!products) return this.db.all<ComputerRow>('SELECT id, inventory, scan_id FROM computers WHERE id > ? ORDER BY id LIMIT ?', [after, PAGE]);
    const list = [...products, '*'];
    return this.db.all<ComputerRow>(
      `SELECT id, inventory, scan_id FROM computers c WHERE id > ? AND EXISTS (SELECT 1 FROM computer_products p INDEXED BY computer_products_computer WHERE p.computer_id = c.id AND p.product IN (${placeholders(list)})) ORDER BY id LIMIT ?`,
      [after, ...list, PAGE],
    );
  }
}

/** Lets HTTP and timers run between pages of a long run. */
const yieldToIo = () => new Promise<void>((r) => setImmediate(r));
