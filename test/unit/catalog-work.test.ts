/**
 * The work after a child's catalog changes is put off during a complete resync and a
 * catch-up, and done once the burst ends, or at the latest after the maximum delay
 * (also when no batch comes any more).
 */
import t from 'tap';
import { putOffCatalogWork } from '../../src/node/catalog-work.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('put off while resyncing or catching up, done when the burst ends', async (t) => {
  const state = { resyncing: false, catchingUp: false };
  let runs = 0;
  const applied = putOffCatalogWork(
    () => state,
    () => runs++,
    60_000,
  );
  applied(0);
  t.equal(runs, 0, 'nothing changed, nothing put off: nothing to do');
  applied(3);
  t.equal(runs, 1, 'a change outside a burst: done at once');

  state.resyncing = true;
  for (let i = 0; i < 5; i++) applied(100);
  t.equal(runs, 1, 'a complete resync: put off');
  state.resyncing = false;
  applied(1);
  t.equal(runs, 2, "done once at the resync's end");

  state.catchingUp = true;
  for (let i = 0; i < 5; i++) applied(1024);
  t.equal(runs, 2, 'a catch-up: put off');
  state.catchingUp = false;
  applied(0);
  t.equal(runs, 3, 'done once by the batch that ends it, even if it changed nothing');
  applied(0);
  t.equal(runs, 3, 'and not again');
});

t.test('a catch-up puts the work off the maximum delay at most, also when no batch comes', async (t) => {
  const state = { resyncing: false, catchingUp: true };
  let runs = 0;
  const applied = putOffCatalogWork(
    () => state,
    () => runs++,
    50,
  );
  applied(1024);
  t.equal(runs, 0);
  // The stream stalls: no more batches, the child still catching up.
  for (let i = 0; i < 100 && runs === 0; i++) await sleep(10);
  t.equal(runs, 1, 'done after the maximum delay without another batch');
  // Batches keep coming past the delay: done again, not once a batch.
  let calls = 0;
  const end = Date.now() + 200;
  while (Date.now() < end) {
    applied(1024);
    calls++;
    await sleep(5);
  }
  t.ok(runs >= 2 && runs < calls, `done now and then (${runs} times for ${calls} batches)`);
});
