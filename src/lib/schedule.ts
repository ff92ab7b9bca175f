import { z } from 'zod';

/**
 * Weekly time windows ("Mon-Fri 22:00-06:00 Europe/Berlin"): replication
 * schedules per child, and the maintenance windows of installation settings.
 * A window whose end is not after its start runs past midnight into the next day.
 */

export const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
export type Day = (typeof DAYS)[number];

const HHMM = /^([01]\d|2[0-3]):[0-5]\d$/;

export const windowSchema = z.strictObject({
  days: z.array(z.enum(DAYS)).min(1).describe('Days the window starts on'),
  start: z.string().regex(HHMM, 'HH:MM, 24-hour').describe('Start, HH:MM local to the zone'),
  end: z.string().regex(HHMM, 'HH:MM, 24-hour').describe('End, HH:MM; at or before start means the next day'),
});
export type TimeWindow = z.infer<typeof windowSchema>;

/** A time zone Intl knows (IANA name or UTC). */
export const zoneSchema = z
  .string()
  .min(1)
  .max(64)
  .refine((z) => {
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: z });
      return true;
    } catch {
      return false;
    }
  }, 'an IANA time zone such as UTC or Europe/Berlin');

const formatters = new Map<string, Intl.DateTimeFormat>();

/** Day of week and minute of day of an instant in a zone. */
export function localTime(at: Date, zone: string): { day: number; minute: number } {
  let f = formatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: zone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    formatters.set(zone, f);
  }
  const parts = f.formatToParts(at);
  const get = (t: string) => parts.find((p) => p.type === t)?.value ?? '';
  const day = DAYS.indexOf(get('weekday').toLowerCase().slice(0, 3) as Day);
  return { day, minute: Number(get('hour')) * 60 + Number(get('minute')) };
}

const minutes = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

/** Is `at` inside any of the windows, read in `zone`? */
export function inWindows(windows: readonly TimeWindow[], zone: string, at: Date): boolean {
  const { day, minute } = localTime(at, zone);
  const yesterday = (day + 6) % 7;
  return windows.some((w) => {
    const s = minutes(w.start);
    const e = minutes(w.end);
    const starts = (d: number) => w.days.includes(DAYS[d]!);
    if (e > s) return starts(day) && minute >= s && minute < e;
    // Crosses midnight: the evening of a start day, or the morning after one.
    return (starts(day) && minute >= s) || (starts(yesterday) && minute < e);
  });
}

/**
 * The next instant (to the minute, within 8 days) at which the windows open, or
 * `at` itself when they are open now; null when they never open.
 */
export function nextOpening(windows: readonly TimeWindow[], zone: string, at: Date): Date | null {
  if (inWindows(windows, zone, at)) return at;
  const start = Math.floor(at.getTime() / 60_000 + 1) * 60_000;
  for (let t = start; t < start + 8 * 86_400_000; t += 60_000) {
    if (inWindows(windows, zone, new Date(t))) return new Date(t);
  }
  return null;
}
