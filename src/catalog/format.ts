import { createHash } from 'node:crypto';
import { z } from 'zod';
import { LANGUAGE_TAG } from '../lib/languages.js';
import { formatPath, type FieldError } from '../lib/errors.js';
import { validateRule, type Rule } from './rules.js';
import { FILE_NAME, installerFromV1, installerSchema } from '../delivery/installers.js';

/**
 * The catalog file format, version 2 (docs/catalog-format.md): gzip'd NDJSON, a
 * header line then one update per line, with a detached signature file. Line-based
 * so that import and replication stream it: no step needs the whole file in memory.
 * Version 2 says per file how it installs; a version-1 file (one command line per
 * update) is still read, each line converted to version 2 (`fromV1`).
 */
export const FORMAT = 'patchtree-catalog';
export const FORMAT_VERSION = 2;
export const FORMAT_VERSIONS = [1, 2] as const;

/** The vendor severities, most severe first: the one list every part of the node uses. */
export const SEVERITIES = ['Critical', 'Important', 'Moderate', 'Low'] as const;
export type Severity = (typeof SEVERITIES)[number];
/** Reports count updates without a vendor severity (or with one not in the list) under this name. */
export const UNRATED = 'Unrated';
/** The buckets of a count by severity: the vendor severities, then Unrated. */
export const SEVERITY_BUCKETS = [...SEVERITIES, UNRATED] as const;
export type SeverityBucket = (typeof SEVERITY_BUCKETS)[number];

/** The bucket a stored severity counts in. */
export function severityBucket(severity: string | null | undefined): SeverityBucket {
  return (SEVERITIES as readonly (string | null | undefined)[]).includes(severity) ? (severity as Severity) : UNRATED;
}

export const RESTART = ['required', 'may', 'never'] as const;

export const catalogHeaderSchema = z.strictObject({
  format: z.literal(FORMAT),
  formatVersion: z.literal(FORMAT_VERSIONS),
  version: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/, 'letters, digits and . _ + - (at most 64)'),
  publisher: z.string().min(1).max(200),
  createdAt: z.iso.datetime({ offset: true }),
  updates: z.number().int().min(0),
});
export type CatalogHeader = z.infer<typeof catalogHeaderSchema>;

const ruleSchema = z.custom<Rule>((v) => validateRule(v) === null, { message: 'invalid rule' });

const fileV1 = {
  name: z.string().regex(FILE_NAME, 'a plain file name: letters, digits, space and . _ ( ) + , = @ # ~ -; no path, no quote'),
  url: z.url({ protocol: /^https?$/ }).max(2048),
  size: z.number().int().min(0),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex digits'),
  language: z.string().regex(LANGUAGE_TAG, 'expected a language tag or "neutral"'),
};
/** A file of a version-2 line: `installer` says how it installs (absent: downloaded, not run). */
export const catalogFileSchema = z.strictObject({ ...fileV1, installer: installerSchema.optional() });

export const cveDetailSchema = z.strictObject({
  id: z.string().regex(/^CVE-\d{4}-\d{4,}$/),
  title: z.string().max(500).optional(),
  severity: z.enum(SEVERITIES).optional(),
  exploited: z.boolean().optional(),
  publiclyDisclosed: z.boolean().optional(),
  baseScore: z.number().min(0).max(10).optional(),
});

const updateFields = {
  id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$/, 'letters, digits and . _ : - (at most 100)'),
  revision: z.number().int().min(1),
  kb: z
    .string()
    .regex(/^\d{4,8}$/, 'expected KB digits like "5034123"')
    .nullable(),
  bulletin: z.string().max(50).nullable(),
  title: z.string().min(1).max(1000),
  description: z.string().max(20000).optional(),
  vendor: z.string().min(1).max(200),
  productFamily: z.string().max(200).nullable(),
  product: z.string().min(1).max(300),
  classification: z.string().min(1).max(100),
  severity: z.enum(SEVERITIES).nullable(),
  cves: z.array(z.string().regex(/^CVE-\d{4}-\d{4,}$/, 'expected CVE-YYYY-NNNN')).max(5000),
  cveDetails: z.array(cveDetailSchema).max(5000).optional(),
  releaseDate: z.iso.date().or(z.iso.datetime({ offset: true })),
  supersedes: z.array(z.string().regex(/^\d{4,8}$/, 'expected KB digits')).max(1000),
  superseded: z.boolean().optional(),
  restart: z.enum(RESTART),
  applicability: ruleSchema,
  installed: ruleSchema,
  moreInfoUrl: z.url().max(2048).optional(),
};
const codes = {
  successCodes: z.array(z.number().int()).min(1).max(100),
  rebootCodes: z.array(z.number().int()).max(100),
};

/** A version-2 update line: the form every node stores and replicates. `install` holds the exit codes of `exe` and `command` steps. */
export const catalogUpdateSchema = z.strictObject({
  ...updateFields,
  install: z.strictObject(codes),
  files: z.array(catalogFileSchema).max(10000),
});
export type CatalogUpdate = z.infer<typeof catalogUpdateSchema>;

/** A version-1 update line: one command line (`{file}` for the path) run for every file. */
export const catalogUpdateSchemaV1 = z.strictObject({
  ...updateFields,
  install: z.strictObject({ command: z.string().max(4000), ...codes }),
  files: z.array(z.strictObject(fileV1)).max(10000),
});
export type CatalogUpdateV1 = z.infer<typeof catalogUpdateSchemaV1>;

/** A version-1 line as version 2: each file's installer from the update's command (installers.ts). */
export function fromV1(u: CatalogUpdateV1): CatalogUpdate {
  const { install, files, ...rest } = u;
  return {
    ...rest,
    install: { successCodes: install.successCodes, rebootCodes: install.rebootCodes },
    files: files.map((f) => {
      const installer = installerFromV1(install.command, f.name);
      return installer ? { ...f, installer } : f;
    }),
  };
}

/** The update schema of a format version, giving the version-2 form. */
export function updateSchemaOf(formatVersion: number): z.ZodType<CatalogUpdate> {
  return formatVersion === 1 ? catalogUpdateSchemaV1.transform(fromV1) : catalogUpdateSchema;
}

/** Turns zod issues (and rule issues) into line-numbered field errors. */
export function lineErrors(line: number, error: z.ZodError, value: unknown): FieldError[] {
  return error.issues.slice(0, 5).map((issue) => {
    const path = formatPath(issue.path);
    // A custom rule check says only "invalid rule": ask the validator where.
    if (issue.code === 'custom' && (issue.path[0] === 'applicability' || issue.path[0] === 'installed')) {
      const field = issue.path[0];
      const inner = validateRule((value as Record<string, unknown>)[field], field);
      if (inner) return { line, path: inner.path, message: inner.message };
    }
    return { line, path, message: issue.message };
  });
}

/** Sorted, de-duplicated languages of an update's files (`neutral` included). */
export function updateLanguages(u: Pick<CatalogUpdate, 'files'>): string[] {
  return [...new Set(u.files.map((f) => f.language))].sort();
}

/**
 * Content hash of an update: what the node compares to decide "changed". The
 * revision is left out (it is the node's to assign); key order is the schema's,
 * since zod rebuilds the object in its shape's order.
 */
export function contentHash(u: CatalogUpdate): string {
  const { revision: _revision, ...rest } = u;
  return createHash('sha256').update(JSON.stringify(rest)).digest('hex');
}
