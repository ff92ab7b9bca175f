import { z } from 'zod';
import { SEVERITIES } from '../catalog/format.js';
import { installationOverrideSchema } from './installation.js';
import { displayName } from '../lib/text.js';

/** What a policy is made of, as the API takes it: created whole, changed field by field. */

export const MAX_POLICY_UPDATES = 5_000;
const updateId = z.string().min(1).max(100);

export const targetsSchema = z
  .strictObject({
    all: z.boolean().optional().describe('Every computer of this node'),
    filters: z.array(z.string().min(1).max(200)).max(50).optional().describe('Filter ids (GET /api/v1/filters): computers in any of them'),
    computers: z.array(z.number().int().positive()).max(10_000).optional().describe('Computer ids'),
  })
  .refine((t) => t.all === true || (t.filters?.length ?? 0) > 0 || (t.computers?.length ?? 0) > 0, 'target all computers, or name filters or computers');

export const fromRequiredSchema = z.strictObject({
  filter: z
    .string()
    .min(1)
    .max(200)
    .optional()
    .describe("Only updates required by computers of this filter (default: every computer); also the policy's target unless targets are given"),
  severity: z.enum(SEVERITIES).optional().describe('Only updates of this vendor severity'),
  customSeverity: z.number().int().optional().describe('Only updates of this custom severity (id)'),
});

const isoTime = z.iso.datetime({ offset: true });

export const policyCreateSchema = z
  .strictObject({
    name: displayName(200),
    description: z.string().max(2000).optional(),
    updates: z.array(updateId).max(MAX_POLICY_UPDATES).optional().describe('Update ids'),
    fromRequired: fromRequiredSchema
      .optional()
      .describe(
        'Add every update that computers (of a filter) require (of a severity): "every required critical update to the computers that need it" in one request',
      ),
    targets: targetsSchema.optional().describe('Defaults to fromRequired.filter (or all computers) when fromRequired is given'),
    startAt: isoTime.optional().describe('Not delivered before (default: now)'),
    deadline: isoTime.nullable().optional().describe('Installed by then, outside maintenance windows if need be'),
    installation: installationOverrideSchema.nullable().optional().describe("Overrides of the node's installation settings"),
    enabled: z.boolean().optional(),
    followSupersedence: z.boolean().optional().describe('When an import supersedes one of its updates, add the superseding update'),
  })
  .refine((p) => p.updates !== undefined || p.fromRequired !== undefined, { message: 'give updates, fromRequired, or both', path: ['updates'] })
  .refine((p) => p.targets !== undefined || p.fromRequired !== undefined, {
    message: 'give targets (or fromRequired, whose filter becomes the target)',
    path: ['targets'],
  });
export type PolicyCreate = z.infer<typeof policyCreateSchema>;

export const policyPatchSchema = z
  .strictObject({
    name: displayName(200).optional(),
    description: z.string().max(2000).nullable().optional(),
    updates: z.array(updateId).min(1).max(MAX_POLICY_UPDATES).optional().describe('The whole list (replaces it)'),
    addUpdates: z.array(updateId).max(MAX_POLICY_UPDATES).optional(),
    removeUpdates: z.array(updateId).max(MAX_POLICY_UPDATES).optional(),
    targets: targetsSchema.optional(),
    startAt: isoTime.optional(),
    deadline: isoTime.nullable().optional(),
    installation: installationOverrideSchema.nullable().optional(),
    enabled: z.boolean().optional(),
    followSupersedence: z.boolean().optional(),
  })
  .refine((p) => Object.keys(p).length > 0, 'change at least one field');
export type PolicyPatch = z.infer<typeof policyPatchSchema>;
