/**
 * A snapshot file's parts: the first a quarter of the others (the child starts loading
 * while the parent builds the second), the others an eighth of the catalog (100 to
 * 25,000 updates), every update in exactly one part.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { partEnds, partSize, updatesFileCuts } from '../../src/catalog/snapshot-file.js';
import { openNative } from '../../src/db/native.js';
import { tempDir } from '../helpers.js';

/** The parts' sizes: from the ends (each the last position of its part) and the catalog's size. */
const sizes = (n: number) => {
  const ends = [...partEnds(n), n];
  return ends.map((e, i) => e - (i ? ends[i - 1]! : 0));
};

t.test('the first part is a quarter of the others; every update in one part', async (t) => {
  t.same(sizes(100_000), [3_125, 12_500, 12_500, 12_500, 12_500, 12_500, 12_500, 12_500, 9_375]);
  for (const n of [1, 2, 99, 100, 101, 401, 20_000, 99_999, 250_000, 1_000_000]) {
    const s = sizes(n);
    t.equal(
      s.reduce((a, b) => a + b, 0),
      n,
      `${n}: the parts add up to the catalog`,
    );
    t.ok(
      s.every((x) => x > 0),
      `${n}: no empty part`,
    );
    t.ok(s[0]! <= Math.max(1, partSize(n) / 4), `${n}: the first part at most a quarter of partSize`);
    t.ok(
      s.slice(1, -1).every((x) => x === partSize(n)),
      `${n}: the middle parts partSize each`,
    );
  }
  t.same(partEnds(0), [], 'an empty catalog: one (empty) part, no cut');
  t.same(partEnds(1), [], 'one update: one part');
  t.equal(sizes(1_000_000).length, 1 + Math.ceil((1_000_000 - 6_250) / 25_000), 'at most 25,000 updates a part');
});

t.test('the cuts are the ids at the parts’ ends, in id order', async (t) => {
  const dir = await tempDir(t);
  const db = openNative(join(dir, 'cuts.db'));
  t.teardown(() => db.close());
  db.exec('CREATE TABLE updates (id TEXT PRIMARY KEY NOT NULL)');
  const ins = db.prepare('INSERT INTO updates (id) VALUES (?)');
  const ids: string[] = [];
  for (const n of [0, 1, 99, 100, 101, 4_321, 30_000]) {
    // Ids added out of order: the cuts follow id order, not insertion order.
    db.exec('BEGIN');
    while (ids.length < n) {
      const id = randomBytes(6).toString('hex');
      ins.run(id);
      ids.push(id);
    }
    db.exec('COMMIT');
    const sorted = [...ids].sort();
    const want = partEnds(n).map((end) => sorted[end - 1]);
    t.same(updatesFileCuts(db), want, `${n} updates`);
  }
});
