import { z } from '@hono/zod-openapi';

/** The problem-document response every route documents for its errors. */
export const problem = {
  content: { 'application/problem+json': { schema: z.looseObject({ type: z.string(), title: z.string(), status: z.number(), detail: z.string() }) } },
  description: 'Error (RFC 9457 problem document)',
};
export const errors = { 400: problem, 401: problem, 403: problem, 404: problem } as const;
