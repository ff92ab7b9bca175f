import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import { requireRole, type AppEnv } from '../auth.js';
import type { AppDeps } from '../app.js';
import { deleteById, errors } from './common.js';
import type { AuthGuard } from '../guard.js';
import { installationSchema } from '../../delivery/installation.js';
import { page } from './delivery-schemas.js';
import { agentApiRoutes } from './agent-v1.js';
import { policyRoutes } from './policies.js';

/**
 * Delivery's routes, in the order the OpenAPI document lists them: the agent API,
 * installation settings, policies, then computers' retries and agents' credentials.
 */
export function deliveryRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps, guard: AuthGuard): void {
  const d = deps.delivery;

  agentApiRoutes(app, deps, guard);

  /* ---------------- installation settings ---------------- */

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/settings/installation',
      tags: ['settings'],
      summary: "The node's installation settings: maintenance windows, restart behaviour, notification, retry ceilings (policies may override them)",
      responses: { 200: { description: 'Settings', content: { 'application/json': { schema: installationSchema } } }, ...errors },
    }),
    async (c) => c.json(await d.installation(), 200),
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/settings/installation',
      tags: ['settings'],
      summary: "Set the node's installation settings (admin); agents get them at their next check-in",
      middleware: [requireRole('admin')] as const,
      request: { body: { content: { 'application/json': { schema: installationSchema } }, required: true } },
      responses: { 200: { description: 'Settings', content: { 'application/json': { schema: installationSchema } } }, ...errors },
    }),
    async (c) => c.json(await d.setInstallation(c.req.valid('json'), c.get('principal').name), 200),
  );
  policyRoutes(app, deps);

  /* ---------------- computers: retries and credentials ---------------- */

  const computerId = z.object({ id: z.coerce.number().int().min(1) });
  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/computers/{id}/retries/clear',
      tags: ['computers'],
      summary:
        "Clear a computer's failed-download and failed-install counts (all updates, or those listed); its agent picks it up at its next check-in (operator)",
      middleware: [requireRole('operator')] as const,
      request: {
        params: computerId,
        body: {
          content: { 'application/json': { schema: z.strictObject({ updates: z.array(z.string().min(1).max(100)).min(1).max(1000).optional() }) } },
          required: false,
        },
      },
      responses: { 200: { description: 'Cleared', content: { 'application/json': { schema: z.object({ cleared: z.number() }) } } }, ...errors },
    }),
    async (c) => {
      const b = (c.req.valid('json') as { updates?: string[] } | undefined) ?? {};
      return c.json(await d.engine.clearRetries(c.req.valid('param').id, b.updates ?? null), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/computers/{id}/events',
      tags: ['computers'],
      summary: "The status events a computer's agent sent (downloads, installs, exit codes, log excerpts), newest first",
      request: { params: computerId, query: z.object({ ...page, update: z.string().min(1).max(100).optional() }) },
      responses: {
        200: {
          description: 'Events',
          content: {
            'application/json': {
              schema: z.object({ items: z.array(z.looseObject({ id: z.string(), type: z.string() })), nextCursor: z.string().nullable() }),
            },
          },
        },
        ...errors,
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      return c.json(
        await d.engine.eventsOf(c.req.valid('param').id, { update: q.update, before: q.cursor ? Number(q.cursor) : undefined, limit: q.limit }),
        200,
      );
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/api/v1/computers/{id}/agent',
      tags: ['computers'],
      summary: "Revoke the credentials of a computer's agent (admin): its next call is a 401 until it enrols again",
      middleware: [requireRole('admin')] as const,
      request: { params: computerId },
      responses: { 200: { description: 'Revoked', content: { 'application/json': { schema: z.object({ agentId: z.string() }) } } }, ...errors },
    }),
    async (c) => c.json(await d.agents.revokeComputer(c.req.valid('param').id, c.get('principal').name), 200),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/agents',
      tags: ['agents'],
      summary: 'Enrolled agents (admin): their computer, last seen, revoked',
      middleware: [requireRole('admin')] as const,
      request: { query: z.object(page) },
      responses: {
        200: {
          description: 'Agents',
          content: { 'application/json': { schema: z.object({ items: z.array(z.looseObject({ agentId: z.string() })), nextCursor: z.string().nullable() }) } },
        },
        ...errors,
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      return c.json(await d.agents.list({ after: q.cursor ?? '', limit: q.limit }), 200);
    },
  );

  deleteById(
    app,
    { path: '/api/v1/agents/{id}', tag: 'agents', summary: "Revoke an agent's credentials (admin)", role: 'admin', done: 'Revoked', id: z.string().uuid() },
    (id, by) => d.agents.revoke(id, by),
  );
}
