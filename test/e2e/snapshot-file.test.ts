/**
 * A fresh child loads its parent's complete resync as an SQLite file (catalog/
 * snapshot-file.ts), and a subscribed child takes a release's run of new and changed
 * updates as a tail file; each ends with exactly the data of a child that took the
 * same as rows: every replicated table compared row by row. Real catalog (the bundled
 * WSUS and MSRC data; its Office language packs give Catalan and Welsh files), real
 * node processes, real gRPC.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import Database from 'libsql';
import {
  ADMIN_TOKEN as T,
  api,
  buildRealCatalog,
  header,
  makeKeys,
  sampleUpdate,
  tempDir,
  treeNode,
  uploadCatalog,
  writeSignedCatalog,
  type NodeProcess,
} from '../helpers.js';
import type { CatalogHeader } from '../../src/catalog/format.js';
import { waitFor } from '../vendor.js';

/** What a child receives from its parent (the rest of its database is its own). */
const REPLICATED = [
  'updates',
  'update_files',
  'update_cves',
  'update_supersedes',
  'custom_severities',
  'settings',
  'freshness_releases',
  'freshness_updates',
  'policies',
  'policy_updates',
  'change_log',
];

const resynced = async (n: NodeProcess) => {
  const up = (await api(n.url, T, '/api/v1/hierarchy')).body.upstream as { cursor: number; resyncing: boolean } | null;
  return Boolean(up && up.cursor > 0 && !up.resyncing);
};

/**
 * A table's rows in a stable order, from the database of node `node` under `dir`.
 * Times are the child's own (when it applied what it received), so a time column is
 * compared as set or not; so are local row ids
 * (the change log's seq, a level's id), which the order already covers.
 */
function rows(dir: string, node: string, table: string): unknown[] {
  const db = new Database(join(dir, node, 'patchtree.db'), { readonly: true });
  try {
    const cols = (db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).map((c) => c.name);
    const local = (c: string) => /_at$/.test(c) || (table === 'change_log' && c === 'seq') || (table === 'custom_severities' && c === 'id');
    const select = cols.map((c) => (local(c) ? `${c} IS NOT NULL AS ${c}` : c));
    // A level by name rather than by this database's id.
    if (table === 'updates') select[cols.indexOf('custom_severity_id')] = '(SELECT name FROM custom_severities cs WHERE cs.id = custom_severity_id) AS level';
    const order = table === 'change_log' ? 'seq' : cols.filter((c) => !local(c)).join(', ');
    return db.prepare(`SELECT ${select.join(', ')} FROM ${table} ORDER BY ${order}`).all();
  } finally {
    db.close();
  }
}

/** Stops the nodes, so that their databases hold everything (and nothing more arrives). */
async function stopped(...nodes: NodeProcess[]): Promise<void> {
  for (const n of nodes) {
    n.child.kill('SIGTERM');
    await n.exited;
  }
}

t.test('a snapshot file gives a fresh child the same data as rows', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const root = await treeNode(t, dir, keys, 'root', 'en,ca,cy,vi');
  const { file, sig } = await buildRealCatalog(dir, keys);
  t.equal((await uploadCatalog(root.url, T, file, sig)).status, 201);

  // What else a resync carries: a setting, custom severity levels with updates assigned, a policy.
  const goals = { neutralEnglishHours: 12, otherLanguagesHours: 48, families: {} };
  t.equal((await api(root.url, T, '/api/v1/settings/freshness', { method: 'PUT', body: JSON.stringify(goals) })).status, 200);
  const listed = (await api(root.url, T, '/api/v1/updates?limit=6')).body.items as { id: string }[];
  const ids = listed.map((u) => u.id);
  t.equal(ids.length, 6);
  for (const [name, some] of [
    ['Urgent', ids.slice(0, 2)],
    ['Later', ids.slice(2, 3)],
  ] as const) {
    const level = (await api(root.url, T, '/api/v1/severities', { method: 'POST', body: JSON.stringify({ name }) })).body;
    const r = await api(root.url, T, '/api/v1/severities/assign', { method: 'POST', body: JSON.stringify({ updates: some, severityId: level.id }) });
    t.equal(r.status, 200, JSON.stringify(r.body));
  }
  const policy = await api(root.url, T, '/api/v1/policies', {
    method: 'POST',
    body: JSON.stringify({ name: 'Rollout', updates: ids.slice(3), targets: { all: true }, installation: { maintenance: { mode: 'any-time' } } }),
  });
  t.equal(policy.status, 201, JSON.stringify(policy.body));

  const byFile = await treeNode(t, dir, keys, 'by-file', 'ca,cy', root);
  const byRows = await treeNode(t, dir, keys, 'by-rows', 'ca,cy', root, ['--initial-sync', 'rows']);
  await waitFor(async () => (await resynced(byFile)) && (await resynced(byRows)), 'both children resynced', 60_000);
  t.ok(
    byFile.logs.some((l) => l.msg === 'snapshot file loaded' && Number(l.entities) > 0),
    'the first child loaded a snapshot file',
  );
  const parts = byFile.logs.filter((l) => l.msg === 'snapshot file loaded').length;
  t.ok(parts >= 2, `in parts, each loaded as it came (${parts}: an eighth of the root's catalog each, 100 at least)`);
  t.notOk(
    byRows.logs.some((l) => l.msg === 'snapshot file loaded'),
    'the second took rows',
  );
  const sharing = (await api(root.url, T, '/api/v1/hierarchy')).body.snapshots as { built: number };
  t.equal(sharing.built, 2, 'one snapshot of each form for the set');

  await stopped(byFile, byRows);
  const updates = rows(dir, 'by-file', 'updates') as { languages: string; level: string | null }[];
  t.ok(updates.length > 100, `the catalog arrived (${updates.length} updates)`);
  const langs = [...new Set(updates.flatMap((u) => u.languages.split(',')))].sort();
  t.ok(langs.includes('ca-es-valencia') && langs.includes('cy-gb'), `with Catalan and Welsh files (${langs.join(' ')})`);
  t.notOk(
    langs.some((l) => l.startsWith('vi')),
    'and no Vietnamese one',
  );
  t.same(updates.filter((u) => u.level).length, 3, 'the levels assigned at the root');
  for (const table of REPLICATED) {
    const [a, b] = [rows(dir, 'by-file', table), rows(dir, 'by-rows', table)];
    t.ok(a.length > 0, `${table}: rows to compare (${a.length})`);
    t.same(a, b, `${table}: the same rows from a file as from rows`);
  }
});

t.test("large parts are copied on the child's part loader thread while the next arrive, and give the same data as rows", async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const root = await treeNode(t, dir, keys, 'root', 'en');
  // 6,000 updates with long descriptions: parts of 750 updates, about 10 MB each (8 MB and more go to the thread), the first 2.5 MB.
  const n = 6_000;
  const updates = Array.from({ length: n }, (_, i) =>
    sampleUpdate(i, {
      description: `${i} `.repeat(3_000).slice(0, 12_000),
      cves: [`CVE-2024-${String(10000 + i)}`, `CVE-2023-${String(20000 + i)}`],
      supersedes: i ? [String(5000000 + i - 1)] : [],
    }),
  );
  const { file, sig } = await writeSignedCatalog(dir, keys, 'large.ndjson.gz', header('large-1', n), updates);
  t.equal((await uploadCatalog(root.url, T, file, sig)).status, 201);
  const byFile = await treeNode(t, dir, keys, 'by-file', 'en', root);
  const byRows = await treeNode(t, dir, keys, 'by-rows', 'en', root, ['--initial-sync', 'rows']);
  await waitFor(async () => (await resynced(byFile)) && (await resynced(byRows)), 'both children resynced', 90_000);
  const loaded = byFile.logs.filter((l) => l.msg === 'snapshot file loaded');
  const threaded = loaded.filter((l) => l.by === 'part loader');
  t.ok(threaded.length >= 6, `the large parts on the part loader's thread (${threaded.length} of ${loaded.length})`);
  t.ok(loaded.length > threaded.length, 'the first, a quarter of the others, on the main thread');
  t.equal(
    loaded.reduce((sum, l) => sum + Number(l.entities), 0),
    n,
    'every update loaded once',
  );
  t.same(
    loaded.map((l) => l.part),
    loaded.map((_, i) => i + 1),
    'the parts logged as numbered, in order, whichever thread loaded them',
  );
  const built = root.logs.find((l) => l.msg === 'snapshot built' && l.form === 'file');
  t.same(built?.parts, { update: loaded.length }, 'the parent logged as many parts as the child loaded');
  await stopped(byFile, byRows);

  // The parent dies while a third child's parts load: its stream ends once the part under way is loaded; back, the
  // parent resyncs it (as rows: its catalog is not empty any more) to the same data.
  const rootPort = root.grpcPort;
  const cut = await treeNode(t, dir, keys, 'cut', 'en', root);
  await waitFor(async () => cut.logs.some((l) => l.msg === 'snapshot file loaded' && l.by === 'part loader'), 'a part loaded on the thread', 60_000);
  root.child.kill('SIGKILL');
  await root.exited;
  const before = cut.logs.filter((l) => l.msg === 'snapshot file loaded').length;
  t.ok(before < loaded.length, `cut part-way (${before} of ${loaded.length} parts)`);
  t.same(
    cut.logs.filter((l) => l.msg === 'snapshot file loaded').map((l) => l.part),
    Array.from({ length: before }, (_, i) => i + 1),
    'its parts numbered from 1 as well',
  );
  const back = await treeNode(t, dir, keys, 'root', 'en', undefined, ['--grpc-port', String(rootPort)]);
  await waitFor(() => resynced(cut), 'the cut child resynced', 90_000);
  await stopped(cut, back);
  // The stream's end waited for the part being copied: no part logged as loaded after the child gave up on the stream.
  const retried = cut.logs.findIndex((l) => l.msg === 'upstream unavailable; retrying');
  t.ok(retried > 0, 'the child retried its parent');
  t.ok(
    cut.logs.every((l, i) => l.msg !== 'snapshot file loaded' || i < retried),
    'every part loaded before the child ended the stream',
  );
  const tables = REPLICATED.filter((x) => !['custom_severities', 'settings', 'policies', 'policy_updates', 'change_log'].includes(x));
  for (const table of tables) {
    const [a, b, c] = [rows(dir, 'by-file', table), rows(dir, 'by-rows', table), rows(dir, 'cut', table)];
    t.ok(a.length > 0, `${table}: rows to compare (${a.length})`);
    t.same(a, b, `${table}: the same rows from the thread's copies as from rows`);
    t.same(c, b, `${table}: and after a parent's death mid-load`);
  }
  t.same(rows(dir, 'by-file', 'change_log'), rows(dir, 'by-rows', 'change_log'), 'change_log: the same entries in the same order');
});

/** A catalog's lines (header first), read back from its file. */
function catalogLines(file: string): Record<string, unknown>[] {
  return gunzipSync(readFileSync(file))
    .toString()
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

t.test('a run of new and changed updates reaches a child as a tail file and leaves the same data as rows', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const root = await treeNode(t, dir, keys, 'root', 'en,ca,cy,vi');
  const byFile = await treeNode(t, dir, keys, 'by-file', 'ca,cy', root);
  const byRows = await treeNode(t, dir, keys, 'by-rows', 'ca,cy', root, ['--catch-up', 'rows']);
  const subscribed = (n: NodeProcess) => n.logs.some((l) => l.msg === 'resync applied');
  await waitFor(async () => subscribed(byFile) && subscribed(byRows), 'both children subscribed (an empty catalog)', 60_000);

  // The catalog arrives while both are subscribed: the import's run of state entries is their tail.
  const v1 = await buildRealCatalog(dir, keys);
  t.equal((await uploadCatalog(root.url, T, v1.file, v1.sig)).status, 201);
  const head = async () => (await api(root.url, T, '/api/v1/hierarchy')).body.node.headSeq as number;
  const caughtUp = async (n: NodeProcess) => ((await api(n.url, T, '/api/v1/hierarchy')).body.upstream as { cursor: number }).cursor === (await head());
  await waitFor(async () => (await caughtUp(byFile)) && (await caughtUp(byRows)), 'both children caught up with the import', 60_000);

  // A second release revises 300 of them (a title, and one file fewer where they have two) and adds one.
  const [header, ...updates] = catalogLines(v1.file) as [Record<string, unknown>, ...Record<string, unknown>[]];
  const revised = updates.map((u, i) => {
    if (i >= 300) return u;
    const files = u.files as unknown[];
    return { ...u, revision: (u.revision as number) + 1, title: `${u.title as string} (revised)`, files: files.length > 1 ? files.slice(1) : files };
  });
  revised.push({ ...updates[0]!, id: '00000000-0000-4000-8000-00000000f00d', kb: '9999999', title: 'A new update' });
  const v2 = await writeSignedCatalog(
    dir,
    keys,
    'v2.ndjson.gz',
    { ...(header as unknown as CatalogHeader), version: '2024.02.1', updates: revised.length },
    revised,
  );
  const imported = await uploadCatalog(root.url, T, v2.file, v2.sig);
  t.equal(imported.status, 201, JSON.stringify(imported.body));
  await waitFor(async () => (await caughtUp(byFile)) && (await caughtUp(byRows)), 'both children caught up with the second release', 60_000);

  const applied = byFile.logs.filter((l) => l.msg === 'tail file applied');
  t.equal(applied.length, 2, 'the first child took each release as a tail file');
  t.ok(Number(applied[1]!.entities) >= 250, `the second with the revised updates of its languages (${applied[1]!.entities})`);
  t.notOk(
    byRows.logs.some((l) => l.msg === 'tail file applied'),
    'the second (--catch-up rows) took rows',
  );
  const sharing = (await api(root.url, T, '/api/v1/hierarchy')).body.snapshots as { tailFiles: number };
  t.equal(sharing.tailFiles, 2, 'one tail file a release for the set');

  await stopped(byFile, byRows);
  const titles = (rows(dir, 'by-file', 'updates') as { title: string }[]).filter((u) => u.title.endsWith('(revised)'));
  t.ok(titles.length >= 250, `the revisions arrived (${titles.length})`);
  for (const table of REPLICATED) {
    const sort = (xs: unknown[]) => (table === 'change_log' ? xs.map((x) => JSON.stringify(x)).sort() : xs);
    const [a, b] = [rows(dir, 'by-file', table), rows(dir, 'by-rows', table)];
    if (!['settings', 'custom_severities', 'policies', 'policy_updates'].includes(table)) t.ok(a.length > 0, `${table}: rows to compare (${a.length})`);
    // The change log's state entries stand for the update as it is: their order within a run means nothing.
    t.same(sort(a), sort(b), `${table}: the same rows from tail files as from rows`);
  }
});
