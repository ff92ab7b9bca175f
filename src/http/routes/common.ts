import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import type { Role } from '../../auth/tokens.js';
import { requireRole, type AppEnv } from '../auth.js';

/** The problem-document response every route documents for its errors. */
export const problem = {
  content: { 'application/problem+json': { schema: z.looseObject({ type: z.string(), title: z.string(), status: z.number(), detail: z.string() }) } },
  description: 'Error (RFC 9457 problem document)',
};
export const errors = { 400: problem, 401: problem, 403: problem, 404: problem } as const;

/**
 * A route that removes or revokes one thing by its id (a string of 1 to 100
 * characters, or `id` given): 204 once done. The API's DELETE routes share it.
 */
export function deleteById(
  app: OpenAPIHono<AppEnv>,
  spec: { path: string; tag: string; summary: string; role: Role; done: string; conflict?: boolean; id?: z.ZodType<string> },
  remove: (id: string, by: string) => Promise<unknown>,
): void {
  app.openapi(
    createRoute({
      method: 'delete',
      path: spec.path,
      tags: [spec.tag],
      summary: spec.summary,
      middleware: [requireRole(spec.role)] as const,
      request: { params: z.object({ id: spec.id ?? z.string().min(1).max(100) }) },
      responses: { 204: { description: spec.done }, ...(spec.conflict ? { 409: problem } : {}), ...errors },
    }),
    async (c) => {
      await remove(c.req.valid('param').id, c.get('principal').name);
      return c.body(null, 204);
    },
  );
}
