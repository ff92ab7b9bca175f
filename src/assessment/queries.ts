import { z } from 'zod';
import { and, asc, eq, gt, sql, type SQL } from 'drizzle-orm';
import { escapeLike, type Orm } from '../db/index.js';
import { AppError } from '../lib/errors.js';
import { customSeverities } from '../catalog/schema.js';
import { existingUpdates, updateSummaries } from '../catalog/read.js';
import { SEVERITIES, type Severity } from '../catalog/format.js';
import { isUniqueViolation } from '../catalog/severities.js';
import { facts, type Inventory } from './evaluate.js';
import type { CatalogIndex, State } from './catalog-index.js';
import { computers, customFilters } from './schema.js';

/**
 * Computers, their updates, and filters: named dynamic sets of computers. Every
 * filter is a condition over the computer's fields and its assessment; the
 * automatic ones (per update, severity, custom severity, stale scan, OS, language)
 * are derived from the data, so they are always current, and an admin's own
 * filters use the same condition language.
 */

const SEVERITY_COLUMN = {
  Critical: computers.reqCritical,
  Important: computers.reqImportant,
  Moderate: computers.reqModerate,
  Low: computers.reqLow,
} as const satisfies Record<Severity, unknown>;

export const conditionSchema = z
  .strictObject({
    requires: z.string().min(1).max(100).optional().describe('Update id the computers require'),
    severity: z.enum(SEVERITIES).optional().describe('Computers missing at least one update of this vendor severity'),
    customSeverity: z.number().int().optional().describe('Computers missing at least one update of this custom severity (its id)'),
    stale: z.boolean().optional().describe('Last scan older than twice the scan interval (or not)'),
    os: z.string().min(1).max(300).optional().describe('OS name, exactly'),
    language: z.string().min(2).max(20).optional().describe('Language; "de" matches "de-*"'),
    name: z.string().min(1).max(255).optional().describe('Part of the computer name'),
  })
  .refine((c) => Object.keys(c).length > 0, 'a condition needs at least one field');
export type Condition = z.infer<typeof conditionSchema>;

/** The SQL for a condition, over `computers`. */
export function conditionSql(c: Condition, staleBefore: number): SQL {
  const parts: SQL[] = [];
  if (c.requires !== undefined)
    parts.push(
      sql`EXISTS (SELECT 1 FROM computer_updates cu WHERE cu.computer_id = ${computers.id} AND cu.update_id = ${c.requires} AND cu.state = 'required')`,
    );
  if (c.severity !== undefined) parts.push(sql`${SEVERITY_COLUMN[c.severity]} > 0`);
  if (c.customSeverity !== undefined)
    parts.push(
      sql`EXISTS (SELECT 1 FROM computer_updates cu JOIN updates u ON u.id = cu.update_id WHERE cu.computer_id = ${computers.id} AND cu.state = 'required' AND u.custom_severity_id = ${c.customSeverity})`,
    );
  if (c.stale !== undefined) parts.push(c.stale ? sql`${computers.lastScanAt} < ${staleBefore}` : sql`${computers.lastScanAt} >= ${staleBefore}`);
  if (c.os !== undefined) parts.push(sql`${computers.osName} = ${c.os}`);
  if (c.language !== undefined) {
    const l = c.language.toLowerCase();
    parts.push(sql`(${computers.language} = ${l} OR ${computers.language} LIKE ${`${escapeLike(l)}-%`} ESCAPE '\\')`);
  }
  if (c.name !== undefined) parts.push(sql`${computers.name} LIKE ${`%${escapeLike(c.name)}%`} ESCAPE '\\'`);
  return and(...parts)!;
}

export interface FilterItem {
  id: string;
  name: string;
  kind: 'stale' | 'severity' | 'custom-severity' | 'os' | 'language' | 'custom' | 'requires';
  count: number;
  condition: Condition;
}

const KINDS: FilterItem['kind'][] = ['stale', 'severity', 'custom-severity', 'os', 'language', 'custom', 'requires'];

export class Computers {
  constructor(
    /** Reads (db.reader: sees the assessor's commits at once). */
    private readonly orm: Orm,
    /** Writes: custom filters. */
    private readonly writer: Orm,
    private readonly index: CatalogIndex,
    /** Scans before this instant are stale. */
    private readonly staleBefore: () => Promise<number>,
  ) {}

  async #count(c: Condition): Promise<number> {
    const r = await this.orm
      .select({ n: sql<number>`count(*)` })
      .from(computers)
      .where(conditionSql(c, await this.staleBefore()));
    return Number(r[0]?.n ?? 0);
  }

  /** Resolves a filter id to its condition (404 for an unknown one). */
  async condition(id: string): Promise<{ name: string; condition: Condition }> {
    const [kind, ...rest] = id.split(':');
    const arg = rest.join(':');
    switch (kind) {
      case 'stale':
        return { name: 'Stale scan', condition: { stale: true } };
      case 'severity': {
        const sev = SEVERITIES.find((s) => s.toLowerCase() === arg.toLowerCase());
        if (sev) return { name: `Missing ${sev.toLowerCase()} updates`, condition: { severity: sev } };
        break;
      }
      case 'custom-severity': {
        const level = await this.orm.query.customSeverities.findFirst({ where: eq(customSeverities.id, Number(arg)) });
        if (level) return { name: `Missing ${level.name} updates`, condition: { customSeverity: level.id } };
        break;
      }
      case 'os':
        if (arg) return { name: `OS: ${arg}`, condition: { os: arg } };
        break;
      case 'language':
        if (arg) return { name: `Language: ${arg}`, condition: { language: arg } };
        break;
      case 'requires': {
        const [u] = await updateSummaries(this.orm, [arg]);
        if (u) return { name: requiresName(u), condition: { requires: u.id } };
        break;
      }
      case 'custom': {
        const f = await this.orm.query.customFilters.findFirst({ where: eq(customFilters.id, Number(arg)) });
        if (f) return { name: f.name, condition: JSON.parse(f.condition) as Condition };
        break;
      }
    }
    throw new AppError('not-found', `no filter ${id}`);
  }

  /**
   * Filters with their counts, in a fixed order of kinds; `requires:` filters (one
   * per update some computer requires, most needed first) are the long tail, so
   * the list is paged with an opaque cursor.
   */
  async filters(o: {
    kind?: FilterItem['kind'] | undefined;
    limit: number;
    cursor?: string | undefined;
  }): Promise<{ items: FilterItem[]; nextCursor: string | null }> {
    let startKind = 0;
    let offset = 0;
    if (o.cursor) {
      const m = /^(\d+)\.(\d+)$/.exec(o.cursor);
      if (!m) throw new AppError('validation-failed', 'invalid cursor');
      [startKind, offset] = [Number(m[1]), Number(m[2])];
    }
    const items: FilterItem[] = [];
    for (let k = startKind; k < KINDS.length; k++) {
      const kind = KINDS[k]!;
      if (o.kind && o.kind !== kind) continue;
      const room = o.limit - items.length;
      const skip = k === startKind ? offset : 0;
      const got = await this.#ofKind(kind, skip, room + 1);
      if (got.length > room) {
        items.push(...got.slice(0, room));
        return { items, nextCursor: `${k}.${skip + room}` };
      }
      items.push(...got);
    }
    return { items, nextCursor: null };
  }

  async #ofKind(kind: FilterItem['kind'], offset: number, limit: number): Promise<FilterItem[]> {
    const page = <T>(list: T[]) => list.slice(offset, offset + limit);
    switch (kind) {
      case 'stale':
        return page([{ id: 'stale', name: 'Stale scan', kind, count: await this.#count({ stale: true }), condition: { stale: true } }]);
      case 'severity': {
        const r = await this.orm
          .select({
            critical: sql<number>`coalesce(sum(${computers.reqCritical} > 0), 0)`,
            important: sql<number>`coalesce(sum(${computers.reqImportant} > 0), 0)`,
            moderate: sql<number>`coalesce(sum(${computers.reqModerate} > 0), 0)`,
            low: sql<number>`coalesce(sum(${computers.reqLow} > 0), 0)`,
          })
          .from(computers);
        const row = r[0] as Record<string, number> | undefined;
        return page(
          SEVERITIES.map((s) => ({
            id: `severity:${s.toLowerCase()}`,
            name: `Missing ${s.toLowerCase()} updates`,
            kind,
            count: Number(row?.[s.toLowerCase()] ?? 0),
            condition: { severity: s },
          })),
        );
      }
      case 'custom-severity': {
        const rows = await this.orm
          .select({
            id: customSeverities.id,
            name: customSeverities.name,
            n: sql<number>`(SELECT count(DISTINCT cu.computer_id) FROM computer_updates cu JOIN updates u ON u.id = cu.update_id WHERE cu.state = 'required' AND u.custom_severity_id = ${customSeverities.id})`,
          })
          .from(customSeverities)
          .orderBy(asc(customSeverities.rank), asc(customSeverities.id));
        return page(
          rows.map((r) => ({
            id: `custom-severity:${r.id}`,
            name: `Missing ${r.name} updates`,
            kind,
            count: Number(r.n),
            condition: { customSeverity: r.id },
          })),
        );
      }
      case 'os': {
        const rows = await this.orm
          .select({ os: computers.osName, n: sql<number>`count(*)` })
          .from(computers)
          .where(sql`${computers.osName} IS NOT NULL`)
          .groupBy(computers.osName)
          .orderBy(asc(computers.osName))
          .limit(limit)
          .offset(offset);
        return rows.map((r) => ({ id: `os:${r.os}`, name: `OS: ${r.os}`, kind, count: Number(r.n), condition: { os: r.os! } }));
      }
      case 'language': {
        const rows = await this.orm
          .select({ l: computers.language, n: sql<number>`count(*)` })
          .from(computers)
          .where(sql`${computers.language} IS NOT NULL`)
          .groupBy(computers.language)
          .orderBy(asc(computers.language))
          .limit(limit)
          .offset(offset);
        return rows.map((r) => ({ id: `language:${r.l}`, name: `Language: ${r.l}`, kind, count: Number(r.n), condition: { language: r.l! } }));
      }
      case 'custom': {
        const rows = await this.orm.select().from(customFilters).orderBy(asc(customFilters.name)).limit(limit).offset(offset);
        const out: FilterItem[] = [];
        for (const f of rows) {
          const condition = JSON.parse(f.condition) as Condition;
          out.push({ id: `custom:${f.id}`, name: f.name, kind, count: await this.#count(condition), condition });
        }
        return out;
      }
      case 'requires': {
        const rows = await this.orm.all<{ id: string; kb: string | null; product: string; title: string; n: number }>(
          sql`SELECT u.id, u.kb, u.product, u.title, c.required AS n FROM update_compliance c JOIN updates u ON u.id = c.update_id
              WHERE c.required > 0 ORDER BY c.required DESC, u.id LIMIT ${limit} OFFSET ${offset}`,
        );
        return rows.map((r) => ({ id: `requires:${r.id}`, name: requiresName(r), kind, count: Number(r.n), condition: { requires: r.id } }));
      }
    }
  }

  async createFilter(name: string, condition: Condition, by: string | null) {
    if (condition.requires !== undefined && !(await existingUpdates(this.orm, [condition.requires])).has(condition.requires))
      throw new AppError('validation-failed', `no update ${condition.requires}`);
    try {
      const [row] = await this.writer
        .insert(customFilters)
        .values({ name, condition: JSON.stringify(condition), createdAt: Date.now(), createdBy: by })
        .returning();
      return { id: `custom:${row!.id}`, name, kind: 'custom' as const, count: await this.#count(condition), condition };
    } catch (err) {
      if (isUniqueViolation(err)) throw new AppError('conflict', `a filter named "${name}" exists`);
      throw err;
    }
  }

  async deleteFilter(id: string): Promise<void> {
    const m = /^custom:(\d+)$/.exec(id);
    if (!m) throw new AppError('conflict', `filter ${id} is automatic; only admins' own (custom:N) filters can be deleted`);
    // A policy targeting it would silently lose those computers.
    const users = await this.writer.all<{ name: string }>(
      sql`SELECT name FROM policies WHERE targets LIKE ${`%${escapeLike(JSON.stringify(id))}%`} ESCAPE '\\' ORDER BY name LIMIT 5`,
    );
    if (users.length)
      throw new AppError('conflict', `filter ${id} is a target of policies ${users.map((u) => `"${u.name}"`).join(', ')}; change their targets first`);
    const r = await this.writer.delete(customFilters).where(eq(customFilters.id, Number(m[1])));
    if (!r.rowsAffected) throw new AppError('not-found', `no filter ${id}`);
  }

  /** Computers, by id, optionally of a filter and/or matching a search on the name. */
  async list(o: { filter?: string | undefined; search?: string | undefined; limit: number; cursor?: number | undefined }) {
    const staleBefore = await this.staleBefore();
    const conds: SQL[] = [];
    if (o.filter) conds.push(conditionSql((await this.condition(o.filter)).condition, staleBefore));
    if (o.search) conds.push(conditionSql({ name: o.search }, staleBefore));
    if (o.cursor !== undefined) conds.push(gt(computers.id, o.cursor));
    const rows = await this.orm
      .select({
        id: computers.id,
        name: computers.name,
        osName: computers.osName,
        osVersion: computers.osVersion,
        arch: computers.arch,
        language: computers.language,
        lastScanAt: computers.lastScanAt,
        required: computers.required,
        unknown: computers.unknown,
        reqCritical: computers.reqCritical,
        reqImportant: computers.reqImportant,
        reqModerate: computers.reqModerate,
        reqLow: computers.reqLow,
        reqUnrated: computers.reqUnrated,
      })
      .from(computers)
      .where(conds.length ? and(...conds) : undefined)
      .orderBy(asc(computers.id))
      .limit(o.limit + 1);
    const items = rows.slice(0, o.limit).map((r) => summaryOf(r, staleBefore));
    return { items, nextCursor: rows.length > o.limit ? String(items[items.length - 1]!.id) : null };
  }

  async get(id: number) {
    const row = await this.orm.query.computers.findFirst({ where: eq(computers.id, id) });
    if (!row) throw new AppError('not-found', `no computer ${id}`);
    const staleBefore = await this.staleBefore();
    const inv = JSON.parse(row.inventory) as Inventory;
    return {
      ...summaryOf(row, staleBefore),
      agentKey: row.agentKey,
      osFamily: row.osFamily,
      agentVersion: row.agentVersion,
      scanId: row.scanId,
      enrolledAt: new Date(row.createdAt).toISOString(),
      assessedAt: row.assessedAt ? new Date(row.assessedAt).toISOString() : null,
      inventory: {
        products: inv.products ?? null,
        kbs: inv.kbs?.length ?? null,
        files: inv.files?.length ?? null,
        registry: inv.registry?.length ?? null,
      },
    };
  }

  /** A computer's applicable updates and their states, evaluated now against the catalog. */
  async updates(id: number, state: State | 'any') {
    const row = await this.orm.query.computers.findFirst({ where: eq(computers.id, id), columns: { inventory: true } });
    if (!row) throw new AppError('not-found', `no computer ${id}`);
    const states = this.index.assess(facts(JSON.parse(row.inventory) as Inventory));
    const ids = [...states].filter(([, s]) => state === 'any' || s === state).map(([u]) => u);
    const items = [];
    for (let i = 0; i < ids.length; i += 500) {
      const part = ids.slice(i, i + 500);
      const rows = await updateSummaries(this.orm, part);
      for (const u of rows)
        items.push({
          id: u.id,
          kb: u.kb,
          title: u.title,
          product: u.product,
          classification: u.classification,
          severity: u.severity,
          customSeverity: u.customSeverityId ? { id: u.customSeverityId, name: u.customSeverityName } : null,
          releaseDate: u.releaseDate,
          state: states.get(u.id)!,
        });
    }
    items.sort((a, b) => (a.releaseDate === b.releaseDate ? a.id.localeCompare(b.id) : a.releaseDate < b.releaseDate ? 1 : -1));
    return { items };
  }
}

function requiresName(u: { kb: string | null; product: string; title: string }): string {
  return u.kb ? `Requiring KB${u.kb} (${u.product})` : `Requiring ${u.title}`;
}

function summaryOf(
  r: {
    id: number;
    name: string;
    osName: string | null;
    osVersion: string | null;
    arch: string | null;
    language: string | null;
    lastScanAt: number;
    required: number;
    unknown: number;
    reqCritical: number;
    reqImportant: number;
    reqModerate: number;
    reqLow: number;
    reqUnrated: number;
  },
  staleBefore: number,
) {
  return {
    id: r.id,
    name: r.name,
    os: r.osName,
    osVersion: r.osVersion,
    arch: r.arch,
    language: r.language,
    lastScanAt: new Date(r.lastScanAt).toISOString(),
    stale: r.lastScanAt < staleBefore,
    required: r.required,
    unknown: r.unknown,
    requiredBySeverity: { critical: r.reqCritical, important: r.reqImportant, moderate: r.reqModerate, low: r.reqLow, unrated: r.reqUnrated },
  };
}
