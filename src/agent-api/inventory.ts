import { z } from 'zod';
import { displayName } from '../lib/text.js';

/**
 * `POST /agent/v1/inventory`: what an agent reports, a full inventory or a delta
 * against the inventory of its previous report (named by `baseScanId`). Strict:
 * unknown fields, wrong types and oversized lists are refused before anything is stored.
 */

export const LIMITS = { products: 5_000, kbs: 20_000, files: 20_000, registry: 20_000 } as const;

const str = (max: number) => z.string().min(1).max(max);
const version = z.string().regex(/^\d+(\.\d+){0,3}$/, 'a dotted version like 10.0.22631.3007');
const kb = z
  .string()
  .regex(/^(KB)?\d{4,8}$/i, 'a KB number like 5034123')
  .transform((k) => k.replace(/^kb/i, ''));
const language = z
  .string()
  .regex(/^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$/, 'a language tag like en-us')
  .transform((l) => l.toLowerCase());

export const osSchema = z.strictObject({
  family: z.enum(['windows']),
  name: str(300).optional().describe('The OS as a catalog product name, e.g. "Windows 11 Version 23H2 for x64-based Systems"'),
  version: version.optional().describe('Full build, e.g. 10.0.22631.3007'),
  arch: z.enum(['x86', 'x64', 'arm64']).optional(),
  language: language.optional(),
});

const product = z.strictObject({
  name: str(300),
  version: version.optional(),
  /** The product's installed languages (an Office suite's language packs and proofing tools): the files it is given. */
  languages: z.array(language).max(200).optional(),
  /** MSI patch codes applied to the product (GUIDs, as Windows Installer lists them). */
  patches: z
    .array(z.string().regex(/^\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}$/, 'a GUID in braces'))
    .max(5000)
    .optional(),
});
const file = z.strictObject({ path: str(1000), version: version.optional() });
const registry = z.strictObject({ key: str(1000), value: str(1000).optional(), data: z.union([z.string().max(1000), z.number()]).optional() });

export const inventorySchema = z.strictObject({
  os: osSchema,
  products: z.array(product).max(LIMITS.products).optional(),
  kbs: z.array(kb).max(LIMITS.kbs).optional(),
  files: z.array(file).max(LIMITS.files).optional(),
  registry: z.array(registry).max(LIMITS.registry).optional(),
});

const change = <T extends z.ZodTypeAny, K extends z.ZodTypeAny>(item: T, key: K, max: number) =>
  z.strictObject({ add: z.array(item).max(max).optional(), remove: z.array(key).max(max).optional() }).optional();

export const deltaSchema = z.strictObject({
  baseScanId: z.number().int().min(1).describe('scanId of the report this delta applies to'),
  os: osSchema.optional(),
  products: change(product, str(300), LIMITS.products),
  kbs: change(kb, kb, LIMITS.kbs),
  files: change(file, str(1000), LIMITS.files),
  registry: change(registry, z.strictObject({ key: str(1000), value: str(1000).optional() }), LIMITS.registry),
});

export const reportSchema = z
  .strictObject({
    agentKey: z
      .string()
      .regex(/^[A-Za-z0-9._:-]{8,100}$/, '8 to 100 characters of A-Z a-z 0-9 . _ : -')
      .describe("The agent's stable identifier for this computer"),
    name: displayName(255).describe('Computer name'),
    agentVersion: str(50).optional(),
    full: inventorySchema.optional(),
    delta: deltaSchema.optional(),
  })
  .refine((r) => (r.full === undefined) !== (r.delta === undefined), { message: 'send exactly one of "full" and "delta"', path: ['full'] });
export type Report = z.infer<typeof reportSchema>;
export type Delta = z.infer<typeof deltaSchema>;

/** The answer: the report is stored and assessed (`POST /agent/v1/inventory`). */
export const reportResultSchema = z.object({
  computerId: z.number(),
  scanId: z.number(),
  created: z.boolean(),
  required: z.number(),
  unknown: z.number(),
  scanIntervalMinutes: z.number(),
  nextScanAt: z.string(),
});
