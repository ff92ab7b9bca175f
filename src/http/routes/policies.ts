import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import { requireRole, type AppEnv } from '../auth.js';
import type { AppDeps } from '../app.js';
import { errors, problem } from './common.js';
import { page } from './delivery-schemas.js';
import { policyCreateSchema, policyPatchSchema } from '../../delivery/policy-schemas.js';
import { DELIVERY_STATES } from '../../delivery/policy-delivery.js';

const policyView = z.looseObject({ id: z.string(), name: z.string(), enabled: z.boolean(), updates: z.array(z.string()) }).openapi('Policy');
const historyItem = z.object({ id: z.number(), at: z.string(), by: z.string().nullable(), action: z.string(), detail: z.unknown() });

/** The admin API of software update policies: create, list, read, change, delete, history, delivery. */
export function policyRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  const d = deps.delivery;

  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/policies',
      tags: ['policies'],
      summary:
        'Create a software update policy (operator): updates (or every required update of a filter and severity), targets, start, deadline, installation settings',
      middleware: [requireRole('operator')] as const,
      request: { body: { content: { 'application/json': { schema: policyCreateSchema } }, required: true } },
      responses: { 201: { description: 'Created', content: { 'application/json': { schema: policyView } } }, 409: problem, ...errors },
    }),
    async (c) => c.json(await d.policies.create(c.req.valid('json'), c.get('principal').name), 201),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/policies',
      tags: ['policies'],
      summary: 'Policies by name, with their update counts and delivery totals',
      request: { query: z.object(page) },
      responses: {
        200: {
          description: 'Policies',
          content: {
            'application/json': {
              schema: z.object({ items: z.array(z.looseObject({ id: z.string(), name: z.string() })), nextCursor: z.string().nullable() }),
            },
          },
        },
        ...errors,
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      return c.json(await d.policies.list({ after: q.cursor ?? '', limit: q.limit }), 200);
    },
  );

  const idParam = z.object({ id: z.string().min(1).max(100) });
  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/policies/{id}',
      tags: ['policies'],
      summary: 'A policy, its updates and its delivery totals',
      request: { params: idParam },
      responses: { 200: { description: 'The policy', content: { 'application/json': { schema: policyView } } }, ...errors },
    }),
    async (c) => c.json(await d.policies.get(c.req.valid('param').id), 200),
  );

  app.openapi(
    createRoute({
      method: 'patch',
      path: '/api/v1/policies/{id}',
      tags: ['policies'],
      summary: 'Change a policy (operator): any field; updates replaced, or added and removed; recorded in its history',
      middleware: [requireRole('operator')] as const,
      request: { params: idParam, body: { content: { 'application/json': { schema: policyPatchSchema } }, required: true } },
      responses: { 200: { description: 'The policy', content: { 'application/json': { schema: policyView } } }, 409: problem, ...errors },
    }),
    async (c) => c.json(await d.policies.update(c.req.valid('param').id, c.req.valid('json'), c.get('principal').name), 200),
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/api/v1/policies/{id}',
      tags: ['policies'],
      summary: 'Delete a policy (operator); agents stop getting its updates at their next check-in; its history stays',
      middleware: [requireRole('operator')] as const,
      request: { params: idParam },
      responses: { 204: { description: 'Deleted' }, ...errors },
    }),
    async (c) => {
      await d.policies.remove(c.req.valid('param').id, c.get('principal').name);
      return c.body(null, 204);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/policies/{id}/history',
      tags: ['policies'],
      summary: 'Every change of a policy: created, updated (from/to per field), updates added for supersedence, deleted',
      request: { params: idParam, query: z.object(page) },
      responses: {
        200: {
          description: 'History',
          content: { 'application/json': { schema: z.object({ items: z.array(historyItem), nextCursor: z.string().nullable() }) } },
        },
        ...errors,
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      return c.json(await d.policies.history(c.req.valid('param').id, { after: Number(q.cursor ?? 0) || 0, limit: q.limit }), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/policies/{id}/delivery',
      tags: ['policies'],
      summary:
        "A policy's delivery per computer and update (targeted, downloading, installing, installed, failed, pending reboot, ceiling reached, not applicable), with totals",
      request: {
        params: idParam,
        query: z.object({ ...page, state: z.enum(DELIVERY_STATES).optional(), computer: z.coerce.number().int().min(1).optional() }),
      },
      responses: {
        200: {
          description: 'Delivery',
          content: {
            'application/json': {
              schema: z.object({
                totals: z.record(z.string(), z.number()),
                items: z.array(z.looseObject({ computerId: z.number(), updateId: z.string(), state: z.string() })),
                nextCursor: z.string().nullable(),
              }),
            },
          },
        },
        ...errors,
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      return c.json(await d.policies.deliveryOf(c.req.valid('param').id, { state: q.state, computer: q.computer, after: q.cursor ?? '', limit: q.limit }), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/policies/{id}/installs',
      tags: ['policies'],
      summary:
        "A policy's installs over time: per UTC day, installs that succeeded and failed on its computers (from the agents' events; days without any are left out)",
      request: { params: idParam, query: z.object({ days: z.coerce.number().int().min(1).max(400).default(30) }) },
      responses: {
        200: {
          description: 'Per day',
          content: { 'application/json': { schema: z.object({ days: z.array(z.object({ day: z.string(), installed: z.number(), failed: z.number() })) }) } },
        },
        ...errors,
      },
    }),
    async (c) => c.json(await d.policies.installsByDay(c.req.valid('param').id, c.req.valid('query').days), 200),
  );
}
