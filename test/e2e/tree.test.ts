import t, { type Test } from 'tap';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import {
  api,
  ADMIN_TOKEN,
  header,
  listAll,
  makeKeys,
  sampleUpdate,
  spawnNode,
  tempDir,
  uploadCatalog,
  writeSignedCatalog,
  type NodeProcess,
  type Keys,
} from '../helpers.js';
import { startVendor, waitFor, type Vendor, type VendorFile } from '../vendor.js';
import { languageMatches } from '../../src/lib/languages.js';
import { replicationService, PROTOCOL_VERSION } from '../../src/replication/protocol.js';
import type { CatalogUpdate } from '../../src/catalog/format.js';

const T = ADMIN_TOKEN;

interface Site {
  name: string;
  languages: string[];
  parent?: string;
}

/** Spawns a node of the tree; children join their parent with a fresh token. */
async function startSite(t: Test, dir: string, keys: Keys, site: Site, nodes: Map<string, NodeProcess>, extra: string[] = []): Promise<NodeProcess> {
  const args = [
    '--data',
    join(dir, site.name),
    '--name',
    site.name,
    '--languages',
    site.languages.join(','),
    '--insecure',
    '--trusted-key',
    keys.pubFile,
    '--admin-token',
    T,
    ...extra,
  ];
  if (site.parent) {
    const parent = nodes.get(site.parent)!;
    const tok = await api(parent.url, T, '/api/v1/hierarchy/join-tokens', { method: 'POST', body: '{}' });
    args.push('--upstream', `127.0.0.1:${parent.grpcPort}`, '--join-token', tok.body.token);
  }
  const n = await spawnNode(t, args);
  await api(n.url, T, '/api/v1/settings/content', {
    method: 'PUT',
    body: JSON.stringify({ need: 'languages', reserveBytes: 0, retryBaseMs: 100, retryMaxMs: 1000 }),
  });
  nodes.set(site.name, n);
  return n;
}

function file(vendor: Vendor, name: string, language: string): { vf: VendorFile; entry: CatalogUpdate['files'][number] } {
  const vf = vendor.add(`/${name}`, 20_000 + name.length);
  return { vf, entry: { name, url: vendor.url(`/${name}`), size: vf.data.length, sha256: vf.sha256, language } };
}

/** What a node with these (subtree) languages must hold: ids, revisions and file languages. */
function expected(all: any[], languages: string[]) {
  return all
    .filter((u) => u.files.length === 0 || u.files.some((f: any) => languageMatches(f.language, languages)))
    .map((u) => ({
      id: u.id,
      revision: u.revision,
      expired: u.expired,
      files: u.files
        .filter((f: any) => languageMatches(f.language, languages))
        .map((f: any) => f.sha256)
        .sort(),
    }))
    .sort((a, b) => a.id.localeCompare(b.id));
}

async function holdings(n: NodeProcess) {
  const list = await listAll(n.url, T, '/api/v1/updates?expired=any', 500);
  const out = [];
  for (const u of list) {
    const d = (await api(n.url, T, `/api/v1/updates/${u.id}`)).body;
    out.push({ id: u.id, revision: u.revision, expired: u.expired, files: d.files.map((f: any) => f.sha256).sort() });
  }
  return out.sort((a, b) => a.id.localeCompare(b.id));
}

async function rootTruth(root: NodeProcess) {
  const list = await listAll(root.url, T, '/api/v1/updates?expired=any', 500);
  return Promise.all(list.map(async (u) => ({ ...u, files: (await api(root.url, T, `/api/v1/updates/${u.id}`)).body.files })));
}

async function converged(t: Test, n: NodeProcess, root: NodeProcess, languages: string[], what: string) {
  let last: unknown;
  try {
    await waitFor(
      async () => {
        const want = expected(await rootTruth(root), languages);
        last = { want, have: await holdings(n) };
        return JSON.stringify((last as any).want) === JSON.stringify((last as any).have);
      },
      what,
      30_000,
    );
    t.pass(what);
  } catch {
    t.same((last as any)?.have, (last as any)?.want, what);
  }
}

async function verifiedFiles(n: NodeProcess): Promise<string[]> {
  return (await listAll(n.url, T, '/api/v1/content/files?state=verified', 500)).map((f) => f.sha256).sort();
}

t.test('a three-level tree: the right updates and files at every site, changes, languages, restarts', async (t) => {
  t.setTimeout(400_000);
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const vendor = await startVendor(t);
  const nodes = new Map<string, NodeProcess>();
  const f = {
    neutral: file(vendor, 'n.cab', 'neutral'),
    en: file(vendor, 'en.cab', 'en-us'),
    de: file(vendor, 'de.cab', 'de-de'),
    fr: file(vendor, 'fr.cab', 'fr-fr'),
    deOnly: file(vendor, 'de-only.cab', 'de-de'),
    frOnly: file(vendor, 'fr-only.cab', 'fr-fr'),
    enOnly: file(vendor, 'en-only.cab', 'en-us'),
    de7: file(vendor, 'de7.cab', 'de-de'),
  };
  const v1 = [
    sampleUpdate(1, { files: [f.neutral.entry] }),
    sampleUpdate(2, { files: [f.en.entry, f.de.entry, f.fr.entry] }),
    sampleUpdate(3, { files: [f.deOnly.entry] }),
    sampleUpdate(4, { files: [f.frOnly.entry] }),
    sampleUpdate(5, { files: [f.enOnly.entry] }),
    sampleUpdate(6, { files: [] }),
  ];
  const root = await startSite(t, dir, keys, { name: 'root', languages: ['en'] }, nodes);
  const c1 = await writeSignedCatalog(dir, keys, 'v1.gz', header('v1', v1.length, new Date('2024-01-01T00:00:00Z')), v1);
  t.equal((await uploadCatalog(root.url, T, c1.file, c1.sig)).status, 201);

  const a = await startSite(t, dir, keys, { name: 'a', languages: ['en'], parent: 'root' }, nodes);
  const b = await startSite(t, dir, keys, { name: 'b', languages: ['de'], parent: 'root' }, nodes);
  const c = await startSite(t, dir, keys, { name: 'c', languages: ['fr'], parent: 'b' }, nodes);

  await converged(t, a, root, ['en'], 'site A (en): its updates, en and neutral files only');
  await converged(t, b, root, ['de', 'fr'], "site B (de) holds its own and its child's (fr) languages");
  await converged(t, c, root, ['fr'], 'site C (fr) below B');
  const ids = async (n: NodeProcess) => (await holdings(n)).map((u) => u.id);
  t.same(await ids(a), ['test-1', 'test-2', 'test-5', 'test-6']);
  t.same(await ids(c), ['test-1', 'test-2', 'test-4', 'test-6']);

  // Files: the root fetched each from the vendor once; the others got them from their parent.
  const sha = (x: { vf: VendorFile }) => x.vf.sha256;
  await waitFor(async () => (await verifiedFiles(c)).length === 3, 'C files');
  t.same(await verifiedFiles(c), [sha(f.neutral), sha(f.fr), sha(f.frOnly)].sort(), 'C stores neutral and fr files');
  await waitFor(async () => (await verifiedFiles(a)).length === 3, 'A files');
  t.same(await verifiedFiles(a), [sha(f.neutral), sha(f.en), sha(f.enOnly)].sort());
  await waitFor(async () => (await verifiedFiles(b)).length === 5, 'B files');
  const perPath = new Map<string, number>();
  for (const r of vendor.requests) perPath.set(r.path, (perPath.get(r.path) ?? 0) + 1);
  t.ok(
    [...perPath.values()].every((n) => n === 1),
    `each file left the vendor once: ${JSON.stringify([...perPath])}`,
  );
  const cFile = await fetch(`${c.url}/agent/v1/files/${sha(f.fr)}`, { headers: { authorization: `Bearer ${T}` } });
  t.ok(Buffer.from(await cFile.arrayBuffer()).equals(f.fr.vf.data), 'the leaf serves the exact vendor bytes');

  // Status on every level.
  const hr = (await api(root.url, T, '/api/v1/hierarchy')).body;
  t.match(hr.node, { name: 'root', role: 'root', languages: ['en'] });
  t.equal(hr.upstream, null);
  t.same(hr.children.map((x: any) => [x.name, x.connected, x.languages]).sort(), [
    ['a', true, ['en']],
    ['b', true, ['de', 'fr']],
  ]);
  const metrics = await (await fetch(`${b.url}/metrics`)).text();
  t.match(metrics, /patchtree_upstream_connected 1/);
  t.match(metrics, /patchtree_child_connected\{child="c \([0-9a-f]{8}\)"\} 1/);
  const hb = (await api(b.url, T, '/api/v1/hierarchy')).body;
  t.match(hb, {
    node: { role: 'mid-tier', subtreeLanguages: ['de', 'fr'] },
    upstream: { connected: true },
    children: [{ name: 'c', connected: true, languages: ['fr'] }],
  });

  // A new release at the root reaches the leaves: changed, expired, added.
  const v2 = [
    sampleUpdate(1, { files: [f.neutral.entry], title: 'Test update 1, revised' }),
    ...v1.slice(1, 4),
    sampleUpdate(6, { files: [] }),
    sampleUpdate(7, { files: [f.de7.entry] }),
  ];
  const c2 = await writeSignedCatalog(dir, keys, 'v2.gz', header('v2', v2.length, new Date('2024-02-01T00:00:00Z')), v2);
  t.match((await uploadCatalog(root.url, T, c2.file, c2.sig)).body, { added: 1, changed: 1, expired: 1 });
  await converged(t, c, root, ['fr'], 'C after v2');
  await converged(t, a, root, ['en'], 'A after v2 (update 5 expired)');
  await converged(t, b, root, ['de', 'fr'], 'B after v2 (update 7 added)');
  t.match((await api(c.url, T, '/api/v1/updates/test-1')).body, { revision: 2, title: 'Test update 1, revised' });
  t.equal((await api(c.url, T, '/api/v1/updates/test-7')).status, 404, 'a de-only update never reaches the fr leaf');

  // Read-only replicated data.
  const sev = await api(b.url, T, '/api/v1/updates/test-1/custom-severity', { method: 'PUT', body: JSON.stringify({ severityId: null }) });
  t.equal(sev.status, 409);
  t.match(sev.body.detail, new RegExp(`replicated from node ${hr.node.id}`));
  const imp = await uploadCatalog(a.url, T, c2.file, c2.sig);
  t.equal(imp.status, 409, 'a child does not import catalogs');

  // A language added at the leaf: backfilled through B; then removed again.
  c.child.kill('SIGTERM');
  await c.exited;
  const c2nd = await startSite(t, dir, keys, { name: 'c', languages: ['fr', 'en'] }, nodes, ['--upstream', `127.0.0.1:${b.grpcPort}`]);
  await converged(t, b, root, ['de', 'en', 'fr'], 'B backfills en for its child');
  await converged(t, c2nd, root, ['en', 'fr'], 'C with en added');
  t.same(await ids(c2nd), ['test-1', 'test-2', 'test-4', 'test-5', 'test-6']);
  c2nd.child.kill('SIGTERM');
  await c2nd.exited;
  const c3rd = await startSite(t, dir, keys, { name: 'c', languages: ['fr'] }, nodes, ['--upstream', `127.0.0.1:${b.grpcPort}`]);
  await converged(t, c3rd, root, ['fr'], 'C with en removed: exactly the en-only update and en manifests are gone');
  await converged(t, b, root, ['de', 'fr'], 'B drops en again');

  // kill -9 of the mid-tier node and of the root: restarted, the tree converges.
  b.child.kill('SIGKILL');
  await b.exited;
  root.child.kill('SIGKILL');
  await root.exited;
  const root2 = await startSite(t, dir, keys, { name: 'root', languages: ['en'] }, nodes);
  const c3 = await writeSignedCatalog(
    dir,
    keys,
    'v3.gz',
    header('v3', v2.length, new Date('2024-03-01T00:00:00Z')),
    v2.map((u) => (u.id === 'test-2' ? { ...u, title: 'Update 2, v3' } : u)),
  );
  t.equal((await uploadCatalog(root2.url, T, c3.file, c3.sig)).status, 201);
  const b2 = await startSite(t, dir, keys, { name: 'b', languages: ['de'] }, nodes, ['--upstream', `127.0.0.1:${root2.grpcPort}`]);
  // C kept the old address of B: restart it against the new one.
  c3rd.child.kill('SIGKILL');
  await c3rd.exited;
  const c4 = await startSite(t, dir, keys, { name: 'c', languages: ['fr'] }, nodes, ['--upstream', `127.0.0.1:${b2.grpcPort}`]);
  await converged(t, b2, root2, ['de', 'fr'], 'B after kill -9 of B and root');
  await converged(t, c4, root2, ['fr'], 'C after kill -9 of B and root');
  t.match((await api(c4.url, T, '/api/v1/updates/test-2')).body, { title: 'Update 2, v3', revision: 2 });
});

t.test('joining: wrong, reused and expired tokens; removed children; protocol versions', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const nodes = new Map<string, NodeProcess>();
  const root = await startSite(t, dir, keys, { name: 'root', languages: ['en'] }, nodes);
  const upstream = `127.0.0.1:${root.grpcPort}`;
  const childArgs = (name: string, token: string) => [
    '--data',
    join(dir, name),
    '--name',
    name,
    '--insecure',
    '--admin-token',
    T,
    '--upstream',
    upstream,
    '--join-token',
    token,
  ];

  const wrong = await spawnNode(t, childArgs('wrong', 'ptj_not-a-real-token'));
  const ws = await waitFor(async () => (await api(wrong.url, T, '/api/v1/hierarchy')).body.upstream.lastError, 'refusal shown');
  t.equal(ws, 'unknown join token');

  const tok = (await api(root.url, T, '/api/v1/hierarchy/join-tokens', { method: 'POST', body: '{}' })).body;
  t.match(tok, { token: /^ptj_/, expiresAt: String });
  const first = await spawnNode(t, childArgs('first', tok.token));
  await waitFor(async () => (await api(first.url, T, '/api/v1/hierarchy')).body.upstream.connected, 'first joined');
  const reused = await spawnNode(t, childArgs('reused', tok.token));
  t.equal(
    await waitFor(async () => (await api(reused.url, T, '/api/v1/hierarchy')).body.upstream.lastError, 'reuse refused'),
    'this join token was already used',
  );

  // A removed child is refused, clearly, and stays refused after a restart.
  const firstId = (await api(first.url, T, '/api/v1/hierarchy')).body.node.id;
  t.equal((await api(root.url, T, `/api/v1/hierarchy/children/${firstId}`, { method: 'DELETE' })).status, 204);
  const msg = await waitFor(async () => (await api(first.url, T, '/api/v1/hierarchy')).body.upstream.lastError, 'removed');
  t.match(msg, /removed from root/);
  t.equal((await api(root.url, T, '/api/v1/hierarchy')).body.children.find((c: any) => c.id === firstId).removed, true);

  // Protocol versions: a raw client speaking version 99.
  const Service = replicationService();
  const client = new Service(upstream, grpc.credentials.createInsecure()) as any;
  const tok2 = (await api(root.url, T, '/api/v1/hierarchy/join-tokens', { method: 'POST', body: '{}' })).body.token;
  const join99 = await new Promise<any>((resolve) =>
    client.Join({ join_token: tok2, node_id: '00000000-0000-4000-8000-000000000099', name: 'old', languages: ['en'], protocol_version: 99 }, (err: any) =>
      resolve(err),
    ),
  );
  t.equal(join99.code, grpc.status.FAILED_PRECONDITION);
  t.match(join99.details, /protocol version 99 is not supported; root speaks 2/);
  const joined = await new Promise<any>((resolve, reject) =>
    client.Join(
      { join_token: tok2, node_id: '00000000-0000-4000-8000-000000000099', name: 'old', languages: ['en'], protocol_version: PROTOCOL_VERSION },
      (err: any, r: any) => (err ? reject(err) : resolve(r)),
    ),
  );
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${joined.credential}`);
  const sub = client.Subscribe({ protocol_version: 99, node_id: '00000000-0000-4000-8000-000000000099', epoch: '', after_seq: 0, languages: ['en'] }, md);
  const err = await new Promise<any>((resolve) => {
    sub.on('error', resolve);
    sub.on('data', () => {});
  });
  t.equal(err.code, grpc.status.FAILED_PRECONDITION);
  const shown = (await api(root.url, T, '/api/v1/hierarchy')).body.children.find((c: any) => c.name === 'old');
  t.match(shown, { protocolVersion: 99, lastError: /protocol version 99 is not supported/ }, 'the refusal shows in the parent status');
  // One version behind (a child not upgraded yet, docs/replication.md): refused clearly;
  // once upgraded, the same child (its credential) is served.
  const v1 = client.Subscribe({ protocol_version: 1, node_id: '00000000-0000-4000-8000-000000000099', epoch: '', after_seq: 0, languages: ['en'] }, md);
  const e1 = await new Promise<any>((resolve) => {
    v1.on('error', resolve);
    v1.on('data', () => {});
  });
  t.equal(e1.code, grpc.status.FAILED_PRECONDITION, 'version 1: FAILED_PRECONDITION');
  t.match(e1.details, /protocol version 1 is not supported; root speaks 2/);
  t.match(
    (await api(root.url, T, '/api/v1/hierarchy')).body.children.find((c: any) => c.name === 'old'),
    { protocolVersion: 1, lastError: /version 1/ },
  );
  const v2 = client.Subscribe(
    { protocol_version: PROTOCOL_VERSION, node_id: '00000000-0000-4000-8000-000000000099', epoch: '', after_seq: 0, languages: ['en'] },
    md,
  );
  const firstMessage = await new Promise<any>((resolve, reject) => {
    v2.on('data', resolve);
    v2.on('error', reject);
  });
  t.ok(firstMessage.hello, 'upgraded: served (the stream opens with its Hello)');
  v2.cancel();
  await new Promise((r) => setTimeout(r, 100));
  t.match(
    (await api(root.url, T, '/api/v1/hierarchy')).body.children.find((c: any) => c.name === 'old'),
    { protocolVersion: PROTOCOL_VERSION, lastError: null },
  );
  const noCred = client.Subscribe({ protocol_version: 1, node_id: 'x', epoch: '', after_seq: 0, languages: [] }, new grpc.Metadata());
  const e2 = await new Promise<any>((resolve) => {
    noCred.on('error', resolve);
    noCred.on('data', () => {});
  });
  t.equal(e2.code, grpc.status.UNAUTHENTICATED);
  client.close();
});
