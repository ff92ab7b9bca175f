import type { Database, Orm } from '../db/index.js';
import { openConn } from '../db/exec.js';
import { liveRulesPage } from '../catalog/read.js';
import type { Logger } from '../lib/log.js';
import type { SettingsService } from '../settings/service.js';
import { Assessor } from './assessor.js';
import { EnrollmentTokens } from './enrollment.js';
import { Computers } from './queries.js';
import { assessmentSettings, staleBefore } from './settings.js';

export { stateOf, type State } from './catalog-index.js';

/** System assessment, wired: the assessor on its own connection, computers and filters, enrolment tokens. */
export function createAssessment(db: Database, orm: Orm, settings: SettingsService, logger: Logger, onAssessed: (computerIds: number[]) => void = () => {}) {
  const conn = openConn(db);
  const assessor = new Assessor(conn, logger.child({ module: 'assessment' }), onAssessed);
  const computers = new Computers(db.reader, orm, assessor.index, async () => staleBefore(await assessmentSettings(settings)));
  return {
    assessor,
    computers,
    enrollment: new EnrollmentTokens(orm),
    settings: () => assessmentSettings(settings),
    start: () => assessor.start(),
    async status() {
      const st = await conn.get<{ cursor: number; full_at: number | null }>('SELECT cursor, full_at FROM assessment_state WHERE id = 1', []);
      const before = staleBefore(await assessmentSettings(settings));
      const fleet = await conn.get<{ n: number; stale: number }>('SELECT count(*) AS n, coalesce(sum(last_scan_at < ?), 0) AS stale FROM computers', [before]);
      // While no computer needs it the index is not loaded (CatalogIndex.loaded): the live catalog is counted instead.
      const indexed = assessor.index.loaded;
      const live = indexed ? null : await conn.get<{ n: number }>('SELECT count(*) AS n FROM updates WHERE expired = 0', []);
      return {
        updates: indexed ? assessor.index.size : Number(live?.n ?? 0),
        indexed,
        cursor: Number(st?.cursor ?? 0),
        head: await assessor.head(),
        busy: assessor.busy,
        lastRun: assessor.lastRun,
        lastFullAt: st?.full_at ? new Date(st.full_at).toISOString() : null,
        computers: Number(fleet?.n ?? 0),
        stale: Number(fleet?.stale ?? 0),
      };
    },
    /** The live catalog's rules, a page at a time (for agents and the simulator). */
    async rulesPage(after: string, limit: number) {
      return liveRulesPage(conn, after, limit);
    },
    async stop(): Promise<void> {
      await assessor.stop();
      conn.close();
    },
  };
}

export type Assessment = ReturnType<typeof createAssessment>;
