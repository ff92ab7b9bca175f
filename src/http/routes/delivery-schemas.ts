import { z } from '@hono/zod-openapi';

/** Paging of the delivery routes' lists: a limit and the cursor of the page before. */
export const page = { limit: z.coerce.number().int().min(1).max(1000).default(100), cursor: z.string().max(300).optional() };
