import t from 'tap';
import { join } from 'node:path';
import { api, header, makeKeys, runCli, sampleUpdate, spawnNode, tempDir, ADMIN_TOKEN, uploadCatalog, writeSignedCatalog } from '../helpers.js';
import { startVendor } from '../vendor.js';
import { progressLine } from '../../src/cli/main.js';

t.test('patchtree content status follows a real node downloading', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const vendor = await startVendor(t);
  const files = [vendor.add('/a.cab', 2_000_000), vendor.add('/b.cab', 1_000_000)];
  const node = await spawnNode(t, ['--data', join(dir, 'data'), '--trusted-key', keys.pubFile, '--admin-token', ADMIN_TOKEN]);
  const updates = files.map((f, i) =>
    sampleUpdate(i + 1, { files: [{ name: f.path.slice(1), url: vendor.url(f.path), size: f.data.length, sha256: f.sha256, language: 'neutral' }] }),
  );
  const cat = await writeSignedCatalog(dir, keys, 'c.gz', header('v1', 2), updates);
  t.equal((await uploadCatalog(node.url, ADMIN_TOKEN, cat.file, cat.sig)).status, 201);
  await api(node.url, ADMIN_TOKEN, '/api/v1/settings/content', { method: 'PUT', body: JSON.stringify({ reserveBytes: 0, bytesPerSecond: 1_500_000 }) });
  t.equal(
    (await api(node.url, ADMIN_TOKEN, '/api/v1/content/downloads', { method: 'POST', body: JSON.stringify({ updates: ['test-1', 'test-2'] }) })).status,
    202,
  );

  const watch = await runCli(['content', 'status', '--server', node.url, '--token', ADMIN_TOKEN, '--watch']);
  t.equal(watch.code, 0, watch.stderr);
  const lines = watch.stdout.trim().split('\n');
  t.match(lines[lines.length - 1], /^\[#{30}\] 100\.0% 3\.0 MB \/ 3\.0 MB {2}verified 2\/2, downloading 0, pending 0, failed 0 {2}\(idle\)$/);
  const json = await runCli(['content', 'status', '--server', node.url, '--token', ADMIN_TOKEN, '--json']);
  t.match(JSON.parse(json.stdout), { files: 2, verified: 2, bytes: 3_000_000 });
  const denied = await runCli(['content', 'status', '--server', node.url, '--token', 'pt_wrong']);
  t.equal(denied.code, 2);
  t.match(denied.stderr, /HTTP 401/);
});

t.test('the progress line', async (t) => {
  const base = { files: 4, verified: 1, pending: 2, downloading: 1, failed: 0, downloader: { state: 'downloading', reason: null } };
  t.equal(
    progressLine({ ...base, bytes: 4_000_000, bytesDone: 1_000_000 }, 8),
    '[##......]  25.0% 1.0 MB / 4.0 MB  verified 1/4, downloading 1, pending 2, failed 0  (downloading)',
  );
  t.equal(
    progressLine({ ...base, bytes: 0, bytesDone: 0, downloader: { state: 'paused', reason: 'insufficient-space: x' } }, 4),
    '[####] 100.0% 0.0 MB / 0.0 MB  verified 1/4, downloading 1, pending 2, failed 0  (paused: insufficient-space: x)',
  );
});
