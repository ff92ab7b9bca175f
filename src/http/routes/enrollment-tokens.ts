import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import { requireRole, type AppEnv } from '../auth.js';
import type { AppDeps } from '../app.js';
import { deleteById, errors } from './common.js';
import { displayName } from '../../lib/text.js';
import { pinnedToken } from '../../tls/pin.js';

/** Enrolment tokens for agents (admin): create (shown once), list, revoke. */
export function enrollmentTokenRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  const a = deps.assessment;

  const tokenItem = z.object({ id: z.string(), name: z.string(), expiresAt: z.string(), maxUses: z.number().nullable() });
  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/agents/enrollment-tokens',
      tags: ['agents'],
      summary: 'Create an enrolment token for agents (admin); shown once',
      middleware: [requireRole('admin')] as const,
      request: {
        body: {
          content: {
            'application/json': {
              schema: z.strictObject({
                name: displayName(100).default('enrolment'),
                expiresInHours: z
                  .number()
                  .int()
                  .min(1)
                  .max(24 * 365)
                  .default(24 * 7),
                maxUses: z.number().int().min(1).nullable().default(null).describe('How many computers it may enrol; null for no limit'),
              }),
            },
          },
          required: false,
        },
      },
      responses: { 201: { description: 'Created', content: { 'application/json': { schema: tokenItem.extend({ token: z.string() }) } } }, ...errors },
    }),
    async (c) => {
      const b = c.req.valid('json') ?? {};
      const made = await a.enrollment.create(
        { name: b.name ?? 'enrolment', expiresInHours: b.expiresInHours ?? 24 * 7, maxUses: b.maxUses ?? null },
        c.get('principal').name,
      );
      // The token carries the SHA-256 of this node's CA: an agent given it trusts exactly that CA.
      return c.json({ ...made, token: pinnedToken(made.token, deps.tls.pin) }, 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/agents/enrollment-tokens',
      tags: ['agents'],
      summary: 'Enrolment tokens (admin): expiry, uses, revoked',
      middleware: [requireRole('admin')] as const,
      responses: {
        200: {
          description: 'Tokens',
          content: { 'application/json': { schema: z.object({ items: z.array(tokenItem.extend({ uses: z.number(), usable: z.boolean() }).passthrough()) }) } },
        },
        ...errors,
      },
    }),
    async (c) => c.json({ items: await a.enrollment.list() }, 200),
  );

  deleteById(
    app,
    { path: '/api/v1/agents/enrollment-tokens/{id}', tag: 'agents', summary: 'Revoke an enrolment token (admin)', role: 'admin', done: 'Revoked' },
    (id) => a.enrollment.revoke(id),
  );
}
