import { z } from 'zod';
import { installerSchema } from '../delivery/installers.js';
import { installationSchema } from '../delivery/installation.js';
import { FILE_URL, sha256Schema } from './checkin.js';

/**
 * What `GET /agent/v1/assignments` answers: the node builds it (delivery/assignments.ts), the
 * agent checks it against the same schema before acting on it, and the OpenAPI
 * document describes it from here.
 */

export const assignedFileSchema = z.object({
  url: z.string().regex(FILE_URL),
  sha256: sha256Schema,
  size: z.number().int().min(0),
  name: z.string().min(1).max(260),
  language: z.string().min(1).max(50),
  /** How the file installs; null: it is downloaded (another step may need it) and not run. */
  installer: installerSchema.nullable(),
});
export type AssignedFile = z.infer<typeof assignedFileSchema>;

export const assignmentSchema = z.object({
  updateId: z.string().min(1).max(100),
  policyId: z.string().min(1).max(100),
  kb: z.string().nullable(),
  title: z.string(),
  /** The files this computer needs, in install order: language-neutral ones and those in its languages. */
  files: z.array(assignedFileSchema).max(10_000),
  /** Exit codes of `exe` and `command` steps (the other kinds have Microsoft's, installers.ts). */
  successCodes: z.array(z.number().int()),
  rebootCodes: z.array(z.number().int()),
  restart: z.string(),
  deadline: z.string().nullable(),
  attempts: z.object({ download: z.number().int(), install: z.number().int() }),
  retriesClearedAt: z.string().nullable(),
});
export type Assignment = z.infer<typeof assignmentSchema>;

export const WAITING_REASONS = ['files-not-on-node', 'languages-not-on-node', 'no-file-in-languages', 'no-files', 'retry-ceiling'] as const;

/** An update a policy delivers here that is not offered now, and why (at its retry ceiling: until the counts are cleared). */
export const waitingSchema = z.object({
  updateId: z.string().min(1).max(100),
  policyId: z.string().min(1).max(100),
  kb: z.string().nullable(),
  title: z.string(),
  reason: z.enum(WAITING_REASONS),
  /** The files this computer needs, and how many of them the node has not verified yet. */
  files: z.number().int(),
  missing: z.number().int(),
  /** The computer's languages the node chose files for; for `languages-not-on-node`, the languages the node does not fetch. */
  languages: z.array(z.string()),
  /** Why the node's own download of a missing file failed last, and when it tries again. */
  nodeError: z.string().nullable().default(null),
  nextTryAt: z.string().nullable().default(null),
});
export type Waiting = z.infer<typeof waitingSchema>;

export const assignmentsSchema = z.object({
  items: z.array(assignmentSchema),
  policies: z.array(z.object({ id: z.string(), name: z.string(), startAt: z.string(), deadline: z.string().nullable(), installation: installationSchema })),
  /** How many updates wait for their files on the node (the `files-not-on-node` and `languages-not-on-node` entries of `waiting`). */
  waitingForFiles: z.number().int(),
  waiting: z.array(waitingSchema),
});
export type Assignments = z.infer<typeof assignmentsSchema>;
