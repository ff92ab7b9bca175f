import type { Write } from '../db/exec.js';
import type { Severity } from '../catalog/format.js';
import type { CatalogIndex, State } from './catalog-index.js';

/**
 * The stored results' shapes, shared by the report intake and the catalog and full
 * runs: a computer's row as they read it, the per-update counters, and the summary
 * columns of a computer (required and unknown, required per severity).
 */

export const SEVERITY_COLUMNS: Record<string, string> = {
  Critical: 'req_critical',
  Important: 'req_important',
  Moderate: 'req_moderate',
  Low: 'req_low',
} satisfies Record<Severity, string>;

export interface ComputerRow {
  id: number;
  inventory: string;
  scan_id: number;
}

export type Counts = [installed: number, required: number, unknown: number, superseded: number];
export const SLOT: Record<State, number> = { installed: 0, required: 1, unknown: 2, superseded: 3 };

/** The computer's summary columns, from its states, as a write. */
export function summary(index: CatalogIndex, id: number, states: Map<string, State>, now: number): { required: number; unknown: number; write: Write } {
  let required = 0;
  let unknown = 0;
  const sev: Record<string, number> = { req_critical: 0, req_important: 0, req_moderate: 0, req_low: 0, req_unrated: 0 };
  for (const [uid, s] of states) {
    if (s === 'unknown') unknown++;
    if (s !== 'required') continue;
    required++;
    sev[SEVERITY_COLUMNS[index.get(uid)?.severity ?? ''] ?? 'req_unrated']!++;
  }
  return {
    required,
    unknown,
    write: [
      'UPDATE computers SET required = ?, unknown = ?, req_critical = ?, req_important = ?, req_moderate = ?, req_low = ?, req_unrated = ?, assessed_at = ? WHERE id = ?',
      [required, unknown, sev.req_critical, sev.req_important, sev.req_moderate, sev.req_low, sev.req_unrated, now, id],
    ],
  };
}

export function* chunks<T>(list: T[], size: number): Generator<T[]> {
  for (let i = 0; i < list.length; i += size) yield list.slice(i, i + size);
}
