import { z } from 'zod';
import { displayName } from '../lib/text.js';

/**
 * `POST /agent/v1/enroll`: an enrolment token, once, for the agent's id and secret.
 * Every later call of the agent sends `Authorization: Bearer <secret>`.
 */

export const enrolRequestSchema = z.object({
  enrollmentToken: z.string().min(1).max(200),
  name: displayName(255).describe('Computer name'),
  agentVersion: z.string().max(50).optional(),
});
export type EnrolRequest = z.infer<typeof enrolRequestSchema>;

export const enrolResponseSchema = z.object({ agentId: z.string(), secret: z.string() });
export type EnrolResponse = z.infer<typeof enrolResponseSchema>;
