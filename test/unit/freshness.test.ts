import t from 'tap';
import { DEFAULT_GOALS, goalHours, judge, type ClassTimes } from '../../src/freshness/freshness.js';

const H = 3_600_000;
const P = Date.parse('2026-03-01T00:00:00Z');
const goals = { ...DEFAULT_GOALS, families: { 'Office 365': 72 } };
const times = (o: Partial<ClassTimes>): ClassTimes => ({
  class: 'neutral-en',
  updates: 1,
  missingUpdates: 0,
  reachedAt: P + H,
  files: 0,
  missingFiles: 0,
  filesVerifiedAt: null,
  ...o,
});

t.test('goals per class: neutral and English, other languages, families with a goal of their own', async (t) => {
  t.equal(goalHours('family:Office 365', goals), 72);
  t.equal(goalHours('neutral-en', goals), 24);
  t.equal(goalHours('other-languages', goals), 48);
});

t.test('judging: by files when there are some, late by how much, pending and overdue', async (t) => {
  const now = P + 100 * H;
  t.match(judge(times({ reachedAt: P + 23 * H }), P, goals, now), { late: 0, status: 'within-goal', goalHours: 24 });
  t.match(judge(times({ reachedAt: P + 30 * H }), P, goals, now), { late: 6, status: 'late' });
  t.match(judge(times({ reachedAt: P + H, files: 2, filesVerifiedAt: P + 26.5 * H }), P, goals, now), { late: 2.5, status: 'late' }, 'the files decide');
  t.match(judge(times({ class: 'other-languages', reachedAt: null, missingUpdates: 1 }), P, goals, P + 47 * H), {
    late: 0,
    status: 'pending',
    missing: { updates: 1, files: 0 },
  });
  t.match(
    judge(times({ class: 'other-languages', reachedAt: null, missingUpdates: 1 }), P, goals, P + 50 * H),
    { late: 2, status: 'overdue' },
    'overdue grows with the clock',
  );
  t.match(judge(times({ files: 1, missingFiles: 1 }), P, goals, P + 25 * H), { status: 'overdue', late: 1 }, 'metadata in time, a file still missing');
  t.match(judge(times({ class: 'family:Office 365', reachedAt: P + 70 * H }), P, goals, now), { status: 'within-goal', goalHours: 72 });
});
