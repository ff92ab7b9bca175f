import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import { conditionSchema } from '../../assessment/queries.js';
import { requireRole, type AppEnv } from '../auth.js';
import type { AppDeps } from '../app.js';
import { errors, problem } from './common.js';
import { displayName } from '../../lib/text.js';

/** Computers (list, one, its updates) and filters of computers (automatic and your own). */
export function computerRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  const a = deps.assessment;

  /* ---- computers ---- */

  const page = { limit: z.coerce.number().int().min(1).max(1000).default(100) };
  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/computers',
      tags: ['computers'],
      summary: 'Computers: by filter, name search, paged by id',
      request: {
        query: z.object({
          filter: z.string().min(1).max(400).optional(),
          search: z.string().min(1).max(255).optional(),
          ...page,
          cursor: z.coerce.number().int().min(0).optional(),
        }),
      },
      responses: {
        200: {
          description: 'Computers',
          content: {
            'application/json': {
              schema: z.object({ items: z.array(z.looseObject({ id: z.number(), name: z.string() })), nextCursor: z.string().nullable() }),
            },
          },
        },
        ...errors,
      },
    }),
    async (c) => c.json(await a.computers.list(c.req.valid('query')), 200),
  );

  const idParam = z.object({ id: z.coerce.number().int().min(1) });
  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/computers/{id}',
      tags: ['computers'],
      summary: 'A computer: OS, last scan, inventory summary, required updates by severity',
      request: { params: idParam },
      responses: {
        200: { description: 'The computer', content: { 'application/json': { schema: z.looseObject({ id: z.number(), name: z.string() }) } } },
        ...errors,
      },
    }),
    async (c) => c.json(await a.computers.get(c.req.valid('param').id), 200),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/computers/{id}/updates',
      tags: ['computers'],
      summary: "A computer's applicable updates, by state (required, installed, unknown, superseded, or any)",
      request: { params: idParam, query: z.object({ state: z.enum(['installed', 'required', 'unknown', 'superseded', 'any']).default('required') }) },
      responses: {
        200: {
          description: 'Updates',
          content: {
            'application/json': {
              schema: z.object({
                items: z.array(z.looseObject({ id: z.string(), kb: z.string().nullable(), severity: z.string().nullable(), state: z.string() })),
              }),
            },
          },
        },
        ...errors,
      },
    }),
    async (c) => c.json(await a.computers.updates(c.req.valid('param').id, c.req.valid('query').state as never), 200),
  );

  /* ---- filters ---- */

  const filterItem = z
    .object({ id: z.string(), name: z.string(), kind: z.string(), count: z.number(), condition: z.record(z.string(), z.unknown()) })
    .openapi('Filter');
  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/filters',
      tags: ['filters'],
      summary: 'Filters with their counts: stale, severity, custom severity, OS, language, custom, then one per required update',
      request: {
        query: z.object({
          kind: z.enum(['stale', 'severity', 'custom-severity', 'os', 'language', 'custom', 'requires']).optional(),
          limit: z.coerce.number().int().min(1).max(1000).default(500),
          cursor: z.string().max(40).optional(),
        }),
      },
      responses: {
        200: {
          description: 'Filters',
          content: { 'application/json': { schema: z.object({ items: z.array(filterItem), nextCursor: z.string().nullable() }) } },
        },
        ...errors,
      },
    }),
    async (c) => c.json(await a.computers.filters(c.req.valid('query')), 200),
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/filters',
      tags: ['filters'],
      summary: 'Create a filter of your own: a condition over the same fields (operator)',
      middleware: [requireRole('operator')] as const,
      request: {
        body: { content: { 'application/json': { schema: z.strictObject({ name: displayName(100), condition: conditionSchema }) } }, required: true },
      },
      responses: { 201: { description: 'Created', content: { 'application/json': { schema: filterItem } } }, 409: problem, ...errors },
    }),
    async (c) => {
      const b = c.req.valid('json');
      return c.json(await a.computers.createFilter(b.name, b.condition, c.get('principal').name), 201);
    },
  );

  const filterId = z.object({ id: z.string().min(1).max(400) });
  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/filters/{id}/computers',
      tags: ['filters'],
      summary: 'The computers of a filter, paged by id',
      request: { params: filterId, query: z.object({ ...page, cursor: z.coerce.number().int().min(0).optional() }) },
      responses: {
        200: {
          description: 'Computers',
          content: {
            'application/json': {
              schema: z.object({
                filter: z.object({ id: z.string(), name: z.string() }),
                items: z.array(z.looseObject({ id: z.number() })),
                nextCursor: z.string().nullable(),
              }),
            },
          },
        },
        ...errors,
      },
    }),
    async (c) => {
      const id = c.req.valid('param').id;
      const f = await a.computers.condition(id);
      const q = c.req.valid('query');
      return c.json({ filter: { id, name: f.name }, ...(await a.computers.list({ filter: id, limit: q.limit, cursor: q.cursor })) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/api/v1/filters/{id}',
      tags: ['filters'],
      summary: 'Delete a filter of your own (operator); automatic filters cannot be deleted (409)',
      middleware: [requireRole('operator')] as const,
      request: { params: filterId },
      responses: { 204: { description: 'Deleted' }, 409: problem, ...errors },
    }),
    async (c) => {
      await a.computers.deleteFilter(c.req.valid('param').id);
      return c.body(null, 204);
    },
  );
}
