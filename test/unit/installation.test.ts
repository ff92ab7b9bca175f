import t from 'tap';
import {
  DEFAULT_INSTALLATION,
  effectiveInstallation,
  inMaintenance,
  installDecision,
  restartDecision,
  type Installation,
} from '../../src/delivery/installation.js';
import { applyEvent, newStatus } from '../../src/delivery/events.js';
import type { EventType } from '../../src/agent-api/events.js';

const Z = (s: string) => new Date(s);
const berlinNights: Installation = {
  ...DEFAULT_INSTALLATION,
  maintenance: { mode: 'windows', zone: 'Europe/Berlin', windows: [{ days: ['mon', 'tue', 'wed', 'thu', 'fri'], start: '22:00', end: '04:00' }] },
};

t.test('a weeknight window across a whole week, in Berlin, through the spring DST change', async (t) => {
  // Mon 2026-03-23 00:00 CET to Mon 2026-03-30 00:00 CEST, hour by hour. Berlin is
  // UTC+1 until 2026-03-29 01:00Z, UTC+2 after: the offsets are written here by hand.
  const switchAt = Date.parse('2026-03-29T01:00:00Z');
  let inside = 0;
  for (let t0 = Date.parse('2026-03-22T23:00:00Z'); t0 < Date.parse('2026-03-29T22:00:00Z'); t0 += 3_600_000) {
    const offset = t0 < switchAt ? 1 : 2;
    const local = new Date(t0 + offset * 3_600_000);
    const day = local.getUTCDay(); // 0 = Sunday
    const hour = local.getUTCHours();
    const expected = (day >= 1 && day <= 5 && hour >= 22) || (day >= 2 && day <= 6 && hour < 4);
    const got = inMaintenance(berlinNights, new Date(t0), 'UTC');
    if (got !== expected) t.fail(`${local.toISOString().slice(0, 16)} local: expected ${expected}, got ${got}`);
    if (got) inside++;
  }
  t.equal(inside, 5 * 6, 'five nights of six hours');
  // The edges, to the minute.
  t.notOk(inMaintenance(berlinNights, Z('2026-03-23T20:59:00Z'), 'UTC'), 'Mon 21:59 CET: closed');
  t.ok(inMaintenance(berlinNights, Z('2026-03-23T21:00:00Z'), 'UTC'), 'Mon 22:00 CET: open');
  t.ok(inMaintenance(berlinNights, Z('2026-03-28T02:59:00Z'), 'UTC'), 'Sat 03:59 CET: the Friday night still');
  t.notOk(inMaintenance(berlinNights, Z('2026-03-28T03:00:00Z'), 'UTC'), 'Sat 04:00 CET: closed');
  t.notOk(inMaintenance(berlinNights, Z('2026-03-28T21:30:00Z'), 'UTC'), 'Sat 22:30: Saturday starts no window');
  t.ok(inMaintenance(berlinNights, Z('2026-03-30T20:00:00Z'), 'UTC'), 'Mon 22:00 CEST (20:00Z): open on summer time');
  t.notOk(inMaintenance(berlinNights, Z('2026-03-30T19:59:00Z'), 'UTC'), 'Mon 21:59 CEST: closed');
});

t.test('a window spanning the DST hour lasts 2 real hours in spring and 4 in autumn', async (t) => {
  const sunday: Installation = {
    ...DEFAULT_INSTALLATION,
    maintenance: { mode: 'windows', zone: 'Europe/Berlin', windows: [{ days: ['sun'], start: '01:00', end: '04:00' }] },
  };
  const open = (from: string, to: string) => {
    let n = 0;
    for (let x = Date.parse(from); x < Date.parse(to); x += 60_000) if (inMaintenance(sunday, new Date(x), 'UTC')) n++;
    return n;
  };
  // Spring: 01:00 CET = 00:00Z; 02:00 CET jumps to 03:00 CEST at 01:00Z; 04:00 CEST = 02:00Z.
  t.equal(open('2026-03-28T22:00:00Z', '2026-03-29T06:00:00Z'), 120, 'spring: 120 minutes');
  t.ok(inMaintenance(sunday, Z('2026-03-29T00:00:00Z'), 'UTC'));
  t.notOk(inMaintenance(sunday, Z('2026-03-29T02:00:00Z'), 'UTC'));
  // Autumn: 01:00 CEST = 23:00Z Saturday; 03:00 CEST falls back to 02:00 CET at 01:00Z; 04:00 CET = 03:00Z.
  t.equal(open('2026-10-24T20:00:00Z', '2026-10-25T06:00:00Z'), 240, 'autumn: 240 minutes');
  t.ok(inMaintenance(sunday, Z('2026-10-25T02:30:00Z'), 'UTC'), '03:30 CET, the second time round');
  t.notOk(inMaintenance(sunday, Z('2026-10-25T03:00:00Z'), 'UTC'));
  // The next opening is found across the change.
  const d = installDecision(sunday, { startAt: Z('2026-01-01T00:00:00Z'), deadline: null }, Z('2026-03-28T12:00:00Z'), 'UTC');
  t.same(d, { install: false, reason: 'outside-window', next: Z('2026-03-29T00:00:00Z') });
});

t.test('"local" windows follow the computer\'s own zone', async (t) => {
  const local: Installation = {
    ...DEFAULT_INSTALLATION,
    maintenance: { mode: 'windows', zone: 'local', windows: [{ days: ['mon'], start: '22:00', end: '23:00' }] },
  };
  // Mon 2026-03-23 22:30 in New York (EDT since March 8, UTC-4) is 02:30Z on Tuesday.
  t.ok(inMaintenance(local, Z('2026-03-24T02:30:00Z'), 'America/New_York'));
  t.notOk(inMaintenance(local, Z('2026-03-24T02:30:00Z'), 'Europe/Berlin'), 'the same instant is Tuesday 03:30 in Berlin');
  t.ok(inMaintenance(local, Z('2026-03-23T21:30:00Z'), 'Europe/Berlin'));
});

t.test('install decisions: start, windows, deadline', async (t) => {
  const startAt = Z('2026-03-23T08:00:00Z'); // Monday 09:00 CET
  const deadline = Z('2026-03-25T12:00:00Z'); // Wednesday 13:00 CET
  t.same(installDecision(berlinNights, { startAt, deadline }, Z('2026-03-23T07:00:00Z'), 'UTC'), { install: false, reason: 'not-started', next: startAt });
  t.same(
    installDecision(berlinNights, { startAt, deadline }, Z('2026-03-23T10:00:00Z'), 'UTC'),
    { install: false, reason: 'outside-window', next: Z('2026-03-23T21:00:00Z') },
    'waits for the evening window',
  );
  t.same(installDecision(berlinNights, { startAt, deadline }, Z('2026-03-23T22:00:00Z'), 'UTC'), {
    install: true,
    reason: 'window',
    next: Z('2026-03-23T22:00:00Z'),
  });
  // Wednesday 12:30: the next window (Wed 22:00) is after the deadline, which comes first.
  const near = Z('2026-03-25T11:30:00Z');
  t.same(installDecision(berlinNights, { startAt, deadline }, near, 'UTC'), { install: false, reason: 'outside-window', next: deadline });
  t.same(
    installDecision(berlinNights, { startAt, deadline }, Z('2026-03-25T12:00:00Z'), 'UTC').reason,
    'deadline',
    'at the deadline: installs outside the windows',
  );
  const any = effectiveInstallation(berlinNights, { maintenance: { mode: 'any-time' } });
  t.same(installDecision(any, { startAt, deadline: null }, Z('2026-03-24T12:00:00Z'), 'UTC').reason, 'any-time', 'a policy override makes any time fine');
  t.same(any.retries, berlinNights.retries, 'overrides replace only the parts they name');
  const never: Installation = {
    ...DEFAULT_INSTALLATION,
    maintenance: { mode: 'windows', zone: 'UTC', windows: [{ days: ['sun'], start: '00:00', end: '00:01' }] },
  };
  t.same(installDecision(never, { startAt, deadline: null }, Z('2026-03-23T10:00:00Z'), 'UTC').next, Z('2026-03-29T00:00:00Z'), 'the next opening days away');
});

t.test('restart decisions: never, in a window, forced after the deadline with a warning', async (t) => {
  const deadline = Z('2026-03-25T12:00:00Z');
  const since = Z('2026-03-24T10:00:00Z');
  const mode = (m: Installation['restart']['mode'], warningMinutes = 30): Installation => ({ ...berlinNights, restart: { mode: m, warningMinutes } });
  t.same(restartDecision(mode('never'), deadline, since, Z('2026-03-30T00:00:00Z'), 'UTC'), { action: 'never', at: null });
  t.same(restartDecision(mode('in-window'), deadline, since, Z('2026-03-24T10:00:00Z'), 'UTC'), { action: 'wait', at: Z('2026-03-24T21:00:00Z') });
  t.same(restartDecision(mode('in-window'), deadline, since, Z('2026-03-24T21:10:00Z'), 'UTC'), { action: 'restart', at: Z('2026-03-24T21:10:00Z') });
  t.same(restartDecision(mode('in-window'), deadline, since, Z('2026-03-25T13:00:00Z'), 'UTC').action, 'wait', 'in-window never forces, deadline or not');
  const after = mode('after-deadline');
  t.same(
    restartDecision(after, deadline, since, Z('2026-03-24T10:00:00Z'), 'UTC'),
    { action: 'wait', at: Z('2026-03-24T21:00:00Z') },
    'before the deadline: the next window',
  );
  t.same(
    restartDecision(after, deadline, since, Z('2026-03-25T12:10:00Z'), 'UTC'),
    { action: 'warn', at: Z('2026-03-25T12:30:00Z') },
    'past the deadline: warn, restart after the lead time',
  );
  t.same(restartDecision(after, deadline, since, Z('2026-03-25T12:30:00Z'), 'UTC'), { action: 'restart', at: Z('2026-03-25T12:30:00Z') });
  const late = Z('2026-03-26T09:00:00Z'); // pending only since after the deadline: still warned first
  t.same(restartDecision(after, deadline, late, Z('2026-03-26T09:05:00Z'), 'UTC'), { action: 'warn', at: Z('2026-03-26T09:30:00Z') });
});

t.test('status events: counters, order, ceilings', async (t) => {
  const c = { download: 3, install: 2 };
  const at = (m: number) => Date.parse('2026-03-23T10:00:00Z') + m * 60_000;
  const run = (evs: [EventType, number][], s = newStatus()) => evs.reduce((s, [type, m], i) => applyEvent(s, { type, at: at(m), attempt: i + 1 }, c), s);
  let s = run([
    ['download-started', 0],
    ['download-failed', 1],
    ['download-failed', 2],
  ]);
  t.match(s, { state: 'failed', downloadFailures: 2 });
  s = run([['download-failed', 3]], s);
  t.match(s, { state: 'ceiling-reached', downloadFailures: 3 });
  t.match(run([['install-succeeded', 4]], s), { state: 'installed' }, 'an install that succeeds after all is installed');
  // An older event arriving late counts but does not move the state back.
  const o = run([
    ['install-started', 10],
    ['download-failed', 5],
  ]);
  t.match(o, { state: 'installing', downloadFailures: 1 });
  // Failures from before a clear are not counted again.
  const cleared = { ...newStatus(), retriesClearedAt: at(20) };
  t.match(
    run(
      [
        ['install-failed', 19],
        ['install-failed', 21],
      ],
      cleared,
    ),
    { installFailures: 1, state: 'failed' },
  );
});
