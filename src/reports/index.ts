import type { Database } from '../db/index.js';
import type { Logger } from '../lib/log.js';
import type { Assessment } from '../assessment/index.js';
import { staleBefore } from '../assessment/settings.js';
import { Reports } from './reports.js';
import { Trend } from './trend.js';

/** Reports, read through the database's reader, and the daily compliance trend. */
export function createReports(db: Database, assessment: Assessment, logger: Logger) {
  const reports = new Reports(db.reader, assessment.computers, async () => staleBefore(await assessment.settings()));
  const trend = new Trend(db.orm, reports, logger.child({ module: 'reports' }));
  return { reports, trend, start: () => trend.start(), stop: () => trend.stop() };
}

export type ReportsService = ReturnType<typeof createReports>;
