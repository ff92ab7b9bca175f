import PQueue from 'p-queue';
import type { SqlConn, Write } from '../db/exec.js';
import { GroupCommit } from '../db/group-commit.js';
import type { Logger } from '../lib/log.js';
import { AppError } from '../lib/errors.js';
import { CatalogIndex } from './catalog-index.js';
import type { Report } from '../agent-api/inventory.js';
import { ReportIntake, type BatchContext, type ReportResult } from './intake.js';
import { CatalogRuns, type RunResult } from './runs.js';

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

/** Reports stored per transaction at most. */
const REPORT_BATCH = 128;

interface PendingReport {
  r: Report;
  now: number;
  enrollmentTokenId: string | undefined;
}

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
      await this.#runs.ensureIndex();
      const writes: Write[] = [];
      const result = await this.#intake.assess(p.r, p.now, p.enrollmentTokenId, ctx, writes);
      return { writes, result };
    },
    write: (w) => this.db.write(w),
    committed: (done) => {
      this.onAssessed(done.map(([, r]) => r.computerId));
      if (done.some(([, r]) => r.created)) this.onChange();
    },
  });
  readonly #intake: ReportIntake;
  readonly #runs: CatalogRuns;
  #stopped = false;
  #retryTimer: NodeJS.Timeout | null = null;
  constructor(
    private readonly db: SqlConn,
    private readonly logger: Logger,
    /** Called after computers' results were stored (a report batch, a page of a catalog or full run). */
    private readonly onAssessed: (computerIds: number[]) => void = () => {},
    /** Called after results change (filters, reports, metrics may refresh). */
    private readonly onChange: () => void = () => {},
  ) {
    this.#intake = new ReportIntake(db, this.index);
    this.#runs = new CatalogRuns(db, this.index, logger, onAssessed, onChange);
  }

  get busy(): string | null {
    return this.#runs.running;
  }

  get lastRun(): RunResult | null {
    return this.#runs.lastRun;
  }

  /** Loads the live catalog into the index (when there is a computer to assess) and resumes where the node stopped. */
  async start(): Promise<void> {
    this.index.drop();
    if (await this.#runs.hasComputers()) await this.#runs.ensureIndex();
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
    // No computer yet: the catalog is indexed when the first one reports (not before, to spare a node that assesses none).
    this.logger.info(this.index.loaded ? { updates: this.index.size } : { index: 'when the first computer reports' }, 'assessment ready');
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
  head(): Promise<number> {
    return this.#runs.head();
  }

  /** The change log grew: reassess what changed, once the queue gets to it (coalesced). */
  catalogChanged(): void {
    if (this.#catchUpQueued) return;
    this.#catchUpQueued = true;
    void this.#queue
      .add(async () => {
        this.#catchUpQueued = false;
        await this.#runs.catchUp();
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
    return this.#queue.add(() => this.#runs.full()) as Promise<RunResult>;
  }

  /**
   * Stores a report and reassesses its computer; resolves once the results are
   * stored. A new computer counts one use of `enrollmentTokenId` in the same
   * transaction (refused past the token's limit).
   */
  report(r: Report, now = Date.now(), enrollmentTokenId?: string): Promise<ReportResult> {
    return this.#reports.add({ r, now, enrollmentTokenId });
  }
}
