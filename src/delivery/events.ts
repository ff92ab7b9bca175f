import { z } from 'zod';

/**
 * Status events agents send, and what each does to the (computer, update) status.
 * Pure: the node applies them in its writer, tests apply them directly.
 */

export const EVENT_TYPES = [
  'download-started',
  'download-failed',
  'download-completed',
  'install-started',
  'install-failed',
  'install-succeeded',
  'reboot-pending',
  /** No step of the update applied to this computer (e.g. wusa 0x80240017): no attempt is counted. */
  'install-not-applicable',
  'ceiling-reached',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** Events per request at most; a message is a short excerpt of the agent's log. */
export const EVENT_LIMITS = { batch: 500, message: 2000, bodyBytes: 512 * 1024 } as const;
/** An agent's clock may run ahead of the node's by this much at most. */
const MAX_SKEW_MS = 24 * 3_600_000;
/** No event of this product happened before 2000: an earlier time is a broken clock (year 0001 was accepted once). */
const EARLIEST = Date.UTC(2000, 0, 1);

export const eventSchema = z.strictObject({
  id: z.string().regex(/^[A-Za-z0-9._:-]{1,100}$/, '1 to 100 characters of A-Z a-z 0-9 . _ : -').describe('Made by the agent, unique per agent: a retried event is counted once'),
  updateId: z.string().min(1).max(100),
  policyId: z.string().min(1).max(100).optional(),
  type: z.enum(EVENT_TYPES),
  attempt: z.number().int().min(1).max(1_000_000).describe('Which attempt of this download or install (1 = first)'),
  at: z.iso
    .datetime({ offset: true })
    .refine((t) => Date.parse(t) <= Date.now() + MAX_SKEW_MS, 'more than a day in the future')
    .refine((t) => Date.parse(t) >= EARLIEST, 'before 2000: the agent\'s clock is wrong')
    .describe('When it happened, on the agent'),
  exitCode: z.number().int().min(-2_147_483_648).max(4_294_967_295).optional(),
  message: z.string().max(EVENT_LIMITS.message).optional(),
});
export type AgentEvent = z.infer<typeof eventSchema>;

export const eventsBodySchema = z.strictObject({
  events: z.array(eventSchema).min(1).max(EVENT_LIMITS.batch),
});

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
export function applyEvent(s: Status, e: { type: EventType; at: number; attempt: number; exitCode?: number | undefined; message?: string | undefined }, c: Ceilings): Status {
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
