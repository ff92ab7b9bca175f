import t from 'tap';
import { api, ADMIN_TOKEN, header, makeKeys, sampleUpdate, tempDir, treeNode, uploadCatalog, writeSignedCatalog, type NodeProcess } from '../helpers.js';
import { startVendor, waitFor } from '../vendor.js';
import { DAYS } from '../../src/lib/schedule.js';

const T = ADMIN_TOKEN;

async function nodeId(n: NodeProcess): Promise<string> {
  return (await api(n.url, T, '/api/v1/hierarchy')).body.node.id;
}

async function levels(n: NodeProcess) {
  return ((await api(n.url, T, '/api/v1/severities')).body.items as { id: number; name: string; origin: string | null }[])
    .map((l) => ({ name: l.name, origin: l.origin }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

async function levelOf(n: NodeProcess, id: string): Promise<string | null | undefined> {
  const r = await api(n.url, T, `/api/v1/updates/${id}`);
  return r.status === 200 ? (r.body.customSeverity?.name ?? null) : undefined;
}

t.test('custom severities replicate down the tree and are read-only below their origin', async (t) => {
  t.setTimeout(300_000);
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const root = await treeNode(t, dir, keys, 'root', 'en');
  const c1 = await writeSignedCatalog(
    dir,
    keys,
    'v1.gz',
    header('v1', 3),
    [1, 2, 3].map((n) => sampleUpdate(n)),
  );
  t.equal((await uploadCatalog(root.url, T, c1.file, c1.sig)).status, 201);
  const mid = await treeNode(t, dir, keys, 'mid', 'en', root);
  const leaf = await treeNode(t, dir, keys, 'leaf', 'en', mid);
  const [rootId, midId] = [await nodeId(root), await nodeId(mid)];

  const urgent = (await api(root.url, T, '/api/v1/severities', { method: 'POST', body: JSON.stringify({ name: 'Urgent' }) })).body;
  const later = (await api(root.url, T, '/api/v1/severities', { method: 'POST', body: JSON.stringify({ name: 'Later' }) })).body;
  t.equal(
    (await api(root.url, T, '/api/v1/severities/assign', { method: 'POST', body: JSON.stringify({ updates: ['test-1'], severityId: urgent.id }) })).status,
    200,
  );
  t.equal((await api(root.url, T, '/api/v1/updates/test-2/custom-severity', { method: 'PUT', body: JSON.stringify({ severityId: later.id }) })).status, 200);

  await waitFor(async () => (await levelOf(leaf, 'test-1')) === 'Urgent' && (await levelOf(leaf, 'test-2')) === 'Later', 'assignments at the leaf');
  t.same(
    await levels(leaf),
    [
      { name: 'Later', origin: rootId },
      { name: 'Urgent', origin: rootId },
    ],
    'levels at the leaf name the root as origin',
  );
  t.equal(await levelOf(mid, 'test-3'), null);

  // Read-only below the origin: 409 naming it.
  const midLevels = (await api(mid.url, T, '/api/v1/severities')).body.items as { id: number; name: string }[];
  const midUrgent = midLevels.find((l) => l.name === 'Urgent')!;
  const patch = await api(mid.url, T, `/api/v1/severities/${midUrgent.id}`, { method: 'PATCH', body: JSON.stringify({ name: 'Mine' }) });
  t.equal(patch.status, 409);
  t.equal(patch.body.origin, rootId);
  t.match(patch.body.detail, /replicated from node/);
  t.equal((await api(mid.url, T, `/api/v1/severities/${midUrgent.id}`, { method: 'DELETE' })).status, 409);
  const assign = await api(mid.url, T, '/api/v1/updates/test-3/custom-severity', { method: 'PUT', body: JSON.stringify({ severityId: midUrgent.id }) });
  t.equal(assign.status, 409);
  t.equal(assign.body.origin, rootId);
  t.equal((await api(mid.url, T, '/api/v1/severities/order', { method: 'PUT', body: JSON.stringify({ ids: midLevels.map((l) => l.id) }) })).status, 409);

  // A mid-tier node's own level replicates to its subtree only.
  t.equal((await api(mid.url, T, '/api/v1/severities', { method: 'POST', body: JSON.stringify({ name: 'Site review' }) })).status, 201);
  await waitFor(async () => (await levels(leaf)).some((l) => l.name === 'Site review' && l.origin === midId), 'the mid-tier level at the leaf');
  t.notOk(
    (await levels(root)).some((l) => l.name === 'Site review'),
    'nothing flows up',
  );

  // Rename and delete at the origin: followed below, assignments kept or cleared.
  t.equal((await api(root.url, T, `/api/v1/severities/${urgent.id}`, { method: 'PATCH', body: JSON.stringify({ name: 'Now' }) })).status, 200);
  t.equal((await api(root.url, T, `/api/v1/severities/${later.id}`, { method: 'DELETE' })).status, 204);
  await waitFor(async () => (await levelOf(leaf, 'test-1')) === 'Now' && (await levelOf(leaf, 'test-2')) === null, 'rename and delete at the leaf');
  t.same(await levels(leaf), [
    { name: 'Now', origin: rootId },
    { name: 'Site review', origin: midId },
  ]);

  // A replicated setting: the scan interval set at the root reaches the leaf, read-only below.
  t.equal((await api(root.url, T, '/api/v1/settings/assessment', { method: 'PUT', body: JSON.stringify({ scanIntervalMinutes: 60 }) })).status, 200);
  await waitFor(async () => (await api(leaf.url, T, '/api/v1/settings/assessment')).body.scanIntervalMinutes === 60, 'the scan interval at the leaf');
  t.same((await api(leaf.url, T, '/api/v1/settings/assessment')).body, { scanIntervalMinutes: 60, origin: rootId });
  const put = await api(mid.url, T, '/api/v1/settings/assessment', { method: 'PUT', body: JSON.stringify({ scanIntervalMinutes: 30 }) });
  t.equal(put.status, 409);
  t.equal(put.body.origin, rootId);
  t.match(put.body.detail, /setting "assessment" is replicated from node/);

  // A complete resync rebuilds the same state (levels first, then updates naming them).
  t.equal((await api(mid.url, T, '/api/v1/hierarchy/upstream/resync', { method: 'POST' })).status, 202);
  await waitFor(
    async () => (await api(mid.url, T, '/api/v1/hierarchy')).body.upstream.resyncing === false && (await levelOf(mid, 'test-1')) === 'Now',
    'resync done',
  );
  t.same(await levels(mid), [
    { name: 'Now', origin: rootId },
    { name: 'Site review', origin: null },
  ]);
  t.same((await api(mid.url, T, '/api/v1/settings/assessment')).body, { scanIntervalMinutes: 60, origin: rootId }, 'the setting survives the resync');
});

t.test('replication rules per child: catalog off and on, a closed schedule, files held back', async (t) => {
  t.setTimeout(300_000);
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const vendor = await startVendor(t);
  const vf = vendor.add('/kb9.msu', 30_000);
  const withFile = sampleUpdate(9, { files: [{ name: 'kb9.msu', url: vendor.url('/kb9.msu'), size: vf.data.length, sha256: vf.sha256, language: 'neutral' }] });
  const root = await treeNode(t, dir, keys, 'root', 'en');
  const site = await treeNode(t, dir, keys, 'site', 'en', root);
  const siteId = await nodeId(site);
  const status = async () => (await api(site.url, T, '/api/v1/hierarchy')).body.upstream;
  const has = async (id: string) => (await api(site.url, T, `/api/v1/updates/${id}`)).status === 200;
  const rulesPath = `/api/v1/hierarchy/children/${siteId}/rules`;
  await waitFor(async () => (await status()).connected, 'site connected');

  t.same((await api(root.url, T, rulesPath)).body, { catalog: true, files: true, schedule: { mode: 'continuous' } }, 'default rules');
  const bad = await api(root.url, T, rulesPath, {
    method: 'PUT',
    body: JSON.stringify({ schedule: { mode: 'windows', windows: [{ days: ['mon'], start: '25:00', end: '01:00' }] } }),
  });
  t.equal(bad.status, 400);
  t.equal(bad.headers.get('content-type'), 'application/problem+json');

  // Catalog off: the site's cursor moves past the import, the update does not arrive.
  t.equal((await api(root.url, T, rulesPath, { method: 'PUT', body: JSON.stringify({ catalog: false }) })).status, 200);
  const c1 = await writeSignedCatalog(dir, keys, 'v1.gz', header('v1', 1), [sampleUpdate(1, { files: [] })]);
  t.equal((await uploadCatalog(root.url, T, c1.file, c1.sig)).status, 201);
  const head = (await api(root.url, T, '/api/v1/hierarchy')).body.node.headSeq;
  await waitFor(async () => (await status()).cursor >= head && (await status()).connected, 'site cursor past the import');
  t.notOk(await has('test-1'), 'catalog withheld');

  // Catalog on, but inside a schedule that is closed now: connected, paused, nothing sent.
  const inTwoDays = DAYS[(new Date().getUTCDay() + 2) % 7]!;
  const closed = { catalog: true, files: true, schedule: { mode: 'windows', zone: 'UTC', windows: [{ days: [inTwoDays], start: '03:00', end: '03:01' }] } };
  t.same((await api(root.url, T, rulesPath, { method: 'PUT', body: JSON.stringify(closed) })).body, closed);
  const paused = await waitFor(async () => ((await status()).pausedUntil ? status() : null), 'site paused');
  t.ok(paused.connected);
  t.equal(new Date(paused.pausedUntil).getUTCDay(), DAYS.indexOf(inTwoDays), 'paused until the window opens');
  t.notOk(await has('test-1'), 'nothing before the window');
  const child = (await api(root.url, T, '/api/v1/hierarchy')).body.children.find((c: { id: string }) => c.id === siteId);
  t.same(child.rules, closed, 'rules shown in the parent status');

  // Continuous again: the resync owed since catalog came back on delivers it.
  t.equal((await api(root.url, T, rulesPath, { method: 'PUT', body: JSON.stringify({ files: false }) })).status, 200);
  await waitFor(() => has('test-1'), 'catalog delivered once the schedule is continuous');

  // Files off: the needed file waits (not a failed attempt), then arrives when allowed.
  const c2 = await writeSignedCatalog(dir, keys, 'v2.gz', header('v2', 2), [sampleUpdate(1, { files: [] }), withFile]);
  t.equal((await uploadCatalog(root.url, T, c2.file, c2.sig)).status, 201);
  for (const n of [root, site])
    await api(n.url, T, '/api/v1/settings/content', { method: 'PUT', body: JSON.stringify({ need: 'languages', reserveBytes: 0 }) });
  const fileAt = async (n: NodeProcess) => (await api(n.url, T, '/api/v1/content/files?update=test-9')).body.items?.[0];
  await waitFor(async () => (await fileAt(root))?.state === 'verified', 'root has the file');
  const held = await waitFor(async () => {
    const f = await fileAt(site);
    return f?.lastError ? f : null;
  }, 'the site told the file is held back');
  t.equal(held.state, 'pending');
  t.equal(held.attempts, 0, 'a deferral is not a failed attempt');
  t.match(held.lastError, /does not serve update files/);
  t.equal((await api(root.url, T, rulesPath, { method: 'PUT', body: JSON.stringify({ files: true }) })).status, 200);
  await waitFor(async () => (await fileAt(site))?.state === 'verified', 'file delivered once allowed');
});
