import { z } from 'zod';
import { REPLICATED_SETTINGS, type SettingsService } from '../settings/service.js';

/**
 * The system assessment scan interval (seed: "configure the system assessment scan
 * interval"). Agents receive it with every report; a computer whose last scan is
 * older than twice the interval is stale. Set at the root, it replicates down.
 */
export const assessmentSettingsSchema = z.strictObject({
  scanIntervalMinutes: z.number().int().min(5).max(10_080).describe('Minutes between scans, 5 to 10,080 (a week)'),
});
export type AssessmentSettings = z.infer<typeof assessmentSettingsSchema>;

export const DEFAULT_ASSESSMENT_SETTINGS: AssessmentSettings = { scanIntervalMinutes: 1440 };
export const ASSESSMENT_SETTING = 'assessment';
REPLICATED_SETTINGS.add(ASSESSMENT_SETTING);

export async function assessmentSettings(settings: SettingsService): Promise<AssessmentSettings> {
  return { ...DEFAULT_ASSESSMENT_SETTINGS, ...(await settings.get<Partial<AssessmentSettings>>(ASSESSMENT_SETTING)) };
}

/** Scans before this instant are stale. */
export function staleBefore(s: AssessmentSettings, now = Date.now()): number {
  return now - 2 * s.scanIntervalMinutes * 60_000;
}
