/**
 * The catalog's replicated form built by SQLite (wireUpdatesSql), the child's bulk
 * insert of a fresh resync (ReplicaWriter.insertNew) and its merge of a tail file
 * (mergeUpdatesFile), checked against the per-update JavaScript paths they replace,
 * on the real Microsoft catalog in real SQLite files.
 */
import t, { type Test } from 'tap';
import { join } from 'node:path';
import { openDatabase } from '../../src/db/index.js';
import { openConn, type SqlConn } from '../../src/db/exec.js';
import { applyCatalog } from '../../src/catalog/import-core.js';
import { readUpdatePayloads, wireUpdatesSql, type WireUpdate } from '../../src/catalog/replica.js';
import type { UpdatePayload } from '../../src/catalog/import-core.js';
import { BatchApplier } from '../../src/replication/applier.js';
import { replicatedKinds } from '../../src/node/kinds.js';
import type { WireChange } from '../../src/replication/protocol.js';
import { anyLanguageMatches, languageMatches } from '../../src/lib/languages.js';
import { openNative } from '../../src/db/native.js';
import { buildUpdatesFile } from '../../src/catalog/snapshot-file.js';
import { buildRealCatalog, makeKeys, tempDir } from '../helpers.js';

const ORIGIN = '11111111-1111-4111-8111-111111111111';

async function rootWithCatalog(
  dir: string,
  driver: 'binding' | 'client' = 'binding',
  name = 'root',
): Promise<{ conn: SqlConn; close: () => void; orm: Awaited<ReturnType<typeof openDatabase>>['orm'] }> {
  const keys = await makeKeys(dir, `keys-${name}`);
  const { file } = await buildRealCatalog(dir, keys);
  const db = await openDatabase(`file:${join(dir, `${name}.db`)}`);
  // The client driver is what a remote libsql server gets (no file path).
  const conn = openConn(driver === 'binding' ? db : { filePath: null, url: db.url });
  await applyCatalog(
    conn,
    file,
    { origin: ORIGIN, fileSha256: 'f'.repeat(64), keyId: keys.keyId, importedBy: 'test', source: 'upload', now: 1_700_000_000_000 },
    (fn) => conn.transaction(fn),
  );
  // One update with a local custom severity and one with a replicated one, so both key forms travel.
  await conn.exec("INSERT INTO custom_severities (name, rank, created_at) VALUES ('Local', 1, 0)");
  await conn.exec("INSERT INTO custom_severities (name, rank, created_at, origin_key) VALUES ('Upstream', 2, 0, 'up:7')");
  const ids = (await conn.all<{ id: string }>('SELECT id FROM updates ORDER BY id LIMIT 2', [])).map((r) => r.id);
  await conn.run("UPDATE updates SET custom_severity_id = (SELECT id FROM custom_severities WHERE name = 'Local') WHERE id = ?", [ids[0]]);
  await conn.run("UPDATE updates SET custom_severity_id = (SELECT id FROM custom_severities WHERE name = 'Upstream') WHERE id = ?", [ids[1]]);
  return {
    conn,
    orm: db.orm,
    close: () => {
      conn.close();
      db.close();
    },
  };
}

/** A child's database (migrated) with its upstream state at cursor 0, and the `libsql` connection its applier writes through. */
async function childDb(t: Test, file: string, epoch: string, languages: string) {
  const db = await openDatabase(`file:${file}`);
  t.teardown(() => db.close());
  const native = openNative(file);
  t.teardown(() => native.close());
  native
    .prepare(
      "INSERT INTO upstream_state (id, address, parent_id, credential, epoch, cursor, languages, resyncing, updated_at) VALUES (1, 'x', 'p', 'c', ?, 0, ?, 0, 0)",
    )
    .run(epoch, languages);
  return { db, native };
}

/** What readUpdatePayloads + the parent's old JS filter sent for these languages, normalised as a child reads it. */
function jsForm(p: UpdatePayload, languages: string[]): Record<string, unknown> | null {
  if (!anyLanguageMatches(p.files.map((f) => f.language).join(','), languages)) return null;
  return normalise({ ...p, files: p.files.filter((f) => languageMatches(f.language, languages)) });
}

/** Absent and null optional fields read the same on the child (columns() maps both to NULL). */
function normalise(p: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p)) if (v !== null && v !== undefined && k !== 'contentHash') out[k] = v;
  return out;
}

async function allWire(conn: SqlConn, languages: string[], limit: number): Promise<WireUpdate[]> {
  const out: WireUpdate[] = [];
  let after = '';
  for (;;) {
    const [q, args] = wireUpdatesSql(ORIGIN, languages, { afterId: after, limit });
    const page = await conn.all<WireUpdate>(q, args);
    if (!page.length) return out;
    out.push(...page);
    after = page[page.length - 1]!.id;
  }
}

t.test('the SQL-built replicated form equals the JavaScript one, for each language set', async (t) => {
  const dir = await tempDir(t);
  const root = await rootWithCatalog(dir);
  t.teardown(root.close);
  const all = await readUpdatePayloads(root.orm, ORIGIN, { afterId: '', limit: 100_000 });
  t.equal(all.length, 495, 'the real catalog');
  const hashes = new Map(
    (await root.conn.all<{ id: string; content_hash: string }>('SELECT id, content_hash FROM updates', [])).map((r) => [r.id, r.content_hash]),
  );
  for (const languages of [[], ['en'], ['de'], ['fr', 'ja'], ['ca']]) {
    const expected = all.map((p) => jsForm(p, languages)).filter((p) => p !== null);
    const wire = await allWire(root.conn, languages, 37); // a page size that does not divide the catalog
    t.equal(wire.length, expected.length, `${languages.join(',') || '(none)'}: the same updates`);
    t.same(
      wire.map((w) => normalise(JSON.parse(w.payload) as Record<string, unknown>)),
      expected,
      `${languages.join(',') || '(none)'}: the same payloads`,
    );
    t.ok(
      wire.every((w) => (JSON.parse(w.payload) as { contentHash: string }).contentHash === hashes.get(w.id)),
      "each with the origin's content hash",
    );
  }
  const levels = all.slice(0, 2).map((p) => p.customSeverity);
  t.match(levels, [new RegExp(`^${ORIGIN}:\\d+$`), 'up:7'], 'custom severities by key, both forms');
  const some = all
    .filter((p) => p.files.length)
    .slice(3, 6)
    .map((p) => p.id);
  const [q, args] = wireUpdatesSql(ORIGIN, ['de'], { ids: [...some, 'no-such-update'] });
  t.same(
    (await root.conn.all<WireUpdate>(q, args)).map((r) => r.id).sort(),
    all
      .filter((p) => some.includes(p.id) && jsForm(p, ['de']))
      .map((p) => p.id)
      .sort(),
    'by ids: those present and in the languages',
  );
});

t.test('a fresh resync written in bulk leaves exactly the rows of the per-update path', async (t) => {
  const dir = await tempDir(t);
  const root = await rootWithCatalog(dir);
  t.teardown(root.close);
  const wire = await allWire(root.conn, ['de', 'en'], 100);
  const asChanges = (strip: boolean): WireChange[] =>
    wire.map((w) => {
      const p = JSON.parse(w.payload) as Record<string, unknown>;
      if (strip) delete p.contentHash; // an older parent: applied one at a time
      return { seq: 0, kind: 'update', key: w.id, op: 'upsert', payload: Buffer.from(strip ? JSON.stringify(p) : w.payload) };
    });
  const children: { name: string; db: Awaited<ReturnType<typeof openDatabase>>; file: string }[] = [];
  const applied: number[] = [];
  for (const [i, name] of ['bulk', 'single'].entries()) {
    const file = join(dir, `${name}.db`);
    const { db, native } = await childDb(t, file, '', '');
    const c = { name, db, file };
    children.push(c);
    native.exec("INSERT INTO custom_severities (name, rank, created_at, origin_key) VALUES ('Upstream', 2, 0, 'up:7')");
    const a = new BatchApplier(native, replicatedKinds(), `node-${i}`);
    a.resyncStart(true);
    const changes = asChanges(c.name === 'single');
    let n = 0;
    for (let j = 0; j < changes.length; j += 150) n += a.apply(changes.slice(j, j + 150), { snapshot: true, fullResync: true, cursor: null, epoch: 'e' });
    a.resyncEnd({ cursor: 9, full: true, epoch: 'e', languages: ['de', 'en'] });
    applied.push(n);
  }
  t.same(applied, [wire.length, wire.length], 'every update applied once on both paths');
  const [bulk, single] = children.map((c) => openConn(c.db));
  t.teardown(() => {
    bulk!.close();
    single!.close();
  });
  const queries = {
    updates: `SELECT id, revision, kb, bulletin, title, description, vendor, product_family, product, classification, severity, custom_severity_id, cves,
      cve_details, release_date, supersedes, vendor_superseded, restart, success_codes, reboot_codes, applicability, installed,
      more_info_url, languages, expired, release_version, first_version, origin FROM updates ORDER BY id`,
    files: 'SELECT * FROM update_files ORDER BY update_id, sha256',
    cves: 'SELECT * FROM update_cves ORDER BY update_id, cve',
    supersedes: 'SELECT * FROM update_supersedes ORDER BY update_id, kb',
    log: 'SELECT kind, key, op, languages, payload FROM change_log ORDER BY seq',
  };
  for (const [name, q] of Object.entries(queries)) {
    const [x, y] = [await bulk!.all<Record<string, unknown>>(q, []), await single!.all<Record<string, unknown>>(q, [])];
    t.ok(x.length > 0, `${name}: rows written`);
    // Stored JSON text may differ in spelling, never in value.
    const norm = (rows: Record<string, unknown>[]) =>
      rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, typeof v === 'string' && /^[[{]/.test(v) ? JSON.parse(v) : v])));
    t.same(norm(x), norm(y), `${name}: the same rows`);
  }
  const rootHashes = await root.conn.all<{ id: string; content_hash: string }>('SELECT id, content_hash FROM updates ORDER BY id', []);
  const bulkHashes = await bulk!.all<{ id: string; content_hash: string }>('SELECT id, content_hash FROM updates ORDER BY id', []);
  t.ok(
    bulkHashes.every((h) => rootHashes.find((r) => r.id === h.id)?.content_hash === h.content_hash),
    "the bulk path keeps the origin's content hash",
  );
  t.ok(
    (await bulk!.all<{ n: number }>('SELECT count(*) AS n FROM updates WHERE custom_severity_id IS NOT NULL', []))[0]!.n === 1,
    'the replicated level found by its key',
  );

  // A second complete resync into the filled catalog takes the careful path and sweeps what the parent dropped.
  const native = openNative(children[0]!.file);
  t.teardown(() => native.close());
  const a = new BatchApplier(native, replicatedKinds(), 'node-0');
  a.resyncStart(true);
  const changes = asChanges(false).slice(1);
  a.apply(changes, { snapshot: true, fullResync: true, cursor: null, epoch: 'e' });
  const removed = a.resyncEnd({ cursor: 10, full: true, epoch: 'e', languages: ['de', 'en'] });
  t.equal(removed, 1, 'the update no longer sent is removed');
  t.equal((await bulk!.all<{ n: number }>('SELECT count(*) AS n FROM updates', []))[0]!.n, wire.length - 1);
  const tomb = await bulk!.all<{ op: string; key: string }>("SELECT op, key FROM change_log WHERE op = 'delete'", []);
  t.same(tomb, [{ op: 'delete', key: wire[0]!.id }], "with a tombstone for this node's children");
});

t.test('an import writes the same rows through the binding and through the client (a remote server)', async (t) => {
  const dir = await tempDir(t);
  const a = await rootWithCatalog(dir, 'binding', 'a');
  t.teardown(a.close);
  const b = await rootWithCatalog(dir, 'client', 'b');
  t.teardown(b.close);
  for (const q of [
    'SELECT * FROM updates ORDER BY id',
    'SELECT * FROM update_files ORDER BY update_id, sha256',
    'SELECT * FROM update_cves ORDER BY update_id, cve',
    'SELECT * FROM update_supersedes ORDER BY update_id, kb',
    "SELECT kind, key, op, languages, payload FROM change_log WHERE kind = 'update' ORDER BY seq",
  ]) {
    const [x, y] = [await a.conn.all<Record<string, unknown>>(q, []), await b.conn.all<Record<string, unknown>>(q, [])];
    t.ok(x.length > 0, `${q}: rows`);
    t.same(
      y.map((r) => ({ ...r })),
      x.map((r) => ({ ...r })),
      q,
    );
  }
  const log = await a.conn.all<{ n: number }>("SELECT count(*) AS n FROM change_log WHERE kind = 'update' AND op = 'upsert' AND payload = ''", []);
  t.equal(log[0]!.n, 495, 'each added update logged once, as a state entry');
  const one = await a.conn.all<{ cves: string; languages: string; n: number }>(
    "SELECT cves, languages, (SELECT count(*) FROM update_files f WHERE f.update_id = u.id) AS n FROM updates u WHERE id = 'f44b0b03-45bd-4038-9e11-027f263b40b3'",
    [],
  );
  t.equal(one[0]!.n, 66, 'a language pack with all its files');
  t.ok(one[0]!.languages.split(',').includes('ca-es-valencia') && !one[0]!.languages.includes('neutral'));
});

t.test('a malformed payload in a run of new updates fails its batch whole; the next batch writes exactly its own', async (t) => {
  const dir = await tempDir(t);
  const root = await rootWithCatalog(dir);
  t.teardown(root.close);
  const wire = await allWire(root.conn, ['de', 'en'], 100);
  const { native } = await childDb(t, join(dir, 'child.db'), 'e', 'de,en');
  const a = new BatchApplier(native, replicatedKinds(), 'node-x');
  const change = (key: string, payload: string): WireChange => ({ seq: 0, kind: 'update', key, op: 'upsert', payload: Buffer.from(payload) });
  const tail = { snapshot: false, fullResync: false, epoch: 'e' };
  const count = (q: string) => (native.prepare(q).get() as { n: number }).n;
  // Ten new updates, then one whose JSON ends early (it has a content hash: it goes in the same bulk run).
  const broken = `${wire[10]!.payload.slice(0, 200)}"contentHash":"`;
  const first = [...wire.slice(0, 10).map((w) => change(w.id, w.payload)), change(wire[10]!.id, broken)];
  t.throws(() => a.apply(first, { ...tail, cursor: 11 }), /JSON/, 'the batch fails on the malformed payload');
  t.equal(count('SELECT count(*) AS n FROM updates'), 0, 'none of its updates written');
  t.equal(count('SELECT count(*) AS n FROM change_log'), 0, 'nothing logged for the children');
  t.equal(count('SELECT cursor AS n FROM upstream_state'), 0, 'the cursor did not move');

  const next = wire.slice(20, 25).map((w) => change(w.id, w.payload));
  t.equal(a.apply(next, { ...tail, cursor: 16 }), 5, 'the next batch applies');
  t.same(
    (native.prepare('SELECT id FROM updates ORDER BY id').all() as { id: string }[]).map((r) => r.id),
    wire
      .slice(20, 25)
      .map((w) => w.id)
      .sort(),
    'exactly its updates: nothing of the failed run was left behind',
  );
  t.equal(count('SELECT count(*) AS n FROM change_log'), 5, 'each logged once');
  t.equal(count('SELECT cursor AS n FROM upstream_state'), 16, 'the cursor moved with it');
});

t.test('a tail file leaves exactly the rows of the same run sent as rows: new ones inserted, older revisions replaced, newer ones kept', async (t) => {
  const dir = await tempDir(t);
  const root = await rootWithCatalog(dir);
  t.teardown(root.close);
  const languages = ['de', 'en'];
  const wire = await allWire(root.conn, languages, 100);
  const rootDb = openNative(join(dir, 'root.db'));
  t.teardown(() => rootDb.close());
  // The import's run of state entries: what a parent sends a child that asks for tail files as one file.
  const run = rootDb.prepare("SELECT min(seq) - 1 AS after, max(seq) AS upTo, count(*) AS n FROM change_log WHERE kind = 'update'").get() as {
    after: number;
    upTo: number;
    n: number;
  };
  t.ok(run.n >= wire.length, `the import logged its updates (${run.n})`);
  const tailFile = join(dir, 'tail.db');
  rootDb.prepare('ATTACH ? AS snapshot_file').run(tailFile);
  rootDb.exec('BEGIN');
  const inFile = buildUpdatesFile(rootDb, 'snapshot_file', ORIGIN, languages, { after: null, upTo: null, log: { after: run.after, upTo: run.upTo } });
  rootDb.exec('COMMIT');
  rootDb.exec('DETACH snapshot_file');
  t.equal(inFile, wire.length, 'the file holds what rows would send: the updates of these languages');

  // What each child held before: some updates at an older revision, some at a newer one, some at the same one with other content.
  const ids = wire.map((w) => w.id);
  const older = new Set(ids.slice(0, 30));
  const newer = new Set(ids.slice(30, 40));
  const same = new Set(ids.slice(40, 50));
  const before = wire.slice(0, 50).map((w) => {
    const p = JSON.parse(w.payload) as Record<string, unknown> & { revision: number; files: unknown[] };
    if (older.has(w.id)) Object.assign(p, { revision: p.revision - 1, title: 'older', files: p.files.slice(0, 1), cves: ['CVE-2000-0001'] });
    if (newer.has(w.id)) Object.assign(p, { revision: p.revision + 1, title: 'newer' });
    if (same.has(w.id)) Object.assign(p, { title: 'same revision', supersedes: [] });
    delete p.contentHash; // one at a time, as an older parent's
    return { seq: 0, kind: 'update', key: w.id, op: 'upsert', payload: Buffer.from(JSON.stringify(p)) } as WireChange;
  });
  const tail = { snapshot: false, fullResync: false, epoch: 'e' };
  const children = ['file', 'rows'].map((name) => {
    const file = join(dir, `${name}.db`);
    return { name, file };
  });
  const appliers: BatchApplier[] = [];
  for (const c of children) {
    const { native } = await childDb(t, c.file, 'e', 'de,en');
    native.exec("INSERT INTO custom_severities (name, rank, created_at, origin_key) VALUES ('Upstream', 2, 0, 'up:7')");
    // A release waiting for two of the updates (one new here, one replaced).
    native.exec("INSERT INTO freshness_releases (version, published_at, imported_at, received_at) VALUES ('r1', 0, 0, 0)");
    for (const id of [ids[0]!, ids[100]!])
      native
        .prepare("INSERT INTO freshness_updates (version, update_id, revision, languages, family, visible_at) VALUES ('r1', ?, ?, '', 'Windows', NULL)")
        .run(id, (JSON.parse(wire.find((w) => w.id === id)!.payload) as { revision: number }).revision);
    const a = new BatchApplier(native, replicatedKinds(), `node-${c.name}`);
    t.equal(a.apply(before, { ...tail, cursor: 3 }), 50, `${c.name}: what it held before, applied as rows`);
    appliers.push(a);
  }
  const [fileChild, rowsChild] = appliers;
  const merged = fileChild!.loadTailFile('update', 1, tailFile, { cursor: run.upTo, epoch: 'e' });
  let sent = 0;
  const changes = wire.map((w) => ({ seq: 0, kind: 'update', key: w.id, op: 'upsert', payload: Buffer.from(w.payload) }) as WireChange);
  for (let i = 0; i < changes.length; i += 1024) sent += rowsChild!.apply(changes.slice(i, i + 1024), { ...tail, cursor: run.upTo });
  t.equal(merged, wire.length - newer.size, 'the file wrote every update but those held at a newer revision');
  t.equal(sent, merged, 'as many as the rows did');
  t.throws(
    () => fileChild!.loadTailFile('update', 1, tailFile, { cursor: run.upTo, epoch: 'e' }),
    /not after this node's cursor/,
    'a tail file that does not move the cursor forward is refused',
  );
  t.throws(
    () =>
      fileChild!.applyFile({ kind: 'update', format: 1, path: tailFile, cursor: run.upTo + 1, more: false }, { epoch: 'e', resyncing: true, tailFiles: true }),
    /a tail file inside a resync/,
    'and one inside a resync',
  );
  t.throws(
    () =>
      fileChild!.applyFile(
        { kind: 'update', format: 1, path: tailFile, cursor: run.upTo + 1, more: false },
        { epoch: 'e', resyncing: false, tailFiles: false },
      ),
    /did not ask for/,
    'and one the child did not ask for',
  );

  const [a, b] = children.map((c) => openNative(c.file));
  t.teardown(() => {
    a!.close();
    b!.close();
  });
  const queries = {
    updates: `SELECT id, revision, kb, bulletin, title, description, vendor, product_family, product, classification, severity,
      (SELECT origin_key FROM custom_severities cs WHERE cs.id = custom_severity_id) AS level, cves,
      cve_details, release_date, supersedes, vendor_superseded, restart, success_codes, reboot_codes, applicability, installed,
      more_info_url, languages, expired, content_hash, release_version, first_version, origin, updated_at IS NOT NULL AS stamped FROM updates ORDER BY id`,
    files: 'SELECT * FROM update_files ORDER BY update_id, position',
    cves: 'SELECT * FROM update_cves ORDER BY update_id, cve',
    supersedes: 'SELECT * FROM update_supersedes ORDER BY update_id, kb',
    // State entries stand for the update as it is: their order within one run means nothing.
    log: 'SELECT kind, key, op, languages, payload FROM change_log ORDER BY kind, key, op, languages, payload',
    freshness: 'SELECT version, update_id, revision, visible_at IS NOT NULL AS visible FROM freshness_updates ORDER BY update_id',
    cursor: 'SELECT cursor, epoch FROM upstream_state',
  };
  const norm = (rows: Record<string, unknown>[]) =>
    rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, typeof v === 'string' && /^[[{]/.test(v) ? JSON.parse(v) : v])));
  for (const [name, q] of Object.entries(queries)) {
    const [x, y] = [a!.prepare(q).all() as Record<string, unknown>[], b!.prepare(q).all() as Record<string, unknown>[]];
    t.ok(x.length > 0, `${name}: rows to compare (${x.length})`);
    t.same(norm(x), norm(y), `${name}: the same rows from a tail file as from rows`);
  }
  const title = (id: string) => (a!.prepare('SELECT title FROM updates WHERE id = ?').get(id) as { title: string }).title;
  t.equal(title(ids[30]!), 'newer', 'an update held at a newer revision is kept');
  t.not(title(ids[0]!), 'older', 'one held at an older revision is replaced');
  t.not(title(ids[40]!), 'same revision', 'one held at the same revision is replaced too (as rows do)');
  t.equal(
    (a!.prepare('SELECT count(*) AS n FROM update_files WHERE update_id = ?').get(ids[0]!) as { n: number }).n,
    (b!.prepare('SELECT count(*) AS n FROM update_files WHERE update_id = ?').get(ids[0]!) as { n: number }).n,
    'its files replaced whole',
  );
  t.equal(
    (a!.prepare('SELECT count(*) AS n FROM updates WHERE custom_severity_id IS NOT NULL').get() as { n: number }).n,
    1,
    'the replicated level found by its key',
  );
});

t.test('a child keeps its newest 50 releases and the updates of those only', async (t) => {
  const dir = await tempDir(t);
  const { native } = await childDb(t, join(dir, 'child.db'), 'e', 'en');
  const a = new BatchApplier(native, replicatedKinds(), 'node-x');
  const release = (i: number): WireChange => ({
    seq: 0,
    kind: 'release',
    key: `r${i}`,
    op: 'upsert',
    payload: Buffer.from(
      JSON.stringify({
        version: `r${i}`,
        publishedAt: 1_700_000_000_000 + i,
        importedAt: 1_700_000_000_000 + i,
        updates: [
          [`u-${i}`, 1, 'en', 'Windows'],
          [`u-shared`, i, 'en', 'Windows'],
        ],
      }),
    ),
  });
  const count = (q: string) => (native.prepare(q).get() as { n: number }).n;
  for (let i = 1; i <= 52; i++) a.apply([release(i)], { snapshot: false, fullResync: false, epoch: 'e', cursor: i });
  t.equal(count('SELECT count(*) AS n FROM freshness_releases'), 50, 'the newest 50 releases');
  t.equal(count("SELECT count(*) AS n FROM freshness_releases WHERE version IN ('r1', 'r2')"), 0, 'the two oldest pruned');
  t.equal(count('SELECT count(*) AS n FROM freshness_updates'), 100, 'two updates for each release kept');
  t.equal(
    count('SELECT count(*) AS n FROM freshness_updates WHERE version NOT IN (SELECT version FROM freshness_releases)'),
    0,
    'no update of a pruned release left',
  );
});
