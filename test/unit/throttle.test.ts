import t from 'tap';
import { RateLimit } from '../../src/content/throttle.js';
import { backoffMs as lib } from '../../src/lib/backoff.js';

t.test('a virtual-clock limit reserves time at its rate', async (t) => {
  let now = 1000;
  const l = new RateLimit(1000, 0, () => now); // 1000 bytes/s, no burst
  t.equal(l.reserve(500), 1500, '500 bytes take 0.5 s');
  t.equal(l.reserve(500), 2000, 'the next 500 queue behind them');
  now = 5000;
  t.equal(l.reserve(100), 5100, 'idle time is not saved up beyond the burst');
  t.equal(new RateLimit(0, 0, () => now).reserve(1e9), 0, 'rate 0 is unlimited');
});

t.test('global and per-host limits: the slower one decides, delays do not add up', async (t) => {
  const now = 0;
  const global = new RateLimit(10_000, 0, () => now);
  const hostA = new RateLimit(1000, 0, () => now);
  const hostB = new RateLimit(1000, 0, () => now);
  const a = Math.max(global.reserve(1000), hostA.reserve(1000));
  const b = Math.max(global.reserve(1000), hostB.reserve(1000));
  t.equal(a, 1000, 'host A at 1000 B/s: 1 s');
  t.equal(b, 1000, 'host B has its own budget: also 1 s, not 2');
  const c = Math.max(global.reserve(9000), hostA.reserve(1));
  t.equal(c, 1100, 'the global budget then binds: 11,000 bytes at 10,000 B/s');
});

t.test('backoff doubles with jitter and a cap', async (t) => {
  const s = { baseMs: 100, maxMs: 1000 };
  const backoffMs = lib;
  t.equal(
    backoffMs(1, s, () => 0.5),
    100,
  );
  t.equal(
    backoffMs(2, s, () => 0.5),
    200,
  );
  t.equal(
    backoffMs(3, s, () => 0),
    200,
    'jitter 0.5x',
  );
  t.equal(
    backoffMs(3, s, () => 0.999),
    600,
    'jitter up to 1.5x',
  );
  t.equal(
    backoffMs(20, s, () => 0.5),
    1000,
    'capped',
  );
});
