import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import type { AppEnv } from '../auth.js';
import type { AppDeps } from '../app.js';
import { errors } from './common.js';
import { AppError } from '../../lib/errors.js';
import { reportFilterSchema, type updateItem } from '../../reports/reports.js';
import { SEVERITY_BUCKETS as SEV } from '../../catalog/format.js';
import { allPages, csvResponse, format, page, scope, wantsCsv } from './reports-common.js';

/** The CSV columns of a per-update row (the tree's adds nodes_requiring). */
const UPDATE_COLUMNS = [
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
];
const updateCells = (u: ReturnType<typeof updateItem>) => [
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
];

const FILTER_KEYS = Object.keys(reportFilterSchema.shape);

/** The compliance report (this node's, or the tree's roll-up) and its daily trend. */
export function complianceReportRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
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
            return csvResponse('compliance-tree-updates', [...UPDATE_COLUMNS, 'nodes_requiring'], () =>
              allPages(
                (cursor) => deps.rollup.treeUpdates({ limit: 1000, cursor }),
                (u) => [...updateCells(u), u.nodesRequiring],
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
          return csvResponse('compliance-updates', UPDATE_COLUMNS, () => allPages((cursor) => reports.byUpdate(q, { limit: 1000, cursor }), updateCells));
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
}
