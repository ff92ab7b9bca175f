import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { AppEnv } from '../auth.js';
import type { AppDeps } from '../app.js';
import { errors } from './common.js';
import { AppError } from '../../lib/errors.js';
import { requireRole } from '../auth.js';
import { goalsSchema } from '../../freshness/freshness.js';
import { reportFilterSchema } from '../../reports/reports.js';
import { DELIVERY_STATES } from '../../delivery/policy-delivery.js';
import { SEVERITY_BUCKETS as SEV } from '../../catalog/format.js';

/** One CSV field: quoted when it must be; text a spreadsheet would run as a formula is defused. */
export function csvField(v: unknown): string {
  if (v === null || v === undefined) return '';
  let s = typeof v === 'string' ? v : String(v);
  if (typeof v === 'string' && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}
export const csvLine = (values: readonly unknown[]) => `${values.map(csvField).join(',')}\r\n`;

const wantsCsv = (c: Context) => c.req.query('format') === 'csv' || (c.req.query('format') === undefined && /\btext\/csv\b/.test(c.req.header('accept') ?? ''));

/**
 * A CSV download: the header row, then every page `next` yields, streamed (the
 * report is never held whole in memory).
 */
function csvResponse(name: string, header: readonly string[], pages: () => AsyncGenerator<unknown[][]>): Response {
  const enc = new TextEncoder();
  const it = pages();
  let started = false;
  const body = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      if (!started) {
        started = true;
        ctl.enqueue(enc.encode(csvLine(header)));
        return;
      }
      const { value, done } = await it.next();
      if (done) return ctl.close();
      ctl.enqueue(enc.encode(value.map(csvLine).join('')));
    },
    async cancel() {
      await it.return(undefined);
    },
  });
  return new Response(body, { headers: { 'content-type': 'text/csv; charset=utf-8', 'content-disposition': `attachment; filename="${name}.csv"` } });
}

/** Every page of a keyset-paged report. */
async function* allPages<T>(
  fetchPage: (cursor: string | undefined) => Promise<{ items: T[]; nextCursor: string | null }>,
  row: (item: T) => unknown[],
): AsyncGenerator<unknown[][]> {
  let cursor: string | undefined;
  for (;;) {
    const p = await fetchPage(cursor);
    if (p.items.length) yield p.items.map(row);
    if (!p.nextCursor) return;
    cursor = p.nextCursor;
  }
}

const page = { limit: z.coerce.number().int().min(1).max(1000).default(100), cursor: z.string().max(500).optional() };
const format = { format: z.enum(['json', 'csv']).optional().describe('csv (or Accept: text/csv): every row, streamed') };
const scope = {
  scope: z
    .enum(['node', 'tree'])
    .default('node')
    .describe("tree: this node and every node below it (the roll-up), with a per-node breakdown and each node's freshness"),
};
const FILTER_KEYS = Object.keys(reportFilterSchema.shape);

export function reportRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  const { reports, trend } = deps.reports;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/reports/compliance/trend',
      tags: ['reports'],
      summary: "The compliance summary of each of the last days (one snapshot a day, the day's last), oldest first",
      request: { query: z.object({ days: z.coerce.number().int().min(1).max(400).default(90) }) },
      responses: {
        200: {
          description: 'The trend',
          content: { 'application/json': { schema: z.object({ days: z.array(z.object({ day: z.string(), takenAt: z.string(), summary: z.unknown() })) }) } },
        },
        ...errors,
      },
    }),
    async (c) => c.json({ days: await trend.list(c.req.valid('query').days) }, 200),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/reports/compliance',
      tags: ['reports'],
      summary:
        'Compliance: summary (computers, compliant %, required updates by severity, urgent, stale), and per update or per computer (view=updates|computers)',
      request: { query: reportFilterSchema.extend({ view: z.enum(['summary', 'updates', 'computers']).default('summary'), ...page, ...format, ...scope }) },
      responses: {
        200: {
          description: 'The report (text/csv with format=csv)',
          content: {
            'application/json': {
              schema: z.object({
                summary: z.looseObject({ computers: z.number(), compliantPercent: z.number(), requiredBySeverity: z.record(z.string(), z.number()) }),
                items: z.array(z.looseObject({})).optional(),
                nextCursor: z.string().nullable().optional(),
                nodes: z
                  .array(z.looseObject({ id: z.string(), name: z.string(), summary: z.looseObject({}), reportedAt: z.string(), stale: z.boolean() }))
                  .optional(),
              }),
            },
            'text/csv': { schema: z.string() },
          },
        },
        ...errors,
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      if (q.scope === 'tree') {
        const given = FILTER_KEYS.filter((k) => q[k as keyof typeof q] !== undefined);
        if (given.length || q.view === 'computers')
          throw new AppError(
            'validation-failed',
            `scope=tree is the rolled-up summary of every node: it takes no ${given.length ? `filters (${given.join(', ')})` : `view=${q.view}`}; ask a node itself for those`,
          );
        if (q.view === 'updates') {
          if (wantsCsv(c))
            return csvResponse(
              'compliance-tree-updates',
              [
                'update',
                'kb',
                'title',
                'product',
                'severity',
                'classification',
                'released',
                'applicable',
                'installed',
                'superseded',
                'required',
                'unknown',
                'compliant_percent',
                'nodes_requiring',
              ],
              () =>
                allPages(
                  (cursor) => deps.rollup.treeUpdates({ limit: 1000, cursor }),
                  (u) => [
                    u.id,
                    u.kb,
                    u.title,
                    u.product,
                    u.severity,
                    u.classification,
                    u.releaseDate,
                    u.applicable,
                    u.installed,
                    u.superseded,
                    u.required,
                    u.unknown,
                    u.compliantPercent,
                    u.nodesRequiring,
                  ],
                ),
            );
          return c.json({ summary: (await deps.rollup.tree()).summary, ...(await deps.rollup.treeUpdates(q)) }, 200);
        }
        const tree = await deps.rollup.tree();
        if (wantsCsv(c))
          return csvResponse(
            'compliance-tree',
            [
              'node',
              'name',
              'parent',
              'reported_at',
              'stale',
              'computers',
              'compliant',
              'compliant_percent',
              'required',
              ...SEV.map((x) => `required_${x.toLowerCase()}`),
              'urgent_computers',
              'stale_scans',
            ],
            async function* () {
              yield tree.nodes.map((n) => [
                n.id,
                n.name,
                n.parentId,
                n.reportedAt,
                n.stale,
                n.summary.computers,
                n.summary.compliant,
                n.summary.compliantPercent,
                n.summary.required,
                ...SEV.map((x) => n.summary.requiredBySeverity[x] ?? 0),
                n.summary.urgentComputers,
                n.summary.stale,
              ]);
            },
          );
        return c.json(tree, 200);
      }
      if (wantsCsv(c)) {
        if (q.view === 'updates')
          return csvResponse(
            'compliance-updates',
            [
              'update',
              'kb',
              'title',
              'product',
              'severity',
              'classification',
              'released',
              'applicable',
              'installed',
              'superseded',
              'required',
              'unknown',
              'compliant_percent',
            ],
            () =>
              allPages(
                (cursor) => reports.byUpdate(q, { limit: 1000, cursor }),
                (u) => [
                  u.id,
                  u.kb,
                  u.title,
                  u.product,
                  u.severity,
                  u.classification,
                  u.releaseDate,
                  u.applicable,
                  u.installed,
                  u.superseded,
                  u.required,
                  u.unknown,
                  u.compliantPercent,
                ],
              ),
          );
        if (q.view === 'computers')
          return csvResponse(
            'compliance-computers',
            ['computer', 'name', 'os', 'language', 'required', ...SEV.map((s) => `required_${s.toLowerCase()}`), 'urgent', 'unknown', 'last_scan', 'stale'],
            () =>
              allPages(
                (cursor) => reports.byComputer(q, { limit: 1000, cursor }),
                (m) => [m.id, m.name, m.os, m.language, m.required, ...SEV.map((s) => m.requiredBySeverity[s]), m.urgent, m.unknown, m.lastScanAt, m.stale],
              ),
          );
        const s = await reports.summary(q);
        return csvResponse(
          'compliance-summary',
          ['computers', 'compliant', 'compliant_percent', 'required', ...SEV.map((x) => `required_${x.toLowerCase()}`), 'urgent_computers', 'stale'],
          async function* () {
            yield [[s.computers, s.compliant, s.compliantPercent, s.required, ...SEV.map((x) => s.requiredBySeverity[x]), s.urgentComputers, s.stale]];
          },
        );
      }
      const summary = await reports.summary(q);
      if (q.view === 'updates') return c.json({ summary, ...(await reports.byUpdate(q, q)) }, 200);
      if (q.view === 'computers') return c.json({ summary, ...(await reports.byComputer(q, q)) }, 200);
      return c.json({ summary }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/reports/vulnerabilities',
      tags: ['reports'],
      summary: 'Per CVE: severity, exploited (where the feed says), affected computers, fixing updates and their deployment',
      request: { query: reportFilterSchema.extend({ ...page, ...format }) },
      responses: {
        200: {
          description: 'The report',
          content: {
            'application/json': { schema: z.object({ items: z.array(z.looseObject({ cve: z.string() })), nextCursor: z.string().nullable() }) },
            'text/csv': { schema: z.string() },
          },
        },
        ...errors,
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      if (wantsCsv(c))
        return csvResponse(
          'vulnerabilities',
          ['cve', 'severity', 'exploited', 'affected_computers', 'fixing_updates', 'fixing_kbs', 'in_policies', 'installed_by_policies'],
          () =>
            allPages(
              (cursor) => reports.vulnerabilities(q, { limit: 500, cursor }),
              (v) => [
                v.cve,
                v.severity,
                v.exploited,
                v.affectedComputers,
                v.fixes.map((f) => f.updateId).join(' '),
                v.fixes.map((f) => f.kb ?? '').join(' '),
                v.fixes.reduce((a, f) => a + f.policies, 0),
                v.fixes.reduce((a, f) => a + f.installed, 0),
              ],
            ),
        );
      return c.json(await reports.vulnerabilities(q, q), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/reports/delivery',
      tags: ['reports'],
      summary:
        'Software update delivery details of a policy: per computer and update (targeted = not started, downloading, installing, installed, failed, pending reboot, ceiling reached, not applicable), with totals',
      request: {
        query: z.object({
          policy: z.string().min(1).max(100),
          state: z.enum(DELIVERY_STATES).optional(),
          computer: z.coerce.number().int().min(1).optional(),
          ...page,
          ...format,
          ...scope,
        }),
      },
      responses: {
        200: {
          description: 'The report (scope=tree: totals and nodes instead of items)',
          content: {
            'application/json': {
              schema: z.object({
                policy: z.looseObject({ id: z.string(), name: z.string() }),
                totals: z.record(z.string(), z.number()),
                items: z.array(z.looseObject({})).optional(),
                nextCursor: z.string().nullable().optional(),
                nodes: z.array(z.looseObject({ id: z.string(), totals: z.record(z.string(), z.number()), stale: z.boolean() })).optional(),
              }),
            },
            'text/csv': { schema: z.string() },
          },
        },
        ...errors,
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      const p = deps.delivery.policies;
      const policy = await p.get(q.policy);
      if (q.scope === 'tree') {
        if (q.state || q.computer !== undefined)
          throw new AppError('validation-failed', 'scope=tree gives totals per node: it takes no state or computer; ask a node itself for its rows');
        const tree = await deps.rollup.delivery(policy.id, policy.delivery);
        if (wantsCsv(c))
          return csvResponse(`delivery-tree-${policy.id}`, ['node', 'name', 'reported_at', 'stale', 'computers', ...DELIVERY_STATES], async function* () {
            yield tree.nodes.map((n) => [n.id, n.name, n.reportedAt, n.stale, n.totals.computers ?? 0, ...DELIVERY_STATES.map((s) => n.totals[s] ?? 0)]);
          });
        return c.json({ policy: { id: policy.id, name: policy.name, origin: policy.origin, originName: policy.originName }, ...tree }, 200);
      }
      const fetchPage = (cursor: string | undefined, limit: number) =>
        p.deliveryOf(q.policy, { state: q.state, computer: q.computer, after: cursor ?? '', limit });
      if (wantsCsv(c))
        return csvResponse(
          `delivery-${policy.id}`,
          ['computer', 'name', 'update', 'kb', 'state', 'download_failures', 'install_failures', 'last_exit_code', 'last_error', 'targeted_at', 'updated_at'],
          () =>
            allPages(
              (cursor) => fetchPage(cursor, 1000),
              (i) => [
                i.computerId,
                i.computer,
                i.updateId,
                i.kb,
                i.state,
                i.attempts.download,
                i.attempts.install,
                i.lastExitCode,
                i.lastError,
                i.targetedAt,
                i.updatedAt,
              ],
            ),
        );
      return c.json({ policy: { id: policy.id, name: policy.name }, ...(await fetchPage(q.cursor, q.limit)) }, 200);
    },
  );

  /* ---------------- catalog freshness ---------------- */

  const goals = goalsSchema.openapi('FreshnessGoals');
  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/settings/freshness',
      tags: ['settings'],
      summary: "Catalog service goals: hours from a release's publication, per language class (neutral + English, other languages, product families)",
      responses: { 200: { description: 'Goals', content: { 'application/json': { schema: goals } } }, ...errors },
    }),
    async (c) => c.json(await deps.freshness.goals(), 200),
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/settings/freshness',
      tags: ['settings'],
      summary: 'Set the catalog service goals (admin, at the root: they replicate down; 409 below it)',
      middleware: [requireRole('admin')] as const,
      request: { body: { content: { 'application/json': { schema: goals } }, required: true } },
      responses: { 200: { description: 'Goals', content: { 'application/json': { schema: goals } } }, ...errors },
    }),
    async (c) => c.json(await deps.freshness.setGoals(c.req.valid('json'), c.get('principal').name), 200),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/reports/freshness',
      tags: ['reports'],
      summary:
        'Catalog freshness: per release (newest first), per node, per language class: reached at, files verified at, the goal, and how late (hours; 0 = within the goal)',
      request: { query: z.object({ ...scope, ...format }) },
      responses: {
        200: {
          description: 'The report (text/csv with format=csv: one row per release, node and class)',
          content: {
            'application/json': {
              schema: z.object({
                goals: z.looseObject({}),
                releases: z.array(
                  z.object({
                    version: z.string(),
                    publishedAt: z.string(),
                    importedAt: z.string(),
                    nodes: z.array(
                      z.looseObject({
                        id: z.string(),
                        name: z.string(),
                        classes: z.array(
                          z.looseObject({
                            class: z.string(),
                            reachedAt: z.string().nullable(),
                            filesVerifiedAt: z.string().nullable(),
                            goalHours: z.number(),
                            late: z.number(),
                          }),
                        ),
                      }),
                    ),
                  }),
                ),
              }),
            },
            'text/csv': { schema: z.string() },
          },
        },
        ...errors,
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      const rep = await deps.freshness.report(q.scope);
      if (wantsCsv(c))
        return csvResponse(
          'freshness',
          [
            'release',
            'published_at',
            'node',
            'name',
            'stale',
            'class',
            'goal_hours',
            'reached_at',
            'files_verified_at',
            'status',
            'late_hours',
            'missing_updates',
            'missing_files',
          ],
          async function* () {
            for (const r of rep.releases)
              yield r.nodes.flatMap((n) =>
                n.classes.map((k) => [
                  r.version,
                  r.publishedAt,
                  n.id,
                  n.name,
                  n.stale,
                  k.class,
                  k.goalHours,
                  k.reachedAt,
                  k.filesVerifiedAt,
                  k.status,
                  k.late,
                  k.missing.updates,
                  k.missing.files,
                ]),
              );
          },
        );
      return c.json(rep, 200);
    },
  );
}
