import { readFileSync } from 'node:fs';

/** What time it is, in ms since the epoch. The node's parts that judge time take one. */
export type Clock = () => number;

export const systemClock: Clock = () => Date.now();

/**
 * A clock a test controls (`--clock-file`): the file holds a time (ms since the epoch,
 * or an ISO 8601 string), read on every call; while it is missing or unreadable the
 * system clock answers. For tests of time-based behaviour (catalog freshness goals)
 * across real processes, without sleeping through hours.
 */
export function fileClock(path: string): Clock {
  return () => {
    let text: string;
    try {
      text = readFileSync(path, 'utf8').trim();
    } catch {
      return Date.now();
    }
    const n = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
    return Number.isFinite(n) ? n : Date.now();
  };
}
