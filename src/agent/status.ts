import type { Assignments, Waiting } from '../delivery/wire.js';

/**
 * What each assigned update is doing and waiting for, as `patchtree agent status`
 * shows it: built from the last assignments and what the agent recorded per update
 * (kept in its store, so it is there when the agent is not running).
 */

export const UPDATE_STATES = ['assigned', 'waiting', 'downloading', 'downloaded', 'installing', 'installed', 'reboot-pending', 'not-applicable', 'failed', 'ceiling-reached'] as const;
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
  if (w.reason === 'no-file-in-languages')
    return `a file in this computer's languages (${w.languages.length ? w.languages.join(', ') : 'unknown: only language-neutral files are taken'}); the update has none`;
  if (w.reason === 'languages-not-on-node') return `files in languages the node does not download (${w.languages.join(', ')}): add them to the node's --languages`;
  return `files not yet on the node (${w.missing} of ${w.files})`;
}

export function updateStatuses(a: Assignments | null, progress: Record<string, Progress>): UpdateStatus[] {
  if (!a) return [];
  const out: UpdateStatus[] = [];
  for (const i of a.items) {
    const p = progress[i.updateId];
    out.push({ updateId: i.updateId, kb: i.kb, title: i.title, state: p?.state ?? 'assigned', waitingFor: p ? p.waitingFor : 'the next deploy task', lastError: p?.lastError ?? null });
  }
  for (const w of a.waiting ?? [])
    out.push({ updateId: w.updateId, kb: w.kb, title: w.title, state: w.reason === 'retry-ceiling' ? 'ceiling-reached' : 'waiting', waitingFor: waitingText(w), lastError: progress[w.updateId]?.lastError ?? null });
  return out;
}

/** An error's message with its causes: `fetch failed: connect ECONNREFUSED 10.0.0.5:8080`. */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let depth = 0; e && depth < 4; depth++) {
    const msg = e instanceof Error ? e.message : String(e);
    if (msg && !parts.some((p) => p.includes(msg))) parts.push(msg);
    e = e instanceof Error ? (e as { cause?: unknown }).cause : undefined;
  }
  return parts.join(': ') || 'unknown error';
}
