import t from 'tap';
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { parseCvrf } from '../../src/catalog/convert/cvrf.js';
import { decimalBytesToHex, languageOfFile, parseWsus, productName } from '../../src/catalog/convert/wsus.js';
import { catalogUpdateSchema } from '../../src/catalog/format.js';
import { CVRF, FIXTURES, WSUS, buildRealCatalog, makeKeys, tempDir } from '../helpers.js';
import { createGunzip } from 'node:zlib';
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';

const read = (f: string) => gunzipSync(readFileSync(f)).toString();

t.test('CVRF 2016-Apr: one update per (KB, product) of KB vendor fixes, advisories included', async (t) => {
  const r = parseCvrf(read(CVRF[0]!));
  t.equal(r.documentId, '2016-Apr');
  t.equal(r.fixes.size, 204, '204 (KB, product) pairs in the XML');
  t.equal(new Set([...r.fixes.values()].map((f) => f.kb)).size, 51, '51 distinct KBs');
  t.equal([...r.fixes.values()].filter((f) => f.advisory === 'ADV160001').length, 9, 'the Flash advisory pairs are kept');
  const win10x64 = r.fixes.get('3147461|Windows 10 for x64-based Systems');
  t.ok(win10x64, 'KB3147461 for Windows 10 x64');
  t.equal(win10x64!.cves.size, 11);
  t.same([...win10x64!.supersedes], ['3140745']);
  t.equal(win10x64!.restart, 'required');
  t.equal(win10x64!.releaseDate, '2016-04-12');
  t.equal(r.fixes.get('3147461|Windows 10 for 32-bit Systems')!.cves.size, 8);
});

t.test('CVRF 2024-Jan: counts, skipped non-KB fixes, KB5034123 details', async (t) => {
  const r = parseCvrf(read(CVRF[1]!));
  t.equal(r.fixes.size, 125);
  t.equal(
    [...r.skipped.values()].reduce((a, b) => a + b, 0),
    286,
    'fixes naming no KB are skipped and counted',
  );
  t.equal(r.skipped.get('CBL-Mariner Releases'), 195);
  t.equal(r.skipped.get('Click to Run'), 1);
  const products = [...r.fixes.values()]
    .filter((f) => f.kb === '5034123')
    .map((f) => f.product)
    .sort();
  t.same(products, [
    'Windows 11 Version 22H2 for ARM64-based Systems',
    'Windows 11 Version 22H2 for x64-based Systems',
    'Windows 11 Version 23H2 for ARM64-based Systems',
    'Windows 11 Version 23H2 for x64-based Systems',
  ]);
  const f = r.fixes.get('5034123|Windows 11 Version 23H2 for x64-based Systems')!;
  t.equal(f.fixedBuild, '10.0.22631.3007', 'fixed build of the 23H2 remediation, not the 22H2 one');
  t.equal(r.fixes.get('5034123|Windows 11 Version 22H2 for x64-based Systems')!.fixedBuild, '10.0.22621.3007');
  t.equal(f.cves.size, 35);
  t.same([...f.supersedes], ['5033375']);
  t.equal(f.severity, 'Critical');
  t.equal(f.productFamily, 'Windows');
  t.equal(f.releaseDate, '2024-01-09');
});

t.test('WSUS helpers', async (t) => {
  t.equal(
    decimalBytesToHex('119 89 233 121 211 212 56 7 107 246 161 95 253 105 109 190 58 101 56 16 161 63 144 232 240 66 174 49 109 124 129 48'),
    '7759e979d3d438076bf6a15ffd696dbe3a653810a13f90e8f042ae316d7c8130',
  );
  t.equal(decimalBytesToHex('1 2 300'), null, 'a byte over 255 is malformed');
  t.equal(languageOfFile('ieawsdc-x-none.cab'), 'neutral');
  t.equal(languageOfFile('lip-fa-ir.cab'), 'fa-ir');
  t.equal(languageOfFile('proof-sr-cyrl-rs.cab'), 'sr-cyrl-rs');
  t.equal(languageOfFile('lip-ca-es-valencia.cab'), 'ca-es-valencia');
  t.equal(languageOfFile('Windows10.0-KB5012170-x64.cab'), 'neutral');
  t.equal(languageOfFile('lip-ja-jp.pseudo.cab'), 'qps-ploc', 'a pseudo-localisation build is no Japanese file');
  t.equal(productName('Windows 11 23H2', 'x64'), 'Windows 11 Version 23H2 for x64-based Systems');
  t.equal(productName('Office 2016 32-Bit', 'x86'), 'Microsoft Office 2016 (32-bit edition)');
});

t.test('WSUS Office 2016: one update per UpdateId, files with languages and SHA-256', async (t) => {
  const r = parseWsus(read(WSUS[2]!));
  t.equal(r.updates.length, 152);
  const big = r.updates.find((u) => u.id === 'f44b0b03-45bd-4038-9e11-027f263b40b3')!;
  t.equal(big.files.length, 66, 'the language pack update lists 66 files');
  t.ok(big.files.some((f) => f.language === 'fa-ir'));
  const first = r.updates.find((u) => u.id === '9588214a-3a06-4b11-bbe2-df605d2127fc')!;
  t.same(
    first.files.map((f) => [f.name, f.language, f.sha256]),
    [['ieawsdc-x-none.cab', 'neutral', '7759e979d3d438076bf6a15ffd696dbe3a653810a13f90e8f042ae316d7c8130']],
  );
  t.equal(first.kb, '3085538');
  t.equal(first.bulletin, 'MS15-081');
  t.equal(first.severity, 'Critical');
  t.equal(first.product, 'Microsoft Office 2016 (32-bit edition)');
  for (const u of r.updates) t.ok(catalogUpdateSchema.safeParse(u).success, `update ${u.id} is valid`);
});

t.test("WSUS .NET cumulative update: installed under its packages' KBs too", async (t) => {
  const r = parseWsus(read(WSUS[0]!));
  const net = r.updates.filter((u) => u.kb === '5042352');
  t.equal(net.length, 2, 'x86 and x64');
  for (const u of net) {
    const kbs = u.files.map((f) => /-KB(\d+)-/.exec(f.name)![1]).sort();
    t.same(u.installed, { any: [{ kb: '5042352' }, ...kbs.map((kb) => ({ kb }))] }, `${u.product}: the umbrella KB or a package's (${kbs.join(', ')})`);
    t.same(
      u.files.map((f) => f.installer),
      [{ type: 'dism' }, { type: 'dism' }],
    );
  }
  const plain = r.updates.find((u) => u.files.length === 1 && u.kb)!;
  t.same(plain.installed, { kb: plain.kb }, 'one package: its KB alone');
});

t.test('build joins WSUS to CVRF by KB and product', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const { buildCatalog } = await import('../../src/catalog/build.js');
  const out = join(dir, 'joined.ndjson.gz');
  const s = await buildCatalog({ cvrf: [CVRF[1]!], wsus: [join(FIXTURES, 'wsus-join.json')], version: 'j1', out, sign: keys.keyFile });
  t.equal(s.joined, 2, 'x64 and ARM64 rows join their CVRF products');
  t.equal(s.updates, 125 + 1, 'joined updates replace their CVRF twins; the unknown KB stands alone');
  const lines: any[] = [];
  for await (const l of createInterface({ input: createReadStream(out).pipe(createGunzip()) })) lines.push(JSON.parse(l));
  const x64 = lines.find((u) => u.id === '0a6c7d2e-1111-4a5b-9c3d-5034123a0064');
  t.equal(x64.product, 'Windows 11 Version 23H2 for x64-based Systems');
  t.equal(x64.cves.length, 35, 'CVEs come from CVRF');
  t.same(x64.supersedes, ['5033375']);
  t.equal(x64.files[0].sha256, '0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20', 'files come from WSUS');
  t.same(x64.installed, { any: [{ kb: '5034123' }, { product: 'Windows 11 Version 23H2 for x64-based Systems', version: { gte: '10.0.22631.3007' } }] });
  t.same(x64.install, { successCodes: [0], rebootCodes: [3010, 1641] });
  t.same(x64.files[0].installer, { type: 'wusa' }, 'an .msu installs with wusa');
  t.notOk(
    lines.some((u) => u.kb === '5034123' && u.product === 'Windows 11 Version 23H2 for x64-based Systems' && u.id !== x64.id),
    'no CVRF-only twin remains',
  );
  const alone = lines.find((u) => u.kb === '5999999');
  t.equal(alone.superseded, true);
  t.same(alone.cves, []);
});

t.test('the real build: counts from both feeds', async (t) => {
  const dir = await tempDir(t);
  const keys = await makeKeys(dir);
  const { summary } = await buildRealCatalog(dir, keys);
  t.equal(summary.fromCvrf, 329);
  t.equal(summary.fromWsus, 166);
  t.equal(summary.joined, 0, 'none of the OSDSUS KBs appears in these CVRF months');
  t.equal(summary.updates, 495);
  t.equal(summary.skippedFixesTotal, 286);
  t.ok(summary.signature);
});
