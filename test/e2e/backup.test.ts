/**
 * `patchtree backup` of a running root while it imports, its data folder destroyed,
 * `patchtree restore`: the root comes back with its identity (its child reconnects with
 * the same credential) and a new epoch, so the child resyncs completely and ends with
 * exactly what the root holds. Restoring an older backup does the same: the child drops
 * what the root no longer has and keeps nothing else different. Real node processes,
 * real CLI, real files.
 */
import t from 'tap';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ADMIN_TOKEN as T,
  api,
  header,
  fingerprint,
  makeKeys,
  runCli,
  sampleUpdate,
  tempDir,
  treeNode,
  uploadCatalog,
  writeSignedCatalog,
  type Keys,
  type NodeProcess,
} from '../helpers.js';
import { waitFor } from '../vendor.js';

async function catalog(dir: string, keys: Keys, version: string, count: number, day: number) {
  const updates = Array.from({ length: count }, (_, i) => sampleUpdate(i + 1, { title: `${version} ${i + 1}`, files: [] }));
  return writeSignedCatalog(dir, keys, `${version}.gz`, header(version, count, new Date(Date.UTC(2024, 0, day))), updates);
}

async function stop(n: NodeProcess, signal: NodeJS.Signals = 'SIGKILL') {
  n.child.kill(signal);
  await n.exited;
}

t.test('backup under load, restore, and the tree converges; an older backup makes the children resync', async (t) => {
  t.setTimeout(240_000);
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  let root = await treeNode(t, dir, keys, 'root', 'en');
  const port = root.grpcPort;
  const v1 = await catalog(dir, keys, 'v1', 300, 1);
  t.equal((await uploadCatalog(root.url, T, v1.file, v1.sig)).status, 201);
  const child = await treeNode(t, dir, keys, 'child', 'en', root);
  await waitFor(async () => JSON.stringify(await fingerprint(child)) === JSON.stringify(await fingerprint(root)), 'child synced', 60_000);
  const rootId = (await api(root.url, T, '/api/v1/hierarchy')).body.node.id as string;

  // An older backup (v1 only), then one taken while v2 (every update changed, more added) is imported.
  const older = join(dir, 'older.tgz');
  t.equal((await runCli(['backup', '--data', join(dir, 'root'), '--out', older])).code, 0);
  const v2 = await catalog(dir, keys, 'v2', 1500, 2);
  const importing = uploadCatalog(root.url, T, v2.file, v2.sig);
  const underLoad = join(dir, 'under-load.tgz');
  const made = await runCli(['backup', '--data', join(dir, 'root'), '--out', underLoad]);
  t.equal(made.code, 0, made.stderr);
  t.equal(JSON.parse(made.stdout).node, rootId, 'the backup names the node');
  t.equal((await importing).status, 201);
  await waitFor(async () => JSON.stringify(await fingerprint(child)) === JSON.stringify(await fingerprint(root)), 'child has v2', 60_000);

  // The root's disk dies: the folder is gone; restored from the backup taken under load.
  await stop(root);
  await rm(join(dir, 'root'), { recursive: true });
  const restored = await runCli(['restore', '--from', underLoad, '--data', join(dir, 'root')]);
  t.equal(restored.code, 0, restored.stderr);
  root = await treeNode(t, dir, keys, 'root', 'en', undefined, ['--grpc-port', String(port)]);
  t.equal((await api(root.url, T, '/api/v1/hierarchy')).body.node.id, rootId, 'the same node id');
  const held = await fingerprint(root);
  t.ok(held.length === 300 || held.length === 1500, `the root holds v1 or v2 whole, as of one transaction (${held.length} updates)`);
  // The child reconnects with its credential and resyncs completely (the root has a new
  // epoch), whether or not it held more than the backup.
  const resynced = () => child.logs.some((l) => l.msg === 'subscribed upstream' && l.mode === 'resync' && /unknown epoch/.test(String(l.reason)));
  await waitFor(
    async () => {
      const kid = (await api(root.url, T, '/api/v1/hierarchy')).body.children[0];
      return resynced() && kid.connected && !kid.resyncOwed && JSON.stringify(await fingerprint(child)) === JSON.stringify(held);
    },
    'child resynced from the restored root, acknowledged, equal to it',
    60_000,
  );
  t.pass('the child reconnected with its old credential, resynced completely and equals the restored root');
  // What the backup missed comes again with the next import, and reaches the child.
  t.equal((await uploadCatalog(root.url, T, v2.file, v2.sig)).status, 201);
  await waitFor(
    async () => (await fingerprint(child)).length === 1500 && JSON.stringify(await fingerprint(child)) === JSON.stringify(await fingerprint(root)),
    'v2 everywhere',
    60_000,
  );

  // An older backup: the child holds v2, the root comes back with v1 only.
  await stop(root);
  await rm(join(dir, 'root'), { recursive: true });
  t.equal((await runCli(['restore', '--from', older, '--data', join(dir, 'root')])).code, 0);
  const resyncs = child.logs.filter((l) => l.msg === 'subscribed upstream' && l.mode === 'resync').length;
  root = await treeNode(t, dir, keys, 'root', 'en', undefined, ['--grpc-port', String(port)]);
  const v1Only = await fingerprint(root);
  t.equal(v1Only.length, 300, 'the older backup holds v1');
  await waitFor(async () => JSON.stringify(await fingerprint(child)) === JSON.stringify(v1Only), 'child equals the older root', 60_000);
  t.ok(child.logs.filter((l) => l.msg === 'subscribed upstream' && l.mode === 'resync').length > resyncs, 'by a complete resync');

  // Refusals: a folder in use, a damaged backup.
  const busy = await runCli(['restore', '--from', older, '--data', join(dir, 'root')]);
  t.equal(busy.code, 2);
  t.match(busy.stderr, /is not empty/);
  const junk = join(dir, 'junk.tgz');
  await import('node:fs/promises').then((fs) => fs.writeFile(junk, 'not a backup'));
  const bad = await runCli(['restore', '--from', junk, '--data', join(dir, 'elsewhere')]);
  t.not(bad.code, 0);
  t.match(bad.stderr, /patchtree: /);
});
