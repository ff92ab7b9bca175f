import t from 'tap';
import { statSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { api, buildRealCatalog, header, listAll, makeKeys, sampleUpdate, startNode, tempDir, uploadCatalog, writeSignedCatalog } from '../helpers.js';

t.test('health, metrics, OpenAPI and docs need no token', async (t) => {
  const n = await startNode(t);
  const h = await api(n.url, null, '/healthz');
  t.match(h, { status: 200, body: { status: 'ok', name: 'test-node' } });
  const m = await fetch(`${n.url}/metrics`);
  t.equal(m.status, 200);
  const text = await m.text();
  t.match(text, /patchtree_http_requests_total\{method="GET",route="\/healthz",status="200"\} 1/);
  t.match(text, /patchtree_catalog_updates\{state="live"\} 0/);
  const doc = await api(n.url, null, '/openapi.json');
  t.equal(doc.body.openapi, '3.0.3');
  t.ok(doc.body.paths['/api/v1/updates'].get, 'documents the browse route');
  t.ok(doc.body.paths['/api/v1/catalog/imports'].post.requestBody.content['multipart/form-data'], 'documents the upload');
  t.same(doc.body.components.securitySchemes.bearer, { type: 'http', scheme: 'bearer', description: 'An API token (admin, operator or viewer).' });
  const params = doc.body.paths['/api/v1/updates'].get.parameters.map((p: any) => p.name);
  t.ok(
    ['kb', 'severity', 'language', 'cursor', 'limit'].every((p) => params.includes(p)),
    'query parameters come from the validating schema',
  );
  const docs = await fetch(`${n.url}/docs`);
  t.match(docs.headers.get('content-type'), /text\/html/);
  t.match(await docs.text(), /\/api\/v1\/catalog\/imports/);
  const missing = await api(n.url, null, '/nope');
  t.equal(missing.status, 404);
  t.equal(missing.headers.get('content-type'), 'application/problem+json');
});

t.test('metrics count the catalog by state: live and expired', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const n = await startNode(t, { trustedKeys: [keys.pubFile] });
  const counts = async () => {
    const text = await (await fetch(`${n.url}/metrics`)).text();
    return ['live', 'expired'].map((s) => Number(new RegExp(`patchtree_catalog_updates\\{state="${s}"\\} (\\d+)`).exec(text)?.[1] ?? -1));
  };
  const first = await writeSignedCatalog(
    dir,
    keys,
    'c1.ndjson.gz',
    header('m1', 3),
    [1, 2, 3].map((i) => sampleUpdate(i)),
  );
  t.equal((await uploadCatalog(n.url, n.token, first.file, first.sig)).status, 201);
  t.same(await counts(), [3, 0], 'three live');
  // A release that no longer lists an update expires it.
  const second = await writeSignedCatalog(
    dir,
    keys,
    'c2.ndjson.gz',
    header('m2', 2),
    [1, 3].map((i) => sampleUpdate(i)),
  );
  t.equal((await uploadCatalog(n.url, n.token, second.file, second.sig)).status, 201);
  t.same(await counts(), [2, 1], 'two live, one expired');
});

t.test('tokens and roles', async (t) => {
  const n = await startNode(t);
  t.equal((await api(n.url, null, '/api/v1/updates')).status, 401, 'no token');
  const wrong = await api(n.url, 'pt_wrong', '/api/v1/updates');
  t.equal(wrong.status, 401, 'unknown token');
  t.equal(wrong.body.type, 'urn:patchtree:problem:unauthenticated');
  t.match(wrong.headers.get('www-authenticate'), /Bearer/);
  t.equal((await api(n.url, 'x', '/api/v1/updates', { headers: { authorization: 'Basic abc' } })).status, 401, 'not a bearer');

  const mk = async (role: string) =>
    (await api(n.url, n.token, '/api/v1/tokens', { method: 'POST', body: JSON.stringify({ name: `${role} token`, role }) })).body;
  const viewer = await mk('viewer');
  const operator = await mk('operator');
  t.match(viewer.token, /^pt_/);
  t.equal((await api(n.url, viewer.token, '/api/v1/updates')).status, 200, 'viewer reads');
  const denied = await api(n.url, viewer.token, '/api/v1/catalog/imports', { method: 'POST', body: new FormData() });
  t.equal(denied.status, 403, 'viewer cannot import');
  t.equal(denied.body.type, 'urn:patchtree:problem:forbidden');
  t.equal((await api(n.url, viewer.token, '/api/v1/severities', { method: 'POST', body: JSON.stringify({ name: 'X' }) })).status, 403);
  t.equal(
    (await api(n.url, operator.token, '/api/v1/tokens', { method: 'POST', body: JSON.stringify({ name: 'x', role: 'admin' }) })).status,
    403,
    'operator cannot make tokens',
  );
  t.equal(
    (await api(n.url, operator.token, '/api/v1/catalog/imports', { method: 'POST', body: new FormData() })).status,
    400,
    'operator may import (and is told the parts are missing)',
  );
  t.equal(
    (await api(n.url, operator.token, '/api/v1/settings/storage', { method: 'PUT', body: JSON.stringify({ path: '/tmp' }) })).status,
    403,
    'operator cannot change settings',
  );

  const list = await api(n.url, n.token, '/api/v1/tokens');
  t.equal(list.body.items.length, 3);
  t.notOk(JSON.stringify(list.body).includes(viewer.token), 'secrets are never listed');
  t.equal((await api(n.url, n.token, `/api/v1/tokens/${viewer.id}`, { method: 'DELETE' })).status, 204);
  t.equal((await api(n.url, viewer.token, '/api/v1/updates')).status, 401, 'a revoked token stops working at once');
  t.equal((await api(n.url, n.token, '/api/v1/tokens/bootstrap-admin', { method: 'DELETE' })).status, 409);
  t.equal((await api(n.url, n.token, '/api/v1/tokens/nope', { method: 'DELETE' })).status, 404);

  // Tokens are stored hashed.
  const { createClient } = await import('@libsql/client');
  const db = createClient({ url: `file:${join(n.dataDir, 'patchtree.db')}` });
  const rows = (await db.execute('SELECT token_hash FROM api_tokens')).rows.map((r) => String(r.token_hash));
  db.close();
  t.notOk(rows.includes(operator.token));
  t.ok(rows.every((h) => /^[0-9a-f]{64}$/.test(h)));
});

t.test('request validation: unknown fields, bad types, size limits', async (t) => {
  const n = await startNode(t);
  const unknown = await api(n.url, n.token, '/api/v1/tokens', { method: 'POST', body: JSON.stringify({ name: 'a', role: 'viewer', admin: true }) });
  t.equal(unknown.status, 400);
  t.equal(unknown.body.code, 'validation-failed');
  t.match(unknown.body.errors, [{ path: '(root)' }]);
  t.equal((await api(n.url, n.token, '/api/v1/tokens', { method: 'POST', body: JSON.stringify({ name: 'a', role: 'root' }) })).body.errors[0].path, 'role');
  t.equal((await api(n.url, n.token, '/api/v1/tokens', { method: 'POST', body: '{"name":' })).status, 400, 'malformed JSON');
  // Its own connection: the server answers before reading the whole body and closes.
  const { request } = await import('node:http');
  const big = await new Promise<{ status: number; connection: string | undefined }>((resolve, reject) => {
    const body = JSON.stringify({ name: 'x'.repeat(1024 * 1024 + 1024), role: 'viewer' });
    const req = request(
      `${n.url}/api/v1/tokens`,
      {
        method: 'POST',
        agent: false,
        headers: { authorization: `Bearer ${n.token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        res.resume();
        resolve({ status: res.statusCode!, connection: res.headers.connection });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
  t.equal(big.status, 413);
  t.equal(big.connection, 'close');
  t.equal((await api(n.url, n.token, '/api/v1/updates?limit=0')).status, 400);
  t.equal((await api(n.url, n.token, '/api/v1/updates?cursor=garbage')).status, 400);
  t.equal((await api(n.url, n.token, '/api/v1/updates?kb=abc')).status, 400);
  t.equal((await api(n.url, n.token, '/api/v1/tokens')).body.items.length, 1, 'nothing was created by the refused requests');
});

t.test('browse: pagination never skips or repeats; filters', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const { file, sig } = await buildRealCatalog(dir, keys);
  const n = await startNode(t, { trustedKeys: [keys.pubFile] });
  t.equal((await uploadCatalog(n.url, n.token, file, sig)).status, 201);

  const all = await listAll(n.url, n.token, '/api/v1/updates', 1000);
  t.equal(all.length, 495);
  for (const limit of [1, 7, 100]) {
    const paged = await listAll(n.url, n.token, '/api/v1/updates', limit);
    t.same(
      paged.map((u) => u.id),
      all.map((u) => u.id),
      `limit ${limit}: same items in the same order`,
    );
  }
  t.equal(new Set(all.map((u) => u.id)).size, 495, 'no repeats');
  for (let i = 1; i < all.length; i++) {
    const a = all[i - 1];
    const b = all[i];
    if (a.releaseDate < b.releaseDate || (a.releaseDate === b.releaseDate && a.id <= b.id)) t.fail(`order broken at ${i}`);
  }
  const first = await api(n.url, n.token, '/api/v1/updates?kb=5034441');
  t.same(first.body, { items: [], nextCursor: null }, 'a KB not in these months');
  const kb = await api(n.url, n.token, '/api/v1/updates?kb=KB3147461');
  t.equal(kb.body.items.length, 8, 'KB prefix accepted');
  for (const key of ['id', 'kb', 'title', 'product', 'severity', 'cves', 'supersedes', 'languages', 'revision'])
    t.ok(key in kb.body.items[0], `item has ${key}`);
  const crit = await listAll(n.url, n.token, '/api/v1/updates?severity=Critical', 100);
  t.ok(crit.length > 0 && crit.every((u) => u.severity === 'Critical'));
  const bn = await listAll(n.url, n.token, '/api/v1/updates?language=bn', 100);
  t.ok(bn.length > 0 && bn.every((u) => u.languages.some((l: string) => l === 'bn' || l.startsWith('bn-'))), 'language matches cultures');
  const cve = await api(n.url, n.token, '/api/v1/updates?cve=CVE-2024-20674');
  t.ok(cve.body.items.length > 0 && cve.body.items.every((u: any) => u.cves.includes('CVE-2024-20674')));
  const q = await listAll(n.url, n.token, '/api/v1/updates?q=Office%202016', 100);
  t.ok(q.length > 0 && q.every((u) => /Office 2016/i.test(u.title + u.product)));
  const since = await listAll(n.url, n.token, '/api/v1/updates?releasedSince=2024-01-01', 100);
  t.ok(since.every((u) => u.releaseDate >= '2024-01-01'));
  t.ok(since.length < 495);
  const prod = await listAll(n.url, n.token, `/api/v1/updates?product=${encodeURIComponent('Windows 10 for x64-based Systems')}`, 100);
  t.ok(prod.length > 0 && prod.every((u) => u.product === 'Windows 10 for x64-based Systems'));
  t.equal((await api(n.url, n.token, '/api/v1/updates/no-such-update')).status, 404);
});

t.test('custom severities: create, rename, order, assign, filter, delete', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const n = await startNode(t, { trustedKeys: [keys.pubFile] });
  const c = await writeSignedCatalog(
    dir,
    keys,
    'c.gz',
    header('v1', 3),
    [1, 2, 3].map((i) => sampleUpdate(i)),
  );
  await uploadCatalog(n.url, n.token, c.file, c.sig);
  const post = (name: string) => api(n.url, n.token, '/api/v1/severities', { method: 'POST', body: JSON.stringify({ name }) });
  const urgent = (await post('Urgent')).body;
  const later = (await post('Later')).body;
  t.match([urgent.rank, later.rank], [0, 1]);
  t.equal((await post('Urgent')).status, 409, 'names are unique');
  t.equal(
    (await api(n.url, n.token, `/api/v1/severities/${later.id}`, { method: 'PATCH', body: JSON.stringify({ name: 'Next cycle' }) })).body.name,
    'Next cycle',
  );
  const ordered = await api(n.url, n.token, '/api/v1/severities/order', { method: 'PUT', body: JSON.stringify({ ids: [later.id, urgent.id] }) });
  t.same(
    ordered.body.items.map((s: any) => [s.name, s.rank]),
    [
      ['Next cycle', 0],
      ['Urgent', 1],
    ],
  );
  t.equal(
    (await api(n.url, n.token, '/api/v1/severities/order', { method: 'PUT', body: JSON.stringify({ ids: [later.id] }) })).status,
    400,
    'order lists every level',
  );
  t.equal(
    (await api(n.url, n.token, '/api/v1/updates/test-1/custom-severity', { method: 'PUT', body: JSON.stringify({ severityId: urgent.id }) })).status,
    200,
  );
  t.equal(
    (await api(n.url, n.token, '/api/v1/severities/assign', { method: 'POST', body: JSON.stringify({ updates: ['test-2', 'test-3'], severityId: later.id }) }))
      .body.updated,
    2,
  );
  t.equal(
    (await api(n.url, n.token, '/api/v1/severities/assign', { method: 'POST', body: JSON.stringify({ updates: ['test-2', 'nope'], severityId: later.id }) }))
      .status,
    404,
    'all or nothing',
  );
  t.same(
    (await api(n.url, n.token, `/api/v1/updates?customSeverity=${urgent.id}`)).body.items.map((u: any) => u.id),
    ['test-1'],
  );
  t.match((await api(n.url, n.token, '/api/v1/updates/test-1')).body.customSeverity, { id: urgent.id, name: 'Urgent' });
  t.equal((await api(n.url, n.token, `/api/v1/severities/${urgent.id}`, { method: 'DELETE' })).status, 204);
  t.equal((await api(n.url, n.token, '/api/v1/updates/test-1')).body.customSeverity, null, 'deleting a level unassigns it');
  t.same(
    (await api(n.url, n.token, '/api/v1/severities')).body.items.map((s: any) => [s.name, s.updates]),
    [['Next cycle', 2]],
  );
});

t.test('storage location setting', async (t) => {
  const n = await startNode(t);
  const get = await api(n.url, n.token, '/api/v1/settings/storage');
  t.match(get.body, { path: join(n.dataDir, 'content'), writable: true });
  t.ok(get.body.freeBytes > 0);
  const target = join(await tempDir(t), 'a', 'b', 'store');
  const put = await api(n.url, n.token, '/api/v1/settings/storage', { method: 'PUT', body: JSON.stringify({ path: target }) });
  t.match(put.body, { path: target, writable: true });
  t.ok(statSync(target).isDirectory(), 'created if missing');
  const blocked = await api(n.url, n.token, '/api/v1/settings/storage', { method: 'PUT', body: JSON.stringify({ path: '/proc/patchtree-store' }) });
  t.equal(blocked.status, 422, 'an unusable path is refused');
  t.equal(blocked.body.code, 'storage-unusable');
  const { writeFileSync } = await import('node:fs');
  const plain = join(await tempDir(t), 'a-file');
  writeFileSync(plain, 'x');
  const under = await api(n.url, n.token, '/api/v1/settings/storage', { method: 'PUT', body: JSON.stringify({ path: join(plain, 'store') }) });
  t.equal(under.status, 422, 'a path under a regular file is refused');
  t.match(under.body.detail, /ENOTDIR/);
  t.equal((await api(n.url, n.token, '/api/v1/settings/storage')).body.path, target, 'the refused path did not replace the setting');
});

t.test('the bootstrap admin token file', async (t) => {
  const dir = await tempDir(t);
  const { loadConfig } = await import('../../src/node/config.js');
  const { PatchtreeNode } = await import('../../src/node/node.js');
  const { createLogger } = await import('../../src/lib/log.js');
  const start = async () => {
    const node = new PatchtreeNode(
      loadConfig(
        ['--data', dir, '--http-port', '0', '--https-port', '0', '--grpc-port', '0', '--insecure-http', '--http-host', '127.0.0.1', '--grpc-host', '127.0.0.1'],
        {},
      ),
      createLogger('silent'),
    );
    await node.start();
    return node;
  };
  const a = await start();
  const file = join(dir, 'admin-token');
  t.equal(statSync(file).mode & 0o777, 0o600);
  const token = readFileSync(file, 'utf8').trim();
  t.equal((await api(`http://127.0.0.1:${a.httpPort}`, token, '/api/v1/tokens')).status, 200);
  await a.stop();
  const b = await start();
  t.equal(readFileSync(file, 'utf8').trim(), token, 'a second start keeps the token');
  t.equal((await api(`http://127.0.0.1:${b.httpPort}`, token, '/api/v1/tokens')).status, 200);
  await b.stop();
});
