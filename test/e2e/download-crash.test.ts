import t from 'tap';
import { join } from 'node:path';
import { api, ADMIN_TOKEN, header, makeKeys, sampleUpdate, spawnNode, tempDir, uploadCatalog, writeSignedCatalog } from '../helpers.js';
import { startVendor, waitFor } from '../vendor.js';

t.test('kill -9 mid-download: the restarted node resumes with Range and verifies', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const vendor = await startVendor(t);
  const f = vendor.add('/big.cab', 3 * 1024 * 1024);
  const args = ['--data', join(dir, 'data'), '--trusted-key', keys.pubFile, '--admin-token', ADMIN_TOKEN];
  const first = await spawnNode(t, args);
  const cat = await writeSignedCatalog(dir, keys, 'c.gz', header('v1', 1), [
    sampleUpdate(1, { files: [{ name: 'big.cab', url: vendor.url('/big.cab'), size: f.data.length, sha256: f.sha256, language: 'neutral' }] }),
  ]);
  await uploadCatalog(first.url, ADMIN_TOKEN, cat.file, cat.sig);
  await api(first.url, ADMIN_TOKEN, '/api/v1/settings/content', { method: 'PUT', body: JSON.stringify({ reserveBytes: 0, bytesPerSecond: 1024 * 1024 }) });
  await api(first.url, ADMIN_TOKEN, '/api/v1/content/downloads', { method: 'POST', body: JSON.stringify({ updates: ['test-1'] }) });
  await waitFor(async () => {
    const item = (await api(first.url, ADMIN_TOKEN, '/api/v1/content/files?update=test-1')).body.items[0];
    return item.state === 'downloading' && item.bytesDone > 1024 * 1024;
  }, 'a third of the file');
  first.child.kill('SIGKILL');
  await first.exited;

  const second = await spawnNode(t, args);
  await waitFor(
    async () => (await api(second.url, ADMIN_TOKEN, '/api/v1/content/files?update=test-1')).body.items[0].state === 'verified',
    'verified after restart',
  );
  const reqs = vendor.requests.filter((r) => r.path === '/big.cab');
  t.equal(reqs.length, 2);
  const resumedAt = Number(/^bytes=(\d+)-$/.exec(reqs[1]!.range ?? '')?.[1]);
  t.ok(resumedAt > 1024 * 1024, `resumed at byte ${resumedAt}, not from zero`);
  const res = await fetch(`${second.url}/agent/v1/files/${f.sha256}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  t.ok(Buffer.from(await res.arrayBuffer()).equals(f.data), 'the stored file is exactly the vendor file');
});
