import { z } from 'zod';
import { formatPath } from '../lib/errors.js';

/**
 * `POST /agent/v1/events`: the status events an agent reports, in batches.
 *
 * A batch is stored whole or not at all. When the node refuses it, its problem
 * document lists in `refused` each event that can never be accepted as it is (a bad
 * shape, an unknown type, an update the node does not know), by its index in the
 * batch and with the reason; the agent logs those, drops them from its queue and
 * sends the others again. A refusal with no such list is about the batch (too many
 * events, too large, no inventory yet): the agent keeps every event.
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
  id: z
    .string()
    .regex(/^[A-Za-z0-9._:-]{1,100}$/, '1 to 100 characters of A-Z a-z 0-9 . _ : -')
    .describe('Made by the agent, unique per agent: a retried event is counted once'),
  updateId: z.string().min(1).max(100),
  policyId: z.string().min(1).max(100).optional(),
  type: z.enum(EVENT_TYPES),
  attempt: z.number().int().min(1).max(1_000_000).describe('Which attempt of this download or install (1 = first)'),
  at: z.iso
    .datetime({ offset: true })
    .refine((t) => Date.parse(t) <= Date.now() + MAX_SKEW_MS, 'more than a day in the future')
    .refine((t) => Date.parse(t) >= EARLIEST, "before 2000: the agent's clock is wrong")
    .describe('When it happened, on the agent'),
  exitCode: z.number().int().min(-2_147_483_648).max(4_294_967_295).optional(),
  message: z.string().max(EVENT_LIMITS.message).optional(),
});
export type AgentEvent = z.infer<typeof eventSchema>;

export const eventsBodySchema = z.strictObject({
  events: z.array(eventSchema).min(1).max(EVENT_LIMITS.batch),
});
export type EventsBody = z.infer<typeof eventsBodySchema>;

/** The answer to a stored batch: events new to the node, and those it had already (a retried batch). */
export const eventsStoredSchema = z.object({ accepted: z.number(), duplicates: z.number() });
export type EventsStored = z.infer<typeof eventsStoredSchema>;

/** An event of a batch the node can never accept as it is, and why. */
export const eventRefusalSchema = z.object({
  index: z.number().int().min(0).describe('Its position in the batch sent (0 = first)'),
  id: z.string().nullable().describe('Its id, when it has one'),
  reason: z.string(),
});
export type EventRefusal = z.infer<typeof eventRefusalSchema>;

/** The problem document of a refused batch (400): nothing of it was stored. */
export const eventsRefusedSchema = z.looseObject({
  type: z.string(),
  title: z.string(),
  status: z.number(),
  detail: z.string(),
  refused: z.array(eventRefusalSchema).optional().describe('The events that can never be accepted; empty or absent: the batch as a whole was refused'),
});
export type EventsRefused = z.infer<typeof eventsRefusedSchema>;

/** Each event of a batch that fails the event schema on its own, with the first reasons why. */
export function eventRefusals(body: unknown): EventRefusal[] {
  const events = body && typeof body === 'object' ? (body as { events?: unknown }).events : undefined;
  if (!Array.isArray(events)) return [];
  const out: EventRefusal[] = [];
  events.forEach((e: unknown, index) => {
    const r = eventSchema.safeParse(e);
    if (r.success) return;
    const id = e && typeof e === 'object' && typeof (e as { id?: unknown }).id === 'string' ? (e as { id: string }).id.slice(0, 100) : null;
    out.push({
      index,
      id,
      reason: r.error.issues
        .slice(0, 5)
        .map((i) => `${formatPath(i.path)}: ${i.message}`)
        .join('; '),
    });
  });
  return out;
}
