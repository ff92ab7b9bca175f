import { z } from 'zod';
import { inWindows, nextOpening, windowSchema, zoneSchema } from '../lib/schedule.js';

/**
 * Replication rules, per child (the seed's "replication rules"): whether it
 * receives the catalog (updates, custom severities) and the update files, and
 * when: continuously, or only inside weekly windows (e.g. nights over a thin
 * link). Replicated settings always flow. Outside its windows a child stays
 * connected (heartbeats, status) but receives no changes and no files.
 */
export const scheduleSchema = z.discriminatedUnion('mode', [
  z.strictObject({ mode: z.literal('continuous') }),
  z.strictObject({
    mode: z.literal('windows'),
    zone: zoneSchema.default('UTC'),
    windows: z.array(windowSchema).min(1).max(50),
  }),
]);

export const replicationRulesSchema = z.strictObject({
  catalog: z.boolean().default(true).describe('Send catalog changes (updates, custom severities)'),
  files: z.boolean().default(true).describe('Serve update files to this child'),
  schedule: scheduleSchema.default({ mode: 'continuous' }),
});
export type ReplicationRules = z.infer<typeof replicationRulesSchema>;

export function parseRules(json: string): ReplicationRules {
  const r = replicationRulesSchema.safeParse(JSON.parse(json || '{}'));
  return r.success ? r.data : replicationRulesSchema.parse({});
}

/** Null when replication may run now, else when it may next (null inside: never). */
export function closedUntil(rules: ReplicationRules, at: Date): { until: Date | null } | null {
  const s = rules.schedule;
  if (s.mode === 'continuous' || inWindows(s.windows, s.zone, at)) return null;
  return { until: nextOpening(s.windows, s.zone, at) };
}
