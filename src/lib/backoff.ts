/**
 * Exponential backoff with jitter, the one every retry loop uses: `baseMs * 2^(attempt-1)`,
 * at most `maxMs`, times 0.5..1.5 so that many nodes or agents that failed together do
 * not come back together. `attempt` counts from 1 (the first retry waits about `baseMs`).
 */
export function backoffMs(attempt: number, o: { baseMs: number; maxMs: number }, random: () => number = Math.random): number {
  const exp = Math.min(o.maxMs, o.baseMs * 2 ** Math.min(Math.max(0, attempt - 1), 52));
  return Math.round(exp * (0.5 + random()));
}
