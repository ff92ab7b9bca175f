import { AppError } from '../lib/errors.js';
import { LANGUAGE } from '../lib/languages.js';

/**
 * What a parent checks in every message a child sends, against its meaning, before
 * it stores or acts on anything: an `INVALID_ARGUMENT` naming the field otherwise.
 * (protobufjs reads wrong or odd input leniently: a uint64 beyond 2^53 as a string,
 * invalid UTF-8 as U+FFFD; these checks refuse what such leniency lets through.)
 */

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Languages a node may manage for its subtree: a tree of every culture Office ships in stays well under it. */
export const MAX_LANGUAGES = 200;

export function invalid(field: string, why: string): AppError {
  return new AppError('bad-request', `${field}: ${why}`);
}

export function nodeId(field: string, v: unknown): string {
  const s = String(v ?? '');
  if (!UUID.test(s)) throw invalid(field, `must be a lowercase UUID (got ${JSON.stringify(s.slice(0, 40))})`);
  return s;
}

/** Sorted, once each; refused as a whole when one is not a tag or there are too many. */
export function languages(field: string, v: unknown): string[] {
  if (!Array.isArray(v)) throw invalid(field, 'must be a list of language tags');
  if (v.length > MAX_LANGUAGES) throw invalid(field, `at most ${MAX_LANGUAGES} language tags (got ${v.length})`);
  for (const l of v)
    if (typeof l !== 'string' || !LANGUAGE.test(l))
      throw invalid(field, `${JSON.stringify(String(l).slice(0, 40))} is not a language tag like "de" or "de-de"`);
  return [...new Set(v as string[])].sort();
}

/** A log sequence number: a whole number from 0 to `max` (the head), sent as a decimal string. */
export function cursor(field: string, v: unknown, max: number): number {
  const s = String(v ?? '');
  if (!/^\d{1,16}$/.test(s)) throw invalid(field, `must be a sequence number (got ${JSON.stringify(s.slice(0, 40))})`);
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n > max) throw invalid(field, `${s} is past the head of this node's log (${max})`);
  return n;
}

/** A count: a whole number up to `max`. */
export function count(field: string, v: unknown, max: number): number {
  const s = String(v ?? '0');
  if (!/^\d{1,16}$/.test(s) || Number(s) > max) throw invalid(field, `must be a whole number up to ${max} (got ${JSON.stringify(s.slice(0, 40))})`);
  return Number(s);
}

/** Text of at most `max` characters: no control character, no U+FFFD (what invalid UTF-8 decodes to). */
export function text(field: string, v: unknown, max: number): string {
  const s = String(v ?? '');
  if (s.length > max) throw invalid(field, `at most ${max} characters`);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (/[\u0000-\u001f\u007f\ufffd]/.test(s)) throw invalid(field, 'control characters or invalid UTF-8');
  return s;
}

/** A message the wire check marked (replication/wire.ts): refused before anything of it is read. */
export function wire(msg: unknown): void {
  const problem = (msg as { invalidField?: string } | null)?.invalidField;
  if (problem) {
    const i = problem.indexOf(': ');
    throw invalid(problem.slice(0, i), problem.slice(i + 2));
  }
}
