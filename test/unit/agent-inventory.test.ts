import t from 'tap';
import { readFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { parseWindowsInventory, windowsProductName } from '../../src/agent/inventory.js';
import { inventoryLanguages } from '../../src/assessment/inventory.js';
import { CatalogIndex } from '../../src/assessment/catalog-index.js';
import { facts } from '../../src/assessment/evaluate.js';
import { parseWsus } from '../../src/catalog/convert/wsus.js';
import { PatchLog } from '../../src/agent/log.js';
import { FIXTURES } from '../helpers.js';

const ps = (name: string) => JSON.parse(readFileSync(join(FIXTURES, 'powershell', name), 'utf8')) as unknown;

t.test("PowerShell output of Windows 11 23H2: the catalog's product name, the full build, KBs, applications, files", async (t) => {
  const inv = parseWindowsInventory(ps('win11-23h2.json'));
  t.same(inv.os, { family: 'windows', name: 'Windows 11 Version 23H2 for x64-based Systems', version: '10.0.22631.3007', arch: 'x64', language: 'de-de' });
  t.same(inv.kbs, ['5034467', '5027397', '5034123']);
  t.same(
    inv.products,
    [
      { name: 'Windows 11 Version 23H2 for x64-based Systems', version: '10.0.22631.3007' },
      { name: 'Microsoft Edge', version: '120.0.2210.144' },
      { name: 'Microsoft 365 Apps for enterprise - en-us', version: '16.0.17126.20132' },
      { name: '7-Zip 23.01 (x64)', version: '23.01' },
      { name: 'Contoso VPN Client' },
    ],
    'an unreadable version is left out, a nameless entry skipped',
  );
  t.same(inv.files, [
    { path: 'C:\\Windows\\System32\\ntoskrnl.exe', version: '10.0.22621.3007' },
    { path: 'C:\\Windows\\System32\\win32k.sys', version: '10.0.22621.2861' },
  ]);
});

t.test('single values where ConvertTo-Json unwraps one-element arrays; servers; unknown builds', async (t) => {
  const w10 = parseWindowsInventory(ps('win10-22h2-single.json'));
  t.equal(w10.os.name, 'Windows 10 Version 22H2 for x64-based Systems');
  t.same(w10.kbs, ['5034122']);
  t.same(
    w10.products?.map((p) => p.name),
    ['Windows 10 Version 22H2 for x64-based Systems', 'Mozilla Firefox (x64 en-US)'],
  );
  t.same(w10.files, []);
  const srv = parseWindowsInventory(ps('server-2022.json'));
  t.same(srv.os, { family: 'windows', name: 'Windows Server 2022', version: '10.0.20348.2227', arch: 'x64', language: 'en-us' });
  const unknown = parseWindowsInventory(ps('win11-arm-unknown-build.json'));
  t.same(
    unknown.os,
    { family: 'windows', version: '10.0.27500', arch: 'arm64', language: 'ja-jp' },
    'a build the agent does not know: no product name, so no product rule is decided wrongly',
  );
  t.same(unknown.products, []);
  t.equal(windowsProductName('Microsoft Windows 11 Pro', 22631, 'arm64'), 'Windows 11 Version 23H2 for ARM64-based Systems');
  t.equal(windowsProductName('Microsoft Windows 10 Enterprise', 19044, 'x86'), 'Windows 10 Version 21H2 for 32-bit Systems');
  t.equal(windowsProductName('Microsoft Windows 11 Pro', 22000, 'x64'), 'Windows 11 for x64-based Systems');
  t.throws(
    () => parseWindowsInventory({ caption: 'x', hotfixes: Array.from({ length: 30_000 }, (_, i) => `KB${1000000 + i}`) }),
    /invalid/,
    'checked like a report: too many KBs',
  );
});

t.test('Office 2016 from its MSI product codes: edition, languages, patch codes, patch KBs; its updates are assessed', async (t) => {
  const inv = parseWindowsInventory(ps('win10-office2016.json'));
  t.equal(inv.os.language, 'de-de');
  const office = inv.products?.find((p) => p.name === 'Microsoft Office 2016 (32-bit edition)');
  t.same(
    office,
    {
      name: 'Microsoft Office 2016 (32-bit edition)',
      version: '16.0.4266.1001',
      languages: ['de-de', 'ga-ie'],
      patches: ['{0A1B2C3D-4E5F-4071-8293-A4B5C6D7E8F9}', '{3E4B0D2C-8A2F-4C5B-9B1D-2F3A4B5C6D7E}'],
    },
    "the catalog's product name, the core's version, a language per MUI or language pack (LCID 0407, 083C)",
  );
  t.same(inv.kbs, ['5034122', '3085538', '4484136'], 'patch KBs from their display names');
  t.notOk(
    inv.products?.some((p) => /Security Update/.test(p.name)),
    'a patch is no product',
  );
  t.same(inventoryLanguages(inv), ['de-de', 'ga-ie'], "the computer's languages: the files it is given");

  // Against the real Office 2016 updates of the bundled WSUS data.
  const { updates } = parseWsus(gunzipSync(readFileSync(join(FIXTURES, 'wsus-osdsus', 'Office-2016.json.gz'))).toString('utf8'));
  const index = new CatalogIndex();
  for (const u of updates)
    index.set({
      id: u.id,
      kb: u.kb,
      product: u.product,
      severity: u.severity,
      applicability: JSON.stringify(u.applicability),
      installed: JSON.stringify(u.installed),
      supersedes: JSON.stringify(u.supersedes),
    });
  const states = index.assess(facts(inv));
  const of = (kb: string, bits: 32 | 64) => states.get(updates.find((u) => u.kb === kb && u.product === `Microsoft Office 2016 (${bits}-bit edition)`)!.id);
  t.equal(of('3085538', 32), 'installed', 'the patch it has');
  t.equal(of('2920724', 32), 'required', 'a patch it lacks');
  t.equal(of('3085538', 64), undefined, "the 64-bit edition's updates do not apply");
  t.ok([...states.values()].filter((s) => s === 'required').length > 50, 'Office updates are assessed, not only Windows');
});

t.test('the patch log rotates by size and keeps three old files', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'patchtree-log-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const log = new PatchLog(dir, 1000, 3, () => new Date('2026-01-01T00:00:00Z'));
  for (let i = 0; i < 100; i++) log.write(`line ${String(i).padStart(3, '0')} ${'x'.repeat(40)}`);
  t.same(readdirSync(dir).sort(), ['patch.log', 'patch.log.1', 'patch.log.2', 'patch.log.3']);
  t.ok(readFileSync(join(dir, 'patch.log')).length <= 1000);
  t.match(log.read(), /line 099/);
  t.match(readFileSync(join(dir, 'patch.log.1'), 'utf8'), /^2026-01-01T00:00:00\.000Z {2}line \d{3} x+\n/);
  log.write('two\nlines');
  t.match(log.read(), /two \| lines\n$/, 'one entry, one line');
  log.clear('by user');
  t.same(readdirSync(dir).sort(), ['patch.log']);
  t.equal(log.read(), '2026-01-01T00:00:00.000Z  patch log cleared (by user)\n');
});
