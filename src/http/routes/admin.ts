import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import { ROLES } from '../../auth/tokens.js';
import { requireRole, type AppEnv } from '../auth.js';
import type { AppDeps } from '../app.js';
import { deleteById, errors, problem } from './common.js';
import { displayName } from '../../lib/text.js';

const storage = z.object({ path: z.string(), writable: z.boolean(), freeBytes: z.number(), totalBytes: z.number() }).openapi('StorageSetting');

export function adminRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  app.openapi(
    createRoute({
      method: 'post',
      path: '/api/v1/tokens',
      tags: ['tokens'],
      summary: 'Create an API token with a role (admin); the token is shown only in this answer',
      middleware: [requireRole('admin')] as const,
      request: { body: { content: { 'application/json': { schema: z.strictObject({ name: displayName(100), role: z.enum(ROLES) }) } }, required: true } },
      responses: {
        201: {
          description: 'Created',
          content: {
            'application/json': { schema: z.object({ id: z.string(), name: z.string(), role: z.enum(ROLES), token: z.string(), createdAt: z.string() }) },
          },
        },
        ...errors,
      },
    }),
    async (c) => {
      const b = c.req.valid('json');
      return c.json(await deps.tokens.create(b.name, b.role, c.get('principal').name), 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/tokens',
      tags: ['tokens'],
      summary: 'List API tokens (admin); secrets are never shown again',
      middleware: [requireRole('admin')] as const,
      responses: {
        200: {
          description: 'Tokens',
          content: { 'application/json': { schema: z.object({ items: z.array(z.looseObject({ id: z.string(), name: z.string(), role: z.string() })) }) } },
        },
        ...errors,
      },
    }),
    async (c) => c.json({ items: await deps.tokens.list() }, 200),
  );

  deleteById(
    app,
    {
      path: '/api/v1/tokens/{id}',
      tag: 'tokens',
      summary: 'Revoke an API token (admin); it stops working at once',
      role: 'admin',
      done: 'Revoked',
      conflict: true,
    },
    (id) => deps.tokens.revoke(id),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/settings/storage',
      tags: ['settings'],
      summary: 'Where update files are stored, whether it is writable, and its free space',
      responses: { 200: { description: 'Storage', content: { 'application/json': { schema: storage } } }, ...errors },
    }),
    async (c) => c.json(await deps.settings.storage(), 200),
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/api/v1/settings/storage',
      tags: ['settings'],
      summary: 'Set the update file storage location (admin): created if missing, checked writable',
      middleware: [requireRole('admin')] as const,
      request: { body: { content: { 'application/json': { schema: z.strictObject({ path: z.string().min(1).max(4096) }) } }, required: true } },
      responses: { 200: { description: 'Storage', content: { 'application/json': { schema: storage } } }, 422: problem, ...errors },
    }),
    async (c) => c.json(await deps.settings.setStorage(c.req.valid('json').path, c.get('principal').name), 200),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/api/v1/node',
      tags: ['node'],
      summary: "This node: name, version, languages, uptime, and its TLS: the SHA-256 of the CA that its tokens pin, its certificate's expiry",
      responses: {
        200: {
          description: 'Node',
          content: { 'application/json': { schema: z.looseObject({ name: z.string(), version: z.string(), languages: z.array(z.string()) }) } },
        },
        ...errors,
      },
    }),
    async (c) =>
      c.json(
        {
          name: deps.node.name,
          version: deps.node.version,
          languages: [...deps.node.languages],
          startedAt: new Date(deps.node.startedAt).toISOString(),
          importing: deps.importer.busy,
          tls: { caSha256: deps.tls.caSha256, certNotAfter: deps.tls.certNotAfter() },
        },
        200,
      ),
  );
}
