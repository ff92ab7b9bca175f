import PQueue from 'p-queue';
import type { SqlConn, Write } from '../db/exec.js';
import { GroupCommit } from '../db/group-commit.js';
import { placeholders } from '../db/sql.js';
import type { Logger } from '../lib/log.js';
import { AppError } from '../lib/errors.js';
import { facts, type Inventory } from './evaluate.js';
import { CatalogIndex, type Entry, type State, type UpdateRow } from './catalog-index.js';
import { applyDelta, inventoryLanguages } from './inventory.js';
import type { Report } from '../agent-api/inventory.js';

/**
 * System assessment: which updates each computer needs. One writer (a queue of
 * one) keeps the stored results exact:
 *
 * - an inventory report reassesses that computer: its old and new inventories are
 *   evaluated against the catalog index and only the difference is written (rows of
 *   `required`/`unknown` pairs, the per-update counters, the computer's summary);
 * - catalog changes are read from this node's change log (so imports at the root
 *   and replicated batches on a child are handled alike): the changed updates, and
 *   those they supersede, are reassessed on the computers that report their
 *   products, a page of computers per transaction; the cursor moves with the last
 *   page, so a crash redoes the work and loses nothing;
 * - a full reassessment rebuilds everything (on demand, after a compacted log, or
 *   when the node stopped in the middle of one).
 */

const PAGE = 500;
const SEVERITY_COLUMNS: Record<string, string> = { Critical: 'req_critical', Important: 'req_important', Moderate: 'req_moderate', Low: 'req_low' };

export interface ReportResult {
  computerId: number;
  scanId: number;
  created: boolean;
  required: number;
  unknown: number;
}

export interface RunResult {
  kind: 'full' | 'catalog';
  updates: number;
  computers: number;
  durationMs: number;
  finishedAt: string;
}

interface ComputerRow {
  id: number;
  inventory: string;
  scan_id: number;
}

type Counts = [installed: number, required: number, unknown: number, superseded: number];
/** Reports stored per transaction at most. */
const REPORT_BATCH = 128;

interface PendingReport {
  r: Report;
  now: number;
  enrollmentTokenId: string | undefined;
}
const SLOT: Record<State, number> = { installed: 0, required: 1, unknown: 2, superseded: 3 };

export class Assessor {
  readonly index = new CatalogIndex();
  readonly #queue = new PQueue({ concurrency: 1 });
  #catchUpQueued = false;
  /**
   * Reports that arrive together are stored in one transaction (one fsync). Each is
   * checked and assessed first; a refused one adds nothing and its agent gets the
   * error, the others commit together.
   */
  readonly #reports = new GroupCommit<PendingReport, ReportResult, BatchContext>({
    queue: this.#queue,
    max: REPORT_BATCH,
    context: () => ({ computers: new Map(), tokens: new Map(), nextId: null }),
    prepare: async (p, ctx) => {
      const writes: Write[] = [];
      const result = await this.#report(p.r, p.now, p.enrollmentTokenId, ctx, writes);
      return { writes, result };
    },
    write: (w) => this.db.write(w),
    committed: (done) => {
      this.onAssessed(done.map(([, r]) => r.computerId));
      if (done.some(([, r]) => r.created)) this.onChange();
    },
  });
  #stopped = false;
  #retryTimer: NodeJS.Timeout | null = null;
  #lastRun: RunResult | null = null;
  #running: string | null = null;
  /** Called after computers' results were stored (a report batch, a page of a catalog or full run). */
  onAssessed: (computerIds: number[]) => void = () => {};

  constructor(
    private readonly db: SqlConn,
    private readonly logger: Logger,
    /** Called after results change (filters, reports, metrics may refresh). */
    private readonly onChange: () => void = () => {},
  ) {}

  get busy(): string | null {
    return this.#running;
  }

  get lastRun(): RunResult | null {
    return this.#lastRun;
  }

  /** Loads the live catalog into the index and resumes where the node stopped. */
  async start(): Promise<void> {
    let after = '';
    for (;;) {
      const rows = await this.db.all<UpdateRow>('SELECT id, kb, product, severity, applicability, installed, supersedes FROM updates WHERE expired = 0 AND id > ? ORDER BY id LIMIT 2000', [after]);
      if (!rows.length) break;
      for (const r of rows) this.index.set(r);
      after = rows[rows.length - 1]!.id;
    }
    const state = await this.db.get<{ cursor: number; full_pending: number }>('SELECT cursor, full_pending FROM assessment_state WHERE id = 1', []);
    if (!state) {
      const head = await this.head();
      await this.db.write([['INSERT INTO assessment_state (id, cursor, full_pending) VALUES (1, ?, 0)', [head]]]);
      const n = await this.db.get<{ n: number }>('SELECT count(*) AS n FROM computers', []);
      if (Number(n?.n ?? 0) > 0) void this.full().catch((err) => this.logger.error({ err }, 'full reassessment failed'));
    } else if (state.full_pending) {
      this.logger.warn('a full reassessment was cut short; running it again');
      void this.full().catch((err) => this.logger.error({ err }, 'full reassessment failed'));
    }
    this.catalogChanged();
    this.logger.info({ updates: this.index.size }, 'assessment ready');
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#queue.clear();
    // Reports not yet taken by a batch are answered, not left hanging.
    this.#reports.rejectPending(new AppError('unavailable', 'the node is stopping; report again'));
    await this.#queue.onIdle();
  }

  /** Waits until queued work (reports, catalog catch-up) is done. */
  idle(): Promise<void> {
    return this.#queue.onIdle();
  }

  /** The newest sequence of this node's change log. */
  async head(): Promise<number> {
    const r = await this.db.get<{ head: number }>('SELECT coalesce(max(seq), 0) AS head FROM change_log', []);
    return Number(r?.head ?? 0);
  }

  /** The change log grew: reassess what changed, once the queue gets to it (coalesced). */
  catalogChanged(): void {
    if (this.#catchUpQueued) return;
    this.#catchUpQueued = true;
    void this.#queue
      .add(async () => {
        this.#catchUpQueued = false;
        await this.#catchUp();
      })
      .catch((err) => {
        this.logger.error({ err }, 'assessment of catalog changes failed; retrying in 30 s');
        if (this.#stopped) return;
        this.#retryTimer = setTimeout(() => this.catalogChanged(), 30_000);
        this.#retryTimer.unref();
      });
  }

  /** Rebuilds every result from the inventories. */
  full(): Promise<RunResult> {
    return this.#queue.add(() => this.#fullRun()) as Promise<RunResult>;
  }

  /**
   * Stores a report and reassesses its computer; resolves once the results are
   * stored. A new computer counts one use of `enrollmentTokenId` in the same
   * transaction (refused past the token's limit).
   */
  report(r: Report, now = Date.now(), enrollmentTokenId?: string): Promise<ReportResult> {
    return this.#reports.add({ r, now, enrollmentTokenId });
  }

  async #catchUp(): Promise<void> {
    for (;;) {
      const state = await this.db.get<{ cursor: number }>('SELECT cursor FROM assessment_state WHERE id = 1', []);
      const cursor = Number(state?.cursor ?? 0);
      const bounds = await this.db.get<{ min: number; head: number }>('SELECT coalesce(min(seq), 0) AS min, coalesce(max(seq), 0) AS head FROM change_log', []);
      const head = Number(bounds?.head ?? 0);
      if (head <= cursor) return;
      if (Number(bounds?.min ?? 0) > cursor + 1) {
        this.logger.warn({ cursor, oldest: bounds?.min }, 'the change log was compacted past the assessment cursor; reassessing everything');
        await this.#fullRun();
        return;
      }
      const rows = await this.db.all<{ seq: number; key: string }>("SELECT seq, key FROM change_log WHERE seq > ? AND kind = 'update' ORDER BY seq LIMIT 20000", [cursor]);
      const upTo = rows.length === 20000 ? Number(rows[rows.length - 1]!.seq) : head;
      await this.#catalogRun([...new Set(rows.map((r) => r.key))], upTo);
    }
  }

  /** Rebuilds every result: all computers against the whole catalog, a page of computers per transaction. */
  async #fullRun(): Promise<RunResult> {
    const start = performance.now();
    this.#running = 'full';
    try {
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
          w.push(this.#summary(c.id, states, now).write);
        }
        if (last) {
          w.push(['DELETE FROM update_compliance', []]);
          for (const [id, n] of counts) w.push(['INSERT INTO update_compliance (update_id, installed, required, unknown, superseded) VALUES (?, ?, ?, ?, ?)', [id, ...n]]);
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
          hits += Number((await this.db.get<{ n: number }>(`SELECT count(*) AS n FROM computer_products WHERE product IN (${placeholders(part)})`, part))?.n ?? 0);
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
              d['required']! += (nw === 'required' ? 1 : 0) - (o === 'required' ? 1 : 0);
              d['unknown']! += (nw === 'unknown' ? 1 : 0) - (o === 'unknown' ? 1 : 0);
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
              [d['required'], d['unknown'], d['req_critical'], d['req_important'], d['req_moderate'], d['req_low'], d['req_unrated'], now, c.id],
            ]);
        }
        if (last) {
          for (const part of chunks(affected, 400)) w.push([`DELETE FROM update_compliance WHERE update_id IN (${placeholders(part)})`, part]);
          for (const [id, n] of counts) w.push(['INSERT INTO update_compliance (update_id, installed, required, unknown, superseded) VALUES (?, ?, ?, ?, ?)', [id, ...n]]);
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
      const rows = await this.db.all<UpdateRow & { expired: number }>(
        `SELECT id, kb, product, severity, applicability, installed, supersedes, expired FROM updates WHERE id IN (${placeholders(part)})`,
        part,
      );
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
        if (cur && cur.sig === CatalogIndex.signature(r)) continue; // e.g. a custom severity assigned: nothing to reassess
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

  /** The computer's summary columns, from its states, as a write. */
  #summary(id: number, states: Map<string, State>, now: number): { required: number; unknown: number; write: Write } {
    let required = 0;
    let unknown = 0;
    const sev: Record<string, number> = { req_critical: 0, req_important: 0, req_moderate: 0, req_low: 0, req_unrated: 0 };
    for (const [uid, s] of states) {
      if (s === 'unknown') unknown++;
      if (s !== 'required') continue;
      required++;
      sev[SEVERITY_COLUMNS[this.index.get(uid)?.severity ?? ''] ?? 'req_unrated']!++;
    }
    return {
      required,
      unknown,
      write: [
        'UPDATE computers SET required = ?, unknown = ?, req_critical = ?, req_important = ?, req_moderate = ?, req_low = ?, req_unrated = ?, assessed_at = ? WHERE id = ?',
        [required, unknown, sev['req_critical'], sev['req_important'], sev['req_moderate'], sev['req_low'], sev['req_unrated'], now, id],
      ],
    };
  }

  /**
   * Checks and assesses one report and adds its writes to `w` (nothing is added if
   * it is refused). `ctx` carries what earlier reports of the same batch changed.
   */
  async #report(r: Report, now: number, enrollmentTokenId: string | undefined, ctx: BatchContext, w: Write[]): Promise<ReportResult> {
    const old = ctx.computers.get(r.agentKey) ?? (await this.db.get<ComputerRow>('SELECT id, inventory, scan_id FROM computers WHERE agent_key = ?', [r.agentKey])) ?? null;
    const oldInv = old ? (JSON.parse(old.inventory) as Inventory) : null;
    let inv: Inventory;
    if (r.full) inv = r.full as Inventory;
    else {
      if (!old || old.scan_id !== r.delta!.baseScanId)
        throw new AppError('delta-base-mismatch', old ? `this computer's last report is scan ${old.scan_id}, not ${r.delta!.baseScanId}; send a full inventory` : 'this computer has not reported yet; send a full inventory', {
          currentScanId: old?.scan_id ?? null,
        });
      try {
        inv = applyDelta(oldInv!, r.delta!);
      } catch (err) {
        throw new AppError('validation-failed', `invalid delta: ${(err as Error).message}`);
      }
    }
    const before = oldInv ? this.index.assess(facts(oldInv)) : new Map<string, State>();
    const after = this.index.assess(facts(inv));
    const json = JSON.stringify(inv);
    const scanId = (old?.scan_id ?? 0) + 1;
    const os = inv.os;
    let id: number;
    if (old) {
      id = old.id;
      w.push([
        'UPDATE computers SET name = ?, os_family = ?, os_name = ?, os_version = ?, arch = ?, language = ?, languages = ?, agent_version = coalesce(?, agent_version), inventory = ?, scan_id = ?, last_scan_at = ? WHERE id = ?',
        [r.name, os.family, os.name ?? null, os.version ?? null, os.arch ?? null, os.language ?? null, inventoryLanguages(inv).join(','), r.agentVersion ?? null, json, scanId, now, id],
      ]);
    } else {
      if (enrollmentTokenId) {
        let t = ctx.tokens.get(enrollmentTokenId);
        if (!t) {
          const row = await this.db.get<{ uses: number; max_uses: number | null }>('SELECT uses, max_uses FROM enrollment_tokens WHERE id = ?', [enrollmentTokenId]);
          t = { uses: Number(row?.uses ?? 0), max: row?.max_uses === null || row?.max_uses === undefined ? null : Number(row.max_uses) };
          ctx.tokens.set(enrollmentTokenId, t);
        }
        if (t.max !== null && t.uses >= t.max) throw new AppError('forbidden', 'this enrolment token has enrolled as many computers as it may');
        t.uses++;
        w.push(['UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ?', [enrollmentTokenId]]);
      }
      // This queue is the only writer of computers, so ids can be handed out here.
      ctx.nextId ??= Number((await this.db.get<{ id: number }>('SELECT coalesce(max(id), 0) + 1 AS id FROM computers', []))?.id ?? 1);
      id = ctx.nextId++;
      w.push([
        'INSERT INTO computers (id, agent_key, name, os_family, os_name, os_version, arch, language, languages, agent_version, inventory, scan_id, last_scan_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)',
        [id, r.agentKey, r.name, os.family, os.name ?? null, os.version ?? null, os.arch ?? null, os.language ?? null, inventoryLanguages(inv).join(','), r.agentVersion ?? null, json, scanId, now, now],
      ]);
    }
    // The product index of this computer, when its products changed.
    const oldProducts = oldInv ? productKeys(oldInv) : [];
    const newProducts = productKeys(inv);
    if (oldProducts.join('\n') !== newProducts.join('\n')) {
      w.push(['DELETE FROM computer_products WHERE computer_id = ?', [id]]);
      for (const p of newProducts) w.push(['INSERT OR IGNORE INTO computer_products (product, computer_id) VALUES (?, ?)', [p, id]]);
    }
    // Only the difference: counters and rows of the updates whose state changed.
    for (const uid of new Set([...before.keys(), ...after.keys()])) {
      const s0 = before.get(uid);
      const s1 = after.get(uid);
      if (s0 !== s1) this.#changed(w, id, uid, s0, s1);
    }
    const sum = this.#summary(id, after, now);
    w.push(sum.write);
    ctx.computers.set(r.agentKey, { id, inventory: json, scan_id: scanId });
    return { computerId: id, scanId, created: !old, required: sum.required, unknown: sum.unknown };
  }

  /** One (computer, update) pair changed state: its row and the update's counters follow. */
  #changed(w: Write[], computerId: number, updateId: string, s0: State | undefined, s1: State | undefined): void {
    const d: Counts = [0, 0, 0, 0];
    if (s0) d[SLOT[s0]]!--;
    if (s1) d[SLOT[s1]]!++;
    w.push([
      `INSERT INTO update_compliance (update_id, installed, required, unknown, superseded) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT(update_id) DO UPDATE SET installed = installed + excluded.installed, required = required + excluded.required,
       unknown = unknown + excluded.unknown, superseded = superseded + excluded.superseded`,
      [updateId, ...d],
    ]);
    if (s1 === 'required' || s1 === 'unknown') w.push(['INSERT OR REPLACE INTO computer_updates (computer_id, update_id, state) VALUES (?, ?, ?)', [computerId, updateId, s1]]);
    else if (s0 === 'required' || s0 === 'unknown') w.push(['DELETE FROM computer_updates WHERE computer_id = ? AND update_id = ?', [computerId, updateId]]);
  }
}

/** What the reports of one batch changed, for the later reports of the same batch. */
interface BatchContext {
  computers: Map<string, ComputerRow>;
  tokens: Map<string, { uses: number; max: number | null }>;
  nextId: number | null;
}

/** Lets HTTP and timers run between pages of a long run. */
const yieldToIo = () => new Promise<void>((r) => setImmediate(r));

/** A computer's entries in `computer_products`: its products lower-cased, or `*` when it reports none (a candidate for every update). */
function productKeys(inv: Inventory): string[] {
  if (!inv.products) return ['*'];
  return [...new Set(inv.products.map((p) => p.name.toLowerCase()))].sort();
}

function* chunks<T>(list: T[], size: number): Generator<T[]> {
  for (let i = 0; i < list.length; i += size) yield list.slice(i, i + size);
}
