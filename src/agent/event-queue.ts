import { randomUUID } from 'node:crypto';
import { EVENT_LIMITS, eventsRefusedSchema, type EventRefusal, type EventType } from '../agent-api/events.js';
import type { Assignment } from '../agent-api/assignments.js';
import { backoffMs } from '../lib/backoff.js';
import type { NodeConnection } from './connection.js';
import type { PatchLog } from './log.js';
import type { AgentStore, QueuedEvent } from './store.js';

/**
 * The agent's status events on their way to the node: queued durably (the store),
 * sent in batches within a moment of each step, kept while the node is away or
 * refuses a batch for a passing reason (backing off), and dropped only when the
 * node says an event can never be accepted, each refusal logged with the node's reason.
 */

export interface EventQueueOptions {
  store: AgentStore;
  log: PatchLog;
  connection: NodeConnection;
  /** Aborted when the agent stops: ends a send at once, and no new one starts. */
  stopSignal: AbortSignal;
}

/** Waits between failed sends. */
const BACKOFF = { baseMs: 1000, maxMs: 300_000 } as const;
const atCeiling = (failures: number) => BACKOFF.baseMs * 2 ** (failures - 1) >= BACKOFF.maxMs;

export class EventQueue {
  /** Sends that failed in a row: the backoff's attempt. */
  #failures = 0;
  #nextFlush = 0;
  #flushing: Promise<void> | null = null;
  #timer: NodeJS.Timeout | null = null;

  constructor(private readonly o: EventQueueOptions) {}

  /** When the next send may start (a backoff holds it back). */
  get nextFlush(): number {
    return this.#nextFlush;
  }

  /** Queues an event; it is sent within a moment, while the task goes on (the node sees each step as it happens). */
  add(item: Assignment, type: EventType, attempt: number, extra: { exitCode?: number; message?: string } = {}): void {
    const at = new Date().toISOString();
    const e: QueuedEvent = { id: randomUUID(), updateId: item.updateId, policyId: item.policyId, type, attempt: Math.max(1, attempt), at, ...extra };
    if (e.message) e.message = e.message.slice(0, EVENT_LIMITS.message);
    this.o.store.enqueue(e);
    this.#kick();
  }

  /** The node answered a request: events held back by a backoff can go now. */
  nodeAnswered(): void {
    if (!this.#failures) return;
    this.#failures = 0;
    this.#nextFlush = 0;
    if (this.o.store.queued()) this.#kick();
  }

  /** No more timed sends; resolves when a send under way is done. */
  async stop(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#flushing;
  }

  /** A flush soon: 100 ms gathers the events of one step into a batch; a backoff from a failed send still holds. */
  #kick(): void {
    if (this.o.stopSignal.aborted || this.#timer) return;
    this.#timer = setTimeout(
      () => {
        this.#timer = null;
        void this.flush();
      },
      Math.max(100, this.#nextFlush - Date.now()),
    );
  }

  /** Sends queued events until the queue is empty or the node is away (then backs off with jitter); one flush at a time. */
  flush(): Promise<void> {
    this.#flushing ??= this.#flush().finally(() => (this.#flushing = null));
    return this.#flushing;
  }

  async #flush(): Promise<void> {
    let size: number = EVENT_LIMITS.batch;
    for (;;) {
      if (this.o.stopSignal.aborted) return;
      const batch = this.o.store.pending(size);
      if (!batch.length) return;
      let res: Response;
      let text: string;
      try {
        const body = JSON.stringify({ events: batch.map((b) => b.event) });
        res = await this.o.connection.fetch('/agent/v1/events', { method: 'POST', headers: { 'content-type': 'application/json' }, body }, this.o.stopSignal);
        text = await res.text();
      } catch (err) {
        this.#backOff((err as Error).message);
        return;
      }
      if (res.ok) {
        this.o.store.ack(batch[batch.length - 1]!.seq);
        this.#failures = 0;
        continue;
      }
      if (res.status === 409) {
        // No computer yet (no inventory reported): after the next scan.
        this.#nextFlush = Date.now() + 5_000;
        return;
      }
      if (res.status === 400 || res.status === 413) {
        const refused = refusals(text, batch.length);
        if (refused.length) {
          this.#drop(refused.map((r) => ({ ...batch[r.index]!, reason: r.reason })));
          continue;
        }
        // The batch as a whole: smaller ones (down to single events) tell which event it is.
        if (batch.length > 1) {
          size = Math.ceil(batch.length / 2);
          continue;
        }
        this.#drop([{ ...batch[0]!, reason: `HTTP ${res.status}: ${detailOf(text)}` }]);
        continue;
      }
      // Refused for now (too many requests, a proxy's answer): kept, and tried again later.
      this.#backOff(`HTTP ${res.status} ${text.slice(0, 300)}`);
      return;
    }
  }

  #drop(events: { seq: number; event: QueuedEvent; reason: string }[]): void {
    for (const { event: e, reason } of events) this.o.log.write(`the node refused the event ${e.type} of ${e.updateId} (${e.id}): ${reason}; dropped`);
    this.o.store.drop(events.map((e) => e.seq));
  }

  #backOff(why: string): void {
    this.#failures++;
    this.#nextFlush = Date.now() + backoffMs(this.#failures, BACKOFF);
    if (this.#failures === 1 || atCeiling(this.#failures)) this.o.log.write(`events kept for later (${this.o.store.queued()} queued): ${why}`);
  }
}

/** The events the node says can never be accepted, from its refusal (none when it refused the batch as a whole). */
function refusals(text: string, size: number): EventRefusal[] {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return [];
  }
  const r = eventsRefusedSchema.safeParse(raw);
  if (!r.success) return [];
  const seen = new Set<number>();
  return (r.data.refused ?? []).filter((x) => x.index < size && !seen.has(x.index) && seen.add(x.index));
}

const detailOf = (text: string): string => {
  try {
    return String((JSON.parse(text) as { detail?: unknown }).detail ?? text).slice(0, 300);
  } catch {
    return text.slice(0, 300);
  }
};
