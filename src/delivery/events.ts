import type { EventType } from '../agent-api/events.js';

/**
 * What each status event an agent sends (agent-api/events.ts) does to the
 * (computer, update) status. Pure: the node applies them in its writer, tests
 * apply them directly.
 */

export type DeliveryState = 'downloading' | 'downloaded' | 'installing' | 'installed' | 'failed' | 'pending-reboot' | 'not-applicable' | 'ceiling-reached';

export interface Status {
  state: DeliveryState;
  downloadFailures: number;
  installFailures: number;
  lastAttempt: number | null;
  lastExitCode: number | null;
  lastError: string | null;
  lastEventAt: number;
  retriesClearedAt: number | null;
}

export interface Ceilings {
  download: number;
  install: number;
}

export const newStatus = (): Status => ({
  state: 'downloading',
  downloadFailures: 0,
  installFailures: 0,
  lastAttempt: null,
  lastExitCode: null,
  lastError: null,
  lastEventAt: 0,
  retriesClearedAt: null,
});

const STATE_OF: Record<EventType, DeliveryState> = {
  'download-started': 'downloading',
  'download-failed': 'failed',
  'download-completed': 'downloaded',
  'install-started': 'installing',
  'install-failed': 'failed',
  'install-succeeded': 'installed',
  'reboot-pending': 'pending-reboot',
  'install-not-applicable': 'not-applicable',
  'ceiling-reached': 'ceiling-reached',
};

/**
 * Applies one event. Failures count when they happened after the last clear (an
 * agent's queued events from before it do not); the state follows the newest
 * event, so events arriving out of order leave it right. Once a ceiling is
 * reached the state stays `ceiling-reached` until the counts are cleared
 * (or the update installs after all).
 */
export function applyEvent(
  s: Status,
  e: { type: EventType; at: number; attempt: number; exitCode?: number | undefined; message?: string | undefined },
  c: Ceilings,
): Status {
  const n = { ...s };
  const counted = s.retriesClearedAt === null || e.at >= s.retriesClearedAt;
  if (counted && e.type === 'download-failed') n.downloadFailures++;
  if (counted && e.type === 'install-failed') n.installFailures++;
  if (e.at >= s.lastEventAt) {
    n.state = STATE_OF[e.type];
    n.lastEventAt = e.at;
    n.lastAttempt = e.attempt;
    if (e.exitCode !== undefined) n.lastExitCode = e.exitCode;
    if (e.type === 'download-failed' || e.type === 'install-failed') n.lastError = e.message ?? null;
    if (e.type === 'install-succeeded' || e.type === 'reboot-pending' || e.type === 'install-not-applicable') n.lastError = null;
  }
  const done = n.state === 'installed' || n.state === 'pending-reboot' || n.state === 'not-applicable';
  if (!done && (n.downloadFailures >= c.download || n.installFailures >= c.install)) n.state = 'ceiling-reached';
  return n;
}
