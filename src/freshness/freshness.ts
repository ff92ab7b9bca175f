import { z } from 'zod';
import { sql } from 'drizzle-orm';
import { changelog } from '../changelog/index.js';
import type { Orm } from '../db/index.js';
import { isoTime as iso } from '../db/sql.js';
import type { Logger } from '../lib/log.js';
import type { Clock } from '../lib/clock.js';
import { languageMatches } from '../lib/languages.js';
import { languageMatchDrizzle } from '../lib/languages-drizzle.js';
import { REPLICATED_SETTINGS, type SettingsService } from '../settings/service.js';

/**
 * Catalog service goals: how late did each release reach each node? A release is
 * judged per language class (neutral + English, other languages, and a class per
 * product family given a goal of its own) against a goal in hours from its
 * publication (the catalog header's time): by when the last of its updates of that
 * class became visible at the node, or, when the node needs files of that class, by
 * when the last of them was verified there. Each node judges its own; every node
 * reports its raw times up with the roll-up, and a parent judges its whole subtree
 * with the same goals (replicated from the root) and its own clock.
 */

export const FRESHNESS_SETTING = 'freshnessGoals';
REPLICATED_SETTINGS.add(FRESHNESS_SETTING);

const hours = z
  .number()
  .positive()
  .max(24 * 365);
export const goalsSchema = z.strictObject({
  neutralEnglishHours: hours.describe('Goal for language-neutral and English data and files, in hours from publication'),
  otherLanguagesHours: hours.describe('Goal for every other language'),
  families: z.record(z.string().min(1).max(200), hours).describe('A goal (and a class) of its own per product family, e.g. {"Office 365": 48}'),
});
export type Goals = z.infer<typeof goalsSchema>;
export const DEFAULT_GOALS: Goals = { neutralEnglishHours: 24, otherLanguagesHours: 48, families: {} };

export const NEUTRAL_EN = 'neutral-en';
export const OTHER = 'other-languages';
const HOUR = 3_600_000;
/** Releases judged and reported (the newest by publication). */
export const RELEASES_REPORTED = 20;

export function goalHours(cls: string, goals: Goals): number {
  if (cls.startsWith('family:')) return goals.families[cls.slice(7)] ?? goals.otherLanguagesHours;
  return cls === NEUTRAL_EN ? goals.neutralEnglishHours : goals.otherLanguagesHours;
}

/** One class of a release at a node, as the node measured it (times in ms, null while incomplete). */
export interface ClassTimes {
  class: string;
  updates: number;
  missingUpdates: number;
  reachedAt: number | null;
  files: number;
  missingFiles: number;
  filesVerifiedAt: number | null;
}

export interface ReleaseTimes {
  version: string;
  publishedAt: number;
  importedAt: number;
  classes: ClassTimes[];
}

export const releaseTimesSchema = z
  .array(
    z.object({
      version: z.string().min(1).max(200),
      publishedAt: z.number(),
      importedAt: z.number(),
      classes: z
        .array(
          z.object({
            class: z.string().min(1).max(220),
            updates: z.number().int().min(0),
            missingUpdates: z.number().int().min(0),
            reachedAt: z.number().nullable(),
            files: z.number().int().min(0),
            missingFiles: z.number().int().min(0),
            filesVerifiedAt: z.number().nullable(),
          }),
        )
        .max(100),
    }),
  )
  .max(RELEASES_REPORTED * 2);

export type Status = 'within-goal' | 'late' | 'pending' | 'overdue';

/** A class judged against its goal at `now`: `late` in hours (0: within the goal, or not yet due). */
export function judge(c: ClassTimes, publishedAt: number, goals: Goals, now: number) {
  const goal = goalHours(c.class, goals);
  const deadline = publishedAt + goal * HOUR;
  const complete = c.missingUpdates === 0 && c.missingFiles === 0;
  // Files decide when there are files to have; otherwise the metadata does.
  const at = complete ? (c.files > 0 ? c.filesVerifiedAt : c.reachedAt) : null;
  const lateMs = Math.max(0, (at ?? now) - deadline);
  const status: Status = at !== null ? (lateMs > 0 ? 'late' : 'within-goal') : lateMs > 0 ? 'overdue' : 'pending';
  return {
    class: c.class,
    reachedAt: iso(c.reachedAt),
    filesVerifiedAt: iso(c.filesVerifiedAt),
    goalHours: goal,
    late: Math.round((lateMs / HOUR) * 100) / 100,
    status,
    deadline: iso(deadline)!,
    missing: { updates: c.missingUpdates, files: c.missingFiles },
    updates: c.updates,
    files: c.files,
  };
}
export type JudgedClass = ReturnType<typeof judge>;

export interface FreshnessNode {
  id: string;
  name: string;
  self: boolean;
  stale: boolean;
  classes: JudgedClass[];
}

export interface FreshnessOptions {
  /** Reads. */
  reader: Orm;
  /** Writes (problems). */
  orm: Orm;
  settings: SettingsService;
  clock: Clock;
  self: { nodeId: string; name: string };
  /** The languages whose data this node holds: its own and its subtree's. */
  languages: () => readonly string[];
  /** True when the node fetches every file of its languages (content need `languages`); else only the files it was asked for count. */
  needsAllFiles: () => Promise<boolean>;
  logger: Logger;
  /** The nodes below, from the roll-up: their last reported times and languages. */
  reported: () => Promise<{ id: string; name: string; stale: boolean; languages: string[] | null; freshness: ReleaseTimes[] | null }[]>;
  onOverdue?: (byNode: Map<string, { name: string; seconds: number }>) => void;
  /** True while this node's catalog is mid-burst (catching up, resyncing): a check then is put off to the next tick. */
  busy?: () => boolean;
}

/**
 * The longest a computed answer of `own` or `#expected` is reused while nothing it
 * reads has visibly changed (the change log's head, the content store's rows): a
 * bound on staleness should a write ever come without either moving.
 */
export const FRESHNESS_MEMO_MS = 60_000;

/** The class of a file language ('neutral' for an update's metadata) in a product family: the family's when it has a goal of its own, else neutral-en or other. */
function classOf(lang: string, family: string | null, goals: Goals): string {
  if (family !== null && Object.hasOwn(goals.families, family)) return `family:${family}`;
  return lang === 'neutral' || lang === 'en' || lang.startsWith('en-') ? NEUTRAL_EN : OTHER;
}

export class Freshness {
  readonly #o: FreshnessOptions;
  #timer: NodeJS.Timeout | null = null;
  /**
   * Answers of `own` and `#expected` (aggregates over every update of a release: 0.1 s
   * at 20,000 updates, and a root's check asks one per language set below it) kept
   * while what they read is unchanged, so a parent's check every 10 s costs a few
   * lookups, not a scan per node below, while its subtree catches up.
   */
  #memo: { key: string; at: number; answers: Map<string, Promise<unknown>> } = { key: '', at: 0, answers: new Map() };

  constructor(o: FreshnessOptions) {
    this.#o = o;
  }

  /** Forgets the kept answers once the catalog or the content store changed (or after FRESHNESS_MEMO_MS): one look per `own` (and so per report). */
  async #refresh(): Promise<void> {
    const [g] = await this.#o.reader.all<{ head: number | null; files: number; at: number | null }>(
      sql`SELECT ${changelog.headExpr()} AS head, (SELECT count(*) FROM content_files) AS files, (SELECT max(updated_at) FROM content_files) AS at`,
    );
    const gen = `${g?.head}:${g?.files}:${g?.at}`;
    const now = Date.now();
    if (this.#memo.key !== gen || now - this.#memo.at > FRESHNESS_MEMO_MS) this.#memo = { key: gen, at: now, answers: new Map() };
  }

  /** `compute`'s answer for `key`, kept until the next `#refresh` finds a change. */
  #memoized<T>(key: string, compute: () => Promise<T>): Promise<T> {
    const answers = this.#memo.answers;
    let p = answers.get(key) as Promise<T> | undefined;
    if (!p) {
      p = compute();
      answers.set(key, p);
      p.catch(() => answers.delete(key));
    }
    return p;
  }

  async goals(): Promise<Goals> {
    return { ...DEFAULT_GOALS, ...(await this.#o.settings.get<Partial<Goals>>(FRESHNESS_SETTING)) };
  }

  async setGoals(g: Goals, by: string | null): Promise<Goals> {
    await this.#o.settings.put(FRESHNESS_SETTING, g, by);
    return this.goals();
  }

  /**
   * Per class of a release at a node of these languages: its updates, how many are
   * missing, when the last arrived. SQL aggregates per (language list, family), a
   * handful of groups however large the release; each group's updates count once in
   * every class one of its matching languages falls in (`classOf`).
   */
  async #updateClasses(version: string, languages: readonly string[], goals: Goals) {
    const groups = await this.#o.reader.all<{ languages: string; family: string | null; n: number; missing: number; reached: number | null }>(sql`
      SELECT languages, family, count(*) AS n, sum(visible_at IS NULL) AS missing, max(visible_at) AS reached
      FROM freshness_updates WHERE version = ${version} GROUP BY languages, family`);
    const out = new Map<string, { cls: string; n: number; missing: number; reached: number | null }>();
    for (const g of groups) {
      const langs = g.languages === '' ? ['neutral'] : g.languages.split(',');
      for (const cls of new Set(langs.filter((l) => languageMatches(l, languages)).map((l) => classOf(l, g.family, goals)))) {
        const c = out.get(cls) ?? { cls, n: 0, missing: 0, reached: null };
        c.n += Number(g.n);
        c.missing += Number(g.missing);
        if (g.reached !== null) c.reached = Math.max(c.reached ?? 0, Number(g.reached));
        out.set(cls, c);
      }
    }
    return [...out.values()];
  }

  /**
   * The newest releases and, per class, when they reached this node (its own
   * measurement), aggregated in SQL: memory does not grow with the release.
   */
  async own(goals?: Goals): Promise<ReleaseTimes[]> {
    const g = goals ?? (await this.goals());
    const langs = this.#o.languages();
    const all = await this.#o.needsAllFiles();
    await this.#refresh();
    return this.#memoized(`own\t${JSON.stringify(g)}\t${langs.join(',')}\t${all}`, () => this.#own(g, langs, all));
  }

  async #own(g: Goals, langs: readonly string[], all: boolean): Promise<ReleaseTimes[]> {
    const releases = await this.#o.reader.all<{ version: string; published_at: number; imported_at: number }>(
      sql`SELECT version, published_at, imported_at FROM freshness_releases ORDER BY published_at DESC, version LIMIT ${RELEASES_REPORTED}`,
    );
    const out: ReleaseTimes[] = [];
    for (const r of releases) {
      const classes = new Map<string, ClassTimes>();
      const at = (cls: string) => {
        let c = classes.get(cls);
        if (!c) classes.set(cls, (c = { class: cls, updates: 0, missingUpdates: 0, reachedAt: null, files: 0, missingFiles: 0, filesVerifiedAt: null }));
        return c;
      };
      for (const u of await this.#updateClasses(r.version, langs, g)) {
        const c = at(u.cls);
        c.updates = Number(u.n);
        c.missingUpdates = Number(u.missing);
        c.reachedAt = c.missingUpdates ? null : u.reached === null ? null : Number(u.reached);
      }
      // Files this node needs, verified when? Every file of its languages when it fetches
      // them all, else those the content store was asked for (marked, or in a policy). A
      // file verified before its update arrived counts from the update's arrival.
      // Aggregated per (language, family) in SQL, summed per class here.
      const lang = sql.raw('uf.language');
      const files = new Map<string, { n: number; missing: number; verified: number | null }>();
      for (const f of await this.#o.reader.all<{ language: string; family: string; n: number; missing: number; verified: number | null }>(sql`
        SELECT language, family, count(*) AS n, sum(NOT ok) AS missing, max(at) AS verified FROM (
          SELECT uf.language, fu.family, coalesce(cf.state = 'verified' AND cf.verified_at IS NOT NULL AND fu.visible_at IS NOT NULL, 0) AS ok,
                 max(cf.verified_at, fu.visible_at) AS at
          FROM freshness_updates fu JOIN update_files uf ON uf.update_id = fu.update_id LEFT JOIN content_files cf ON cf.sha256 = uf.sha256
          WHERE fu.version = ${r.version} AND ${languageMatchDrizzle(lang, langs)}${all ? sql`` : sql` AND cf.state IS NOT NULL`}) GROUP BY language, family`)) {
        const cls = classOf(f.language, f.family, g);
        const sum = files.get(cls) ?? { n: 0, missing: 0, verified: null };
        sum.n += Number(f.n);
        sum.missing += Number(f.missing);
        if (f.verified !== null) sum.verified = Math.max(sum.verified ?? 0, Number(f.verified));
        files.set(cls, sum);
      }
      for (const [cls, f] of files) {
        const c = at(cls);
        c.files = f.n;
        c.missingFiles = f.missing;
        c.filesVerifiedAt = f.missing || f.verified === null ? null : f.verified;
      }
      out.push({
        version: r.version,
        publishedAt: Number(r.published_at),
        importedAt: Number(r.imported_at),
        classes: [...classes.values()].sort((a, b) => a.class.localeCompare(b.class)),
      });
    }
    return out;
  }

  /** What a node of these languages should get of a release it has not reported: everything missing (asked after `own`, which refreshed the kept answers). */
  async #expected(version: string, languages: readonly string[], goals: Goals): Promise<ClassTimes[]> {
    const key = `expected\t${version}\t${[...languages].sort().join(',')}\t${JSON.stringify(goals)}`;
    return this.#memoized(key, async () => this.#expectedNow(version, languages, goals));
  }

  async #expectedNow(version: string, languages: readonly string[], goals: Goals): Promise<ClassTimes[]> {
    return (await this.#updateClasses(version, languages, goals))
      .map((u) => ({ class: u.cls, updates: Number(u.n), missingUpdates: Number(u.n), reachedAt: null, files: 0, missingFiles: 0, filesVerifiedAt: null }))
      .sort((a, b) => a.class.localeCompare(b.class));
  }

  /**
   * The freshness report: per release (newest first), per node, per class. `tree`
   * adds every node below that reports through the roll-up: a node that has not
   * reported a release is judged as still missing all of it (late once its goal
   * passes), a stale node by its last report.
   */
  async report(scope: 'node' | 'tree') {
    const goals = await this.goals();
    const now = this.#o.clock();
    const own = await this.own(goals);
    const below = scope === 'tree' ? await this.#o.reported() : [];
    // Nodes of the same languages missing the same release expect the same: counted once.
    const expected = new Map<string, Promise<ClassTimes[]>>();
    const expect = (version: string, languages: string[]) => {
      const key = `${version}\t${[...languages].sort().join(',')}`;
      let e = expected.get(key);
      if (!e) expected.set(key, (e = this.#expected(version, languages, goals)));
      return e;
    };
    const releases = [];
    for (const r of own) {
      const nodes: FreshnessNode[] = [
        { id: this.#o.self.nodeId, name: this.#o.self.name, self: true, stale: false, classes: r.classes.map((c) => judge(c, r.publishedAt, goals, now)) },
      ];
      for (const n of below) {
        const times = n.freshness?.find((x) => x.version === r.version)?.classes ?? (n.languages ? await expect(r.version, n.languages) : null);
        if (!times) continue;
        nodes.push({ id: n.id, name: n.name, self: false, stale: n.stale, classes: times.map((c) => judge(c, r.publishedAt, goals, now)) });
      }
      releases.push({ version: r.version, publishedAt: iso(r.publishedAt)!, importedAt: iso(r.importedAt)!, nodes });
    }
    return { goals, releases };
  }

  /* ---------------- problems ---------------- */

  start(intervalMs = 10_000): void {
    const run = () => void this.check().catch((err) => this.#o.logger.error({ err }, 'checking catalog freshness failed'));
    run();
    this.#timer = setInterval(run, intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
  }

  /**
   * Finds the releases that missed their goal at a node of the subtree (late, or
   * overdue and still missing), records each (release, node) once and logs it
   * then, never again; sets the overdue gauge per node. Put off while `busy` (the
   * catalog is about to change again): the next tick checks.
   */
  async check(): Promise<number> {
    if (this.#o.busy?.()) return 0;
    const rep = await this.report('tree');
    const now = this.#o.clock();
    const overdue = new Map<string, { name: string; seconds: number }>();
    let raised = 0;
    for (const r of rep.releases)
      for (const n of r.nodes) {
        const missed = n.classes.filter((c) => c.status === 'late' || c.status === 'overdue');
        const o = overdue.get(n.id) ?? { name: n.name, seconds: 0 };
        for (const c of n.classes) if (c.status === 'overdue') o.seconds = Math.max(o.seconds, Math.round((now - Date.parse(c.deadline)) / 1000));
        overdue.set(n.id, o);
        if (!missed.length) continue;
        const lateMs = Math.round(Math.max(...missed.map((c) => c.late)) * HOUR);
        const res = await this.#o.orm.run(
          sql`INSERT INTO freshness_problems (version, node_id, node_name, classes, late_ms, detected_at) VALUES (${r.version}, ${n.id}, ${n.name}, ${missed.map((c) => c.class).join(',')}, ${lateMs}, ${now})
              ON CONFLICT(version, node_id) DO NOTHING`,
        );
        if (res.rowsAffected) {
          raised++;
          this.#o.logger.warn(
            {
              release: r.version,
              node: n.name,
              nodeId: n.id,
              classes: missed.map((c) => ({ class: c.class, status: c.status, lateHours: c.late, goalHours: c.goalHours })),
            },
            `catalog release ${r.version} missed its freshness goal at ${n.name}`,
          );
        }
      }
    this.#o.onOverdue?.(overdue);
    return raised;
  }

  /** The recorded problems, newest first. */
  async problems(limit = 100) {
    const rows = await this.#o.reader.all<{ version: string; node_id: string; node_name: string; classes: string; late_ms: number; detected_at: number }>(
      sql`SELECT version, node_id, node_name, classes, late_ms, detected_at FROM freshness_problems ORDER BY detected_at DESC, version, node_id LIMIT ${limit}`,
    );
    return rows.map((r) => ({
      kind: 'catalog-freshness',
      release: r.version,
      node: { id: r.node_id, name: r.node_name },
      classes: r.classes.split(','),
      lateHours: Math.round((Number(r.late_ms) / HOUR) * 100) / 100,
      detectedAt: iso(Number(r.detected_at))!,
    }));
  }
}
