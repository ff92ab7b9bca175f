import t from 'tap';
import { generate } from '../../bench/catalog-import.js';
import { ADMIN_TOKEN as T, api, header, makeKeys, tempDir, treeNode, uploadCatalog, writeSignedCatalog, type NodeProcess } from '../helpers.js';
import { waitFor } from '../vendor.js';

const N = 20_000;

async function liveCount(n: NodeProcess): Promise<number> {
  const text = await (await fetch(`${n.url}/metrics`)).text();
  return Number(/patchtree_catalog_updates\{state="live"\} (\d+)/.exec(text)?.[1] ?? -1);
}

const assessed = (n: NodeProcess) => n.logs.filter((l) => l.msg === 'catalog changes assessed').length;

/**
 * A large import travelling down three levels: the mid-tier node catches up in pages,
 * and while it does, the pages it sends its own child say more is coming (its parent
 * has more behind), so the leaf assesses the new catalog once for the burst (or once
 * per 10 s of it at most), not after each of the twenty or so batches it gets. The
 * leaf has a computer (a node without one keeps no catalog index and assesses nothing).
 */
t.test('a burst down the tree: the leaf below a catching-up node assesses once per burst, not per batch', async (t) => {
  t.setTimeout(240_000);
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const root = await treeNode(t, dir, keys, 'root', 'en');
  const mid = await treeNode(t, dir, keys, 'mid', 'en', root);
  const leaf = await treeNode(t, dir, keys, 'leaf', 'en', mid);
  await waitFor(async () => !!leaf.logs.find((l) => l.msg === 'resync applied'), 'the leaf subscribed', 60_000);
  const enrol = await api(leaf.url, T, '/api/v1/agents/enrollment-tokens', { method: 'POST', body: '{}' });
  const W11 = 'Windows 11 Version 23H2 for x64-based Systems';
  const os = { family: 'windows', name: W11, version: '10.0.22631.2861', arch: 'x64', language: 'en-us' };
  const report = await api(leaf.url, enrol.body.token, '/agent/v1/inventory', {
    method: 'POST',
    body: JSON.stringify({
      agentKey: 'leaf-pc-1',
      name: 'LEAF-PC-1',
      agentVersion: '1.0.0',
      full: { os, products: [{ name: W11, version: os.version }], kbs: [] },
    }),
  });
  t.equal(report.status, 200, 'a computer reports to the leaf');
  t.match((await api(leaf.url, T, '/api/v1/assessment')).body, { indexed: true, computers: 1 });
  const before = assessed(leaf);
  const updates = [...generate(N)];
  const c = await writeSignedCatalog(dir, keys, 'big.gz', header('big', N), updates);
  t.equal((await uploadCatalog(root.url, T, c.file, c.sig)).status, 201);
  await waitFor(async () => (await liveCount(leaf)) === N, 'the leaf holds the import', 180_000);
  await waitFor(async () => assessed(leaf) > before, 'the leaf assessed it', 30_000);
  const batches = leaf.logs.filter((l) => l.msg === 'catalog changes assessed').slice(before);
  const updatesAssessed = batches.reduce((n, l) => n + Number(l.updates ?? 0), 0);
  t.ok(
    batches.length <= 4,
    `the leaf assessed ${batches.length} time(s) for ${N} updates that came in many batches (at most 4: once per burst, or per 10 s of it)`,
  );
  t.ok(updatesAssessed >= N, `every update assessed (${updatesAssessed})`);
});
