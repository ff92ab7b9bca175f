import t from 'tap';
import {
  api,
  ADMIN_TOKEN,
  header,
  fingerprint,
  makeKeys,
  sampleUpdate,
  tempDir,
  treeNode,
  uploadCatalog,
  writeSignedCatalog,
  type Keys,
  type NodeProcess,
} from '../helpers.js';
import { startVendor, waitFor } from '../vendor.js';
import { generate } from '../../bench/catalog-import.js';
import type { CatalogUpdate } from '../../src/catalog/format.js';

const T = ADMIN_TOKEN;
const N = 20_000;

const node = treeNode;

async function liveCount(n: NodeProcess): Promise<number> {
  const text = await (await fetch(`${n.url}/metrics`)).text();
  return Number(/patchtree_catalog_updates\{state="live"\} (\d+)/.exec(text)?.[1] ?? -1);
}

async function importGenerated(dir: string, keys: Keys, root: NodeProcess, version: string, day: number, title: string) {
  const updates = [...generate(N)].map((u) => ({ ...u, title: `${title} ${u.title}` }));
  const c = await writeSignedCatalog(dir, keys, `${version}.gz`, header(version, N, new Date(Date.UTC(2024, 0, day))), updates);
  const r = await uploadCatalog(root.url, T, c.file, c.sig);
  if (r.status !== 201) throw new Error(`import ${version}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

t.test('kill -9 of a leaf, a mid-tier node and the root in the middle of large syncs', async (t) => {
  t.setTimeout(400_000);
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  let root = await node(t, dir, keys, 'root', 'en');
  await importGenerated(dir, keys, root, 'g1', 1, 'g1');
  let mid = await node(t, dir, keys, 'mid', 'en', root);
  // The leaf takes its initial snapshot as rows, so that it can be caught part-way (a
  // snapshot file is loaded in one transaction: all or nothing).
  let leaf = await node(t, dir, keys, 'leaf', 'en', mid, ['--initial-sync', 'rows']);
  const midPort = mid.grpcPort;
  const rootPort = root.grpcPort;

  // 1. The leaf dies during its initial snapshot.
  await waitFor(
    async () => {
      const n = await liveCount(leaf);
      return n > 0 && n < N;
    },
    'the leaf part-way through its snapshot',
    60_000,
  );
  leaf.child.kill('SIGKILL');
  await leaf.exited;
  leaf = await node(t, dir, keys, 'leaf', 'en', undefined, ['--upstream', `127.0.0.1:${midPort}`]);
  await waitFor(async () => (await liveCount(leaf)) === N && (await liveCount(mid)) === N, 'leaf and mid complete', 120_000);
  const want1 = await fingerprint(root);
  t.equal(want1.length, N);
  t.same(await fingerprint(mid), want1, 'mid equals root');
  t.same(await fingerprint(leaf), want1, 'the restarted leaf equals root: no gap, no duplicate');

  // 2. A release that changes everything; the mid-tier dies while tailing it.
  await importGenerated(dir, keys, root, 'g2', 2, 'g2');
  await waitFor(
    async () => {
      const h = (await api(mid.url, T, '/api/v1/hierarchy')).body.upstream;
      return h.cursor > N && h.cursor < 2 * N;
    },
    'mid part-way through the tail',
    60_000,
  );
  mid.child.kill('SIGKILL');
  await mid.exited;
  mid = await node(t, dir, keys, 'mid', 'en', undefined, ['--upstream', `127.0.0.1:${rootPort}`, '--grpc-port', String(midPort)]);
  const want2 = await fingerprint(root);
  await waitFor(async () => JSON.stringify(await fingerprint(leaf)) === JSON.stringify(want2), 'leaf after mid restart', 120_000);
  t.same(await fingerprint(mid), want2, 'mid equals root after its kill -9');
  t.same(await fingerprint(leaf), want2, 'leaf equals root after the mid-tier kill -9');

  // 3. The root dies while its child is still taking a release.
  await importGenerated(dir, keys, root, 'g3', 3, 'g3');
  await waitFor(
    async () => {
      const h = (await api(mid.url, T, '/api/v1/hierarchy')).body.upstream;
      return h.cursor > 2 * N && h.cursor < 3 * N;
    },
    'mid part-way through the third release',
    60_000,
  );
  root.child.kill('SIGKILL');
  await root.exited;
  root = await node(t, dir, keys, 'root', 'en', undefined, ['--grpc-port', String(rootPort)]);
  const want3 = await fingerprint(root);
  await waitFor(async () => JSON.stringify(await fingerprint(leaf)) === JSON.stringify(want3), 'leaf after root restart', 120_000);
  t.same(await fingerprint(mid), want3, 'mid equals root after the root kill -9');
  t.ok(
    want3.every((x) => x.endsWith(':3')),
    'every update at revision 3 after three releases',
  );
});

t.test('a sibling offline does not hold back the others; a cut file transfer resumes from its offset', async (t) => {
  t.setTimeout(400_000);
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const vendor = await startVendor(t);
  const big = vendor.add('/big.cab', 12 * 1024 * 1024);
  const root = await node(t, dir, keys, 'root', 'en');
  const rootPort = root.grpcPort;
  const files = (u: number): CatalogUpdate['files'] =>
    u === 1 ? [{ name: 'big.cab', url: vendor.url('/big.cab'), size: big.data.length, sha256: big.sha256, language: 'neutral' }] : [];
  const v1 = [sampleUpdate(1, { files: files(1) }), sampleUpdate(2, { files: [] })];
  const c1 = await writeSignedCatalog(dir, keys, 'v1.gz', header('v1', 2, new Date('2024-01-01T00:00:00Z')), v1);
  await uploadCatalog(root.url, T, c1.file, c1.sig);
  await api(root.url, T, '/api/v1/settings/content', { method: 'PUT', body: JSON.stringify({ need: 'languages', reserveBytes: 0 }) });
  await waitFor(async () => (await api(root.url, T, '/api/v1/content')).body.verified === 1, 'root has the file');

  const x = await node(t, dir, keys, 'x', 'en', root);
  let y = await node(t, dir, keys, 'y', 'en', root);
  await api(x.url, T, '/api/v1/settings/content', {
    method: 'PUT',
    body: JSON.stringify({ need: 'languages', reserveBytes: 0, bytesPerSecond: 2 * 1024 * 1024, retryBaseMs: 100, retryMaxMs: 500 }),
  });
  await waitFor(async () => (await liveCount(y)) === 2, 'y synced');
  // ...and acknowledged: the parent counts lag from the cursor a child acknowledged.
  await waitFor(async () => {
    const h = (await api(root.url, T, '/api/v1/hierarchy')).body;
    return h.children.find((c: any) => c.name === 'y')?.cursor === h.node.headSeq;
  }, 'y acknowledged');

  // y goes offline; a release still reaches x, and the root shows y behind.
  y.child.kill('SIGTERM');
  await y.exited;
  const v2 = [sampleUpdate(1, { files: files(1) }), sampleUpdate(2, { files: [], title: 'changed' }), sampleUpdate(3, { files: [] })];
  const c2 = await writeSignedCatalog(dir, keys, 'v2.gz', header('v2', 3, new Date('2024-02-01T00:00:00Z')), v2);
  await uploadCatalog(root.url, T, c2.file, c2.sig);
  await waitFor(async () => (await liveCount(x)) === 3, 'x has the new release while y is offline');
  const children = (await api(root.url, T, '/api/v1/hierarchy')).body.children;
  const cy = children.find((c: any) => c.name === 'y');
  t.match(cy, { connected: false, lag: { entries: 3 } }, 'the offline child shows as disconnected and behind (two updates and the release entry)');
  t.match(
    children.find((c: any) => c.name === 'x'),
    { connected: true },
  );

  // The root dies while x is reading the 12 MiB file at 2 MiB/s; restarted, x resumes.
  await waitFor(
    async () => {
      const f = (await api(x.url, T, '/api/v1/content/files?update=test-1')).body.items[0];
      return f.bytesDone > 3 * 1024 * 1024;
    },
    'x part-way through the file',
    30_000,
  );
  root.child.kill('SIGKILL');
  await root.exited;
  const root2 = await node(t, dir, keys, 'root', 'en', undefined, ['--grpc-port', String(rootPort)]);
  y = await node(t, dir, keys, 'y', 'en', undefined, ['--upstream', `127.0.0.1:${rootPort}`]);
  await waitFor(async () => (await api(x.url, T, '/api/v1/content/files?update=test-1')).body.items[0].state === 'verified', 'x verified the file', 60_000);
  const resumed = root2.logs.filter((l) => l.msg === 'sending a file' && l.sha256 === big.sha256);
  t.ok(resumed.length >= 1 && Number(resumed[0]!.offset) > 3 * 1024 * 1024, `the transfer resumed at byte ${resumed[0]?.offset}, not from zero`);
  const res = await fetch(`${x.url}/agent/v1/files/${big.sha256}`, { headers: { authorization: `Bearer ${T}` } });
  t.ok(Buffer.from(await res.arrayBuffer()).equals(big.data), 'the file at x is exactly the vendor file');
  t.equal(vendor.requests.filter((r) => r.path === '/big.cab').length, 1, 'the vendor was asked once, by the root');
  await waitFor(async () => (await liveCount(y)) === 3, 'y catches up when it returns');
  t.match((await api(y.url, T, '/api/v1/updates/test-2')).body, { title: 'changed' });
});

t.test('a child behind what the compacted log keeps gets a complete resync', async (t) => {
  t.setTimeout(120_000);
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const root = await node(t, dir, keys, 'root', 'en', undefined, ['--change-log-retention', '10']);
  const v1 = [1, 2, 3].map((i) => sampleUpdate(i, { files: [] }));
  const c1 = await writeSignedCatalog(dir, keys, 'v1.gz', header('v1', 3, new Date('2024-01-01T00:00:00Z')), v1);
  await uploadCatalog(root.url, T, c1.file, c1.sig);
  let kid = await node(t, dir, keys, 'kid', 'en', root);
  await waitFor(async () => {
    const up = (await api(kid.url, T, '/api/v1/hierarchy')).body.upstream;
    const owed = (await api(root.url, T, '/api/v1/hierarchy')).body.children[0]?.resyncOwed;
    return (await liveCount(kid)) === 3 && up.cursor > 0 && !up.resyncing && owed === false;
  }, 'kid synced (its resync ended, and acknowledged)');
  kid.child.kill('SIGTERM');
  await kid.exited;
  // 40 new updates while the child is away: the log keeps only the last 10 entries.
  const v2 = Array.from({ length: 40 }, (_, i) => sampleUpdate(i + 10, { files: [] }));
  const c2 = await writeSignedCatalog(dir, keys, 'v2.gz', header('v2', 40, new Date('2024-02-01T00:00:00Z')), v2);
  t.match((await uploadCatalog(root.url, T, c2.file, c2.sig)).body, { added: 40, expired: 3 });
  await waitFor(async () => {
    const text = await (await fetch(`${root.url}/metrics`)).text();
    // 3 + 1 release entry, then 40 added + 3 expired + 1 release entry.
    return /patchtree_replication_head_seq 48/.test(text);
  }, 'head 48');
  kid = await node(t, dir, keys, 'kid', 'en', undefined, ['--upstream', `127.0.0.1:${root.grpcPort}`, '--log-level', 'info']);
  await waitFor(async () => JSON.stringify(await fingerprint(kid)) === JSON.stringify(await fingerprint(root)), 'kid equals root');
  const hello = kid.logs.find((l) => l.msg === 'subscribed upstream' && l.mode === 'resync');
  t.match(hello?.reason, /cursor 4 is older than the log keeps/, 'the parent says why');
  t.equal((await fingerprint(kid)).length, 43, 'expired ones included, nothing missing');
});
