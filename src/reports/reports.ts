import { z } from 'zod';
import { sql, type SQL } from 'drizzle-orm';
import { isoTime as iso, keysetPage, type Orm } from '../db/index.js';
import { AppError } from '../lib/errors.js';
import { conditionSql, type Computers } from '../assessment/queries.js';
import { SEVERITIES, SEVERITY_BUCKETS, severityBucket, UNRATED, type SeverityBucket } from '../catalog/format.js';
import { computers } from '../assessment/schema.js';

/**
 * Reports: compliance (summary, by update, by computer) and vulnerabilities, with
 * the same filters everywhere. They read the summaries the assessor keeps current as
 * results arrive (per computer: required by severity; per update: installed,
 * required, unknown, superseded), so an unfiltered report never scans the
 * (computer, update) pairs. An update filter (severity, product, ...) is answered
 * from the required pairs, which are the only pairs stored.
 */

const day = z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'a date, YYYY-MM-DD');
export const reportFilterSchema = z.object({
  filter: z.string().min(1).max(400).optional().describe('Computers of this filter (GET /api/v1/filters)'),
  severity: z.enum(SEVERITIES).optional().describe('Updates of this vendor severity'),
  customSeverity: z.coerce.number().int().optional().describe('Updates of this custom severity (id)'),
  product: z.string().min(1).max(300).optional(),
  classification: z.string().min(1).max(200).optional(),
  releasedSince: day.optional(),
  releasedBefore: day.optional(),
});
export type ReportFilter = z.infer<typeof reportFilterSchema>;

type BySeverity = Record<SeverityBucket, number>;
const zeroes = (): BySeverity => ({ Critical: 0, Important: 0, Moderate: 0, Low: 0, Unrated: 0 });
/** The vendor severities as SQL literals (the statement text stays as it was written by hand). */
const SEVERITY_LIST = sql.raw(SEVERITIES.map((s) => `'${s}'`).join(', '));
/** A severity's rank in SQL: its index in SEVERITIES, Unrated after them. */
const SEVERITY_RANK = sql.raw(`CASE u.severity ${SEVERITIES.map((s, i) => `WHEN '${s}' THEN ${i}`).join(' ')} ELSE ${SEVERITIES.length} END`);
const pct = (part: number, whole: number) => (whole === 0 ? 100 : Math.round((1000 * part) / whole) / 10);

/** An opaque keyset cursor: the sort value and the id of the last row. */
export const encode = (v: (string | number)[]) => Buffer.from(JSON.stringify(v)).toString('base64url');
export function decode(c: string | undefined): [number, string | number] | null {
  if (!c) return null;
  try {
    const v = JSON.parse(Buffer.from(c, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'number') return v as [number, string | number];
  } catch {
    /* below */
  }
  throw new AppError('validation-failed', 'cursor: not a cursor this report gave');
}

export class Reports {
  constructor(
    /** Reads (db.reader: sees the assessor's commits at once). */
    private readonly orm: Orm,
    private readonly computersQ: Computers,
    private readonly staleBefore: () => Promise<number>,
  ) {}

  /** The computer condition, or null for every computer. */
  async #computerSql(f: ReportFilter): Promise<SQL | null> {
    if (!f.filter) return null;
    return conditionSql((await this.computersQ.condition(f.filter)).condition, await this.staleBefore());
  }

  /** The update condition over `u`, or null when no update filter is given. */
  #updateSql(f: ReportFilter): SQL | null {
    const parts: SQL[] = [];
    if (f.severity) parts.push(sql`u.severity = ${f.severity}`);
    if (f.customSeverity !== undefined) parts.push(sql`u.custom_severity_id = ${f.customSeverity}`);
    if (f.product) parts.push(sql`u.product = ${f.product}`);
    if (f.classification) parts.push(sql`u.classification = ${f.classification}`);
    if (f.releasedSince) parts.push(sql`u.release_date >= ${f.releasedSince}`);
    if (f.releasedBefore) parts.push(sql`u.release_date < ${f.releasedBefore}`);
    return parts.length ? sql.join(parts, sql` AND `) : null;
  }

  /**
   * Computers, compliant ones (nothing required in scope), required (computer,
   * update) pairs by severity, computers missing a critical update (urgent), stale scans.
   */
  async summary(f: ReportFilter) {
    const cf = await this.#computerSql(f);
    const uf = this.#updateSql(f);
    const where = cf ? sql`WHERE ${cf}` : sql``;
    const stale = await this.staleBefore();
    const base = await this.orm.all<{ n: number; stale: number; compliant: number; urgent: number; c: number; i: number; m: number; l: number; u: number }>(sql`
      SELECT count(*) AS n, coalesce(sum(${computers.lastScanAt} < ${stale}), 0) AS stale, coalesce(sum(${computers.required} = 0), 0) AS compliant,
             coalesce(sum(${computers.reqCritical} > 0), 0) AS urgent, coalesce(sum(${computers.reqCritical}), 0) AS c, coalesce(sum(${computers.reqImportant}), 0) AS i,
             coalesce(sum(${computers.reqModerate}), 0) AS m, coalesce(sum(${computers.reqLow}), 0) AS l, coalesce(sum(${computers.reqUnrated}), 0) AS u
      FROM ${computers} ${where}`);
    const b = base[0]!;
    const n = Number(b.n);
    let compliant = Number(b.compliant);
    let urgent = Number(b.urgent);
    let bySeverity: BySeverity = { Critical: Number(b.c), Important: Number(b.i), Moderate: Number(b.m), Low: Number(b.l), Unrated: Number(b.u) };
    if (uf) {
      const rows = await this.orm.all<{ severity: string | null; pairs: number; computers: number; urgent: number }>(sql`
        SELECT u.severity AS severity, count(*) AS pairs, count(DISTINCT cu.computer_id) AS computers, 0 AS urgent
        FROM computer_updates cu JOIN updates u ON u.id = cu.update_id JOIN ${computers} ON ${computers.id} = cu.computer_id
        WHERE cu.state = 'required' AND ${uf}${cf ? sql` AND ${cf}` : sql``} GROUP BY u.severity`);
      bySeverity = zeroes();
      for (const r of rows) bySeverity[severityBucket(r.severity)] += Number(r.pairs);
      const nonCompliant = await this.orm.all<{ n: number; urgent: number }>(sql`
        SELECT count(DISTINCT cu.computer_id) AS n, count(DISTINCT CASE WHEN u.severity = 'Critical' THEN cu.computer_id END) AS urgent
        FROM computer_updates cu JOIN updates u ON u.id = cu.update_id JOIN ${computers} ON ${computers.id} = cu.computer_id
        WHERE cu.state = 'required' AND ${uf}${cf ? sql` AND ${cf}` : sql``}`);
      compliant = n - Number(nonCompliant[0]?.n ?? 0);
      urgent = Number(nonCompliant[0]?.urgent ?? 0);
    }
    const required = Object.values(bySeverity).reduce((a, v) => a + v, 0);
    return {
      computers: n,
      compliant,
      compliantPercent: pct(compliant, n),
      required,
      requiredBySeverity: bySeverity,
      urgentComputers: urgent,
      stale: Number(b.stale),
    };
  }

  /**
   * Per update, most required first: applicable, installed, superseded, required,
   * unknown, % compliant (installed or superseded, of applicable). For all computers
   * these come from the per-update counters; for a filter's computers only the
   * required and unknown counts exist (installed pairs are counted, not stored).
   */
  async byUpdate(f: ReportFilter, page: { limit: number; cursor?: string | undefined }) {
    const cf = await this.#computerSql(f);
    const uf = this.#updateSql(f);
    const after = decode(page.cursor);
    const keyset = after ? sql` AND (x.required < ${after[0]} OR (x.required = ${after[0]} AND x.id > ${after[1]}))` : sql``;
    const rows = cf
      ? await this.orm.all<UpdateRow>(sql`
          SELECT * FROM (SELECT u.id, u.kb, u.title, u.product, u.severity, u.classification, u.release_date, NULL AS installed, NULL AS superseded,
                   sum(cu.state = 'required') AS required, sum(cu.state = 'unknown') AS unknown
            FROM computer_updates cu JOIN updates u ON u.id = cu.update_id JOIN ${computers} ON ${computers.id} = cu.computer_id
            WHERE u.expired = 0 AND ${cf}${uf ? sql` AND ${uf}` : sql``} GROUP BY u.id) x
          WHERE 1 = 1${keyset} ORDER BY x.required DESC, x.id LIMIT ${page.limit + 1}`)
      : await this.orm.all<UpdateRow>(sql`
          SELECT * FROM (SELECT u.id, u.kb, u.title, u.product, u.severity, u.classification, u.release_date, c.installed, c.superseded, c.required, c.unknown
            FROM update_compliance c JOIN updates u ON u.id = c.update_id WHERE u.expired = 0${uf ? sql` AND ${uf}` : sql``}) x
          WHERE 1 = 1${keyset} ORDER BY x.required DESC, x.id LIMIT ${page.limit + 1}`);
    return keysetPage(rows, page.limit, updateItem, (r) => encode([Number(r.required), r.id]));
  }

  /** Per computer, most required first: required by severity, urgent (critical) ones, last scan, stale. */
  async byComputer(f: ReportFilter, page: { limit: number; cursor?: string | undefined }) {
    const cf = await this.#computerSql(f);
    const uf = this.#updateSql(f);
    const stale = await this.staleBefore();
    const after = decode(page.cursor);
    const keyset = after ? sql` AND (x.required < ${after[0]} OR (x.required = ${after[0]} AND x.id > ${after[1]}))` : sql``;
    const sev = (s: string | null, column: SQL) =>
      uf
        ? sql`(SELECT count(*) FROM computer_updates cu JOIN updates u ON u.id = cu.update_id WHERE cu.computer_id = ${computers.id} AND cu.state = 'required' AND ${uf} AND ${s === null ? sql`(u.severity IS NULL OR u.severity NOT IN (${SEVERITY_LIST}))` : sql`u.severity = ${s}`})`
        : column;
    const list = await this.orm.all<ComputerRow>(sql`
      SELECT x.* FROM (SELECT y.*, y.c + y.i + y.m + y.l + y.u AS required FROM (SELECT ${computers.id} AS id, ${computers.name} AS name, ${computers.osName} AS os_name,
               ${computers.language} AS language, ${computers.lastScanAt} AS last_scan_at,
               ${sev('Critical', sql`${computers.reqCritical}`)} AS c, ${sev('Important', sql`${computers.reqImportant}`)} AS i, ${sev('Moderate', sql`${computers.reqModerate}`)} AS m,
               ${sev('Low', sql`${computers.reqLow}`)} AS l, ${sev(null, sql`${computers.reqUnrated}`)} AS u, ${computers.unknown} AS unknown
        FROM ${computers}${cf ? sql` WHERE ${cf}` : sql``}) y) x
      WHERE 1 = 1${keyset} ORDER BY x.required DESC, x.id LIMIT ${page.limit + 1}`);
    return keysetPage(
      list,
      page.limit,
      (r) => ({
        id: Number(r.id),
        name: r.name,
        os: r.os_name,
        language: r.language,
        required: Number(r.required),
        requiredBySeverity: { Critical: Number(r.c), Important: Number(r.i), Moderate: Number(r.m), Low: Number(r.l), Unrated: Number(r.u) },
        urgent: Number(r.c),
        unknown: Number(r.unknown),
        lastScanAt: iso(r.last_scan_at),
        stale: Number(r.last_scan_at) < stale,
      }),
      (r) => encode([Number(r.required), Number(r.id)]),
    );
  }

  /**
   * Per CVE, most affected computers first: the highest severity of its fixing
   * updates, whether the feed says it is exploited, the computers that require a
   * fixing update, and each fixing update's deployment (required, in how many
   * enabled policies, installed through them).
   */
  async vulnerabilities(f: ReportFilter, page: { limit: number; cursor?: string | undefined }) {
    const cf = await this.#computerSql(f);
    const uf = this.#updateSql(f);
    const after = decode(page.cursor);
    const keyset = after ? sql` AND (x.affected < ${after[0]} OR (x.affected = ${after[0]} AND x.cve > ${after[1]}))` : sql``;
    const rows = await this.orm.all<{ cve: string; rank: number; exploited: number; affected: number }>(sql`
      SELECT * FROM (SELECT uc.cve AS cve,
          min(${SEVERITY_RANK}) AS rank,
          max(EXISTS (SELECT 1 FROM json_each(u.cve_details) j WHERE json_extract(j.value, '$.id') = uc.cve AND json_extract(j.value, '$.exploited') = 1)) AS exploited,
          (SELECT count(DISTINCT cu.computer_id) FROM computer_updates cu JOIN update_cves x ON x.update_id = cu.update_id
             ${cf ? sql`JOIN ${computers} ON ${computers.id} = cu.computer_id` : sql``}
             WHERE x.cve = uc.cve AND cu.state = 'required'${cf ? sql` AND ${cf}` : sql``}) AS affected
        FROM update_cves uc JOIN updates u ON u.id = uc.update_id AND u.expired = 0${uf ? sql` AND ${uf}` : sql``}
        GROUP BY uc.cve) x
      WHERE 1 = 1${keyset} ORDER BY x.affected DESC, x.cve LIMIT ${page.limit + 1}`);
    const list = rows.slice(0, page.limit);
    const fixes = new Map<string, { updateId: string; kb: string | null; severity: string | null; required: number; policies: number; installed: number }[]>();
    if (list.length) {
      const cves = list.map((r) => r.cve);
      for (const r of await this.orm.all<{
        cve: string;
        id: string;
        kb: string | null;
        severity: string | null;
        required: number | null;
        policies: number;
        installed: number;
      }>(sql`
        SELECT uc.cve, u.id, u.kb, u.severity, c.required,
          (SELECT count(*) FROM policy_updates pu JOIN policies p ON p.id = pu.policy_id AND p.enabled = 1 WHERE pu.update_id = u.id) AS policies,
          (SELECT count(DISTINCT t.computer_id) FROM delivery_targets t WHERE t.update_id = u.id AND t.applicable = 'installed') AS installed
        FROM update_cves uc JOIN updates u ON u.id = uc.update_id AND u.expired = 0 LEFT JOIN update_compliance c ON c.update_id = u.id
        WHERE uc.cve IN (${sql.join(
          cves.map((c) => sql`${c}`),
          sql`, `,
        )})${uf ? sql` AND ${uf}` : sql``} ORDER BY uc.cve, u.id`)) {
        let l = fixes.get(r.cve);
        if (!l) fixes.set(r.cve, (l = []));
        l.push({
          updateId: r.id,
          kb: r.kb,
          severity: r.severity,
          required: Number(r.required ?? 0),
          policies: Number(r.policies),
          installed: Number(r.installed),
        });
      }
    }
    return keysetPage(
      rows,
      page.limit,
      (r) => ({
        cve: r.cve,
        severity: SEVERITY_BUCKETS[Number(r.rank)] === UNRATED ? null : SEVERITY_BUCKETS[Number(r.rank)]!,
        exploited: Boolean(r.exploited),
        affectedComputers: Number(r.affected),
        fixes: fixes.get(r.cve) ?? [],
      }),
      (r) => encode([Number(r.affected), r.cve]),
    );
  }
}

/** A per-update row: the update's fields (null where this node lacks the update) and its counts (installed and superseded null when not counted). */
export interface UpdateRow {
  id: string;
  kb: string | null;
  title: string | null;
  product: string | null;
  severity: string | null;
  classification: string | null;
  release_date: string | null;
  installed: number | null;
  superseded: number | null;
  required: number;
  unknown: number;
}

/** One item of a per-update report: applicable (null when installed pairs are not counted), the counts, % compliant. */
export function updateItem(r: UpdateRow) {
  const installed = r.installed === null ? null : Number(r.installed);
  const superseded = r.superseded === null ? null : Number(r.superseded);
  const required = Number(r.required);
  const unknown = Number(r.unknown);
  const applicable = installed === null || superseded === null ? null : installed + superseded + required + unknown;
  return {
    id: r.id,
    kb: r.kb,
    title: r.title,
    product: r.product,
    severity: r.severity,
    classification: r.classification,
    releaseDate: r.release_date,
    applicable,
    installed,
    superseded,
    required,
    unknown,
    compliantPercent: applicable === null ? null : pct(installed! + superseded!, applicable),
  };
}

interface ComputerRow {
  id: number;
  name: string;
  os_name: string | null;
  language: string | null;
  last_scan_at: number;
  c: number;
  i: number;
  m: number;
  l: number;
  u: number;
  unknown: number;
  required: number;
}
