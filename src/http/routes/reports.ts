import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import type { AppEnv } from '../auth.js';
import type { AppDeps } from '../app.js';
import { errors } from './common.js';
import { AppError } from '../../lib/errors.js';
import { reportFilterSchema } from '../../reports/reports.js';
import { DELIVERY_STATES } from '../../delivery/policy-delivery.js';
import { allPages, csvResponse, format, page, scope, wantsCsv } from './reports-common.js';
import { complianceReportRoutes } from './reports-compliance.js';
import { freshnessReportRoutes } from './reports-freshness.js';

/** The report routes, in the order the API document lists them: compliance, vulnerabilities, delivery, catalog freshness. */
export function reportRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  complianceReportRoutes(app, deps);

  const { reports } = deps.reports;

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

  freshnessReportRoutes(app, deps);
}
