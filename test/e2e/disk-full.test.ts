import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmdirSync, statfsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { generate } from '../../bench/catalog-import.js';
import { ADMIN_TOKEN, api, header, makeKeys, spawnNode, tempDir, uploadCatalog, writeSignedCatalog } from '../helpers.js';

/**
 * A node whose disk fills up (a real tmpfs, as root; skipped where mounting is not
 * allowed). Found by the soak (bench/soak.ts, seed 1, round 5): a catalog upload whose
 * spooling to disk failed with ENOSPC while the body was still being read left a
 * rejected promise without a handler, and the node process died.
 */
const mountable = (() => {
  if (process.getuid?.() !== 0) return false;
  const probe = join('/tmp', `patchtree-mount-probe-${process.pid}`);
  mkdirSync(probe, { recursive: true });
  const ok = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', probe]).status === 0;
  if (ok) spawnSync('umount', [probe]);
  try {
    rmdirSync(probe); // empty: nothing of it is left in /tmp
  } catch {
    /* still mounted: left as it is */
  }
  return ok;
})();

t.test(
  "an import while the node's disk is full: a 507 that says so, the node stays up, nothing half-written; the same import once there is room",
  { skip: mountable ? false : 'needs root to mount a small tmpfs', timeout: 60_000 },
  async (t) => {
    const dir = await tempDir(t);
    const keys = await makeKeys(dir);
    const data = join(dir, 'data');
    mkdirSync(data);
    t.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', data]).status, 0, 'a 64 MB tmpfs');
    t.teardown(() => void spawnSync('umount', ['-l', data]));
    const node = await spawnNode(t, ['--data', data, '--admin-token', ADMIN_TOKEN, '--trusted-key', keys.pubFile, '--name', 'full']);
    // A catalog of a few MB, so the upload is still arriving when the disk refuses it.
    const updates = [...generate(6000)];
    const cat = await writeSignedCatalog(dir, keys, 'c.gz', header('full-1', updates.length), updates);

    const ballast = join(data, 'ballast');
    const free = statfsSync(data);
    t.equal(spawnSync('fallocate', ['-l', String(free.bavail * free.bsize), ballast]).status, 0, 'the disk filled');
    const refused = await uploadCatalog(node.url, ADMIN_TOKEN, cat.file, cat.sig);
    t.equal(refused.status, 507, 'refused: 507 Insufficient Storage');
    t.match(refused.body, { type: /insufficient-storage/, status: 507, detail: /no room for the catalog|disk is full/ }, 'a problem document that says why');
    t.equal((await fetch(`${node.url}/healthz`)).status, 200, 'the node is still up');
    t.equal(node.child.exitCode, null, 'its process did not exit');
    const tmp = join(data, 'tmp');
    t.same(
      readdirSync(tmp, { withFileTypes: true }).filter((e) => e.name.startsWith('import-')),
      [],
      'no half-written upload left behind',
    );
    t.same((await api(node.url, ADMIN_TOKEN, '/api/v1/catalog/imports')).body.items, [], 'nothing imported');

    await rm(ballast);
    const ok = await uploadCatalog(node.url, ADMIN_TOKEN, cat.file, cat.sig);
    t.equal(ok.status, 201, 'with room again, the same import goes through');
    t.equal(ok.body.updates, updates.length);
  },
);
