import { z } from 'zod';

/**
 * Download settings. `need` decides which files the node fetches: `languages` is
 * every file of a live update in the node's languages (plus `neutral`); `marked`
 * only files of updates an admin marked for download or an enabled policy
 * delivers.
 */
export const contentSettingsSchema = z.strictObject({
  need: z.enum(['languages', 'marked']),
  concurrency: z.number().int().min(1).max(64),
  bytesPerSecond: z.number().int().min(0),
  perHostBytesPerSecond: z.number().int().min(0),
  reserveBytes: z.number().int().min(0),
  maxAttempts: z.number().int().min(1).max(1000),
  retryBaseMs: z.number().int().min(10).max(86_400_000),
  retryMaxMs: z
    .number()
    .int()
    .min(10)
    .max(7 * 86_400_000),
  idleTimeoutMs: z.number().int().min(100).max(3_600_000),
});
export type ContentSettings = z.infer<typeof contentSettingsSchema>;

export const DEFAULT_CONTENT_SETTINGS: ContentSettings = {
  need: 'marked',
  concurrency: 4,
  bytesPerSecond: 0,
  perHostBytesPerSecond: 0,
  reserveBytes: 1024 ** 3,
  maxAttempts: 10,
  retryBaseMs: 30_000,
  retryMaxMs: 6 * 3_600_000,
  idleTimeoutMs: 60_000,
};
