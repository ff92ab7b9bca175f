import { z } from 'zod';
import { installationSchema } from '../delivery/installation.js';

/**
 * The small answers of a check-in: `GET /agent/v1/config`, `POST /agent/v1/retries/clear`,
 * the lines of `GET /agent/v1/rules`, and where a file is downloaded from
 * (`GET /agent/v1/files/{sha256}`, with Range and If-None-Match).
 */

export const configSchema = z.object({
  agentId: z.string(),
  computerId: z.number().int().nullable(),
  scanIntervalMinutes: z.number(),
  installation: installationSchema,
  nodeTime: z.string(),
});
export type AgentConfig = z.infer<typeof configSchema>;

export const retriesClearedSchema = z.object({ cleared: z.number() });

/** One line of the rules NDJSON: an update's applicability, as the agent evaluates it locally. */
export const ruleLineSchema = z.object({
  id: z.string(),
  kb: z.string().nullable(),
  product: z.string(),
  severity: z.string().nullable(),
  applicability: z.unknown(),
  installed: z.unknown(),
  supersedes: z.unknown(),
});
export type RuleLine = z.infer<typeof ruleLineSchema>;

export const sha256Schema = z.string().regex(/^[0-9a-f]{64}$/);
export const FILE_URL = /^\/agent\/v1\/files\/[0-9a-f]{64}$/;
/** Where an agent downloads a verified file. */
export const fileUrl = (sha256: string): string => `/agent/v1/files/${sha256}`;
