import type { Context } from 'hono';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { Counter } from 'prom-client';
import type { Logger } from '../lib/log.js';

/**
 * Failed authentication, seen: every failure is counted (`patchtree_auth_failures_total`
 * by surface) and logged, at most one line per surface and source address every 10 s
 * (with how many were folded into it), so a flood costs a log line, not a disk. Failed
 * enrolments are limited per source address: past 20 a minute, that address's
 * enrolments are refused (429) until the minute has passed; successful ones never count.
 */

const LOG_EVERY_MS = 10_000;
const MAX_TRACKED = 10_000;
export const ENROLL_FAILURES_PER_MINUTE = 20;

export type Surface = 'api' | 'agent' | 'enrolment' | 'console' | 'grpc';

export function sourceOf(c: Context): string {
  try {
    return getConnInfo(c).remote.address ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** A map that forgets its oldest keys past a bound. */
function bounded<V>(m: Map<string, V>, key: string, v: V): void {
  m.delete(key);
  m.set(key, v);
  while (m.size > MAX_TRACKED) m.delete(m.keys().next().value!);
}

export class AuthGuard {
  readonly #logged = new Map<string, { at: number; folded: number }>();
  readonly #enrolFailures = new Map<string, number[]>();

  constructor(
    private readonly counter: Counter<'surface'>,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** A request failed to authenticate. */
  failed(surface: Surface, source: string, why: string): void {
    this.counter.inc({ surface });
    const key = `${surface}\t${source}`;
    const t = this.now();
    const last = this.#logged.get(key);
    if (last && t - last.at < LOG_EVERY_MS) {
      last.folded++;
      return;
    }
    this.logger.warn({ surface, source, why, ...(last?.folded ? { alsoSince: last.folded } : {}) }, 'authentication failed');
    bounded(this.#logged, key, { at: t, folded: 0 });
  }

  /** Seconds until `source` may try to enrol again, or 0. */
  enrolBlocked(source: string): number {
    const t = this.now();
    const recent = (this.#enrolFailures.get(source) ?? []).filter((at) => t - at < 60_000);
    if (recent.length < ENROLL_FAILURES_PER_MINUTE) return 0;
    return Math.max(1, Math.ceil((recent[0]! + 60_000 - t) / 1000));
  }

  enrolFailed(source: string): void {
    const t = this.now();
    const recent = (this.#enrolFailures.get(source) ?? []).filter((at) => t - at < 60_000);
    recent.push(t);
    bounded(this.#enrolFailures, source, recent.slice(-ENROLL_FAILURES_PER_MINUTE));
  }
}
