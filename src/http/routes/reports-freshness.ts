import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import type { AppEnv } from '../auth.js';
import type { AppDeps } from '../app.js';
import { errors } from './common.js';
import { requireRole } from '../auth.js';
import { goalsSchema } from '../../freshness/freshness.js';
import { csvResponse, format, scope, wantsCsv } from './reports-common.js';

/** Catalog freshness: its service goals (settings) and the report against them. */
export function freshnessReportRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
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
