import { and, asc, desc, eq, inArray, lt, sql, type SQL } from 'drizzle-orm';
import { escapeLike, type Orm } from '../db/index.js';
import { AppError } from '../lib/errors.js';
import type { Installer } from '../delivery/installers.js';
import { catalogReleases, customSeverities, updateCves, updateFiles, updates, updateSupersedes } from './schema.js';

/**
 * Catalog reads: the browse list with keyset pagination, one update with its
 * files, rules and supersedence chain, the import history, custom severities.
 */

export interface UpdateFilter {
  kb?: string;
  severity?: string[];
  customSeverity?: number[];
  vendor?: string;
  product?: string;
  classification?: string;
  language?: string;
  cve?: string;
  releasedSince?: string;
  releasedBefore?: string;
  superseded?: boolean;
  expired?: boolean | 'any';
  q?: string;
  limit: number;
  cursor?: string;
}

type Cursor = [releaseDate: string, id: string];

export function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify(c)).toString('base64url');
}

export function decodeCursor(s: string): Cursor {
  try {
    const v: unknown = JSON.parse(Buffer.from(s, 'base64url').toString());
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && typeof v[1] === 'string') return [v[0], v[1]];
  } catch {
    /* fall through */
  }
  throw new AppError('bad-request', 'the cursor is not one this API returned');
}

/**
 * An update is superseded when the vendor says so, or a live update of the same
 * product lists its KB. Nested EXISTS on purpose: it makes SQLite start from the
 * KB index (a handful of rows); a join let it start from the product index,
 * thousands of rows for every update listed.
 */
const supersededSql = sql`(${updates.vendorSuperseded} = 1 OR EXISTS (SELECT 1 FROM ${updateSupersedes} s WHERE s.kb = ${updates.kb}
  AND EXISTS (SELECT 1 FROM updates u2 WHERE u2.id = s.update_id AND u2.product = ${updates.product} AND u2.expired = 0)))`;

const listColumns = {
  id: updates.id,
  revision: updates.revision,
  kb: updates.kb,
  bulletin: updates.bulletin,
  title: updates.title,
  vendor: updates.vendor,
  productFamily: updates.productFamily,
  product: updates.product,
  classification: updates.classification,
  severity: updates.severity,
  customSeverityId: updates.customSeverityId,
  customSeverityName: customSeverities.name,
  cves: updates.cves,
  releaseDate: updates.releaseDate,
  supersedes: updates.supersedes,
  superseded: sql<number>`${supersededSql}`.as('superseded'),
  restart: updates.restart,
  languages: updates.languages,
  expired: updates.expired,
  releaseVersion: updates.releaseVersion,
};

type ListRow = {
  [K in keyof typeof listColumns]: unknown;
};

function toItem(r: ListRow) {
  return {
    id: r.id as string,
    revision: r.revision as number,
    kb: r.kb as string | null,
    bulletin: r.bulletin as string | null,
    title: r.title as string,
    vendor: r.vendor as string,
    productFamily: r.productFamily as string | null,
    product: r.product as string,
    classification: r.classification as string,
    severity: r.severity as string | null,
    customSeverity: r.customSeverityId ? { id: r.customSeverityId as number, name: r.customSeverityName as string } : null,
    cves: JSON.parse(r.cves as string) as string[],
    releaseDate: r.releaseDate as string,
    supersedes: JSON.parse(r.supersedes as string) as string[],
    superseded: Boolean(r.superseded),
    restart: r.restart as string,
    languages: (r.languages as string) ? (r.languages as string).split(',') : [],
    expired: Boolean(r.expired),
    releaseVersion: r.releaseVersion as string,
  };
}
export type UpdateItem = ReturnType<typeof toItem>;

export async function listUpdates(orm: Orm, f: UpdateFilter): Promise<{ items: UpdateItem[]; nextCursor: string | null }> {
  const conds: (SQL | undefined)[] = [];
  if (f.kb) conds.push(eq(updates.kb, f.kb));
  if (f.severity?.length) conds.push(inArray(updates.severity, f.severity));
  if (f.customSeverity?.length) conds.push(inArray(updates.customSeverityId, f.customSeverity));
  if (f.vendor) conds.push(eq(updates.vendor, f.vendor));
  if (f.product) conds.push(eq(updates.product, f.product));
  if (f.classification) conds.push(eq(updates.classification, f.classification));
  if (f.language) {
    // `de` matches files in `de` and in any `de-*` culture.
    conds.push(sql`(',' || ${updates.languages} || ',' LIKE ${`%,${f.language},%`} OR ',' || ${updates.languages} || ',' LIKE ${`%,${f.language}-%`})`);
  }
  if (f.cve) conds.push(sql`${updates.id} IN (SELECT update_id FROM ${updateCves} WHERE cve = ${f.cve})`);
  if (f.releasedSince) conds.push(sql`${updates.releaseDate} >= ${f.releasedSince}`);
  if (f.releasedBefore) conds.push(sql`${updates.releaseDate} < ${f.releasedBefore}`);
  if (f.superseded !== undefined) conds.push(f.superseded ? supersededSql : sql`NOT ${supersededSql}`);
  if (f.expired !== 'any') conds.push(eq(updates.expired, f.expired ? 1 : 0));
  if (f.q) {
    const like = `%${escapeLike(f.q)}%`;
    conds.push(
      sql`(${updates.title} LIKE ${like} ESCAPE '\\' OR ${updates.kb} LIKE ${like} ESCAPE '\\' OR ${updates.product} LIKE ${like} ESCAPE '\\' OR ${updates.cves} LIKE ${like} ESCAPE '\\')`,
    );
  }
  if (f.cursor) {
    const [date, id] = decodeCursor(f.cursor);
    // Keyset on (release_date, id) descending: a row-value comparison, so SQLite
    // walks the (release_date, id) index from the cursor and evaluates the
    // per-row subqueries for the page's rows only.
    conds.push(sql`(${updates.releaseDate}, ${updates.id}) < (${date}, ${id})`);
  }
  const rows = await orm
    .select(listColumns)
    .from(updates)
    .leftJoin(customSeverities, eq(customSeverities.id, updates.customSeverityId))
    .where(and(...conds))
    .orderBy(desc(updates.releaseDate), desc(updates.id))
    .limit(f.limit + 1);
  const items = rows.slice(0, f.limit).map(toItem);
  const last = items[items.length - 1];
  return { items, nextCursor: rows.length > f.limit && last ? encodeCursor([last.releaseDate, last.id]) : null };
}

export async function getUpdate(orm: Orm, id: string) {
  const rows = await orm
    .select({
      ...listColumns,
      description: updates.description,
      cveDetails: updates.cveDetails,
      successCodes: updates.successCodes,
      rebootCodes: updates.rebootCodes,
      applicability: updates.applicability,
      installed: updates.installed,
      moreInfoUrl: updates.moreInfoUrl,
      firstVersion: updates.firstVersion,
    })
    .from(updates)
    .leftJoin(customSeverities, eq(customSeverities.id, updates.customSeverityId))
    .where(eq(updates.id, id))
    .limit(1);
  const r = rows[0];
  if (!r) throw new AppError('not-found', `no update ${id}`);
  const files = await orm
    .select({
      name: updateFiles.name,
      url: updateFiles.url,
      size: updateFiles.size,
      sha256: updateFiles.sha256,
      language: updateFiles.language,
      installer: updateFiles.installer,
    })
    .from(updateFiles)
    .where(eq(updateFiles.updateId, id))
    .orderBy(asc(updateFiles.position));
  const item = toItem(r);
  const brief = { id: updates.id, kb: updates.kb, title: updates.title, product: updates.product, expired: updates.expired };
  // Down the chain: the updates of the same product whose KB this one lists.
  const older = item.supersedes.length
    ? await orm
        .select(brief)
        .from(updates)
        .where(and(inArray(updates.kb, item.supersedes), eq(updates.product, item.product)))
    : [];
  // Up the chain: the updates of the same product that list this one's KB.
  const newer = item.kb
    ? await orm
        .select(brief)
        .from(updateSupersedes)
        .innerJoin(updates, eq(updates.id, updateSupersedes.updateId))
        .where(and(eq(updateSupersedes.kb, item.kb), eq(updates.product, item.product)))
    : [];
  const known = new Set(older.map((o) => o.kb));
  return {
    ...item,
    description: r.description as string | null,
    cveDetails: JSON.parse(r.cveDetails as string) as unknown[],
    install: { successCodes: JSON.parse(r.successCodes as string) as number[], rebootCodes: JSON.parse(r.rebootCodes as string) as number[] },
    applicability: JSON.parse(r.applicability as string) as unknown,
    installedRule: JSON.parse(r.installed as string) as unknown,
    moreInfoUrl: r.moreInfoUrl as string | null,
    firstVersion: r.firstVersion as string,
    files: files.map((f) => ({ ...f, installer: f.installer ? (JSON.parse(f.installer) as Installer) : null })),
    supersedence: {
      supersedes: [
        ...older.map((o) => ({ ...o, expired: Boolean(o.expired), inCatalog: true })),
        ...item.supersedes.filter((kb) => !known.has(kb)).map((kb) => ({ id: null, kb, title: null, product: item.product, expired: false, inCatalog: false })),
      ],
      supersededBy: newer.map((o) => ({ ...o, expired: Boolean(o.expired), inCatalog: true })),
    },
  };
}

export async function listImports(orm: Orm, limit: number, before?: number) {
  const rows = await orm
    .select()
    .from(catalogReleases)
    .where(before ? lt(catalogReleases.id, before) : undefined)
    .orderBy(desc(catalogReleases.id))
    .limit(limit + 1);
  const items = rows.slice(0, limit).map((r) => ({
    id: r.id,
    version: r.version,
    publisher: r.publisher,
    keyId: r.keyId,
    fileSha256: r.fileSha256,
    createdAt: r.createdAt,
    importedAt: new Date(r.importedAt).toISOString(),
    importedBy: r.importedBy,
    source: r.source,
    updates: r.updates,
    added: r.added,
    changed: r.changed,
    expired: r.expired,
    unchanged: r.unchanged,
    durationMs: r.durationMs,
  }));
  const last = items[items.length - 1];
  return { items, nextCursor: rows.length > limit && last ? String(last.id) : null };
}

export async function catalogCounts(orm: Orm): Promise<{ live: number; expired: number }> {
  // Both counts read an index, not the table: every /metrics scrape asks (a GROUP BY
  // expired scanned every row: 5 ms for 20,000 updates, a scrape's largest cost).
  const [all] = await orm.select({ n: sql<number>`count(*)` }).from(updates);
  const [gone] = await orm.select({ n: sql<number>`count(*)` }).from(updates).where(sql`${updates.expired} = 1`); // a literal: the partial index's own term
  const expired = Number(gone?.n ?? 0);
  return { live: Number(all?.n ?? 0) - expired, expired };
}

/** Replicated updates are read-only here (`nodeId` is this node's): 409 naming the node they come from. */
export async function refuseReplicated(orm: Orm, nodeId: string, ids: string[]): Promise<void> {
  const rows = await orm.select({ id: updates.id, origin: updates.origin }).from(updates).where(inArray(updates.id, ids));
  const foreign = rows.find((r) => r.origin !== '' && r.origin !== nodeId);
  if (foreign)
    throw new AppError('conflict', `update ${foreign.id} is replicated from node ${foreign.origin} and is read-only here; change it at its origin`, {
      origin: foreign.origin,
    });
}
