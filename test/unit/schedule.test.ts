import t from 'tap';
import { inWindows, localTime, nextOpening, windowSchema, zoneSchema } from '../../src/lib/schedule.js';

// 2026-11-23 is a Monday.
const at = (iso: string) => new Date(iso);

t.test('local time in a zone', async (t) => {
  t.same(localTime(at('2026-11-23T23:30:00Z'), 'UTC'), { day: 1, minute: 23 * 60 + 30 });
  // Berlin is UTC+1 in November: Monday 23:30 UTC is Tuesday 00:30 there.
  t.same(localTime(at('2026-11-23T23:30:00Z'), 'Europe/Berlin'), { day: 2, minute: 30 });
  // New York is UTC-5 in November.
  t.same(localTime(at('2026-11-23T03:00:00Z'), 'America/New_York'), { day: 0, minute: 22 * 60 });
});

t.test('windows within a day and across midnight', async (t) => {
  const office = [{ days: ['mon' as const, 'tue' as const], start: '09:00', end: '17:00' }];
  t.ok(inWindows(office, 'UTC', at('2026-11-23T09:00:00Z')), 'start is inside');
  t.notOk(inWindows(office, 'UTC', at('2026-11-23T17:00:00Z')), 'end is outside');
  t.notOk(inWindows(office, 'UTC', at('2026-11-25T10:00:00Z')), 'wednesday is not a window day');
  const night = [{ days: ['fri' as const], start: '22:00', end: '06:00' }];
  t.ok(inWindows(night, 'UTC', at('2026-11-27T23:00:00Z')), 'friday night');
  t.ok(inWindows(night, 'UTC', at('2026-11-28T05:59:00Z')), "saturday morning belongs to friday's window");
  t.notOk(inWindows(night, 'UTC', at('2026-11-28T22:30:00Z')), 'saturday night is not');
  t.notOk(inWindows(night, 'UTC', at('2026-11-27T05:00:00Z')), 'friday morning belongs to thursday, which has none');
  t.ok(inWindows(night, 'Europe/Berlin', at('2026-11-27T21:30:00Z')), 'read in the zone: 22:30 in Berlin');
  t.notOk(inWindows(night, 'America/New_York', at('2026-11-27T23:00:00Z')), '18:00 in New York');
});

t.test('next opening', async (t) => {
  const w = [{ days: ['wed' as const], start: '03:00', end: '04:00' }];
  t.equal(nextOpening(w, 'UTC', at('2026-11-23T10:00:00Z'))?.toISOString(), '2026-11-25T03:00:00.000Z');
  t.equal(nextOpening(w, 'UTC', at('2026-11-25T03:30:00Z'))?.toISOString(), '2026-11-25T03:30:00.000Z', 'open now');
  t.equal(nextOpening(w, 'UTC', at('2026-11-25T04:00:00Z'))?.toISOString(), '2026-12-02T03:00:00.000Z', 'a week later');
});

t.test('validation', async (t) => {
  t.notOk(windowSchema.safeParse({ days: ['mon'], start: '24:00', end: '01:00' }).success);
  t.notOk(windowSchema.safeParse({ days: [], start: '01:00', end: '02:00' }).success);
  t.notOk(windowSchema.safeParse({ days: ['monday'], start: '01:00', end: '02:00' }).success);
  t.ok(windowSchema.safeParse({ days: ['sun'], start: '23:00', end: '01:00' }).success);
  t.ok(zoneSchema.safeParse('Europe/Berlin').success);
  t.notOk(zoneSchema.safeParse('Mars/Olympus').success);
});
