import t from 'tap';
import { readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { api, buildRealCatalog, header, listAll, makeKeys, sampleUpdate, startNode, tempDir, uploadCatalog, writeSignedCatalog } from '../helpers.js';

t.test('import the real catalog; re-import changes nothing', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const { file, sig } = await buildRealCatalog(dir, keys);
  const n = await startNode(t, { trustedKeys: [keys.pubFile] });

  const first = await uploadCatalog(n.url, n.token, file, sig);
  t.equal(first.status, 201, JSON.stringify(first.body));
  t.match(first.body, { version: '2024.01.1', added: 495, changed: 0, expired: 0, unchanged: 0, updates: 495 });
  const before = await listAll(n.url, n.token, '/api/v1/updates', 500);
  t.equal(before.length, 495);

  const again = await uploadCatalog(n.url, n.token, file, sig);
  t.equal(again.status, 201);
  t.match(again.body, { version: '2024.01.1', added: 0, changed: 0, expired: 0, unchanged: 495 });
  const after = await listAll(n.url, n.token, '/api/v1/updates', 500);
  t.same(
    after.map((u) => [u.id, u.revision]),
    before.map((u) => [u.id, u.revision]),
    'same ids and revisions',
  );

  const kb = await api(n.url, n.token, '/api/v1/updates?kb=5034123');
  t.equal(kb.body.items.length, 4);
  const x64 = kb.body.items.find((u: any) => u.product === 'Windows 11 Version 23H2 for x64-based Systems');
  t.match(x64, { kb: '5034123', severity: 'Critical', supersedes: ['5033375'], languages: [], revision: 1 });
  t.equal(x64.cves.length, 35);
  const office = await api(n.url, n.token, '/api/v1/updates/f44b0b03-45bd-4038-9e11-027f263b40b3');
  t.equal(office.status, 200);
  t.equal(office.body.files.length, 66);
  t.ok(office.body.languages.includes('fa-ir') && office.body.languages.includes('ca-es-valencia'), 'languages of its files');
  t.notOk(office.body.languages.includes('neutral'), 'a language pack has no neutral file');

  const history = await api(n.url, n.token, '/api/v1/catalog/imports');
  t.equal(history.body.items.length, 2);
  t.match(history.body.items[0], { version: '2024.01.1', unchanged: 495, importedBy: 'bootstrap admin', keyId: keys.keyId, source: 'upload' });
  t.same(readdirSync(join(n.dataDir, 'tmp')), [], 'uploads are removed after import');
});

t.test('one bad line rejects the whole catalog and writes nothing', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const n = await startNode(t, { trustedKeys: [keys.pubFile] });
  const updates: unknown[] = Array.from({ length: 50 }, (_, i) => sampleUpdate(i));
  (updates[30] as any).files[0].sha256 = 'not-a-hash';
  (updates[41] as any).installed = { any: [{ kb: 'KB1' }] };
  const bad = await writeSignedCatalog(dir, keys, 'bad.gz', header('v1', 50), updates);
  const res = await uploadCatalog(n.url, n.token, bad.file, bad.sig);
  t.equal(res.status, 422);
  t.equal(res.headers.get('content-type'), 'application/problem+json');
  t.equal(res.body.type, 'urn:patchtree:problem:catalog-invalid');
  t.same(res.body.errors.slice(0, 2), [
    { line: 32, path: 'files[0].sha256', message: 'expected 64 lowercase hex digits' },
    { line: 43, path: 'installed.any[0].kb', message: 'expected a KB number like "5034123"' },
  ]);
  t.equal((await listAll(n.url, n.token, '/api/v1/updates?expired=any', 100)).length, 0, 'no update imported');
  t.equal((await api(n.url, n.token, '/api/v1/catalog/imports')).body.items.length, 0, 'no release recorded');

  // Other ways to be invalid: wrong count, duplicate id, bad header, not gzip.
  const short = await writeSignedCatalog(dir, keys, 'short.gz', header('v1', 51), updates.slice(0, 30).concat([sampleUpdate(99)]));
  t.match((await uploadCatalog(n.url, n.token, short.file, short.sig)).body.errors[0], { path: '(header).updates' });
  const dup = await writeSignedCatalog(dir, keys, 'dup.gz', header('v1', 3), [sampleUpdate(1), sampleUpdate(2), sampleUpdate(1)]);
  t.match((await uploadCatalog(n.url, n.token, dup.file, dup.sig)).body.errors[0], { line: 4, path: 'id' });
  const badHeader = await writeSignedCatalog(dir, keys, 'hdr.gz', { ...header('v1', 1), formatVersion: 9 } as any, [sampleUpdate(1)]);
  t.match((await uploadCatalog(n.url, n.token, badHeader.file, badHeader.sig)).body.errors[0], { line: 1, path: 'formatVersion' });
  const notGzip = join(dir, 'plain');
  writeFileSync(notGzip, 'hello');
  const { signFile, loadPrivateKey } = await import('../../src/catalog/signing.js');
  await signFile(notGzip, await loadPrivateKey(keys.keyFile));
  const ng = await uploadCatalog(n.url, n.token, notGzip, `${notGzip}.sig`);
  t.equal(ng.status, 422);
  t.equal(ng.body.code, 'catalog-invalid');
  t.match(ng.body.detail, /^the catalog is not a readable gzip file: /, 'said once, from the parse thread');
  t.equal((await listAll(n.url, n.token, '/api/v1/updates?expired=any', 100)).length, 0, 'still nothing imported');

  // Lines are parsed on a thread of their own, in batches: errors far apart are all found, in line order, at most 20.
  const many: unknown[] = Array.from({ length: 1200 }, (_, i) => sampleUpdate(i));
  for (const i of [100, 700, 1150]) (many[i] as any).severity = 'Urgent';
  const far = await writeSignedCatalog(dir, keys, 'far.gz', header('v1', 1200), many);
  const farRes = await uploadCatalog(n.url, n.token, far.file, far.sig);
  t.equal(farRes.status, 422);
  t.same(
    farRes.body.errors.map((e: any) => [e.line, e.path]),
    [
      [102, 'severity'],
      [702, 'severity'],
      [1152, 'severity'],
    ],
  );
  for (let i = 0; i < 30; i++) (many[i * 40] as any).title = '';
  const worse = await writeSignedCatalog(dir, keys, 'worse.gz', header('v1', 1200), many);
  const worseRes = await uploadCatalog(n.url, n.token, worse.file, worse.sig);
  t.equal(worseRes.status, 422);
  t.equal(worseRes.body.errors.length, 20, 'the first 20 errors, then the import stops reading');
  t.equal((await listAll(n.url, n.token, '/api/v1/updates?expired=any', 100)).length, 0, 'still nothing imported');
});

t.test('signatures: tampered byte, untrusted key, missing parts', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const other = await makeKeys(dir, 'other');
  const n = await startNode(t, { trustedKeys: [keys.pubFile] });
  const good = await writeSignedCatalog(dir, keys, 'good.gz', header('v1', 2), [sampleUpdate(1), sampleUpdate(2)]);
  const bytes = readFileSync(good.file);
  bytes[bytes.length - 10] = bytes[bytes.length - 10]! ^ 0xff;
  const tampered = join(dir, 'tampered.gz');
  writeFileSync(tampered, bytes);
  const r1 = await uploadCatalog(n.url, n.token, tampered, good.sig);
  t.equal(r1.status, 422);
  t.equal(r1.body.code, 'signature-invalid');
  const byOther = await writeSignedCatalog(dir, other, 'other.gz', header('v1', 2), [sampleUpdate(1), sampleUpdate(2)]);
  const r2 = await uploadCatalog(n.url, n.token, byOther.file, byOther.sig);
  t.equal(r2.status, 422);
  t.equal(r2.body.code, 'untrusted-publisher');
  const form = new FormData();
  form.append('catalog', new Blob([readFileSync(good.file)]), 'c.gz');
  const r3 = await api(n.url, n.token, '/api/v1/catalog/imports', { method: 'POST', body: form });
  t.equal(r3.status, 400);
  t.match(r3.body.detail, /signature/);
  const r4 = await api(n.url, n.token, '/api/v1/catalog/imports', { method: 'POST', body: '{}' });
  t.equal(r4.status, 415);
  t.equal((await listAll(n.url, n.token, '/api/v1/updates?expired=any', 100)).length, 0);
  const ok = await uploadCatalog(n.url, n.token, good.file, good.sig);
  t.equal(ok.status, 201, 'the untampered file imports');
});

t.test('a newer version adds, changes and expires; versions are guarded', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const n = await startNode(t, { trustedKeys: [keys.pubFile] });
  const t0 = new Date('2024-01-10T00:00:00Z');
  const v1 = await writeSignedCatalog(
    dir,
    keys,
    'v1.gz',
    header('v1', 5, t0),
    [1, 2, 3, 4, 5].map((i) => sampleUpdate(i)),
  );
  t.match((await uploadCatalog(n.url, n.token, v1.file, v1.sig)).body, { added: 5 });

  const t1 = new Date('2024-02-10T00:00:00Z');
  const v2Updates = [
    sampleUpdate(1),
    sampleUpdate(2, { title: 'Test update 2, revised', severity: 'Critical' }),
    sampleUpdate(3),
    sampleUpdate(4),
    sampleUpdate(6, { supersedes: ['5000002'] }),
  ];
  const v2 = await writeSignedCatalog(dir, keys, 'v2.gz', header('v2', 5, t1), v2Updates);
  const r = await uploadCatalog(n.url, n.token, v2.file, v2.sig);
  t.equal(r.status, 201);
  t.match(r.body, { version: 'v2', added: 1, changed: 1, expired: 1, unchanged: 3 });
  const u2 = (await api(n.url, n.token, '/api/v1/updates/test-2')).body;
  t.match(u2, { revision: 2, title: 'Test update 2, revised', severity: 'Critical', superseded: true });
  t.match(u2.supersedence.supersededBy, [{ id: 'test-6', kb: '5000006' }]);
  const u6 = (await api(n.url, n.token, '/api/v1/updates/test-6')).body;
  t.match(u6.supersedence.supersedes, [{ id: 'test-2', kb: '5000002', inCatalog: true }]);
  const u5 = (await api(n.url, n.token, '/api/v1/updates/test-5')).body;
  t.match(u5, { expired: true, revision: 2 });
  t.same(
    (await listAll(n.url, n.token, '/api/v1/updates', 2)).map((u) => u.id).sort(),
    ['test-1', 'test-2', 'test-3', 'test-4', 'test-6'],
    'expired hidden by default',
  );
  t.same(
    (await api(n.url, n.token, '/api/v1/updates?expired=true')).body.items.map((u: any) => u.id),
    ['test-5'],
  );
  t.same(
    (await api(n.url, n.token, '/api/v1/updates?superseded=true')).body.items.map((u: any) => u.id),
    ['test-2'],
  );

  // The same version with other bytes, or an older release, is refused.
  const v2b = await writeSignedCatalog(dir, keys, 'v2b.gz', header('v2', 1, t1), [sampleUpdate(9)]);
  const conflict = await uploadCatalog(n.url, n.token, v2b.file, v2b.sig);
  t.equal(conflict.status, 409);
  t.equal(conflict.body.code, 'catalog-version-conflict');
  const old = await writeSignedCatalog(dir, keys, 'v0.gz', header('v0', 1, new Date('2023-12-01T00:00:00Z')), [sampleUpdate(9)]);
  const stale = await uploadCatalog(n.url, n.token, old.file, old.sig);
  t.equal(stale.status, 409);
  t.equal(stale.body.code, 'catalog-stale');
  t.equal((await api(n.url, n.token, '/api/v1/updates/test-9')).status, 404, 'nothing of the refused files was written');

  // Listing it again brings an expired update back with a new revision.
  const v3 = await writeSignedCatalog(dir, keys, 'v3.gz', header('v3', 6, new Date('2024-03-10T00:00:00Z')), [...v2Updates, sampleUpdate(5)]);
  t.match((await uploadCatalog(n.url, n.token, v3.file, v3.sig)).body, { changed: 1, unchanged: 5, expired: 0 });
  t.match((await api(n.url, n.token, '/api/v1/updates/test-5')).body, { expired: false, revision: 3 });
});
