import t from 'tap';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { CatalogFeed, type FeedState } from '../../src/catalog/feed.js';
import { CatalogImporter } from '../../src/catalog/importer.js';
import { loadTrustedKeys } from '../../src/catalog/signing.js';
import { openDatabase } from '../../src/db/index.js';
import { createLogger } from '../../src/lib/log.js';
import { join } from 'node:path';
import { header, makeKeys, sampleUpdate, tempDir, writeSignedCatalog } from '../helpers.js';

t.test('a followed feed costs one conditional request when unchanged', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const v1 = await writeSignedCatalog(dir, keys, 'v1.gz', header('v1', 2, new Date('2024-01-01T00:00:00Z')), [sampleUpdate(1), sampleUpdate(2)]);
  const v2 = await writeSignedCatalog(dir, keys, 'v2.gz', header('v2', 3, new Date('2024-02-01T00:00:00Z')), [
    sampleUpdate(1),
    sampleUpdate(2),
    sampleUpdate(3),
  ]);
  let current = v1;
  let etag = '"v1"';
  const log: string[] = [];
  const server = createServer((req, res) => {
    log.push(`${req.url} ${req.headers['if-none-match'] ?? '-'}`);
    if (req.url === '/catalog.gz') {
      if (req.headers['if-none-match'] === etag) return res.writeHead(304).end();
      res.writeHead(200, { etag, 'content-type': 'application/gzip' }).end(readFileSync(current.file));
    } else if (req.url === '/catalog.gz.sig') {
      res.writeHead(200).end(readFileSync(current.sig));
    } else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/catalog.gz`;

  const db = await openDatabase(`file:${join(dir, 'node.db')}`);
  t.teardown(() => db.close());
  const importer = new CatalogImporter(db, await loadTrustedKeys([keys.pubFile]), createLogger('silent'));
  let saved: FeedState | undefined;
  const feed = new CatalogFeed(
    url,
    60_000,
    importer,
    { get: async () => saved, put: async (s) => void (saved = s) },
    join(dir, 'tmp'),
    1e9,
    createLogger('silent'),
  );

  t.match(await feed.check(), { version: 'v1', added: 2 });
  t.equal(saved?.etag, '"v1"');
  t.equal(await feed.check(), null, 'unchanged: nothing imported');
  t.same(log, ['/catalog.gz -', '/catalog.gz.sig -', '/catalog.gz "v1"'], 'the second check is one conditional GET');

  current = v2;
  etag = '"v2"';
  t.match(await feed.check(), { version: 'v2', added: 1, unchanged: 2 });
  t.equal(saved?.lastVersion, 'v2');

  // A feed serving a tampered file is refused, recorded, and retried next time.
  etag = '"v3"';
  current = { file: v1.file, sig: v2.sig };
  await t.rejects(feed.check(), { code: 'signature-invalid' });
  t.match(saved?.lastError, /signature-invalid/);
  t.equal(saved?.etag, '"v2"', 'validators are kept from the last good import, so the next check retries');
  const rows = await db.client.execute('SELECT count(*) AS n FROM updates');
  t.equal(Number(rows.rows[0]!.n), 3);
});

t.test('the import over @libsql/client (the remote-server path) gives the same result', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const db = await openDatabase(`file:${join(dir, 'node.db')}`);
  t.teardown(() => db.close());
  // Without filePath the worker drives the import through the client, as for libsql:// URLs.
  const viaClient = { ...db, filePath: null };
  const importer = new CatalogImporter(viaClient, await loadTrustedKeys([keys.pubFile]), createLogger('silent'));
  const v1 = await writeSignedCatalog(
    dir,
    keys,
    'v1.gz',
    header('v1', 3, new Date('2024-01-01T00:00:00Z')),
    [1, 2, 3].map((i) => sampleUpdate(i)),
  );
  t.match(await importer.import({ catalogFile: v1.file, signature: readFileSync(v1.sig), importedBy: 't', source: 'cli' }), { added: 3 });
  const v2 = await writeSignedCatalog(dir, keys, 'v2.gz', header('v2', 2, new Date('2024-02-01T00:00:00Z')), [
    sampleUpdate(1),
    sampleUpdate(2, { title: 'changed' }),
  ]);
  t.match(await importer.import({ catalogFile: v2.file, signature: readFileSync(v2.sig), importedBy: 't', source: 'cli' }), {
    added: 0,
    changed: 1,
    expired: 1,
    unchanged: 1,
  });
  const bad = await writeSignedCatalog(dir, keys, 'bad.gz', header('v3', 2, new Date('2024-03-01T00:00:00Z')), [
    sampleUpdate(7),
    { ...sampleUpdate(8), kb: 'x' },
  ]);
  await t.rejects(importer.import({ catalogFile: bad.file, signature: readFileSync(bad.sig), importedBy: 't', source: 'cli' }), { code: 'catalog-invalid' });
  const ids = (await db.client.execute('SELECT id, revision, expired FROM updates ORDER BY id')).rows.map((r) => [r.id, Number(r.revision), Number(r.expired)]);
  t.same(
    ids,
    [
      ['test-1', 1, 0],
      ['test-2', 2, 0],
      ['test-3', 2, 1],
    ],
    'the rejected file left nothing',
  );
});
