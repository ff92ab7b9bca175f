import type { Assignments, Waiting } from '../agent-api/assignments.js';
export { describeError } from '../lib/errors.js';

/**
 * What each assigned update is doing and waiting for, as `patchtree agent status`
 * shows it: built from the last assignments and what the agent recorded per update
 * (kept in its store, so it is there when the agent is not running).
 */

export const UPDATE_STATES = [
  'assigned',
  'waiting',
  'downloading',
  'downloaded',
  'installing',
  'installed',
  'reboot-pending',
  'not-applicable',
  'failed',
  'ceiling-reached',
] as const;
export type UpdateState = (typeof UPDATE_STATES)[number];

/** What the agent last did with an update. */
export interface Progress {
  state: UpdateState;
  waitingFor: string | null;
  lastError: string | null;
  at: string;
  /** Installed, restart pending or not applicable: not tried again unless the retry counts are cleared. */
  settled?: boolean;
  /** The node's retriesClearedAt when it settled. */
  clearedAt?: string | null;
}

export interface UpdateStatus {
  updateId: string;
  kb: string | null;
  title: string;
  state: UpdateState;
  waitingFor: string | null;
  lastError: string | null;
}

export function waitingText(w: Waiting): string {
  if (w.reason === 'retry-ceiling') return "the retry counts to be cleared (retry ceiling reached): patchtree agent clear-retries, or the node's clear";
  if (w.reason === 'no-files') return 'a catalog that lists its files: the update is metadata only (e.g. from CVRF), nothing can install it';
  if (w.reason === 'no-file-in-languages')
    return `nothing: the update has no file in this computer's languages (${w.languages.length ? w.languages.join(', ') : 'unknown: only language-neutral files are taken'})`;
  if (w.reason === 'languages-not-on-node')
    return `files in languages the node does not download (${w.languages.join(', ')}): add them to the node's --languages`;
  const failing = w.nodeError ? `; the node's download fails: ${w.nodeError}${w.nextTryAt ? `, next try ${w.nextTryAt}` : ''}` : '';
  return `files not yet on the node (${w.missing} of ${w.files} missing${failing})`;
}

export function updateStatuses(a: Assignments | null, progress: Record<string, Progress>): UpdateStatus[] {
  if (!a) return [];
  const out: UpdateStatus[] = [];
  for (const i of a.items) {
    const p = progress[i.updateId];
    out.push({
      updateId: i.updateId,
      kb: i.kb,
      title: i.title,
      state: p?.state ?? 'assigned',
      waitingFor: p ? p.waitingFor : 'the next deploy task',
      lastError: p?.lastError ?? null,
    });
  }
  for (const w of a.waiting ?? [])
    out.push({
      updateId: w.updateId,
      kb: w.kb,
      title: w.title,
      // No file for this computer's languages: not for it, nothing to wait for.
      state: w.reason === 'retry-ceiling' ? 'ceiling-reached' : w.reason === 'no-file-in-languages' ? 'not-applicable' : 'waiting',
      // Not for this computer: the reason stays in the text, there is nothing to wait for.
      waitingFor: waitingText(w),
      lastError: progress[w.updateId]?.lastError ?? null,
    });
  return out;
}
