import { z } from 'zod';
import { releaseTimesSchema } from '../freshness/freshness.js';
import { SEVERITY_BUCKETS } from '../catalog/format.js';

/**
 * What the roll-up carries (reports/rollup.ts): a node's compliance summary and the
 * rest of what it reports upward, as checked on arrival, and how summaries add up.
 */

const count = z.number().int().min(0);
export const summarySchema = z.looseObject({
  computers: count,
  compliant: count,
  compliantPercent: z.number(),
  required: count,
  requiredBySeverity: z.record(z.string().max(40), count),
  urgentComputers: count,
  stale: count,
});
export type Summary = z.infer<typeof summarySchema>;

const totalsSchema = z.record(z.string().max(40), count);
export const nodeSummarySchema = z.looseObject({
  summary: summarySchema,
  /** [update id, installed, superseded, required, unknown], for updates with any. */
  updates: z.array(z.tuple([z.string().min(1).max(100), count, count, count, count])).max(500_000),
  /** Delivery totals of each policy the node has (its own and replicated ones). */
  policies: z.record(z.string().min(1).max(100), z.object({ name: z.string().max(200), origin: z.string().max(100).nullable(), totals: totalsSchema })),
  /** The languages whose data the node holds (its own and its subtree's). */
  languages: z.array(z.string().max(40)).max(200).optional(),
  /** When each of the newest releases reached the node, per class (catalog freshness). */
  freshness: releaseTimesSchema.optional(),
});
export type NodeSummary = z.infer<typeof nodeSummarySchema>;

/** A node's summary is stale once it is older than three of its intervals (and a little). */
export const isStale = (ageMs: number, intervalMs: number) => ageMs > 3 * intervalMs + 2_000;

/** The sum of summaries: counts add up, the percentage is recomputed. */
export function sumSummaries(list: readonly Summary[]): Summary {
  const bySeverity: Record<string, number> = Object.fromEntries(SEVERITY_BUCKETS.map((s) => [s, 0]));
  const out = { computers: 0, compliant: 0, compliantPercent: 100, required: 0, requiredBySeverity: bySeverity, urgentComputers: 0, stale: 0 };
  for (const s of list) {
    out.computers += s.computers;
    out.compliant += s.compliant;
    out.required += s.required;
    out.urgentComputers += s.urgentComputers;
    out.stale += s.stale;
    for (const [k, v] of Object.entries(s.requiredBySeverity)) bySeverity[k] = (bySeverity[k] ?? 0) + v;
  }
  out.compliantPercent = out.computers === 0 ? 100 : Math.round((1000 * out.compliant) / out.computers) / 10;
  return out;
}
