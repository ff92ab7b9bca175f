import type { SqlConn } from '../db/exec.js';
import type { Logger } from '../lib/log.js';
import type { CatalogIndex } from '../assessment/catalog-index.js';
import type { Computers } from '../assessment/queries.js';
import type { AgentEvent, EventsStored } from '../agent-api/events.js';
import type { Ceilings } from './events.js';
import type { Installation } from './installation.js';
import { AssignmentAnswers } from './assignments.js';
import { Targeting } from './targeting.js';
import { DeliveryStatuses } from './delivery-status.js';

/**
 * Delivery: which computers each policy delivers which updates to (targeting.ts),
 * what every agent should install now (assignments.ts), and what agents report
 * back (delivery-status.ts), behind one face for the node and its routes.
 */

export type { Targets } from './targeting.js';
export { etagMatches } from './assignments.js';

/** What the engine tells the node. */
export interface DeliveryHooks {
  /** A policy changed (the files the node needs may have). */
  policyChanged?: () => void;
  /** Delivery states changed (events stored, targets refreshed): the roll-up reports soon. */
  statusChanged?: () => void;
}

export class Delivery {
  readonly #answers: AssignmentAnswers;
  readonly #targeting: Targeting;
  readonly #statuses: DeliveryStatuses;
  constructor(
    conn: SqlConn,
    computers: Computers,
    index: CatalogIndex,
    nodeInstallation: () => Promise<Installation>,
    staleBefore: () => Promise<number>,
    logger: Logger,
    private readonly hooks: DeliveryHooks = {},
  ) {
    const changed = () => this.hooks.statusChanged?.();
    this.#answers = new AssignmentAnswers(conn, nodeInstallation);
    this.#targeting = new Targeting(conn, computers, index, staleBefore, logger, this.#answers, changed);
    this.#statuses = new DeliveryStatuses(conn, index, nodeInstallation, this.#answers, changed);
  }

  start(): Promise<void> {
    return this.#targeting.start();
  }

  async stop(): Promise<void> {
    await this.#targeting.stop();
    await this.#statuses.stop();
  }

  async idle(): Promise<void> {
    await this.#targeting.idle();
    await this.#statuses.idle();
  }

  /* ---------------- targeting ---------------- */

  /** Computers were (re)assessed: refresh their rows against every enabled policy. */
  computersAssessed(ids: Iterable<number>): void {
    this.#targeting.computersAssessed(ids);
  }

  /** A policy was created or changed: refresh it against every computer. */
  policyChanged(id: string): void {
    this.#answers.invalidateAll();
    this.hooks.policyChanged?.();
    this.#targeting.policyChanged(id);
  }

  /** Files were verified, settings changed: every answer is rebuilt on its next request. */
  invalidateAll(): void {
    this.#answers.invalidateAll();
  }

  /* ---------------- assignments ---------------- */

  /** This computer's answer: from memory while current, else built, hashed and kept. */
  assignments(computerId: number | null): Promise<{ etag: string; body: string }> {
    return this.#answers.get(computerId);
  }

  /* ---------------- events ---------------- */

  /** Stores an agent's batch of events (delivery-status.ts); a batch that fails its checks is refused whole. */
  events(computerId: number, events: AgentEvent[], now = Date.now()): Promise<EventsStored> {
    return this.#statuses.events(computerId, events, now);
  }

  /** The retry ceilings for an update on a computer: the most lenient of the policies delivering it. */
  ceilings(computerId: number, updateId: string, node: Installation): Promise<Ceilings> {
    return this.#statuses.ceilings(computerId, updateId, node);
  }

  /** Resets failure counts (all of a computer's updates, or some); the agent sees it at its next check-in. */
  clearRetries(computerId: number, updateIds: string[] | null, now = Date.now()): Promise<{ cleared: number }> {
    return this.#statuses.clearRetries(computerId, updateIds, now);
  }

  /** A computer's status events as its agent sent them, newest first (optionally of one update). */
  eventsOf(computerId: number, o: { update?: string | undefined; before?: number | undefined; limit: number }) {
    return this.#statuses.eventsOf(computerId, o);
  }

  /** Drops events received before `before` (the dedupe window is the retention). */
  pruneEvents(before: number): Promise<number> {
    return this.#statuses.pruneEvents(before);
  }
}
