import { desc, gte, lt } from 'drizzle-orm';
import type { Orm } from '../db/index.js';
import type { Logger } from '../lib/log.js';
import type { Reports } from './reports.js';
import { complianceSnapshots } from './schema.js';

const HOUR = 3_600_000;
/** Days of snapshots kept. */
export const TREND_KEEP_DAYS = 400;

/**
 * The daily compliance trend: the unfiltered summary is stored under today's date
 * (UTC) at start and every hour, replacing the day's earlier one, so each past day
 * keeps its last figures; today's point is the live summary, so the trend ends where
 * the dashboard's gauge is. It starts with the first assessed computer: a node with
 * none records nothing (no computer would read as 100% compliant). Bounded: older
 * than 400 days is deleted.
 */
export class Trend {
  #timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly orm: Orm,
    private readonly reports: Reports,
    private readonly logger: Logger,
  ) {}

  start(): void {
    void this.snapshot().catch((err) => this.logger.error({ err }, 'compliance snapshot failed'));
    this.#timer = setInterval(() => void this.snapshot().catch((err) => this.logger.error({ err }, 'compliance snapshot failed')), HOUR);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
  }

  async snapshot(now = new Date()): Promise<void> {
    const live = await this.reports.summary({});
    if (live.computers === 0) return;
    const summary = JSON.stringify(live);
    const day = now.toISOString().slice(0, 10);
    await this.orm
      .insert(complianceSnapshots)
      .values({ day, summary, takenAt: now.getTime() })
      .onConflictDoUpdate({ target: complianceSnapshots.day, set: { summary, takenAt: now.getTime() } });
    const oldest = new Date(now.getTime() - TREND_KEEP_DAYS * 24 * HOUR).toISOString().slice(0, 10);
    await this.orm.delete(complianceSnapshots).where(lt(complianceSnapshots.day, oldest));
  }

  /** The last `days` days' snapshots, oldest first. */
  async list(days: number, now = new Date()) {
    const from = new Date(now.getTime() - (days - 1) * 24 * HOUR).toISOString().slice(0, 10);
    const rows = await this.orm.select().from(complianceSnapshots).where(gte(complianceSnapshots.day, from)).orderBy(desc(complianceSnapshots.day));
    const out: { day: string; takenAt: string; summary: unknown }[] = rows
      .reverse()
      .map((r) => ({ day: r.day, takenAt: new Date(r.takenAt).toISOString(), summary: JSON.parse(r.summary) as unknown }));
    const today = now.toISOString().slice(0, 10);
    const live = await this.reports.summary({});
    if (live.computers > 0 || out[out.length - 1]?.day === today) {
      if (out[out.length - 1]?.day === today) out.pop();
      out.push({ day: today, takenAt: now.toISOString(), summary: live });
    }
    return out;
  }
}
